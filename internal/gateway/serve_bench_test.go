package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/coder/websocket"
)

// serveProc is the real `airlock serve` binary as a child process, with a
// config file and a state directory of its own, so its memory and CPU time
// can be read from /proc apart from the load generator's.
type serveProc struct {
	tb       testing.TB
	pid      int
	url      string
	stateDir string
	token    string
	http     *http.Client
}

// serveConfig is the airlock.yaml of the benchmarks' `airlock serve`: the
// embedded defaults, less the launch checks a busy shared machine would
// trip, with one app profile serving the probe's bench mode.
const serveConfig = `run_as: %q
# One benchmark user: one account for every portal user is accepted here.
run_as_shared: true
profiles:
  - name: bench
    kind: app
    app:
      command: [%q, serve, "bench:tcp:127.0.0.1:{port}"]
      port: 8888
    cpus: {default: 1, max: 2}
    memory: {default: 512M, max: 1G}
limits:
  max_sessions: 0
  max_sessions_per_user: 0
  max_load: 0
  min_free_memory: 0
log:
  level: warn
`

// startServe starts `airlock serve` on a free port of 127.0.0.1 with one
// user, benchUser, and a bearer token for them. At the end of tb it stops
// every session, then the gateway.
func startServe(tb testing.TB) *serveProc { return startServeWith(tb, "") }

// startServeWith is startServe with more of airlock.yaml (top-level keys
// the bench config does not set, such as store).
func startServeWith(tb testing.TB, extra string) *serveProc {
	tb.Helper()
	bin, probe := realtest.Binary(tb), realtest.Probe(tb)
	dir := tb.TempDir()
	runAs := ""
	if os.Geteuid() == 0 {
		runAs = realtest.TestUser(tb).Name
	}
	cfg := filepath.Join(dir, "airlock.yaml")
	if err := os.WriteFile(cfg, append(fmt.Appendf(nil, serveConfig, runAs, probe), extra...), 0o600); err != nil {
		tb.Fatal(err)
	}
	add := exec.Command(bin, "users", "add", benchUser, "--password-stdin", "--config", cfg, "--state-dir", dir)
	add.Stdin = strings.NewReader(testPassword + "\n")
	if out, err := add.CombinedOutput(); err != nil {
		tb.Fatalf("airlock users add: %v\n%s", err, out)
	}
	port, err := freePort()
	if err != nil {
		tb.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "serve.log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--config", cfg, "--state-dir", dir, "--listen", "127.0.0.1:"+strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	sp := &serveProc{tb: tb, pid: cmd.Process.Pid, url: "https://127.0.0.1:" + strconv.Itoa(port), stateDir: dir, http: tlsClient(64)}
	tb.Cleanup(func() {
		sp.stopAll()
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	err = realtest.WaitFor(30*time.Second, func() error {
		select {
		case <-done:
			return errors.New("airlock serve exited")
		default:
		}
		resp, err := sp.http.Get(sp.url + "/api/v1/me")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "serve.log"))
		tb.Fatalf("airlock serve: %v\n%s", err, log)
	}
	req, _ := http.NewRequest("POST", sp.url+"/api/v1/tokens", nil)
	req.SetBasicAuth(benchUser, testPassword)
	resp, err := sp.http.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	var tok struct{ Token string }
	json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if resp.StatusCode != 201 || tok.Token == "" {
		tb.Fatalf("token: status %d", resp.StatusCode)
	}
	sp.token = tok.Token
	return sp
}

// api sends a JSON API request and decodes the answer into out.
func (sp *serveProc) api(method, path string, body, out any) (int, error) {
	return apiCall(sp.http, sp.url, sp.token, method, path, body, out)
}

// waitState polls the API until session id is in state.
func (sp *serveProc) waitState(id, state string) error {
	return realtest.WaitFor(60*time.Second, func() error {
		var s struct{ State, Reason string }
		if code, err := sp.api("GET", "/api/v1/sessions/"+id, nil, &s); code != 200 || err != nil {
			return fmt.Errorf("get %s: %d %v", id, code, err)
		}
		if s.State != state {
			if s.State == "ended" {
				return fmt.Errorf("session %s ended: %s", id, s.Reason)
			}
			return fmt.Errorf("session %s is %s, want %s", id, s.State, state)
		}
		return nil
	})
}

// launch starts a bench session and waits until it is ready.
func (sp *serveProc) launch() benchSession {
	sp.tb.Helper()
	var created struct{ ID string }
	if code, err := sp.api("POST", "/api/v1/sessions", map[string]any{"profile": "bench"}, &created); code != 201 || err != nil {
		sp.tb.Fatalf("launch: %d %v", code, err)
	}
	if err := sp.waitState(created.ID, "ready"); err != nil {
		sp.tb.Fatal(err)
	}
	return benchSession{gwURL: sp.url, token: sp.token, id: created.ID, dir: filepath.Join(sp.stateDir, "sessions", created.ID)}
}

// stopAll stops every session of benchUser and waits until each ended.
func (sp *serveProc) stopAll() {
	var list struct{ Sessions []struct{ ID, State string } }
	if code, err := sp.api("GET", "/api/v1/sessions", nil, &list); code != 200 || err != nil {
		sp.tb.Errorf("list sessions to stop: %d %v", code, err)
		return
	}
	for _, s := range list.Sessions {
		if s.State == "ended" {
			continue
		}
		sp.api("DELETE", "/api/v1/sessions/"+s.ID, nil, nil)
		if err := sp.waitState(s.ID, "ended"); err != nil {
			sp.tb.Errorf("stop %s: %v", s.ID, err)
		}
	}
}

// proc is one process as /proc shows it.
type proc struct {
	pid, ppid, pgid int
	cmdline         string // arguments joined by spaces
}

// procs lists the processes of this machine.
func procs() []proc {
	ents, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f := statFields(pid)
		if len(f) < 3 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		pgid, _ := strconv.Atoi(f[2])
		cl, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		out = append(out, proc{pid: pid, ppid: ppid, pgid: pgid, cmdline: strings.TrimSpace(strings.ReplaceAll(string(cl), "\x00", " "))})
	}
	return out
}

// statFields are the fields of /proc/PID/stat after the command name:
// [0] is the state, [1] the ppid, [11] utime, [12] stime.
func statFields(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

// descendants returns root's descendants whose command line contains
// every one of match.
func descendants(root int, match ...string) []int {
	ps := procs()
	children := map[int][]proc{}
	for _, p := range ps {
		children[p.ppid] = append(children[p.ppid], p)
	}
	var out []int
	var walk func(int)
	walk = func(pid int) {
		for _, c := range children[pid] {
			ok := true
			for _, m := range match {
				ok = ok && strings.Contains(c.cmdline, m)
			}
			if ok {
				out = append(out, c.pid)
			}
			walk(c.pid)
		}
	}
	walk(root)
	return out
}

// processGroup returns the processes of group pgid.
func processGroup(pgid int) []int {
	var out []int
	for _, p := range procs() {
		if p.pgid == pgid {
			out = append(out, p.pid)
		}
	}
	return out
}

// clockTick is the unit of utime and stime in /proc/PID/stat: USER_HZ,
// which is 100 on Linux whatever the kernel's HZ.
const clockTick = 10 * time.Millisecond

// cpuOf is the CPU time (user and system) the processes have used.
func cpuOf(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		f := statFields(pid)
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(u+s) * clockTick
	}
	return total
}

// rssKiB is the resident memory of the processes, in KiB.
func rssKiB(pids ...int) int64 {
	var total int64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				total += n
			}
		}
	}
	return total
}

