package rdpclient

import (
	"net"
	"sync"
)

// gatherConn is the TCP connection under the tunnel's *tls.Conn. Between
// hold and flush it gathers what crypto/tls writes instead of writing it:
// crypto/tls writes each record of a Write (16 KiB of plaintext) with a
// write(2) of its own, and each wakes the gateway; gathered, a 128 KiB
// read from the RDP client leaves in one. Writes made outside hold (the
// handshake, close_notify) go straight out.
type gatherConn struct {
	net.Conn
	mu  sync.Mutex
	on  bool
	buf []byte
}

// gatherMax bounds what is gathered: the records of one upBuf read (eight
// full records and their overheads) fit with room to spare.
const gatherMax = upBuf + 16<<10

func (c *gatherConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.on {
		return c.Conn.Write(p)
	}
	if len(c.buf)+len(p) > gatherMax {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	c.buf = append(c.buf, p...)
	return len(p), nil
}

func (c *gatherConn) hold() {
	c.mu.Lock()
	c.on = true
	c.mu.Unlock()
}

// flush writes out what was gathered and stops gathering.
func (c *gatherConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.on = false
	return c.flushLocked()
}

func (c *gatherConn) flushLocked() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}

// CloseWrite passes a half-close on to TCP.
func (c *gatherConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
