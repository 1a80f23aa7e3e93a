package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/airlock-hpc/airlock/internal/forward"
	"github.com/airlock-hpc/airlock/internal/portal"
	"github.com/airlock-hpc/airlock/internal/realtest"
)

// pyServer is a real Python http.server on a UNIX socket: files from a
// directory, POST answers how many bytes it read, /sse streams one event
// and then holds the stream open. It writes its pid to a file, and the
// request line of every request it sees to that file's name + ".requests".
const pyServer = `
import http.server, os, socketserver, sys, time
class H(http.server.SimpleHTTPRequestHandler):
    def address_string(self):
        return "unix"
    def log_request(self, code="-", size="-"):
        with open(pidfile + ".requests", "a") as f:
            f.write(self.requestline + "\n")
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        got = 0
        while got < n:
            b = self.rfile.read(min(1 << 20, n - got))
            if not b:
                break
            got += len(b)
        body = ("got %d bytes" % got).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/sse":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.write(b"data: first\n\n")
            self.wfile.flush()
            time.sleep(30)
            return
        return super().do_GET()
class S(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
sock, root, pidfile = sys.argv[1:4]
os.chdir(root)
with open(pidfile, "w") as f:
    f.write(str(os.getpid()))
srv = S(sock, H)
# As careless as an app can be: anyone may connect to the socket itself;
# only its directory keeps other users out.
os.chmod(sock, 0o777)
srv.serve_forever()
`

// forwardProc is a running `airlock forward`.
type forwardProc struct {
	cmd  *exec.Cmd
	url  string
	done chan error
	log  *realtest.LockedBuffer
}

// startForward runs the airlock binary's forward command with token and
// args, and waits for the URL it prints.
func startForward(t *testing.T, tg *testGateway, gatewayURL, token string, args ...string) *forwardProc {
	t.Helper()
	full := append([]string{"forward", "--gateway", gatewayURL, "--ca", filepath.Join(tg.stateDir, "tls.crt"), "--log-level", "debug"}, args...)
	cmd := exec.Command(realtest.Binary(t), full...)
	cmd.Env = append(os.Environ(), "AIRLOCK_TOKEN="+token, "XDG_CONFIG_HOME="+t.TempDir())
	return runForward(t, cmd)
}

// runForward starts cmd, an `airlock forward` the caller prepared, and
// waits for the URL it prints. The test's end stops it (SIGTERM, then
// SIGKILL after 30 s: a sealed app takes up to 15 s to end) and, if the
// test failed, shows its log.
func runForward(t *testing.T, cmd *exec.Cmd) *forwardProc {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	fp := &forwardProc{cmd: cmd, done: make(chan error, 1), log: &realtest.LockedBuffer{}}
	cmd.Stderr = fp.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { fp.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-fp.done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("airlock forward's log:\n%s", fp.log.String())
		}
	})
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		if s.Scan() {
			line <- s.Text()
		}
		close(line)
		io.Copy(io.Discard, out)
	}()
	select {
	case u, ok := <-line:
		if !ok {
			t.Fatalf("airlock forward printed no URL; log:\n%s", fp.log.String())
		}
		fp.url = u
	case <-time.After(60 * time.Second):
		t.Fatalf("airlock forward printed no URL in 60 s; log:\n%s", fp.log.String())
	}
	return fp
}

// socket is the app socket the forward's log names (to=unix:PATH).
func (fp *forwardProc) socket(t *testing.T) string {
	t.Helper()
	var sock string
	if err := realtest.WaitFor(10*time.Second, func() error {
		for _, f := range strings.Fields(fp.log.String()) {
			if p, ok := strings.CutPrefix(f, "to=unix:"); ok {
				sock = p
				return nil
			}
		}
		return errors.New("no socket in the log")
	}); err != nil {
		t.Fatal(err)
	}
	return sock
}

// waitExit waits for the forward command to end and returns its error.
func (fp *forwardProc) waitExit(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-fp.done:
		fp.done <- err
		return err
	case <-time.After(d):
		t.Fatalf("airlock forward still runs after %s; log:\n%s", d, fp.log.String())
		return nil
	}
}

// visit GETs u as c's browser would, following redirects (the app host's
// handshake through the gateway) up to 8 times.
func (c *client) visit(u string) (*http.Response, string) {
	c.t.Helper()
	for range 8 {
		req, _ := http.NewRequest("GET", u, nil)
		req.Header.Set("Sec-Fetch-Mode", "navigate")
		resp, body := c.send(req)
		if resp.StatusCode != http.StatusSeeOther && resp.StatusCode != http.StatusFound {
			return resp, body
		}
		next, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
		if err != nil {
			c.t.Fatal(err)
		}
		u = next.String()
	}
	c.t.Fatalf("too many redirects from %s", u)
	return nil, ""
}