// sessionPids are the processes of session id started by the gateway
// process gw: the runner and everything under it.
func sessionPids(gw int, id string) []int {
	runners := descendants(gw, "airlock run", id)
	out := append([]int{}, runners...)
	for _, r := range runners {
		out = append(out, descendants(r)...)
	}
	return out
}

// connectorPid is the app connector process of session id.
func connectorPid(gw int, id string) int {
	for _, pid := range sessionPids(gw, id) {
		if cl, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline"); bytes.Contains(cl, []byte("connector\x00http")) {
			return pid
		}
	}
	return 0
}

// viewerResult is what measureViewers found.
type viewerResult struct {
	n                     int
	connect               time.Duration // to open all n
	gwBefore, gwAfter     int64         // gateway VmRSS, KiB
	sessBefore, sessAfter int64         // the session's processes' VmRSS, KiB
}

func (v viewerResult) gwPerViewer() float64 { return float64(v.gwAfter-v.gwBefore) / float64(v.n) }
func (v viewerResult) sessPerViewer() float64 {
	return float64(v.sessAfter-v.sessBefore) / float64(v.n)
}

// measureViewers opens n WebSocket viewers of session s through the
// gateway process sp (each proves itself with one echo, then stays idle),
// reads the resident memory of the gateway and of the session's processes
// before and with all n open, and closes them.
func measureViewers(sp *serveProc, s benchSession, n int) (viewerResult, error) {
	url := "wss" + strings.TrimPrefix(s.gwURL, "https") + "/s/" + s.id + "/app/echo"
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: sp.http.Transport.(*http.Transport).TLSClientConfig}}
	dial := func() (*websocket.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: client,
			HTTPHeader: http.Header{"Authorization": {"Bearer " + s.token}}, CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			return nil, err
		}
		if err := c.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
			c.CloseNow()
			return nil, err
		}
		if _, _, err := c.Read(ctx); err != nil {
			c.CloseNow()
			return nil, err
		}
		return c, nil
	}
	// One viewer first, so the before figure includes what the first
	// connection makes (TLS session, proxy, pools) and not just idleness.
	c, err := dial()
	if err != nil {
		return viewerResult{}, fmt.Errorf("first viewer: %w", err)
	}
	c.Close(websocket.StatusNormalClosure, "")
	r := viewerResult{n: n, gwBefore: rssKiB(sp.pid), sessBefore: rssKiB(sessionPids(sp.pid, s.id)...)}
	conns := make([]*websocket.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.CloseNow()
			}
		}
	}()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  = make(chan int)
	)
	start := time.Now()
	for range 32 {
		wg.Go(func() {
			for i := range next {
				c, err := dial()
				mu.Lock()
				conns[i] = c
				first = cmpErr(first, err)
				mu.Unlock()
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	r.connect = time.Since(start)
	if first != nil {
		return r, fmt.Errorf("viewers: %w", first)
	}
	r.gwAfter, r.sessAfter = rssKiB(sp.pid), rssKiB(sessionPids(sp.pid, s.id)...)
	return r, nil
}

// BenchmarkViewers1000: 1,000 concurrent WebSocket viewers of one session
// through `airlock serve`, idle after connecting. It reports the resident
// memory each viewer adds to the gateway process and to the session's
// processes (runner, connector, app), in KiB; ns/op is the time to open
// all 1,000.
func BenchmarkViewers1000(b *testing.B) {
	sp := startServe(b)
	s := sp.launch()
	var r viewerResult
	for b.Loop() {
		var err error
		if r, err = measureViewers(sp, s, 1000); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(r.gwPerViewer(), "gw-KiB/viewer")
	b.ReportMetric(r.sessPerViewer(), "session-KiB/viewer")
}
