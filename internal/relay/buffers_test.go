package relay

import "testing"

// TestBufferPoolSizes: the pool hands out 32 KiB buffers only; one
// of another size given back is dropped, not lent to a copy.
func TestBufferPoolSizes(t *testing.T) {
	p := &BufferPool{}
	p.Put(make([]byte, 10))
	p.Put(make([]byte, 64<<10))
	for range 4 {
		if b := p.Get(); len(b) != 32<<10 {
			t.Fatalf("Get: %d bytes, want %d", len(b), 32<<10)
		}
	}
	b := p.Get()
	p.Put(b[:5]) // httputil gives back what it got; a short slice is restored
	if b := p.Get(); len(b) != 32<<10 {
		t.Fatalf("Get after a short Put: %d bytes", len(b))
	}
}
