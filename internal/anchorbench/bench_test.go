package anchorbench

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// forEachPath runs f as one sub-benchmark per path, anchors first, so
// every comparison is made within one `go test -bench` run.
func forEachPath(b *testing.B, f func(b *testing.B, p *pathSpec)) {
	for _, p := range paths {
		b.Run(p.name, func(b *testing.B) { f(b, p) })
	}
}

// openOne opens one echo connection through in, closed when tb ends.
func openOne(tb testing.TB, in *instance) net.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	c, err := openEcho(ctx, in.dial)
	if err != nil {
		tb.Fatalf("open connection through %s: %v", in.spec.name, err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// dialOne opens one connection through in without choosing a sink mode,
// closed when tb ends.
func dialOne(tb testing.TB, in *instance) net.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	c, err := in.dial(ctx)
	if err != nil {
		tb.Fatalf("dial %s: %v", in.spec.name, err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// BenchmarkDownload measures sink-to-client throughput (the framebuffer
// direction), one 64 KiB message per op.
func BenchmarkDownload(b *testing.B) {
	forEachPath(b, func(b *testing.B, p *pathSpec) {
		c := dialOne(b, startPath(b, p))
		buf := make([]byte, msgSize)
		if err := startDownload(c, buf); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(msgSize)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := io.ReadFull(c, buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkUpload measures client-to-sink throughput (the input
// direction, and file uploads over RDP), one 64 KiB message per op. The
// sender stays at most upWindow ahead of the sink's acks, so the bytes
// still in flight when the timer stops are bounded by upWindow.
func BenchmarkUpload(b *testing.B) {
	forEachPath(b, func(b *testing.B, p *pathSpec) {
		c := dialOne(b, startPath(b, p))
		u, err := newUploader(c)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(msgSize)
		b.ReportAllocs()
		for b.Loop() {
			if err := u.send(); err != nil {
				b.Fatal(err)
			}
		}
		if err := u.drain(); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkEcho64 measures the round trip of a 64-byte message, one per
// op, and reports its median and 99th percentile.
func BenchmarkEcho64(b *testing.B) {
	forEachPath(b, func(b *testing.B, p *pathSpec) {
		c := openOne(b, startPath(b, p))
		msg := make([]byte, echoSize)
		buf := make([]byte, echoSize)
		var rtts []time.Duration
		b.SetBytes(echoSize)
		b.ReportAllocs()
		for b.Loop() {
			t0 := time.Now()
			if err := roundTrip(c, msg, buf); err != nil {
				b.Fatal(err)
			}
			rtts = append(rtts, time.Since(t0))
		}
		b.ReportMetric(float64(percentile(rtts, 50).Nanoseconds())/1e3, "p50-µs")
		b.ReportMetric(float64(percentile(rtts, 99).Nanoseconds())/1e3, "p99-µs")
	})
}

// busyDuration is how long every connection of BenchmarkBusy keeps
// echoing.
const busyDuration = 3 * time.Second

// BenchmarkBusy measures 64-byte echoes per second, all connections
// together, with 1, 100 and 1,000 connections busy at once. Each op is one
// busyDuration run on freshly opened connections; "opened" says how many
// of them the path let through. Keep the default -benchtime: with
// -benchtime=Nx every op is a full run, and -timeout does not cover
// benchmarks. The same holds for BenchmarkIdle1000.
func BenchmarkBusy(b *testing.B) {
	forEachPath(b, func(b *testing.B, p *pathSpec) {
		for _, n := range []int{1, 100, manyConns} {
			b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
				in := startPath(b, p)
				var perSec float64
				var opened, ops int
				for b.Loop() {
					r := busyFor(in.dial, n, busyDuration)
					if r.opened == 0 {
						b.Fatalf("busy %s: %v: %s", p.name, errNoConns, r.fails)
					}
					perSec += r.perSec
					opened += r.opened
					ops++
				}
				b.ReportMetric(perSec/float64(ops), "msgs/s")
				b.ReportMetric(float64(opened)/float64(ops), "opened")
			})
		}
	})
}

// BenchmarkIdle1000 opens 1,000 connections at once and reports how many
// opened within openTimeout and how much the proxy's resident memory
// (its whole process tree) grew per open connection, as RSS and PSS. Each
// op starts a fresh proxy, so no op sees memory an earlier one left.
func BenchmarkIdle1000(b *testing.B) {
	forEachPath(b, func(b *testing.B, p *pathSpec) {
		if why := p.missing(); why != "" {
			b.Skip(why)
		}
		e := getEnv(b)
		var opened, rss, pss float64
		var ops int
		for b.Loop() {
			in, err := launch(e, p)
			if err != nil {
				b.Fatal(err)
			}
			r, err := idleMany(in, manyConns)
			if cerr := in.close(); err == nil {
				err = cerr
			}
			if err != nil {
				b.Fatal(err)
			}
			rs, ps := r.perConn()
			opened += float64(r.opened)
			rss += rs
			pss += ps
			ops++
		}
		b.ReportMetric(opened/float64(ops), "opened")
		if p.floor != "" || p.anchor != "" { // the direct paths have no proxy
			b.ReportMetric(rss/float64(ops), "RSS-KiB/conn")
			b.ReportMetric(pss/float64(ops), "PSS-KiB/conn")
		}
	})
}
