package forward

import (
	"net"
	"sync"
)

// coalesceMax bounds what a coalescing connection holds unwritten: a
// writer waits while this much is pending, so a slow peer slows the
// tunnel rather than growing the buffer.
const coalesceMax = 1 << 20

// Coalesce returns c with its writes gathered: each Write is appended to
// a buffer that one goroutine writes to c, so what is written while a
// write is on the way goes out in the next one, together.
//
// Why: yamux writes each frame's 12-byte header and its body in two
// calls, and each call on the tunnel's WebSocket is a message of its own:
// a frame, a TLS record and a system call. Profiled (BenchmarkForward),
// the system calls were the largest cost of a proxied request; gathered,
// a header goes with its body, and under load many frames go in one
// record.
//
// A Write returns once its bytes are in the buffer; an error writing c is
// returned by the Writes after it. Reads go straight to c.
func Coalesce(c net.Conn) net.Conn {
	cc := &coalescing{Conn: c}
	cc.cond = sync.NewCond(&cc.mu)
	go cc.loop()
	return cc
}

type coalescing struct {
	net.Conn
	mu      sync.Mutex
	cond    *sync.Cond
	pending []byte
	spare   []byte
	err     error
	closed  bool
}

func (c *coalescing) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil && !c.closed && len(c.pending) >= coalesceMax {
		c.cond.Wait()
	}
	switch {
	case c.err != nil:
		return 0, c.err
	case c.closed:
		return 0, net.ErrClosed
	}
	c.pending = append(c.pending, p...)
	c.cond.Broadcast()
	return len(p), nil
}

// loop writes what is pending until the connection closes or fails.
func (c *coalescing) loop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for len(c.pending) == 0 && !c.closed {
			c.cond.Wait()
		}
		if len(c.pending) == 0 {
			return // closed, and everything written
		}
		out := c.pending
		c.pending = c.spare[:0]
		c.mu.Unlock()
		_, err := c.Conn.Write(out)
		c.mu.Lock()
		c.spare = out[:0]
		if err != nil {
			c.err = err
			c.pending = nil
			c.cond.Broadcast()
			return
		}
		c.cond.Broadcast()
	}
}

// Close closes c at once: what is still pending is dropped, as it would
// be in a socket closed under it, and a write stuck on a stalled peer ends.
func (c *coalescing) Close() error {
	c.mu.Lock()
	c.closed = true
	c.pending = nil
	c.cond.Broadcast()
	c.mu.Unlock()
	return c.Conn.Close()
}
