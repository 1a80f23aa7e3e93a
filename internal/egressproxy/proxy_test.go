package egressproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
)

func TestSplitTarget(t *testing.T) {
	good := map[string]string{
		"hub.example.org:443":  "hub.example.org:443",
		"HUB.Example.ORG.:443": "hub.example.org:443",
		"127.0.0.1:8443":       "127.0.0.1:8443",
		"[::1]:443":            "[::1]:443",
		"[0:0::1]:443":         "[::1]:443",
		"a-b.c1:1":             "a-b.c1:1",
		"x:65535":              "x:65535",
	}
	for in, want := range good {
		h, p, err := SplitTarget(in)
		if err != nil || JoinTarget(h, p) != want {
			t.Errorf("SplitTarget(%q) = %q %d %v, want %s", in, h, p, err, want)
		}
	}
	for _, in := range []string{
		"", "hub", "hub:", ":443", "hub:0", "hub:65536", "hub:+443", "hub:0x1bb", "hub:443 ",
		"-hub.org:443", "hub-.org:443", "hub..org:443", "hub_x.org:443", "h\u00fcb.org:443",
		"127.1:443", "0x7f.1:443", "1.2.3.4.5:443", "[127.0.0.1]:443", "[fe80::1%eth0]:443",
		"::1:443", "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z." + strings.Repeat("a", 64) + ":1",
		strings.Repeat("a.", 127) + "ab:1",
	} {
		if h, p, err := SplitTarget(in); err == nil {
			t.Errorf("SplitTarget(%q) = %q %d, want an error", in, h, p)
		}
	}
}

func TestReadConnect(t *testing.T) {
	ok := "CONNECT Hub.Example.org:443 HTTP/1.1\r\nHost: hub.example.org:443\r\nUser-Agent: x\r\n\r\n"
	h, p, err := ReadConnect(bufio.NewReaderSize(strings.NewReader(ok), maxLine))
	if err != nil || h != "hub.example.org" || p != 443 {
		t.Fatalf("got %q %d %v", h, p, err)
	}
	bad := map[string]string{
		"GET http://x/ HTTP/1.1\r\n\r\n":                                       "only CONNECT",
		"connect x:443 HTTP/1.1\r\n\r\n":                                       "only CONNECT",
		"CONNECT x:443 HTTP/2\r\n\r\n":                                         "protocol",
		"CONNECT x:443\r\n\r\n":                                                "request line",
		"CONNECT x HTTP/1.1\r\n\r\n":                                           "HOST:PORT",
		"CONNECT x:443 HTTP/1.1\r\nbroken\r\n\r\n":                             "NAME: VALUE",
		"CONNECT x:443 HTTP/1.1\r\nA: \x00\r\n\r\n":                            "control",
		"CONNECT x:443 HTTP/1.1\r\n" + strings.Repeat("a", 2000):               "longer",
		"CONNECT x:443 HTTP/1.1\r\n" + strings.Repeat("A: b\r\n", 40) + "\r\n": "headers",
		"CONNECT x:443 HTTP/1.1\r\nA: b\r\n":                                   "EOF",
	}
	for in, want := range bad {
		_, _, err := ReadConnect(bufio.NewReaderSize(strings.NewReader(in), maxLine))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ReadConnect(%.40q): %v, want an error saying %q", in, err, want)
		}
	}
}

// FuzzReadConnect: no input panics, and what is accepted is a target on
// which SplitTarget agrees (canonical and stable).
func FuzzReadConnect(f *testing.F) {
	f.Add("CONNECT hub.example.org:443 HTTP/1.1\r\nHost: hub.example.org:443\r\n\r\n")
	f.Add("CONNECT [::1]:443 HTTP/1.0\r\n\r\n")
	f.Add("CONNECT 127.0.0.1:8443 HTTP/1.1\n\n")
	f.Add("GET / HTTP/1.1\r\n\r\n")
	f.Fuzz(func(t *testing.T, in string) {
		h, p, err := ReadConnect(bufio.NewReaderSize(strings.NewReader(in), maxLine))
		if err != nil {
			return
		}
		h2, p2, err := SplitTarget(JoinTarget(h, p))
		if err != nil || h2 != h || p2 != p {
			t.Fatalf("accepted %q:%d, which does not round-trip: %q %d %v", h, p, h2, p2, err)
		}
	})
}

// echoServer serves an echo on a loopback port until the test ends.
func echoServer(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

// fixedResolver answers every name with one address: the tests' DNS.
type fixedResolver map[string]netip.Addr

func (r fixedResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := r[host]; ok {
		return []netip.Addr{a}, nil
	}
	return nil, fmt.Errorf("no such host %s", host)
}

type auditLog struct {
	mu sync.Mutex
	d  []Decision
}

func (a *auditLog) add(d Decision) { a.mu.Lock(); a.d = append(a.d, d); a.mu.Unlock() }
func (a *auditLog) all() []Decision {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Decision(nil), a.d...)
}

