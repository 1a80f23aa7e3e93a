package gateway

// Apps on their own origin.
//
// A web app's pages are hostile code: Alice's app, opened by Bob through a
// share, must not run as the gateway's origin, where it could call the API
// with Bob's cookie. So every app session gets a host of its own,
// https://ID.DOMAIN[:port]/, on the gateway's listener and routed by Host,
// and the browser never sends the gateway's cookies there (they are
// host-only). The app host serves nothing but the proxy and one handshake
// page: no API, no login, no portal.
//
// The handshake. The portal links to /s/ID/NAME/ on the gateway's origin.
// There the gateway checks who the visitor is and what they may do (the
// owner, or a share with its mode), mints a code bound to (session,
// connector, user, mode) that is good once and for 30 s, and redirects to
// https://ID.DOMAIN/_airlock/auth?code=C&next=/path. The app host redeems
// the code and sets __Host-airlock-app, an opaque random value that maps,
// in the gateway's memory, to the same (session, connector, user, mode)
// until it expires or is dropped (dropAppGrants: revocation, logout, user
// removal; recheckViewers: the same made through another gateway). A
// request on the app host without a valid cookie is sent back to the
// gateway's /s/ID/NAME/ (GET) or refused with 401.
//
// The codes and cookies live in memory only: a gateway restart forgets
// them, and the next GET on an app host goes through the handshake again
// (the login cookie survives a restart, so the visitor sees only a
// redirect).
//
// The routing is by host to session, then to the session's app connector,
// so `airlock forward` can later serve on the same hosts.

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/relay"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
	"github.com/airlock-hpc/airlock/internal/ticket"
)

// Apps says where web apps are served.
type Apps struct {
	// Domain is the parent of the app hosts: session ID is served at
	// https://ID.Domain[:port]/. It needs a wildcard DNS name and a
	// wildcard certificate. Default "apps.localhost": browsers resolve
	// every *.localhost name to loopback, so this works for a gateway on
	// 127.0.0.1 with no DNS.
	Domain string
	// SameOrigin serves apps on the gateway's own origin under /s/ID/NAME/
	// instead, as Open OnDemand does. Dangerous: a page of the app runs
	// as the gateway's origin. Every app response then carries a sandbox
	// Content-Security-Policy (no allow-same-origin), so the page runs with
	// an opaque origin and cannot use the viewer's gateway cookie.
	SameOrigin bool
}

const (
	// appCookie is the app host's cookie. __Host-: the browser accepts it
	// only Secure, for Path=/ and without Domain, so no other host (an
	// app host next door, a sibling under the same parent) can set or
	// shadow it.
	appCookie = "__Host-airlock-app"
	// appAuthPath is the app host's handshake endpoint. /_airlock/ is
	// reserved on app hosts: nothing under it reaches the app.
	appAuthPath = "/_airlock/auth"
	// shareCookiePrefix starts the name of a share link's cookie (then the
	// session ID); __Host- for the reason given at loginCookie.
	shareCookiePrefix = "__Host-airlock_share_"
	appReserved       = "/_airlock/"
	appCodeTTL        = 30 * time.Second
	maxAppCodes       = 100_000
	maxAppCookies     = 200_000
	// maxAppCookiesPerUser bounds what one user can make the gateway
	// keep by repeating the handshake; their oldest cookie goes first.
	maxAppCookiesPerUser = 256
	// sandboxCSP is the policy of every app response on the gateway's own
	// origin (Apps.SameOrigin): scripts and forms run, but in an opaque
	// origin, which neither reads nor sends the gateway's cookies as the
	// gateway's origin.
	sandboxCSP = "sandbox allow-scripts allow-forms allow-popups allow-downloads"
	// scriptCSP is the policy of app responses served to bearer-token
	// scripts on the gateway's origin: nothing runs if a browser ever
	// renders one.
	scriptCSP = "sandbox"
)

