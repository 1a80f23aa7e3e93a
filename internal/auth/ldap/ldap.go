// Package ldap checks passwords by binding to an LDAP directory (OpenLDAP,
// 389 Directory Server, FreeIPA, Active Directory) as the user, and can
// make members of one group admins. It implements
// auth.PasswordAuthenticator as the method "ldap".
//
// It opens one connection per login and keeps none, so a directory that
// restarts costs nothing but the logins in flight. It never writes to the
// directory, never logs or keeps passwords, and knows nothing of sessions
// or HTTP.
//
// # Finding the user's DN
//
// Either a template (Config.BindDN, e.g. "uid={user},ou=people,dc=example,dc=org"),
// or search-then-bind: bind as a service account (or anonymously), search
// Config.BaseDN with Config.Filter (e.g. "(uid={user})"), require exactly
// one entry, and bind as it. The user name is escaped for a DN (RFC 4514)
// or a filter (RFC 4515) before it is substituted for {user}, although the
// names auth.ValidateUserName allows need no escaping at all: both layers
// must fail for an injection to work.
//
// # Empty passwords
//
// A simple bind with a DN and an empty password is an "unauthenticated
// bind" (RFC 4513 §5.1.2): many servers, Active Directory among them,
// answer it with success without checking anything. Authenticate refuses
// an empty password before it connects.
//
// # Admins
//
// With Config.AdminGroup set, a user is an admin if a base-scope search of
// that group entry with the filter (|(member=DN)(uniqueMember=DN)) finds
// it, where DN is the user's DN: groupOfNames and groupOfUniqueNames
// groups (OpenLDAP, 389 DS, FreeIPA, Active Directory) work; posixGroup
// memberUid lists do not, and nested groups are not followed. The search
// runs bound as the user, who must be allowed to read the group's member
// attribute (most directories' default). A group that is missing or
// unreadable makes nobody an admin, and is logged.
package ldap

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/airlock-hpc/airlock/internal/auth"
)

// Method is the name reported in Identity.Method.
const Method = "ldap"

// maxPasswordLen bounds what is sent to the server.
const maxPasswordLen = 1024

// Password is a secret that prints and logs as "REDACTED", so a Config can
// be logged or printed whole.
type Password string

const redacted = "REDACTED"

func (Password) String() string { return redacted }

// GoString is for %#v.
func (Password) GoString() string { return `"` + redacted + `"` }

// Format makes every fmt verb, %x and %q included, print "REDACTED".
func (Password) Format(f fmt.State, verb rune) { fmt.Fprint(f, redacted) }

// LogValue implements slog.LogValuer.
func (Password) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText keeps the secret out of JSON and YAML dumps of a Config.
func (Password) MarshalText() ([]byte, error) { return []byte(redacted), nil }

func (p Password) reveal() string { return string(p) }

// Config configures an [Authenticator]. Set either BindDN, or BaseDN and
// Filter (search-then-bind).
type Config struct {
	// URL of the server: ldap://host[:389] or ldaps://host[:636].
	URL string
	// StartTLS upgrades an ldap:// connection to TLS before anything is
	// sent. Without it (or ldaps://), passwords cross the network in
	// clear; New logs a warning for such a URL to a non-loopback host.
	StartTLS bool
	// RootCAs is a PEM file of the CAs to trust for the server's
	// certificate. Default: the system's roots.
	RootCAs string

	// BindDN is the template of a user's DN; "{user}" is replaced with
	// the user name, escaped for a DN.
	BindDN string

	// BaseDN is where search-then-bind looks for users (whole subtree).
	BaseDN string
	// Filter finds a user; "{user}" is replaced with the user name,
	// escaped for a filter. It must match exactly one entry: none is a
	// wrong name, several are refused and logged.
	Filter string
	// SearchBindDN and SearchBindPassword are the service account that
	// searches. Empty: search anonymously.
	SearchBindDN       string
	SearchBindPassword Password

	// AdminGroup is the DN of a group whose members are admins. Empty:
	// nobody is an admin through LDAP.
	AdminGroup string
	// GroupsBaseDN, if set, is where the user's groups are found (whole
	// subtree): every groupOfNames or groupOfUniqueNames naming the user's
	// DN as member or uniqueMember; their cn are Identity.Groups.
	GroupsBaseDN string
	// MailAttribute, if set, is the attribute of the user's entry read
	// (as the user, after the bind) for Identity.Email, such as "mail":
	// the address ready e-mails go to. A value that is not one plain
	// address is dropped and logged; a read that fails costs the address,
	// never the login.
	MailAttribute string

	// DialTimeout bounds connecting (TCP and, for ldaps, TLS). Default 5s.
	DialTimeout time.Duration
	// Timeout bounds one whole login after connecting. Default 10s.
	Timeout time.Duration

	// Logger gets misconfigurations and server trouble. Default
	// slog.Default().
	Logger *slog.Logger
}

