// Package mail checks a user name and password by logging in to the
// site's mail server, as sites without a directory of their own do: IMAP
// (implicit TLS on imaps:// or STARTTLS on imap://) or SMTP AUTH (smtps://
// or STARTTLS on smtp://). The password never travels without TLS, and a
// server whose TLS is older than the configured minimum is refused, never
// spoken to in an older version.
//
// The client libraries (emersion's go-imap v2, still a beta, and go-smtp)
// are used only in this file's two dial functions, so a change of their API
// stays here.
package mail

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/airlock-hpc/airlock/internal/auth"
)

// Config is one mail server.
type Config struct {
	// URL is imaps://host[:993], imap://host[:143] (STARTTLS),
	// smtps://host[:465] or smtp://host[:587] (STARTTLS).
	URL string
	// RootCAs is a PEM file of CA certificates the server's must chain to.
	// Empty: the system's.
	RootCAs string
	// MinTLS is the oldest TLS version spoken: tls.VersionTLS12 (default)
	// or tls.VersionTLS13 (tls.VersionTLS10 and 11 for old servers, if a
	// site must).
	MinTLS uint16
	// Login makes the mail login from the airlock user name: {user} is
	// replaced ("{user}@example.org"). Default "{user}".
	Login string
	// AdminUsers are airlock admins when this method lets them in.
	AdminUsers []string
	// Timeout bounds connecting and the whole exchange. Default 10s.
	Timeout time.Duration
	Logger  *slog.Logger
}

// Server is an authenticator that logs in to a mail server.
type Server struct {
	cfg      Config
	method   string // "imap" or "smtp"
	addr     string
	host     string
	tls      *tls.Config
	starttls bool
	log      *slog.Logger
}

// New checks cfg and reads its CA file.
func New(cfg Config) (*Server, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, fmt.Errorf("mail: %q: want imaps://, imap://, smtps:// or smtp:// and a host", cfg.URL)
	}
	s := &Server{cfg: cfg, host: u.Hostname()}
	port := u.Port()
	switch u.Scheme {
	case "imaps":
		s.method, port = "imap", cmp.Or(port, "993")
	case "imap":
		s.method, s.starttls, port = "imap", true, cmp.Or(port, "143")
	case "smtps":
		s.method, port = "smtp", cmp.Or(port, "465")
	case "smtp":
		s.method, s.starttls, port = "smtp", true, cmp.Or(port, "587")
	default:
		return nil, fmt.Errorf("mail: %q: want imaps://, imap://, smtps:// or smtp://", cfg.URL)
	}
	s.addr = net.JoinHostPort(s.host, port)
	s.cfg.MinTLS = cmp.Or(cfg.MinTLS, tls.VersionTLS12)
	s.cfg.Login = cmp.Or(cfg.Login, "{user}")
	if !strings.Contains(s.cfg.Login, "{user}") {
		return nil, fmt.Errorf("mail: login %q has no {user}", cfg.Login)
	}
	s.cfg.Timeout = cmp.Or(cfg.Timeout, 10*time.Second)
	s.tls = &tls.Config{ServerName: s.host, MinVersion: s.cfg.MinTLS}
	if cfg.RootCAs != "" {
		pem, err := os.ReadFile(cfg.RootCAs)
		if err != nil {
			return nil, fmt.Errorf("mail: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mail: CA file %s: no PEM certificates", cfg.RootCAs)
		}
		s.tls.RootCAs = pool
	}
	s.log = cmp.Or(cfg.Logger, slog.Default()).With("component", "auth", "method", s.method, "server", s.addr)
	return s, nil
}

// MapLogin maps a login typed as the server knows it (the login template
// with a user name in place of {user}, such as alice@example.org; case
// ignored) to that user name. Only a valid user name is returned.
func (s *Server) MapLogin(login string) (string, bool) {
	pre, post, _ := strings.Cut(strings.ToLower(s.cfg.Login), "{user}")
	l := strings.ToLower(login)
	if s.cfg.Login == "{user}" || len(l) <= len(pre)+len(post) || !strings.HasPrefix(l, pre) || !strings.HasSuffix(l, post) {
		return "", false
	}
	u := l[len(pre) : len(l)-len(post)]
	if auth.ValidateUserName(u) != nil {
		return "", false
	}
	return u, true
}

// Name is "imap" or "smtp".
func (s *Server) Name() string { return s.method }

