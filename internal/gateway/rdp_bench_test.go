package gateway

// BenchmarkRDPPath measures the native RDP path as a user's bytes take it,
// `airlock rdp`'s tunnel → the gateway's RDP port (mutual TLS, the store
// checked) → the session's tls connector (mutual TLS, a real `airlock
// connector tls` process) → the target, against stunnel-to-stunnel (a
// stunnel client and a stunnel server with client certificates, 7lbd's
// oodproxy hop) over the same loopback to the same echo target, in one
// run. scripts/bench-anchors.sh runs it and prints the comparison.
//
// Each path has two sub-benchmarks: "throughput" (64 KiB writes echoed
// back, MB/s) and "roundtrip" (64-byte echoes, p50 and p99 reported as
// p50-µs and p99-µs). The target: at least stunnel's throughput, and a p50
// no worse than 1.2× stunnel's.

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/rdpclient"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/session"
)

// echoServer echoes every connection on 127.0.0.1 until the benchmark ends.
func echoServer(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// rdpBenchPath starts the airlock path and returns the tunnel's local
// address (what an RDP client would dial).
func rdpBenchPath(b *testing.B, target string) string {
	dir := b.TempDir()
	rln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	cfg := testConfig(b, dir, time.Second, 100, benchUser)
	cfg.Profiles = []Profile{desktopProfile()}
	cfg.RDPListen, cfg.RDPAddress = rln.Addr().String(), rln.Addr().String()
	g, _, cancel, done := serveGateway(b, cfg)
	b.Cleanup(func() { cancel(); <-done; g.Close(); cfg.Store.Close() })
	serveRDP(b, g, rln)
	ctx := context.Background()

	// The session's connector, as the runner starts it: an inherited
	// listener, the hop CA's certificate for the session's name.
	id := "s-bench-rdp"
	now := time.Now()
	l, err := g.rdp.hop.issue("airlock session "+id, id, id, false, now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	certFile, keyFile, caFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "c.key"), filepath.Join(dir, "ca.pem")
	os.WriteFile(certFile, l.certPEM, 0o600)
	os.WriteFile(keyFile, l.keyPEM, 0o600)
	os.WriteFile(caFile, g.rdp.hop.pem, 0o600)
	sock := filepath.Join(dir, "rdp.sock")
	uln, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	uln.(*net.UnixListener).SetUnlinkOnClose(false)
	f, _ := uln.(*net.UnixListener).File()
	uln.Close()
	cmd := exec.Command(realtest.Binary(b), "connector", "tls", "--fd", "3", "--name", "rdp", "--session", id, "--target", target,
		"--cert-file", certFile, "--cert-key-file", keyFile, "--client-ca-file", caFile, "--log-level", "warn")
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	// A session record the gateway routes to, and the user's file.
	u := session.User{Name: benchUser, Created: now}
	cfg.Store.PutUser(ctx, u)
	s := &session.Session{ID: id, Owner: benchUser, Profile: "desktop", State: session.Ready, Created: now, Started: now,
		Endpoints: map[string]string{ConnRDP: "unix:" + sock}}
	if err := cfg.Store.CreateSession(ctx, s); err != nil {
		b.Fatal(err)
	}
	file, _, err := g.IssueRDPFile(ctx, benchUser, s, rln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	tun, err := rdpclient.New(file, nil)
	if err != nil {
		b.Fatal(err)
	}
	lln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	tctx, tstop := context.WithCancel(context.Background())
	tdone := make(chan error, 1)
	go func() { tdone <- tun.Serve(tctx, lln, nil) }()
	b.Cleanup(func() { tstop(); <-tdone })
	return lln.Addr().String()
}

// stunnelBenchPath starts a stunnel client and a stunnel server with
// client certificates and returns the client's plain local address.
func stunnelBenchPath(b *testing.B, target string) string {
	if _, err := exec.LookPath("stunnel4"); err != nil {
		b.Skip("stunnel4 not installed")
	}
	dir := b.TempDir()
	ca, err := loadOrMakeCA(dir, "ca", "bench")
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	srv, _ := ca.issue("server", "", "localhost", false, now.Add(-time.Hour), now.Add(time.Hour))
	cli, _ := ca.issue("client", "", "", true, now.Add(-time.Hour), now.Add(time.Hour))
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o600)
		return p
	}
	caFile := filepath.Join(dir, "ca.pem")
	srvPort, cliPort := freeTCPPort(b), freeTCPPort(b)
	start := func(name, conf string) {
		p := write(name+".conf", []byte(conf))
		cmd := exec.Command("stunnel4", p)
		cmd.Stderr = io.Discard
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	}
	start("server", fmt.Sprintf("foreground = yes\npid =\n[s]\naccept = 127.0.0.1:%d\nconnect = %s\ncert = %s\nkey = %s\nCAfile = %s\nverify = 2\n",
		srvPort, target, write("s.pem", srv.certPEM), write("s.key", srv.keyPEM), caFile))
	start("client", fmt.Sprintf("foreground = yes\npid =\n[c]\nclient = yes\naccept = 127.0.0.1:%d\nconnect = 127.0.0.1:%d\ncert = %s\nkey = %s\nCAfile = %s\nverify = 2\n",
		cliPort, srvPort, write("c.pem", cli.certPEM), write("c.key", cli.keyPEM), caFile))
	addr := "127.0.0.1:" + strconv.Itoa(cliPort)
	if err := realtest.WaitFor(10*time.Second, func() error {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(srvPort))
		if err != nil {
			return err
		}
		c.Close()
		c, err = net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}); err != nil {
		b.Fatal(err)
	}
	return addr
}

func freeTCPPort(tb testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func BenchmarkRDPPath(b *testing.B) {
	target := echoServer(b)
	for _, p := range []struct {
		name  string
		start func(*testing.B, string) string
	}{{"airlock", rdpBenchPath}, {"stunnel-stunnel", stunnelBenchPath}} {
		b.Run(p.name, func(b *testing.B) {
			addr := p.start(b, target)
			b.Run("throughput", func(b *testing.B) { benchThroughput(b, addr) })
			b.Run("roundtrip", func(b *testing.B) { benchRoundTrip(b, addr) })
		})
	}
}

// dialEcho connects and checks one echo, with a deadline.
func dialEcho(b *testing.B, addr string) net.Conn {
	var c net.Conn
	if err := realtest.WaitFor(10*time.Second, func() error {
		var err error
		c, err = net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := []byte("hello")
		if _, err = c.Write(buf); err == nil {
			_, err = io.ReadFull(c, buf)
		}
		if err != nil {
			c.Close()
			return err
		}
		c.SetDeadline(time.Time{})
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	return c
}

func benchThroughput(b *testing.B, addr string) {
	c := dialEcho(b, addr)
	defer c.Close()
	chunk := make([]byte, 64<<10)
	b.SetBytes(int64(len(chunk)))
	var wg sync.WaitGroup
	wg.Add(1)
	errc := make(chan error, 1)
	go func() {
		defer wg.Done()
		_, err := io.CopyN(io.Discard, c, int64(b.N)*int64(len(chunk)))
		errc <- err
	}()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
}

func benchRoundTrip(b *testing.B, addr string) {
	c := dialEcho(b, addr)
	defer c.Close()
	buf := make([]byte, 64)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Nanoseconds()) / 1e3 }
	b.ReportMetric(q(0.50), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
}
