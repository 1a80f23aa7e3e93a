package runner_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/seal"
	"github.com/airlock-hpc/airlock/internal/ticket"
)

// noUserNS is the runner's command-line prefix that makes every user
// namespace it (or anything it starts) asks for fail with errno, as a
// pod's seccomp RuntimeDefault (EPERM) or user.max_user_namespaces = 0
// (ENOSPC) does.
func noUserNS(t *testing.T, errno string) []string {
	return []string{realtest.Probe(t), "nouserns", errno}
}

// freePort is a TCP port on 127.0.0.1 nobody listens on now: an unsealed
// workload shares this machine's loopback with every other test.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// podSpec is a session whose workload serves HTTP behind an http
// connector on a UNIX socket, and which leaves, through a subshell that
// ends at once, an orphan in a session of its own (setsid sleep): the
// kind of process only a PID namespace or init's subreaper finds. Every
// process of it carries marker in its environment.
func podSpec(t *testing.T, m mode, id, marker string, isolation string) map[string]any {
	return podSpecPre(t, m, id, marker, isolation, "")
}

// podSpecPre is podSpec whose workload runs the shell commands pre first.
func podSpecPre(t *testing.T, m mode, id, marker, isolation, pre string) map[string]any {
	return podSpecScript(t, m, id, marker, isolation, pre+"(setsid sleep 1000 &); ")
}

// podSpecScript is podSpec whose workload runs the shell commands pre,
// and no more, before it serves.
func podSpecScript(t *testing.T, m mode, id, marker, isolation, pre string) map[string]any {
	t.Helper()
	port := freePort(t)
	spec := connectorSpec(t, m, id, true, nil)
	script := fmt.Sprintf("%sexec %s serve http:tcp:127.0.0.1:%d", pre, realtest.Probe(t), port)
	spec["workload"] = map[string]any{"argv": []string{"/bin/sh", "-c", script}, "env": map[string]string{"AIRLOCK_TEST_MARKER": marker}}
	spec["connectors"].([]any)[0].(map[string]any)["target"] = fmt.Sprintf("127.0.0.1:%d", port)
	if isolation != "" {
		spec["isolation"] = isolation
	}
	return spec
}

// getConsole asks the session's http connector for a page with a ticket
// for session id and returns the status and body.
func getConsole(t *testing.T, r *realtest.Runner, id string) (int, string, error) {
	t.Helper()
	sock := strings.TrimPrefix(r.Ready.Endpoints["web"], "unix:")
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	tok := sign(t, ticket.Claims{Session: id, Connector: "web", User: "alice", Mode: ticket.Control})
	resp, err := client.Get("http://session/console?ticket=" + tok)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

// TestPodIsolationFallback: a runner with spec isolation "pod" in a
// process where user namespaces are forbidden (a seccomp filter answering
// clone(CLONE_NEWUSER) with EPERM, as RuntimeDefault does; ENOSPC, as
// user.max_user_namespaces = 0 does; EINVAL) starts the session anyway:
// ready carries id_map "pod" and the exact warning, the runner logs it,
// the console answers a ticket, and stopping it ends every process of the
// session, the orphan the workload left in a session of its own too.
func TestPodIsolationFallback(t *testing.T) {
	all := modes(t)
	m := all[len(all)-1] // unprivileged: a pod's runner is the owner
	for errno, text := range map[string]string{
		"EPERM": "operation not permitted", "ENOSPC": "no space left on device", "EINVAL": "invalid argument",
	} {
		t.Run(errno, func(t *testing.T) {
			id := fmt.Sprintf("pod-%s-%d", strings.ToLower(errno), time.Now().UnixNano()%1e6)
			marker := "airlock-podtest-" + id
			r := realtest.StartRunner(t, podSpec(t, m, id, marker, "pod"), realtest.RunOptions{As: m.as, Wrap: noUserNS(t, errno)})
			want := "user namespaces forbidden by the cluster (" + text + "); isolation is the pod's network namespace and its NetworkPolicy"
			if want != seal.UnsealedWarning(map[string]syscall.Errno{"EPERM": syscall.EPERM, "ENOSPC": syscall.ENOSPC, "EINVAL": syscall.EINVAL}[errno]) {
				t.Fatalf("UnsealedWarning disagrees with %q", want)
			}
			found := false
			for _, w := range r.Ready.Warnings {
				found = found || w == want
			}
			if !found {
				t.Errorf("ready warnings %q lack %q", r.Ready.Warnings, want)
			}
			if r.Ready.IDMap != "pod" {
				t.Errorf("ready id_map %q, want pod", r.Ready.IDMap)
			}
			if !strings.Contains(r.Stderr.String(), want) {
				t.Errorf("the runner's log does not say %q:\n%s", want, r.Stderr.String())
			}
			code, body, err := getConsole(t, r, id)
			if err != nil || code != 200 || !strings.Contains(body, `"/console"`) {
				t.Fatalf("console: status %d, body %q, error %v", code, body, err)
			}
			// The same request without a ticket is refused: the connector
			// still guards the way in.
			sock := strings.TrimPrefix(r.Ready.Endpoints["web"], "unix:")
			plain := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", sock)
			}}}
			if resp, err := plain.Get("http://session/console"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					t.Error("the connector served a request without a ticket")
				}
			}
			if len(realtest.ProcessesOf(marker)) < 2 {
				t.Fatalf("want the workload and its orphan running, found %v", realtest.ProcessesOf(marker))
			}
			r.Signal(syscall.SIGTERM)
			ev := r.WaitExit(t, 60*time.Second)
			if ev.Code == nil || *ev.Code != 0 {
				t.Errorf("exit %+v, want code 0", ev)
			}
			if err := realtest.WaitFor(30*time.Second, func() error { return realtest.Gone(marker) }); err != nil {
				t.Errorf("after the session ended: %v", err)
			}
		})
	}
}

