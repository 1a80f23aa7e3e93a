package cli

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/airlock-hpc/airlock/internal/auth"
	"github.com/airlock-hpc/airlock/internal/auth/header"
	"github.com/airlock-hpc/airlock/internal/auth/ldap"
	"github.com/airlock-hpc/airlock/internal/auth/local"
	"github.com/airlock-hpc/airlock/internal/auth/mail"
	"github.com/airlock-hpc/airlock/internal/auth/oidc"
	"github.com/airlock-hpc/airlock/internal/auth/ratelimit"
	"github.com/airlock-hpc/airlock/internal/backend"
	kubebackend "github.com/airlock-hpc/airlock/internal/backend/kubernetes"
	backendlocal "github.com/airlock-hpc/airlock/internal/backend/local"
	"github.com/airlock-hpc/airlock/internal/backend/slurm"
	"github.com/airlock-hpc/airlock/internal/config"
	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/gateway"
	"github.com/airlock-hpc/airlock/internal/mailer"
	"github.com/airlock-hpc/airlock/internal/portal"
)

// loadConfig reads FILE (or the embedded defaults), applies the flags and
// resolves paths.
func loadConfig(path, listen, stateDir string) (config.Config, error) {
	cfg := config.Default()
	if path != "" {
		var err error
		if cfg, err = config.Load(path); err != nil {
			return cfg, err
		}
	}
	if err := cfg.ApplyFlags(listen, stateDir); err != nil {
		return cfg, err
	}
	if err := cfg.ResolvePaths(os.Getenv); err != nil {
		return cfg, err
	}
	return cfg, nil
}

func cmdServe(_ context.Context, env *Env, args []string) int {
	fs := newFlags(env, "serve", "[--config FILE] [--listen ADDR] [--state-dir DIR] [--demo]")
	cfgPath := fs.String("config", "", "airlock.yaml to read; without it the embedded defaults run a complete demo (see 'airlock config defaults')")
	listen := fs.String("listen", "", "HTTPS address host:port, overriding the file's listen (default 127.0.0.1:8443)")
	stateDir := fs.String("state-dir", "", "state directory, overriding the file's state_dir (default $XDG_STATE_HOME/airlock)")
	demo := fs.Bool("demo", false, "add the demo's Jupyter and VM profiles to the file's (what the embedded defaults always do)")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	cfg, err := loadConfig(*cfgPath, *listen, *stateDir)
	if err != nil {
		return fail(env, "%v", err)
	}
	log, err := newLogger(env.Stderr, cfg.Log)
	if err != nil {
		return fail(env, "%v", err)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fail(env, "state dir: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *cfgPath == "" || *demo {
		// The embedded demo shows every kind its machine can run.
		addDemoProfiles(ctx, &cfg, os.Getenv, log)
	}

	db, err := openStore(ctx, cfg, log, true)
	if err != nil {
		return fail(env, "%v", err)
	}
	defer db.Close()
	chain, hdr, err := authFromConfig(env, cfg, log)
	if err != nil {
		return fail(env, "%v", err)
	}
	if b, ok := db.(ratelimit.Buckets); ok {
		// Several gateways: failed logins count against one budget
		// across them (the store's), each gateway's own under it.
		if chain.Limiter, err = ratelimit.NewShared(rateLimitConfig(cfg), b, log); err != nil {
			return fail(env, "%v", err)
		}
	}
	providers, err := oidcFromConfig(cfg, log)
	if err != nil {
		return fail(env, "%v", err)
	}
	mailer, emailLogin, err := mailFromConfig(cfg)
	if err != nil {
		return fail(env, "%v", err)
	}
	be, registerURL, err := backendFromConfig(cfg, log)
	if err != nil {
		return fail(env, "%v", err)
	}
	if c, ok := be.(io.Closer); ok {
		// After the gateway's Close (deferred later, so run first), which
		// ends the watches; this stops the backend's own poller.
		defer func() {
			if err := c.Close(); err != nil {
				log.Error("close the backend", "error", err)
			}
		}()
	}
	p, err := portal.New()
	if err != nil {
		return fail(env, "%v", err)
	}
	gcfg := gatewayConfig(cfg, *cfgPath, registerURL)
	gcfg.Store, gcfg.Backend, gcfg.Auth, gcfg.Portal, gcfg.Logger = db, be, chain, p, log
	// The first local password file is where `airlock users` edits: the
	// gateway asks it on every request whether a user still exists.
	for _, a := range chain.Authenticators {
		if f, ok := a.(*local.File); ok {
			gcfg.LocalUsers = f
			break
		}
	}
	if hdr != nil {
		gcfg.Header = hdr
	}
	gcfg.OIDC = providers
	if mailer != nil {
		gcfg.Mailer, gcfg.EmailLogin = mailer, emailLogin
	}
	if os.Geteuid() == 0 && gcfg.RunAs == "" && *cfgPath == "" {
		// The embedded demo's users are not Unix accounts: as root, make
		// one for each on their first launch.
		gateway.UseDemoAccounts(&gcfg)
	}
	if cfg.AuditLog != "" {
		f, err := os.OpenFile(cfg.AuditLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return fail(env, "audit log: %v", err)
		}
		defer f.Close()
		gcfg.AuditLog = f
	}
	g, err := gateway.New(ctx, gcfg)
	if err != nil {
		return fail(env, "%v", err)
	}
	defer g.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fail(env, "listen %s: %v", cfg.Listen, err)
	}
	fmt.Fprintf(env.Stdout, "airlock gateway: https://%s/ (state in %s)\n", ln.Addr(), cfg.StateDir)
	if cfg.RDP.Listen != "" {
		rln, err := net.Listen("tcp", cfg.RDP.Listen)
		if err != nil {
			return fail(env, "rdp.listen %s: %v", cfg.RDP.Listen, err)
		}
		fmt.Fprintf(env.Stdout, "airlock gateway: RDP clients on %s\n", rln.Addr())
		go func() {
			if err := g.ServeRDP(ctx, rln); err != nil {
				fmt.Fprintf(env.Stderr, "airlock: rdp: %v\n", err)
			}
		}()
	}
	if err := g.Serve(ctx, ln); err != nil && !errors.Is(err, net.ErrClosed) {
		return fail(env, "%v", err)
	}
	return 0
}

