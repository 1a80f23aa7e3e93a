package oidc_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/auth"
	"github.com/airlock-hpc/airlock/internal/auth/oidc"
	"github.com/airlock-hpc/airlock/internal/realtest/oidcop"
)

const redirect = "https://gw.test/auth/oidc/idp/callback"

// flow starts a provider with alice, a relying party through rt, and
// returns the pending login and the code the provider sent back after
// alice logged in at its form.
func flow(t *testing.T, op *oidcop.OP, p *oidc.Provider) (oidc.Pending, string) {
	t.Helper()
	u, pend, err := p.Begin(t.Context(), redirect)
	if err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	cb := oidcop.LogIn(t, c, u, "alice", "alice-pw")
	if got := cb.Query().Get("state"); got != pend.State {
		t.Fatalf("callback state %q, want %q", got, pend.State)
	}
	if !strings.HasPrefix(cb.String(), redirect+"?") {
		t.Fatalf("callback %s, want %s", cb, redirect)
	}
	return pend, cb.Query().Get("code")
}

func setup(t *testing.T, rewrite func(string) string) (*oidcop.OP, *oidc.Provider) {
	t.Helper()
	op := oidcop.Start(t, oidcop.User{ID: "sub-alice", Name: "alice", Password: "alice-pw", Email: "alice@example.org", Groups: []string{"hpc", "airlock-admins"}})
	op.AddClient("airlock", "s3cret", []string{redirect}, nil)
	p, err := oidc.New(oidc.Config{Name: "idp", Issuer: op.Issuer, ClientID: "airlock", ClientSecret: "s3cret",
		AdminGroups: []string{"airlock-admins"},
		HTTPClient:  &http.Client{Timeout: 10 * time.Second, Transport: &oidcop.RewriteIDToken{Rewrite: rewrite}}})
	if err != nil {
		t.Fatal(err)
	}
	return op, p
}

// TestLogin runs the whole code flow with PKCE against the real provider
// and maps the claims (user name from userinfo, groups, admin by group).
func TestLogin(t *testing.T) {
	op, p := setup(t, nil)
	pend, code := flow(t, op, p)
	id, tok, err := p.Finish(t.Context(), pend, code)
	if err != nil {
		t.Fatal(err)
	}
	want := auth.Identity{User: "alice", Admin: true, Method: "oidc", Groups: []string{"airlock-admins", "hpc"}, Email: "alice@example.org", Display: "alice Test"}
	if !reflect.DeepEqual(id, want) {
		t.Fatalf("identity %+v, want %+v", id, want)
	}
	if tok.Subject != "sub-alice" || tok.Raw == "" {
		t.Fatalf("ID token %+v", tok)
	}
	// The code works once (the provider's rule; a replay gets nothing).
	if _, _, err := p.Finish(t.Context(), pend, code); !errors.Is(err, auth.ErrInvalid) {
		t.Fatalf("second exchange of the code: %v, want refused", err)
	}
	if u := p.LogoutURL(t.Context(), tok.Raw, "https://gw.test/login"); !strings.Contains(u, "id_token_hint=") || !strings.HasPrefix(u, op.Issuer) {
		t.Fatalf("logout URL %q", u)
	}
}

// TestPKCE: a code is worth nothing without the verifier of the login
// that asked for it (a stolen code, replayed with another verifier).
func TestPKCE(t *testing.T) {
	op, p := setup(t, nil)
	pend, code := flow(t, op, p)
	pend.Verifier = strings.Repeat("x", 43)
	if _, _, err := p.Finish(t.Context(), pend, code); !errors.Is(err, auth.ErrInvalid) {
		t.Fatalf("exchange with another verifier: %v, want refused", err)
	}
}