// appGrant is what an app code or cookie stands for: the connector, and
// the viewer's tag (viewer.tag) that the app host's proxied connections
// are registered under. The tag names the share link the grant came
// through (none for the owner; each request checks it is still valid) and
// the login or token that asked for it: revoking any of them drops the
// grant (dropAppGrants) and closes what it let in. Its Expires is the
// share link's or the login's expiry and, once redeemed, the cookie's.
type appGrant struct {
	viewerTag
	connector string
	created   time.Time
}

// appCode is a handshake code: the secret is compared in constant time.
type appCode struct {
	secretHash [32]byte
	grant      appGrant
}

// appAuth keeps the handshake codes and the app cookies.
type appAuth struct {
	mu      sync.Mutex
	codes   map[string]appCode               // by the code's public id
	cookies map[[32]byte]*appGrant           // by SHA-256 of the cookie value
	perUser map[string]map[[32]byte]struct{} // user → their cookies
	swept   time.Time
	// refused holds sealed cookies (by SHA-256) whose rights were found
	// gone (appshared.go), until they expire: a browser, or whoever
	// kept the cookie, showing it again costs no store query. A right
	// once gone does not come back (a logout, a revoked share or token,
	// an ended session), so the verdict holds.
	refused map[[32]byte]time.Time
}

// maxRefusedCookies bounds appAuth.refused; it starts over when full.
const maxRefusedCookies = 4096

// wasRefused reports whether the sealed cookie value was refused before.
func (a *appAuth) wasRefused(value string, now time.Time) bool {
	sum := sha256.Sum256([]byte(value))
	a.mu.Lock()
	defer a.mu.Unlock()
	until, ok := a.refused[sum]
	return ok && now.Before(until)
}

// refuse remembers that the sealed cookie value, good until until, was
// refused.
func (a *appAuth) refuse(value string, until time.Time) {
	sum := sha256.Sum256([]byte(value))
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.refused == nil || len(a.refused) >= maxRefusedCookies {
		a.refused = map[[32]byte]time.Time{}
	}
	a.refused[sum] = until
}

// mint returns a new code for gr, good once until gr.created+appCodeTTL.
func (a *appAuth) mint(gr appGrant, now time.Time) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.codes == nil {
		a.codes = map[string]appCode{}
	}
	if len(a.codes) >= maxAppCodes {
		for id, c := range a.codes {
			if !now.Before(c.grant.created.Add(appCodeTTL)) {
				delete(a.codes, id)
			}
		}
		if len(a.codes) >= maxAppCodes {
			return "", apiErr(503, "busy", "too many app logins at once; try again")
		}
	}
	id, secret := randomToken(9), randomToken(24)
	a.codes[id] = appCode{secretHash: sha256.Sum256([]byte(secret)), grant: gr}
	return id + "." + secret, nil
}

// Why a code is refused, for the page the visitor sees.
var (
	errCodeUnknown = errors.New("this sign-in link is not valid or was already used; open the app again from the portal")
	errCodeExpired = errors.New("this sign-in link has expired; open the app again from the portal")
	errCodeHost    = errors.New("this sign-in link is for another app")
)