// Authenticator binds to an LDAP server to check passwords. It is
// immutable and safe for concurrent use.
type Authenticator struct {
	cfg      Config
	log      *slog.Logger
	scheme   string
	hostport string
	tls      *tls.Config // nil for ldap:// without StartTLS
}

var _ auth.PasswordAuthenticator = (*Authenticator)(nil)

// New checks cfg, reads RootCAs, and returns an Authenticator. It does not
// connect: the server may be down now and up at the first login.
func New(cfg Config) (*Authenticator, error) {
	a, err := newAuthenticator(cfg)
	if err != nil {
		return nil, fmt.Errorf("ldap config: %w", err)
	}
	return a, nil
}

func newAuthenticator(cfg Config) (*Authenticator, error) {
	cfg.DialTimeout = cmp.Or(cfg.DialTimeout, 5*time.Second)
	cfg.Timeout = cmp.Or(cfg.Timeout, 10*time.Second)
	a := &Authenticator{cfg: cfg, log: cmp.Or(cfg.Logger, slog.Default()).With("component", "auth.ldap")}

	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("URL: %w", err)
	}
	if (u.Scheme != "ldap" && u.Scheme != "ldaps") || u.Hostname() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return nil, fmt.Errorf("URL %q: want ldap://host[:port] or ldaps://host[:port]", cfg.URL)
	}
	a.scheme = u.Scheme
	port := u.Port()
	if port == "" {
		port = map[string]string{"ldap": "389", "ldaps": "636"}[u.Scheme]
	}
	a.hostport = net.JoinHostPort(u.Hostname(), port)
	useTLS := u.Scheme == "ldaps" || cfg.StartTLS
	switch {
	case u.Scheme == "ldaps" && cfg.StartTLS:
		return nil, errors.New("StartTLS with ldaps://: the connection is TLS already")
	case cfg.RootCAs != "" && !useTLS:
		return nil, errors.New("RootCAs without ldaps:// or StartTLS")
	}
	if useTLS {
		a.tls = &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}
		if cfg.RootCAs != "" {
			pem, err := os.ReadFile(cfg.RootCAs)
			if err != nil {
				return nil, fmt.Errorf("RootCAs: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("RootCAs %s: no PEM certificates", cfg.RootCAs)
			}
			a.tls.RootCAs = pool
		}
	} else if ip, err := netip.ParseAddr(u.Hostname()); (err != nil || !ip.IsLoopback()) && u.Hostname() != "localhost" {
		a.log.Warn("LDAP passwords will cross the network unencrypted; use ldaps:// or StartTLS", "url", cfg.URL)
	}

	search := cfg.BaseDN != "" || cfg.Filter != "" || cfg.SearchBindDN != "" || cfg.SearchBindPassword != ""
	switch {
	case cfg.BindDN != "" && search:
		return nil, errors.New("both BindDN and search settings (BaseDN, Filter, SearchBindDN): choose one")
	case cfg.BindDN != "":
		if !strings.Contains(cfg.BindDN, "{user}") {
			return nil, fmt.Errorf("BindDN %q: no {user}", cfg.BindDN)
		}
		if _, err := goldap.ParseDN(strings.ReplaceAll(cfg.BindDN, "{user}", "x")); err != nil {
			return nil, fmt.Errorf("BindDN %q: %w", cfg.BindDN, err)
		}
	case cfg.BaseDN == "" || cfg.Filter == "":
		return nil, errors.New("set BindDN, or BaseDN and Filter")
	default:
		if _, err := goldap.ParseDN(cfg.BaseDN); err != nil {
			return nil, fmt.Errorf("BaseDN %q: %w", cfg.BaseDN, err)
		}
		if !strings.Contains(cfg.Filter, "{user}") {
			return nil, fmt.Errorf("filter %q: no {user}", cfg.Filter)
		}
		if _, err := goldap.CompileFilter(strings.ReplaceAll(cfg.Filter, "{user}", "x")); err != nil {
			return nil, fmt.Errorf("filter %q: %w", cfg.Filter, err)
		}
		if (cfg.SearchBindDN == "") != (cfg.SearchBindPassword == "") {
			// A DN with an empty password is an unauthenticated bind.
			return nil, errors.New("SearchBindDN and SearchBindPassword: set both or neither")
		}
	}
	if cfg.GroupsBaseDN != "" {
		if _, err := goldap.ParseDN(cfg.GroupsBaseDN); err != nil {
			return nil, fmt.Errorf("GroupsBaseDN %q: %w", cfg.GroupsBaseDN, err)
		}
	}
	if cfg.AdminGroup != "" {
		if _, err := goldap.ParseDN(cfg.AdminGroup); err != nil {
			return nil, fmt.Errorf("AdminGroup %q: %w", cfg.AdminGroup, err)
		}
	}
	if cfg.DialTimeout < 0 || cfg.Timeout < 0 {
		return nil, errors.New("negative timeout")
	}
	return a, nil
}

