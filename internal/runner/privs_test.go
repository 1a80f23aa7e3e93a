package runner_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/ticket"
	"golang.org/x/sys/unix"
)

// setuidProbe copies the probe into a directory the seal sees, on a mount
// without nosuid, as a setuid-root program, and checks that outside the
// seal it really runs as root for acct: otherwise the test inside proves
// nothing. It returns "" when the test is not root.
func setuidProbe(t *testing.T, acct realtest.Account) string {
	t.Helper()
	if os.Geteuid() != 0 {
		return ""
	}
	dir := realtest.OutsideTmp(t, "setuid-")
	path := filepath.Join(dir, "suid-probe")
	b, err := os.ReadFile(realtest.Probe(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	// chmod after chown: chown clears the setuid bit.
	if err := os.Chown(path, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, os.ModeSetuid|0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, "ids")
	cmd.SysProcAttr = credential(&acct)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("setuid probe outside the seal: %v", err)
	}
	var m map[string]string
	if err := json.Unmarshal(out, &m); err != nil || m["euid"] != "0" {
		t.Fatalf("setuid-root probe run by %s outside the seal has euid %q (%s): the mount ignores setuid, the test would prove nothing", acct.Name, m["euid"], out)
	}
	return path
}

// connectorSpec is a session whose workload is argv, with one http
// connector on a UNIX socket in front of 127.0.0.1:8888.
func connectorSpec(t *testing.T, m mode, id string, wait bool, argv []string) map[string]any {
	t.Helper()
	key := filepath.Join(realtest.SharedDir(t, m.owner), "key")
	realtest.WriteFile(t, m.owner, key, testKey, 0o600)
	sockDir := realtest.SharedDir(t, m.owner)
	return map[string]any{
		"id": id, "owner": m.owner.Name,
		"workload": map[string]any{"argv": argv},
		"connectors": []any{map[string]any{
			"name": "web", "kind": "http", "target": "127.0.0.1:8888", "listen": "unix:" + sockDir + "/web.sock", "wait": wait,
		}},
		"ticket_key_file": key,
	}
}

const noCaps = "0000000000000000"

// TestSealNoPrivileges: in every mode, on every one of 20 launches in a
// row, the workload, a grandchild of it and the connector have empty
// bounding, ambient, permitted, effective and inheritable sets and
// no_new_privs, and a setuid-root program run by the workload stays the
// owner. (Issue 9 item 1: a root runner left the bounding set full and set
// no_new_privs on one thread of init only.)
func TestSealNoPrivileges(t *testing.T) {
	const launches = 20
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			suid := setuidProbe(t, m.owner)
			bad := 0
			var first []string
			for i := range launches {
				out := filepath.Join(resultsDir(t, m.owner), "privs.json")
				argv := []string{realtest.Probe(t), "privs", out}
				if suid != "" {
					argv = append(argv, suid)
				}
				spec := connectorSpec(t, m, fmt.Sprintf("privs-%d-%d", i, time.Now().UnixNano()%1e6), false, argv)
				r := realtest.StartRunner(t, spec, realtest.RunOptions{As: m.as, NoWaitReady: true})
				ev := r.WaitExit(t, 60*time.Second)
				if ev.Code == nil || *ev.Code != 0 {
					t.Fatalf("launch %d: probe failed: %+v\n%s", i, ev, r.Stderr.String())
				}
				var res struct {
					Workload    map[string]string   `json:"workload"`
					Grandchild  map[string]string   `json:"grandchild"`
					Connectors  []map[string]string `json:"connectors"`
					Setuid      map[string]string   `json:"setuid"`
					SetuidError string              `json:"setuid_error"`
				}
				b, err := os.ReadFile(out)
				if err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal(b, &res); err != nil {
					t.Fatal(err)
				}
				if len(res.Connectors) == 0 {
					t.Fatalf("launch %d: the probe found no connector", i)
				}
				var problems []string
				check := func(who string, st map[string]string) {
					for _, f := range []string{"CapBnd", "CapAmb", "CapPrm", "CapEff", "CapInh"} {
						if st[f] != noCaps {
							problems = append(problems, fmt.Sprintf("%s (pid %s): %s %s", who, st["pid"], f, st[f]))
						}
					}
					if st["NoNewPrivs"] != "1" {
						problems = append(problems, fmt.Sprintf("%s (pid %s): NoNewPrivs %q", who, st["pid"], st["NoNewPrivs"]))
					}
				}
				check("workload", res.Workload)
				check("grandchild", res.Grandchild)
				for _, c := range res.Connectors {
					check("connector", c)
				}
				if suid != "" {
					if res.Setuid == nil {
						problems = append(problems, "setuid probe did not run: "+res.SetuidError)
					} else if res.Setuid["euid"] != strconv.Itoa(m.owner.UID) || res.Setuid["CapEff"] != noCaps {
						problems = append(problems, fmt.Sprintf("setuid-root program ran with euid %s, CapEff %s (owner is %d)", res.Setuid["euid"], res.Setuid["CapEff"], m.owner.UID))
					}
				}
				if len(problems) > 0 {
					bad++
					if first == nil {
						first = append([]string{fmt.Sprintf("launch %d:", i)}, problems...)
					}
				}
			}
			if bad > 0 {
				t.Fatalf("%d of %d launches had privileges inside the seal; first:\n  %s", bad, launches, strings.Join(first, "\n  "))
			}
		})
	}
}