// connect sends a CONNECT over c and returns the status line.
func connect(t testing.TB, c net.Conn, target string) (string, *bufio.Reader) {
	t.Helper()
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	status, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil || l == "\r\n" {
			break
		}
	}
	return strings.TrimSpace(status), br
}

// TestProxyAllowsOnlyTheList: through a real socket pair, an allowed name
// (resolved by the proxy, not the client) tunnels bytes both ways; another
// port of the same host, another host, an IP literal of the allowed host
// and a GET are refused; every one is audited.
func TestProxyAllowsOnlyTheList(t *testing.T) {
	addr := echoServer(t)
	other := echoServer(t)
	_, port, _ := net.SplitHostPort(addr)
	_, otherPort, _ := net.SplitHostPort(other)
	audit := &auditLog{}
	// The names resolve to a documentation address (a name may not lead
	// to loopback: TestProxyNameToNodeRefused), which the dialler takes
	// to the echo server.
	p, err := New(Config{
		Allow:    []string{"hub.test:" + port, "gone.test:" + port},
		Resolver: fixedResolver{"hub.test": netip.MustParseAddr("192.0.2.10"), "other.test": netip.MustParseAddr("192.0.2.10")},
		Dial: func(ctx context.Context, network, a string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, strings.Replace(a, "192.0.2.10", "127.0.0.1", 1))
		},
		Audit: audit.add,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	c, err := p.Pipe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	status, br := connect(t, c, "HUB.test:"+port)
	if !strings.Contains(status, " 200 ") {
		t.Fatalf("allowed target: %s", status)
	}
	io.WriteString(c, "ping\n")
	if l, err := br.ReadString('\n'); err != nil || l != "ping\n" {
		t.Fatalf("tunnel echo: %q %v", l, err)
	}
	c.Close()

	for target, want := range map[string]string{
		"hub.test:" + otherPort:  "403",
		"other.test:" + port:     "403",
		"127.0.0.1:" + port:      "403",
		"gone.test:" + port:      "502",
		"hub.test:" + port + "x": "400",
	} {
		c, err := p.Pipe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if status, _ := connect(t, c, target); !strings.Contains(status, " "+want+" ") {
			t.Errorf("CONNECT %s: %s, want %s", target, status, want)
		}
		c.Close()
	}
	c, _ = p.Pipe(ctx)
	fmt.Fprintf(c, "GET http://hub.test:%s/ HTTP/1.1\r\n\r\n", port)
	if s, _ := bufio.NewReader(c).ReadString('\n'); !strings.Contains(s, " 405 ") {
		t.Errorf("GET through the proxy: %q, want 405", s)
	}
	c.Close()

	got := map[string]string{}
	for _, d := range audit.all() {
		got[d.Target] = d.Verdict
	}
	want := map[string]string{
		"hub.test:" + port: Allow, "hub.test:" + otherPort: Refuse, "other.test:" + port: Refuse,
		"127.0.0.1:" + port: Refuse, "gone.test:" + port: Fail, "": Refuse,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("audit of %q: %q, want %q (all: %v)", k, got[k], v, audit.all())
		}
	}
}

