package gateway

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/airlock-hpc/airlock/internal/auth"
	"github.com/airlock-hpc/airlock/internal/auth/oidc"
	"github.com/airlock-hpc/airlock/internal/portal"
	"github.com/airlock-hpc/airlock/internal/session"
)

// oidcCookie binds a login under way at an OpenID provider to the browser
// that started it: the callback is accepted only from a browser holding
// the cookie whose hash the pending login recorded. Without it, an
// attacker could start a login as themselves and make a victim's browser
// finish it (login CSRF), so the victim works in the attacker's account.
// Lax: the provider sends the browser back with a top-level GET.
const oidcCookie = "__Host-airlock_oidc"

const (
	// oidcPendingTTL is how long a user has at the provider to log in.
	oidcPendingTTL = 10 * time.Minute
	// oidcMaxPending bounds the logins under way, so unauthenticated
	// requests cannot fill memory; past it, the oldest are dropped.
	oidcMaxPending = 10000
)

// oidcPending is a login under way at a provider.
type oidcPending struct {
	provider string
	pend     oidc.Pending
	bind     []byte // SHA-256 of the browser's oidcCookie
	next     string
	expires  time.Time
}

// oidcState holds the logins under way, by state. Each is taken out at its
// callback, so a state works once (a replayed callback is refused). It is
// in memory: a login must come back to the gateway that started it (or
// the user tries again).
type oidcState struct {
	mu      sync.Mutex
	pending map[string]oidcPending
}

func (s *oidcState) put(state string, p oidcPending, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending == nil {
		s.pending = map[string]oidcPending{}
	}
	if len(s.pending) >= oidcMaxPending {
		var oldest string
		for k, v := range s.pending {
			if !now.Before(v.expires) {
				delete(s.pending, k)
			} else if oldest == "" || v.expires.Before(s.pending[oldest].expires) {
				oldest = k
			}
		}
		if len(s.pending) >= oidcMaxPending {
			delete(s.pending, oldest)
		}
	}
	s.pending[state] = p
}

// take removes and returns the login under way with state.
func (s *oidcState) take(state string) (oidcPending, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pending[state]
	delete(s.pending, state)
	return p, ok
}

func (g *Gateway) oidcProvider(name string) *oidc.Provider {
	for _, p := range g.cfg.OIDC {
		if p.Name() == name {
			return p
		}
	}
	return nil
}

// baseURL is the gateway's address as users reach it: the configured
// public URL, else this request's host. (A forged Host only changes the
// redirect_uri sent to the provider, which refuses an unregistered one.)
func (g *Gateway) baseURL(r *http.Request) string {
	if g.cfg.PublicURL != "" {
		return strings.TrimSuffix(g.cfg.PublicURL, "/")
	}
	return "https://" + r.Host
}

// loginView is the login page with every way in this gateway offers (the
// password form, the e-mail link form, one button per OpenID provider),
// each leading to next; callers add an error or a notice.
func (g *Gateway) loginView(next string) portal.LoginPage {
	v := portal.LoginPage{Base: portal.Base{Title: "Log in"}, Next: next, EmailLogin: g.cfg.EmailLogin != nil && g.cfg.Mailer != nil}
	for _, p := range g.cfg.OIDC {
		v.Providers = append(v.Providers, portal.LoginProvider{Title: p.Title(),
			URL: "/auth/oidc/" + p.Name() + "/login?next=" + url.QueryEscape(next)})
	}
	return v
}

