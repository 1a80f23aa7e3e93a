package connector

import (
	"cmp"
	"context"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/relay"
	"github.com/airlock-hpc/airlock/internal/ticket"
)

// cookiePrefix starts the name of every cookie airlock sets. The http kind
// strips all such cookies from requests before the app sees them, and all
// such Set-Cookie headers from the app's responses: the gateway may forward
// other sessions' cookies on the same origin, and an app must neither read
// them nor plant one.
const cookiePrefix = "airlock_"

// cookieKeyInfo labels the key derived from Config.Key to sign cookies.
// Cookies and tickets share the token format but not the key, so a
// 12-hour cookie cannot be replayed as a single-use ticket (to mint
// another cookie and live forever) and a ticket cannot pose as a cookie
// (to escape the replay guard).
const cookieKeyInfo = "airlock connector http cookie v1"

// httpConnector is the http kind's handler: tickets and cookies in, a
// reverse proxy to the app out.
//
// A request is admitted by, in order:
//
//  1. a "ticket" query parameter (a browser arriving from the portal): the
//     ticket is spent and exchanged for an HttpOnly cookie, and the answer
//     is a 303 to the same URL without the parameter, so the ticket leaves
//     the address bar and the history;
//  2. the cookie;
//  3. an "Authorization: Bearer" ticket (scripts): it is spent, the request
//     is proxied at once (so a POST keeps its body) and the response
//     carries the cookie for the requests that follow.
//
// A view-mode ticket or cookie allows GET, HEAD and OPTIONS only and no
// protocol upgrade, so a viewer cannot open the app's WebSockets (Jupyter
// kernels, code-server terminals). This is coarse: an app that changes
// state on GET is not protected by it.
type httpConnector struct {
	s          *server
	proxy      *httputil.ReverseProxy
	transport  *http.Transport
	target     *url.URL
	cookieName string
	cookieKey  ticket.Key
}

// Context keys for what ServeHTTP tells the proxy callbacks.
type (
	setCookieKey struct{} // *http.Cookie to add to the response
	bearerKey    struct{} // true when Authorization held our ticket
	claimsKey    struct{} // ticket.Claims of the admitted request
)

// serveHTTPKind is the http kind: the reverse proxy on ln until ctx ends.
func (s *server) serveHTTPKind(ctx context.Context, ln net.Listener) error {
	h, err := s.newHTTPConnector()
	if err != nil {
		return err
	}
	defer h.transport.CloseIdleConnections()
	return s.serveHTTP(ctx, ln, h)
}

func (s *server) newHTTPConnector() (*httpConnector, error) {
	secret := s.cfg.Key[:]
	if k, _ := contract.Lookup(s.cfg.Kind); k.Secret {
		// No ticket key: the cookies are signed with a key of this
		// process's own, so they end with it (a restarted connector sends
		// the user back to the OnDemand card).
		secret = make([]byte, len(ticket.Key{}))
		if _, err := rand.Read(secret); err != nil {
			return nil, fmt.Errorf("cookie key: %w", err)
		}
	}
	ck, err := hkdf.Key(sha256.New, secret, nil, cookieKeyInfo, len(ticket.Key{}))
	if err != nil {
		return nil, fmt.Errorf("derive cookie key: %w", err)
	}
	h := &httpConnector{
		s:          s,
		cookieName: cookiePrefix + cookieSafe(s.cfg.Session) + "_" + cookieSafe(s.cfg.Name),
		cookieKey:  ticket.Key(ck),
		target:     &url.URL{Scheme: "http", Host: s.target.address},
	}
	if s.target.network == "unix" {
		// Any host will do: the dialer ignores it. The Host header is the
		// client's anyway (see rewrite).
		h.target.Host = "localhost"
	}
	h.transport = &http.Transport{
		// Proxy is nil on purpose: an HTTP_PROXY in the environment must
		// not send the app's traffic anywhere but the target.
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			d := net.Dialer{Timeout: dialTimeout}
			c, err := d.DialContext(ctx, s.target.network, s.target.address)
			if err != nil {
				return nil, err
			}
			tc := &trackedConn{Conn: c, s: s, start: time.Now()}
			if !s.register(tc) {
				c.Close()
				return nil, net.ErrClosed
			}
			return tc, nil
		},
		// As many idle connections to the app as the gateway keeps to
		// us under load (100 concurrent clients in BenchmarkAppProxy):
		// with 32, every request past the 32nd closed its connection and
		// the next dialled a new one.
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     httpIdleTimeout,
		// Pass the app's encodings through untouched.
		DisableCompression: true,
	}
	h.proxy = &httputil.ReverseProxy{
		Rewrite:        h.rewrite,
		Transport:      h.transport,
		ModifyResponse: h.modifyResponse,
		ErrorHandler:   h.proxyError,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BufferPool:     relay.ProxyBuffers,
	}
	return h, nil
}

