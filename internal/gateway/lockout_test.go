package gateway

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestGarbageViewersCannotLockOut: one viewer of a real desktop opens ten
// console connections and spoils each handshake (garbage, or nothing at
// all). Every viewer reaches Xvnc from 127.0.0.1 inside the seal, so were
// Xvnc to blacklist that address, the next viewers, the owner's and a
// view-only share's, would be refused. They must get the desktop.
func TestGarbageViewersCannotLockOut(t *testing.T) {
	tg := startGateway(t, "", nil, "alice", "bob")
	alice := tg.client().loginToken("alice")
	s := alice.launch("desktop")
	wsURL := "wss" + strings.TrimPrefix(tg.url, "https") + s.Connect["console"]
	dial := func(c *client) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		hdr := http.Header{}
		if c.token != "" {
			hdr.Set("Authorization", "Bearer "+c.token)
		}
		ws, resp, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPClient: c.http, HTTPHeader: hdr, Subprotocols: []string{"binary"}})
		if err != nil {
			if resp != nil {
				b, _ := io.ReadAll(resp.Body)
				return nil, &dialError{resp.StatusCode, string(b), err}
			}
			return nil, err
		}
		return websocket.NetConn(context.Background(), ws, websocket.MessageBinary), nil
	}

	for i := range 10 {
		conn, err := dial(alice)
		if err != nil {
			t.Fatalf("garbage viewer %d: %v", i, err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		version := make([]byte, 12)
		if _, err := io.ReadFull(conn, version); err != nil {
			t.Fatalf("garbage viewer %d: read version: %v", i, err)
		}
		switch i % 3 {
		case 0:
			conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		case 1:
			conn.Write([]byte("RFB 003.008\n\xff")) // a security type nobody offered
		}
		// i%3 == 2: say nothing and leave.
		conn.Close()
	}

	// The owner, whose bytes the connector passes to Xvnc as they are.
	conn, err := dial(alice)
	if err != nil {
		t.Fatalf("owner after the garbage: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 12)
	if _, err := io.ReadFull(conn, buf); err != nil {
		t.Fatal(err)
	}
	if string(buf) != "RFB 003.008\n" {
		t.Fatalf("owner after the garbage: server says %q (a blacklisted client is offered 3.3 and refused)", buf)
	}
	conn.Write([]byte("RFB 003.008\n"))
	types := make([]byte, 2)
	if _, err := io.ReadFull(conn, types); err != nil {
		t.Fatal(err)
	}
	if types[0] == 0 {
		reason, _ := io.ReadAll(io.LimitReader(conn, 300))
		t.Fatalf("owner after the garbage: refused: %q", reason)
	}

	// A view-only share: the connector logs in to Xvnc itself.
	var share struct{ URL string }
	if code, body := alice.do("POST", "/api/v1/sessions/"+s.ID+"/shares", map[string]string{"mode": "view"}, &share); code != 201 {
		t.Fatalf("share: %d %s", code, body)
	}
	bob := tg.client().loginCookie("bob")
	resp, err := bob.http.Get(tg.url + "/share/" + share.URL[strings.LastIndex(share.URL, "/")+1:])
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	vc, err := dial(bob)
	if err != nil {
		t.Fatalf("view-only viewer after the garbage: %v", err)
	}
	defer vc.Close()
	vc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(vc, buf); err != nil || string(buf) != "RFB 003.008\n" {
		t.Fatalf("view-only viewer: version %q, %v", buf, err)
	}
}

type dialError struct {
	status int
	body   string
	err    error
}

func (e *dialError) Error() string { return e.err.Error() + ": " + e.body }