// redeem spends code on the app host of session id.
func (a *appAuth) redeem(code, id string, now time.Time) (appGrant, error) {
	pub, secret, ok := strings.Cut(code, ".")
	if !ok {
		return appGrant{}, errCodeUnknown
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.codes[pub]
	if !ok {
		return appGrant{}, errCodeUnknown
	}
	sum := sha256.Sum256([]byte(secret))
	if subtle.ConstantTimeCompare(sum[:], c.secretHash[:]) != 1 {
		// A guess at the secret spends nothing: the code stays for its
		// owner, whose browser is about to use it.
		return appGrant{}, errCodeUnknown
	}
	delete(a.codes, pub)
	switch {
	case !now.Before(c.grant.created.Add(appCodeTTL)):
		return appGrant{}, errCodeExpired
	case c.grant.Session != id:
		return appGrant{}, errCodeHost
	}
	return c.grant, nil
}

// keep stores gr under a new cookie value and returns the value.
func (a *appAuth) keep(gr appGrant, now time.Time) (string, error) {
	value := randomToken(32)
	return value, a.put(value, gr, now)
}

// put stores gr under the cookie value.
func (a *appAuth) put(value string, gr appGrant, now time.Time) error {
	sum := sha256.Sum256([]byte(value))
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cookies == nil {
		a.cookies = map[[32]byte]*appGrant{}
		a.perUser = map[string]map[[32]byte]struct{}{}
	}
	if now.Sub(a.swept) > time.Minute || len(a.cookies) >= maxAppCookies {
		a.swept = now
		for k, g := range a.cookies {
			if !now.Before(g.Expires) {
				a.dropLocked(k)
			}
		}
		if len(a.cookies) >= maxAppCookies {
			return apiErr(503, "busy", "too many app logins; try again later")
		}
	}
	mine := a.perUser[gr.User]
	if mine == nil {
		mine = map[[32]byte]struct{}{}
		a.perUser[gr.User] = mine
	}
	if len(mine) >= maxAppCookiesPerUser {
		var oldest [32]byte
		var first time.Time
		for k := range mine {
			if c := a.cookies[k]; first.IsZero() || c.created.Before(first) {
				oldest, first = k, c.created
			}
		}
		a.dropLocked(oldest)
	}
	a.cookies[sum] = &gr
	mine[sum] = struct{}{}
	return nil
}

func (a *appAuth) dropLocked(k [32]byte) {
	g := a.cookies[k]
	if g == nil {
		return
	}
	delete(a.cookies, k)
	if m := a.perUser[g.User]; m != nil {
		delete(m, k)
		if len(m) == 0 {
			delete(a.perUser, g.User)
		}
	}
}

// tags returns the tag of every app cookie, by cookie (recheckViewers).
func (a *appAuth) tags() map[[32]byte]viewerTag {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := make(map[[32]byte]viewerTag, len(a.cookies))
	for k, g := range a.cookies {
		m[k] = g.viewerTag
	}
	return m
}

// drop forgets the cookies ks.
func (a *appAuth) drop(ks [][32]byte) {
	if len(ks) == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, k := range ks {
		a.dropLocked(k)
	}
}

// lookup returns the grant of the cookie value on session id's host.
func (a *appAuth) lookup(value, id string, now time.Time) (appGrant, bool) {
	sum := sha256.Sum256([]byte(value))
	a.mu.Lock()
	defer a.mu.Unlock()
	g := a.cookies[sum]
	if g == nil || g.Session != id {
		return appGrant{}, false
	}
	if !now.Before(g.Expires) {
		a.dropLocked(sum)
		return appGrant{}, false
	}
	return *g, true
}

// isAppConnector reports whether a session's connector name is its web app
// (the http kind): spec names it contract.ConnApp.
func isAppConnector(name string) bool { return name == contract.ConnApp }

// appsOwnOrigin reports whether apps are served on hosts of their own.
func (g *Gateway) appsOwnOrigin() bool { return !g.cfg.Apps.SameOrigin }

// appHostLabel returns the session ID a request's Host names under the
// apps domain, and whether the Host is under it at all. The label must be
// a session ID as newID makes them, which is a lower-case DNS label.
func (g *Gateway) appHostLabel(host string) (id string, under bool) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	d := g.cfg.Apps.Domain
	if host == d {
		return "", true
	}
	id, ok := strings.CutSuffix(host, "."+d)
	if !ok {
		return "", false
	}
	if !validSessionID(id) {
		// A forward's NAME-USER (forward.go), or nothing.
		fid, _ := g.forwardByLabel(id)
		if fid == "" {
			var err error
			if fid, err = g.forwardFromStore(id, true); err != nil {
				return storeFaultHost, true
			}
		}
		return fid, true
	}
	return id, true
}

// validSessionID reports whether id has newID's form: "s-" and 12 lower-case
// hex digits, which is also a valid DNS label.
func validSessionID(id string) bool {
	if len(id) != 14 || !strings.HasPrefix(id, "s-") {
		return false
	}
	for _, c := range id[2:] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// appURL is the app host of session id as the visitor of r reaches the
// gateway: same scheme and port, host ID.Domain.
func (g *Gateway) appURL(r *http.Request, id string) string {
	host := g.hostLabel(id) + "." + g.cfg.Apps.Domain
	if _, port, err := net.SplitHostPort(r.Host); err == nil && port != "443" {
		host = net.JoinHostPort(host, port)
	}
	return "https://" + host
}

// withHosts routes requests for app hosts to the app host handler; all
// others go to gw.
func (g *Gateway) withHosts(gw http.Handler) http.Handler {
	if !g.appsOwnOrigin() {
		return gw
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, under := g.appHostLabel(r.Host)
		if !under {
			gw.ServeHTTP(w, r)
			return
		}
		g.appHost(w, r, id)
	})
}

