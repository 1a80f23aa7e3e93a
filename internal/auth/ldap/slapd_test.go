package ldap

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/airlock-hpc/airlock/internal/auth"
	"github.com/airlock-hpc/airlock/internal/auth/internal/authtest"
)

func TestMain(m *testing.M) { authtest.Main(m, "airlock/internal/auth/ldap") }

const (
	bindTemplate = "uid={user}," + authtest.PeopleDN
	personFilter = "(&(objectClass=inetOrgPerson)(uid={user}))"
)

func mustNew(t testing.TB, cfg Config) *Authenticator {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = authtest.Logger(t)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func templateConfig(s *authtest.Slapd) Config {
	return Config{URL: s.URL, BindDN: bindTemplate, AdminGroup: authtest.AdminsDN}
}

func searchConfig(s *authtest.Slapd) Config {
	return Config{
		URL: s.URL, BaseDN: authtest.BaseDN, Filter: personFilter,
		SearchBindDN: authtest.ReaderDN, SearchBindPassword: authtest.ReaderPassword,
		AdminGroup: authtest.AdminsDN,
	}
}

func wantIdentity(t *testing.T, a *Authenticator, user, password string, admin bool) {
	t.Helper()
	id, err := a.Authenticate(context.Background(), user, password)
	if err != nil {
		t.Fatalf("Authenticate(%s): %v", user, err)
	}
	if want := (auth.Identity{User: user, Admin: admin, Method: "ldap"}); !reflect.DeepEqual(id, want) {
		t.Fatalf("Authenticate(%s) = %+v, want %+v", user, id, want)
	}
}

func wantErr(t *testing.T, a *Authenticator, user, password string, want error) {
	t.Helper()
	id, err := a.Authenticate(context.Background(), user, password)
	if !errors.Is(err, want) || !reflect.DeepEqual(id, auth.Identity{}) {
		t.Fatalf("Authenticate(%q) = %+v, %v; want %v", user, id, err, want)
	}
}

func TestSlapdBind(t *testing.T) {
	s := authtest.StartSlapd(t)
	for name, cfg := range map[string]Config{"template": templateConfig(s), "search": searchConfig(s)} {
		t.Run(name, func(t *testing.T) {
			a := mustNew(t, cfg)
			wantIdentity(t, a, "alice", authtest.AlicePassword, true)
			wantIdentity(t, a, "bob", authtest.BobPassword, false)
			wantErr(t, a, "alice", authtest.BobPassword, auth.ErrInvalid)
			wantErr(t, a, "alice", authtest.AlicePassword+"x", auth.ErrInvalid)
			wantErr(t, a, "carol", authtest.AlicePassword, auth.ErrInvalid)
			wantErr(t, a, "Alice", authtest.AlicePassword, auth.ErrInvalid)
			// The evil entry is alice's namesake (uid=alice) under ou=evil.
			wantErr(t, a, "alice", authtest.EvilPassword, auth.ErrInvalid)
		})
	}
}

// TestSlapdEmptyPassword: this slapd, like Active Directory, lets a DN
// with an empty password bind ("unauthenticated bind"); Authenticate must
// refuse before asking it.
func TestSlapdEmptyPassword(t *testing.T) {
	s := authtest.StartSlapd(t)
	c, err := goldap.DialURL(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.SimpleBind(&goldap.SimpleBindRequest{Username: "uid=alice," + authtest.PeopleDN, AllowEmptyPassword: true}); err != nil {
		t.Fatalf("the hole is not there, so this test proves nothing: %v", err)
	}
	for _, cfg := range []Config{templateConfig(s), searchConfig(s)} {
		wantErr(t, mustNew(t, cfg), "alice", "", auth.ErrInvalid)
	}
	// Proof that no connection is even tried: a closed port would make
	// any dial fail with ErrUnavailable.
	down := mustNew(t, Config{URL: "ldap://" + closedAddr(t), BindDN: bindTemplate})
	wantErr(t, down, "alice", "", auth.ErrInvalid)
	wantErr(t, down, "alice", "x", auth.ErrUnavailable)
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestSlapdInjection is the attacker choosing a user name that changes the
// DN or filter. The name check refuses them all; below it, escaping alone
// must also hold, so each is tried again without the check.
func TestSlapdInjection(t *testing.T) {
	s := authtest.StartSlapd(t)
	// The trap is armed: this DN exists and the attacker knows its password.
	c, err := goldap.DialURL(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Bind(authtest.EvilDN, authtest.EvilPassword); err != nil {
		t.Fatalf("evil entry: %v", err)
	}
	attacks := []struct{ user, password string }{
		{"alice,ou=evil", authtest.EvilPassword},   // unescaped template: binds as EvilDN
		{"bo*", authtest.BobPassword},              // unescaped filter: finds bob
		{"*", authtest.BobPassword},                // matches everyone
		{"*)(uid=*", authtest.BobPassword},         // filter breakout
		{"bob)(|(uid=*", authtest.BobPassword},     // another
		{"bob\x00", authtest.BobPassword},          // NUL truncation
		{"bob,ou=people", authtest.BobPassword},    // a DN that means bob
		{"uid=bob," + authtest.PeopleDN, "x"},      // a whole DN
		{"alice\\,ou=evil", authtest.EvilPassword}, // pre-escaped
	}
	for name, cfg := range map[string]Config{"template": templateConfig(s), "search": searchConfig(s)} {
		a := mustNew(t, cfg)
		for _, at := range attacks {
			id, err := a.Authenticate(context.Background(), at.user, at.password)
			if !errors.Is(err, auth.ErrInvalid) {
				t.Errorf("%s: Authenticate(%q) = %+v, %v; want ErrInvalid", name, at.user, id, err)
			}
			id, err = a.authenticate(context.Background(), at.user, at.password)
			if err == nil {
				t.Errorf("%s: unchecked name %q authenticated as %+v", name, at.user, id)
			}
		}
		// Not injection, but as bad: the directory's matching rules ignore
		// case and surrounding spaces, so these names are bob to it and
		// would be new airlock users to everything else. Only the name
		// check stops them; show that it is needed.
		for _, alias := range []string{"BOB", "Bob", " bob", "bob "} {
			wantErr(t, a, alias, authtest.BobPassword, auth.ErrInvalid)
			if _, err := a.authenticate(context.Background(), alias, authtest.BobPassword); err != nil {
				t.Errorf("%s: slapd no longer takes %q for bob (%v): this test's premise is gone", name, alias, err)
			}
		}
	}
}

func TestSlapdSearchMustMatchOne(t *testing.T) {
	s := authtest.StartSlapd(t)
	var logs bytes.Buffer
	cfg := searchConfig(s)
	cfg.Filter = "(description={user})"
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	a := mustNew(t, cfg)
	wantErr(t, a, "twins", authtest.TwinPassword, auth.ErrInvalid)
	if !strings.Contains(logs.String(), "several entries") {
		t.Errorf("ambiguous filter not logged: %s", logs.String())
	}

	// A search account with the wrong password is the server's (config's)
	// problem, not the user's.
	cfg = searchConfig(s)
	cfg.SearchBindPassword = "wrong"
	wantErr(t, mustNew(t, cfg), "alice", authtest.AlicePassword, auth.ErrUnavailable)

	// Anonymous search, which this directory refuses: a misconfiguration,
	// so unavailable (and logged by the chain), not a wrong password.
	cfg = searchConfig(s)
	cfg.SearchBindDN, cfg.SearchBindPassword = "", ""
	wantErr(t, mustNew(t, cfg), "alice", authtest.AlicePassword, auth.ErrUnavailable)
}

func TestSlapdAdminGroup(t *testing.T) {
	s := authtest.StartSlapd(t)
	var logs bytes.Buffer
	cfg := templateConfig(s)
	cfg.AdminGroup = "cn=typo,ou=groups," + authtest.BaseDN
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	wantIdentity(t, mustNew(t, cfg), "alice", authtest.AlicePassword, false)
	if !strings.Contains(logs.String(), "admin group not found") {
		t.Errorf("missing group not logged: %s", logs.String())
	}
	cfg.AdminGroup = ""
	wantIdentity(t, mustNew(t, cfg), "alice", authtest.AlicePassword, false)
	// groupOfUniqueNames, with uniqueMember.
	cfg.AdminGroup = authtest.UniqueAdminsDN
	wantIdentity(t, mustNew(t, cfg), "bob", authtest.BobPassword, true)
	wantIdentity(t, mustNew(t, cfg), "alice", authtest.AlicePassword, false)
}

func TestSlapdTLS(t *testing.T) {
	s := authtest.StartSlapd(t)
	ldaps := Config{URL: s.TLSURL, RootCAs: s.CAFile, BindDN: bindTemplate, AdminGroup: authtest.AdminsDN}
	startTLS := Config{URL: s.URL, StartTLS: true, RootCAs: s.CAFile, BindDN: bindTemplate, AdminGroup: authtest.AdminsDN}
	wantIdentity(t, mustNew(t, ldaps), "alice", authtest.AlicePassword, true)
	wantIdentity(t, mustNew(t, startTLS), "alice", authtest.AlicePassword, true)
	wantErr(t, mustNew(t, ldaps), "alice", "wrong-password", auth.ErrInvalid)

	// A server whose certificate we cannot verify gets no password.
	for _, cfg := range []Config{ldaps, startTLS} {
		cfg.RootCAs = s.OtherCAFile
		_, err := mustNew(t, cfg).Authenticate(context.Background(), "alice", authtest.AlicePassword)
		if !errors.Is(err, auth.ErrUnavailable) || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%s with the wrong CA: %v, want ErrUnavailable about the certificate", cfg.URL, err)
		}
	}
	// Also with the system roots, which do not hold the test CA.
	cfg := ldaps
	cfg.RootCAs = ""
	wantErr(t, mustNew(t, cfg), "alice", authtest.AlicePassword, auth.ErrUnavailable)
	// And with the right CA but a name the certificate does not have.
	cfg = ldaps
	cfg.URL = strings.Replace(s.TLSURL, "127.0.0.1", "127.0.0.2", 1)
	wantErr(t, mustNew(t, cfg), "alice", authtest.AlicePassword, auth.ErrUnavailable)
}

func TestSlapdGoesDown(t *testing.T) {
	s := authtest.StartSlapd(t)
	a := mustNew(t, templateConfig(s))
	wantIdentity(t, a, "bob", authtest.BobPassword, false)
	s.Stop()
	start := time.Now()
	_, err := a.Authenticate(context.Background(), "bob", authtest.BobPassword)
	if !errors.Is(err, auth.ErrUnavailable) || errors.Is(err, auth.ErrInvalid) {
		t.Fatalf("server down: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s to notice a refused connection", d)
	}
}

func TestConfigErrors(t *testing.T) {
	ok := Config{URL: "ldap://127.0.0.1", BindDN: bindTemplate}
	for name, mut := range map[string]func(*Config){
		"no URL":                func(c *Config) { c.URL = "" },
		"http URL":              func(c *Config) { c.URL = "http://x" },
		"URL with path":         func(c *Config) { c.URL = "ldap://x/dc=example" },
		"StartTLS on ldaps":     func(c *Config) { c.URL = "ldaps://x"; c.StartTLS = true },
		"RootCAs without TLS":   func(c *Config) { c.RootCAs = "/etc/hosts" },
		"RootCAs not PEM":       func(c *Config) { c.StartTLS = true; c.RootCAs = "/etc/hosts" },
		"RootCAs missing":       func(c *Config) { c.StartTLS = true; c.RootCAs = "/nonexistent" },
		"no {user}":             func(c *Config) { c.BindDN = authtest.PeopleDN },
		"bad DN":                func(c *Config) { c.BindDN = "uid={user},,=" },
		"both modes":            func(c *Config) { c.BaseDN, c.Filter = authtest.BaseDN, "(uid={user})" },
		"neither mode":          func(c *Config) { c.BindDN = "" },
		"filter without {user}": func(c *Config) { c.BindDN, c.BaseDN, c.Filter = "", authtest.BaseDN, "(uid=x)" },
		"bad filter":            func(c *Config) { c.BindDN, c.BaseDN, c.Filter = "", authtest.BaseDN, "(uid={user}" },
		"search DN, no password": func(c *Config) {
			c.BindDN, c.BaseDN, c.Filter, c.SearchBindDN = "", authtest.BaseDN, personFilter, authtest.ReaderDN
		},
		"bad admin group": func(c *Config) { c.AdminGroup = "cn=,," },
	} {
		cfg := ok
		mut(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		} else if !strings.HasPrefix(err.Error(), "ldap config: ") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := New(ok); err != nil {
		t.Error(err)
	}
}

// TestPasswordRedacts: the search account's password never prints or
// logs, however a Config is printed.
func TestPasswordRedacts(t *testing.T) {
	const secret = "hunter2-service"
	cfg := Config{URL: "ldap://127.0.0.1", BaseDN: "dc=x", Filter: "(uid={user})", SearchBindDN: "cn=r,dc=x", SearchBindPassword: secret}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "ldap", cfg, "pw", cfg.SearchBindPassword)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("config", "ldap", cfg, "pw", cfg.SearchBindPassword)
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		fmt.Fprintf(&logs, f+"\n", cfg)
		fmt.Fprintf(&logs, f+"\n", cfg.SearchBindPassword)
	}
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	logs.Write(js)
	if strings.Contains(logs.String(), secret) || strings.Contains(logs.String(), fmt.Sprintf("%x", secret)) {
		t.Errorf("the secret leaked:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "REDACTED") {
		t.Error("nothing redacted; the test proves nothing")
	}
}

// BenchmarkSlapdBind is one login against a real slapd on loopback: connect,
// bind as the user, check the admin group (template); or connect, bind as
// the search account, search, bind as the user, check the group (search).
func BenchmarkSlapdBind(b *testing.B) {
	s := authtest.StartSlapd(b)
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		cfg  Config
	}{{"template", templateConfig(s)}, {"search", searchConfig(s)}} {
		b.Run(bc.name, func(b *testing.B) {
			bc.cfg.Logger = slog.New(slog.DiscardHandler)
			a := mustNew(b, bc.cfg)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.Authenticate(ctx, "alice", authtest.AlicePassword); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestSlapdGroups: with GroupsBaseDN, a login brings the user's groups
// (groupOfNames and groupOfUniqueNames), which decide their profiles.
func TestSlapdGroups(t *testing.T) {
	s := authtest.StartSlapd(t)
	cfg := templateConfig(s)
	cfg.GroupsBaseDN = "ou=groups," + authtest.BaseDN
	a := mustNew(t, cfg)
	for user, want := range map[string][]string{"alice": {"admins"}, "bob": {"uadmins"}} {
		pw := map[string]string{"alice": authtest.AlicePassword, "bob": authtest.BobPassword}[user]
		id, err := a.Authenticate(context.Background(), user, pw)
		if err != nil || !reflect.DeepEqual(id.Groups, want) {
			t.Fatalf("%s: %+v, %v; want groups %v", user, id, err, want)
		}
	}
	// A base that does not exist is the server's "no such object": not
	// "no groups".
	cfg.GroupsBaseDN = "ou=nowhere," + authtest.BaseDN
	a = mustNew(t, cfg)
	if _, err := a.Authenticate(context.Background(), "alice", authtest.AlicePassword); !errors.Is(err, auth.ErrUnavailable) {
		t.Fatalf("groups under a missing base: %v, want ErrUnavailable", err)
	}
}

// TestSlapdMail: the mail attribute, read as the user after the bind,
// becomes Identity.Email; a value that is not one plain address (a line
// break and a header after it, a display name) is dropped, and the login
// still succeeds; an unreadable attribute costs only the address.
func TestSlapdMail(t *testing.T) {
	s := authtest.StartSlapd(t)
	cfg := templateConfig(s)
	cfg.MailAttribute = "mail"
	a := mustNew(t, cfg)
	for user, want := range map[string]string{"alice": authtest.AliceMail, "bob": "", "twin1": ""} {
		pw := map[string]string{"alice": authtest.AlicePassword, "bob": authtest.BobPassword, "twin1": authtest.TwinPassword}[user]
		id, err := a.Authenticate(context.Background(), user, pw)
		if err != nil || id.Email != want {
			t.Errorf("%s: email %q, %v; want %q", user, id.Email, err, want)
		}
	}
	cfg.MailAttribute = ""
	if id, err := mustNew(t, cfg).Authenticate(context.Background(), "alice", authtest.AlicePassword); err != nil || id.Email != "" {
		t.Errorf("without mail_attribute: %q, %v", id.Email, err)
	}
	cfg.MailAttribute = "noSuchAttribute"
	if id, err := mustNew(t, cfg).Authenticate(context.Background(), "alice", authtest.AlicePassword); err != nil || id.Email != "" {
		t.Errorf("an unknown attribute: %q, %v", id.Email, err)
	}
}

func TestPlainAddress(t *testing.T) {
	for v, want := range map[string]bool{"a@example.org": true, "a.b+c@example.org": true, "": false, "a@example.org\r\nBcc: x@y": false,
		"A <a@example.org>": false, "a@example.org, b@example.org": false, "nobody": false, "a@b@c": false} {
		if plainAddress(v) != want {
			t.Errorf("plainAddress(%q) = %v", v, !want)
		}
	}
}
