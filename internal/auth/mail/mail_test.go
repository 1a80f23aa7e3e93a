package mail_test

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"

	"github.com/airlock-hpc/airlock/internal/auth"
	"github.com/airlock-hpc/airlock/internal/auth/mail"
)

func server(t testing.TB, url, ca string, minTLS uint16) *mail.Server {
	t.Helper()
	s, err := mail.New(mail.Config{URL: url, RootCAs: ca, MinTLS: minTLS, Login: "{user}@example.org", AdminUsers: []string{"bob"}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// check logs alice in with her password and a wrong one, and an unknown
// user, against s.
func check(t *testing.T, s *mail.Server) {
	t.Helper()
	ctx := context.Background()
	id, err := s.Authenticate(ctx, "alice", "alice-mail-pw")
	if err != nil || id.User != "alice" || id.Admin || id.Method != s.Name() {
		t.Fatalf("alice: %+v, %v", id, err)
	}
	if id, err := s.Authenticate(ctx, "bob", "bob-mail-pw"); err != nil || !id.Admin {
		t.Fatalf("bob (an admin user): %+v, %v", id, err)
	}
	for _, bad := range [][2]string{{"alice", "wrong"}, {"nobody", "alice-mail-pw"}, {"alice", "bob-mail-pw"}} {
		if _, err := s.Authenticate(ctx, bad[0], bad[1]); !errors.Is(err, auth.ErrInvalid) {
			t.Fatalf("%s with a wrong password: %v, want ErrInvalid", bad[0], err)
		}
	}
}

// TestDovecot logs in to Debian's Dovecot over STARTTLS and implicit TLS.
func TestDovecot(t *testing.T) {
	starttls, implicit, ca := startDovecot(t)
	t.Run("starttls", func(t *testing.T) { check(t, server(t, "imap://"+starttls, ca, 0)) })
	t.Run("implicit", func(t *testing.T) { check(t, server(t, "imaps://"+implicit, ca, 0)) })
	t.Run("tls1.3 minimum", func(t *testing.T) { check(t, server(t, "imaps://"+implicit, ca, tls.VersionTLS13)) })
	t.Run("unknown CA", func(t *testing.T) {
		s := server(t, "imaps://"+implicit, "", 0)
		if _, err := s.Authenticate(context.Background(), "alice", "alice-mail-pw"); !errors.Is(err, auth.ErrUnavailable) {
			t.Fatalf("certificate from an unknown CA: %v, want ErrUnavailable", err)
		}
	})
}

// TestExim logs in with SMTP AUTH to Debian's Exim over STARTTLS.
func TestExim(t *testing.T) {
	addr, ca := startExim(t)
	check(t, server(t, "smtp://"+addr, ca, 0))
}

// TestOldTLSRefused: a server that speaks only TLS 1.0 is refused, with a
// log line that says so, and never spoken to in TLS 1.0.
func TestOldTLSRefused(t *testing.T) {
	addr, ca := startOldTLS(t)
	for _, url := range []string{"imaps://" + addr, "smtps://" + addr} {
		s := server(t, url, ca, 0)
		_, err := s.Authenticate(context.Background(), "alice", "alice-mail-pw")
		if !errors.Is(err, auth.ErrUnavailable) || !strings.Contains(err.Error(), "older than the minimum, TLS 1.2") {
			t.Fatalf("%s: %v; want unavailable, TLS older than the minimum", url, err)
		}
	}
}

// TestServerDown: nobody listening is "unavailable" (try the next
// method, or again later), never "wrong password".
func TestServerDown(t *testing.T) {
	s := server(t, "imaps://127.0.0.1:1", "", 0)
	if _, err := s.Authenticate(context.Background(), "alice", "x"); !errors.Is(err, auth.ErrUnavailable) {
		t.Fatalf("server down: %v", err)
	}
}

func TestNewRefuses(t *testing.T) {
	for _, c := range []mail.Config{{URL: "http://mail.example"}, {URL: "imaps://"}, {URL: "imap://mail.example", Login: "fixed"}, {URL: "imaps://u:p@mail.example"}} {
		if _, err := mail.New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}

func TestMapLogin(t *testing.T) {
	s := server(t, "imaps://mail.example", "", 0)
	for login, want := range map[string]string{
		"alice@example.org": "alice", "Alice@Example.ORG": "alice",
		"alice@evil.org": "", "@example.org": "", "a/b@example.org": "", "x@y@example.org": "", "alice": "",
	} {
		got, ok := s.MapLogin(login)
		if got != want || ok != (want != "") {
			t.Errorf("MapLogin(%q) = %q, %v; want %q", login, got, ok, want)
		}
	}
}

// TestChainMapsEmailLogin: a user types the address the mail server
// knows; the chain logs in the user name it stands for, against Dovecot.
func TestChainMapsEmailLogin(t *testing.T) {
	_, implicit, ca := startDovecot(t)
	c := &auth.Chain{Authenticators: []auth.PasswordAuthenticator{server(t, "imaps://"+implicit, ca, 0)}}
	id, err := c.Login(context.Background(), "Alice@example.org", "alice-mail-pw", "127.0.0.1")
	if err != nil || id.User != "alice" {
		t.Fatalf("login as alice@example.org: %+v, %v; want user alice", id, err)
	}
	if _, err := c.Login(context.Background(), "alice@evil.org", "alice-mail-pw", "127.0.0.1"); !errors.Is(err, auth.ErrInvalid) {
		t.Fatalf("login as an address of another domain: %v; want ErrInvalid", err)
	}
}