// Authenticate logs in to the server as the mail login made from user.
// A refused login is auth.ErrInvalid; a server that cannot be reached,
// whose TLS is too old or whose certificate does not check out is
// auth.ErrUnavailable, with the cause logged.
func (s *Server) Authenticate(ctx context.Context, user, password string) (auth.Identity, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	login := strings.ReplaceAll(s.cfg.Login, "{user}", user)
	var err error
	if s.method == "imap" {
		err = s.imapLogin(ctx, login, password)
	} else {
		err = s.smtpLogin(ctx, login, password)
	}
	if err != nil {
		if !errors.Is(err, auth.ErrInvalid) {
			err = s.explain(err)
			s.log.WarnContext(ctx, "mail server unavailable", "user", user, "error", err)
			return auth.Identity{}, fmt.Errorf("%s %s: %w: %w", s.method, s.addr, auth.ErrUnavailable, err)
		}
		s.log.InfoContext(ctx, "mail login refused", "user", user, "error", err)
		return auth.Identity{}, err
	}
	admin := false
	for _, a := range s.cfg.AdminUsers {
		admin = admin || a == user
	}
	return auth.Identity{User: user, Admin: admin, Method: s.method}, nil
}

// explain turns a TLS version mismatch into a line an admin can act on.
func (s *Server) explain(err error) error {
	msg := err.Error()
	if strings.Contains(msg, "protocol version") || strings.Contains(msg, "no supported versions") {
		return fmt.Errorf("the server's TLS is older than the minimum, TLS %s (min_tls); refused, not downgraded: %w", tlsName(s.cfg.MinTLS), err)
	}
	return err
}

func tlsName(v uint16) string {
	return strings.TrimPrefix(tls.VersionName(v), "TLS ")
}

// dial connects, with the deadline of ctx on the whole exchange.
func (s *Server) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	return c, nil
}

// handshake starts implicit TLS on c.
func (s *Server) handshake(ctx context.Context, c net.Conn) (net.Conn, error) {
	tc := tls.Client(c, s.tls.Clone())
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("TLS: %w", err)
	}
	return tc, nil
}

func (s *Server) imapLogin(ctx context.Context, login, password string) error {
	c, err := s.dial(ctx)
	if err != nil {
		return err
	}
	var cl *imapclient.Client
	if s.starttls {
		cl, err = imapclient.NewStartTLS(c, &imapclient.Options{TLSConfig: s.tls.Clone()})
		if err != nil {
			return fmt.Errorf("STARTTLS: %w", err)
		}
	} else {
		tc, err := s.handshake(ctx, c)
		if err != nil {
			return err
		}
		cl = imapclient.New(tc, nil)
	}
	defer cl.Close()
	if err := cl.WaitGreeting(); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if err := cl.Login(login, password).Wait(); err != nil {
		var ie *imap.Error
		if errors.As(err, &ie) && ie.Type == imap.StatusResponseTypeNo &&
			(ie.Code == imap.ResponseCodeAuthenticationFailed || ie.Code == "" || ie.Code == imap.ResponseCodeAuthorizationFailed) {
			return fmt.Errorf("IMAP LOGIN: %s: %w", ie.Text, auth.ErrInvalid)
		}
		return fmt.Errorf("IMAP LOGIN: %w", err)
	}
	cl.Logout().Wait()
	return nil
}

func (s *Server) smtpLogin(ctx context.Context, login, password string) error {
	c, err := s.dial(ctx)
	if err != nil {
		return err
	}
	var cl *smtp.Client
	if s.starttls {
		cl, err = smtp.NewClientStartTLS(c, s.tls.Clone())
		if err != nil {
			c.Close()
			return fmt.Errorf("STARTTLS: %w", err)
		}
	} else {
		tc, err := s.handshake(ctx, c)
		if err != nil {
			return err
		}
		cl = smtp.NewClient(tc)
	}
	defer cl.Close()
	if err := cl.Hello("airlock"); err != nil {
		return fmt.Errorf("EHLO: %w", err)
	}
	var mech sasl.Client
	switch {
	case cl.SupportsAuth("PLAIN"):
		mech = sasl.NewPlainClient("", login, password)
	case cl.SupportsAuth("LOGIN"):
		mech = sasl.NewLoginClient(login, password)
	default:
		return errors.New("the server offers neither AUTH PLAIN nor AUTH LOGIN")
	}
	if err := cl.Auth(mech); err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) && se.Code == 535 {
			return fmt.Errorf("SMTP AUTH: %d %s: %w", se.Code, se.Message, auth.ErrInvalid)
		}
		return fmt.Errorf("SMTP AUTH: %w", err)
	}
	cl.Quit()
	return nil
}
