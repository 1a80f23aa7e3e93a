package connector

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// wsPair returns the server end of a WebSocket, as the vnc kind makes it
// (smallBufWriter, newWSConn), and the client end, both closed at cleanup.
func wsPair(t *testing.T) (*wsConn, *websocket.Conn) {
	t.Helper()
	accepted := make(chan *wsConn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(smallBufWriter{w}, r, nil)
		if err != nil {
			t.Errorf("accept: %v", err)
			close(accepted)
			return
		}
		accepted <- newWSConn(c, fakeAddrConn{})
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.CloseNow() })
	server, ok := <-accepted
	if !ok {
		t.FailNow()
	}
	t.Cleanup(func() { server.ws.CloseNow() })
	return server, client
}

// fakeAddrConn stands in for the accepted connection, which wsConn uses
// for its addresses only.
type fakeAddrConn struct{ net.Conn }

func (fakeAddrConn) LocalAddr() net.Addr  { return &net.TCPAddr{} }
func (fakeAddrConn) RemoteAddr() net.Addr { return &net.TCPAddr{} }

// TestWSConnStream: messages of every shape (empty, fragmented into
// continuation frames) read back as one byte stream, WaitRead says when
// there is something to read, and a normal close reads as io.EOF.
func TestWSConnStream(t *testing.T) {
	server, client := wsPair(t)
	ctx := context.Background()
	go func() {
		client.Write(ctx, websocket.MessageBinary, []byte("ab"))
		client.Write(ctx, websocket.MessageBinary, nil)
		client.Write(ctx, websocket.MessageBinary, []byte("cde"))
		w, err := client.Writer(ctx, websocket.MessageBinary)
		if err != nil {
			return
		}
		w.Write([]byte("fg")) // a frame without FIN
		w.Write([]byte("h"))  // a continuation frame
		w.Close()             // an empty final continuation frame
		client.Close(websocket.StatusNormalClosure, "")
	}()
	server.SetDeadline(time.Now().Add(10 * time.Second))
	var got []byte
	buf := make([]byte, 2)
	for {
		if err := server.WaitRead(); err != nil {
			if err != io.EOF {
				t.Fatalf("WaitRead after %q: %v, want io.EOF", got, err)
			}
			break
		}
		n, err := server.Read(buf)
		if n == 0 || err != nil {
			t.Fatalf("Read after WaitRead returned %d, %v; want bytes", n, err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "abcdefgh" {
		t.Errorf("read %q, want %q", got, "abcdefgh")
	}
	if n, err := server.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("Read after the close: %d, %v; want io.EOF", n, err)
	}
}

// TestWSConnText: a text message is refused with 1003 (unsupported data),
// as websocket.NetConn does.
func TestWSConnText(t *testing.T) {
	server, client := wsPair(t)
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		client.Write(ctx, websocket.MessageText, []byte("hello"))
		_, _, err := client.Read(ctx) // answers the server's close frame
		closed <- err
	}()
	if _, err := server.Read(make([]byte, 8)); err == nil || !strings.Contains(err.Error(), "want binary") {
		t.Fatalf("Read of a text message: %v, want an error", err)
	}
	if got := websocket.CloseStatus(<-closed); got != websocket.StatusUnsupportedData {
		t.Errorf("client saw close status %v, want %v", got, websocket.StatusUnsupportedData)
	}
}

// TestWSConnDeadline: a deadline that passes fails the call it bounds with
// os.ErrDeadlineExceeded and closes the connection; a cleared one does not.
func TestWSConnDeadline(t *testing.T) {
	server, client := wsPair(t)
	server.SetDeadline(time.Now().Add(time.Hour))
	server.SetDeadline(time.Time{})
	go client.Write(context.Background(), websocket.MessageBinary, []byte("x"))
	b := make([]byte, 1)
	if _, err := server.Read(b); err != nil {
		t.Fatalf("Read with a cleared deadline: %v", err)
	}

	server.SetDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	_, err := server.Read(b)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Read returned %v after a 50ms deadline", took)
	}
	if _, err := server.Write([]byte("y")); err == nil {
		t.Error("Write after the deadline closed the connection succeeded")
	}
}