// Name returns "ldap".
func (a *Authenticator) Name() string { return Method }

// Authenticate binds as user with password. A wrong password, an unknown
// user or a name matching several entries is auth.ErrInvalid; a server
// that cannot be reached or answers with trouble is an error wrapping
// auth.ErrUnavailable. An empty password or invalid name is ErrInvalid
// before any connection.
func (a *Authenticator) Authenticate(ctx context.Context, user, password string) (auth.Identity, error) {
	if password == "" || len(password) > maxPasswordLen || auth.ValidateUserName(user) != nil {
		return auth.Identity{}, auth.ErrInvalid
	}
	id, err := a.authenticate(ctx, user, password)
	if err != nil {
		// The caller gave up; the server is not to blame. The connection's
		// deadline is the caller's, and may fire a moment before ctx says
		// so.
		cerr := ctx.Err()
		if d, ok := ctx.Deadline(); ok && cerr == nil && !time.Now().Before(d) {
			cerr = context.DeadlineExceeded
		}
		if cerr != nil {
			return auth.Identity{}, fmt.Errorf("ldap login of %s: %w", user, cerr)
		}
	}
	return id, err
}

// authenticate is Authenticate without the name check, so tests can show
// that escaping alone stops injection.
func (a *Authenticator) authenticate(ctx context.Context, user, password string) (auth.Identity, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.DialTimeout+a.cfg.Timeout)
	defer cancel()
	conn, err := a.dial(ctx)
	if err != nil {
		return auth.Identity{}, fmt.Errorf("connect to %s: %w: %w", a.cfg.URL, auth.ErrUnavailable, err)
	}
	defer conn.Close()
	// go-ldap requests take no context; closing the connection ends them.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	dn, err := a.userDN(ctx, conn, user)
	if err != nil {
		return auth.Identity{}, err
	}
	if err := conn.Bind(dn, password); err != nil {
		return auth.Identity{}, a.bindFailed(ctx, user, err)
	}
	admin, err := a.isAdmin(ctx, conn, user, dn)
	if err != nil {
		return auth.Identity{}, err
	}
	groups, err := a.groups(ctx, conn, user, dn)
	if err != nil {
		return auth.Identity{}, err
	}
	return auth.Identity{User: user, Admin: admin, Method: Method, Groups: groups, Email: a.mail(ctx, conn, user, dn)}, nil
}

