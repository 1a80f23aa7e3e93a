package relay_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/airlock-hpc/airlock/internal/relay"
)

func TestMain(m *testing.M) {
	os.Exit(realtest.LeakCheckMain(m, "airlock/internal/relay"))
}

// waitFor polls cond until it returns nil or d passes, and returns its
// last error.
func waitFor(d time.Duration, cond func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// connPair returns the two ends of a real connection over network ("tcp"
// on 127.0.0.1 or "unix" in a temporary directory): dialed is the client
// end, accepted the server end. Cleanup closes both.
func connPair(tb testing.TB, network string) (dialed, accepted net.Conn) {
	tb.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(tb.TempDir(), "s")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	type acceptResult struct {
		c   net.Conn
		err error
	}
	ch := make(chan acceptResult, 1)
	go func() {
		c, err := ln.Accept()
		ch <- acceptResult{c, err}
	}()
	dialed, err = net.Dial(network, ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		dialed.Close()
		tb.Fatal(r.err)
	}
	tb.Cleanup(func() {
		dialed.Close()
		r.c.Close()
	})
	return dialed, r.c
}

type pipeResult struct {
	stats relay.Stats
	err   error
}

// rig is client ⇄ a ═Pipe═ b ⇄ server: the test drives client and server,
// Pipe relays between a and b.
type rig struct {
	client, server net.Conn
	a, b           net.Conn
	cancel         context.CancelCauseFunc
	result         chan pipeResult
}

// startPipe runs Pipe(a, b) in the background. Cleanup cancels it and
// waits for it to return.
func startPipe(tb testing.TB, client, a, b, server net.Conn, idle time.Duration) *rig {
	tb.Helper()
	ctx, cancel := context.WithCancelCause(context.Background())
	r := &rig{client: client, server: server, a: a, b: b, cancel: cancel, result: make(chan pipeResult, 1)}
	go func() {
		st, err := relay.Pipe(ctx, a, b, idle)
		r.result <- pipeResult{st, err}
	}()
	tb.Cleanup(func() {
		cancel(errors.New("test over"))
		select {
		case res := <-r.result:
			r.result <- res
		case <-time.After(10 * time.Second):
			tb.Errorf("Pipe did not return after cancel")
		}
	})
	return r
}

func newRig(tb testing.TB, netA, netB string, idle time.Duration) *rig {
	tb.Helper()
	client, a := connPair(tb, netA)
	b, server := connPair(tb, netB)
	return startPipe(tb, client, a, b, server, idle)
}

// wait returns Pipe's result, failing the test if it takes longer than d.
func (r *rig) wait(tb testing.TB, d time.Duration) pipeResult {
	tb.Helper()
	select {
	case res := <-r.result:
		r.result <- res // keep it for Cleanup
		return res
	case <-time.After(d):
		tb.Fatalf("Pipe did not return within %v", d)
		return pipeResult{}
	}
}

// returned reports whether Pipe has returned, without waiting.
func (r *rig) returned() bool {
	select {
	case res := <-r.result:
		r.result <- res
		return true
	default:
		return false
	}
}

type topology struct{ netA, netB string }

var topologies = []topology{{"tcp", "tcp"}, {"unix", "unix"}, {"tcp", "unix"}, {"unix", "tcp"}}

// idles are the two copy paths: splice-capable io.Copy, and the tracked
// buffer loop.
var idles = []time.Duration{0, time.Minute}

func forEachPath(t *testing.T, f func(t *testing.T, tp topology, idle time.Duration)) {
	for _, tp := range topologies {
		for _, idle := range idles {
			t.Run(fmt.Sprintf("%s-%s/idle=%v", tp.netA, tp.netB, idle), func(t *testing.T) {
				f(t, tp, idle)
			})
		}
	}
}

// sendAndHash writes n pseudo-random bytes from seed to w, half-closes w
// and returns their SHA-256.
func sendAndHash(w net.Conn, n int64, seed uint64) ([32]byte, error) {
	h := sha256.New()
	src := io.LimitReader(mrand.NewChaCha8([32]byte{byte(seed)}), n)
	if _, err := io.Copy(io.MultiWriter(w, h), src); err != nil {
		return [32]byte{}, err
	}
	if err := w.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		return [32]byte{}, err
	}
	return [32]byte(h.Sum(nil)), nil
}

