package forward

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestCoalesce: what is written arrives whole and in order, in fewer
// writes than it was made in when the peer is slower than the writer; a
// failed write fails the Writes after it; Close ends a write stuck on a
// peer that reads nothing.
func TestCoalesce(t *testing.T) {
	a, b := net.Pipe()
	c := Coalesce(a)
	var want bytes.Buffer
	for i := range 2000 {
		want.Write(bytes.Repeat([]byte{byte(i)}, 1+i%37))
	}
	done := make(chan []byte)
	go func() {
		got := make([]byte, want.Len())
		n, _ := io.ReadFull(b, got)
		done <- got[:n]
	}()
	for i := range 2000 {
		if _, err := c.Write(bytes.Repeat([]byte{byte(i)}, 1+i%37)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case got := <-done:
		if !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("got %d bytes, want %d (or out of order)", len(got), want.Len())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the writes did not arrive")
	}
	c.Close()

	// A peer gone: a later Write fails.
	a2, b2 := net.Pipe()
	c2 := Coalesce(a2)
	b2.Close()
	if err := waitErr(func() error { _, err := c2.Write([]byte("x")); return err }); err == nil {
		t.Fatal("writes to a closed peer kept succeeding")
	}

	// A stalled peer: the writer blocks at the bound; Close releases it.
	a3, _ := net.Pipe()
	c3 := Coalesce(a3)
	blocked := make(chan error, 1)
	go func() {
		var err error
		for err == nil {
			_, err = c3.Write(make([]byte, 64<<10))
		}
		blocked <- err
	}()
	c3.Close()
	select {
	case err := <-blocked:
		if !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.ErrClosedPipe) {
			t.Fatalf("write after Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end a write stuck on a stalled peer")
	}
}

// waitErr calls f until it returns an error, for up to 10 s.
func waitErr(f func() error) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if err := f(); err != nil {
			return err
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}
