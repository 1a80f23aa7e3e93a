package connector

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/ticket"
)

const benchMsg = 64 << 10

// source writes 64 KiB buffers until the connection fails.
func source(c net.Conn) {
	buf := make([]byte, benchMsg)
	for {
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

// sink reads everything, counting it in n.
func sink(n *atomic.Int64) func(net.Conn) {
	return func(c net.Conn) {
		buf := make([]byte, benchMsg)
		for {
			k, err := c.Read(buf)
			n.Add(int64(k))
			if err != nil {
				return
			}
		}
	}
}

// cpuMeter reports the process's CPU time (user and system) per op as
// cpu-ns/op when stopped. On a shared machine it moves much less with
// other people's load than ns/op does, so it is the figure to compare
// between two versions; it counts the in-process client and target too.
func cpuMeter(b *testing.B) (stop func()) {
	start := cpuTime(b)
	return func() { b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/op") }
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchVNC starts a control-mode vnc connector to a target run by handle
// and returns a WebSocket client through it, plain or TLS, past the RFB
// version exchange (rfbOpening).
func benchVNC(b *testing.B, useTLS bool, handle func(net.Conn)) net.Conn {
	b.Helper()
	k := newKey(b)
	target := startTCPTarget(b, rfbOpening(handle))
	cfg := Config{Kind: KindVNC, Target: target.addr, Key: k, Logger: slog.New(slog.DiscardHandler)}
	d := wsDial{subprotocols: []string{"binary"}}
	if useTLS {
		ca := newCA(b, "bench CA")
		cfg.TLS = ca.serverTLS(b)
		d.tls = ca.clientTLS()
	}
	addr, _ := startConnector(b, cfg)
	c := d.mustDial(b, addr, mint(b, k, ticket.Control))
	rfbHello(b, c)
	return c
}

func transports(b *testing.B, f func(b *testing.B, useTLS bool)) {
	for _, useTLS := range []bool{false, true} {
		name := "plain"
		if useTLS {
			name = "tls"
		}
		b.Run(name, func(b *testing.B) { f(b, useTLS) })
	}
}

// BenchmarkVNCDownload measures server-to-browser throughput (the
// framebuffer direction) through the vnc connector, 64 KiB per op.
func BenchmarkVNCDownload(b *testing.B) {
	transports(b, func(b *testing.B, useTLS bool) {
		c := benchVNC(b, useTLS, source)
		buf := make([]byte, benchMsg)
		b.SetBytes(benchMsg)
		b.ReportAllocs()
		stop := cpuMeter(b)
		for b.Loop() {
			if _, err := io.ReadFull(c, buf); err != nil {
				b.Fatal(err)
			}
		}
		stop()
	})
}

// BenchmarkVNCUpload measures browser-to-server throughput through the
// vnc connector, one 64 KiB WebSocket message per op.
func BenchmarkVNCUpload(b *testing.B) {
	transports(b, func(b *testing.B, useTLS bool) {
		var got atomic.Int64
		c := benchVNC(b, useTLS, sink(&got))
		buf := make([]byte, benchMsg)
		b.SetBytes(benchMsg)
		b.ReportAllocs()
		var sent int64
		stop := cpuMeter(b)
		for b.Loop() {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
			sent += benchMsg
		}
		stop()
		if err := waitFor(10*time.Second, func() error {
			if n := got.Load(); n != sent {
				return fmt.Errorf("sink got %d of %d bytes", n, sent)
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkVNCEcho64 measures the round trip of a 64-byte message (the
// size of input events) through the vnc connector to an echo server.
func BenchmarkVNCEcho64(b *testing.B) {
	transports(b, func(b *testing.B, useTLS bool) {
		c := benchVNC(b, useTLS, echo)
		msg := make([]byte, 64)
		buf := make([]byte, 64)
		b.SetBytes(64)
		b.ReportAllocs()
		stop := cpuMeter(b)
		for b.Loop() {
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				b.Fatal(err)
			}
		}
		stop()
	})
}

// BenchmarkTLSConnectorDownload measures target-to-client throughput
// through the tls connector (the RDP path), 64 KiB per op.
func BenchmarkTLSConnectorDownload(b *testing.B) {
	ca := newCA(b, "bench CA")
	target := startTCPTarget(b, source)
	addr, _ := startConnector(b, Config{Kind: KindTLS, Target: target.addr, TLS: ca.mutualTLS(b, ca), Logger: slog.New(slog.DiscardHandler)})
	c, err := tls.Dial("tcp", addr, ca.clientTLS(ca.issue(b, "alice", false)))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, benchMsg)
	b.SetBytes(benchMsg)
	b.ReportAllocs()
	stop := cpuMeter(b)
	for b.Loop() {
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
	stop()
}

// BenchmarkViewFilter measures the view filter alone on a 64 KiB stream of
// what a busy viewer sends: mostly pointer motion, some keys and
// FramebufferUpdateRequests.
func BenchmarkViewFilter(b *testing.B) {
	var stream []byte
	for len(stream) < benchMsg {
		stream = append(stream, fbUpdateReq...)
		for range 8 {
			stream = append(stream, pointerEvent...)
		}
		stream = append(stream, keyEvent...)
		stream = append(stream, keyEvent...)
	}
	r := bytes.NewReader(stream)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(stream)
		if _, err := io.Copy(io.Discard, newViewFilter(r)); err != nil {
			b.Fatal(err)
		}
	}
}