// readAndHash reads r to EOF and returns the byte count and SHA-256.
func readAndHash(r io.Reader) (int64, [32]byte, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return n, [32]byte(h.Sum(nil)), err
}

func TestPipeBothWays(t *testing.T) {
	const up, down = 4<<20 + 17, 3<<20 + 5
	forEachPath(t, func(t *testing.T, tp topology, idle time.Duration) {
		r := newRig(t, tp.netA, tp.netB, idle)
		type side struct {
			sent, got [32]byte
			err       error
		}
		var cs, ss side
		var wg sync.WaitGroup
		wg.Go(func() { cs.sent, cs.err = sendAndHash(r.client, up, 1) })
		wg.Go(func() { ss.sent, ss.err = sendAndHash(r.server, down, 2) })
		var cn, sn int64
		var cerr, serr error
		wg.Go(func() { cn, cs.got, cerr = readAndHash(r.client) })
		wg.Go(func() { sn, ss.got, serr = readAndHash(r.server) })
		wg.Wait()
		if err := errors.Join(cs.err, ss.err, cerr, serr); err != nil {
			t.Fatal(err)
		}
		if sn != up || ss.got != cs.sent {
			t.Errorf("server got %d bytes (hash match %v), want %d", sn, ss.got == cs.sent, up)
		}
		if cn != down || cs.got != ss.sent {
			t.Errorf("client got %d bytes (hash match %v), want %d", cn, cs.got == ss.sent, down)
		}
		res := r.wait(t, 10*time.Second)
		if res.err != nil {
			t.Errorf("Pipe error: %v", res.err)
		}
		if want := (relay.Stats{AToB: up, BToA: down}); res.stats != want {
			t.Errorf("Stats = %+v, want %+v", res.stats, want)
		}
	})
}

// opaque hides a conn's type, so Pipe can only wait on it by reading:
// the small-buffer path.
type opaque struct{ net.Conn }

func (c opaque) CloseWrite() error { return c.Conn.(interface{ CloseWrite() error }).CloseWrite() }

// waiter reads a conn through a bufio.Reader and waits on it by peeking:
// the relay.ReadWaiter path. waits counts the WaitRead calls.
type waiter struct {
	net.Conn
	r     *bufio.Reader
	waits int
}

func newWaiter(c net.Conn) *waiter { return &waiter{Conn: c, r: bufio.NewReaderSize(c, 512)} }

func (c *waiter) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *waiter) WaitRead() error {
	c.waits++
	_, err := c.r.Peek(1)
	return err
}

func (c *waiter) CloseWrite() error { return c.Conn.(interface{ CloseWrite() error }).CloseWrite() }

// TestPipeWrapped moves bulk data both ways, then a half-close exchange,
// through the copy paths that sockets do not take: a source Pipe must
// read into a small buffer of its own (switching to the big one while
// reads fill it), and a relay.ReadWaiter.
func TestPipeWrapped(t *testing.T) {
	const up, down = 2<<20 + 17, 3<<20 + 5
	wraps := []struct {
		name string
		wrap func(net.Conn) net.Conn
	}{
		{"opaque", func(c net.Conn) net.Conn { return opaque{c} }},
		{"waiter", func(c net.Conn) net.Conn { return newWaiter(c) }},
	}
	for _, w := range wraps {
		for _, idle := range idles {
			t.Run(fmt.Sprintf("%s/idle=%v", w.name, idle), func(t *testing.T) {
				client, rawA := connPair(t, "tcp")
				rawB, server := connPair(t, "unix")
				a, b := w.wrap(rawA), w.wrap(rawB)
				r := startPipe(t, client, a, b, server, idle)
				var wg sync.WaitGroup
				var sentUp, sentDown, gotUp, gotDown [32]byte
				var nUp, nDown int64
				var errs [4]error
				wg.Go(func() { sentUp, errs[0] = sendAndHash(client, up, 3) })
				wg.Go(func() { sentDown, errs[1] = sendAndHash(server, down, 4) })
				wg.Go(func() { nUp, gotUp, errs[2] = readAndHash(server) })
				wg.Go(func() { nDown, gotDown, errs[3] = readAndHash(client) })
				wg.Wait()
				if err := errors.Join(errs[:]...); err != nil {
					t.Fatal(err)
				}
				if nUp != up || gotUp != sentUp || nDown != down || gotDown != sentDown {
					t.Errorf("server got %d bytes (match %v), want %d; client got %d (match %v), want %d",
						nUp, gotUp == sentUp, up, nDown, gotDown == sentDown, down)
				}
				res := r.wait(t, 10*time.Second)
				if res.err != nil || res.stats != (relay.Stats{AToB: up, BToA: down}) {
					t.Errorf("Pipe = %+v, %v; want %d and %d bytes, nil error", res.stats, res.err, up, down)
				}
				if wt, ok := a.(*waiter); ok && wt.waits == 0 {
					t.Error("Pipe never called WaitRead")
				}
			})
			t.Run(fmt.Sprintf("%s/half-close/idle=%v", w.name, idle), func(t *testing.T) {
				client, rawA := connPair(t, "tcp")
				rawB, server := connPair(t, "tcp")
				r := startPipe(t, client, w.wrap(rawA), w.wrap(rawB), server, idle)
				halfCloseExchange(t, client, server)
				if res := r.wait(t, 10*time.Second); res.err != nil {
					t.Errorf("Pipe error: %v", res.err)
				}
			})
		}
	}
}