// TestRefusedTokens swaps the ID token in the token response for one
// that must be refused: forged (another key under the provider's key id),
// for another client, expired, issued by someone else, for another login
// (nonce), or unsigned.
func TestRefusedTokens(t *testing.T) {
	forger, _ := rsa.GenerateKey(rand.Reader, 2048)
	cases := []struct {
		name   string
		mutate func(claims map[string]any) // nil: leave the claims
		forged bool
		raw    func(orig string) string
	}{
		{name: "forged signature", forged: true},
		{name: "wrong audience", mutate: func(c map[string]any) { c["aud"] = []string{"someone-else"} }},
		{name: "audience list with another client", mutate: func(c map[string]any) { c["aud"] = "someone-else" }},
		{name: "expired", mutate: func(c map[string]any) {
			c["exp"] = time.Now().Add(-time.Hour).Unix()
			c["iat"] = time.Now().Add(-2 * time.Hour).Unix()
		}},
		{name: "wrong issuer", mutate: func(c map[string]any) { c["iss"] = "https://evil.example" }},
		{name: "wrong nonce", mutate: func(c map[string]any) { c["nonce"] = "not-this-login" }},
		{name: "no nonce", mutate: func(c map[string]any) { delete(c, "nonce") }},
		{name: "unsigned", raw: func(orig string) string {
			parts := strings.Split(orig, ".")
			return "eyJhbGciOiJub25lIn0." + parts[1] + "."
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var op *oidcop.OP
			rewrite := func(orig string) string {
				if tc.raw != nil {
					return tc.raw(orig)
				}
				claims := oidcop.Claims(t, orig)
				if tc.mutate != nil {
					tc.mutate(claims)
				}
				key, kid := op.Key(t)
				if tc.forged {
					key = forger
				}
				return oidcop.Sign(t, key, kid, claims)
			}
			var p *oidc.Provider
			op, p = setup(t, rewrite)
			pend, code := flow(t, op, p)
			id, _, err := p.Finish(t.Context(), pend, code)
			if !errors.Is(err, auth.ErrInvalid) || id.User != "" {
				t.Fatalf("Finish = %+v, %v; want refused", id, err)
			}
			t.Logf("refused: %v", err)
		})
	}
	// The same rewrite path with the claims untouched and the provider's
	// key is accepted: the refusals above are for what was changed.
	t.Run("control", func(t *testing.T) {
		var op *oidcop.OP
		var p *oidc.Provider
		op, p = setup(t, func(orig string) string {
			key, kid := op.Key(t)
			return oidcop.Sign(t, key, kid, oidcop.Claims(t, orig))
		})
		pend, code := flow(t, op, p)
		if _, _, err := p.Finish(t.Context(), pend, code); err != nil {
			t.Fatalf("re-signed, unchanged token refused: %v", err)
		}
	})
}

// TestUnavailable: a provider that is down is "try again", not "no".
func TestUnavailable(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) }))
	defer srv.Close()
	p, err := oidc.New(oidc.Config{Name: "idp", Issuer: srv.URL, ClientID: "airlock"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.Begin(context.Background(), redirect); !errors.Is(err, auth.ErrUnavailable) {
		t.Fatalf("Begin against a provider that is down: %v, want ErrUnavailable", err)
	}
}

func TestNewRefuses(t *testing.T) {
	for _, c := range []oidc.Config{
		{Name: "Bad Name", Issuer: "https://idp.example", ClientID: "a"},
		{Name: "idp", Issuer: "http://idp.example", ClientID: "a"},
		{Name: "idp", Issuer: "https://idp.example"},
	} {
		if _, err := oidc.New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}

func TestMapUser(t *testing.T) {
	for _, tc := range []struct{ login, domain, want string }{
		{"alice", "", "alice"},
		{"Alice@Example.org", "example.org", "alice"},
		{"alice@example.org", "@example.org", "alice"},
		{"alice@evil.org", "example.org", ""},
		{"alice@example.org.evil.org", "example.org", ""},
		{"alice@example.org", "", ""}, // '@' is not a user name character
		{"../root", "", ""},
		{"", "", ""},
	} {
		got, err := oidc.MapUser(tc.login, tc.domain)
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("MapUser(%q, %q) = %q, %v; want %q", tc.login, tc.domain, got, err, tc.want)
		}
	}
}

func TestGroups(t *testing.T) {
	g, err := oidc.Groups([]any{"b", "a", "b"})
	if err != nil || !reflect.DeepEqual(g, []string{"a", "b"}) {
		t.Fatalf("Groups = %v, %v", g, err)
	}
	if g, err := oidc.Groups("one"); err != nil || !reflect.DeepEqual(g, []string{"one"}) {
		t.Fatalf("Groups(one) = %v, %v", g, err)
	}
	for _, bad := range []any{[]any{1}, map[string]any{}, []any{""}, []any{"a\nb"}, 3.0} {
		if _, err := oidc.Groups(bad); err == nil {
			t.Errorf("Groups(%#v) accepted", bad)
		}
	}
}