// gatewayConfig is the gateway's configuration from the file's, without
// what runs (store, backend, authenticators, portal, logger, audit log
// file): every key the gateway reads goes through here, which the key-walk
// test (TestEveryConfigKeyIsUsed) checks.
func gatewayConfig(cfg config.Config, cfgPath, registerURL string) gateway.Config {
	gcfg := gateway.Config{
		Listen: cfg.Listen, StateDir: cfg.StateDir, TLSCertFile: cfg.TLS.CertFile, TLSKeyFile: cfg.TLS.KeyFile,
		MasterKeyFile: cfg.Store.MasterKeyFile, PeerAddress: cfg.Store.PeerAddress,
		Apps:      gateway.Apps{Domain: cfg.Apps.Domain, SameOrigin: cfg.Apps.SameOrigin},
		PublicURL: cfg.PublicURL, RunAs: cfg.RunAs, LoginTTL: cfg.Auth.SessionTTL, OnUserRemoved: cfg.Auth.OnUserRemoved, RegisterURL: registerURL,
		ReconcileEvery: reconcileEvery(cfg), MetricsForLoopback: cfg.Metrics.Enabled,
		RDPListen: cfg.RDP.Listen, RDPAddress: cfg.RDP.Address, RDPMaxCert: cfg.RDP.MaxCertLifetime,
		Limits: gateway.Limits{
			MaxSessions: cfg.Limits.MaxSessions, MaxSessionsPerUser: cfg.Limits.MaxSessionsPerUser, MaxLoad: cfg.Limits.MaxLoad,
			MinFreeMemoryMB: int(cfg.Limits.MinFreeMemory / config.MiB), SingleShotGrace: cfg.Limits.SingleShotGrace,
		},
		Forward: gateway.Forward{MaxPerUser: cfg.Forward.MaxPerUser, BytesPerSecond: int64(cfg.Forward.BytesPerSecond),
			MaxStreams: cfg.Forward.MaxStreams, Grace: cfg.Forward.Grace},
		Hide: secretPaths(cfg, cfgPath),
		TOTP: gateway.TOTP{Issuer: cfg.Auth.TOTP.Issuer, RequiredGroups: cfg.Auth.TOTP.RequiredGroups, MaxFailures: cfg.Auth.TOTP.MaxFailures,
			Window: cfg.Auth.TOTP.Window, PendingTTL: cfg.Auth.TOTP.PendingTTL},
		Recordings: gateway.Recordings{Dir: cfg.Recordings.Dir, Retention: cfg.Recordings.Retention, MaxBytes: int64(cfg.Recordings.MaxSize)},
	}
	if gcfg.Forward.MaxPerUser == 0 {
		gcfg.Forward.MaxPerUser = -1 // the file's 0 is "off"; the gateway's 0 is "default"
	}
	for _, m := range cfg.Auth.Methods {
		if m.Kind == "header" {
			gcfg.HeaderName = m.Header
		}
	}
	for _, pr := range cfg.Profiles {
		gcfg.Profiles = append(gcfg.Profiles, withImage(profileFromConfig(pr), pr, cfg.Images))
	}
	return gcfg
}

