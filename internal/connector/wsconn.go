package connector

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/airlock-hpc/airlock/internal/relay"
)

// Buffer sizes of an accepted WebSocket. Every connection keeps both for
// its whole life, so they are small (the HTTP server's are 4 KiB each): a
// read that wants more than the read buffer holds goes straight to the
// socket, and a frame that does not fit the write buffer costs one write
// for its first 512 bytes and one for the rest, as a frame over 4 KiB
// would anyway. Over TLS those two writes are batched into one.
const (
	wsReadBufSize  = 512
	wsWriteBufSize = 512
)

// wsConn is a WebSocket carrying a byte stream in binary messages, as a
// net.Conn for the relay. It does what websocket.NetConn does, and stands
// in for it (house style §3.22 says to bridge with NetConn) because
// NetConn costs every connection more than the relay needs:
//
//   - NetConn gives every read and write a cancellable context, for which
//     coder/websocket registers and removes a context.AfterFunc per frame.
//     wsConn reads and writes with context.Background, which it never
//     needs to cancel: closing the connection is what stops it.
//   - NetConn keeps two contexts and two timers for deadlines. wsConn has
//     one timer, made only while a deadline is set (the RFB handshake).
//   - NetConn can wait for the next message only inside a Read, holding
//     the caller's buffer. wsConn implements relay.ReadWaiter, so an idle
//     connection waits with no copy buffer at all.
//
// Deadlines are coarser than net.Conn's: there is one for the whole
// connection (SetReadDeadline and SetWriteDeadline set it too), and when
// it passes the connection is closed, so the call it was bounding fails
// with an error wrapping os.ErrDeadlineExceeded and the connection is not
// usable afterwards. Close sends a close frame with status 1000 and waits,
// a few seconds at most, for the peer's.
type wsConn struct {
	ws     *websocket.Conn
	netc   net.Conn // the accepted connection under ws, for its addresses
	closed atomic.Bool
	// batch, when netc is a *tls.Conn, is the connection under it, which
	// gathers the TLS records of each Write into one write(2).
	batch *trackedConn

	readMu sync.Mutex // guards the read state below, as Read may not run twice at once
	msg    io.Reader  // the message being read; nil between messages
	ready  bool       // msg has bytes left, as WaitRead last saw
	eof    bool       // the peer closed with 1000 or 1001

	deadlineMu sync.Mutex
	deadline   *time.Timer // set while a deadline is pending
	expired    atomic.Bool // a deadline passed and closed the connection
}

var (
	_ net.Conn            = (*wsConn)(nil)
	_ relay.ReadWaiter    = (*wsConn)(nil)
	_ http.Hijacker       = smallBufWriter{}
	_ http.ResponseWriter = smallBufWriter{}
)

func newWSConn(ws *websocket.Conn, netc net.Conn) *wsConn {
	// The relay reads a stream, not messages: no message is too big.
	ws.SetReadLimit(-1)
	c := &wsConn{ws: ws, netc: netc}
	if tc, ok := netc.(*tls.Conn); ok {
		c.batch, _ = tc.NetConn().(*trackedConn)
	}
	return c
}

// WaitRead implements relay.ReadWaiter: it returns once the current
// message has bytes left to read, opening the next one if it has none.
func (c *wsConn) WaitRead() error {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	return c.err(c.waitRead())
}

func (c *wsConn) waitRead() error {
	for !c.ready {
		if c.eof {
			return io.EOF
		}
		if c.msg == nil {
			typ, r, err := c.ws.Reader(context.Background())
			if err != nil {
				switch websocket.CloseStatus(err) {
				case websocket.StatusNormalClosure, websocket.StatusGoingAway:
					c.eof = true
					return io.EOF
				}
				return err
			}
			if typ != websocket.MessageBinary {
				err := fmt.Errorf("read WebSocket: %v message, want binary", typ)
				c.ws.Close(websocket.StatusUnsupportedData, "binary messages only")
				return err
			}
			c.msg = r
		}
		// A zero-length read returns io.EOF if the message has no bytes
		// left, without blocking, so that Read never waits for the next
		// message with the caller's buffer in hand. If the message goes on
		// in a continuation frame it waits for that frame's header.
		if _, err := c.msg.Read(nil); err == io.EOF {
			c.msg = nil
		} else if err != nil {
			return err
		} else {
			c.ready = true
		}
	}
	return nil
}