// waitVisit visits u as c until it answers status, and body if body is
// not empty: a new forward's tunnel and app may still be coming up.
func (c *client) waitVisit(u string, status int, body string) error {
	c.t.Helper()
	return realtest.WaitFor(30*time.Second, func() error {
		if resp, got := c.visit(u); resp.StatusCode != status || body != "" && got != body {
			return fmt.Errorf("%s: %d %q", u, resp.StatusCode, got)
		}
		return nil
	})
}

// startPyServer writes the Python server and its document root; the
// command line for `airlock forward -- ...` uses {socket}.
func startPyServer(t *testing.T) (argv []string, pidFile string) {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "www")
	os.Mkdir(root, 0o755)
	os.WriteFile(filepath.Join(root, "index.html"), []byte("<h1>hello from python</h1>\n"), 0o644)
	script := filepath.Join(dir, "server.py")
	os.WriteFile(script, []byte(pyServer), 0o644)
	pidFile = filepath.Join(dir, "pid")
	return []string{"python3", script, "{socket}", root, pidFile}, pidFile
}

func readPid(t *testing.T, file string) int {
	t.Helper()
	var pid int
	if err := realtest.WaitFor(10*time.Second, func() error {
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return pid
}

// alive reports whether pid runs (a zombie does not count).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+1:])
	return len(f) > 0 && f[0] != "Z"
}

// restartSameAddr stops tg and starts a gateway on the same state
// directory and the same address, so URLs stay the same.
func restartSameAddr(t *testing.T, tg *testGateway) *testGateway {
	t.Helper()
	addr := strings.TrimPrefix(tg.url, "https://")
	tg.stop()
	cfg := testConfig(t, tg.stateDir, 50*time.Millisecond, slog.LevelWarn)
	cfg.Profiles = tg.cfg.Profiles
	cfg.Forward = tg.cfg.Forward
	g, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := realtest.WaitFor(10*time.Second, func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Serve(ctx, ln) }()
	tg2 := &testGateway{t: t, g: g, url: tg.url, stateDir: tg.stateDir, cancel: cancel, done: done, cfg: cfg}
	t.Cleanup(tg2.stop)
	return tg2
}

// wsEchoHandler answers WebSocket messages with "echo: " and the message.
func wsEchoHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte("echo: "), b...)); err != nil {
				return
			}
		}
	})
}