// appText answers on an app host with plain text: it has no portal, no
// stylesheet and no script to show a page with.
func appText(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'")
	w.WriteHeader(status)
	fmt.Fprintln(w, msg)
}

// appHost serves one app host: the handshake, and the proxy to the app.
func (g *Gateway) appHost(w http.ResponseWriter, r *http.Request, id string) {
	w.Header().Set("Strict-Transport-Security", "max-age=31536000")
	switch id {
	case "":
		appText(w, http.StatusNotFound, "no such app")
		return
	case storeFaultHost:
		w.Header().Set("Retry-After", "2")
		appText(w, http.StatusServiceUnavailable, "the gateway cannot look this app up just now; try again")
		return
	}
	switch {
	case r.URL.Path == appAuthPath:
		g.appRedeem(w, r, id)
	case strings.HasPrefix(r.URL.Path, appReserved):
		appText(w, http.StatusNotFound, "not found")
	default:
		g.appProxy(w, r, id)
	}
}

// appRedeem is the app host's end of the handshake: spend the code, set
// the cookie, go on to next.
func (g *Gateway) appRedeem(w http.ResponseWriter, r *http.Request, id string) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		appText(w, http.StatusMethodNotAllowed, "the sign-in link takes GET only")
		return
	}
	now := g.now()
	var gr appGrant
	var err error
	if g.sharedAppAuth() {
		gr, err = g.redeemShared(r.Context(), r.URL.Query().Get("code"), id, now)
	} else {
		gr, err = g.appAuth.redeem(r.URL.Query().Get("code"), id, now)
	}
	if isStoreFault(err) {
		g.log.ErrorContext(r.Context(), "app sign-in: the store does not answer", "session", id, "error", err)
		w.Header().Set("Retry-After", "2")
		appText(w, http.StatusServiceUnavailable, "the gateway cannot check this sign-in link just now; reload the page to try again")
		return
	}
	if err != nil {
		g.log.WarnContext(r.Context(), "app sign-in refused", "session", id, "remote_addr", r.RemoteAddr, "reason", err)
		status := http.StatusForbidden
		if errors.Is(err, errCodeUnknown) {
			status = http.StatusBadRequest
		}
		appText(w, status, err.Error())
		return
	}
	// Nor may the cookie outlive the share link or the login it came by.
	gr.Expires = earliest(now.Add(g.cfg.LoginTTL), gr.Expires)
	gr.created = now
	var value string
	if g.sharedAppAuth() {
		value, err = g.sealAppCookie(gr)
		if err == nil {
			err = g.appAuth.put(value, gr, now)
		}
	} else {
		value, err = g.appAuth.keep(gr, now)
	}
	if err != nil {
		ae := asAPIError(err)
		appText(w, ae.Status, ae.Message)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: appCookie, Value: value, Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteLaxMode, MaxAge: int(gr.Expires.Sub(now) / time.Second)})
	g.audit(r.Context(), gr.User, "app_signin", gr.Session, r.RemoteAddr, fmt.Sprintf("%s (%s)", gr.connector, gr.Mode))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, appNext(r.URL.Query().Get("next")), http.StatusSeeOther)
}