// secretPaths lists what every session's seal hides besides the state
// directory: files holding the gateway's secrets (the master key file, password files, the
// OpenID client secret, the mail relay's password, the kubeconfig), the recordings when
// they are kept elsewhere (recordings.dir), the local backend's
// session directories (specs, ticket keys, sockets), the audit log and
// the config file itself (it names the rest, and sites keep notes in it).
func secretPaths(cfg config.Config, cfgPath string) []string {
	paths := []string{cfg.TLS.KeyFile, cfg.AuditLog, cfg.Store.PasswordFile, cfg.Store.MasterKeyFile, cfg.Recordings.Dir}
	if cfg.Backend.Kind != "slurm" && cfg.Backend.Local != nil {
		paths = append(paths, cfg.Backend.Local.Dir)
	}
	if cfgPath != "" {
		paths = append(paths, cfgPath)
	}
	for _, m := range cfg.Auth.Methods {
		paths = append(paths, m.File, m.ClientSecretFile)
		if m.Search != nil {
			paths = append(paths, m.Search.BindPasswordFile)
		}
	}
	if cfg.Mail != nil {
		paths = append(paths, cfg.Mail.PasswordFile)
	}
	if cfg.Backend.Kubernetes != nil {
		// The gateway's credentials to the cluster.
		paths = append(paths, cfg.Backend.Kubernetes.Kubeconfig)
	}
	var out []string
	for _, p := range paths {
		if p == "" {
			continue
		}
		if abs, err := filepath.Abs(p); err == nil {
			out = append(out, abs)
		}
	}
	return out
}

// backendFromConfig makes the configured backend and, for Slurm, the URL
// its runners register at.
func backendFromConfig(cfg config.Config, log *slog.Logger) (backend.Backend, string, error) {
	switch cfg.Backend.Kind {
	case "slurm":
		sc := cfg.Backend.Slurm
		bc := slurm.Config{
			Airlock: sc.Airlock, Partition: sc.Partition, Account: sc.Account, QOS: sc.QOS, SbatchArgs: sc.SbatchArgs,
			NodeAddress: sc.NodeAddress, Output: sc.Output, Poll: sc.Poll, JobPrefix: sc.JobPrefix, Logger: log, Profiles: map[string]slurm.JobOptions{},
		}
		for _, p := range cfg.Profiles {
			if p.Slurm != nil {
				bc.Profiles[p.Name] = slurm.JobOptions{Partition: p.Slurm.Partition, Account: p.Slurm.Account, QOS: p.Slurm.QOS, SbatchArgs: p.Slurm.SbatchArgs}
			}
		}
		be, err := slurm.New(bc)
		if err != nil {
			return nil, "", err
		}
		u, err := registerURL(cfg, sc.GatewayURL)
		if err != nil {
			return nil, "", err
		}
		return be, u, nil
	case "kubernetes":
		kc := cfg.Backend.Kubernetes
		u, err := registerURL(cfg, kc.GatewayURL)
		if err != nil {
			return nil, "", err
		}
		bc, err := kubernetesConfig(cfg, u, log)
		if err != nil {
			return nil, "", err
		}
		be, err := kubebackend.New(bc)
		if err != nil {
			return nil, "", err
		}
		return be, u, nil
	default:
		be, err := backendlocal.New(backendlocal.Config{Dir: cfg.Backend.Local.Dir, Exe: cfg.Backend.Local.Airlock, Logger: log})
		return be, "", err
	}
}