// wsEcho serves a WebSocket echo app on a UNIX socket.
func wsEcho(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "echo.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: wsEchoHandler()}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

// TestForward: `airlock forward` publishes a real Python http.server on a
// UNIX socket at https://NAME-USER.DOMAIN/; the owner reaches it through
// the app host's sign-in, uploads and streams pass; another user and an
// anonymous visitor are refused; the gateway restarts and the tunnel comes
// back by itself with the same URL; stopping the forward from the API
// ends the app and the URL.
func TestForward(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed")
	}
	outer := t
	tg := startGateway(t, "", nil, "alice", "bob")
	token := tg.client().loginToken("alice").token
	argv, pidFile := startPyServer(t)
	fp := startForward(t, tg, tg.url, token, append([]string{"--name", "web", "--"}, argv...)...)
	u, err := url.Parse(fp.url)
	if err != nil || u.Scheme != "https" || u.Hostname() != "web-alice.apps.localhost" || u.Port() != strings.Split(tg.url, ":")[2] || u.Path != "/" {
		t.Fatalf("URL %q, want https://web-alice.apps.localhost:PORT/", fp.url)
	}
	pid := readPid(t, pidFile)
	alice := tg.client().loginCookie("alice").reachApps()
	waitApp := func(c *client) {
		t.Helper()
		if err := c.waitVisit(fp.url, 200, "<h1>hello from python</h1>\n"); err != nil {
			t.Fatalf("the forwarded app: %v", err)
		}
	}
	waitApp(alice)

	var id string
	{
		var list struct{ Sessions []sessionOut }
		tg.client().loginToken("alice").do("GET", "/api/v1/sessions", nil, &list)
		for _, s := range list.Sessions {
			if s.Profile == "forward:web" && s.State == "ready" {
				id = s.ID
			}
		}
		if id == "" {
			t.Fatalf("the forward is not in alice's session list: %+v", list.Sessions)
		}
	}

	t.Run("large upload and form post", func(t *testing.T) {
		big := bytes.Repeat([]byte("x"), 20<<20)
		req, _ := http.NewRequest("POST", fp.url+"upload", bytes.NewReader(big))
		req.Header.Set("Origin", strings.TrimSuffix(fp.url, "/"))
		resp, body := alice.send(req)
		if resp.StatusCode != 200 || body != fmt.Sprintf("got %d bytes", len(big)) {
			t.Fatalf("upload: %d %q", resp.StatusCode, body)
		}
	})
	t.Run("streaming response", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", fp.url+"sse", nil)
		resp, err := alice.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		// The app holds the stream open 30 s after the first event: it
		// must arrive now, not when the stream ends.
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || line != "data: first\n" {
			t.Fatalf("first event: %q %v", line, err)
		}
	})
	// appSaw reports whether the app received a request for path.
	appSaw := func(path string) bool {
		b, err := os.ReadFile(pidFile + ".requests")
		if err != nil {
			t.Fatalf("the app's request log: %v", err) // alice's visits wrote it
		}
		return strings.Contains(string(b), " "+path+" ")
	}
	if !appSaw("/") {
		t.Fatal("the app's request log does not show alice's visit: the checks below would prove nothing")
	}
	t.Run("another user refused", func(t *testing.T) {
		bob := tg.client().loginCookie("bob").reachApps()
		resp, body := bob.visit(fp.url + "bob-cookie")
		if resp.StatusCode != 404 || strings.Contains(body, "hello from python") {
			t.Errorf("bob on alice's forward: %d %s, want 404", resp.StatusCode, body)
		}
		// Nor with alice's forward ID on the gateway's origin.
		if code, body := tg.client().loginToken("bob").do("GET", "/s/"+id+"/app/bob-token", nil, nil); code != 404 {
			t.Errorf("bob's token on /s/ID/app/: %d %s, want 404", code, body)
		}
		for _, p := range []string{"/bob-cookie", "/bob-token"} {
			if appSaw(p) {
				t.Errorf("the app saw bob's request for %s", p)
			}
		}
	})
	t.Run("anonymous refused", func(t *testing.T) {
		anon := tg.client().reachApps()
		resp, body := anon.visit(fp.url + "anon-get")
		// The app host sends the visitor to the gateway to sign in, which
		// says to log in first.
		if resp.StatusCode != 401 || resp.Request.URL.Path != "/s/"+id+"/app/anon-get" {
			t.Errorf("anonymous on the forward: %d at %s, want 401 at the gateway's /s/%s/app/: %s", resp.StatusCode, resp.Request.URL, id, body)
		}
		req, _ := http.NewRequest("POST", fp.url+"anon-post", strings.NewReader("x"))
		if resp, _ := anon.send(req); resp.StatusCode != 401 {
			t.Errorf("anonymous POST on the app host: %d, want 401", resp.StatusCode)
		}
		for _, p := range []string{"/anon-get", "/anon-post"} {
			if appSaw(p) {
				t.Errorf("the app saw the anonymous request for %s", p)
			}
		}
	})

	t.Run("gateway restart keeps the URL", func(t *testing.T) {
		tg = restartSameAddr(outer, tg)
		alice = tg.client().loginCookie("alice").reachApps()
		waitApp(alice)
		if !strings.Contains(fp.log.String(), "tunnel down") {
			t.Errorf("the forward never saw its tunnel break; log:\n%s", fp.log.String())
		}
	})

	t.Run("stop from the API ends the app and the URL", func(t *testing.T) {
		if code, body := tg.client().loginToken("alice").do("DELETE", "/api/v1/sessions/"+id, nil, nil); code != 202 {
			t.Fatalf("stop: %d %s", code, body)
		}
		resp, body := alice.visit(fp.url)
		if resp.StatusCode != 404 {
			t.Errorf("after stop, the URL: %d %s, want 404", resp.StatusCode, body)
		}
		if err := fp.waitExit(t, 30*time.Second); err != nil {
			t.Errorf("airlock forward exited with %v after a stop, want 0", err)
		}
		if err := realtest.WaitFor(10*time.Second, func() error {
			if alive(pid) {
				return fmt.Errorf("the app (pid %d) still runs", pid)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	})
}

// TestForwardAppEnds: the app ends by itself (killed): airlock forward
// ends the forward, and the URL is gone at once.
func TestForwardAppEnds(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed")
	}
	tg := startGateway(t, "", nil, "alice")
	token := tg.client().loginToken("alice").token
	argv, pidFile := startPyServer(t)
	fp := startForward(t, tg, tg.url, token, append([]string{"--name", "gone", "--"}, argv...)...)
	alice := tg.client().loginCookie("alice").reachApps()
	if err := alice.waitVisit(fp.url, 200, ""); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(readPid(t, pidFile), syscall.SIGKILL)
	fp.waitExit(t, 30*time.Second)
	if resp, body := alice.visit(fp.url); resp.StatusCode != 404 {
		t.Fatalf("after the app died, the URL: %d %s, want 404", resp.StatusCode, body)
	}
}

// TestForwardKilled: `airlock forward` killed outright (SIGKILL: no
// cleanup of its own runs) takes its app with it (Pdeathsig), and the
// forward ends when its tunnel stays down past the grace.
func TestForwardKilled(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed")
	}
	tg := startGateway(t, "", func(c *Config) { c.Forward.Grace = time.Second }, "alice")
	alice := tg.client().loginToken("alice")
	argv, pidFile := startPyServer(t)
	fp := startForward(t, tg, tg.url, alice.token, append([]string{"--name", "killed", "--"}, argv...)...)
	pid := readPid(t, pidFile)
	if !alive(pid) {
		t.Fatalf("the app (pid %d) does not run", pid)
	}
	var list struct{ Sessions []sessionOut }
	alice.do("GET", "/api/v1/sessions", nil, &list)
	if len(list.Sessions) != 1 {
		t.Fatalf("sessions %+v", list.Sessions)
	}
	fp.cmd.Process.Kill()
	if err := realtest.WaitFor(10*time.Second, func() error {
		if alive(pid) {
			return fmt.Errorf("the app (pid %d) outlived airlock forward", pid)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	alice.waitStateFor(list.Sessions[0].ID, "ended", 15*time.Second)
}

// TestForwardWebSocket: a WebSocket echo app forwarded with --to
// unix:PATH; its WebSockets pass through the app host for the owner, and a
// view share lets a viewer read pages but not open them.
func TestForwardWebSocket(t *testing.T) {
	tg := startGateway(t, "", nil, "alice", "bob")
	sock := wsEcho(t)
	fp := startForward(t, tg, tg.url, tg.client().loginToken("alice").token, "--name", "echo", "--to", "unix:"+sock)
	alice := tg.client().loginCookie("alice").reachApps()
	origin := strings.TrimSuffix(fp.url, "/")
	// Sign in (the handshake sets the app cookie); the echo app answers
	// a plain GET with 426, which is fine.
	if err := alice.waitVisit(fp.url, http.StatusUpgradeRequired, ""); err != nil {
		t.Fatal(err)
	}
	dial := func(c *client) (*websocket.Conn, *http.Response, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return websocket.Dial(ctx, "wss://"+strings.TrimPrefix(origin, "https://")+"/ws", &websocket.DialOptions{
			HTTPClient: c.http, HTTPHeader: http.Header{"Origin": {origin}}})
	}
	ws, _, err := dial(alice)
	if err != nil {
		t.Fatalf("WebSocket through the forward: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws.Write(ctx, websocket.MessageText, []byte("ping"))
	if _, b, err := ws.Read(ctx); err != nil || string(b) != "echo: ping" {
		t.Fatalf("echo: %q %v", b, err)
	}
	ws.Close(websocket.StatusNormalClosure, "")

	// A view share: bob signs in through it, but may not open the app's
	// WebSocket (there is no connector to say so; the gateway does).
	var share struct{ ID, URL string }
	var list struct{ Sessions []sessionOut }
	tg.client().loginToken("alice").do("GET", "/api/v1/sessions", nil, &list)
	id := list.Sessions[0].ID
	if code, body := tg.client().loginToken("alice").do("POST", "/api/v1/sessions/"+id+"/shares", map[string]string{"mode": "view"}, &share); code != 201 {
		t.Fatalf("share: %d %s", code, body)
	}
	bob := tg.client().loginCookie("bob").reachApps()
	bob.visit(tg.url + strings.TrimPrefix(share.URL, tg.url))
	if resp, body := bob.visit(tg.url + "/s/" + id + "/app/"); resp.StatusCode != http.StatusUpgradeRequired {
		t.Fatalf("bob through the view share: %d %s", resp.StatusCode, body)
	}
	if _, resp, err := dial(bob); err == nil || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("a view share opened the forward's WebSocket: %v %v", err, resp)
	}
}

// TestForwardNames: a user cannot take another user's host, and a stale
// tunnel cannot come back to a name a new forward took over.
func TestForwardNames(t *testing.T) {
	tg := startGateway(t, "", func(c *Config) { c.Forward.MaxPerUser = 2 }, "alice", "bob")
	cl := func(user string) *forward.Client { return tg.forwardClient(tg.client().loginToken(user).token) }
	ctx := context.Background()
	alice, bob := cl("alice"), cl("bob")
	for _, name := range []string{"web-alice", "Web", "", "a.b", strings.Repeat("a", 33)} {
		if _, err := bob.Create(ctx, name, ""); err == nil || !strings.Contains(err.Error(), "bad_name") {
			t.Errorf("name %q: %v, want bad_name", name, err)
		}
	}
	fa, err := alice.Create(ctx, "web", "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(fa.URL, "https://web-alice.apps.localhost:") {
		t.Fatalf("URL %s", fa.URL)
	}
	// bob's "web" is web-bob, never alice's host.
	fb, err := bob.Create(ctx, "web", "")
	if err != nil || !strings.HasPrefix(fb.URL, "https://web-bob.") {
		t.Fatalf("bob's web: %v %v", fb, err)
	}
	// Bob cannot attach a tunnel to alice's forward, with his token or
	// hers without its secret.
	for _, c := range []struct {
		name string
		who  *forward.Client
		f    forward.Forward
		want string // the gateway's code; no_session reads as ErrStopped
	}{
		{"bob's token, alice's secret", bob, forward.Forward{ID: fa.ID, Secret: fa.Secret}, "no_session"},
		{"alice's token, bob's secret", alice, forward.Forward{ID: fa.ID, Secret: fb.Secret}, "bad_secret"},
		{"alice's token on bob's forward", alice, forward.Forward{ID: fb.ID, Secret: fb.Secret}, "no_session"},
	} {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := c.who.Serve(sctx, &c.f, "unix:/nonexistent", forward.Backoff{}, nil)
		cancel()
		if c.want == "no_session" && !errors.Is(err, forward.ErrStopped) || c.want != "no_session" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: tunnel to %s: %v, want %s", c.name, c.f.ID, err, c.want)
		}
	}
	// None of them attached: both forwards still wait for their tunnel.
	for _, f := range []*forward.Forward{fa, fb} {
		var s sessionOut
		owner := tg.client().loginToken(map[string]string{fa.ID: "alice", fb.ID: "bob"}[f.ID])
		if code, body := owner.do("GET", "/api/v1/sessions/"+f.ID, nil, &s); code != 200 || s.State != "starting" {
			t.Errorf("forward %s after the refused tunnels: %d %s, want starting", f.ID, code, body)
		}
	}

	// The stale tunnel: alice's first "web" is down (its node crashed);
	// a new "web" takes the name over; the old one's tunnel is refused.
	fa2, err := alice.Create(ctx, "web", "")
	if err != nil {
		t.Fatalf("take over a forward whose tunnel is down: %v", err)
	}
	if fa2.URL != fa.URL || fa2.ID == fa.ID {
		t.Fatalf("take-over: %+v after %+v", fa2, fa)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = alice.Serve(sctx, fa, "unix:/nonexistent", forward.Backoff{}, nil)
	cancel()
	if !errors.Is(err, forward.ErrStopped) {
		t.Fatalf("the stale forward's tunnel: %v, want ErrStopped", err)
	}
	// While the new one's tunnel is up, the name is taken. (Up as the
	// gateway sees it: the forward is ready once the gateway holds its
	// tunnel; a Create before that would take the name over, rightly.)
	sctx, cancel = context.WithCancel(ctx)
	defer cancel()
	go alice.Serve(sctx, fa2, "unix:/nonexistent", forward.Backoff{}, nil)
	tg.client().loginToken("alice").waitStateFor(fa2.ID, "ready", 30*time.Second)
	if _, err := alice.Create(ctx, "web", ""); err == nil || !strings.Contains(err.Error(), "name_in_use") {
		t.Fatalf("a second web while the first is up: %v, want name_in_use", err)
	}
	// The limit: alice has one live forward of two.
	if _, err := alice.Create(ctx, "two", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Create(ctx, "three", ""); err == nil || !strings.Contains(err.Error(), "too_many_forwards") {
		t.Fatalf("a third forward: %v, want too_many_forwards", err)
	}
}

// TestForwardSocketPrivate: the app's socket is in a fresh 0700 directory
// of the forward's user: another local user of the node cannot connect to
// it, while the forward still serves the owner.
func TestForwardSocketPrivate(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as two local users")
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed")
	}
	owner := realtest.TestUser(t)
	tg := startGateway(t, "", nil, "alice")
	shared := realtest.SharedDir(t, owner)
	ca, _ := os.ReadFile(filepath.Join(tg.stateDir, "tls.crt"))
	realtest.WriteFile(t, owner, filepath.Join(shared, "ca.crt"), ca, 0o644)
	realtest.WriteFile(t, owner, filepath.Join(shared, "server.py"), []byte(pyServer), 0o644)
	os.Mkdir(filepath.Join(shared, "www"), 0o755)
	realtest.WriteFile(t, owner, filepath.Join(shared, "www", "index.html"), []byte("private app\n"), 0o644)
	cmd := exec.Command(realtest.Binary(t), "forward", "--gateway", tg.url, "--ca", filepath.Join(shared, "ca.crt"), "--name", "priv", "--",
		"python3", filepath.Join(shared, "server.py"), "{socket}", filepath.Join(shared, "www"), filepath.Join(shared, "pid"))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + owner.Home, "XDG_CONFIG_HOME=" + shared, "AIRLOCK_TOKEN=" + tg.client().loginToken("alice").token}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(owner.UID), Gid: uint32(owner.GID)}}
	fp := runForward(t, cmd)
	u := fp.url
	if !strings.HasPrefix(u, "https://priv-alice.") {
		t.Fatalf("URL %q", u)
	}
	sock := fp.socket(t)
	alice := tg.client().loginCookie("alice").reachApps()
	if resp, body := alice.visit(u); resp.StatusCode != 200 || body != "private app\n" {
		t.Fatalf("the owner's app: %d %q", resp.StatusCode, body)
	}
	// Another local user (nobody) tries the socket itself.
	// The system's python: the test runner's may be under /root.
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Skip("no /usr/bin/python3")
	}
	probe := exec.Command(py, "-c", "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print('connected')", sock)
	probe.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	b, err := probe.CombinedOutput()
	if err == nil || strings.Contains(string(b), "connected") || !strings.Contains(string(b), "PermissionError") {
		t.Fatalf("another local user connecting to %s: %v %s", sock, err, b)
	}
	// The same probe as the owner connects: the refusal above is the
	// directory's mode, not a wrong path.
	probe = exec.Command(py, "-c", "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print('connected')", sock)
	probe.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(owner.UID), Gid: uint32(owner.GID)}}
	if b, err := probe.CombinedOutput(); err != nil || !strings.Contains(string(b), "connected") {
		t.Fatalf("the owner connecting to %s: %v %s", sock, err, b)
	}
}