// appNext keeps the redirect after the handshake on the app host: a path
// that a browser cannot read as another host (no "//", no backslash, no
// control characters or spaces, which browsers drop or fold into the
// authority).
func appNext(next string) string {
	if len(next) == 0 || next[0] != '/' || len(next) > 1 && (next[1] == '/' || next[1] == '\\') {
		return "/"
	}
	for _, c := range next {
		if c <= ' ' || c == '\\' || c == 0x7f {
			return "/"
		}
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil {
		return "/"
	}
	return next
}

// appStart is /s/ID/NAME/... on the gateway's origin for a session's web
// app. With apps on their own origin, a browser (login cookie or trusted
// header) gets the handshake: a code and a redirect to the app host. A
// script with a bearer token is proxied here (browsers never send bearer
// tokens on their own, so no page a browser shows runs with them), with a
// CSP that runs nothing should a browser render the answer. With
// Apps.SameOrigin, everyone is proxied here with the sandbox CSP.
func (g *Gateway) appStart(w http.ResponseWriter, r *http.Request) error {
	id, conn := r.PathValue("id"), r.PathValue("connector")
	who, err := g.identify(r)
	if err != nil {
		if asAPIError(err).Status == 401 && r.Method == http.MethodGet && r.Header.Get("Sec-Fetch-Mode") == "navigate" && g.cfg.Portal != nil {
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return nil
		}
		return err
	}
	bearer := r.Header.Get("Authorization") != ""
	if !g.appsOwnOrigin() || bearer {
		csp := sandboxCSP
		if g.appsOwnOrigin() {
			csp = scriptCSP
		}
		return g.proxyApp(w, r, who, csp)
	}
	s, v, err := g.viewable(r, who, id, conn)
	if err != nil {
		return err
	}
	if !validSessionID(s.ID) {
		return fmt.Errorf("session id %q is not a DNS label", s.ID)
	}
	rest := strings.TrimPrefix(r.URL.EscapedPath(), "/s/"+s.ID+"/"+conn)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return apiErr(421, "app_elsewhere", "this app is served at "+g.appURL(r, s.ID)+rest+"; send requests there")
	}
	next := cmp.Or(rest, "/")
	if r.URL.RawQuery != "" {
		next += "?" + r.URL.RawQuery
	}
	gr := appGrant{viewerTag: v.tag(s, who), connector: conn, created: g.now()}
	var code string
	if g.sharedAppAuth() {
		code, err = g.mintShared(r.Context(), gr)
	} else {
		code, err = g.appAuth.mint(gr, g.now())
	}
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, g.appURL(r, s.ID)+appAuthPath+"?"+url.Values{"code": {code}, "next": {next}}.Encode(), http.StatusSeeOther)
	return nil
}

// appProxy is every request on an app host but the handshake: with a valid
// cookie it goes to the session's app, else back to the gateway.
func (g *Gateway) appProxy(w http.ResponseWriter, r *http.Request, id string) {
	var gr appGrant
	ok := false
	for _, c := range r.CookiesNamed(appCookie) {
		if gr, ok = g.appAuth.lookup(c.Value, id, g.now()); ok {
			break
		}
	}
	if !ok && g.sharedAppAuth() {
		// Set by another gateway of the site, or by this one before a
		// restart or a revocation: its seal says what it was for.
		var fault error
		for _, c := range r.CookiesNamed(appCookie) {
			var err error
			if gr, ok, err = g.adoptAppCookie(r.Context(), c.Value, id); ok {
				break
			}
			fault = cmp.Or(fault, err)
		}
		if !ok && fault != nil {
			w.Header().Set("Retry-After", "2")
			appText(w, http.StatusServiceUnavailable, "the gateway cannot check your sign-in to this app just now; reload the page to try again")
			return
		}
	}
	if !ok {
		if (r.Method == http.MethodGet || r.Method == http.MethodHead) && !isWebSocket(r) {
			// The gateway decides who this is; it sends the browser back
			// here with a code, or to the login page first.
			back := g.gatewayURL(r) + "/s/" + id + "/app" + r.URL.EscapedPath()
			if r.URL.RawQuery != "" {
				back += "?" + r.URL.RawQuery
			}
			w.Header().Set("Cache-Control", "no-store")
			http.Redirect(w, r, back, http.StatusSeeOther)
			return
		}
		appText(w, http.StatusUnauthorized, "not signed in to this app: open it from the airlock portal ("+g.gatewayURL(r)+")")
		return
	}
	if err := crossOrigin.Check(r); err != nil || isWebSocket(r) && !originIs(r, r.Host) {
		// Another origin (another app host under the same parent domain
		// is same-site, so SameSite=Lax lets its forms and WebSocket
		// handshakes carry our cookie) must not act as the viewer here.
		appText(w, http.StatusForbidden, "cross-origin request refused")
		return
	}
	s, err := g.readySession(r.Context(), id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			appText(w, http.StatusNotFound, "this session is gone")
			return
		}
		g.log.ErrorContext(r.Context(), "app host: get session", "session", id, "error", err)
		appText(w, http.StatusServiceUnavailable, "the gateway could not look the session up; try again")
		return
	}
	if gr.shareHash != nil {
		if _, err := g.cachedShare(r.Context(), gr.shareHash, s.ID); err != nil {
			ae := asAPIError(err)
			switch {
			case isStoreFault(err):
				// Not a "no": the cookies stay.
				g.log.ErrorContext(r.Context(), "app host: share lookup", "session", id, "error", err)
			case err == errNoSession:
				ae = asAPIError(apiErr(403, "bad_share", "the share link is not valid"))
				fallthrough
			default:
				g.dropAppGrants(revokeEvent{Share: gr.Share})
			}
			appText(w, ae.Status, ae.Message)
			return
		}
	}
	if s.State != session.Ready {
		appText(w, http.StatusConflict, fmt.Sprintf("session %s is %s", s.ID, s.State))
		return
	}
	if _, ok := s.Endpoints[gr.connector]; !ok {
		appText(w, http.StatusNotFound, fmt.Sprintf("session %s has no connector %q", s.ID, gr.connector))
		return
	}
	g.forward(w, r, s, gr.connector, gr.viewerTag, false, "")
}