// mail reads the user's address from MailAttribute of their entry; "" if
// unset, missing, or not one plain address (a value with a line break
// would put headers into the mails it is used in).
func (a *Authenticator) mail(ctx context.Context, conn *goldap.Conn, user, dn string) string {
	if a.cfg.MailAttribute == "" {
		return ""
	}
	req := goldap.NewSearchRequest(dn, goldap.ScopeBaseObject, goldap.NeverDerefAliases,
		1, a.timeLimit(), false, "(objectClass=*)", []string{a.cfg.MailAttribute}, nil)
	res, err := conn.Search(req)
	if err != nil || len(res.Entries) != 1 {
		a.log.WarnContext(ctx, "ldap: cannot read the user's address", "user", user, "attribute", a.cfg.MailAttribute, "error", err)
		return ""
	}
	v := res.Entries[0].GetAttributeValue(a.cfg.MailAttribute)
	if v == "" {
		return ""
	}
	if !plainAddress(v) {
		a.log.WarnContext(ctx, "ldap: the user's address is not one plain address; ignored", "user", user, "attribute", a.cfg.MailAttribute, "value", fmt.Sprintf("%q", v))
		return ""
	}
	return v
}

// plainAddress: v is one bare address (local@domain), nothing around it,
// no control characters.
func plainAddress(v string) bool {
	if len(v) > 254 || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return false
	}
	a, err := mail.ParseAddress(v)
	return err == nil && a.Name == "" && a.Address == v
}

