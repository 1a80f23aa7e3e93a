// Package oidc logs users in through an OpenID Connect provider (Keycloak,
// Dex, CILogon, ...): the authorization code flow with PKCE, the provider
// found by discovery, the ID token's signature, issuer, audience, expiry
// and nonce checked by go-oidc, and the user's name and groups taken from
// configurable claims (of the ID token, else of the userinfo endpoint).
//
// The package does not keep the flow's state: Begin returns a Pending the
// caller keeps (bound to the browser that asked, used once) and hands back
// to Finish with the code the provider sent.
package oidc

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/airlock-hpc/airlock/internal/auth"
)

// Config is one provider.
type Config struct {
	// Name is the provider's id in URLs (/auth/oidc/NAME/...) and logs:
	// lowercase letters, digits and '-'.
	Name string
	// Title is the login button's label. Default: Name.
	Title string
	// Issuer is the provider's issuer URL; discovery reads
	// ISSUER/.well-known/openid-configuration, whose issuer must match.
	Issuer string
	// ClientID and ClientSecret are airlock's registration at the provider.
	ClientID, ClientSecret string
	// Scopes besides "openid". Default profile, email.
	Scopes []string
	// UserClaim names the claim holding the user name. Default
	// "preferred_username".
	UserClaim string
	// UserDomain, if set, is a domain the user claim must end with
	// ("@example.org"), which is cut off to make the user name; a claim
	// without it is refused. Empty: the claim is the user name as is.
	UserDomain string
	// GroupsClaim names the claim holding the user's groups (a list of
	// strings, or one string). Default "groups".
	GroupsClaim string
	// AdminGroups and AdminUsers make a user an airlock admin.
	AdminGroups, AdminUsers []string
	// HTTPClient talks to the provider. Default http.DefaultClient with a
	// 10 s timeout.
	HTTPClient *http.Client
	// Now is the clock the ID token's expiry is checked against.
	Now    func() time.Time
	Logger *slog.Logger
}

// Method is the Identity.Method of users this package logs in.
const Method = "oidc"

// Errors, matchable with errors.Is.
var (
	// ErrRefused: the provider or its answer said no, or the answer does
	// not check out (a forged or foreign token): the login fails.
	ErrRefused = fmt.Errorf("login refused (%w)", auth.ErrInvalid)
	// ErrUnavailable: the provider could not be reached: try again later.
	ErrUnavailable = auth.ErrUnavailable
)

// Provider is a configured OpenID provider. Discovery happens on first
// use (and again after a failure), so a gateway starts while its provider
// is down.
type Provider struct {
	cfg Config
	log *slog.Logger

	mu         sync.Mutex
	provider   *gooidc.Provider
	verifier   *gooidc.IDTokenVerifier
	oauth      oauth2.Config
	endSession string
}

// New checks cfg; it does not contact the provider.
func New(cfg Config) (*Provider, error) {
	if cfg.Name == "" || strings.Trim(cfg.Name, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
		return nil, fmt.Errorf("oidc: name %q: use lowercase letters, digits and '-'", cfg.Name)
	}
	u, err := url.Parse(cfg.Issuer)
	if err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && isLoopback(u.Hostname()))) {
		return nil, fmt.Errorf("oidc %s: issuer %q: want an https:// URL (http:// only to a loopback address)", cfg.Name, cfg.Issuer)
	}
	if cfg.ClientID == "" {
		return nil, fmt.Errorf("oidc %s: client id is required", cfg.Name)
	}
	cfg.Title = cmp.Or(cfg.Title, cfg.Name)
	cfg.UserClaim = cmp.Or(cfg.UserClaim, "preferred_username")
	cfg.GroupsClaim = cmp.Or(cfg.GroupsClaim, "groups")
	if cfg.Scopes == nil {
		cfg.Scopes = []string{"profile", "email"}
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Provider{cfg: cfg, log: cmp.Or(cfg.Logger, slog.Default()).With("component", "auth", "method", Method, "provider", cfg.Name)}, nil
}

func isLoopback(host string) bool {
	return host == "localhost" || host == "127.0.0.1" || host == "::1"
}

// Name is the provider's id; Title its button's label.
func (p *Provider) Name() string  { return p.cfg.Name }
func (p *Provider) Title() string { return p.cfg.Title }

func (p *Provider) ctx(ctx context.Context) context.Context {
	return gooidc.ClientContext(ctx, p.cfg.HTTPClient)
}