// dropAppGrants is the revocation hook: every app cookie whose grant came
// from the right ev takes away is forgotten, so its next request goes
// through the handshake again, where the gateway decides afresh.
func (g *Gateway) dropAppGrants(ev revokeEvent) {
	a := &g.appAuth
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, gr := range a.cookies {
		if ev.matches(gr.viewerTag) {
			a.dropLocked(k)
		}
	}
}

// proxyApp serves an app on the gateway's origin (/s/ID/NAME/...), with csp
// on every answer.
func (g *Gateway) proxyApp(w http.ResponseWriter, r *http.Request, who identity, csp string) error {
	conn := r.PathValue("connector")
	s, v, err := g.viewable(r, who, r.PathValue("id"), conn)
	if err != nil {
		return err
	}
	strip := true // on its own origin the app lives at "/"
	if !g.appsOwnOrigin() {
		p, _ := g.profile(s.Profile)
		strip = p.StripPrefix
	}
	g.forward(w, r, s, conn, v.tag(s, who), strip, csp)
	return nil
}

// appRoute is the handler of /s/{id}/{connector}/ on the gateway's origin:
// the app connector as above; every other connector (the desktop's VNC
// console) through the API's rules as before.
func (g *Gateway) appRoute() http.Handler {
	other := g.api(g.proxy)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isWebSocket(r) && !g.sameOrigin(r) {
			// A WebSocket handshake is a GET that CORS does not guard, and
			// the browser sends the login cookie with it from any page of
			// the same site: an app host under the same parent domain is
			// one. Without this, Alice's app page opened by Bob could open
			// Bob's desktop as Bob.
			g.log.WarnContext(r.Context(), "refused: WebSocket from another origin", "origin", r.Header.Get("Origin"), "path", r.URL.Path, "remote_addr", r.RemoteAddr)
			writeErr(w, apiErr(403, "cross_origin", "WebSocket from another origin refused"))
			return
		}
		if !isAppConnector(r.PathValue("connector")) {
			other.ServeHTTP(w, r)
			return
		}
		// Not g.api: an app takes any method, content type and body
		// (forms, uploads), streamed; only the cross-origin rule stays.
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if err := crossOrigin.Check(r); err != nil {
				writeErr(w, apiErr(403, "cross_origin", "cross-origin request refused"))
				return
			}
		}
		if err := g.appStart(w, r); err != nil {
			ae := asAPIError(err)
			if ae.Status >= 500 {
				g.log.ErrorContext(r.Context(), "app request failed", "method", r.Method, "path", r.URL.Path, "error", err)
			}
			w.Header().Set("Cache-Control", "no-store")
			writeErr(w, err)
		}
	})
}

