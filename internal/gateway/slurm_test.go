package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/backend/slurm"
	"github.com/airlock-hpc/airlock/internal/portal"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/realtest/kubetest"
	"github.com/airlock-hpc/airlock/internal/registration"
	"github.com/coder/websocket"
	"go.uber.org/goleak"
)

// TestMain fails the package when its tests leave a goroutine behind: a
// watcher, a janitor or a proxied connection that outlives its gateway.
func TestMain(m *testing.M) {
	code := m.Run()
	realtest.StopSlurm()
	kubetest.Stop()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines left behind after the tests:\n%v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// slurmGateway starts a gateway whose sessions are jobs on the real
// one-node test cluster. It listens on every address at port (0: any), and
// tells runners to register at this machine's host name, so registrations
// come from the node's own address whatever /etc/hosts maps it to.
func slurmGateway(t testing.TB, cl *realtest.Slurm, stateDir string, port int, users ...string) (*testGateway, int) {
	t.Helper()
	return slurmGatewayWith(t, cl, stateDir, port, nil, users...)
}

// slurmGatewayWith is slurmGateway with mod applied to the config last.
func slurmGatewayWith(t testing.TB, cl *realtest.Slurm, stateDir string, port int, mod func(*Config), users ...string) (*testGateway, int) {
	t.Helper()
	cfg := testConfig(t, stateDir, 50*time.Millisecond, slog.LevelWarn, users...)
	be, err := slurm.New(slurm.Config{
		Airlock: realtest.Binary(t), Poll: 300 * time.Millisecond, Env: cl.Env(), JobPrefix: jobPrefix(stateDir),
		Profiles: map[string]slurm.JobOptions{"later": {SbatchArgs: []string{"--begin=now+4"}}, "slow": {SbatchArgs: []string{"--begin=now+4"}}},
		Logger:   cfg.Logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Runs after the gateway's stop (registered later): the poller ends.
	t.Cleanup(func() { be.Close() })
	cfg.Backend = be
	later := desktopProfile()
	later.Name = "later"
	broken := Profile{Name: "broken", Kind: "app", Command: []string{"/bin/sh", "-c", "exit 3"}, Port: 8888, CPUs: 1, MemoryMB: 256, Lifetime: time.Hour}
	// slow runs on its node for a while before it is ready: a window in
	// which the job runs but has not registered.
	slow := Profile{Name: "slow", Kind: "app", Command: []string{"/bin/sh", "-c", "sleep 15; exec " + realtest.Probe(t) + " serve http:tcp:127.0.0.1:8888"},
		Port: 8888, CPUs: 1, MemoryMB: 256, Lifetime: time.Hour}
	cfg.Profiles = []Profile{desktopProfile(), later, broken, slow}
	cfg.ReconcileEvery = time.Second
	// A load limit no machine meets: it must not apply, the gateway's host
	// is not where sessions run.
	cfg.Limits.MaxLoad = 1e-9
	if mod != nil {
		mod(&cfg)
	}
	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		t.Fatal(err)
	}
	port = ln.Addr().(*net.TCPAddr).Port
	host, _ := os.Hostname()
	cfg.RegisterURL = fmt.Sprintf("https://%s:%d", host, port)
	g, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The limit is past whatever this machine reads (0.00 when idle).
	g.readLoad = func() (float64, error) { return 1000, nil }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Serve(ctx, ln) }()
	tg := &testGateway{t: t, g: g, url: fmt.Sprintf("https://127.0.0.1:%d", port), stateDir: stateDir, cancel: cancel, done: done, cfg: cfg}
	t.Cleanup(tg.stop)
	return tg, port
}

// slurmTest starts a parallel test against the cluster: a gateway of its
// own and alice, logged in with a token.
func slurmTest(t *testing.T) (*realtest.Slurm, *testGateway, *client) {
	t.Helper()
	t.Parallel()
	cl := realtest.SlurmCluster(t)
	realtest.TestUser(t)
	tg, _ := slurmGateway(t, cl, t.TempDir(), 0, "alice")
	return cl, tg, tg.client().loginToken("alice")
}

// jobPrefix gives each test's gateway its own job names: the tests share
// one cluster, and each gateway cancels the jobs of its prefix it has no
// session for.
func jobPrefix(stateDir string) string {
	sum := sha256.Sum256([]byte(stateDir))
	return "airlock" + hex.EncodeToString(sum[:4])
}

// slurmJob is what squeue says of a job: "" when it knows none.
func slurmJob(t testing.TB, cl *realtest.Slurm, ref string) string {
	t.Helper()
	out, err := cl.Command("squeue", "--noheader", "--states=all", "--jobs="+strings.TrimPrefix(ref, "job:"), "--format=%T|%u|%C|%m|%l")
	if err != nil && !strings.Contains(err.Error(), "Invalid job id") {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// consoleThrough opens the session's console through the gateway, as the
// browser does, and reads one frame of the desktop.
func consoleThrough(t testing.TB, c *client, id string) *realtest.RFB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(c.tg.url, "https")+"/s/"+id+"/console/", &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}},
		HTTPHeader: http.Header{"Authorization": {"Bearer " + c.token}},
	})
	if err != nil {
		t.Fatalf("console websocket: %v (%v)", err, resp)
	}
	rfb, err := realtest.NewRFB(websocket.NetConn(context.Background(), ws, websocket.MessageBinary))
	if err != nil {
		t.Fatal(err)
	}
	err = realtest.WaitFor(20*time.Second, func() error {
		if err := rfb.Update(false); err != nil {
			return err
		}
		if rfb.Distinct() < 2 {
			return fmt.Errorf("framebuffer still blank: xterm not drawn")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return rfb
}

// register posts a registration as a runner would, from local address
// from ("" for any).
func register(t *testing.T, tg *testGateway, id, token, from string, reg string) (int, string) {
	t.Helper()
	d := &net.Dialer{Timeout: 10 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	req, _ := http.NewRequest("POST", tg.url+registration.Path(id), strings.NewReader(reg))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp.StatusCode, realtest.ReadAllString(resp.Body)
}

// positionRE finds the queue position in a queued session's reason (other
// tests' jobs may queue beside it).
var positionRE = regexp.MustCompile(`\(position [1-9][0-9]* of [1-9][0-9]* in debug\)`)

// TestSlurmDesktop: a desktop launched through the gateway is a job of the
// session's owner, queued (with Slurm's reason and position) then running;
// its console answers through the gateway; forged, replayed and misplaced
// registrations are refused; stop cancels the job and leaves nothing.
func TestSlurmDesktop(t *testing.T) {
	cl, tg, c := slurmTest(t)
	owner := realtest.TestUser(t)

	s := c.start(map[string]any{"profile": "later", "cpus": 2, "lifetime": "90m"})
	if s.State != "queued" {
		t.Fatalf("a new Slurm session is %s, want queued", s.State)
	}
	q := c.waitStateFor(s.ID, "queued", 10*time.Second)
	err := realtest.WaitFor(10*time.Second, func() error {
		c.do("GET", "/api/v1/sessions/"+s.ID, nil, &q)
		if !strings.Contains(q.Reason, "BeginTime") || !positionRE.MatchString(q.Reason) {
			return fmt.Errorf("queued reason %q: want Slurm's reason and the position", q.Reason)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := tg.g.cfg.Store.GetSession(context.Background(), s.ID)
	job := slurmJob(t, cl, st.BackendRef)
	if want := "PENDING|" + owner.Name + "|2|1G|1:30:00"; job != want {
		t.Fatalf("squeue: %q, want %q (state|user|cpus|memory|time limit)", job, want)
	}

	ready := c.waitStateFor(s.ID, "ready", 60*time.Second)
	st, _ = tg.g.cfg.Store.GetSession(context.Background(), s.ID)
	rfb := consoleThrough(t, c, s.ID)
	if rfb.W != 640 || rfb.H != 480 || rfb.Distinct() < 2 {
		t.Fatalf("desktop through the gateway: %dx%d with %d colours", rfb.W, rfb.H, rfb.Distinct())
	}
	rfb.Close()
	if ready.Reason != "" {
		t.Fatalf("ready session keeps reason %q", ready.Reason)
	}

	k := tg.g.sessionKey(s.ID)
	secretsStayOut(t, tg.g.registerToken(s.ID), hex.EncodeToString(k[:]))

	// The attacks. The right token, replayed: refused (the session is
	// ready). A wrong token: refused. The right token for a session that
	// is not ready, from an address that is not the node's: refused.
	token := tg.g.registerToken(s.ID)
	ok := `{"event":"ready","ports":{"console":1},"tls_sha256":"` + strings.Repeat("a", 64) + `"}`
	if code, body := register(t, tg, s.ID, token, "", ok); code != 409 {
		t.Fatalf("replayed registration: %d %s", code, body)
	}
	if code, body := register(t, tg, s.ID, strings.Repeat("0", 64), "", ok); code != 403 {
		t.Fatalf("forged token: %d %s", code, body)
	}
	if code, body := register(t, tg, "s-000000000000", tg.g.registerToken("s-000000000000"), "", ok); code != 404 {
		t.Fatalf("registration of an unknown session: %d %s", code, body)
	}
	after, _ := tg.g.cfg.Store.GetSession(context.Background(), s.ID)
	if after.Endpoints["console"] != st.Endpoints["console"] || after.TLSSHA256 != st.TLSSHA256 {
		t.Fatalf("a refused registration changed the endpoints: %v, was %v", after.Endpoints, st.Endpoints)
	}

	if code, _ := c.do("DELETE", "/api/v1/sessions/"+s.ID, nil, nil); code != 202 {
		t.Fatalf("stop: %d", code)
	}
	ended := c.waitStateFor(s.ID, "ended", 30*time.Second)
	if ended.Reason != "stopped by alice" {
		t.Fatalf("reason %q", ended.Reason)
	}
	err = realtest.WaitFor(30*time.Second, func() error {
		if j := slurmJob(t, cl, st.BackendRef); j != "" && !strings.HasPrefix(j, "CANCELLED|") {
			return fmt.Errorf("job after stop: %s", j)
		}
		return realtest.Gone(s.ID)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSlurmRegisterFromElsewhere: a registration with the right token, for
// a session whose job runs, made from an address that is not the job's
// node, is refused and changes nothing.
func TestSlurmRegisterFromElsewhere(t *testing.T) {
	cl, tg, c := slurmTest(t)
	s := c.start(map[string]any{"profile": "slow"})
	// While queued there is no node at all.
	token := tg.g.registerToken(s.ID)
	reg := `{"event":"ready","ports":{"app":5901},"tls_sha256":"` + strings.Repeat("b", 64) + `"}`
	if code, body := register(t, tg, s.ID, token, "", reg); code != 403 || !strings.Contains(body, "not running on a node") {
		t.Fatalf("registration of a queued job: %d %s", code, body)
	}
	// Once it runs, a registration from another address of this machine
	// (127.0.0.2 is not what the node's name resolves to) is refused.
	addrs, _ := net.LookupHost(cl.Node)
	for _, a := range addrs {
		if a == "127.0.0.2" {
			t.Skip("the node's name resolves to 127.0.0.2")
		}
	}
	// A job whose begin time has passed starts at the scheduler's next
	// pass, which Slurm makes every 60 s (sched_interval) when nothing
	// else wakes it: seen waiting past 30 s in CI.
	c.waitStateFor(s.ID, "starting", 90*time.Second)
	code, body := register(t, tg, s.ID, token, "127.0.0.2", reg)
	if code != 403 || !strings.Contains(body, "came from 127.0.0.2") {
		t.Fatalf("registration from elsewhere: %d %s", code, body)
	}
	// The runner's own registration still gets through.
	c.waitStateFor(s.ID, "ready", 60*time.Second)
	st, _ := tg.g.cfg.Store.GetSession(context.Background(), s.ID)
	if st.TLSSHA256 == strings.Repeat("b", 64) || strings.HasSuffix(st.Endpoints["app"], ":5901") {
		t.Fatalf("forged endpoints stored: %v", st.Endpoints)
	}
	c.do("DELETE", "/api/v1/sessions/"+s.ID, nil, nil)
	c.waitStateFor(s.ID, "ended", 30*time.Second)
}

// TestSlurmEndsBySlurm: a job cancelled behind the gateway's back and one
// that reaches its time limit end their sessions with Slurm's reason.
func TestSlurmEndsBySlurm(t *testing.T) {
	cl, tg, c := slurmTest(t)
	cancelled := c.start(map[string]any{"profile": "desktop"})
	// Slurm counts whole minutes: a 1-minute session.
	timed := c.start(map[string]any{"profile": "desktop", "lifetime": "1m"})
	c.waitStateFor(cancelled.ID, "ready", 60*time.Second)
	st, _ := tg.g.cfg.Store.GetSession(context.Background(), cancelled.ID)
	if _, err := cl.Command("scancel", strings.TrimPrefix(st.BackendRef, "job:")); err != nil {
		t.Fatal(err)
	}
	s := c.waitStateFor(cancelled.ID, "ended", 30*time.Second)
	if !strings.Contains(s.Reason, "cancelled in Slurm") {
		t.Fatalf("scancelled job's session ended with %q", s.Reason)
	}
	// Slurm checks time limits about every 30 s: allow the minute and two
	// checks.
	s = c.waitStateFor(timed.ID, "ended", 3*time.Minute)
	if !strings.Contains(s.Reason, "time limit") || !strings.Contains(s.Reason, "TIMEOUT") {
		t.Fatalf("timed-out job's session ended with %q", s.Reason)
	}
	for _, id := range []string{cancelled.ID, timed.ID} {
		if err := realtest.WaitFor(30*time.Second, func() error { return realtest.Gone(id) }); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSlurmRestartWhileQueued: a gateway that restarts while a job waits
// picks the session up when the job starts (the runner retries its
// registration until the gateway is back).
func TestSlurmRestartWhileQueued(t *testing.T) {
	t.Parallel()
	cl := realtest.SlurmCluster(t)
	realtest.TestUser(t)
	dir := t.TempDir()
	tg, port := slurmGateway(t, cl, dir, 0, "alice")
	c := tg.client().loginToken("alice")
	s := c.start(map[string]any{"profile": "later"})
	c.waitStateFor(s.ID, "queued", 10*time.Second)
	tg.stop()

	tg2, _ := slurmGateway(t, cl, dir, port)
	c2 := tg2.client().loginToken("alice")
	c2.waitStateFor(s.ID, "ready", 90*time.Second)
	rfb := consoleThrough(t, c2, s.ID)
	rfb.Close()
	c2.do("DELETE", "/api/v1/sessions/"+s.ID, nil, nil)
	c2.waitStateFor(s.ID, "ended", 30*time.Second)
}

// TestSlurmGhostJob: an airlock job no session owns (left by a crash) is
// cancelled by the gateway's reconciliation.
func TestSlurmGhostJob(t *testing.T) {
	t.Parallel()
	cl := realtest.SlurmCluster(t)
	owner := realtest.TestUser(t)
	tg, _ := slurmGateway(t, cl, t.TempDir(), 0, "alice")
	out, err := cl.Command("runuser", "-u", owner.Name, "--", "sbatch", "--parsable", "--hold", "--job-name="+tg.g.cfg.Backend.(*slurm.Backend).JobName("s-ghost0000000"),
		"--output=/dev/null", "--chdir=/", "--wrap", "sleep 600")
	if err != nil {
		t.Fatal(err)
	}
	ref := "job:" + strings.TrimSpace(out)
	err = realtest.WaitFor(20*time.Second, func() error {
		if j := slurmJob(t, cl, ref); j != "" && !strings.HasPrefix(j, "CANCELLED|") {
			return fmt.Errorf("ghost job is %s", j)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// secretsStayOut: no process shows the registration token or the ticket
// key on its command line (ps shows those to everyone), and none but the
// runner itself and Slurm's step daemon has them in its environment:
// nothing in the seal does.
func secretsStayOut(t *testing.T, secrets ...string) {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*")
	checked := 0
	for _, p := range procs {
		cmdline, err := os.ReadFile(p + "/cmdline")
		if err != nil || len(cmdline) == 0 {
			continue
		}
		environ, _ := os.ReadFile(p + "/environ")
		args := strings.ReplaceAll(string(cmdline), "\x00", " ")
		for _, sec := range secrets {
			if strings.Contains(args, sec) {
				t.Fatalf("%s shows a secret on its command line: %s", p, args)
			}
			if bytes.Contains(environ, []byte(sec)) {
				checked++
				if !strings.Contains(args, " run --register ") && !strings.HasPrefix(args, "slurmstepd") {
					t.Fatalf("%s (%s) has a secret in its environment", p, args)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no process holds the secrets at all: the check looked in the wrong place")
	}
}

// TestSlurmDesktopInBrowser: the portal in headless Chromium with the
// Slurm backend: the desktop page says the job is queued, with Slurm's
// reason and the queue position, then shows the desktop once the job runs;
// what is typed runs in the session on the node; stop ends it.
// queuedReason is how the page shows a queued job: Slurm's reason, then
// the place in the queue.
var queuedReason = regexp.MustCompile(`waiting in the queue: (BeginTime|Resources|Priority)\b.*\(position \d+ of \d+ in \w+\)`)

func TestSlurmDesktopInBrowser(t *testing.T) {
	t.Parallel()
	needBrowser(t)
	cl := realtest.SlurmCluster(t)
	owner := realtest.TestUser(t)
	dir := ownerDir(t, owner, "airlock-e2e-slurm-")
	p, err := portal.New()
	if err != nil {
		t.Fatal(err)
	}
	tg, _ := slurmGatewayWith(t, cl, t.TempDir(), 0, func(c *Config) {
		c.Portal = p
		c.Profiles[1].Programs = [][]string{{"xterm", "-geometry", "80x20+0+0", "-e", "bash", "--norc"}}
	}, "alice")
	b := startBrowser(t, "e2e-slurm.mjs", map[string]string{
		"base": tg.url, "password": testPassword, "owner": "alice", "profile": "later",
		"command": "echo SLURM-$((6*7)) > " + dir + "/typed.txt",
	})
	q := b.wait("queued", 60*time.Second)
	// Slurm's own reason: BeginTime while the profile's start time is
	// ahead; Resources or Priority once other tests' jobs (they run in
	// parallel on the one test node) hold it. Any is Slurm's words.
	if text, _ := q["text"].(string); !queuedReason.MatchString(text) {
		t.Fatalf("queued page says %q; want Slurm's reason and the queue position", text)
	}
	b.wait("drawn", 120*time.Second)
	b.wait("typed", 30*time.Second)
	err = realtest.WaitFor(20*time.Second, func() error {
		got, err := os.ReadFile(filepath.Join(dir, "typed.txt"))
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(got)) != "SLURM-42" {
			return fmt.Errorf("typed.txt holds %q", got)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the typed command did not run in the session: %v", err)
	}
	b.proceed()
	end := b.wait("stopped", 60*time.Second)
	if errs, _ := end["errors"].([]any); len(errs) > 0 {
		t.Fatalf("page errors: %v", errs)
	}
}

// TestSlurmRunnerReason: a session whose workload fails on the node ends
// with what the runner reported (Slurm only knows the job failed).
func TestSlurmRunnerReason(t *testing.T) {
	_, _, c := slurmTest(t)
	s := c.start(map[string]any{"profile": "broken"})
	ended := c.waitStateFor(s.ID, "ended", 60*time.Second)
	if !strings.Contains(ended.Reason, "workload workload exited with code 3") || !strings.Contains(ended.Reason, "FAILED") {
		t.Fatalf("reason %q: want the runner's and Slurm's", ended.Reason)
	}
}
