package auth_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/auth"
	"github.com/airlock-hpc/airlock/internal/auth/internal/authtest"
	"github.com/airlock-hpc/airlock/internal/auth/ldap"
	"github.com/airlock-hpc/airlock/internal/auth/local"
	"github.com/airlock-hpc/airlock/internal/auth/ratelimit"
)

func TestMain(m *testing.M) { authtest.Main(m, "airlock/internal/auth") }

const (
	aliceLocalPassword = "alice-local-pw"
	carolPassword      = "carol-local-pw"
)

// setup is the gateway's authentication as configured for a site with a
// few local accounts and an LDAP directory: local first, then LDAP.
type setup struct {
	chain *auth.Chain
	slapd *authtest.Slapd
	limit *ratelimit.Limiter
	logs  *bytes.Buffer
}

func newSetup(t *testing.T) *setup {
	t.Helper()
	s := authtest.StartSlapd(t)
	logs := new(bytes.Buffer)
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	users, err := local.New(local.Config{
		Path:   filepath.Join(t.TempDir(), "users"),
		Params: local.Params{Memory: 64, Time: 1, Threads: 1},
		Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	// alice is in both, with different passwords and roles; carol only here.
	if err := users.Add("alice", []byte(aliceLocalPassword), false); err != nil {
		t.Fatal(err)
	}
	if err := users.Add("carol", []byte(carolPassword), true); err != nil {
		t.Fatal(err)
	}
	dir, err := ldap.New(ldap.Config{
		URL: s.URL, BindDN: "uid={user}," + authtest.PeopleDN, AdminGroup: authtest.AdminsDN,
		Timeout: 2 * time.Second, Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	limit, err := ratelimit.New(ratelimit.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return &setup{
		chain: &auth.Chain{Authenticators: []auth.PasswordAuthenticator{users, dir}, Limiter: limit, Logger: logger},
		slapd: s, limit: limit, logs: logs,
	}
}

func (s *setup) login(user, password, addr string) (auth.Identity, error) {
	return s.chain.Login(context.Background(), user, password, addr)
}

func TestChainLocalThenLDAP(t *testing.T) {
	s := newSetup(t)
	for _, tc := range []struct {
		user, password string
		want           auth.Identity
	}{
		{"alice", aliceLocalPassword, auth.Identity{User: "alice", Admin: false, Method: "local"}},
		{"alice", authtest.AlicePassword, auth.Identity{User: "alice", Admin: true, Method: "ldap"}},
		{"bob", authtest.BobPassword, auth.Identity{User: "bob", Method: "ldap"}},
		{"carol", carolPassword, auth.Identity{User: "carol", Admin: true, Method: "local"}},
	} {
		id, err := s.login(tc.user, tc.password, "192.0.2.1:5555")
		if err != nil || !reflect.DeepEqual(id, tc.want) {
			t.Errorf("Login(%s) = %+v, %v; want %+v", tc.user, id, err, tc.want)
		}
	}
	for _, tc := range []struct{ user, password string }{
		{"alice", "wrong-password"},
		{"bob", carolPassword},
		{"carol", authtest.BobPassword},
		{"nobody", "whatever-pw"},
		{"alice", ""},
		{"Alice", authtest.AlicePassword},
		{"*", authtest.BobPassword},
	} {
		id, err := s.login(tc.user, tc.password, "192.0.2.2:5555")
		if !errors.Is(err, auth.ErrInvalid) || !reflect.DeepEqual(id, auth.Identity{}) {
			t.Errorf("Login(%q) = %+v, %v; want ErrInvalid", tc.user, id, err)
		}
	}
}

func TestChainRateLimits(t *testing.T) {
	s := newSetup(t)
	for i := range 5 {
		if _, err := s.login("bob", "guess", "192.0.2.10:1"); !errors.Is(err, auth.ErrInvalid) {
			t.Fatalf("guess %d: %v", i+1, err)
		}
	}
	// Now even the right password is not checked.
	_, err := s.login("bob", authtest.BobPassword, "192.0.2.11:1")
	if !errors.Is(err, auth.ErrRateLimited) {
		t.Fatalf("6th try with the right password: %v, want ErrRateLimited", err)
	}
	// Other users are unaffected, and a success clears only its user.
	if _, err := s.login("carol", carolPassword, "192.0.2.10:2"); err != nil {
		t.Fatal(err)
	}
	// The address: 20 failures spread over names, valid or not.
	for i := range 15 {
		user := fmt.Sprintf("guess%d", i)
		if i%3 == 0 {
			user = fmt.Sprintf("Not Valid %d", i)
		}
		s.login(user, "guess", "192.0.2.10:3")
	}
	if _, err := s.login("carol", carolPassword, "192.0.2.10:4"); !errors.Is(err, auth.ErrRateLimited) {
		t.Fatalf("after 20 failures from one address: %v, want ErrRateLimited", err)
	}
	if _, err := s.login("carol", carolPassword, "192.0.2.12:4"); err != nil {
		t.Fatalf("another address: %v", err)
	}
}

func TestChainLDAPDown(t *testing.T) {
	s := newSetup(t)
	s.slapd.Stop()
	// Local users still log in.
	if id, err := s.login("carol", carolPassword, "192.0.2.1:1"); err != nil || id.Method != "local" {
		t.Fatalf("carol with LDAP down: %+v, %v", id, err)
	}
	// An LDAP user cannot, and the outage is logged. Local said no, so the
	// answer is ErrInvalid, and it counts as a failure.
	if _, err := s.login("bob", authtest.BobPassword, "192.0.2.1:1"); !errors.Is(err, auth.ErrInvalid) {
		t.Fatalf("bob with LDAP down: %v, want ErrInvalid", err)
	}
	if !strings.Contains(s.logs.String(), `msg="authenticator unavailable" component=auth user=bob remote_addr=192.0.2.1:1 method=ldap`) {
		t.Errorf("outage not logged:\n%s", s.logs.String())
	}

	// With LDAP alone, the answer is ErrUnavailable, and the user is not
	// charged for the server's outage.
	onlyLDAP := &auth.Chain{Authenticators: s.chain.Authenticators[1:], Limiter: s.limit, Logger: s.chain.Logger}
	for range 10 {
		_, err := onlyLDAP.Login(context.Background(), "bob", authtest.BobPassword, "192.0.2.3:1")
		if !errors.Is(err, auth.ErrUnavailable) || errors.Is(err, auth.ErrInvalid) {
			t.Fatalf("LDAP only, down: %v, want ErrUnavailable", err)
		}
	}
	if err := s.limit.Allow("bob", "192.0.2.3:1", time.Now()); err != nil {
		t.Errorf("an outage counted against bob: %v", err)
	}
}

func TestChainNeverLogsPasswords(t *testing.T) {
	s := newSetup(t)
	passwords := []string{aliceLocalPassword, authtest.AlicePassword, authtest.BobPassword, carolPassword, "typed-into-user-field", "wrong-guess-77"}
	s.login("alice", aliceLocalPassword, "192.0.2.1:1")
	s.login("alice", authtest.AlicePassword, "192.0.2.1:1")
	s.login("bob", "wrong-guess-77", "192.0.2.1:1")
	s.login("typed-into-user-field", "", "192.0.2.1:1")
	// A password typed into the user name field: not a valid name, so
	// the log says "(invalid)" instead of the name.
	s.login(carolPassword+"!", "x", "192.0.2.1:1")
	s.slapd.Stop()
	s.login("bob", authtest.BobPassword, "192.0.2.1:1")
	for range 6 {
		s.login("carol", "wrong-guess-77", "192.0.2.9:1")
	}
	logs := s.logs.String()
	if !strings.Contains(logs, "user=(invalid)") || !strings.Contains(logs, "login refused") {
		t.Fatalf("the logs lack the lines this test is about:\n%s", logs)
	}
	for _, pw := range passwords[:4] {
		if strings.Contains(logs, pw) {
			t.Errorf("password %q reached the log:\n%s", pw, logs)
		}
	}
	if strings.Contains(logs, "wrong-guess-77") {
		t.Errorf("a wrong password reached the log")
	}
}

// fixed is an authenticator with a fixed answer.
type fixed struct {
	id  auth.Identity
	err error
}

func (f fixed) Name() string { return "fixed" }
func (f fixed) Authenticate(ctx context.Context, user, password string) (auth.Identity, error) {
	return f.id, f.err
}

func TestChainEdges(t *testing.T) {
	ctx := context.Background()
	if _, err := (&auth.Chain{}).Login(ctx, "alice", "pw", "192.0.2.1:1"); !errors.Is(err, auth.ErrUnavailable) {
		t.Errorf("no authenticators: %v", err)
	}
	// An authenticator that vouches for someone else is not believed.
	liar := &auth.Chain{Authenticators: []auth.PasswordAuthenticator{fixed{id: auth.Identity{User: "root", Admin: true}}}}
	if id, err := liar.Login(ctx, "alice", "pw", "192.0.2.1:1"); !errors.Is(err, auth.ErrUnavailable) {
		t.Errorf("identity for another user: %+v, %v", id, err)
	}
	// An error that is neither ErrInvalid nor ErrUnavailable is treated as
	// unavailable; the next authenticator still decides.
	odd := &auth.Chain{Authenticators: []auth.PasswordAuthenticator{
		fixed{err: errors.New("disk on fire")},
		fixed{id: auth.Identity{User: "alice"}},
	}}
	if id, err := odd.Login(ctx, "alice", "pw", "192.0.2.1:1"); err != nil || id.Method != "fixed" {
		t.Errorf("after an odd error: %+v, %v (Method defaults to Name())", id, err)
	}
	oddOnly := &auth.Chain{Authenticators: []auth.PasswordAuthenticator{fixed{err: errors.New("disk on fire")}}}
	if _, err := oddOnly.Login(ctx, "alice", "pw", "192.0.2.1:1"); !errors.Is(err, auth.ErrUnavailable) {
		t.Errorf("odd error only: %v, want ErrUnavailable", err)
	}
	// A cancelled login is neither a failure nor unavailable.
	limit, _ := ratelimit.New(ratelimit.Config{UserLimit: 1})
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	c := &auth.Chain{Authenticators: []auth.PasswordAuthenticator{fixed{err: auth.ErrInvalid}}, Limiter: limit}
	if _, err := c.Login(cctx, "alice", "pw", "192.0.2.1:1"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	if err := limit.Allow("alice", "192.0.2.1:1", time.Now()); err != nil {
		t.Errorf("a cancelled login counted as a failure: %v", err)
	}
}

func TestValidateUserName(t *testing.T) {
	for _, ok := range []string{"a", "0", "alice", "a.b", "a-b", "a_b", "9", strings.Repeat("x", 64), "a..", "a--"} {
		if err := auth.ValidateUserName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".a", "-a", "_a", "A", "aB", "a b", "a:b", "a/b", "a\n", "a\x00", "é", "a=b", "a;b",
		"a,b", "a*", "a@b", strings.Repeat("x", 65)} {
		err := auth.ValidateUserName(bad)
		if err == nil {
			t.Errorf("%q accepted", bad)
		} else if bad != "" && strings.Contains(err.Error(), bad) {
			t.Errorf("error %q repeats the name", err)
		}
	}
}

// TestMailFromTemplate: a local user's address is made from the template;
// an address the authenticator knows is kept; a refusal stays one.
func TestMailFromTemplate(t *testing.T) {
	m := auth.MailFromTemplate{PasswordAuthenticator: fixed{id: auth.Identity{User: "alice", Method: "fixed"}}, Template: "{user}@example.org"}
	if id, err := m.Authenticate(context.Background(), "alice", "pw"); err != nil || id.Email != "alice@example.org" {
		t.Fatalf("Authenticate = %+v, %v", id, err)
	}
	m.PasswordAuthenticator = fixed{id: auth.Identity{User: "alice", Email: "a@elsewhere.org"}}
	if id, _ := m.Authenticate(context.Background(), "alice", "pw"); id.Email != "a@elsewhere.org" {
		t.Fatalf("kept address: %q", id.Email)
	}
	m.PasswordAuthenticator = fixed{err: auth.ErrInvalid}
	if id, err := m.Authenticate(context.Background(), "alice", "pw"); err == nil || id.Email != "" {
		t.Fatalf("refusal: %+v, %v", id, err)
	}
}