// cookieSafe maps s into characters that are safe in a cookie name.
func cookieSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x80 && (r == '-' || r == '.' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z') {
			return r
		}
		return '_'
	}, s)
}

// ServeHTTP admits the request by ticket or cookie (see httpConnector)
// and proxies it to the app.
func (h *httpConnector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := h.s
	done, ok := s.enter()
	if !ok {
		http.Error(w, "connector shutting down", http.StatusServiceUnavailable)
		return
	}
	defer done()
	ctx := r.Context()
	now := s.cfg.Now()
	refuse := func(rf refusal, attrs ...any) {
		s.logRefusal(ctx, r.RemoteAddr, rf, append(attrs, "method", r.Method, "path", r.URL.Path)...)
		writeRefusal(w, rf)
	}

	if r.URL.Query().Has("ticket") {
		h.exchange(w, r, now, refuse)
		return
	}

	claims, cerr := h.checkCookie(r, now)
	if cerr != nil {
		tok := bearer(r)
		if tok == "" {
			if errors.Is(cerr, http.ErrNoCookie) {
				refuse(refusal{http.StatusUnauthorized, "ticket missing: open the app from the airlock portal", nil})
			} else {
				refuse(cookieRefusal(cerr))
			}
			return
		}
		var rf refusal
		if claims, rf, ok = h.spend(tok, now); !ok {
			refuse(rf, "ticket", ticket.Token(tok))
			return
		}
		c, err := h.cookie(claims, now)
		if err != nil {
			refuse(refusal{http.StatusInternalServerError, "could not issue cookie", err})
			return
		}
		ctx = context.WithValue(ctx, setCookieKey{}, c)
		ctx = context.WithValue(ctx, bearerKey{}, true)
		s.log.InfoContext(ctx, "ticket accepted", "remote_addr", r.RemoteAddr, "user", claims.User, "mode", claims.Mode, "via", "bearer")
	}
	h.proxyAdmitted(w, r.WithContext(ctx), claims, refuse)
}

// proxyAdmitted proxies an admitted request to the app, within what the
// claims' mode allows.
func (h *httpConnector) proxyAdmitted(w http.ResponseWriter, r *http.Request, claims ticket.Claims, refuse func(refusal, ...any)) {
	ctx := r.Context()
	who := []any{"user", claims.User, "mode", claims.Mode}

	if claims.Mode == ticket.View {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
		default:
			refuse(refusal{http.StatusForbidden, "view-only access: method " + r.Method + " not allowed", nil}, who...)
			return
		}
		if isUpgrade(r) {
			refuse(refusal{http.StatusForbidden, "view-only access: WebSocket and other upgrades not allowed", nil}, who...)
			return
		}
	}
	if tc := trackedFrom(ctx); tc != nil {
		tc.peer.Store(&claims)
	}
	ctx = context.WithValue(ctx, claimsKey{}, claims)
	start := time.Now()
	upgrade := isUpgrade(r)
	h.proxy.ServeHTTP(w, r.WithContext(ctx))
	if upgrade {
		h.s.log.InfoContext(ctx, "upgrade ended", append(who, "remote_addr", r.RemoteAddr, "path", r.URL.Path, "duration", time.Since(start))...)
	}
}

// exchange spends the ticket in the query for a cookie and redirects to
// the URL without it.
func (h *httpConnector) exchange(w http.ResponseWriter, r *http.Request, now time.Time, refuse func(refusal, ...any)) {
	s := h.s
	tok := r.URL.Query().Get("ticket")
	claims, rf, ok := h.spend(tok, now)
	if !ok {
		// A browser restoring a tab reloads the old ticket URL. If it
		// still holds a good cookie, that is not an attack: send it on.
		if _, err := h.checkCookie(r, now); err == nil {
			s.log.InfoContext(r.Context(), "ticket refused, cookie valid; redirecting",
				"remote_addr", r.RemoteAddr, "reason", rf.reason, "ticket", ticket.Token(tok))
			redirectWithoutTicket(w, r)
			return
		}
		refuse(rf, "ticket", ticket.Token(tok))
		return
	}
	c, err := h.cookie(claims, now)
	if err != nil {
		refuse(refusal{http.StatusInternalServerError, "could not issue cookie", err})
		return
	}
	http.SetCookie(w, c)
	if tc := trackedFrom(r.Context()); tc != nil {
		tc.peer.Store(&claims)
	}
	s.log.InfoContext(r.Context(), "ticket accepted", "remote_addr", r.RemoteAddr, "user", claims.User, "mode", claims.Mode, "via", "query")
	redirectWithoutTicket(w, r)
}

