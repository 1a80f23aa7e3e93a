package connector

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/ticket"
)

// The kinds of connector; see the package documentation. They are the
// contract's registry (contract.Lookup says what each needs); serveKind
// is how this side serves each.
const (
	KindVNC   = contract.KindVNC
	KindHTTP  = contract.KindHTTP
	KindTLS   = contract.KindTLS
	KindRNode = contract.KindRNode
)

// serveKind serves one kind on the tracked listener until ctx ends, each
// with its file's server (vnc.go, http.go, tls.go); every kind in the
// contract's registry must have one (TestEveryKindHasAServer).
var serveKind = map[contract.ConnectorKind]func(s *server, ctx context.Context, ln net.Listener) error{
	KindVNC:   (*server).serveVNCKind,
	KindHTTP:  (*server).serveHTTPKind,
	KindTLS:   (*server).serveTLS,
	KindRNode: (*server).serveRNodeKind,
}

const (
	// DefaultCookieTTL is how long the http kind's cookie stays valid when
	// Config.CookieTTL is zero: a working day, so a user who opened an app
	// in the morning is not sent back to the portal at lunch.
	DefaultCookieTTL = 12 * time.Hour

	// handshakeTimeout bounds every handshake a peer could stall: the TLS
	// handshake, HTTP request headers, and the RFB handshake on both sides.
	// Without it a client that connects and says nothing holds a goroutine
	// and a file descriptor until the session ends.
	handshakeTimeout = 10 * time.Second

	// dialTimeout bounds connecting to the workload. The target is on
	// loopback, so anything slower means it is not listening.
	dialTimeout = 10 * time.Second

	// shutdownWait bounds how long Serve waits for its goroutines after it
	// has closed every connection. They only have to notice a closed
	// socket, so reaching this means a bug, which Serve reports.
	shutdownWait = 5 * time.Second
)

// Config configures one connector. The zero value is not valid: Kind, Name,
// Session and Target are required, and Key for the vnc and http kinds.
type Config struct {
	// Kind is KindVNC, KindHTTP or KindTLS.
	Kind contract.ConnectorKind
	// Name is the connector's name. Tickets must name it.
	Name string
	// Session is the session ID. Tickets must name it.
	Session string
	// Target is the workload's address inside the seal:
	// "127.0.0.1:5901", "[::1]:80" or "unix:/path/to.sock".
	Target string
	// Key verifies tickets (vnc, http). It must not be the zero Key. The
	// tls kind ignores it.
	Key ticket.Key
	// TLS, if set, is the server side of TLS on the listener. Nil means
	// plain, which is only for UNIX-socket listeners, tests and benchmarks.
	// For the tls kind it is required and must set
	// ClientAuth to tls.RequireAndVerifyClientCert and ClientCAs to the
	// session CA. For vnc and http the ticket is the credential and client
	// certificates are not needed.
	TLS *tls.Config
	// VNCPassword (vnc only) is the workload's VNC password. When set, the
	// connector answers the server's VncAuth challenge itself and offers
	// its clients security type None, so users never see the password.
	// Like every VNC implementation, only its first 8 bytes count.
	VNCPassword string
	// IdleTimeout (vnc and tls) closes a relayed connection after no bytes
	// have moved in either direction for this long. Zero means never. The
	// http kind ignores it: it closes keep-alive connections that carry no
	// request for two minutes and leaves upgraded streams to the app.
	IdleTimeout time.Duration
	// CookieTTL (http only) is how long the cookie a ticket is exchanged
	// for stays valid. Zero means DefaultCookieTTL. The cookie is named
	// "airlock_<Session>_<Name>" (other characters than [A-Za-z0-9.-]
	// become "_"), so sessions served from one gateway origin do not
	// overwrite each other's.
	CookieTTL time.Duration
	// Secret (rnode only, required there) is the per-session secret a
	// browser posts once to the login path; at least
	// contract.MinSecretLen bytes.
	Secret string
	// CookiePath (rnode only) is the path the browser sees the connector
	// under, such as /rnode/HOST/PORT/: the cookie is scoped to it. Empty
	// means "/".
	CookiePath string
	// Logger receives every connection and every refusal. Nil means
	// slog.Default().
	Logger *slog.Logger
	// Now is the clock for ticket expiry. Nil means time.Now.
	Now func() time.Time
}

