package connector

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/ticket"
)

// TestMain fails the package if goroutines from this package, the relay or
// the WebSocket library outlive the tests.
func TestMain(m *testing.M) {
	if os.Getenv(idlePeersEnv) != "" {
		os.Exit(idlePeers())
	}
	code := m.Run()
	if code == 0 {
		if err := waitFor(5*time.Second, leakedGoroutines); err != nil {
			fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func leakedGoroutines() error {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var leaks []string
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 { // this goroutine
			continue
		}
		if strings.Contains(g, "airlock/internal/connector.") ||
			strings.Contains(g, "airlock/internal/relay.") ||
			strings.Contains(g, "coder/websocket.") {
			leaks = append(leaks, g)
		}
	}
	if len(leaks) > 0 {
		return fmt.Errorf("%d goroutines:\n%s", len(leaks), strings.Join(leaks, "\n\n"))
	}
	return nil
}

// waitFor calls cond until it returns nil or timeout passes, and returns
// its last error.
func waitFor(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// logSink collects a test's log lines. It outlives the test safely (http
// servers may log from their own goroutines after it ends) and dumps the
// lines if the test fails.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func newLogSink(t testing.TB) (*logSink, *slog.Logger) {
	s := &logSink{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("connector log:\n%s", s.String())
		}
	})
	return s, slog.New(slog.NewTextHandler(s, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// waitLine waits for a log line containing all of parts.
func (s *logSink) waitLine(t testing.TB, parts ...string) string {
	t.Helper()
	var line string
	err := waitFor(5*time.Second, func() error {
		for l := range strings.SplitSeq(s.String(), "\n") {
			ok := true
			for _, p := range parts {
				if !strings.Contains(l, p) {
					ok = false
					break
				}
			}
			if ok {
				line = l
				return nil
			}
		}
		return fmt.Errorf("no log line with %q", parts)
	})
	if err != nil {
		t.Fatal(err)
	}
	return line
}

// testClock is a settable clock for Config.Now.
type testClock struct{ ns atomic.Int64 }

func newTestClock() *testClock {
	c := &testClock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}

func (c *testClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *testClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func newKey(t testing.TB) ticket.Key {
	t.Helper()
	k, err := ticket.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// mint signs a ticket for session "s1", connector "c1", user "alice",
// valid for a minute; edit may change the claims first.
func mint(t testing.TB, k ticket.Key, mode ticket.Mode, edit ...func(*ticket.Claims)) string {
	t.Helper()
	c := ticket.Claims{
		Session:   "s1",
		Connector: "c1",
		User:      "alice",
		Mode:      mode,
		Expires:   time.Now().Add(time.Minute),
	}
	for _, e := range edit {
		e(&c)
	}
	tok, err := ticket.Sign(k, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// listen returns a TCP listener on a free loopback port, closed at cleanup.
func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// startConnector runs Serve on a fresh loopback listener with cfg (Name
// "c1" and Session "s1" unless set) and returns its address. At cleanup it
// cancels Serve and checks that it returned nil. stop does the same
// earlier and returns Serve's error.
func startConnector(t testing.TB, cfg Config) (addr string, stop func() error) {
	t.Helper()
	cfg.Name = cmpOr(cfg.Name, "c1")
	cfg.Session = cmpOr(cfg.Session, "s1")
	ln := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Serve(ctx, ln, cfg) }()
	var once sync.Once
	var serr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case serr = <-errc:
			case <-time.After(10 * time.Second):
				serr = errors.New("Serve did not return within 10s of cancel")
			}
		})
		return serr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), stop
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// testCA is an in-memory certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

var serial atomic.Int64

func newCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// issue returns a leaf certificate signed by ca: a server certificate for
// 127.0.0.1 or a client certificate for cn.
func (ca *testCA) issue(t testing.TB, cn string, server bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// serverTLS is a server config for 127.0.0.1 without client auth.
func (ca *testCA) serverTLS(t testing.TB) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{ca.issue(t, "connector", true)}}
}

// mutualTLS is a server config that requires client certificates from
// clientCA.
func (ca *testCA) mutualTLS(t testing.TB, clientCA *testCA) *tls.Config {
	cfg := ca.serverTLS(t)
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.ClientCAs = clientCA.pool()
	return cfg
}

// clientTLS trusts ca and presents certs.
func (ca *testCA) clientTLS(certs ...tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: ca.pool(), Certificates: certs}
}

// tcpTarget is a loopback TCP server whose connections are handled by
// handle in their own goroutine; everything is closed and waited for at
// cleanup. accepted counts connections.
type tcpTarget struct {
	addr     string
	accepted atomic.Int64
}

func startTCPTarget(t testing.TB, handle func(net.Conn)) *tcpTarget {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tt := &tcpTarget{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tt.accepted.Add(1)
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return tt
}

func echo(c net.Conn) { io.Copy(c, c) }

// readN reads exactly n bytes from r within 5 seconds.
func readN(t testing.TB, c net.Conn, n int) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return b
}

func mustWrite(t testing.TB, w io.Writer, b []byte) {
	t.Helper()
	if _, err := w.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// rfbOpening wraps a raw target handler as an RFB 3.3 server: it greets,
// takes the client's version and then hands the connection to handle. The
// vnc connector checks a client's version before passing bytes on (see
// relayHandshake); after the version, 3.3 leaves the rest raw, so relay
// tests and benchmarks can measure any byte stream.
func rfbOpening(handle func(net.Conn)) func(net.Conn) {
	return func(c net.Conn) {
		if _, err := io.WriteString(c, "RFB 003.003\n"); err != nil {
			return
		}
		var v [12]byte
		if _, err := io.ReadFull(c, v[:]); err != nil {
			return
		}
		handle(c)
	}
}

// rfbHello is the client side of rfbOpening, through the connector.
func rfbHello(t testing.TB, c net.Conn) {
	t.Helper()
	if v := readN(t, c, 12); string(v) != "RFB 003.003\n" {
		t.Fatalf("server version %q, want RFB 003.003", v)
	}
	mustWrite(t, c, []byte("RFB 003.003\n"))
}