// spend checks a ticket and marks it used.
func (h *httpConnector) spend(tok string, now time.Time) (ticket.Claims, refusal, bool) {
	s := h.s
	claims, err := ticket.Check(s.cfg.Key, tok, s.cfg.Session, s.cfg.Name, now)
	if err != nil {
		return claims, ticketRefusal(err), false
	}
	if err := checkMode(claims); err != nil {
		return claims, refusal{http.StatusForbidden, "ticket mode unknown", err}, false
	}
	if err := s.guard.Use(claims, now); err != nil {
		return claims, ticketRefusal(err), false
	}
	return claims, refusal{}, true
}

// cookie returns the cookie that stands for claims for CookieTTL.
func (h *httpConnector) cookie(c ticket.Claims, now time.Time) (*http.Cookie, error) {
	ttl := h.s.cfg.CookieTTL
	tok, err := ticket.Sign(h.cookieKey, ticket.Claims{
		Session:   h.s.cfg.Session,
		Connector: h.s.cfg.Name,
		User:      c.User,
		Mode:      c.Mode,
		Expires:   now.Add(ttl),
	})
	if err != nil {
		return nil, err
	}
	return &http.Cookie{
		Name:     h.cookieName,
		Value:    tok,
		Path:     cmp.Or(h.s.cfg.CookiePath, "/"),
		MaxAge:   int(ttl / time.Second),
		HttpOnly: true,
		Secure:   h.s.cfg.TLS != nil,
		SameSite: http.SameSiteStrictMode,
	}, nil
}

// checkCookie returns the claims of the first valid cookie of ours, or the
// error of the first invalid one, or http.ErrNoCookie.
func (h *httpConnector) checkCookie(r *http.Request, now time.Time) (ticket.Claims, error) {
	first := http.ErrNoCookie
	for _, c := range r.CookiesNamed(h.cookieName) {
		claims, err := ticket.Check(h.cookieKey, c.Value, h.s.cfg.Session, h.s.cfg.Name, now)
		if err == nil {
			err = checkMode(claims)
		}
		if err == nil {
			return claims, nil
		}
		if first == http.ErrNoCookie {
			first = err
		}
	}
	return ticket.Claims{}, first
}

// cookieRefusal maps a bad cookie to a refusal. An expired cookie is 401:
// the user only needs to come back through the portal.
func cookieRefusal(err error) refusal {
	if errors.Is(err, ticket.ErrExpired) {
		return refusal{http.StatusUnauthorized, "cookie expired: open the app from the airlock portal again", err}
	}
	rf := ticketRefusal(err)
	rf.reason = "cookie invalid: " + rf.reason
	return rf
}

// redirectWithoutTicket answers 303 See Other with the request's URL less
// its ticket parameter. The Location is relative ("./name?rest"), so it
// stays right when the gateway serves the app under a path prefix that it
// strips before the request gets here.
func redirectWithoutTicket(w http.ResponseWriter, r *http.Request) {
	p := r.URL.EscapedPath()
	loc := "./" + p[strings.LastIndexByte(p, '/')+1:]
	if q := stripQueryParam(r.URL.RawQuery, "ticket"); q != "" {
		loc += "?" + q
	}
	w.Header().Set("Location", loc)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusSeeOther)
}

// stripQueryParam removes every name=value pair named name from a raw
// query and leaves the others byte for byte as they were.
func stripQueryParam(raw, name string) string {
	if raw == "" {
		return ""
	}
	var keep []string
	for part := range strings.SplitSeq(raw, "&") {
		k, _, _ := strings.Cut(part, "=")
		if uk, err := url.QueryUnescape(k); err == nil && uk == name || k == name {
			continue
		}
		keep = append(keep, part)
	}
	return strings.Join(keep, "&")
}

