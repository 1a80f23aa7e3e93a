package relay

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"testing"
)

// recordConn reads like a *tls.Conn, at most one 16 KiB record per Read,
// and records the size of every Write.
type recordConn struct {
	net.Conn // nil: only the methods below are used
	src      io.Reader
	mu       sync.Mutex
	writes   []int
}

func (c *recordConn) Read(p []byte) (int, error) {
	return c.src.Read(p[:min(len(p), 16<<10)])
}

func (c *recordConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, len(p))
	c.mu.Unlock()
	return len(p), nil
}

func (c *recordConn) Close() error      { return nil }
func (c *recordConn) CloseWrite() error { return nil }

// TestBulkTLSReadsStayWhole: a source that returns whole 16 KiB records
// (a *tls.Conn) keeps the big buffer, so each record is one write on the
// other side; dropping back to the small buffer after each cut every
// record into 2 KiB and 14 KiB, two writes and, towards TLS, two records.
func TestBulkTLSReadsStayWhole(t *testing.T) {
	const records = 64
	a := &recordConn{src: bytes.NewReader(make([]byte, records*16<<10))}
	b := &recordConn{src: bytes.NewReader(nil)}
	if _, err := Pipe(context.Background(), a, b, 0); err != nil {
		t.Fatal(err)
	}
	total, small := 0, 0
	for _, n := range b.writes {
		total += n
		if n < 16<<10 {
			small++
		}
	}
	// The first read, into the small buffer, is the one short write.
	if total != records*16<<10 || small > 2 {
		t.Errorf("%d bytes in %d writes, %d of them short of a record: %v", total, len(b.writes), small, b.writes)
	}
}
