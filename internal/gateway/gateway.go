// Package gateway is `airlock serve`: the one place users and admins meet
// airlock. It authenticates people (through the auth package), keeps state
// in a store.Store, launches sessions through a backend.Backend, issues a
// fresh ticket for every connection and proxies browsers to the session's
// connectors, serves the JSON API under /api/v1, the portal pages, the
// admin views, /metrics and an audit log. Errors become HTTP responses in
// one place (apiError). It never imports the runner or the seal: runners
// are separate processes that outlive a gateway restart.
package gateway

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/airlock-hpc/airlock/internal/auth"
	"github.com/airlock-hpc/airlock/internal/auth/oidc"
	"github.com/airlock-hpc/airlock/internal/auth/ratelimit"
	"github.com/airlock-hpc/airlock/internal/backend"
	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/store"
)

// Profile is something users can launch.
type Profile struct {
	Name  string
	Title string
	// Description is a sentence the launch form shows for the profile.
	Description string
	// Kind is "desktop" (Xvnc plus Programs), "app" (Command serving HTTP
	// on Port or Socket inside the seal) or "vm" (QEMU booting VM).
	Kind     string
	Geometry string     // desktop: default "1280x800"
	Depth    int        // desktop: default 24
	Programs [][]string // desktop: started in the X session; default [["xterm"]]
	Xvnc     string     // desktop: the X server to run; default "Xvnc"
	// VNCPassword (desktop): Xvnc asks for a fresh random password per
	// session, which only the connector knows (see sessions.go).
	VNCPassword bool
	// RDP (desktop): xrdp serves the desktop to native RDP clients too,
	// through the gateway's RDP port (rdp.go), and to the browser's RDP
	// client (rdpweb.go).
	RDP bool
	// RDPServer (desktop, with RDP) is the RDP server in the seal: "" or
	// RDPServerXrdp (TLS only), or RDPServerShadow (FreeRDP's shadow
	// server, NLA with a one-time password per session; rdpshadow.go).
	RDPServer string
	// Drives (browser RDP): let the client redirect drives, printers and
	// smart cards into the session. Default false.
	Drives bool
	// Kiosk (desktop): the session is one locked browser window on a
	// site instead of Programs (runner/kiosk.go).
	Kiosk *Kiosk
	// Command (app) may use {port}, {socket} and {prefix} (the URL path the
	// gateway serves the session under, ending in "/").
	Command     []string
	Port        int    // app: TCP port on 127.0.0.1 inside the seal
	Socket      string // app: or a UNIX socket path inside the seal
	StripPrefix bool   // app: remove /s/ID/app from the path before passing a request on
	// Terms, if not empty, is the text a user must accept before their
	// first launch of the profile, and again when it changes (terms.go).
	Terms string
	// Groups, if not empty, are the groups (from LDAP or an OpenID
	// provider, as of the user's last login) whose members may launch
	// the profile; nobody else sees or launches it, admins included.
	Groups []string
	// Record (desktop, vm): every viewer connection's screen is recorded
	// (recordings.go).
	Record bool
	// Clipboard (desktop, vm) is which way clipboard text may cross: the
	// console's vnc connector enforces any policy, the browser's RDP relay
	// none (rdpweb.go); "" is both.
	Clipboard contract.Clipboard
	// Defaults and maximums a launch request must stay within.
	CPUs, MaxCPUs         int
	MemoryMB, MaxMemoryMB int
	Lifetime, MaxLifetime time.Duration
	// IdleTimeout ends a session nobody has viewed for this long; 0 never.
	IdleTimeout time.Duration
	// VM (kind "vm") is the image the session boots; CPUs and MemoryMB
	// above are the guest's, within the image's maximums.
	VM *VMImage
}

// Kiosk is a kiosk desktop's site and what else its proxy lets through.
type Kiosk struct {
	URL     string
	Browser string // "" is chromium
	Allow   []string
	// CAFile is a PEM file of CAs the browser trusts, read at each launch.
	CAFile string
}