// stripAirlockCookies removes airlock's cookies from a request's Cookie
// headers, leaving the others as they were.
func stripAirlockCookies(h http.Header) {
	var out []string
	for _, line := range h.Values("Cookie") {
		var keep []string
		for part := range strings.SplitSeq(line, ";") {
			name, _, _ := strings.Cut(strings.TrimSpace(part), "=")
			if strings.HasPrefix(name, cookiePrefix) {
				continue
			}
			if strings.TrimSpace(part) != "" {
				keep = append(keep, strings.TrimSpace(part))
			}
		}
		if len(keep) > 0 {
			out = append(out, strings.Join(keep, "; "))
		}
	}
	h.Del("Cookie")
	if len(out) > 0 {
		// RFC 6265 §5.4: a request carries at most one Cookie header.
		h.Set("Cookie", strings.Join(out, "; "))
	}
}

// rewrite turns the admitted request into the app's request.
func (h *httpConnector) rewrite(pr *httputil.ProxyRequest) {
	pr.SetURL(h.target)
	// Keep the client's Host: apps such as Jupyter compare Origin with
	// Host on WebSocket upgrades, and build links from it.
	pr.Out.Host = pr.In.Host
	// The app is on loopback behind us; the X-Forwarded-* that Rewrite
	// removed came from the peer and are not trusted.
	pr.SetXForwarded()
	// Belt and braces: ServeHTTP never proxies a request with a ticket
	// parameter, and the app must never see one.
	pr.Out.URL.RawQuery = stripQueryParam(pr.Out.URL.RawQuery, "ticket")
	stripAirlockCookies(pr.Out.Header)
	if used, _ := pr.In.Context().Value(bearerKey{}).(bool); used {
		pr.Out.Header.Del("Authorization")
	}
}

// modifyResponse keeps the app from setting airlock's cookies, adds the
// cookie a Bearer ticket was exchanged for, and logs the request.
func (h *httpConnector) modifyResponse(resp *http.Response) error {
	if vals := resp.Header.Values("Set-Cookie"); len(vals) > 0 {
		resp.Header.Del("Set-Cookie")
		for _, v := range vals {
			name, _, _ := strings.Cut(v, "=")
			if strings.HasPrefix(strings.TrimSpace(name), cookiePrefix) {
				h.s.log.WarnContext(resp.Request.Context(), "app tried to set an airlock cookie; dropped", "cookie", strings.TrimSpace(name))
				continue
			}
			resp.Header.Add("Set-Cookie", v)
		}
	}
	ctx := resp.Request.Context()
	if c, ok := ctx.Value(setCookieKey{}).(*http.Cookie); ok {
		resp.Header.Add("Set-Cookie", c.String())
	}
	claims, _ := ctx.Value(claimsKey{}).(ticket.Claims)
	level := slog.LevelDebug
	if resp.StatusCode == http.StatusSwitchingProtocols {
		level = slog.LevelInfo
	}
	h.s.log.Log(ctx, level, "request", "user", claims.User, "mode", claims.Mode,
		"method", resp.Request.Method, "path", resp.Request.URL.Path, "status", resp.StatusCode)
	return nil
}

// proxyError answers when the app cannot be reached.
func (h *httpConnector) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	rf := refusal{http.StatusBadGateway, "app not reachable", fmt.Errorf("proxy %s %s to %s: %w", r.Method, r.URL.Path, h.s.cfg.Target, err)}
	if errors.Is(err, context.Canceled) {
		// The client left or the connector is stopping: not a refusal.
		h.s.log.DebugContext(r.Context(), "request cancelled", "remote_addr", r.RemoteAddr, "path", r.URL.Path, "error", err)
	} else {
		h.s.logRefusal(r.Context(), r.RemoteAddr, rf)
	}
	writeRefusal(w, rf)
}

// logHTTPConn writes the line for an accepted connection of the http kind
// when it closes.
func (s *server) logHTTPConn(c *trackedConn) {
	attrs := []any{
		"remote_addr", c.RemoteAddr().String(),
		"bytes_in", c.in.Load(),
		"bytes_out", c.out.Load(),
		"duration", time.Since(c.start),
	}
	level := slog.LevelDebug // nobody was admitted; any refusal was logged already
	if p := c.peer.Load(); p != nil {
		attrs = append(attrs, "user", p.User, "mode", p.Mode)
		level = slog.LevelInfo
	}
	s.log.Log(context.Background(), level, "connection closed", attrs...)
}