// TestProxyEarlyData: bytes a client sends right after its CONNECT,
// before the 200, reach the destination.
func TestProxyEarlyData(t *testing.T) {
	addr := echoServer(t)
	p, err := New(Config{Allow: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Pipe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\n\r\nearly\n", addr)
	br := bufio.NewReader(c)
	var lines []string
	for len(lines) < 3 {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", lines, err)
		}
		lines = append(lines, l)
	}
	if !strings.Contains(lines[0], "200") || lines[2] != "early\n" {
		t.Fatalf("got %q", lines)
	}
}

func TestNewRefusesBadAllow(t *testing.T) {
	if _, err := New(Config{Allow: []string{"hub.test"}}); err == nil || !errors.Is(err, err) || !strings.Contains(err.Error(), "hub.test") {
		t.Fatalf("allow without a port: %v", err)
	}
}

// TestProxyMaxConns: past MaxConns open connections the next is refused
// with 503 and audited; once one closes, a new one is served.
func TestProxyMaxConns(t *testing.T) {
	addr := echoServer(t)
	audit := &auditLog{}
	p, err := New(Config{Allow: []string{addr}, MaxConns: 2, Audit: audit.add})
	if err != nil {
		t.Fatal(err)
	}
	var open []net.Conn
	for range 2 {
		c, err := p.Pipe(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if status, _ := connect(t, c, addr); !strings.Contains(status, " 200 ") {
			t.Fatalf("tunnel %d: %s", len(open), status)
		}
		open = append(open, c)
	}
	c, _ := p.Pipe(t.Context())
	if status, _ := connect(t, c, addr); !strings.Contains(status, " 503 ") {
		t.Fatalf("third connection: %s, want 503", status)
	}
	c.Close()
	open[0].Close()
	// The slot is given back when the relay has seen the close.
	if err := realtest.WaitFor(5*time.Second, func() error {
		c, _ := p.Pipe(t.Context())
		defer c.Close()
		if status, _ := connect(t, c, addr); !strings.Contains(status, " 200 ") {
			return errors.New(status)
		}
		return nil
	}); err != nil {
		t.Fatalf("after one closed: %v", err)
	}
	open[1].Close()
	refused := 0
	for _, d := range audit.all() {
		if strings.Contains(d.Reason, "at once") {
			refused++
		}
	}
	if refused == 0 {
		t.Errorf("the refusal was not audited: %v", audit.all())
	}
}

// TestProxyNameToNodeRefused: an allowed name whose DNS answers with the
// node's own loopback, an unspecified, link-local (the cloud metadata
// service) or multicast address (a rebinding attack on the site's name)
// is not dialled: the kiosk's tunnel would reach the node's private
// services as the runner. Listing the address itself allows it.
func TestProxyNameToNodeRefused(t *testing.T) {
	addr := echoServer(t)
	_, port, _ := net.SplitHostPort(addr)
	var mu sync.Mutex
	var dialled []string
	audit := &auditLog{}
	for _, a := range []string{"127.0.0.1", "127.8.9.1", "::1", "::ffff:127.0.0.1", "0.0.0.0", "0.1.2.3", "::", "169.254.169.254", "fe80::1", "224.0.0.1"} {
		t.Run(a, func(t *testing.T) {
			p, err := New(Config{
				Allow:    []string{"hub.test:" + port, addr},
				Resolver: fixedResolver{"hub.test": netip.MustParseAddr(a)},
				Dial: func(ctx context.Context, network, to string) (net.Conn, error) {
					mu.Lock()
					dialled = append(dialled, to)
					mu.Unlock()
					var d net.Dialer
					return d.DialContext(ctx, network, addr)
				},
				Audit: audit.add,
			})
			if err != nil {
				t.Fatal(err)
			}
			c, err := p.Pipe(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if status, _ := connect(t, c, "hub.test:"+port); !strings.Contains(status, " 502 ") {
				t.Fatalf("hub.test resolving to %s: %s, want 502", a, status)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(dialled) > 0 {
				t.Fatalf("hub.test resolving to %s: dialled %v", a, dialled)
			}
			d := audit.all()
			if last := d[len(d)-1]; last.Verdict != Fail || !strings.Contains(last.Reason, a) {
				t.Fatalf("audit: %+v", last)
			}
		})
	}
	// The literal is the site's own choice: still allowed.
	p, _ := New(Config{Allow: []string{addr}})
	c, _ := p.Pipe(t.Context())
	defer c.Close()
	if status, _ := connect(t, c, addr); !strings.Contains(status, " 200 ") {
		t.Fatalf("listed literal %s: %s", addr, status)
	}
}

// TestProxyNameToNodeAddressRefused: an allowed name whose DNS answers
// with one of the node's own non-loopback addresses (its LAN address, where
// the gateway's and the runner's listeners on all interfaces are) is not
// dialled: the workload would reach them as the runner, from the node
// itself. The rebinding attack of TestProxyNameToNodeRefused, with the
// address the site's DNS can learn from any connection the node makes.
func TestProxyNameToNodeAddressRefused(t *testing.T) {
	var own []netip.Addr
	ifas, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, ifa := range ifas {
		if pfx, err := netip.ParsePrefix(ifa.String()); err == nil && !nodeOnly(pfx.Addr()) {
			own = append(own, pfx.Addr())
		}
	}
	if len(own) == 0 {
		t.Skip("this machine has no address but loopback and link-local")
	}
	// What the node serves on all interfaces (a gateway, a runner).
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	for _, a := range own {
		t.Run(a.String(), func(t *testing.T) {
			var mu sync.Mutex
			var dialled []string
			audit := &auditLog{}
			p, err := New(Config{
				Allow:    []string{"hub.test:" + port},
				Resolver: fixedResolver{"hub.test": a},
				Dial: func(ctx context.Context, network, to string) (net.Conn, error) {
					mu.Lock()
					dialled = append(dialled, to)
					mu.Unlock()
					var d net.Dialer
					return d.DialContext(ctx, network, to)
				},
				Audit: audit.add,
			})
			if err != nil {
				t.Fatal(err)
			}
			c, err := p.Pipe(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if status, _ := connect(t, c, "hub.test:"+port); !strings.Contains(status, " 502 ") {
				t.Fatalf("hub.test resolving to this node's %s: %s, want 502", a, status)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(dialled) > 0 {
				t.Fatalf("hub.test resolving to this node's %s: dialled %v", a, dialled)
			}
			d := audit.all()
			if last := d[len(d)-1]; last.Verdict != Fail || !strings.Contains(last.Reason, a.String()) {
				t.Fatalf("audit: %+v", last)
			}
		})
	}
}
