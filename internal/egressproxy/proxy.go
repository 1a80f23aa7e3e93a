// Package egressproxy is a kiosk session's one way out of its seal: an
// HTTP CONNECT proxy the runner runs outside the seal, which lets a
// connection through only to the HOST:PORT pairs of an allow-list and
// resolves the names itself, so nothing inside the seal needs (or gets)
// DNS. The seal's egress relay hands it each connection the workload
// opens to 127.0.0.1:3128 inside (see [Proxy.Pipe]); it never listens on
// a port anyone else could reach.
//
// Only CONNECT is spoken: a plain-HTTP proxy request would make the proxy
// parse and rewrite the site's traffic, and a kiosk's site is HTTPS (the
// browser's TLS then runs end to end, through the tunnel). Every allowed
// and refused destination goes to Config.Audit.
package egressproxy

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/airlock-hpc/airlock/internal/relay"
	"golang.org/x/sys/unix"
)

// Verdicts a Decision carries.
const (
	Allow  = "allow"  // on the list and connected
	Refuse = "refuse" // not on the list, or not a CONNECT we accept
	Fail   = "fail"   // on the list, but it could not be resolved or reached
)

// Decision is one request the proxy answered.
type Decision struct {
	// Target is the HOST:PORT asked for ("" when the request could not be
	// read that far).
	Target  string
	Verdict string
	// Reason says why a request was refused or failed.
	Reason string
}

// Resolver looks names up (net.DefaultResolver is one).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Config is what a Proxy allows and whom it tells.
type Config struct {
	// Allow are the HOST:PORT pairs a CONNECT may name: a DNS name (any
	// case, compared without a trailing dot) or an IP literal ([::1]:443
	// for IPv6), and a port. Nothing else is dialled.
	Allow []string
	// Resolver resolves allowed names. Default net.DefaultResolver.
	Resolver Resolver
	// Dial connects to a resolved address. Default a net.Dialer with a
	// 10 s timeout.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Audit is told of every request, from the goroutine serving it.
	Audit func(Decision)
	// HandshakeTimeout bounds reading the request. Default 10s.
	HandshakeTimeout time.Duration
	// Idle closes a tunnel after this long without a byte either way.
	// Default 0: never (the session's lifetime bounds it).
	Idle time.Duration
	// MaxConns bounds the connections served at once (each holds
	// descriptors in the runner); more are answered 503. Default 256.
	MaxConns int
	Logger   *slog.Logger
}

// Proxy is a CONNECT proxy for one session. Its methods are safe for
// concurrent use.
type Proxy struct {
	cfg   Config
	log   *slog.Logger
	allow map[string]bool
	slots chan struct{}
}

// New checks the allow-list and makes a Proxy.
func New(cfg Config) (*Proxy, error) {
	p := &Proxy{cfg: cfg, allow: map[string]bool{}}
	p.log = cmp.Or(cfg.Logger, slog.Default()).With("component", "egress-proxy")
	for _, a := range cfg.Allow {
		host, port, err := SplitTarget(a)
		if err != nil {
			return nil, fmt.Errorf("egress proxy: allow %q: %w", a, err)
		}
		p.allow[JoinTarget(host, port)] = true
	}
	if p.cfg.Resolver == nil {
		p.cfg.Resolver = net.DefaultResolver
	}
	if p.cfg.Dial == nil {
		d := &net.Dialer{Timeout: 10 * time.Second}
		p.cfg.Dial = d.DialContext
	}
	p.cfg.HandshakeTimeout = cmp.Or(p.cfg.HandshakeTimeout, 10*time.Second)
	p.slots = make(chan struct{}, cmp.Or(p.cfg.MaxConns, 256))
	return p, nil
}

// Allowed says whether target (HOST:PORT, in any case) is on the list.
func (p *Proxy) Allowed(target string) bool {
	host, port, err := SplitTarget(target)
	return err == nil && p.allow[JoinTarget(host, port)]
}

// Pipe makes a connected pair of UNIX sockets, serves the proxy on one end
// until ctx ends or the client hangs up, and returns the other: what the
// seal's egress relay passes into the seal for one workload connection.
func (p *Proxy) Pipe(ctx context.Context) (net.Conn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("egress proxy: socketpair: %w", err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "egress-proxy")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			if i == 1 {
				conns[0].Close()
			} else {
				unix.Close(fds[1])
			}
			return nil, fmt.Errorf("egress proxy: %w", err)
		}
		conns[i] = c
	}
	go p.ServeConn(ctx, conns[0])
	return conns[1], nil
}