// TestSealRefusedWithoutUserNS: the same forbidden user namespaces are a
// hard failure for a spec without isolation "pod", which is every spec
// the local and Slurm backends write: an attacker who can forbid user
// namespaces to a runner gets no unsealed session from it, only none.
func TestSealRefusedWithoutUserNS(t *testing.T) {
	all := modes(t)
	m := all[len(all)-1]
	for _, errno := range []string{"EPERM", "ENOSPC"} {
		t.Run(errno, func(t *testing.T) {
			id := fmt.Sprintf("nopod-%s-%d", strings.ToLower(errno), time.Now().UnixNano()%1e6)
			marker := "airlock-podtest-" + id
			r := realtest.StartRunner(t, podSpec(t, m, id, marker, ""), realtest.RunOptions{As: m.as, Wrap: noUserNS(t, errno), NoWaitReady: true})
			ev := r.WaitExit(t, 60*time.Second)
			if ev.Event != "exit" || ev.Code == nil || *ev.Code != 1 || !strings.Contains(ev.Reason, "start seal init") {
				t.Fatalf("want a refusal to start (exit 1, start seal init ...), got %+v\n%s", ev, r.Stderr.String())
			}
			for _, e := range r.Others() {
				if e.Event == "ready" {
					t.Fatalf("ready before the refusal: %+v", e)
				}
			}
			if p := realtest.ProcessesOf(marker); len(p) > 0 {
				t.Errorf("the workload ran: %v", p)
			}
			t.Logf("refused: %s", ev.Reason)
		})
	}
}

// TestPodIsolationRefusedAsRoot: a root runner refuses isolation "pod"
// outright, whatever the kernel allows: root's seal needs no user
// namespace, so the fallback could only ever weaken it.
func TestPodIsolationRefusedAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	m := modes(t)[0]
	id := fmt.Sprintf("podroot-%d", time.Now().UnixNano()%1e6)
	marker := "airlock-podtest-" + id
	r := realtest.StartRunner(t, podSpec(t, m, id, marker, "pod"), realtest.RunOptions{As: m.as, Wrap: noUserNS(t, "EPERM"), NoWaitReady: true})
	ev := r.WaitExit(t, 60*time.Second)
	if ev.Code == nil || *ev.Code != 1 || !strings.Contains(ev.Reason, "isolation pod: refused for a runner started as root") {
		t.Fatalf("want the refusal, got %+v\n%s", ev, r.Stderr.String())
	}
	if p := realtest.ProcessesOf(marker); len(p) > 0 {
		t.Errorf("the workload ran: %v", p)
	}
}