// groups returns the cn of the groups under GroupsBaseDN that name dn as
// a member, sorted; nil without GroupsBaseDN. A search that fails is
// "unavailable", never "no groups": a flapping server must not take
// profiles away.
func (a *Authenticator) groups(ctx context.Context, conn *goldap.Conn, user, dn string) ([]string, error) {
	if a.cfg.GroupsBaseDN == "" {
		return nil, nil
	}
	e := goldap.EscapeFilter(dn)
	req := goldap.NewSearchRequest(a.cfg.GroupsBaseDN, goldap.ScopeWholeSubtree, goldap.NeverDerefAliases,
		1000, a.timeLimit(), false, "(|(member="+e+")(uniqueMember="+e+"))", []string{"cn"}, nil)
	res, err := conn.Search(req)
	if err != nil {
		return nil, fmt.Errorf("groups of %s under %s: %w: %w", user, a.cfg.GroupsBaseDN, auth.ErrUnavailable, err)
	}
	var out []string
	for _, en := range res.Entries {
		if cn := en.GetAttributeValue("cn"); cn != "" {
			out = append(out, cn)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// dial connects, negotiates TLS, and bounds the connection by ctx's
// deadline.
func (a *Authenticator) dial(ctx context.Context) (*goldap.Conn, error) {
	nd := &net.Dialer{Timeout: a.cfg.DialTimeout}
	var (
		nc  net.Conn
		err error
	)
	if a.scheme == "ldaps" {
		nc, err = (&tls.Dialer{NetDialer: nd, Config: a.tls}).DialContext(ctx, "tcp", a.hostport)
	} else {
		nc, err = nd.DialContext(ctx, "tcp", a.hostport)
	}
	if err != nil {
		return nil, err
	}
	if d, ok := ctx.Deadline(); ok {
		nc.SetDeadline(d)
	}
	conn := goldap.NewConn(nc, a.scheme == "ldaps")
	conn.Start()
	// Also bounds each request and Close's wait for go-ldap's goroutines.
	conn.SetTimeout(a.cfg.Timeout)
	if a.cfg.StartTLS {
		if err := conn.StartTLS(a.tls); err != nil {
			conn.Close()
			return nil, fmt.Errorf("StartTLS: %w", err)
		}
	}
	return conn, nil
}

// userDN returns the DN to bind as.
func (a *Authenticator) userDN(ctx context.Context, conn *goldap.Conn, user string) (string, error) {
	if a.cfg.BindDN != "" {
		return strings.ReplaceAll(a.cfg.BindDN, "{user}", goldap.EscapeDN(user)), nil
	}
	if a.cfg.SearchBindDN != "" {
		if err := conn.Bind(a.cfg.SearchBindDN, a.cfg.SearchBindPassword.reveal()); err != nil {
			a.log.ErrorContext(ctx, "LDAP search account cannot bind", "dn", a.cfg.SearchBindDN, "error", err)
			return "", fmt.Errorf("bind as search account %s: %w: %w", a.cfg.SearchBindDN, auth.ErrUnavailable, err)
		}
	}
	filter := strings.ReplaceAll(a.cfg.Filter, "{user}", goldap.EscapeFilter(user))
	req := goldap.NewSearchRequest(a.cfg.BaseDN, goldap.ScopeWholeSubtree, goldap.NeverDerefAliases,
		2, a.timeLimit(), false, filter, []string{"1.1"}, nil)
	res, err := conn.Search(req)
	switch {
	case goldap.IsErrorWithCode(err, goldap.LDAPResultSizeLimitExceeded) || (err == nil && len(res.Entries) > 1):
		a.log.WarnContext(ctx, "LDAP filter matches several entries; refusing", "user", user, "filter", filter)
		return "", auth.ErrInvalid
	case err != nil:
		return "", fmt.Errorf("search %s for %s: %w: %w", a.cfg.BaseDN, filter, auth.ErrUnavailable, err)
	case len(res.Entries) == 0:
		// An unknown user would answer faster than a wrong password, which
		// costs a bind; binding as the search account again costs the
		// same round trip and password check, and leaves no failed bind
		// in the server's logs.
		if a.cfg.SearchBindDN != "" {
			conn.Bind(a.cfg.SearchBindDN, a.cfg.SearchBindPassword.reveal())
		}
		return "", auth.ErrInvalid
	}
	return res.Entries[0].DN, nil
}

func (a *Authenticator) timeLimit() int {
	return max(1, int(a.cfg.Timeout/time.Second))
}

// bindFailed maps a failed user bind to ErrInvalid (the server judged the
// credentials or the account) or ErrUnavailable (the server could not).
func (a *Authenticator) bindFailed(ctx context.Context, user string, err error) error {
	var le *goldap.Error
	if !errors.As(err, &le) {
		return fmt.Errorf("bind as %s: %w: %w", user, auth.ErrUnavailable, err)
	}
	switch le.ResultCode {
	case goldap.LDAPResultInvalidCredentials:
		return auth.ErrInvalid
	case goldap.LDAPResultOperationsError, goldap.LDAPResultTimeLimitExceeded, goldap.LDAPResultBusy,
		goldap.LDAPResultUnavailable, goldap.LDAPResultOther, goldap.LDAPResultAdminLimitExceeded:
		return fmt.Errorf("bind as %s: %w: %w", user, auth.ErrUnavailable, err)
	}
	if le.ResultCode >= goldap.ErrorNetwork {
		// go-ldap's own codes: the network, or a reply it could not read.
		return fmt.Errorf("bind as %s: %w: %w", user, auth.ErrUnavailable, err)
	}
	// Anything else is about this account: locked, expired, not allowed.
	a.log.InfoContext(ctx, "LDAP refused bind", "user", user, "error", err)
	return auth.ErrInvalid
}

// isAdmin reports whether dn is a member of AdminGroup.
func (a *Authenticator) isAdmin(ctx context.Context, conn *goldap.Conn, user, dn string) (bool, error) {
	if a.cfg.AdminGroup == "" {
		return false, nil
	}
	e := goldap.EscapeFilter(dn)
	req := goldap.NewSearchRequest(a.cfg.AdminGroup, goldap.ScopeBaseObject, goldap.NeverDerefAliases,
		1, a.timeLimit(), false, "(|(member="+e+")(uniqueMember="+e+"))", []string{"1.1"}, nil)
	res, err := conn.Search(req)
	switch {
	case goldap.IsErrorWithCode(err, goldap.LDAPResultNoSuchObject):
		// Not admin, but say so: a typo in AdminGroup demotes everyone.
		a.log.WarnContext(ctx, "LDAP admin group not found (or not readable by the user)", "group", a.cfg.AdminGroup, "user", user)
		return false, nil
	case err != nil:
		// Not "not admin": a flapping server must not flap roles.
		return false, fmt.Errorf("check %s in %s: %w: %w", user, a.cfg.AdminGroup, auth.ErrUnavailable, err)
	}
	return len(res.Entries) == 1, nil
}