// validate checks cfg and fills its defaults. Errors name the field.
func (cfg *Config) validate() error {
	kind, ok := contract.Lookup(cfg.Kind)
	if _, served := serveKind[cfg.Kind]; !ok || !served {
		return fmt.Errorf("field Kind %q: want %s", cfg.Kind, contract.KindList())
	}
	// A ticket field holds at most MaxFieldLen bytes, so a longer name or
	// session could never be matched.
	switch {
	case cfg.Name == "":
		return errors.New("field Name: empty")
	case len(cfg.Name) > ticket.MaxFieldLen:
		return fmt.Errorf("field Name: %d bytes, limit %d", len(cfg.Name), ticket.MaxFieldLen)
	case cfg.Session == "":
		return errors.New("field Session: empty")
	case len(cfg.Session) > ticket.MaxFieldLen:
		return fmt.Errorf("field Session: %d bytes, limit %d", len(cfg.Session), ticket.MaxFieldLen)
	}
	if _, err := parseTarget(cfg.Target); err != nil {
		return fmt.Errorf("field Target %q: %w", cfg.Target, err)
	}
	if kind.Tickets && cfg.Key == (ticket.Key{}) {
		// A zero key would make every ticket check fail; say so now rather
		// than refusing every user later.
		return errors.New("field Key: not set (zero key)")
	}
	if cfg.TLS != nil && len(cfg.TLS.Certificates) == 0 && cfg.TLS.GetCertificate == nil && cfg.TLS.GetConfigForClient == nil {
		return errors.New("field TLS: no server certificate (set Certificates or GetCertificate)")
	}
	if kind.ClientCerts {
		switch {
		case cfg.TLS == nil:
			return fmt.Errorf("field TLS: required for kind %s", cfg.Kind)
		case cfg.TLS.ClientAuth != tls.RequireAndVerifyClientCert:
			return fmt.Errorf("field TLS.ClientAuth %v: kind %s requires RequireAndVerifyClientCert", cfg.TLS.ClientAuth, cfg.Kind)
		case cfg.TLS.ClientCAs == nil:
			return fmt.Errorf("field TLS.ClientCAs: required for kind %s (the session CA)", cfg.Kind)
		case cfg.TLS.GetConfigForClient != nil:
			// It could hand out a config without client authentication, and
			// Serve could not tell.
			return fmt.Errorf("field TLS.GetConfigForClient: not allowed for kind %s", cfg.Kind)
		}
	}
	switch {
	case kind.Secret && len(cfg.Secret) < contract.MinSecretLen:
		return fmt.Errorf("field Secret: %d bytes, kind %s needs at least %d", len(cfg.Secret), cfg.Kind, contract.MinSecretLen)
	case !kind.Secret && cfg.Secret != "":
		return fmt.Errorf("field Secret: not for kind %q", cfg.Kind)
	case !kind.Secret && cfg.CookiePath != "":
		return fmt.Errorf("field CookiePath: not for kind %q", cfg.Kind)
	case cfg.CookiePath != "" && (!strings.HasPrefix(cfg.CookiePath, "/") || strings.ContainsAny(cfg.CookiePath, "; \t\r\n\"\\")):
		return fmt.Errorf("field CookiePath %q: want an absolute path without ; or spaces", cfg.CookiePath)
	}
	if cfg.VNCPassword != "" && !kind.VNCPassword {
		return fmt.Errorf("field VNCPassword: not for kind %q", cfg.Kind)
	}
	if cfg.IdleTimeout < 0 {
		return fmt.Errorf("field IdleTimeout %v: negative", cfg.IdleTimeout)
	}
	if cfg.CookieTTL < 0 {
		return fmt.Errorf("field CookieTTL %v: negative", cfg.CookieTTL)
	}
	if cfg.CookieTTL == 0 {
		cfg.CookieTTL = DefaultCookieTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.TLS != nil {
		// Our own copy: the caller may not change it while we serve.
		cfg.TLS = cfg.TLS.Clone()
	}
	return nil
}

// LogValue implements slog.LogValuer. It leaves out the secrets (Key,
// VNCPassword, Secret), so a Config can be logged whole.
func (cfg Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("kind", string(cfg.Kind)),
		slog.String("name", cfg.Name),
		slog.String("session", cfg.Session),
		slog.String("target", cfg.Target),
		slog.Bool("tls", cfg.TLS != nil),
		slog.Bool("vnc_password", cfg.VNCPassword != ""),
		slog.Bool("secret", cfg.Secret != ""),
		slog.String("cookie_path", cfg.CookiePath),
		slog.Duration("idle_timeout", cfg.IdleTimeout),
		slog.Duration("cookie_ttl", cfg.CookieTTL),
	)
}