// TestForwardSlurmJob: `airlock forward` inside a real Slurm job that
// airlock did not start (a plain sbatch script, with AIRLOCK_TOKEN in its
// environment) publishes the job's app; stopping the forward ends the job.
func TestForwardSlurmJob(t *testing.T) {
	cl := realtest.SlurmCluster(t)
	owner := realtest.TestUser(t)
	tg := startGateway(t, "", nil, "alice")
	shared := realtest.SharedDir(t, owner)
	ca, _ := os.ReadFile(filepath.Join(tg.stateDir, "tls.crt"))
	realtest.WriteFile(t, owner, filepath.Join(shared, "ca.crt"), ca, 0o644)
	realtest.WriteFile(t, owner, filepath.Join(shared, "server.py"), []byte(pyServer), 0o644)
	os.Mkdir(filepath.Join(shared, "www"), 0o755)
	realtest.WriteFile(t, owner, filepath.Join(shared, "www", "index.html"), []byte("from a slurm job\n"), 0o644)
	script := fmt.Sprintf("#!/bin/sh\nexec %s forward --gateway %s --ca %s --name job -- /usr/bin/python3 %s {socket} %s %s\n",
		realtest.Binary(t), tg.url, filepath.Join(shared, "ca.crt"), filepath.Join(shared, "server.py"), filepath.Join(shared, "www"), filepath.Join(shared, "pid"))
	realtest.WriteFile(t, owner, filepath.Join(shared, "job.sh"), []byte(script), 0o755)
	out := filepath.Join(shared, "job.out")
	sb := exec.Command("runuser", "-u", owner.Name, "--", "sbatch", "--parsable", "--output="+out, "--chdir="+shared,
		"--export=PATH,AIRLOCK_TOKEN,XDG_CONFIG_HOME", filepath.Join(shared, "job.sh"))
	sb.Env = append(os.Environ(), cl.Env()...)
	sb.Env = append(sb.Env, "AIRLOCK_TOKEN="+tg.client().loginToken("alice").token, "XDG_CONFIG_HOME="+shared, "PATH=/usr/local/bin:/usr/bin:/bin")
	b, err := sb.CombinedOutput()
	if err != nil {
		t.Fatalf("sbatch: %v %s", err, b)
	}
	job := strings.TrimSpace(string(b))
	t.Cleanup(func() { cl.Command("scancel", job) })
	var u string
	if err := realtest.WaitFor(60*time.Second, func() error {
		b, _ := os.ReadFile(out)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "https://job-alice.") {
				u = l
				return nil
			}
		}
		return fmt.Errorf("no URL in the job's output yet: %q", b)
	}); err != nil {
		t.Fatal(err)
	}
	alice := tg.client().loginCookie("alice").reachApps()
	if err := alice.waitVisit(u, 200, "from a slurm job\n"); err != nil {
		b, _ := os.ReadFile(out)
		t.Fatalf("the job's app: %v; job output:\n%s", err, b)
	}
	var list struct{ Sessions []sessionOut }
	tg.client().loginToken("alice").do("GET", "/api/v1/sessions", nil, &list)
	if len(list.Sessions) != 1 || list.Sessions[0].Profile != "forward:job" {
		t.Fatalf("sessions %+v", list.Sessions)
	}
	if code, body := tg.client().loginToken("alice").do("DELETE", "/api/v1/sessions/"+list.Sessions[0].ID, nil, nil); code != 202 {
		t.Fatalf("stop: %d %s", code, body)
	}
	if err := realtest.WaitFor(60*time.Second, func() error {
		out, err := cl.Command("squeue", "--noheader", "--jobs="+job, "--format=%T")
		if err == nil && strings.TrimSpace(out) != "" {
			return fmt.Errorf("job %s is %s", job, strings.TrimSpace(out))
		}
		return nil
	}); err != nil {
		t.Fatalf("the job after the forward stopped: %v", err)
	}
}