type attackResult struct {
	Pid     int               `json:"pid"`
	Role    string            `json:"role"`
	Refused map[string]string `json:"refused"`
	Worked  []string          `json:"worked"`
}

// TestSealWorkloadCannotTouchConnectors: the workload tries, on the seal's
// init and on its connector, kill -0, SIGSTOP, opening /proc/PID/mem,
// reading /proc/PID/environ, listing /proc/PID/fd, pidfd_getfd of the
// connector's listener (fd 3) and ptrace: every one is refused, and the
// connector still serves a client afterwards. (Issue 9 item 2: the
// workload could take the listener and answer outside clients itself.)
func TestSealWorkloadCannotTouchConnectors(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			for _, a := range attackConnectors(t, m, nil) {
				if len(a.Worked) > 0 {
					t.Errorf("the workload reached %s (pid %d inside) with %v", a.Role, a.Pid, a.Worked)
				}
			}
		})
	}
}

// TestSealWithoutLandlock: on a kernel without Landlock (simulated with a
// seccomp filter on the runner that fails its system calls with ENOSYS),
// ready warns, and the workload still cannot ptrace, read /proc/PID/{mem,
// environ,fd} of, or pidfd_getfd from init or its connector, because they
// are not dumpable. Signals get through there, as the README says, but
// not to a root init.
func TestSealWithoutLandlock(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			var warned bool
			res := attackConnectors(t, m, func(r *realtest.Runner) {
				for _, w := range r.Ready.Warnings {
					warned = warned || strings.Contains(w, "Landlock ABI 0")
				}
			}, realtest.Probe(t), "nolandlock")
			if !warned {
				t.Error("no warning that the kernel has no Landlock")
			}
			for _, a := range res {
				for _, w := range a.Worked {
					// A root init is another uid: signals to it stay refused,
					// however many threads its unix guard started with the
					// owner's ids (the probe made it start 64 first).
					if (w != "kill-0" && w != "sigstop") || (a.Role == "init" && m.name == "root") {
						t.Errorf("without Landlock the workload reached %s (pid %d inside) with %s", a.Role, a.Pid, w)
					}
				}
				// The control: here the attack does reach the process it aims at.
				if a.Role == "connector" && !slices.Contains(a.Worked, "kill-0") {
					t.Errorf("without Landlock the workload could not signal its connector (pid %d inside): %s", a.Pid, a.Refused["kill-0"])
				}
			}
		})
	}
}

