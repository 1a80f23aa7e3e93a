package anchorbench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/airlock-hpc/airlock/internal/ticket"
)

// Names of the paths. The plain vnc connector listens on a UNIX socket
// because the CLI refuses a cleartext TCP listener (TLS on every hop);
// websockify has no UNIX listener, so its plain figure is over TCP. The
// report says so beside the figures.
const (
	directTCP       = "direct-tcp"
	directTLS       = "direct-tls"
	websockifyPlain = "websockify-plain"
	vncPlainUnix    = "vnc-plain-unix"
	websockifyTLS   = "websockify-tls"
	vncTLS          = "vnc-tls"
	stunnel         = "stunnel"
	tlsConnector    = "tls-connector"
)

// pathSpec is one way from the client to the sink.
type pathSpec struct {
	name string
	// anchor is the path this one is measured against ("" for anchors
	// and floors); floor is the direct path with the same transport.
	anchor, floor string
	// needs names a program that must be installed, or is "".
	needs string
	// proxy says whose code sits between client and sink.
	proxy string
	start func(e *env) (*instance, error)
}

// paths lists every path, each anchor before the connector measured
// against it.
var paths = []*pathSpec{
	{name: directTCP, proxy: "none: client → sink over TCP", start: startDirectTCP},
	{name: directTLS, proxy: "none: client → sink over mutual TLS (crypto/tls both ends)", start: startDirectTLS},
	{name: websockifyPlain, floor: directTCP, needs: "websockify", proxy: "websockify, ws:// on TCP", start: startWebsockify(false)},
	{name: vncPlainUnix, anchor: websockifyPlain, floor: directTCP, proxy: "airlock connector vnc, ws:// on a UNIX socket", start: startVNC(false)},
	{name: websockifyTLS, floor: directTLS, needs: "websockify", proxy: "websockify --cert, wss:// on TCP", start: startWebsockify(true)},
	{name: vncTLS, anchor: websockifyTLS, floor: directTLS, proxy: "airlock connector vnc --cert-file, wss:// on TCP", start: startVNC(true)},
	{name: stunnel, floor: directTLS, needs: "stunnel4", proxy: "stunnel4, verify = 2 (client certificate required)", start: startStunnel},
	{name: tlsConnector, anchor: stunnel, floor: directTLS, proxy: "airlock connector tls (client certificate required)", start: startTLSConnector},
}

// baselineEnvVar names another airlock binary (an earlier build) whose
// connectors the report measures beside this build's, in the same rounds,
// so a change's cost shows as a ratio free of the machine's drift.
const baselineEnvVar = "AIRLOCK_BENCH_BASELINE"

func init() {
	bin := os.Getenv(baselineEnvVar)
	if bin == "" {
		return
	}
	// Each baseline path is measured against this build's same path: its
	// row in the ratio table reads "baseline ÷ this build".
	for _, p := range slices.Clone(paths) {
		if p.anchor == "" {
			continue // anchors and floors run no airlock code
		}
		paths = append(paths, &pathSpec{
			name: p.name + "-baseline", anchor: p.name, floor: p.floor,
			proxy: p.proxy + ", from $" + baselineEnvVar,
			start: func(e *env) (*instance, error) { return p.start(e.withBin(bin)) },
		})
	}
}

// missing returns why p cannot run here, or "".
func (p *pathSpec) missing() string {
	if p.needs == "" {
		return ""
	}
	if _, err := exec.LookPath(p.needs); err != nil {
		return fmt.Sprintf("%s not installed (apt-get install -y --no-install-recommends websockify stunnel4): %v", p.needs, err)
	}
	return ""
}

type dialFunc func(ctx context.Context) (net.Conn, error)

// instance is one running path: a proxy process, if the path has one,
// and how to reach the sink through it.
type instance struct {
	spec *pathSpec
	dial dialFunc
	proc *proc // nil for the direct paths
	// info describes the session the first dial negotiated (TLS version
	// and cipher suite), for the report.
	info    string
	cleanup []func() error
}

// close stops the proxy and removes what start made.
func (in *instance) close() error {
	var errs []error
	if in.proc != nil {
		errs = append(errs, in.proc.stop())
	}
	for _, f := range in.cleanup {
		errs = append(errs, f())
	}
	return errors.Join(errs...)
}

// startPath starts p, waits until a 64-byte echo comes back through it,
// and stops it when tb ends.
func startPath(tb testing.TB, p *pathSpec) *instance {
	tb.Helper()
	if why := p.missing(); why != "" {
		tb.Skip(why)
	}
	in, err := launch(getEnv(tb), p)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := in.close(); err != nil {
			tb.Errorf("stop path %s: %v", p.name, err)
		}
	})
	return in
}

// launch starts p and waits until a 64-byte echo comes back through it.
// The caller must close the instance.
func launch(e *env, p *pathSpec) (*instance, error) {
	in, err := p.start(e)
	if err != nil {
		return nil, fmt.Errorf("start path %s: %w", p.name, err)
	}
	in.spec = p
	if err := in.waitReady(); err != nil {
		in.close()
		return nil, fmt.Errorf("start path %s: %w", p.name, err)
	}
	return in, nil
}