// registerURL is where a remote backend's runners register: the
// backend's gateway_url, public_url, or this machine's name and listen's
// port.
func registerURL(cfg config.Config, gatewayURL string) (string, error) {
	if u := cmp.Or(gatewayURL, cfg.PublicURL); u != "" {
		return u, nil
	}
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("backend %s: gateway_url is empty and the host name is unknown: %w", cfg.Backend.Kind, err)
	}
	_, port, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return "", fmt.Errorf("backend %s: listen %q: %w", cfg.Backend.Kind, cfg.Listen, err)
	}
	return "https://" + net.JoinHostPort(host, port), nil
}

// kubernetesConfig is the Kubernetes backend's configuration; the
// policy's egress to the gateway is to registerURL's port.
func kubernetesConfig(cfg config.Config, registerURL string, log *slog.Logger) (kubebackend.Config, error) {
	kc := cfg.Backend.Kubernetes
	u, err := url.Parse(registerURL)
	if err != nil {
		return kubebackend.Config{}, fmt.Errorf("backend kubernetes: gateway url %q: %w", registerURL, err)
	}
	port, _ := strconv.Atoi(cmp.Or(u.Port(), "443"))
	bc := kubebackend.Config{
		Kubeconfig: kc.Kubeconfig, Context: kc.Context, Namespace: kc.Namespace, Image: kc.Image, Airlock: kc.Airlock,
		ServiceAccount: kc.ServiceAccount, Prefix: kc.Prefix, GatewayCIDRs: kc.GatewayCIDRs, GatewayPort: port,
		Egress: kc.Egress, UID: int64(kc.UID), GID: int64(kc.GID), GracePeriod: kc.GracePeriod,
		Resync: kc.Reconcile, Service: kc.Service, Profiles: map[string]kubebackend.PodOptions{}, Logger: log,
	}
	for _, p := range cfg.Profiles {
		k := p.Kubernetes
		if k == nil {
			continue
		}
		o := kubebackend.PodOptions{Image: k.Image, ServiceAccount: k.ServiceAccount, RuntimeClass: k.RuntimeClass,
			Egress: k.Egress, WritableRoot: k.WritableRoot}
		for _, kv := range k.NodeSelector {
			key, val, _ := strings.Cut(kv, "=")
			if o.NodeSelector == nil {
				o.NodeSelector = map[string]string{}
			}
			o.NodeSelector[key] = val
		}
		for _, t := range k.Tolerations {
			o.Tolerations = append(o.Tolerations, kubebackend.Toleration{Key: t.Key, Operator: t.Operator, Value: t.Value, Effect: t.Effect})
		}
		for _, v := range k.Volumes {
			o.Volumes = append(o.Volumes, kubebackend.Volume{Claim: v.Claim, MountPath: v.MountPath, SubPath: v.SubPath, ReadOnly: v.ReadOnly})
		}
		bc.Profiles[p.Name] = o
	}
	return bc, nil
}

func reconcileEvery(cfg config.Config) time.Duration {
	switch {
	case cfg.Backend.Slurm != nil && cfg.Backend.Kind == "slurm":
		return cfg.Backend.Slurm.Reconcile
	case cfg.Backend.Kubernetes != nil && cfg.Backend.Kind == "kubernetes":
		return cfg.Backend.Kubernetes.Reconcile
	}
	return 0
}

