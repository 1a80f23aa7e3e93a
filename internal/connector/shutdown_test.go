package connector

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/airlock-hpc/airlock/internal/ticket"
)

// TestServeShutdown: cancelling Serve's context with live connections of
// every kind open (a vnc WebSocket over TLS, a mutual-TLS relay, and a
// WebSocket upgraded through the http proxy, which http.Server.Shutdown
// would not close) makes Serve return nil, closes them all, and leaves no
// goroutine behind.
func TestServeShutdown(t *testing.T) {
	ca := newCA(t, "session CA")
	k := newKey(t)
	fake := startFakeRFB(t, "", "")
	echoTarget := startTCPTarget(t, echo)
	app := startApp(t, false)
	base := runtime.NumGoroutine()

	_, logger := newLogSink(t)
	vncAddr, stopVNC := startConnector(t, Config{Kind: KindVNC, Target: fake.addr, Key: k, TLS: ca.serverTLS(t), Logger: logger})
	tlsAddr, stopTLS := startConnector(t, Config{Kind: KindTLS, Target: echoTarget.addr, TLS: ca.mutualTLS(t, ca), Logger: logger})
	httpAddr, stopHTTP := startConnector(t, Config{Kind: KindHTTP, Target: app.target, Key: k, Logger: logger})

	vnc := wsDial{tls: ca.clientTLS()}.mustDial(t, vncAddr, mint(t, k, ticket.Control))
	rfbClientLogin(t, vnc, 1)

	tc, err := tls.Dial("tcp", tlsAddr, ca.clientTLS(ca.issue(t, "alice", false)))
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	mustWrite(t, tc, []byte("ping"))
	readN(t, tc, 4)

	b := newBrowser(t, httpAddr, nil)
	cookie := b.login(t, mint(t, k, ticket.Control))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hc, resp, err := websocket.Dial(ctx, "ws://"+httpAddr+"/ws", &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: b.tr},
		HTTPHeader: http.Header{"Cookie": {cookie.Name + "=" + cookie.Value}},
	})
	if err != nil {
		t.Fatalf("WebSocket through the proxy: %v (%s)", err, respText(resp))
	}
	hws := websocket.NetConn(context.Background(), hc, websocket.MessageBinary)
	defer hws.Close()
	mustWrite(t, hws, []byte("ping"))
	readN(t, hws, 4)

	for name, stop := range map[string]func() error{"vnc": stopVNC, "tls": stopTLS, "http": stopHTTP} {
		if err := stop(); err != nil {
			t.Fatalf("%s: Serve after cancel: %v", name, err)
		}
	}
	for name, c := range map[string]net.Conn{"vnc WebSocket": vnc, "tls": tc, "proxied WebSocket": hws} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 1))
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: still open after Serve returned (read: %v)", name, err)
		}
		c.Close()
	}
	b.tr.CloseIdleConnections()
	if err := waitFor(5*time.Second, func() error {
		if n := runtime.NumGoroutine(); n > base {
			return fmt.Errorf("%d goroutines, %d before the connectors started", n, base)
		}
		return nil
	}); err != nil {
		buf := make([]byte, 1<<20)
		t.Fatalf("%v\n%s", err, buf[:runtime.Stack(buf, true)])
	}
}