// discover fetches the provider's configuration once it has worked.
func (p *Provider) discover(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.provider != nil {
		return nil
	}
	prov, err := gooidc.NewProvider(p.ctx(ctx), p.cfg.Issuer)
	if err != nil {
		return fmt.Errorf("oidc %s: discovery at %s: %w: %w", p.cfg.Name, p.cfg.Issuer, ErrUnavailable, err)
	}
	var extra struct {
		EndSession string `json:"end_session_endpoint"`
	}
	if err := prov.Claims(&extra); err != nil {
		return fmt.Errorf("oidc %s: discovery document: %w: %w", p.cfg.Name, ErrUnavailable, err)
	}
	p.provider = prov
	p.verifier = prov.Verifier(&gooidc.Config{ClientID: p.cfg.ClientID, Now: p.cfg.Now})
	p.oauth = oauth2.Config{ClientID: p.cfg.ClientID, ClientSecret: p.cfg.ClientSecret, Endpoint: prov.Endpoint(),
		Scopes: append([]string{gooidc.ScopeOpenID}, p.cfg.Scopes...)}
	p.endSession = extra.EndSession
	return nil
}

// Pending is a login under way: what Finish needs to check the answer.
// The caller keeps it secret and uses it once.
type Pending struct {
	State    string
	Nonce    string
	Verifier string // the PKCE code verifier
	// RedirectURL is the callback the provider was told (and must be told
	// again at the code exchange).
	RedirectURL string
}

// Begin starts a login: it returns the provider's URL to send the browser
// to and the Pending to keep until it comes back with ?state=State.
// redirectURL is the callback registered at the provider
// (https://gateway/auth/oidc/NAME/callback).
func (p *Provider) Begin(ctx context.Context, redirectURL string) (string, Pending, error) {
	if err := p.discover(ctx); err != nil {
		return "", Pending{}, err
	}
	pend := Pending{State: random(), Nonce: random(), Verifier: oauth2.GenerateVerifier(), RedirectURL: redirectURL}
	u := p.oauthFor(pend).AuthCodeURL(pend.State, oauth2.S256ChallengeOption(pend.Verifier), gooidc.Nonce(pend.Nonce))
	return u, pend, nil
}

func (p *Provider) oauthFor(pend Pending) *oauth2.Config {
	c := p.oauth
	c.RedirectURL = pend.RedirectURL
	return &c
}