// Limits protect the node and share it fairly.
type Limits struct {
	MaxSessions        int     // active sessions in all; 0 no limit
	MaxSessionsPerUser int     // 0 no limit
	MaxLoad            float64 // 1-minute load average per CPU above which launches are refused; 0 no check
	MinFreeMemoryMB    int     // MemAvailable below which launches are refused; 0 no check
	// SingleShotGrace is how long a single-shot session outlives its last
	// viewer. Default 30s.
	SingleShotGrace time.Duration
}

// Authenticator checks a name and password (auth.Chain does).
type Authenticator interface {
	Login(ctx context.Context, user, password, remoteAddr string) (auth.Identity, error)
}

// HeaderAuthenticator believes a header from a trusted proxy (auth/header does).
type HeaderAuthenticator interface {
	FromRequest(r *http.Request) (auth.Identity, bool, error)
}

// Config is everything the gateway needs.
type Config struct {
	Listen      string // default 127.0.0.1:8443
	StateDir    string // required
	TLSCertFile string // empty: self-signed, kept in StateDir
	TLSKeyFile  string
	// MasterKeyFile holds the master key every ticket, cookie and
	// derived secret comes from, outside the state directory and the
	// store (store.master_key_file; keys.go). Empty: state_dir/master.key,
	// shared through a store that shares secrets.
	MasterKeyFile string
	Profiles      []Profile
	Limits        Limits
	// Recordings configures the recordings of profiles with Record.
	Recordings Recordings
	// RunAs is the account sessions run as when the gateway runs as root:
	// empty means the logged-in user's own account; with {user} in it, a
	// template naming one account per user ("airlock-{user}"); otherwise
	// one account for everyone (config check makes sites say they mean
	// it). Without root, sessions run as the gateway's own user.
	RunAs string
	// MakeAccount, when set, makes the account a launch runs as if it is
	// missing (AccountMaker.Ensure, for the embedded demo). An error fails
	// the launch.
	MakeAccount func(ctx context.Context, name string) error
	// Hide lists host paths holding the gateway's secrets besides StateDir
	// (password files, the TLS key, the local backend's directory, the
	// config file): every session's seal masks them and StateDir, so that a
	// session running as the gateway's own account cannot read them.
	Hide []string
	// PublicURL is the gateway's address as users reach it
	// (https://host[:port][/prefix]), for the redirect URIs sent to
	// OpenID providers (empty: each request's own host) and the e-mailed
	// login links (required with EmailLogin).
	PublicURL string
	// LoginTTL is how long a login lasts. Default 12h.
	LoginTTL time.Duration

	Store   store.Store
	Backend backend.Backend
	Auth    Authenticator
	Header  HeaderAuthenticator // optional
	// OIDC are the OpenID providers users may log in with: one button
	// each on the login page (oidc.go).
	OIDC []*oidc.Provider
	// TOTP is the second factor for password logins (totp.go).
	TOTP TOTP
	// Mailer sends the gateway's e-mails (login links, ready sessions);
	// nil: none are sent.
	Mailer Sender
	// EmailLogin, with Mailer, lets users log in by a link e-mailed to
	// them (emaillink.go).
	EmailLogin *EmailLogin
	// HeaderName is the header Header reads; the proxy removes it before a
	// request reaches a session.
	HeaderName string
	// LocalUsers is the local password file, if auth has one: on every
	// request it decides whether a user it vouched for still exists and is
	// an admin, and its removals end their viewers (see revoke.go).
	LocalUsers LocalDirectory
	// OnUserRemoved is "stop" (default) or "keep": what happens to the
	// sessions of a user removed from LocalUsers.
	OnUserRemoved string
	// UserPoll is how often LocalUsers is checked for removed users.
	// Default 1s.
	UserPoll time.Duration
	// RecheckEvery is how often the rights of open connections are looked
	// up again, for revocations another gateway made. Default 2s.
	RecheckEvery time.Duration
	// Portal serves the browser pages; nil serves only the API.
	Portal PortalRenderer
	// MetricsForLoopback serves /metrics without a login to clients on the
	// loopback interface (a Prometheus on this host); admins always may.
	MetricsForLoopback bool
	// RegisterURL is the gateway's https:// URL as runners on compute
	// nodes reach it, for a remote backend (Slurm). Required with one.
	RegisterURL string
	// ReconcileEvery is how often a remote backend's runners are compared
	// with the store. Default 1m.
	ReconcileEvery time.Duration
	// Apps says where web apps are served: on hosts of their own by
	// default (see Apps).
	Apps Apps
	// Forward configures `airlock forward` (forward.go).
	Forward Forward
	// RDPListen is the TLS port for native RDP clients (host:port);
	// empty: off. RDPAddress is the host:port clients are told to dial
	// (default: the host they reached the gateway at, RDPListen's port).
	// RDPMaxCert bounds a client certificate's life (default 12h; never
	// past the session's end).
	RDPListen  string
	RDPAddress string
	RDPMaxCert time.Duration
	// LeaseTTL is how long the background lease (lease.go) lasts
	// unrenewed on a store several gateways share: how long the
	// background work stops when its gateway dies. Default 15s.
	LeaseTTL time.Duration
	// LeaseHolder names this gateway in the lease. Default
	// host/pid/random.
	LeaseHolder string
	// PeerAddress is HOST:PORT where the other gateways sharing the store
	// reach this one (a forward's tunnel held here, peer.go). Default:
	// the listener's address, with the host's name for 0.0.0.0 or ::.
	PeerAddress string
	// AuditLog receives one JSON line per audit event besides the store.
	AuditLog io.Writer
	Logger   *slog.Logger
	Now      func() time.Time
}

