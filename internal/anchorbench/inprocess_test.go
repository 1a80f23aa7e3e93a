package anchorbench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/connector"
	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/ticket"
)

// The in-process paths run connector.Serve, the function `airlock
// connector` calls, inside the test binary, so `go test -cpuprofile`
// and -memprofile see the connector's own code. They are for finding
// where a figure goes, never for the report: there the connector shares
// a process, a heap and a scheduler with the client and the sink.
var inProcessPaths = []*pathSpec{
	{name: "inproc-" + vncPlainUnix, proxy: "connector.Serve vnc in the test process, UNIX socket", start: startInProcess(connector.KindVNC, false)},
	{name: "inproc-" + vncTLS, proxy: "connector.Serve vnc in the test process, TLS", start: startInProcess(connector.KindVNC, true)},
	{name: "inproc-" + tlsConnector, proxy: "connector.Serve tls in the test process", start: startInProcess(connector.KindTLS, true)},
}

// heapProfileEnv names a directory; when set, BenchmarkInProcess/*/idle
// writes there a heap profile (every allocation sampled) taken while its
// connections are open, one file per path, for `go tool pprof`.
const heapProfileEnv = "AIRLOCK_BENCH_HEAPPROFILE"

func startInProcess(kind contract.ConnectorKind, useTLS bool) func(e *env) (*instance, error) {
	return func(e *env) (*instance, error) {
		cfg := connector.Config{
			Kind: kind, Name: "console", Session: "bench", Target: e.sink.addr(),
			Key: e.key, Logger: slog.New(slog.DiscardHandler),
		}
		if useTLS {
			cfg.TLS = e.serverTLS(kind == connector.KindTLS)
		}
		if kind == connector.KindTLS {
			cfg.Name = "rdp"
		}
		var ln net.Listener
		var err error
		sock := filepath.Join(e.dir, fmt.Sprintf("inproc-%d.sock", seq.Add(1)))
		if useTLS {
			ln, err = net.Listen("tcp", "127.0.0.1:0")
		} else {
			ln, err = net.Listen("unix", sock)
		}
		if err != nil {
			return nil, fmt.Errorf("start in-process connector: %w", err)
		}
		addr := ln.Addr().String()
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- connector.Serve(ctx, ln, cfg) }()
		in := &instance{cleanup: []func() error{func() error {
			cancel()
			return <-served
		}}}
		switch {
		case kind == connector.KindTLS:
			in.dial = tlsDialer(addr, e.clientTLS(true), in)
		default:
			mint := func() (string, error) {
				return ticket.Sign(e.key, ticket.Claims{
					Session: "bench", Connector: "console", User: "bench",
					Mode: ticket.Control, Expires: time.Now().Add(time.Hour),
				})
			}
			tr := &http.Transport{}
			u := "wss://" + addr + "/"
			if useTLS {
				tr.TLSClientConfig = e.clientTLS(false)
			} else {
				tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "unix", sock)
				}
				u = "ws://connector/"
			}
			in.dial = wsDialer(u, tr, mint, in)
		}
		return in, nil
	}
}