func (c *wsConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.readMu.Lock()
	defer c.readMu.Unlock()
	for {
		if err := c.waitRead(); err != nil {
			return 0, c.err(err)
		}
		n, err := c.msg.Read(p)
		c.ready = false
		if err == io.EOF {
			c.msg, err = nil, nil
		}
		if n > 0 || err != nil {
			return n, c.err(err)
		}
	}
}

// Write sends p as one binary message.
func (c *wsConn) Write(p []byte) (int, error) {
	// A frame that fits the write buffer (with a header of up to 14
	// bytes) leaves in one TLS write anyway; a longer one is written in
	// two, the second as several records.
	batch := c.batch != nil && len(p) > wsWriteBufSize-14
	if batch {
		c.batch.startBatch()
	}
	err := c.ws.Write(context.Background(), websocket.MessageBinary, p)
	if batch {
		if ferr := c.batch.endBatch(); err == nil {
			err = ferr
		}
	}
	if err != nil {
		return 0, c.err(err)
	}
	return len(p), nil
}

// Close closes the WebSocket with status 1000 (normal closure).
func (c *wsConn) Close() error {
	c.stopDeadline()
	if c.closed.Swap(true) {
		return fmt.Errorf("close WebSocket: %w", net.ErrClosed)
	}
	return c.ws.Close(websocket.StatusNormalClosure, "")
}

func (c *wsConn) LocalAddr() net.Addr  { return c.netc.LocalAddr() }
func (c *wsConn) RemoteAddr() net.Addr { return c.netc.RemoteAddr() }

// SetDeadline closes the connection at t; a zero t cancels that.
func (c *wsConn) SetDeadline(t time.Time) error {
	c.stopDeadline()
	if t.IsZero() {
		return nil
	}
	c.deadlineMu.Lock()
	defer c.deadlineMu.Unlock()
	c.deadline = time.AfterFunc(time.Until(t), func() {
		c.expired.Store(true)
		c.ws.CloseNow()
	})
	return nil
}

// SetReadDeadline and SetWriteDeadline set the connection's one deadline.
func (c *wsConn) SetReadDeadline(t time.Time) error  { return c.SetDeadline(t) }
func (c *wsConn) SetWriteDeadline(t time.Time) error { return c.SetDeadline(t) }

func (c *wsConn) stopDeadline() {
	c.deadlineMu.Lock()
	defer c.deadlineMu.Unlock()
	if c.deadline != nil {
		c.deadline.Stop()
		c.deadline = nil
	}
}

// err marks an error caused by a passed deadline as such.
func (c *wsConn) err(err error) error {
	if err != nil && err != io.EOF && c.expired.Load() {
		return fmt.Errorf("%w: %w", os.ErrDeadlineExceeded, err)
	}
	return err
}

// smallBufWriter is the http.ResponseWriter the vnc kind upgrades with.
// Its Hijack hands coder/websocket, which keeps the buffers it is given for
// the connection's life, a pair of wsReadBufSize and wsWriteBufSize
// instead of the server's 4 KiB ones. Whatever the client sent after its
// request moves to the new read buffer; if that would not fit, Hijack
// keeps the server's buffers.
type smallBufWriter struct{ http.ResponseWriter }

func (w smallBufWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	n := brw.Reader.Buffered()
	if n > wsReadBufSize || brw.Writer.Buffered() > 0 {
		return c, brw, nil
	}
	var src io.Reader = c
	if n > 0 {
		early, _ := brw.Reader.Peek(n)
		src = io.MultiReader(bytes.NewReader(bytes.Clone(early)), c)
	}
	r := bufio.NewReaderSize(src, wsReadBufSize)
	if n > 0 {
		// Pull the early bytes into r's buffer, where coder/websocket
		// looks for them; it then reads the rest from c itself.
		if _, err := r.Peek(n); err != nil {
			return nil, nil, errors.Join(fmt.Errorf("hijack: carry over %d bytes: %w", n, err), c.Close())
		}
	}
	return c, bufio.NewReadWriter(r, bufio.NewWriterSize(c, wsWriteBufSize)), nil
}