// String describes cfg without its secrets, for fmt's %v and %s.
func (cfg Config) String() string {
	return cfg.LogValue().String()
}

// target is where the workload listens.
type target struct {
	network, address string
}

func parseTarget(s string) (target, error) {
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		if !filepath.IsAbs(path) {
			return target{}, errors.New("UNIX socket path must be absolute")
		}
		return target{"unix", path}, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return target{}, fmt.Errorf("want host:port or unix:/path: %w", err)
	}
	if host == "" || port == "" {
		return target{}, errors.New("want host:port or unix:/path: host or port empty")
	}
	return target{"tcp", s}, nil
}

// Serve accepts connections on ln and bridges them to cfg.Target until ctx
// is cancelled. It validates cfg first; a bad field is reported by name.
//
// Serve owns ln and always closes it before returning. On cancellation it
// also closes every live connection, including upgraded and hijacked ones
// that an http.Server would not track, and waits (up to a few seconds) for
// the goroutines it started. It returns nil after a cancellation that tore
// everything down, and an error otherwise. Serve never calls listen.
func Serve(ctx context.Context, ln net.Listener, cfg Config) error {
	if ln == nil {
		return errors.New("serve connector: nil listener")
	}
	if err := cfg.validate(); err != nil {
		ln.Close()
		return fmt.Errorf("serve connector %q: invalid config: %w", cfg.Name, err)
	}
	tgt, _ := parseTarget(cfg.Target) // checked by validate
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &server{
		cfg:    cfg,
		target: tgt,
		conns:  make(map[io.Closer]struct{}),
		log: cmp.Or(cfg.Logger, slog.Default()).With(
			"component", "connector",
			"kind", cfg.Kind,
			"connector", cfg.Name,
			"session", cfg.Session,
		),
	}
	s.log.InfoContext(ctx, "serving", "listen_addr", ln.Addr().String(), "target", cfg.Target, "tls", cfg.TLS != nil)

	tl := &trackingListener{Listener: ln, s: s}
	err := serveKind[cfg.Kind](s, ctx, tl) // validate checked it is there
	ln.Close()
	cancel()
	err = errors.Join(err, s.closeAndWait())
	if err != nil {
		s.log.ErrorContext(ctx, "stopped", "error", err)
		return fmt.Errorf("serve connector %q: %w", cfg.Name, err)
	}
	s.log.InfoContext(ctx, "stopped")
	return nil
}

// server is the state Serve shares with its connections.
type server struct {
	cfg    Config
	target target
	log    *slog.Logger
	// guard makes tickets single-use. One guard per connector is enough:
	// a ticket names exactly one connector.
	guard ticket.ReplayGuard

	mu      sync.Mutex
	conns   map[io.Closer]struct{} // every live accepted and dialled connection
	closing bool
	wg      sync.WaitGroup // every goroutine that uses a connection
}

