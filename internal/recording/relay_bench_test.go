package recording

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRelayRecording is the relay as a viewer gets it: a connector
// sends a busy desktop's WebSocket frames over loopback TCP, the relay
// copies them to the viewer's TCP connection, and the viewer reads them
// all; with the recording on, the relay reads through the tap. Compare
// MB/s (what the viewer receives) and cpu-ns/MB (the whole process's user
// and system time, the compressor's included) of off and on in one run.
// The target: on at most 10% below off. The source here sends as
// fast as loopback TCP takes it, several times what Xvnc produces, so on
// is bounded by the compressor's pace: a worst case.
func BenchmarkRelayRecording(b *testing.B) {
	// 32 MiB a connection, four times what the writer queues: the
	// compressor's pace, not the queue, decides.
	zrle := make([]byte, 32<<20)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < len(zrle); i += 8 {
		binary.LittleEndian.PutUint64(zrle[i:], rng.Uint64())
	}
	var stream []byte
	for p := zrle; len(p) >= 64<<10; p = p[64<<10:] {
		stream = append(stream, frame(2, true, nil, p[:64<<10])...)
	}
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			b.SetBytes(int64(len(stream)))
			var cpu time.Duration
			i := 0
			for b.Loop() {
				connector, relayIn := tcpPair(b)
				relayOut, viewer := tcpPair(b)
				var src io.ReadWriteCloser = relayIn
				var w *Writer
				if on {
					var err error
					if w, err = Create(filepath.Join(dir, fmt.Sprintf("%d.fbs.gz", i)), Meta{}, 0, nil); err != nil {
						b.Fatal(err)
					}
					src = NewTap(relayIn, w)
				}
				i++
				before := cpuTime()
				go func() {
					connector.Write(stream)
					connector.Close()
				}()
				go func() {
					io.CopyBuffer(relayOut, struct{ io.Reader }{src}, make([]byte, 64<<10))
					relayOut.Close()
				}()
				n, err := io.Copy(io.Discard, viewer)
				if err != nil || n != int64(len(stream)) {
					b.Fatalf("the viewer got %d of %d bytes: %v", n, len(stream), err)
				}
				// The viewer has it all: the throughput is measured. Closing
				// writes the last queued blocks and syncs the file, which
				// no viewer waits for; its CPU still counts.
				b.StopTimer()
				src.Close()
				cpu += cpuTime() - before
				viewer.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/(float64(len(stream))/1e6), "cpu-ns/MB")
		})
	}
}

func tcpPair(tb testing.TB) (net.Conn, net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	return c, s
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
