// Package oidcop starts a real OpenID provider on loopback for tests:
// zitadel's example OP (github.com/zitadel/oidc/v3, built from the Go module
// proxy; Dex and Keycloak cannot be fetched or run here). It speaks the
// whole protocol (discovery, authorization code flow with PKCE, token,
// userinfo, keys, end session); this package adds a "groups" claim, users
// and clients the test chooses, and the provider's own signing key, so a
// test can mint tokens the provider would have signed.
//
// Only tests import it.
package oidcop

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	zoidc "github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// User is a user at the provider.
type User struct {
	ID       string // the subject
	Name     string // preferred_username
	Password string
	Email    string
	Groups   []string
}

// OP is a running provider.
type OP struct {
	Issuer string
	st     *groupStorage
}

// groupStorage is the example storage plus a groups claim and registered
// post-logout redirect URIs.
type groupStorage struct {
	*storage.Storage
	clients map[string]*storage.Client

	mu         sync.Mutex
	groups     map[string][]string // by subject
	postLogout map[string][]string // by client id
}

func (s *groupStorage) addGroups(ui *zoidc.UserInfo, subject string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g, ok := s.groups[subject]; ok {
		ui.AppendClaims("groups", g)
	}
}

func (s *groupStorage) SetUserinfoFromToken(ctx context.Context, ui *zoidc.UserInfo, tokenID, subject, origin string) error {
	if err := s.Storage.SetUserinfoFromToken(ctx, ui, tokenID, subject, origin); err != nil {
		return err
	}
	s.addGroups(ui, ui.Subject)
	return nil
}

func (s *groupStorage) SetUserinfoFromRequest(ctx context.Context, ui *zoidc.UserInfo, token op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, ui, token, scopes); err != nil {
		return err
	}
	s.addGroups(ui, token.GetSubject())
	return nil
}

type logoutClient struct {
	op.Client
	post []string
}

func (c logoutClient) PostLogoutRedirectURIs() []string { return c.post }

// The example storage reads its clients map without a lock of ours, and
// AddClient writes it while the provider serves (each test's gateway adds
// its own client): every read of that map goes under s.mu too.
func (s *groupStorage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err != nil {
		return nil, err
	}
	return logoutClient{Client: c, post: s.postLogout[id]}, nil
}

func (s *groupStorage) AuthorizeClientIDSecret(ctx context.Context, id, secret string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Storage.AuthorizeClientIDSecret(ctx, id, secret)
}

// Start runs a provider on 127.0.0.1 with users until the test ends.
func Start(tb testing.TB, users ...User) *OP {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	issuer := "http://" + ln.Addr().String()
	file := map[string]*storage.User{}
	groups := map[string][]string{}
	for _, u := range users {
		file[u.ID] = &storage.User{ID: u.ID, Username: u.Name, Password: u.Password, Email: u.Email, EmailVerified: true, FirstName: u.Name, LastName: "Test"}
		if u.Groups != nil {
			groups[u.ID] = u.Groups
		}
	}
	b, _ := json.Marshal(file)
	path := filepath.Join(tb.TempDir(), "op-users.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	us, err := storage.StoreFromFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	clients := map[string]*storage.Client{}
	st := &groupStorage{Storage: storage.NewStorageWithClients(us, clients), clients: clients, groups: groups, postLogout: map[string][]string{}}
	// A nil logger: otherwise SetupServer replaces slog's default for the
	// whole test process.
	router := exampleop.SetupServer(issuer, st, nil, false)
	srv := &http.Server{Handler: router, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	tb.Cleanup(func() { srv.Close() })
	return &OP{Issuer: issuer, st: st}
}

// AddClient registers a web client (secret in a Basic header) with its
// redirect and post-logout redirect URIs.
func (o *OP) AddClient(id, secret string, redirect, postLogout []string) {
	o.st.mu.Lock()
	defer o.st.mu.Unlock()
	o.st.clients[id] = storage.WebClient(id, secret, redirect...)
	o.st.postLogout[id] = postLogout
}

// SetGroups changes a user's groups at the provider.
func (o *OP) SetGroups(subject string, groups []string) {
	o.st.mu.Lock()
	defer o.st.mu.Unlock()
	o.st.groups[subject] = groups
}

// Key is the provider's signing key and its key id.
func (o *OP) Key(tb testing.TB) (*rsa.PrivateKey, string) {
	k, err := o.st.SigningKey(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return k.Key().(*rsa.PrivateKey), k.ID()
}

// Sign makes a JWS (RS256) of claims with key and key id kid.
func Sign(tb testing.TB, key *rsa.PrivateKey, kid string, claims map[string]any) string {
	tb.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		tb.Fatal(err)
	}
	b, _ := json.Marshal(claims)
	jws, err := s.Sign(b)
	if err != nil {
		tb.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// Claims decodes a JWT's payload without checking it.
func Claims(tb testing.TB, raw string) map[string]any {
	tb.Helper()
	tok, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		tb.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(tok.UnsafePayloadWithoutVerification(), &m); err != nil {
		tb.Fatal(err)
	}
	return m
}

// RewriteIDToken is an http.RoundTripper for the relying party's side
// that hands every token response's id_token to Rewrite and puts what it
// returns in its place: a test's stand-in for a token swapped in transit
// or a provider that signs what it should not.
type RewriteIDToken struct {
	Base    http.RoundTripper
	Rewrite func(idToken string) string
}

func (rt *RewriteIDToken) RoundTrip(r *http.Request) (*http.Response, error) {
	base := rt.Base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(r)
	if err != nil || rt.Rewrite == nil || !strings.HasSuffix(r.URL.Path, "/oauth/token") || resp.StatusCode != 200 {
		return resp, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("token response: %w", err)
	}
	if s, ok := m["id_token"].(string); ok {
		m["id_token"] = rt.Rewrite(s)
	}
	b, _ = json.Marshal(m)
	resp.Body = io.NopCloser(strings.NewReader(string(b)))
	resp.ContentLength = int64(len(b))
	resp.Header.Del("Content-Length")
	return resp, nil
}

// LogIn follows a login that start (a relying party's URL) begins,
// through the provider's login form with name and password, until the
// provider sends the browser back to the relying party: it returns the
// callback URL it was sent to, without following it. c must not follow
// redirects itself (CheckRedirect returning http.ErrUseLastResponse) and
// should have a cookie jar.
func LogIn(tb testing.TB, c *http.Client, start, name, password string) *url.URL {
	tb.Helper()
	u, err := url.Parse(start)
	if err != nil {
		tb.Fatal(err)
	}
	if c.Jar == nil {
		c.Jar, _ = cookiejar.New(nil)
	}
	var form url.Values
	for range 20 {
		var resp *http.Response
		if form != nil {
			resp, err = c.PostForm(u.String(), form)
			form = nil
		} else {
			resp, err = c.Get(u.String())
		}
		if err != nil {
			tb.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode >= 300 && resp.StatusCode < 400:
			next, err := u.Parse(resp.Header.Get("Location"))
			if err != nil {
				tb.Fatal(err)
			}
			if next.Query().Has("state") && next.Query().Has("code") || next.Query().Has("error") {
				return next
			}
			u = next
		case resp.StatusCode == 200 && strings.HasSuffix(u.Path, "/login/username"):
			form = url.Values{"id": {u.Query().Get("authRequestID")}, "username": {name}, "password": {password}}
		default:
			tb.Fatalf("login at the provider: %s: status %d", u, resp.StatusCode)
		}
	}
	tb.Fatalf("login at the provider: too many redirects from %s", start)
	return nil
}