// register adds c to the set Serve closes on shutdown. It reports false,
// and the caller must close c itself, once shutdown has begun.
func (s *server) register(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *server) unregister(c io.Closer) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// start runs f in a goroutine that shutdown waits for. It reports false,
// without running f, once shutdown has begun.
func (s *server) start(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// enter is start for code already running in a goroutine that is not ours
// (an http.Server handler): the caller must call the returned func when done.
func (s *server) enter() (done func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil, false
	}
	s.wg.Add(1)
	return s.wg.Done, true
}

// closeAndWait closes every registered connection and waits, bounded, for
// the goroutines that use them.
func (s *server) closeAndWait() error {
	s.mu.Lock()
	s.closing = true
	conns := make([]io.Closer, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(shutdownWait)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
		return fmt.Errorf("wait for connections: still running after %v", shutdownWait)
	}
}

// dial connects to the workload and registers the connection so shutdown
// closes it. The caller must call release when done with it.
func (s *server) dial(ctx context.Context) (c net.Conn, release func(), err error) {
	d := net.Dialer{Timeout: dialTimeout}
	c, err = d.DialContext(ctx, s.target.network, s.target.address)
	if err != nil {
		return nil, nil, fmt.Errorf("dial target %s: %w", s.cfg.Target, err)
	}
	if !s.register(c) {
		c.Close()
		return nil, nil, fmt.Errorf("dial target %s: %w", s.cfg.Target, net.ErrClosed)
	}
	return c, func() {
		s.unregister(c)
		c.Close()
	}, nil
}

// trackingListener registers every accepted connection with its server, so
// shutdown can close connections that an http.Server has handed off to a
// handler (hijacked for a WebSocket) and no longer tracks.
type trackingListener struct {
	net.Listener
	s *server
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, s: l.s, start: time.Now(), logClose: l.s.cfg.Kind == KindHTTP}
	if !l.s.register(tc) {
		c.Close()
		return nil, fmt.Errorf("accept: %w", net.ErrClosed)
	}
	return tc, nil
}

// trackedConn is an accepted connection: it leaves its server's set when
// closed and counts the bytes it moves (on the wire, TLS included).
type trackedConn struct {
	net.Conn
	s     *server
	start time.Time

	in, out atomic.Int64
	// peer is the last user admitted on this connection (http kind),
	// for the log line written when it closes.
	peer atomic.Pointer[ticket.Claims]

	// logClose makes Close write the connection's log line (http kind,
	// accepted connections).
	logClose  bool
	closeOnce sync.Once

	// wmu orders writes. Between startBatch and endBatch, Write gathers
	// what it is given in batch rather than writing it (see startBatch).
	wmu      sync.Mutex
	batch    *[]byte // from batchPool while batchers > 0
	batchers int     // startBatch calls not yet ended
}

// batchSize bounds a write batch: the TLS records of one 128 KiB relay
// write (eight full records and their 22-byte overheads, plus a record
// for the first bytes of a WebSocket frame) fit. A batch that would
// grow past it is written out early.
const batchSize = 132 << 10

var batchPool = sync.Pool{New: func() any {
	b := make([]byte, 0, batchSize)
	return &b
}}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(int64(n))
	return n, err
}

func (c *trackedConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.batch == nil {
		return c.write(p)
	}
	if len(*c.batch)+len(p) > cap(*c.batch) {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > cap(*c.batch) {
			return c.write(p)
		}
	}
	*c.batch = append(*c.batch, p...)
	return len(p), nil
}

func (c *trackedConn) write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(int64(n))
	return n, err
}

// startBatch makes the writes that follow, until endBatch, leave in one
// write(2). It is for a *tls.Conn on top: crypto/tls writes each record
// of a Write with a write(2) of its own, eight for 128 KiB, and each wakes
// the peer; gathered they cost one. The batch keeps the records in the
// order crypto/tls wrote them, whichever goroutine wrote them, since every
// write takes wmu. The caller must call endBatch; batches may overlap.
//
// endBatch holds wmu while the batch goes out, so a write from another
// goroutine waits for a peer that does not read, where without batching
// it would wait on crypto/tls's own lock instead. Closing the *tls.Conn
// still ends that wait: it sets a 5 s write deadline for its
// close_notify, and coder/websocket bounds its close frame the same way.
func (c *trackedConn) startBatch() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.batchers == 0 {
		c.batch = batchPool.Get().(*[]byte)
	}
	c.batchers++
}