// halfCloseExchange is a request/response protocol that relies on
// half-close: the client sends its request and shuts its write side; the
// server reads to EOF and only then replies.
func halfCloseExchange(t *testing.T, client, server net.Conn) {
	t.Helper()
	const req, resp = "request: please reply after my EOF", "reply: sent after your EOF"
	serverErr := make(chan error, 1)
	go func() {
		got, err := io.ReadAll(server)
		if err == nil && string(got) != req {
			err = fmt.Errorf("server read %q, want %q", got, req)
		}
		if err == nil {
			_, err = io.WriteString(server, resp)
		}
		server.Close()
		serverErr <- err
	}()
	if _, err := io.WriteString(client, req); err != nil {
		t.Fatal(err)
	}
	if err := client.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(client)
	if err != nil {
		t.Fatalf("client read: %v", err)
	}
	if string(got) != resp {
		t.Errorf("client read %q, want %q", got, resp)
	}
	if err := <-serverErr; err != nil {
		t.Error(err)
	}
}

func TestPipeHalfClose(t *testing.T) {
	forEachPath(t, func(t *testing.T, tp topology, idle time.Duration) {
		r := newRig(t, tp.netA, tp.netB, idle)
		halfCloseExchange(t, r.client, r.server)
		if res := r.wait(t, 10*time.Second); res.err != nil {
			t.Errorf("Pipe error: %v", res.err)
		}
	})
}

func TestPipeHalfCloseTLS(t *testing.T) {
	serverCfg, clientCfg := tlsConfigs(t)
	for _, idle := range idles {
		t.Run(fmt.Sprintf("idle=%v", idle), func(t *testing.T) {
			rawClient, rawA := connPair(t, "tcp")
			b, server := connPair(t, "tcp")
			client := tls.Client(rawClient, clientCfg)
			a := tls.Server(rawA, serverCfg)
			r := startPipe(t, client, a, b, server, idle)
			halfCloseExchange(t, client, server)
			if res := r.wait(t, 10*time.Second); res.err != nil {
				t.Errorf("Pipe error: %v", res.err)
			}
		})
	}
}

// TestPipeNoCloseWrite checks the fallback for a conn that cannot
// half-close: when the server finishes, the client still sees EOF.
func TestPipeNoCloseWrite(t *testing.T) {
	for _, idle := range idles {
		t.Run(fmt.Sprintf("idle=%v", idle), func(t *testing.T) {
			client, a := net.Pipe()
			b, server := connPair(t, "tcp")
			t.Cleanup(func() { client.Close() })
			r := startPipe(t, client, a, b, server, idle)
			go func() {
				io.WriteString(server, "bye")
				server.Close()
			}()
			client.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(client)
			if err != nil || string(got) != "bye" {
				t.Fatalf("client read %q, %v; want \"bye\" then EOF", got, err)
			}
			if res := r.wait(t, 10*time.Second); res.err != nil || res.stats.BToA != 3 {
				t.Errorf("Pipe = %+v, %v; want BToA 3, nil error", res.stats, res.err)
			}
		})
	}
}

// expectEOF fails unless c reads EOF (or a reset) within a few seconds,
// the sign that Pipe closed its far end.
func expectEOF(t *testing.T, name string, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || (err != io.EOF && !errors.Is(err, net.ErrClosed) && !strings.Contains(fmt.Sprint(err), "reset")) {
		t.Errorf("%s read %d bytes, %v; want EOF", name, n, err)
	}
}

