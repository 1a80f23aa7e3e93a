package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"

	"github.com/airlock-hpc/airlock/internal/clientauth"
	"github.com/airlock-hpc/airlock/internal/forward"
	"github.com/airlock-hpc/airlock/internal/realtest"
)

// hostileTunnel dials forward f's tunnel as its node would, with the
// owner's token and the secret, and gives back the node's end of yamux
// for the test to misuse.
func hostileTunnel(t *testing.T, tg *testGateway, token string, f *forward.Forward) *yamux.Session {
	t.Helper()
	mux, err := yamux.Server(hostileTunnelConn(t, tg, token, f), forward.MuxConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mux.Close() })
	return mux
}

// hostileTunnelConn is hostileTunnel's byte stream, for raw frames.
func hostileTunnelConn(t *testing.T, tg *testGateway, token string, f *forward.Forward) net.Conn {
	t.Helper()
	tlsc, err := clientauth.Credentials{CAFile: filepath.Join(tg.stateDir, "tls.crt")}.TLS()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, tg.url+"/api/v1/forwards/"+f.ID+"/tunnel", &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: tlsc}},
		HTTPHeader: http.Header{"Authorization": {"Bearer " + token}, forward.SecretHeader: {f.Secret}},
	})
	if err != nil {
		t.Fatal(err)
	}
	nc := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
	t.Cleanup(func() { nc.Close() })
	return nc
}

// TestForwardNodeOpensStreams: the node's side never opens a stream (the
// gateway opens one per visitor's connection), so one it opens is an
// attack: each sat in the gateway's accept backlog, never read, holding up
// to a stream window (256 KiB) of the node's bytes in the gateway's memory
// for as long as the tunnel lived, 64 of them per tunnel. The gateway ends
// such a tunnel at once, and the forward still serves through an honest
// one.
func TestForwardNodeOpensStreams(t *testing.T) {
	tg := startGateway(t, "", nil, "alice")
	token := tg.client().loginToken("alice").token
	f, err := tg.forwardClient(token).Create(context.Background(), "hostile", "")
	if err != nil {
		t.Fatal(err)
	}
	mux := hostileTunnel(t, tg, token, f)
	st, err := mux.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	// Within the stream's window: yamux itself takes it, unless the
	// gateway has closed the tunnel already (broken pipe), which is the
	// outcome wanted below.
	if _, err := st.Write(bytes.Repeat([]byte("x"), 200<<10)); err != nil {
		t.Logf("write into the stream: %v (the tunnel is closed already)", err)
	}
	select {
	case <-mux.CloseChan():
	case <-time.After(20 * time.Second):
		t.Fatal("the gateway kept a tunnel whose node opened a stream")
	}
	// An honest node dials again under the same forward: it serves.
	target := goApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("honest")) }))
	ctx, cancel := context.WithCancel(context.Background())
	up := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tg.forwardClient(token).Serve(ctx, f, target, forward.Backoff{Min: 50 * time.Millisecond}, func() {
			select {
			case up <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-up:
	case <-time.After(30 * time.Second):
		t.Fatal("an honest tunnel did not come up after the hostile one")
	}
	alice := tg.client().loginCookie("alice").reachApps()
	if resp, body := alice.visit(f.URL); resp.StatusCode != 200 || body != "honest" {
		t.Fatalf("the forward after the hostile tunnel: %d %q", resp.StatusCode, body)
	}
}

// TestForwardNodePingFlood: yamux answers each ping in a goroutine of its
// own, which waits for its turn to write. A node that sends pings as fast
// as it can and reads nothing made the gateway spawn them without bound
// (tens of thousands within a second, each alive up to the write timeout,
// 30 s). The gateway ends a tunnel whose node pings faster than once a
// second past a small burst, and says so in its log.
func TestForwardNodePingFlood(t *testing.T) {
	tg := startGateway(t, "", nil, "alice")
	token := tg.client().loginToken("alice").token
	f, err := tg.forwardClient(token).Create(context.Background(), "pings", "")
	if err != nil {
		t.Fatal(err)
	}
	nc := hostileTunnelConn(t, tg, token, f)
	// version 0, type ping, flag SYN, stream 0, ping ID 7.
	ping := []byte{0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7}
	batch := bytes.Repeat(ping, 1000)
	base := runtime.NumGoroutine()
	for i := range 2000 {
		if _, err := nc.Write(batch); err != nil {
			break // the gateway hung up
		}
		// Checked as it goes: the unguarded gateway would take this
		// machine's memory with the 2 M pings.
		if n := runtime.NumGoroutine() - base; n > 20000 {
			t.Fatalf("%d goroutines more in the gateway after %d pings left unanswered", n, (i+1)*len(batch)/len(ping))
		}
	}
	nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.Copy(io.Discard, nc); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the gateway kept the tunnel of a node flooding it with pings")
	}
}