// sameOrigin reports whether r comes from a page of the gateway's own
// origin (its Host, or the configured public URL's), or from no page at
// all (no Origin: not a browser).
func (g *Gateway) sameOrigin(r *http.Request) bool {
	if originIs(r, r.Host) {
		return true
	}
	if g.cfg.PublicURL == "" {
		return false
	}
	gw, err := url.Parse(g.cfg.PublicURL)
	return err == nil && originIs(r, gw.Host)
}

// originIs reports whether r has no Origin (not from a browser page) or
// the Origin https://host.
func originIs(r *http.Request, host string) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Scheme == "https" && u.Path == "" && strings.EqualFold(u.Host, host)
}

// isWebSocket reports whether r asks to upgrade to a WebSocket.
func isWebSocket(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// stripAirlockCookies removes the gateway's and the app host's own cookies
// from a request bound for a session.
func stripAirlockCookies(h http.Header) {
	stripCookies(h, "airlock_")
	stripCookies(h, "__Host-airlock")
}

// forward proxies r to connector conn of s as viewer v (WebSocket
// upgrades included), with the connector's cookie kept for v or else a
// fresh single-use ticket (fastpath.go). strip removes the /s/ID/NAME
// prefix from the path; csp, if set, goes on every answer.
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, s *session.Session, conn string, v viewerTag, strip bool, csp string) {
	p := &hopParams{s: s, conn: conn, strip: strip, csp: csp, key: hopKey{s.ID, conn, v.User, v.Mode}, remote: r.RemoteAddr}
	if !isForward(s) {
		// A forward has no connector to check a ticket.
		if h, ok := g.fast.hop(p.key, g.now()); ok {
			p.hop = h
		} else {
			p.gen = g.fast.generation()
			var err error
			p.tok, err = ticket.Sign(g.sessionKey(s.ID), ticket.Claims{
				Session: s.ID, Connector: conn, User: v.User, Mode: ticket.Mode(v.Mode), Expires: g.now().Add(ticketTTL),
			})
			if err != nil {
				g.log.ErrorContext(r.Context(), "sign ticket", "session", s.ID, "error", err)
				writeErr(w, err)
				return
			}
		}
	}
	if isForward(s) && v.Mode == session.View {
		// A forwarded app has no connector to hold a viewer to view-only
		// (connector/http.go does it for app sessions): the gateway does,
		// by the same rule.
		if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodOptions || r.Header.Get("Upgrade") != "" {
			writeErr(w, apiErr(403, "view_only", "view-only access: "+r.Method+" and protocol upgrades are not allowed"))
			return
		}
	}
	upgrade := isWebSocket(r)
	if upgrade {
		g.audit(r.Context(), v.User, "connect", s.ID, r.RemoteAddr, fmt.Sprintf("%s (%s)", conn, v.Mode))
	}
	// Every proxied request is tracked, not only WebSockets: an app's
	// event stream is as long-lived as a viewer, and revoking the right it
	// came in by must end it too.
	// Serve's shutdown cancels the context too, which closes hijacked
	// connections; a plain request only counts as activity.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer g.track(v, cancel)()
	if upgrade {
		done := g.viewerStart(s.ID)
		defer done()
	} else {
		g.touch(s.ID, false)
	}
	g.reverseProxy().ServeHTTP(w, r.WithContext(context.WithValue(ctx, hopParamsKey{}, p)))
}

// hopParams is what the shared reverse proxy needs of one request.
type hopParams struct {
	s     *session.Session
	conn  string
	strip bool
	csp   string
	key   hopKey
	hop   hopCookie // the connector's cookie to send, if any …
	tok   string    // … else a fresh ticket
	gen   uint64    // the fast cache's generation when tok was signed
	// remote is the viewer's address, for the audit of a recording.
	remote string
}

type hopParamsKey struct{}

