package relay

import "sync"

// ProxyBuffers lends httputil.ReverseProxy (the gateway's proxy and the
// http connector's) their copy buffers. Without a pool httputil makes a
// 32 KiB buffer for every answer, even a 19-byte one: profiled
// (BenchmarkForward/rps, -memprofile), that was 57 % of every byte the
// benchmark's process allocated, and the garbage collector it kept busy
// was a fifth of the gateway's CPU time (perf on `airlock serve`).
var ProxyBuffers = &BufferPool{}

// BufferPool is an httputil.BufferPool of 32 KiB buffers.
type BufferPool struct{ p sync.Pool }

// Get lends a 32 KiB buffer.
func (b *BufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

// Put takes a buffer back; one of another size is left to the collector.
func (b *BufferPool) Put(buf []byte) {
	if cap(buf) == 32<<10 {
		buf = buf[:cap(buf)]
		b.p.Put(&buf)
	}
}