// TestPodIsolationHidesTheRunnersSecrets: without a PID namespace the
// workload sees the runner and init in /proc, with its own uid. Their
// environment (the runner's holds the ticket key and registration token
// it was started with, unset or not) stays unreadable to it: the runner
// makes itself undumpable in pod isolation, init always is, and the
// workload's Landlock domain denies it too where the kernel has one. The
// control: this test, outside, reads the runner's.
func TestPodIsolationHidesTheRunnersSecrets(t *testing.T) {
	all := modes(t)
	m := all[len(all)-1]
	id := fmt.Sprintf("podenv-%d", time.Now().UnixNano()%1e6)
	marker := "airlock-podtest-" + id
	secret := "RUNNER-SECRET-" + id
	out := filepath.Join(resultsDir(t, m.owner), "environ")
	pre := fmt.Sprintf(`init=$PPID; runner=$(cut -d" " -f4 /proc/$init/stat); `+
		`{ echo "runner $runner init $init"; cat /proc/$runner/environ; cat /proc/$init/environ; tr "\\0" "\\n" < /proc/$runner/cmdline; } > %s 2>&1; `, out)
	r := realtest.StartRunner(t, podSpecPre(t, m, id, marker, "pod", pre),
		realtest.RunOptions{As: m.as, Wrap: noUserNS(t, "EPERM"), Env: []string{"AIRLOCK_TEST_SECRET=" + secret}})
	if r.Ready.IDMap != "pod" {
		t.Fatalf("not unsealed: id_map %q", r.Ready.IDMap)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the workload read:\n%s", got)
	if !strings.Contains(string(got), "run") || !strings.Contains(string(got), "Permission denied") {
		t.Errorf("the workload did not find the runner, or was not refused: %s", got)
	}
	if strings.Contains(string(got), secret) {
		t.Errorf("the workload read the runner's environment")
	}
	// The control: the runner's environment holds the secret, and its
	// command line (which is no secret) is readable, so the probe found it.
	pid := r.Cmd.Process.Pid
	if m.as == nil {
		t.Skip("the control needs root to read the undumpable runner")
	}
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil || !strings.Contains(string(env), secret) {
		t.Errorf("control: the runner's environment lacks the secret (%v): the test proves nothing", err)
	}
}

// TestPodIsolationSealsWhereItCan: isolation "pod" is a fallback, not a
// mode: where user namespaces can be made, the session is sealed as any
// other (its own network namespace: the host's loopback is unreachable)
// and nothing warns of the pod.
func TestPodIsolationSealsWhereItCan(t *testing.T) {
	all := modes(t)
	m := all[len(all)-1]
	host := echoListen(t, "tcp", "127.0.0.1:0").Addr().String()
	dir := resultsDir(t, m.owner)
	out := filepath.Join(dir, "inside.json")
	spec := map[string]any{
		"id": fmt.Sprintf("podseal-%d", time.Now().UnixNano()%1e6), "owner": m.owner.Name, "isolation": "pod",
		"workload": map[string]any{"argv": []string{realtest.Probe(t), "dial", out, "tcp:" + host}},
	}
	r := realtest.StartRunner(t, spec, realtest.RunOptions{As: m.as, NoWaitReady: true})
	ev := r.WaitExit(t, 60*time.Second)
	if ev.Code == nil || *ev.Code != 0 {
		t.Fatalf("probe failed: %+v\n%s", ev, r.Stderr.String())
	}
	if strings.Contains(r.Stderr.String(), "user namespaces forbidden") {
		t.Errorf("the runner fell back with user namespaces available:\n%s", r.Stderr.String())
	}
	res, ok := readResults(t, out)["tcp:"+host]
	if !ok || res.Reached {
		t.Errorf("the host's %s: %+v (found %v): want tried and not reached, as in a seal", host, res, ok)
	}
}

// TestPodIsolationRunnerKilled: without a PID namespace, a runner killed
// outright (SIGKILL, no teardown) still takes the session with it: init
// dies by its parent-death signal and so, by theirs, do the connector
// and the workload. (An orphan a workload leaves is the container's PID
// namespace's to end, in a pod; TestPodIsolationFallback covers the
// orderly end.)
func TestPodIsolationRunnerKilled(t *testing.T) {
	all := modes(t)
	m := all[len(all)-1]
	id := fmt.Sprintf("podkill-%d", time.Now().UnixNano()%1e6)
	marker := "airlock-podtest-" + id
	r := realtest.StartRunner(t, podSpecScript(t, m, id, marker, "pod", ""), realtest.RunOptions{As: m.as, Wrap: noUserNS(t, "EPERM")})
	if r.Ready.IDMap != "pod" {
		t.Fatalf("not unsealed: id_map %q", r.Ready.IDMap)
	}
	// The workload (its environment has the marker), and init and the
	// connector (their command lines have the id).
	if p := realtest.ProcessesOf(marker); len(p) == 0 {
		t.Fatal("no workload found: the test proves nothing")
	}
	if p := realtest.ProcessesOf(id); len(p) < 3 {
		t.Fatalf("want init, the connector and the workload, found %v", p)
	}
	r.Signal(syscall.SIGKILL)
	<-r.Exited()
	if err := realtest.WaitFor(30*time.Second, func() error { return realtest.Gone(marker) }); err != nil {
		t.Errorf("after the runner was killed: %v", err)
	}
	if err := realtest.WaitFor(30*time.Second, func() error { return realtest.Gone(id) }); err != nil {
		t.Errorf("after the runner was killed (connector, init): %v", err)
	}
}