func newLogger(w io.Writer, l config.Log) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.Level)); err != nil {
		return nil, fmt.Errorf("log level %q: %v", l.Level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

func profileFromConfig(p config.Profile) gateway.Profile {
	g := gateway.Profile{
		Name: p.Name, Title: p.Title, Description: p.Description, Kind: p.Kind,
		CPUs: p.CPUs.Default, MaxCPUs: p.CPUs.Max,
		MemoryMB: int(p.Memory.Default / config.MiB), MaxMemoryMB: int(p.Memory.Max / config.MiB),
		Lifetime: p.Lifetime.Default, MaxLifetime: p.Lifetime.Max, IdleTimeout: p.IdleTimeout.Default,
		Groups: p.Groups, Terms: p.Terms, Clipboard: contract.Clipboard(p.Clipboard), Record: p.Record,
	}
	if d := p.Desktop; d != nil {
		g.Geometry, g.Depth, g.Programs, g.Xvnc, g.VNCPassword, g.RDP = d.Geometry, d.Depth, d.Programs, d.Xvnc, d.VNCPassword, d.RDP
		g.Drives, g.RDPServer = d.Drives, d.RDPServer
		if k := d.Kiosk; k != nil {
			g.Kiosk = &gateway.Kiosk{URL: k.URL, Browser: k.Browser, Allow: k.Allow, CAFile: k.CAFile}
		}
	}
	if a := p.App; a != nil {
		g.Command, g.Port, g.Socket, g.StripPrefix = a.Command, a.Port, a.Socket, a.StripPrefix
	}
	return g
}

// rateLimitConfig is auth.rate_limit for the limiter.
func rateLimitConfig(cfg config.Config) ratelimit.Config {
	return ratelimit.Config{UserLimit: cfg.Auth.RateLimit.PerUser, AddrLimit: cfg.Auth.RateLimit.PerAddress, Window: cfg.Auth.RateLimit.Window}
}

// authFromConfig builds the login chain (and the header authenticator) in
// the configured order. With a local password file that has no users, it
// makes "demo" with a random password and prints it once.
func authFromConfig(env *Env, cfg config.Config, log *slog.Logger) (*auth.Chain, *header.Header, error) {
	lim, err := ratelimit.New(rateLimitConfig(cfg))
	if err != nil {
		return nil, nil, err
	}
	chain := &auth.Chain{Limiter: lim, Logger: log}
	var hdr *header.Header
	for i, m := range cfg.Auth.Methods {
		switch m.Kind {
		case "local":
			f, err := local.New(local.Config{Path: m.File, Logger: log})
			if err != nil {
				return nil, nil, fmt.Errorf("auth.methods[%d]: %w", i, err)
			}
			if users, err := f.List(); err == nil && len(users) == 0 {
				pw := randomPassword()
				if err := f.Add("demo", []byte(pw), true); err != nil {
					return nil, nil, fmt.Errorf("make demo user: %w", err)
				}
				fmt.Fprintf(env.Stdout, "airlock: no users yet: created user \"demo\" (an admin) with password %s\n", pw)
				fmt.Fprintf(env.Stdout, "         it is shown only now; add users with: airlock users add NAME --password-stdin\n")
			}
			if m.MailTemplate != "" {
				chain.Authenticators = append(chain.Authenticators, auth.MailFromTemplate{PasswordAuthenticator: f, Template: m.MailTemplate})
			} else {
				chain.Authenticators = append(chain.Authenticators, f)
			}
		case "ldap":
			lc := ldap.Config{URL: m.URL, StartTLS: m.StartTLS, RootCAs: m.CAFile, BindDN: m.BindDNTemplate, AdminGroup: m.AdminGroup,
				GroupsBaseDN: m.GroupsBaseDN, MailAttribute: m.MailAttribute,
				Timeout: m.Timeout, Logger: log}
			if s := m.Search; s != nil {
				lc.BaseDN, lc.Filter, lc.SearchBindDN = s.BaseDN, s.Filter, s.BindDN
				if s.BindPasswordFile != "" {
					pw, err := readSecret(fmt.Sprintf("auth.methods[%d].search.bind_password_file", i), s.BindPasswordFile)
					if err != nil {
						return nil, nil, err
					}
					lc.SearchBindPassword = ldap.Password(pw)
				}
			}
			a, err := ldap.New(lc)
			if err != nil {
				return nil, nil, fmt.Errorf("auth.methods[%d]: %w", i, err)
			}
			chain.Authenticators = append(chain.Authenticators, a)
		case "imap", "smtp":
			minTLS, ok := config.TLSVersions[m.MinTLS]
			if !ok {
				return nil, nil, fmt.Errorf("auth.methods[%d].min_tls: %q is no TLS version", i, m.MinTLS)
			}
			s, err := mail.New(mail.Config{URL: m.URL, RootCAs: m.CAFile, MinTLS: minTLS, Login: m.Login,
				AdminUsers: m.AdminUsers, Timeout: m.Timeout, Logger: log})
			if err != nil {
				return nil, nil, fmt.Errorf("auth.methods[%d]: %w", i, err)
			}
			chain.Authenticators = append(chain.Authenticators, s)
		case "header":
			hc := header.Config{Header: m.Header, AdminUsers: m.AdminUsers}
			for _, p := range m.TrustedProxies {
				pf, err := netip.ParsePrefix(p)
				if err != nil {
					a, aerr := netip.ParseAddr(p)
					if aerr != nil {
						return nil, nil, fmt.Errorf("auth.methods[%d].trusted_proxies: %q: %w", i, p, err)
					}
					pf = netip.PrefixFrom(a, a.BitLen())
				}
				hc.TrustedProxies = append(hc.TrustedProxies, pf)
			}
			h, err := header.New(hc)
			if err != nil {
				return nil, nil, fmt.Errorf("auth.methods[%d]: %w", i, err)
			}
			hdr = h
		}
	}
	return chain, hdr, nil
}

// oidcFromConfig makes the OpenID providers, in the configured order (the
// login page's buttons). None is contacted yet: a provider that is down
// does not stop the gateway, only logins through it.
func oidcFromConfig(cfg config.Config, log *slog.Logger) ([]*oidc.Provider, error) {
	var out []*oidc.Provider
	for i, m := range cfg.Auth.Methods {
		if m.Kind != "oidc" {
			continue
		}
		oc := oidc.Config{Name: m.Name, Title: m.Title, Issuer: m.Issuer, ClientID: m.ClientID, Scopes: m.Scopes,
			UserClaim: m.UserClaim, UserDomain: m.UserDomain, GroupsClaim: m.GroupsClaim,
			AdminGroups: m.AdminGroups, AdminUsers: m.AdminUsers, Logger: log}
		if m.ClientSecretFile != "" {
			var err error
			if oc.ClientSecret, err = readSecret(fmt.Sprintf("auth.methods[%d].client_secret_file", i), m.ClientSecretFile); err != nil {
				return nil, err
			}
		}
		p, err := oidc.New(oc)
		if err != nil {
			return nil, fmt.Errorf("auth.methods[%d]: %w", i, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// mailFromConfig makes the mail relay's client and the e-mailed login
// links' settings (nil without a mail block or an email method).
func mailFromConfig(cfg config.Config) (*mailer.Mailer, *gateway.EmailLogin, error) {
	mc := cfg.Mail
	if mc == nil {
		return nil, nil, nil
	}
	minTLS, ok := config.TLSVersions[mc.MinTLS]
	if !ok {
		return nil, nil, fmt.Errorf("mail.min_tls: %q is no TLS version", mc.MinTLS)
	}
	c := mailer.Config{URL: mc.Relay, RootCAs: mc.CAFile, MinTLS: minTLS, From: mc.From, User: mc.User, Timeout: mc.Timeout}
	if mc.PasswordFile != "" {
		var err error
		if c.Password, err = readSecret("mail.password_file", mc.PasswordFile); err != nil {
			return nil, nil, err
		}
	}
	m, err := mailer.New(c)
	if err != nil {
		return nil, nil, fmt.Errorf("mail: %w", err)
	}
	var el *gateway.EmailLogin
	for _, am := range cfg.Auth.Methods {
		if am.Kind == "email" {
			el = &gateway.EmailLogin{Domains: am.Domains, TTL: am.LinkTTL, AdminUsers: am.AdminUsers,
				PerAddress: am.PerAddress, PerClient: am.PerClient, Window: am.Window}
			break
		}
	}
	return m, el, nil
}

// readSecret reads the secret in the file at path, which config key
// names, without its trailing newline.
func readSecret(key, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", key, err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

func randomPassword() string {
	b := make([]byte, 12)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

const usersUsage = "usage: airlock users add NAME --password-stdin [--admin] | list | remove NAME | passwd NAME --password-stdin | role NAME admin|user | totp-reset NAME   [--config FILE] [--state-dir DIR]"

// cmdUsers edits the local password file. A running gateway sees every
// change on the next request: removal and a change of role take effect at
// once (see the gateway's revoke.go).
func cmdUsers(ctx context.Context, env *Env, args []string) int {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprintln(env.Stderr, usersUsage)
		return 0
	}
	if len(args) == 0 || (args[0] != "add" && args[0] != "list" && args[0] != "remove" && args[0] != "passwd" && args[0] != "role" && args[0] != "totp-reset") {
		fmt.Fprintln(env.Stderr, usersUsage)
		return 2
	}
	verb := args[0]
	fs := newFlags(env, "users "+verb, "[NAME] [flags]")
	cfgPath := fs.String("config", "", "airlock.yaml whose first local auth method names the password file")
	stateDir := fs.String("state-dir", "", "state directory (default $XDG_STATE_HOME/airlock)")
	stdin := fs.Bool("password-stdin", false, "read the password from the first line of standard input (required for add and passwd)")
	admin := fs.Bool("admin", false, "add: the user is an airlock admin")
	rest := args[1:]
	var name, role string
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		name, rest = rest[0], rest[1:]
	}
	if verb == "role" && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		role, rest = rest[0], rest[1:]
	}
	if c := parse(fs, rest); c >= 0 {
		return c
	}
	cfg, err := loadConfig(*cfgPath, "", *stateDir)
	if err != nil {
		return fail(env, "%v", err)
	}
	if verb == "totp-reset" {
		return usersTOTPReset(ctx, env, cfg, name)
	}
	file := ""
	for _, m := range cfg.Auth.Methods {
		if m.Kind == "local" {
			file = m.File
			break
		}
	}
	if file == "" {
		return fail(env, "the configuration has no local auth method")
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return fail(env, "%v", err)
	}
	f, err := local.Open(file)
	if err != nil {
		return fail(env, "%v", err)
	}
	readPW := func() ([]byte, bool) {
		if !*stdin {
			fmt.Fprintln(env.Stderr, "airlock: --password-stdin is required (passwords never go on the command line)")
			return nil, false
		}
		b, _ := io.ReadAll(io.LimitReader(env.Stdin, 4096))
		line, _, _ := strings.Cut(string(b), "\n")
		return []byte(strings.TrimRight(line, "\r")), true
	}
	switch verb {
	case "list":
		users, err := f.List()
		if err != nil {
			return fail(env, "%v", err)
		}
		for _, u := range users {
			role := "user"
			if u.Admin {
				role = "admin"
			}
			fmt.Fprintf(env.Stdout, "%s\t%s\n", u.Name, role)
		}
		return 0
	case "remove":
		if err := f.Remove(name); err != nil {
			return fail(env, "%v", err)
		}
		return 0
	case "role":
		if name == "" || (role != "admin" && role != "user") {
			fmt.Fprintln(env.Stderr, "usage: airlock users role NAME admin|user")
			return 2
		}
		if err := f.SetAdmin(name, role == "admin"); err != nil {
			return fail(env, "%v", err)
		}
		return 0
	}
	if name == "" {
		return fail(env, "users %s: name a user", verb)
	}
	pw, ok := readPW()
	if !ok {
		return 2
	}
	if verb == "add" {
		err = f.Add(name, pw, *admin)
	} else {
		err = f.SetPassword(name, pw)
	}
	if err != nil {
		return fail(env, "%v", err)
	}
	return 0
}

func cmdConfig(_ context.Context, env *Env, args []string) int {
	const use = "usage: airlock config check FILE | airlock config defaults | airlock config ood-form FILE (the profiles for the OnDemand app's form)"
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprintln(env.Stderr, use)
		return 0
	}
	if len(args) == 0 || (args[0] != "check" && args[0] != "defaults" && args[0] != "ood-form") {
		fmt.Fprintln(env.Stderr, use)
		return 2
	}
	if args[0] == "defaults" {
		env.Stdout.Write(config.DefaultsYAML())
		return 0
	}
	if len(args) != 2 {
		fmt.Fprintln(env.Stderr, use)
		return 2
	}
	if args[0] == "ood-form" {
		cfg, err := config.Load(args[1])
		if err != nil {
			fmt.Fprintln(env.Stderr, err)
			return 1
		}
		env.Stdout.Write(oodForm(cfg, args[1]))
		return 0
	}
	if err := config.Check(args[1]); err != nil {
		fmt.Fprintln(env.Stderr, err)
		return 1
	}
	fmt.Fprintf(env.Stdout, "%s: ok\n", args[1])
	return 0
}