// endBatch writes out what has been gathered and ends one batch.
func (c *trackedConn) endBatch() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	err := c.flushLocked()
	if c.batchers--; c.batchers == 0 {
		batchPool.Put(c.batch)
		c.batch = nil
	}
	return err
}

func (c *trackedConn) flushLocked() error {
	if len(*c.batch) == 0 {
		return nil
	}
	_, err := c.write(*c.batch)
	*c.batch = (*c.batch)[:0]
	return err
}

// CloseWrite passes a half-close through, so wrapping a TCP connection
// does not hide it from http.Server and the relay.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("close write %s: %w", c.RemoteAddr(), errors.ErrUnsupported)
}

// Close closes the connection; only the first call logs and unregisters.
func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.s.unregister(c)
		if c.logClose {
			c.s.logHTTPConn(c)
		}
	})
	return err
}

// isTemporaryAccept reports whether an Accept error is worth retrying:
// running out of descriptors or memory passes, and an aborted handshake is
// the peer's problem, not the listener's.
func isTemporaryAccept(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// acceptLoop calls handle in a tracked goroutine for each connection on ln
// until ln fails for good or ctx is cancelled. It closes ln when ctx is
// cancelled so that Accept returns.
func (s *server) acceptLoop(ctx context.Context, ln net.Listener, handle func(net.Conn)) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !isTemporaryAccept(err) {
				return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
			}
			// Same back-off as net/http: retrying at once would spin while
			// the process is out of descriptors.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.WarnContext(ctx, "accept failed; retrying", "error", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		backoff = 0
		if !s.start(func() { handle(c) }) {
			c.Close()
		}
	}
}

// refusal is why a connection or request was turned away: an HTTP status,
// a reason safe to show the peer, and the cause for the log only.
type refusal struct {
	status int
	reason string
	err    error
}

// logRefusal writes the one log line every refusal gets.
func (s *server) logRefusal(ctx context.Context, remote string, rf refusal, attrs ...any) {
	args := []any{"remote_addr", remote, "reason", rf.reason}
	if rf.status != 0 {
		args = append(args, "status", rf.status)
	}
	args = append(args, attrs...)
	if rf.err != nil {
		args = append(args, "error", rf.err)
	}
	s.log.WarnContext(ctx, "refused", args...)
}

// ticketRefusal maps a ticket error to a refusal. A missing ticket is 401
// (log in and come back with one); any other bad ticket is 403. The ticket
// package promises that its error text is safe to show the peer, and it is
// more useful than a fixed string ("ticket expired: at ..., 5s ago").
func ticketRefusal(err error) refusal {
	switch {
	case errors.Is(err, ticket.ErrMissing):
		return refusal{401, "ticket missing", err}
	case errors.Is(err, ticket.ErrNoKey):
		return refusal{500, "connector misconfigured", err}
	case errors.Is(err, ticket.ErrGuardFull):
		return refusal{503, err.Error(), err}
	case errors.Is(err, ticket.ErrMalformed), errors.Is(err, ticket.ErrForged),
		errors.Is(err, ticket.ErrExpired), errors.Is(err, ticket.ErrWrongSession),
		errors.Is(err, ticket.ErrWrongConnector), errors.Is(err, ticket.ErrReplayed):
		return refusal{403, err.Error(), err}
	}
	return refusal{403, "ticket invalid", err}
}

// checkMode fails closed on a mode this connector does not know.
func checkMode(c ticket.Claims) error {
	switch c.Mode {
	case ticket.Control, ticket.View:
		return nil
	}
	return fmt.Errorf("ticket mode %q: unknown", c.Mode)
}