// BenchmarkInProcess measures the connector paths with connector.Serve in
// the test process: download, upload and echo as their namesakes above,
// and idle, which reports the connector's own live heap and goroutines
// per open connection, attributed by allocation site from the runtime's
// heap profile. Run it with -cpuprofile to see where CPU goes.
func BenchmarkInProcess(b *testing.B) {
	for _, p := range inProcessPaths {
		b.Run(p.name+"/download", func(b *testing.B) {
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
		b.Run(p.name+"/upload", func(b *testing.B) {
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
		b.Run(p.name+"/echo", func(b *testing.B) {
			c := openOne(b, startPath(b, p))
			msg := make([]byte, echoSize)
			buf := make([]byte, echoSize)
			b.SetBytes(echoSize)
			b.ReportAllocs()
			for b.Loop() {
				if err := roundTrip(c, msg, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(p.name+"/idle", func(b *testing.B) { benchInProcessIdle(b, p) })
	}
}

// connectorFrames matches the stack frames that make an allocation or a
// goroutine the connector's: its own code, the relay, and the HTTP
// server connection that carries a WebSocket. The client and the sink
// in the same process match none of them.
var connectorFrames = regexp.MustCompile(`airlock/internal/(connector|relay)\.|^net/http\.\(\*conn\)\.serve`)

func benchInProcessIdle(b *testing.B, p *pathSpec) {
	// Sample every allocation from here on, so the per-connection
	// figures are exact rather than one sample per 512 KiB.
	prev := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	defer func() { runtime.MemProfileRate = prev }()
	in := startPath(b, p)

	var sites map[string]int64
	var heap, stack, goroutines, opened int64
	var last, ops int
	for b.Loop() {
		base := connectorHeap()
		g0, all0, stack0 := connectorGoroutines(), runtime.NumGoroutine(), stackInuse()
		// Not all at once: with every allocation recorded, 1,000
		// concurrent handshakes in one process would all miss
		// openTimeout together. How many open at once is measured on the
		// real process; here only what each one keeps matters.
		conns, fails := openManyBounded(in.dial, manyConns, 32, 3*time.Minute)
		if len(conns) == 0 {
			b.Fatalf("idle %s: %v: %s", p.name, errNoConns, fails)
		}
		now := connectorHeap()
		g := connectorGoroutines() - g0
		goroutines += int64(g)
		// Stacks are not in the heap profile; share the growth of stack
		// memory out by goroutine, the client's and the sink's included.
		if all := runtime.NumGoroutine() - all0; all > 0 {
			stack += (stackInuse() - stack0) * int64(g) / int64(all)
		}
		opened += int64(len(conns))
		last = len(conns)
		ops++
		sites = make(map[string]int64)
		for site, n := range now {
			if d := n - base[site]; d > 0 {
				sites[site] = d
				heap += d
			}
		}
		if dir := os.Getenv(heapProfileEnv); dir != "" {
			if err := writeHeapProfile(filepath.Join(dir, "heap-"+p.name+".pprof")); err != nil {
				b.Error(err)
			}
		}
		closeAll(conns)
	}
	b.ReportMetric(float64(heap)/float64(opened)/1024, "heap-KiB/conn")
	b.ReportMetric(float64(stack)/float64(opened)/1024, "stack-KiB/conn")
	b.ReportMetric(float64(goroutines)/float64(opened), "goroutines/conn")
	b.ReportMetric(float64(opened)/float64(ops), "opened")
	// The largest sites of the last op, so the log says what the
	// connector keeps per idle connection.
	keys := slices.SortedFunc(func(yield func(string) bool) {
		for k := range sites {
			if !yield(k) {
				return
			}
		}
	}, func(x, y string) int { return cmp.Compare(sites[y], sites[x]) })
	var lines []string
	for _, k := range keys[:min(len(keys), 12)] {
		lines = append(lines, fmt.Sprintf("%8.2f KiB/conn  %s", float64(sites[k])/float64(last)/1024, k))
	}
	b.Logf("%s: connector heap kept per idle connection, by allocation site:\n%s", p.name, strings.Join(lines, "\n"))
}

// connectorHeap returns the connector's live heap bytes by allocation
// site (the innermost non-runtime frame, with the connector frame that
// led to it), as of a fresh garbage collection.
func connectorHeap() map[string]int64 {
	// Two collections: MemProfile reports as of the last completed
	// cycle, and the first may leave objects freed only by the second.
	runtime.GC()
	runtime.GC()
	var recs []runtime.MemProfileRecord
	n, _ := runtime.MemProfile(nil, false)
	for {
		recs = make([]runtime.MemProfileRecord, n+100)
		var ok bool
		if n, ok = runtime.MemProfile(recs, false); ok {
			recs = recs[:n]
			break
		}
	}
	out := make(map[string]int64)
	for _, r := range recs {
		if r.InUseBytes() == 0 {
			continue
		}
		frames := runtime.CallersFrames(r.Stack())
		var leaf, owner string
		for {
			f, more := frames.Next()
			if leaf == "" && !strings.HasPrefix(f.Function, "runtime.") {
				leaf = f.Function
			}
			if owner == "" && connectorFrames.MatchString(f.Function) {
				owner = f.Function
			}
			if !more {
				break
			}
		}
		if owner == "" {
			continue
		}
		site := leaf
		if owner != leaf {
			site += " ← " + owner
		}
		out[site] += r.InUseBytes()
	}
	return out
}

// connectorGoroutines counts goroutines with a connector frame on their
// stack.
func connectorGoroutines() int {
	buf := make([]byte, 16<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		for line := range strings.Lines(g) {
			if connectorFrames.MatchString(strings.TrimSpace(line)) {
				n++
				break
			}
		}
	}
	return n
}

func stackInuse() int64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.StackInuse)
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write heap profile %s: %w", path, err)
	}
	defer f.Close()
	runtime.GC()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		return fmt.Errorf("write heap profile %s: %w", path, err)
	}
	return f.Close()
}