// squatter is a web server that answers every GET with "squatter".
const squatter = `
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "8")
        self.end_headers()
        self.wfile.write(b"squatter")
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
`

// TestForwardPortSquatted: loopback ports are shared by every local user.
// Another user who binds the port a forward's app is to listen on (the
// --port the user named, one picked before the app took it, or one the
// app let go) served their own pages at the forward's URL, on the owner's
// app origin, to the owner and everyone they shared it with. The node's
// side connects a visitor only to a listener of its own user (or root's).
func TestForwardPortSquatted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as two local users")
	}
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Skip("no /usr/bin/python3")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(py, "-c", squatter, strconv.Itoa(port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	target := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := realtest.WaitFor(20*time.Second, func() error {
		c, err := net.Dial("tcp", target)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		t.Fatalf("the squatter did not listen: %v", err)
	}

	tg := startGateway(t, "", nil, "alice")
	f := serveForward(t, tg, tg.client().loginToken("alice").token, "squat", target)
	alice := tg.client().loginCookie("alice").reachApps()
	if resp, body := alice.visit(f.URL); resp.StatusCode != 502 || strings.Contains(body, "squatter") {
		t.Fatalf("the forward to a port another user holds: %d %q, want 502", resp.StatusCode, body)
	}

	// The command says so at once, rather than registering a forward
	// that answers 502.
	cli := exec.Command(realtest.Binary(t), "forward", "--gateway", tg.url, "--ca", filepath.Join(tg.stateDir, "tls.crt"), "--name", "squat2", "--to", target)
	cli.Env = append(os.Environ(), "AIRLOCK_TOKEN="+tg.client().loginToken("alice").token, "XDG_CONFIG_HOME="+t.TempDir())
	if out, err := cli.CombinedOutput(); err == nil || !strings.Contains(string(out), "another user listens there") {
		t.Errorf("airlock forward --to a port another user holds: %v\n%s", err, out)
	}

	// A listener of the forwarder's own user is served.
	own, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("own")) })}
	go srv.Serve(own)
	t.Cleanup(func() { srv.Close() })
	f = serveForward(t, tg, tg.client().loginToken("alice").token, "own", own.Addr().String())
	if resp, body := alice.visit(f.URL); resp.StatusCode != 200 || body != "own" {
		t.Fatalf("the forward to its own user's port: %d %q", resp.StatusCode, body)
	}
}

// TestForwardSocketSquatted: the same for --to unix:PATH in a directory
// other users may write to (/tmp): once the app's socket is gone (the app
// ended, or has not made it yet), another user's socket at that path was
// served at the forward's URL. The node's side checks the listener's
// credentials (SO_PEERCRED) as it does a port's owner.
func TestForwardSocketSquatted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as two local users")
	}
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Skip("no /usr/bin/python3")
	}
	// A directory like /tmp: anyone may make a name in it.
	dir, err := os.MkdirTemp("", "rtD-sticky-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o1777); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "app.sock")
	unixSquatter := strings.Replace(squatter, `http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()`,
		`import socketserver
class S(socketserver.UnixStreamServer):
    def get_request(self):
        c, _ = self.socket.accept()
        return c, ("unix", 0)
S(sys.argv[1], H).serve_forever()`, 1)
	cmd := exec.Command(py, "-c", unixSquatter, sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if err := realtest.WaitFor(20*time.Second, func() error {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		t.Fatalf("the squatter did not listen: %v", err)
	}
	tg := startGateway(t, "", nil, "alice")
	f := serveForward(t, tg, tg.client().loginToken("alice").token, "squat", "unix:"+sock)
	alice := tg.client().loginCookie("alice").reachApps()
	if resp, body := alice.visit(f.URL); resp.StatusCode != 502 || strings.Contains(body, "squatter") {
		t.Fatalf("the forward to another user's socket: %d %q, want 502", resp.StatusCode, body)
	}
}