// attackConnectors runs the probe's attack as the workload of a session
// with one connector (the runner's command line prefixed with wrap), checks
// the connector serves afterwards, and returns what the probe found.
func attackConnectors(t *testing.T, m mode, onReady func(*realtest.Runner), wrap ...string) []attackResult {
	t.Helper()
	out := filepath.Join(resultsDir(t, m.owner), "attack.json")
	id := fmt.Sprintf("attack-%d", time.Now().UnixNano()%1e6)
	spec := connectorSpec(t, m, id, true, []string{realtest.Probe(t), "attack", out, "http:tcp:127.0.0.1:8888"})
	// The probe serves only once its attacks are done, so ready means the
	// results are written.
	r := realtest.StartRunner(t, spec, realtest.RunOptions{As: m.as, Wrap: wrap})
	for _, w := range r.Ready.Warnings {
		t.Logf("warning: %s", w)
	}
	if onReady != nil {
		onReady(r)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res []attackResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	roles := map[string]int{}
	for _, a := range res {
		roles[a.Role]++
		t.Logf("%s pid %d: worked %v, refused %v", a.Role, a.Pid, a.Worked, a.Refused)
	}
	if roles["init"] != 1 || roles["connector"] != 1 {
		t.Fatalf("the probe attacked %v, want init and one connector", roles)
	}

	// The connector still answers a client with a ticket.
	sock := strings.TrimPrefix(r.Ready.Endpoints["web"], "unix:")
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	tok := sign(t, ticket.Claims{Session: id, Connector: "web", User: "alice", Mode: ticket.Control})
	resp, err := client.Get("http://session/after?ticket=" + tok)
	if err != nil {
		t.Fatalf("the connector does not serve after the attack: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"/after"`) {
		t.Fatalf("after the attack: status %d, body %s", resp.StatusCode, body)
	}
	return res
}

// TestSealIPCAndUTS: a SysV shared memory segment of the host is neither
// listed nor attachable inside, and the seal has a host name of its own.
// (Issue 9 item 3: there was no IPC namespace.)
func TestSealIPCAndUTS(t *testing.T) {
	key := int(rand.Int32N(1<<30) + 1)
	shmID, err := unix.SysvShmGet(key, 4096, unix.IPC_CREAT|unix.IPC_EXCL|0o666)
	if err != nil {
		t.Fatalf("shmget on the host: %v", err)
	}
	t.Cleanup(func() { unix.SysvShmCtl(shmID, unix.IPC_RMID, nil) })
	host, _ := os.Hostname()
	hostCgroup, _ := os.ReadFile("/proc/self/cgroup")
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			out := filepath.Join(resultsDir(t, m.owner), "ns.json")
			spec := map[string]any{
				"id": fmt.Sprintf("ipc-%d", time.Now().UnixNano()%1e6), "owner": m.owner.Name,
				"workload": map[string]any{"argv": []string{realtest.Probe(t), "nsinfo", out, strconv.Itoa(shmID)}},
			}
			r := realtest.StartRunner(t, spec, realtest.RunOptions{As: m.as, NoWaitReady: true})
			ev := r.WaitExit(t, 60*time.Second)
			if ev.Code == nil || *ev.Code != 0 {
				t.Fatalf("probe failed: %+v\n%s", ev, r.Stderr.String())
			}
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			var res map[string]string
			if err := json.Unmarshal(b, &res); err != nil {
				t.Fatal(err)
			}
			if res["shmat"] == "attached" {
				t.Errorf("the workload attached the host's shared memory segment %d", shmID)
			}
			for _, line := range strings.Split(res["sysvipc_shm"], "\n")[1:] {
				if f := strings.Fields(line); len(f) > 1 && (f[0] == strconv.Itoa(key) || f[1] == strconv.Itoa(shmID)) {
					t.Errorf("the host's segment is listed inside: %s", line)
				}
			}
			if res["hostname"] == host {
				t.Errorf("host name inside is the host's, %q", host)
			}
			if res["resolves"] != "127.0.1.1" {
				t.Errorf("the seal's host name %q resolves inside to %q, want 127.0.1.1 (from its /etc/hosts)", res["hostname"], res["resolves"])
			}
			// In a cgroup namespace every line shows the seal's own cgroup as
			// "/"; the host's view shows where the runner is.
			if !slices.ContainsFunc(ev.Warnings, func(w string) bool { return strings.Contains(w, "cgroup") }) {
				for _, line := range strings.Split(strings.TrimSpace(res["cgroup"]), "\n") {
					if !strings.HasSuffix(line, ":/") {
						t.Errorf("cgroup path visible inside: %q (host: %q)", line, hostCgroup)
					}
				}
			}
			t.Logf("inside: hostname %q, shmat %q, mqueue mounted %q", res["hostname"], res["shmat"], res["mqueue_mounted"])
		})
	}
}

// TestSealCgoBuild: a binary built the default way, with cgo (go build or
// go install wherever gcc is present), starts an unprivileged session.
// (Issue 9 item 8: such a build failed with "drop bounding capability 0:
// operation not supported".)
func TestSealCgoBuild(t *testing.T) {
	bin := realtest.CgoBinary(t)
	info, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(info), "CGO_ENABLED=1") {
		t.Fatalf("%s is not a cgo build:\n%s", bin, info)
	}
	m := modes(t)[len(modes(t))-1]
	spec := connectorSpec(t, m, fmt.Sprintf("cgo-%d", time.Now().UnixNano()%1e6), true,
		[]string{realtest.Probe(t), "serve", "http:tcp:127.0.0.1:8888"})
	r := realtest.StartRunner(t, spec, realtest.RunOptions{As: m.as, Binary: bin})
	t.Logf("cgo build ready: %+v", r.Ready)
}