// TestForwardBrowser: in headless Chromium, the owner opens the forward's
// URL (signed in through the gateway), the app's page talks to the app's
// WebSocket, and the portal's Stop button ends the forward: airlock
// forward exits and the URL is gone.
func TestForwardBrowser(t *testing.T) {
	needBrowser(t)
	p, err := portal.New()
	if err != nil {
		t.Fatal(err)
	}
	tg := startGateway(t, "", func(c *Config) { c.Portal = p }, "alice")
	sock := filepath.Join(t.TempDir(), "echo.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	echo := wsEchoHandler()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ws" {
			echo.ServeHTTP(w, r)
			return
		}
		io.WriteString(w, "<!doctype html><title>echo</title><p>echo app</p>")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	fp := startForward(t, tg, tg.url, tg.client().loginToken("alice").token, "--name", "chrome", "--to", "unix:"+sock)
	var list struct{ Sessions []sessionOut }
	tg.client().loginToken("alice").do("GET", "/api/v1/sessions", nil, &list)
	if len(list.Sessions) != 1 {
		t.Fatalf("sessions %+v", list.Sessions)
	}
	id := list.Sessions[0].ID
	b := startBrowser(t, "forward-browser.mjs", map[string]string{"base": tg.url, "password": testPassword, "user": "alice", "url": fp.url, "id": id})
	m := b.wait("app", 90*time.Second)
	if m["echoed"] != "echo: from chromium" || m["url"] != fp.url {
		t.Fatalf("the app's WebSocket in Chromium: %v", m)
	}
	b.wait("stopped", 30*time.Second)
	if err := fp.waitExit(t, 30*time.Second); err != nil {
		t.Errorf("airlock forward after the portal's Stop: %v", err)
	}
	if resp, body := tg.client().loginCookie("alice").reachApps().visit(fp.url); resp.StatusCode != 404 {
		t.Errorf("the URL after the portal's Stop: %d %s", resp.StatusCode, body)
	}
}

// TestForwardLogin: `airlock login` keeps a token (password on stdin) that
// a later `airlock forward` uses with no AIRLOCK_TOKEN.
func TestForwardLogin(t *testing.T) {
	tg := startGateway(t, "", nil, "alice")
	home := t.TempDir()
	ca := filepath.Join(tg.stateDir, "tls.crt")
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "XDG_CONFIG_HOME=" + home}
	login := exec.Command(realtest.Binary(t), "login", "--gateway", tg.url, "--ca", ca, "--user", "alice")
	login.Env = env
	login.Stdin = strings.NewReader(testPassword + "\n")
	if out, err := login.CombinedOutput(); err != nil {
		t.Fatalf("airlock login: %v %s", err, out)
	}
	st, err := os.Stat(filepath.Join(home, "airlock", "login.json"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("the kept login: %v %v", st, err)
	}
	bad := exec.Command(realtest.Binary(t), "login", "--gateway", tg.url, "--ca", ca, "--user", "alice")
	bad.Env = append(env, "XDG_CONFIG_HOME="+t.TempDir())
	bad.Stdin = strings.NewReader("wrong password\n")
	if out, err := bad.CombinedOutput(); err == nil {
		t.Fatalf("airlock login with a wrong password: %s", out)
	}
	sock := goApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "logged-in forward\n") }))
	cmd := exec.Command(realtest.Binary(t), "forward", "--name", "kept", "--to", sock)
	cmd.Env = env
	line := runForward(t, cmd).url
	if !strings.HasPrefix(line, "https://kept-alice.") {
		t.Fatalf("airlock forward with the kept login: %q", line)
	}
	alice := tg.client().loginCookie("alice").reachApps()
	if err := alice.waitVisit(line, 200, "logged-in forward\n"); err != nil {
		t.Fatal(err)
	}
}

