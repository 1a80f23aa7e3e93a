package egressproxy

import (
	"io"
	"log/slog"
	"strings"
	"testing"
)

// BenchmarkConnectSetup: one CONNECT through a fresh socket pair to a
// loopback echo server, answered 200, one byte round trip: the latency a
// kiosk's browser pays per new connection.
func BenchmarkConnectSetup(b *testing.B) {
	addr := echoServer(b)
	p, err := New(Config{Allow: []string{addr}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	one := make([]byte, 1)
	for b.Loop() {
		c, err := p.Pipe(ctx)
		if err != nil {
			b.Fatal(err)
		}
		status, br := connect(b, c, addr)
		if !strings.Contains(status, "200") {
			b.Fatal(status)
		}
		c.Write(one)
		if _, err := io.ReadFull(br, one); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkTunnelThroughput: bytes through one established tunnel to a
// loopback echo server and back (b.SetBytes counts one direction).
func BenchmarkTunnelThroughput(b *testing.B) {
	addr := echoServer(b)
	p, err := New(Config{Allow: []string{addr}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	c, err := p.Pipe(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	status, br := connect(b, c, addr)
	if !strings.Contains(status, "200") {
		b.Fatal(status)
	}
	buf := make([]byte, 64<<10)
	back := make([]byte, len(buf))
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		go c.Write(buf)
		if _, err := io.ReadFull(br, back); err != nil {
			b.Fatal(err)
		}
	}
}