// ServeConn answers one client connection: reads its CONNECT, refuses it
// or connects and relays until either side is done. It closes c.
func (p *Proxy) ServeConn(ctx context.Context, c net.Conn) {
	select {
	case p.slots <- struct{}{}:
		defer func() { <-p.slots }()
	default:
		p.decide(Decision{Verdict: Refuse, Reason: fmt.Sprintf("more than %d connections at once", cap(p.slots))})
		refuse(c, "503 Service Unavailable", "too many connections")
		c.Close()
		return
	}
	up, br, err := p.handshake(ctx, c)
	if err != nil {
		c.Close()
		return
	}
	if n := br.Buffered(); n > 0 {
		// Bytes the client sent before our answer (a TLS hello sent
		// optimistically) belong to the tunnel.
		b, _ := br.Peek(n)
		if _, err := up.Write(b); err != nil {
			c.Close()
			up.Close()
			return
		}
	}
	if _, err := relay.Pipe(ctx, c, up, p.cfg.Idle); err != nil {
		p.log.Debug("tunnel ended", "error", err)
	}
}

// handshake reads the request, decides, and on success answers 200 and
// returns the upstream connection.
func (p *Proxy) handshake(ctx context.Context, c net.Conn) (net.Conn, *bufio.Reader, error) {
	c.SetReadDeadline(time.Now().Add(p.cfg.HandshakeTimeout))
	br := bufio.NewReaderSize(c, 1024)
	host, port, err := ReadConnect(br)
	if err != nil {
		status := "400 Bad Request"
		if errors.Is(err, ErrMethod) {
			status = "405 Method Not Allowed"
		}
		p.decide(Decision{Verdict: Refuse, Reason: err.Error()})
		refuse(c, status, err.Error())
		return nil, nil, err
	}
	c.SetReadDeadline(time.Time{})
	target := JoinTarget(host, port)
	if !p.allow[target] {
		err := errors.New("destination not in the session's allow-list")
		p.decide(Decision{Target: target, Verdict: Refuse, Reason: err.Error()})
		refuse(c, "403 Forbidden", err.Error())
		return nil, nil, err
	}
	up, err := p.dial(ctx, host, port)
	if err != nil {
		p.decide(Decision{Target: target, Verdict: Fail, Reason: err.Error()})
		refuse(c, "502 Bad Gateway", "cannot reach "+target)
		return nil, nil, err
	}
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		up.Close()
		return nil, nil, err
	}
	p.decide(Decision{Target: target, Verdict: Allow})
	return up, br, nil
}

// dial resolves host here (an IP literal needs no lookup) and tries each
// address in turn.
func (p *Proxy) dial(ctx context.Context, host string, port int) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		addrs, err = p.cfg.Resolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", host, err)
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("resolve %s: no addresses", host)
		}
		// A name's DNS is not the site's word: whoever answers for it
		// (or rebinds it) must not turn the tunnel towards the node
		// itself, where the runner would connect to loopback services or
		// the link-local metadata service. An IP literal on the list is.
		var node []string
		own, err := ownAddrs()
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", host, err)
		}
		addrs = slices.DeleteFunc(addrs, func(a netip.Addr) bool {
			if nodeOnly(a.Unmap()) || own[a.Unmap()] {
				node = append(node, a.String())
				return true
			}
			return false
		})
		if len(addrs) == 0 {
			return nil, fmt.Errorf("resolve %s: only to %s (this node's own, link-local or multicast), which a name may not lead to; list the address itself to allow it", host, strings.Join(node, ", "))
		}
	}
	var errs []error
	for _, a := range addrs {
		c, err := p.cfg.Dial(ctx, "tcp", netip.AddrPortFrom(a.Unmap(), uint16(port)).String())
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// nodeOnly reports whether a is an address a name must not lead to.
// 0.0.0.0/8 is "this host" to Linux as 0.0.0.0 is.
func nodeOnly(a netip.Addr) bool {
	return a.IsLoopback() || a.IsUnspecified() || a.IsLinkLocalUnicast() || a.IsMulticast() ||
		a.Is4() && a.As4()[0] == 0
}

// ownAddrs are the addresses of the node's interfaces now: a name may not
// lead to them either, for the gateway's and the runner's listeners on all
// interfaces answer there as on loopback. Read per lookup (an address can
// come and go); unreadable, the name is not dialled.
func ownAddrs() (map[netip.Addr]bool, error) {
	ifas, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("read this node's addresses: %w", err)
	}
	own := make(map[netip.Addr]bool, len(ifas))
	for _, ifa := range ifas {
		if pfx, err := netip.ParsePrefix(ifa.String()); err == nil {
			own[pfx.Addr().Unmap()] = true
		}
	}
	return own, nil
}

func (p *Proxy) decide(d Decision) {
	if d.Verdict == Allow {
		p.log.Info("egress allowed", "target", d.Target)
	} else {
		p.log.Warn("egress "+d.Verdict, "target", d.Target, "reason", d.Reason)
	}
	if p.cfg.Audit != nil {
		p.cfg.Audit(d)
	}
}

func refuse(c net.Conn, status, why string) {
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s\n",
		status, len(why)+1, why)
}

// JoinTarget is the canonical HOST:PORT form of a target.
func JoinTarget(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}