func TestPipeContextCancel(t *testing.T) {
	forEachPath(t, func(t *testing.T, tp topology, idle time.Duration) {
		r := newRig(t, tp.netA, tp.netB, idle)
		// Move a little first, so Stats has something to report.
		io.WriteString(r.client, "hello")
		if _, err := io.ReadFull(r.server, make([]byte, 5)); err != nil {
			t.Fatal(err)
		}
		cause := errors.New("session ended")
		r.cancel(cause)
		res := r.wait(t, 5*time.Second)
		if !errors.Is(res.err, cause) {
			t.Errorf("Pipe error = %v, want the cancel cause", res.err)
		}
		if res.stats != (relay.Stats{AToB: 5}) {
			t.Errorf("Stats = %+v, want AToB 5", res.stats)
		}
		expectEOF(t, "client", r.client)
		expectEOF(t, "server", r.server)
	})
}

func TestPipeContextAlreadyCancelled(t *testing.T) {
	client, a := connPair(t, "tcp")
	b, server := connPair(t, "tcp")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := relay.Pipe(ctx, a, b, 0)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Pipe error = %v, want context.Canceled", err)
	}
	expectEOF(t, "client", client)
	expectEOF(t, "server", server)
}

func TestPipeIdle(t *testing.T) {
	const idle = 200 * time.Millisecond
	for _, tp := range topologies {
		t.Run(tp.netA+"-"+tp.netB, func(t *testing.T) {
			start := time.Now()
			r := newRig(t, tp.netA, tp.netB, idle)
			res := r.wait(t, 5*time.Second)
			if !errors.Is(res.err, relay.ErrIdle) {
				t.Fatalf("Pipe error = %v, want ErrIdle", res.err)
			}
			if took := time.Since(start); took < idle {
				t.Errorf("idle timeout after %v, before %v", took, idle)
			}
			if want := "relay: no bytes moved for 200ms: idle timeout"; res.err.Error() != want {
				t.Errorf("error %q, want %q", res.err, want)
			}
			expectEOF(t, "client", r.client)
			expectEOF(t, "server", r.server)
		})
	}
}

// TestPipeIdleKeptAlive sends a byte every few milliseconds for several
// idle periods, one way only, and checks the relay stays up, then that it
// times out once traffic stops. The margin (10 ms between bytes against a
// 300 ms timeout) is wide so a loaded machine does not flake; exact
// timing is TestPipeIdleSynctest's job.
func TestPipeIdleKeptAlive(t *testing.T) {
	const idle = 300 * time.Millisecond
	r := newRig(t, "tcp", "tcp", idle)
	var got []byte
	buf := make([]byte, 1)
	for end := time.Now().Add(3 * idle); time.Now().Before(end); {
		if _, err := r.client.Write([]byte{'.'}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(r.server, buf); err != nil {
			t.Fatalf("server read: %v (Pipe returned: %v)", err, r.returned())
		}
		got = append(got, buf[0])
		time.Sleep(10 * time.Millisecond)
	}
	if r.returned() {
		t.Fatal("Pipe returned while bytes were moving")
	}
	stopped := time.Now()
	res := r.wait(t, 5*time.Second)
	if !errors.Is(res.err, relay.ErrIdle) {
		t.Fatalf("Pipe error = %v, want ErrIdle", res.err)
	}
	if took := time.Since(stopped); took < idle/2 {
		t.Errorf("timed out %v after the last byte, want about %v", took, idle)
	}
	if res.stats.AToB != int64(len(got)) || res.stats.BToA != 0 {
		t.Errorf("Stats = %+v, want AToB %d", res.stats, len(got))
	}
}

// TestPipeIdleSynctest pins the idle timing exactly with a fake clock and
// in-memory pipes; TestPipeIdle covers the same path on real sockets.
func TestPipeIdleSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client, a := net.Pipe()
		b, server := net.Pipe()
		defer client.Close()
		defer server.Close()
		result := make(chan error, 1)
		go func() {
			_, err := relay.Pipe(context.Background(), a, b, time.Minute)
			result <- err
		}()
		done := func() bool {
			synctest.Wait()
			select {
			case err := <-result:
				result <- err
				return true
			default:
				return false
			}
		}

		time.Sleep(30 * time.Second)
		go client.Write([]byte("x"))
		if _, err := io.ReadFull(server, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		// Activity at 30s moves the deadline to 90s.
		time.Sleep(60*time.Second - time.Nanosecond)
		if done() {
			t.Fatalf("Pipe returned at %v, before 90s", 90*time.Second-time.Nanosecond)
		}
		time.Sleep(time.Nanosecond)
		if !done() {
			t.Fatal("Pipe still running at 90s, 60s after the last byte")
		}
		if err := <-result; !errors.Is(err, relay.ErrIdle) {
			t.Fatalf("Pipe error = %v, want ErrIdle", err)
		}
	})
}

