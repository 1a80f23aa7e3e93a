package gateway

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/clientauth"
	"github.com/airlock-hpc/airlock/internal/forward"
	"github.com/airlock-hpc/airlock/internal/realtest"
)

// goApp serves h on a UNIX socket for the test.
func goApp(t testing.TB, h http.Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "app.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "unix:" + sock
}

// forwardClient is the node's side of a forward (internal/forward) for
// token, trusting tg's certificate.
func (tg *testGateway) forwardClient(token string) *forward.Client {
	tg.t.Helper()
	tls, err := clientauth.Credentials{CAFile: filepath.Join(tg.stateDir, "tls.crt")}.TLS()
	if err != nil {
		tg.t.Fatal(err)
	}
	return &forward.Client{Gateway: tg.url, Token: token, TLS: tls}
}

// serveForward registers a forward for user's token with the in-process
// client and keeps its tunnel up until the test ends; it returns the
// forward once the tunnel is up.
func serveForward(t testing.TB, tg *testGateway, token, name, target string) *forward.Forward {
	t.Helper()
	return startNodeForward(t, tg.forwardClient(token), name, target, forward.Backoff{}).Forward
}

// nodeForward is a node's `airlock forward` serving in the test, until
// its end.
type nodeForward struct {
	*forward.Forward
	ups    chan struct{} // a value each time the tunnel comes up (the first taken)
	served chan error    // what Serve returned; put it back if taken before the end
}

// startNodeForward creates forward name through c and serves target on
// it, with backoff b, until the tunnel is up.
func startNodeForward(t testing.TB, c *forward.Client, name, target string, b forward.Backoff) *nodeForward {
	t.Helper()
	f, err := c.Create(context.Background(), name, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	nf := &nodeForward{Forward: f, ups: make(chan struct{}, 8), served: make(chan error, 1)}
	go func() {
		nf.served <- c.Serve(ctx, f, target, b, func() {
			select {
			case nf.ups <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-nf.served
	})
	select {
	case <-nf.ups:
	case <-time.After(30 * time.Second):
		t.Fatal("the tunnel did not come up")
	}
	return nf
}

// TestForwardBandwidth: forward.bytes_per_second holds a download to the
// configured rate.
func TestForwardBandwidth(t *testing.T) {
	const rate = 512 << 10
	tg := startGateway(t, "", func(c *Config) { c.Forward.BytesPerSecond = rate }, "alice")
	big := strings.Repeat("y", 2<<20)
	target := goApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			io.WriteString(w, big)
		}
	}))
	f := serveForward(t, tg, tg.client().loginToken("alice").token, "big", target)
	alice := tg.client().loginCookie("alice").reachApps()
	if resp, _ := alice.visit(f.URL + "small"); resp.StatusCode != 200 {
		t.Fatalf("sign in: %d", resp.StatusCode)
	}
	start := time.Now()
	resp, body := alice.get(f.URL + "big")
	took := time.Since(start)
	if resp.StatusCode != 200 || len(body) != len(big) {
		t.Fatalf("download: %d, %d bytes", resp.StatusCode, len(body))
	}
	t.Logf("2 MiB took %s", took)
	// One second's worth may go at once; the rest at the rate: at least
	// (2 MiB - 0.5 MiB - what the sign-in spent) / 0.5 MiB/s ≈ 3 s.
	if took < 2500*time.Millisecond {
		t.Fatalf("2 MiB at %d B/s took %s: the cap does not hold", rate, took)
	}
}

// TestForwardStreamCap: forward.max_streams caps the connections open at
// once through one tunnel; one closed frees its slot.
func TestForwardStreamCap(t *testing.T) {
	tg := startGateway(t, "", func(c *Config) { c.Forward.MaxStreams = 2 }, "alice")
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	target := goApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		io.WriteString(w, "ok")
	}))
	f := serveForward(t, tg, tg.client().loginToken("alice").token, "cap", target)
	alice := tg.client().loginCookie("alice").reachApps()
	if resp, body := alice.visit(f.URL); resp.StatusCode != 200 {
		t.Fatalf("sign in: %d %s", resp.StatusCode, body)
	}
	// The pooled idle connection holds a slot too: drop it.
	tg.g.dropForwardTransports(f.ID)
	var cancels []context.CancelFunc
	for i := range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", f.URL+"hold", nil)
		resp, err := alice.http.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("hold %d: %v %v", i, err, resp)
		}
		defer resp.Body.Close()
	}
	if resp, body := alice.get(f.URL); resp.StatusCode != 502 {
		t.Fatalf("a third connection with two open: %d %s, want 502", resp.StatusCode, body)
	}
	cancels[0]()
	if err := realtest.WaitFor(10*time.Second, func() error {
		if resp, body := alice.get(f.URL); resp.StatusCode != 200 {
			return fmt.Errorf("%d %s", resp.StatusCode, body)
		}
		return nil
	}); err != nil {
		t.Fatalf("after one closed: %v", err)
	}
}

// TestForwardTokenRevoked: the tunnel is let in by the owner's token:
// revoking the token closes the tunnel at once, and the node's next dial
// is refused for good.
func TestForwardTokenRevoked(t *testing.T) {
	tg := startGateway(t, "", nil, "alice")
	var tok struct{ Token, ID string }
	if code, body := tg.client().loginToken("alice").do("POST", "/api/v1/tokens", map[string]string{"name": "node"}, &tok); code != 201 {
		t.Fatalf("token: %d %s", code, body)
	}
	c := tg.forwardClient(tok.Token)
	f, err := c.Create(context.Background(), "rev", "")
	if err != nil {
		t.Fatal(err)
	}
	up := make(chan struct{}, 4)
	served := make(chan error, 1)
	go func() {
		served <- c.Serve(context.Background(), f, "unix:/nonexistent", forward.Backoff{Min: 50 * time.Millisecond}, func() { up <- struct{}{} })
	}()
	<-up
	if code, body := tg.client().loginToken("alice").do("DELETE", "/api/v1/tokens/"+tok.ID, nil, nil); code != 204 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	select {
	case err := <-served:
		if err == nil || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("Serve after the token was revoked: %v, want refused", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the tunnel outlived its token")
	}
}

// TestForwardGrace: a forward whose tunnel stays down past forward.grace
// ends, and its name is free again; forwards off refuses them.
func TestForwardGrace(t *testing.T) {
	tg := startGateway(t, "", func(c *Config) { c.Forward.Grace = time.Second }, "alice")
	alice := tg.client().loginToken("alice")
	c := tg.forwardClient(alice.token)
	f, err := c.Create(context.Background(), "lost", "")
	if err != nil {
		t.Fatal(err)
	}
	s := alice.waitStateFor(f.ID, "ended", 15*time.Second)
	if !strings.Contains(s.Reason, "tunnel was down") {
		t.Errorf("reason %q", s.Reason)
	}
	if resp, _ := tg.client().reachApps().get(f.URL); resp.StatusCode != 404 {
		t.Errorf("the URL of an ended forward: %d, want 404", resp.StatusCode)
	}

	off := startGateway(t, "", func(c *Config) { c.Forward.MaxPerUser = -1 }, "alice")
	c = off.forwardClient(off.client().loginToken("alice").token)
	if _, err := c.Create(context.Background(), "web", ""); err == nil || !strings.Contains(err.Error(), "forwards_disabled") {
		t.Fatalf("a forward with forwards off: %v", err)
	}
}