func random() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Finish trades code for tokens (with the PKCE verifier), checks the ID
// token (signature, issuer, audience, expiry, nonce) and returns who it
// names. Errors wrap ErrRefused or ErrUnavailable, with the cause.
func (p *Provider) Finish(ctx context.Context, pend Pending, code string) (auth.Identity, IDToken, error) {
	if err := p.discover(ctx); err != nil {
		return auth.Identity{}, IDToken{}, err
	}
	if code == "" {
		return auth.Identity{}, IDToken{}, fmt.Errorf("oidc %s: no code in the callback: %w", p.cfg.Name, ErrRefused)
	}
	tok, err := p.oauthFor(pend).Exchange(p.ctx(ctx), code, oauth2.VerifierOption(pend.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode >= 400 && re.Response.StatusCode < 500 {
			return auth.Identity{}, IDToken{}, fmt.Errorf("oidc %s: code exchange refused: %w: %w", p.cfg.Name, ErrRefused, err)
		}
		return auth.Identity{}, IDToken{}, fmt.Errorf("oidc %s: code exchange: %w: %w", p.cfg.Name, ErrUnavailable, err)
	}
	raw, ok := tok.Extra("id_token").(string)
	if !ok || raw == "" {
		return auth.Identity{}, IDToken{}, fmt.Errorf("oidc %s: token response has no id_token: %w", p.cfg.Name, ErrRefused)
	}
	idt, err := p.verifier.Verify(p.ctx(ctx), raw)
	if err != nil {
		return auth.Identity{}, IDToken{}, fmt.Errorf("oidc %s: ID token refused: %w: %w", p.cfg.Name, ErrRefused, err)
	}
	if idt.Nonce != pend.Nonce {
		return auth.Identity{}, IDToken{}, fmt.Errorf("oidc %s: ID token refused: nonce does not match the login's: %w", p.cfg.Name, ErrRefused)
	}
	claims := map[string]any{}
	if err := idt.Claims(&claims); err != nil {
		return auth.Identity{}, IDToken{}, fmt.Errorf("oidc %s: ID token claims: %w: %w", p.cfg.Name, ErrRefused, err)
	}
	if _, ok := claims[p.cfg.UserClaim]; !ok || claims[p.cfg.GroupsClaim] == nil {
		// Many providers put profile claims only in userinfo. It must
		// speak of the same subject as the ID token.
		ui, err := p.provider.UserInfo(p.ctx(ctx), oauth2.StaticTokenSource(tok))
		if err != nil {
			return auth.Identity{}, IDToken{}, fmt.Errorf("oidc %s: userinfo: %w: %w", p.cfg.Name, ErrUnavailable, err)
		}
		if ui.Subject != idt.Subject {
			return auth.Identity{}, IDToken{}, fmt.Errorf("oidc %s: userinfo is about subject %q, the ID token about %q: %w", p.cfg.Name, ui.Subject, idt.Subject, ErrRefused)
		}
		more := map[string]any{}
		if err := ui.Claims(&more); err != nil {
			return auth.Identity{}, IDToken{}, fmt.Errorf("oidc %s: userinfo claims: %w: %w", p.cfg.Name, ErrRefused, err)
		}
		for k, v := range more {
			if _, ok := claims[k]; !ok {
				claims[k] = v
			}
		}
	}
	id, err := p.identity(claims)
	if err != nil {
		return auth.Identity{}, IDToken{}, err
	}
	return id, IDToken{Raw: raw, Subject: idt.Subject, Expiry: idt.Expiry}, nil
}

// IDToken is what a login keeps of the ID token: for RP-initiated logout.
type IDToken struct {
	Raw     string
	Subject string
	Expiry  time.Time
}

// identity maps the claims to a user. Exported through Finish only.
func (p *Provider) identity(claims map[string]any) (auth.Identity, error) {
	name, _ := claims[p.cfg.UserClaim].(string)
	if name == "" {
		return auth.Identity{}, fmt.Errorf("oidc %s: no string claim %q: %w", p.cfg.Name, p.cfg.UserClaim, ErrRefused)
	}
	user, err := MapUser(name, p.cfg.UserDomain)
	if err != nil {
		return auth.Identity{}, fmt.Errorf("oidc %s: claim %q: %w: %w", p.cfg.Name, p.cfg.UserClaim, err, ErrRefused)
	}
	groups, err := Groups(claims[p.cfg.GroupsClaim])
	if err != nil {
		return auth.Identity{}, fmt.Errorf("oidc %s: claim %q: %w: %w", p.cfg.Name, p.cfg.GroupsClaim, err, ErrRefused)
	}
	admin := slices.Contains(p.cfg.AdminUsers, user)
	for _, g := range groups {
		admin = admin || slices.Contains(p.cfg.AdminGroups, g)
	}
	email, _ := claims["email"].(string)
	display, _ := claims["name"].(string)
	return auth.Identity{User: user, Admin: admin, Method: Method, Groups: groups, Email: email, Display: display}, nil
}

// MapUser makes a user name from a login such as an e-mail address: with
// domain set, login must end with "@"+domain, which is cut off; the rest
// must be a valid user name ([auth.ValidateUserName]). Upper case is
// folded (directories and mail servers ignore it), nothing else is changed.
func MapUser(login, domain string) (string, error) {
	login = strings.ToLower(login)
	if domain != "" {
		local, ok := strings.CutSuffix(login, "@"+strings.ToLower(strings.TrimPrefix(domain, "@")))
		if !ok {
			return "", fmt.Errorf("not in domain %s", domain)
		}
		login = local
	}
	if err := auth.ValidateUserName(login); err != nil {
		return "", err
	}
	return login, nil
}

// MaxGroups bounds how many groups a user may bring; MaxGroupLen each one.
const (
	MaxGroups   = 256
	MaxGroupLen = 256
)

// Groups reads a groups claim: a list of strings or one string (some
// providers send a single group so). Missing is no groups.
func Groups(v any) ([]string, error) {
	var out []string
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		out = []string{v}
	case []any:
		for _, g := range v {
			s, ok := g.(string)
			if !ok {
				return nil, errors.New("groups: not a list of strings")
			}
			out = append(out, s)
		}
	default:
		return nil, errors.New("groups: not a list of strings")
	}
	if len(out) > MaxGroups {
		return nil, fmt.Errorf("groups: %d, at most %d", len(out), MaxGroups)
	}
	for _, g := range out {
		if g == "" || len(g) > MaxGroupLen || strings.ContainsAny(g, "\n\r\x00") {
			return nil, errors.New("groups: an empty, too long or multi-line group")
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// LogoutURL is where to send a browser to end its login at the provider
// too (RP-initiated logout), or "" if the provider offers no such
// endpoint. idToken is the login's ID token (may be ""); back is where the
// provider should send the browser afterwards (registered there).
func (p *Provider) LogoutURL(ctx context.Context, idToken, back string) string {
	if err := p.discover(ctx); err != nil || p.endSession == "" {
		return ""
	}
	u, err := url.Parse(p.endSession)
	if err != nil {
		return ""
	}
	q := u.Query()
	q.Set("client_id", p.cfg.ClientID)
	if idToken != "" {
		q.Set("id_token_hint", idToken)
	}
	if back != "" {
		q.Set("post_logout_redirect_uri", back)
	}
	u.RawQuery = q.Encode()
	return u.String()
}