// TestPipePeerReset checks that a peer aborting with RST is an ordinary
// end, not an error, and that the other side is closed.
func TestPipePeerReset(t *testing.T) {
	for _, idle := range idles {
		t.Run(fmt.Sprintf("idle=%v", idle), func(t *testing.T) {
			r := newRig(t, "tcp", "tcp", idle)
			io.WriteString(r.server, "unread by the client")
			// Wait until the bytes reach the client, so the reset happens
			// with data in flight.
			if _, err := io.ReadFull(r.client, make([]byte, 5)); err != nil {
				t.Fatal(err)
			}
			r.client.(*net.TCPConn).SetLinger(0)
			r.client.Close()
			res := r.wait(t, 5*time.Second)
			if res.err != nil {
				t.Errorf("Pipe error = %v, want nil after a peer reset", res.err)
			}
			expectEOF(t, "server", r.server)
		})
	}
}

// TestPipeReportsFaults checks that an error that is not an ordinary end
// (here, plaintext sent to a TLS server) is returned and names its
// direction.
func TestPipeReportsFaults(t *testing.T) {
	serverCfg, _ := tlsConfigs(t)
	client, rawA := connPair(t, "tcp")
	b, server := connPair(t, "tcp")
	r := startPipe(t, client, tls.Server(rawA, serverCfg), b, server, 0)
	io.WriteString(client, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	res := r.wait(t, 5*time.Second)
	if res.err == nil || !strings.HasPrefix(res.err.Error(), "relay a to b: ") || !strings.Contains(res.err.Error(), "tls") {
		t.Errorf("Pipe error = %v, want \"relay a to b: ...tls...\"", res.err)
	}
	expectEOF(t, "server", server)
}

// TestPipeNoGoroutineLeak runs Pipes to every kind of end and checks the
// goroutine count returns to where it started.
func TestPipeNoGoroutineLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	for i := range 12 {
		func() {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			client, a := connPair(t, "tcp")
			b, server := connPair(t, "unix")
			idle := time.Duration(0)
			if i%2 == 1 {
				idle = 100 * time.Millisecond
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				relay.Pipe(ctx, a, b, idle)
			}()
			switch i % 3 {
			case 0: // both sides finish
				client.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, server)
				server.Close()
			case 1: // cancelled
				cancel()
			case 2: // idle, or cancelled when there is no idle timeout
				if idle == 0 {
					cancel()
				}
			}
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatalf("run %d: Pipe did not return", i)
			}
			client.Close()
			server.Close()
		}()
	}
	if err := waitFor(5*time.Second, func() error {
		if n := runtime.NumGoroutine(); n > base {
			return fmt.Errorf("%d goroutines, started with %d", n, base)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

// tlsConfigs returns a server config with a fresh self-signed certificate
// for 127.0.0.1 and a client config that trusts it.
func tlsConfigs(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "relay test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	client = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	return server, client
}

// BenchmarkPipeTCP measures one message through the relay and a one-byte
// acknowledgement back, over real loopback TCP on both sides, for each
// copy path.
func BenchmarkPipeTCP(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"64B", 64}, {"64KiB", 64 << 10}} {
		for _, mode := range []struct {
			name string
			idle time.Duration
		}{{"copy", 0}, {"idle", time.Minute}} {
			b.Run(size.name+"/"+mode.name, func(b *testing.B) {
				r := newRig(b, "tcp", "tcp", mode.idle)
				go func() {
					buf, ack := make([]byte, size.n), []byte{1}
					for {
						if _, err := io.ReadFull(r.server, buf); err != nil {
							return
						}
						if _, err := r.server.Write(ack); err != nil {
							return
						}
					}
				}()
				msg := bytes.Repeat([]byte{'m'}, size.n)
				ack := make([]byte, 1)
				b.SetBytes(int64(size.n))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := r.client.Write(msg); err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(r.client, ack); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