// readyTimeout bounds how long a proxy may take to start serving; Python
// and stunnel start in well under a second on an idle machine.
const readyTimeout = 15 * time.Second

// waitReady polls until one connection through the path echoes, the
// proxy exits, or readyTimeout passes, and returns the last error.
func (in *instance) waitReady() error {
	deadline := time.Now().Add(readyTimeout)
	for {
		err := in.tryEcho()
		if err == nil {
			return nil
		}
		if in.proc != nil {
			if aerr := in.proc.alive(); aerr != nil {
				return aerr
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no echo after %v: %w", readyTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (in *instance) tryEcho() error {
	if in.proc != nil && in.proc.port != 0 {
		// An anchor that binds its own port: make sure it, and not
		// whoever took the port before it, is listening.
		if err := listeningOn(in.proc.pid(), in.proc.port); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := openEcho(ctx, in.dial)
	if err != nil {
		return err
	}
	return c.Close()
}

func startDirectTCP(e *env) (*instance, error) {
	return &instance{dial: tcpDialer(e.sink.addr())}, nil
}

func startDirectTLS(e *env) (*instance, error) {
	in := &instance{}
	in.dial = tlsDialer(e.sink.tlsAddr(), e.clientTLS(true), in)
	return in, nil
}

// connectorEnvVar holds space-separated NAME=value pairs added to the
// environment of every airlock connector process the benchmarks start.
const connectorEnvVar = "AIRLOCK_BENCH_CONNECTOR_ENV"

// seq makes the names of log files and sockets unique within a run.
var seq atomic.Int64

// startVNC runs `airlock connector vnc` on a listener this process binds:
// TCP with TLS, or a UNIX socket without.
func startVNC(useTLS bool) func(e *env) (*instance, error) {
	return func(e *env) (*instance, error) {
		in := &instance{}
		args := []string{"vnc", "--name", "console", "--key-file", e.keyFile}
		if useTLS {
			args = append(args, "--cert-file", e.certFile, "--cert-key-file", e.certKeyFile)
		}
		network := "tcp"
		if !useTLS {
			network = "unix"
		}
		p, addr, err := e.startConnector(network, args)
		if err != nil {
			return nil, err
		}
		in.proc = p
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
				return d.DialContext(ctx, "unix", addr)
			}
			u = "ws://connector/"
			in.cleanup = append(in.cleanup, func() error {
				if err := os.Remove(addr); err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
				return nil
			})
		}
		in.dial = wsDialer(u, tr, mint, in)
		return in, nil
	}
}

func startTLSConnector(e *env) (*instance, error) {
	p, addr, err := e.startConnector("tcp", []string{"tls", "--name", "rdp",
		"--cert-file", e.certFile, "--cert-key-file", e.certKeyFile, "--client-ca-file", e.caFile})
	if err != nil {
		return nil, err
	}
	in := &instance{proc: p}
	in.dial = tlsDialer(addr, e.clientTLS(true), in)
	return in, nil
}

// startConnector binds a listener on network ("tcp" on 127.0.0.1:0, or
// "unix" in the env dir), hands it to `airlock connector` as fd 3, as the
// runner does, and returns the process and the listener's address.
func (e *env) startConnector(network string, args []string) (*proc, string, error) {
	name := fmt.Sprintf("connector-%s-%d", args[0], seq.Add(1))
	var ln net.Listener
	var addr string
	var err error
	if network == "unix" {
		addr = filepath.Join(e.dir, name+".sock")
		ln, err = net.Listen("unix", addr)
		if err == nil {
			// Our copy closes below; the connector's must keep the path.
			ln.(*net.UnixListener).SetUnlinkOnClose(false)
		}
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		if err == nil {
			addr = ln.Addr().String()
		}
	}
	if err != nil {
		return nil, "", fmt.Errorf("start %s: %w", name, err)
	}
	f, err := ln.(interface{ File() (*os.File, error) }).File()
	ln.Close()
	if err != nil {
		return nil, "", fmt.Errorf("start %s: listener file: %w", name, err)
	}
	defer f.Close()
	argv := append([]string{e.bin, "connector"}, args...)
	argv = append(argv, "--fd", "3", "--target", e.sink.addr(), "--session", "bench")
	// For experiments only (GOMAXPROCS=1, GODEBUG=...): never set by the
	// script, so the report always measures the connector as shipped.
	env := strings.Fields(os.Getenv(connectorEnvVar))
	p, err := startProc(e.dir, name, argv, []*os.File{f}, env...)
	if err != nil {
		return nil, "", err
	}
	p.strict = true
	return p, addr, nil
}

func startWebsockify(useTLS bool) func(e *env) (*instance, error) {
	return func(e *env) (*instance, error) {
		name := fmt.Sprintf("websockify-%d", seq.Add(1))
		p, err := e.startAnchor(name, func(port int) ([]string, error) {
			argv := []string{"websockify"}
			if useTLS {
				argv = append(argv, "--cert="+e.certFile, "--key="+e.certKeyFile)
			}
			return append(argv, "127.0.0.1:"+strconv.Itoa(port), e.sink.addr()), nil
		})
		if err != nil {
			return nil, err
		}
		in := &instance{proc: p}
		tr := &http.Transport{}
		scheme := "ws"
		if useTLS {
			tr.TLSClientConfig = e.clientTLS(false)
			scheme = "wss"
		}
		in.dial = wsDialer(fmt.Sprintf("%s://127.0.0.1:%d/", scheme, p.port), tr, nil, in)
		return in, nil
	}
}

func startStunnel(e *env) (*instance, error) {
	name := fmt.Sprintf("stunnel-%d", seq.Add(1))
	p, err := e.startAnchor(name, func(port int) ([]string, error) {
		conf := filepath.Join(e.dir, name+".conf")
		// Defaults otherwise, as Debian ships it: a thread per connection,
		// log level notice.
		text := fmt.Sprintf(`foreground = yes
pid =

[bench]
accept = 127.0.0.1:%d
connect = %s
cert = %s
key = %s
CAfile = %s
verify = 2
`, port, e.sink.addr(), e.certFile, e.certKeyFile, e.caFile)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			return nil, fmt.Errorf("write %s: %w", conf, err)
		}
		return []string{"stunnel4", conf}, nil
	})
	if err != nil {
		return nil, err
	}
	in := &instance{proc: p}
	in.dial = tlsDialer(fmt.Sprintf("127.0.0.1:%d", p.port), e.clientTLS(true), in)
	return in, nil
}

// startAnchor starts a program that binds its own listener on a free
// port, and retries with another port, up to three times, if it exits
// early (someone took the port in between).
func (e *env) startAnchor(name string, argv func(port int) ([]string, error)) (*proc, error) {
	var last error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		args, err := argv(port)
		if err != nil {
			return nil, err
		}
		p, err := startProc(e.dir, name, args, nil)
		if err != nil {
			return nil, err
		}
		p.port = port
		deadline := time.Now().Add(readyTimeout)
		for {
			if last = listeningOn(p.pid(), port); last == nil {
				return p, nil
			}
			if aerr := p.alive(); aerr != nil {
				last = aerr
				break
			}
			if !errors.Is(last, errNotListening) || time.Now().After(deadline) {
				p.stop()
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil, fmt.Errorf("start %s: %w", name, last)
}

func tcpDialer(addr string) dialFunc {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return hello(ctx, c)
	}
}

// tlsDialer dials and completes the handshake, so a connection it returns
// has been admitted. It records the first session's parameters in in.
func tlsDialer(addr string, cfg *tls.Config, in *instance) dialFunc {
	var once sync.Once
	return func(ctx context.Context) (net.Conn, error) {
		d := tls.Dialer{Config: cfg}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		once.Do(func() { in.info = describeTLS(c.(*tls.Conn).ConnectionState()) })
		return hello(ctx, c)
	}
}

// wsDialer opens a WebSocket with subprotocol "binary", as noVNC does,
// with a fresh ticket from mint if mint is not nil, and returns it as a
// net.Conn whose writes are binary messages.
func wsDialer(u string, tr *http.Transport, mint func() (string, error), in *instance) dialFunc {
	hc := &http.Client{Transport: tr}
	in.cleanup = append(in.cleanup, func() error {
		tr.CloseIdleConnections() // any left by a refused upgrade
		return nil
	})
	var once sync.Once
	return func(ctx context.Context) (net.Conn, error) {
		target := u
		if mint != nil {
			tok, err := mint()
			if err != nil {
				return nil, fmt.Errorf("mint ticket: %w", err)
			}
			target += "?ticket=" + url.QueryEscape(tok)
		}
		c, resp, err := websocket.Dial(ctx, target, &websocket.DialOptions{
			HTTPClient:      hc,
			Subprotocols:    []string{"binary"},
			CompressionMode: websocket.CompressionDisabled,
		})
		if err != nil {
			return nil, err
		}
		if sp := c.Subprotocol(); sp != "binary" {
			c.CloseNow()
			return nil, fmt.Errorf("dial %s: negotiated subprotocol %q, want binary", u, sp)
		}
		once.Do(func() {
			in.info = "plain"
			if resp.TLS != nil {
				in.info = describeTLS(*resp.TLS)
			}
		})
		return hello(ctx, &wsConn{Conn: websocket.NetConn(context.Background(), c, websocket.MessageBinary), ws: c})
	}
}

// hello does the sink's opening on a new connection (see rfbGreeting),
// closing it on failure.
func hello(ctx context.Context, c net.Conn) (net.Conn, error) {
	if err := rfbHello(ctx, c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// wsConn closes without the closing handshake: the benchmarks close
// hundreds of connections at once and need not wait for each peer's
// close frame (coder/websocket waits up to 5 s for it).
type wsConn struct {
	net.Conn
	ws *websocket.Conn
}

func (c *wsConn) Close() error {
	err := c.ws.CloseNow()
	c.Conn.Close() // stops NetConn's timers; the conn is already closed
	return err
}

func describeTLS(cs tls.ConnectionState) string {
	return tls.VersionName(cs.Version) + " " + tls.CipherSuiteName(cs.CipherSuite)
}