// TestForwardPort: --port 0 gives the command a free loopback port in
// {port} and AIRLOCK_PORT; python3 -m http.server serves on it.
func TestForwardPort(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed")
	}
	tg := startGateway(t, "", nil, "alice")
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "index.html"), []byte("on a port\n"), 0o644)
	fp := startForward(t, tg, tg.url, tg.client().loginToken("alice").token, "--port", "0", "--",
		"sh", "-c", `test "$AIRLOCK_PORT" = "$1" && exec python3 -m http.server "$1" --bind 127.0.0.1 --directory "$2"`, "sh", "{port}", dir)
	if !strings.HasPrefix(fp.url, "https://sh-alice.") {
		t.Fatalf("URL %q (the default name is the command's)", fp.url)
	}
	alice := tg.client().loginCookie("alice").reachApps()
	if err := alice.waitVisit(fp.url, 200, "on a port\n"); err != nil {
		t.Fatal(err)
	}
}

// TestForwardSeal: with --seal the app runs in a seal of its own: the
// forward serves it, while the app reaches nothing (not even the gateway
// on the node's loopback) and cannot read the token `airlock login` kept.
func TestForwardSeal(t *testing.T) {
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("no /usr/bin/python3")
	}
	owner := realtest.Current(t)
	if os.Geteuid() == 0 {
		owner = realtest.TestUser(t) // a seal never runs as root
	}
	tg := startGateway(t, "", nil, "alice")
	dir := ownerDir(t, owner, "airlock-fwd-seal-")
	conf := filepath.Join(dir, "conf")
	ca, _ := os.ReadFile(filepath.Join(tg.stateDir, "tls.crt"))
	realtest.WriteFile(t, owner, filepath.Join(dir, "ca.crt"), ca, 0o644)
	realtest.WriteFile(t, owner, filepath.Join(dir, "server.py"), []byte(pyServer), 0o644)
	os.Mkdir(filepath.Join(dir, "www"), 0o755)
	os.Chown(filepath.Join(dir, "www"), owner.UID, owner.GID)
	realtest.WriteFile(t, owner, filepath.Join(dir, "www", "index.html"), []byte("sealed app\n"), 0o644)
	asOwner := func(args ...string) *exec.Cmd {
		cmd := exec.Command(realtest.Binary(t), args...)
		cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + owner.Home, "XDG_CONFIG_HOME=" + conf}
		if os.Geteuid() == 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(owner.UID), Gid: uint32(owner.GID)}}
		}
		return cmd
	}
	login := asOwner("login", "--gateway", tg.url, "--ca", filepath.Join(dir, "ca.crt"), "--user", "alice")
	login.Stdin = strings.NewReader(testPassword + "\n")
	if out, err := login.CombinedOutput(); err != nil {
		t.Fatalf("airlock login: %v %s", err, out)
	}
	port := strings.Split(tg.url, ":")[2]
	probe := fmt.Sprintf(`import socket
out = open("/tmp/probe.txt", "w")
try:
    socket.create_connection(("127.0.0.1", %s), 3); out.write("gateway reached\n")
except OSError as e:
    out.write("gateway refused: %%s\n" %% e)
try:
    open(%q).read(); out.write("token read\n")
except OSError as e:
    out.write("token refused: %%s\n" %% e)
out.close()
`, port, filepath.Join(conf, "airlock", "login.json"))
	realtest.WriteFile(t, owner, filepath.Join(dir, "probe.py"), []byte(probe), 0o644)
	cmd := asOwner("forward", "--seal", "--name", "sealed", "--", "sh", "-c",
		`/usr/bin/python3 "$1/probe.py"; exec /usr/bin/python3 "$1/server.py" {socket} "$1/www" /tmp/pid`, "sh", dir)
	fp := runForward(t, cmd)
	u := fp.url
	if !strings.HasPrefix(u, "https://sealed-alice.") {
		t.Fatalf("URL %q", u)
	}
	alice := tg.client().loginCookie("alice").reachApps()
	if err := alice.waitVisit(u, 200, "sealed app\n"); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(filepath.Dir(fp.socket(t)), "probe.txt"))
	if err != nil {
		t.Fatalf("the sealed app's probe: %v", err)
	}
	if !strings.Contains(string(got), "gateway refused") || !strings.Contains(string(got), "token refused") {
		t.Fatalf("the sealed app reached out: %s", got)
	}
}