// oidcLogin sends the browser to the provider. GET /auth/oidc/{name}/login.
func (g *Gateway) oidcLogin(w http.ResponseWriter, r *http.Request) error {
	p := g.oidcProvider(r.PathValue("name"))
	if p == nil {
		return apiErr(404, "not_found", "no such login provider")
	}
	u, pend, err := p.Begin(r.Context(), g.baseURL(r)+"/auth/oidc/"+p.Name()+"/callback")
	if err != nil {
		g.log.WarnContext(r.Context(), "login failed", "method", oidc.Method, "provider", p.Name(), "remote_addr", r.RemoteAddr, "error", err)
		return apiErr(503, "auth_unavailable", "the login provider cannot be reached; try again later")
	}
	// One binding cookie per browser, kept across logins started in
	// several tabs.
	secret := ""
	if c, err := r.Cookie(oidcCookie); err == nil && len(c.Value) == 43 {
		secret = c.Value
	} else {
		secret, _ = newSecret()
	}
	http.SetCookie(w, &http.Cookie{Name: oidcCookie, Value: secret, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteLaxMode, MaxAge: int(oidcPendingTTL / time.Second)})
	now := g.now()
	op := oidcPending{provider: p.Name(), pend: pend, bind: sha256Sum(secret),
		next: localPath(r.URL.Query().Get("next")), expires: now.Add(oidcPendingTTL)}
	if g.handoffs != nil {
		// Several gateways: the provider may send the browser back to
		// another one.
		if err := g.putOIDCPending(r.Context(), op, now); err != nil {
			return storeFault("keep a login under way", err)
		}
	} else {
		g.oidc.put(pend.State, op, now)
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, u, http.StatusSeeOther)
	return nil
}

// oidcCallback finishes a login the provider sent back.
// GET /auth/oidc/{name}/callback?state=...&code=....
//
// Every refusal is logged with its cause; the browser is told only that
// the login failed, or to try again later when the provider is down.
func (g *Gateway) oidcCallback(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	name := r.PathValue("name")
	log := g.log.With("component", "auth", "method", oidc.Method, "provider", name, "remote_addr", r.RemoteAddr)
	q := r.URL.Query()
	fail := func(cause string, err error) error {
		log.WarnContext(ctx, "login failed", "reason", cause, "error", err)
		g.metrics.loginsFaild.Add(1)
		g.audit(ctx, "", "login_failed", "", r.RemoteAddr, "oidc "+name+": "+cause)
		if errors.Is(err, auth.ErrUnavailable) {
			return g.loginFailed(w, r, apiErr(503, "auth_unavailable", "the login provider cannot be reached; try again later"))
		}
		return g.loginFailed(w, r, apiErr(401, "bad_login", "login failed"))
	}
	p := g.oidcProvider(name)
	if p == nil {
		return apiErr(404, "not_found", "no such login provider")
	}
	var (
		pend oidcPending
		ok   bool
	)
	if g.handoffs != nil {
		found, err := false, error(nil)
		if pend, found, ok, err = g.takeOIDCPending(ctx, r, q.Get("state")); err != nil {
			return storeFault("take a login under way", err)
		}
		if found && !ok {
			return fail("callback from a browser other than the one that started the login", nil)
		}
	} else {
		pend, ok = g.oidc.take(q.Get("state"))
	}
	switch {
	case !ok:
		return fail("unknown, expired or already used state", nil)
	case pend.provider != name:
		return fail("state belongs to provider "+pend.provider, nil)
	case !g.now().Before(pend.expires):
		return fail("the login took longer than "+oidcPendingTTL.String(), nil)
	}
	c, err := r.Cookie(oidcCookie)
	if err != nil || subtle.ConstantTimeCompare(sha256Sum(c.Value), pend.bind) != 1 {
		return fail("callback from a browser other than the one that started the login", nil)
	}
	if e := q.Get("error"); e != "" {
		return fail("provider answered "+trimLog(e)+": "+trimLog(q.Get("error_description")), nil)
	}
	id, tok, err := p.Finish(ctx, pend.pend, q.Get("code"))
	if err != nil {
		return fail("provider's answer refused", err)
	}
	if err := g.startLogin(w, r, id, session.Login{Provider: name, IDToken: tok.Raw}); err != nil {
		return err
	}
	log.InfoContext(ctx, "login", "user", id.User, "admin", id.Admin, "groups", strings.Join(id.Groups, ","))
	http.SetCookie(w, &http.Cookie{Name: oidcCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true})
	http.Redirect(w, r, pend.next, http.StatusSeeOther)
	return nil
}