// Gateway is a running gateway.
type Gateway struct {
	cfg Config
	// regRefusals bounds the audit of refused registrations (register.go).
	regRefusals registrationRefusals
	// listenHost is the host of cfg.Listen, or this host's name for a
	// wildcard address (gatewayURL).
	listenHost string
	// remote is cfg.Backend when its runners run elsewhere and register
	// (Slurm); nil for the local backend.
	remote backend.Remote
	log    *slog.Logger
	master []byte
	cert   tls.Certificate
	now    func() time.Time
	// readLoad is loadPerCPU; tests replace it to make a load limit's
	// outcome not depend on how busy the test machine is.
	readLoad func() (float64, error)

	mu       sync.Mutex
	watching map[string]context.CancelFunc
	viewers  map[string]int
	// viewerCancels ends each proxied connection at shutdown, or when
	// the right it came in by is revoked (revoke.go).
	viewerCancels map[*int]viewerEntry
	revokeHooks   []func(revokeEvent)
	lastTouch     map[string]time.Time
	auditMu       sync.Mutex
	transports    transports
	fast          fastCache // the proxy's fast path (fastpath.go)
	rpOnce        sync.Once
	rp            *httputil.ReverseProxy // reverseProxy
	appAuth       appAuth
	oidc          oidcState
	emailLinks    emailLinks
	mailq         chan mailJob
	readyMails    readyMails
	fwd           forwards
	peer          atomic.Pointer[string] // peerAddr
	closed        bool
	wg            sync.WaitGroup
	metrics       metrics
	ctx           context.Context
	cancel        context.CancelFunc

	// lease decides whether this gateway runs the background work
	// (lease.go); secrets is the store's, when it keeps keys for several
	// gateways.
	lease   *lease
	secrets store.SharedSecrets
	// seal encrypts what secrets holds when the master key lives in a
	// file of its own (nil: stored as it is; keys.go).
	seal    []byte
	bcast   store.Broadcaster // nil: no other gateway to tell (broadcast.go)
	spender store.Spender     // nil: single-use things are this gateway's alone
	// claims holds an adoption's claim on a Slurm job across gateways
	// (sessions.go adoptLaunch); nil: one gateway, whose backend's own
	// lock keeps two adoptions of a job apart.
	claims store.Leaser
	// handoffs carries e-mailed login links to another gateway (nil:
	// they stay in this one's memory).
	handoffs store.Handoffs

	// rdp is native RDP's CAs (rdp.go); nil when no profile serves RDP
	// and RDPListen is empty.
	rdp *rdpState
	// rdpWeb is browser RDP's spent tickets (rdpweb.go).
	rdpWeb rdpWebState

	// events are the open session event streams (events.go).
	events eventHub
}