func hopParamsOf(ctx context.Context) *hopParams {
	p, _ := ctx.Value(hopParamsKey{}).(*hopParams)
	return p
}

// reverseProxy is the one reverse proxy of every proxied request; what is
// particular to a request comes in its context (hopParams).
func (g *Gateway) reverseProxy() *httputil.ReverseProxy {
	g.rpOnce.Do(func() {
		g.rp = &httputil.ReverseProxy{
			Rewrite: g.rewriteHop,
			Transport: roundTripFunc(func(req *http.Request) (*http.Response, error) {
				p := hopParamsOf(req.Context())
				return g.transport(p.s.Endpoints[p.conn], p.s.TLSSHA256).RoundTrip(req)
			}),
			ModifyResponse: func(resp *http.Response) error {
				p := hopParamsOf(resp.Request.Context())
				switch {
				case p.tok != "" && resp.StatusCode < 400:
					// The connector answered the ticket with its cookie
					// (http kind): the requests after this one carry that.
					g.fast.keepHop(p.key, resp.Header, g.now(), p.gen)
				case p.hop.value != "" && resp.StatusCode == http.StatusUnauthorized:
					g.fast.dropHop(p.key)
				}
				stripSetCookies(resp.Header, "airlock_")
				stripSetCookies(resp.Header, "__Host-airlock")
				if p.csp != "" {
					resp.Header.Set("Content-Security-Policy", p.csp)
				}
				if resp.StatusCode == http.StatusSwitchingProtocols && g.recordable(p.s, p.conn) {
					return g.tapRecording(resp, p.s, p.conn, p.key.user, p.remote)
				}
				return nil
			},
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				p := hopParamsOf(r.Context())
				g.log.WarnContext(r.Context(), "proxy to app", "session", p.s.ID, "connector", p.conn, "error", err)
				writeErr(w, apiErr(502, "connector_unreachable", "the session did not answer"))
			},
			// No FlushInterval: httputil flushes every write by itself for
			// an event stream or a body of unknown length (chunked
			// streaming), and upgrades (framebuffers) are copied raw. A
			// body of known length goes out as the server's buffer fills.
			// An interval of -1 here cost every small answer a timer, a
			// goroutine and a TLS record of its own for the header
			// (BenchmarkForward, BenchmarkAppPath).
			BufferPool: relay.ProxyBuffers,
		}
	})
	return g.rp
}

// rewriteHop makes the request to the connector.
func (g *Gateway) rewriteHop(pr *httputil.ProxyRequest) {
	p := hopParamsOf(pr.In.Context())
	// Always "http": for a node's TCP endpoint the transport's
	// DialContext already speaks TLS (pinned); "https" would make
	// http.Transport wrap that in TLS a second time.
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = "session"
	if p.strip {
		prefix := "/s/" + p.s.ID + "/" + p.conn
		pr.Out.URL.Path = cmp.Or(strings.TrimPrefix(pr.In.URL.Path, prefix), "/")
		pr.Out.URL.RawPath = ""
	}
	pr.Out.Host = pr.In.Host // apps such as Jupyter compare Origin with Host
	pr.SetXForwarded()
	// The gateway's own cookies (the login, share links, the app
	// host's) are for the gateway; the connector gets a ticket.
	stripAirlockCookies(pr.Out.Header)
	// The trusted proxy's identity header vouched for the user to
	// us; an app must not take it as a login of its own.
	if g.cfg.HeaderName != "" {
		pr.Out.Header.Del(g.cfg.HeaderName)
	}
	// Whatever Authorization came (a user's bearer token) is replaced
	// by the connector's cookie or a ticket: the app never sees a
	// gateway credential. A forwarded app has no connector to check a
	// ticket, and would take it for a credential of its own.
	pr.Out.Header.Del("Authorization")
	switch {
	case p.hop.value != "":
		c := p.hop.name + "=" + p.hop.value
		if old := pr.Out.Header.Get("Cookie"); old != "" {
			c = old + "; " + c
		}
		pr.Out.Header.Set("Cookie", c)
	case p.tok != "":
		pr.Out.Header.Set("Authorization", "Bearer "+p.tok)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