// oidcPendingJSON is an oidcPending as the store keeps it for several
// gateways, by the SHA-256 of its state (its binding is the handoff's own).
type oidcPendingJSON struct {
	Provider string       `json:"provider"`
	Pending  oidc.Pending `json:"pending"`
	Next     string       `json:"next"`
	Expires  time.Time    `json:"expires"`
}

func (g *Gateway) putOIDCPending(ctx context.Context, p oidcPending, now time.Time) error {
	v, err := json.Marshal(oidcPendingJSON{Provider: p.provider, Pending: p.pend, Next: p.next, Expires: p.expires})
	if err != nil {
		return err
	}
	return g.handoffs.PutHandoff(ctx, sha256Sum(p.pend.State), p.bind, v, now, p.expires)
}

// takeOIDCPending takes the login under way with state if r's browser
// started it (found and mine). One started by another browser stays for
// it (found, not mine); the check of the binding that follows in the
// callback then holds by construction.
func (g *Gateway) takeOIDCPending(ctx context.Context, r *http.Request, state string) (oidcPending, bool, bool, error) {
	bind := []byte{0} // no cookie: matches no browser's binding
	if c, err := r.Cookie(oidcCookie); err == nil {
		bind = sha256Sum(c.Value)
	}
	v, found, mine, err := g.handoffs.TakeHandoff(ctx, sha256Sum(state), bind, g.now())
	if err != nil || !mine {
		return oidcPending{}, found, false, err
	}
	var j oidcPendingJSON
	if err := json.Unmarshal(v, &j); err != nil {
		return oidcPending{}, false, false, fmt.Errorf("login under way: %w", err)
	}
	return oidcPending{provider: j.Provider, pend: j.Pending, bind: bind, next: j.Next, expires: j.Expires}, true, true, nil
}

// trimLog shortens a provider's text for a log line.
func trimLog(s string) string {
	if len(s) > 200 {
		s = s[:200]
	}
	return strings.ToValidUTF8(s, "?")
}

// loginFailed shows the login page again with err's message (or, without
// a portal, answers with err).
func (g *Gateway) loginFailed(w http.ResponseWriter, r *http.Request, err error) error {
	if g.cfg.Portal == nil {
		// Answered here: returned, a 401 to a GET would become a
		// redirect to the login page, hiding that this login failed.
		writeErr(w, err)
		return nil
	}
	ae := asAPIError(err)
	v := g.loginView("/")
	v.Error = ae.Message
	return g.cfg.Portal.Login(w, ae.Status, v)
}

// providerLogout sends the browser on to u, the provider's end-session
// endpoint, after the logout form. Not a redirect: the portal's CSP
// (form-action 'self') rightly stops a form's redirect to another origin,
// and widening it for every provider would widen it for every form. A
// meta refresh (and a link) is a plain navigation, which it allows. The
// gateway login is already gone when this is sent.
func providerLogout(w http.ResponseWriter, u string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	e := html.EscapeString(u)
	fmt.Fprintf(w, `<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="0;url=%s"><title>Logged out</title>`+
		`<p>You are logged out of airlock. <a id="provider-logout" href="%s">Log out at your identity provider too</a>.</p>`, e, e)
}

// oidcLogoutURL is where to send a browser after logging out of l, to log
// out at its provider too; "" if l is not an OIDC login or the provider
// has no end-session endpoint.
func (g *Gateway) oidcLogoutURL(ctx context.Context, r *http.Request, l session.Login) string {
	if l.Provider == "" {
		return ""
	}
	p := g.oidcProvider(l.Provider)
	if p == nil {
		return ""
	}
	return p.LogoutURL(ctx, l.IDToken, g.baseURL(r)+"/login")
}