// New checks cfg, loads or makes the keys and certificate, and re-attaches
// to every session the store says is alive.
func New(ctx context.Context, cfg Config) (*Gateway, error) {
	if cfg.StateDir == "" || cfg.Store == nil || cfg.Backend == nil || cfg.Auth == nil {
		return nil, errors.New("gateway: StateDir, Store, Backend and Auth are required")
	}
	cfg.Listen = cmp.Or(cfg.Listen, "127.0.0.1:8443")
	cfg.LoginTTL = cmp.Or(cfg.LoginTTL, 12*time.Hour)
	cfg.Limits.SingleShotGrace = cmp.Or(cfg.Limits.SingleShotGrace, 30*time.Second)
	cfg.ReconcileEvery = cmp.Or(cfg.ReconcileEvery, time.Minute)
	cfg.OnUserRemoved = cmp.Or(cfg.OnUserRemoved, "stop")
	cfg.UserPoll = cmp.Or(cfg.UserPoll, time.Second)
	cfg.RecheckEvery = cmp.Or(cfg.RecheckEvery, 2*time.Second)
	cfg.TOTP.defaults()
	cfg.Forward.MaxPerUser = cmp.Or(cfg.Forward.MaxPerUser, 5)
	cfg.Forward.MaxStreams = cmp.Or(cfg.Forward.MaxStreams, 256)
	cfg.Forward.Grace = cmp.Or(cfg.Forward.Grace, 2*time.Minute)
	if cfg.OnUserRemoved != "stop" && cfg.OnUserRemoved != "keep" {
		return nil, fmt.Errorf("gateway: OnUserRemoved %q: want stop or keep", cfg.OnUserRemoved)
	}
	if cfg.EmailLogin != nil && cfg.PublicURL == "" {
		return nil, errors.New("gateway: e-mail login needs PublicURL: a link built from a request's Host header would point wherever the asker says")
	}
	cfg.Apps.Domain = strings.TrimSuffix(strings.ToLower(cmp.Or(cfg.Apps.Domain, "apps.localhost")), ".")
	remote, _ := cfg.Backend.(backend.Remote)
	if remote != nil && !strings.HasPrefix(cfg.RegisterURL, "https://") {
		return nil, fmt.Errorf("gateway: backend %s needs the https:// URL runners register at (got %q)", cfg.Backend.Name(), cfg.RegisterURL)
	}
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, "sessions"), 0o700); err != nil {
		return nil, fmt.Errorf("gateway: state dir: %w", err)
	}
	secrets, _ := cfg.Store.(store.SharedSecrets)
	master, seal, err := loadMasterKey(ctx, cfg.MasterKeyFile, cfg.StateDir, secrets)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	cert, err := loadOrMakeTLS(cfg.TLSCertFile, cfg.TLSKeyFile, cfg.StateDir, cfg.Apps.Domain)
	if err == nil && secrets != nil && cfg.TLSCertFile == "" {
		// A self-signed certificate alike on every gateway, so a browser
		// sent to another one by the balancer need not be asked again.
		if _, err = shareFiles(ctx, secrets, seal, cfg.StateDir, "tls", "tls.crt", "tls.key"); err == nil {
			cert, err = loadOrMakeTLS("", "", cfg.StateDir, cfg.Apps.Domain)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g := &Gateway{
		cfg: cfg, remote: remote, master: master, cert: cert, listenHost: listenHost(cfg.Listen),
		log:      cmp.Or(cfg.Logger, slog.Default()).With("component", "gateway"),
		now:      cfg.Now,
		readLoad: loadPerCPU,
		watching: map[string]context.CancelFunc{},
		viewers:  map[string]int{},
		lease:    newLease(cfg.Store, remote != nil, cfg.LeaseHolder, cfg.LeaseTTL),
		secrets:  secrets,
		seal:     seal,
	}
	g.bcast, _ = cfg.Store.(store.Broadcaster)
	g.spender, _ = cfg.Store.(store.Spender)
	g.claims, _ = cfg.Store.(store.Leaser)
	g.handoffs, _ = cfg.Store.(store.Handoffs)
	if cfg.RDPListen != "" || servesRDP(cfg.Profiles) {
		if err := g.initRDP(); err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
	}
	// Every session update wakes that session's event streams; revoking
	// a right closes the streams it let in.
	g.cfg.Store = notifyStore{Store: cfg.Store, changed: func(id string) {
		g.fast.forgetSession(id) // before anyone is told (fastpath.go)
		g.forwardsChanged()
		g.events.changed(id)
		g.publish(peerMsg{Changed: id})
	}, state: g.sessionChanged}
	g.onRevoke(g.events.revoked)
	if g.cfg.Now == nil {
		g.now = time.Now
	}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	// App cookies are tied to the rights that made them: the events that
	// close viewers forget those too.
	g.onRevoke(g.dropAppGrants)
	if g.bcast != nil {
		g.wg.Add(1)
		go g.listenPeers()
	}
	if g.lease.shared() {
		// Other gateways may share the store: follow sessions only if
		// this one leads (the lease loop adopts them when it does).
		if _, err := g.lease.take(ctx); err != nil {
			g.log.WarnContext(ctx, "background lease: the store does not answer; trying again", "error", err)
		}
		if g.lease.leading() {
			if err := g.adopt(ctx); err != nil {
				g.cancel()
				return nil, fmt.Errorf("gateway: %w", err)
			}
		}
		g.wg.Add(1)
		go g.leaseLoop()
	} else if err := g.reattach(ctx); err != nil {
		g.cancel()
		return nil, err
	}
	g.wg.Add(1)
	go g.janitor()
	if remote != nil {
		g.wg.Add(1)
		go g.reconciler()
	}
	if cfg.LocalUsers != nil {
		g.wg.Add(1)
		go g.watchUsers()
	}
	g.wg.Add(1)
	go g.recheckViewers()
	if el := cfg.EmailLogin; el != nil {
		lim, err := ratelimit.New(ratelimit.Config{UserLimit: cmp.Or(el.PerAddress, 3), AddrLimit: cmp.Or(el.PerClient, 10), Window: cmp.Or(el.Window, 15*time.Minute)})
		if err != nil {
			g.Close()
			return nil, fmt.Errorf("gateway: e-mail login: %w", err)
		}
		g.emailLinks.lim = lim
	}
	g.startMailer()
	g.wg.Add(1)
	go g.forwardJanitor()
	g.wg.Add(1)
	go g.recordingJanitor()
	return g, nil
}

// Serve serves HTTPS on ln until ctx ends, then shuts down. Serve closes ln.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	if a := peerAddress(g.cfg.PeerAddress, ln.Addr()); a != "" {
		g.peer.Store(&a)
	}
	srv := &http.Server{
		Handler: g.Handler(),
		// Without these a client that opens connections and sends nothing
		// holds goroutines and descriptors forever.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{g.cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}},
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
	}
	// Event streams never end by themselves; Shutdown waits for them.
	srv.RegisterOnShutdown(g.events.close)
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Shutdown does not wait for hijacked (WebSocket) connections; the
	// proxy tracks and closes those itself.
	err := srv.Shutdown(sctx)
	g.closeViewers()
	return err
}

// Close stops watching sessions (they keep running) and waits. It is safe
// to call twice.
func (g *Gateway) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return fmt.Errorf("gateway: %w", net.ErrClosed)
	}
	g.closed = true
	g.mu.Unlock()
	g.cancel()
	g.wg.Wait()
	return nil
}

// listenHost is the host of the listen address, or this host's name for a
// wildcard address.
func listenHost(listen string) string {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		host = listen
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host, _ = os.Hostname()
	}
	return host
}

// gatewayURL is the gateway's https:// address as the visitor of r (a
// request on an app host) reaches it: PublicURL when set; else the host
// the gateway listens on with r's port, which is the listener's port as
// the visitor sees it (app hosts are served on the same listener), so a
// listener on port 0 or behind a port mapping is still found.
func (g *Gateway) gatewayURL(r *http.Request) string {
	if g.cfg.PublicURL != "" {
		return strings.TrimSuffix(g.cfg.PublicURL, "/")
	}
	if _, port, err := net.SplitHostPort(r.Host); err == nil && port != "443" {
		return "https://" + net.JoinHostPort(g.listenHost, port)
	}
	if strings.Contains(g.listenHost, ":") {
		return "https://[" + g.listenHost + "]"
	}
	return "https://" + g.listenHost
}
