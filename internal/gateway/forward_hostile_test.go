package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"

	"github.com/airlock-hpc/airlock/internal/clientauth"
	"github.com/airlock-hpc/airlock/internal/forward"
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
	// Within the stream's window: yamux itself takes it.
	if _, err := st.Write(bytes.Repeat([]byte("x"), 200<<10)); err != nil {
		t.Fatalf("write into the stream: %v", err)
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
