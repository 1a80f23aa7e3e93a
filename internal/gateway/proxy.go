package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
	"github.com/airlock-hpc/airlock/internal/ticket"
)

// ticketTTL is how long a proxied request's ticket is good for: it is spent
// at once, on this request. Short, because the connector remembers each
// ticket until it expires (the replay guard holds 65,536): with 10 s that
// allows 6,500 requests a second per session before the guard is full.
const ticketTTL = 10 * time.Second

// viewer is who may use a session through the proxy, and how.
type viewer struct {
	user string
	mode session.Mode
	// share is the share link it came in by, if any: its id and expiry
	// tag the connection (revoke.go).
	share session.Share
}

// proxy serves /s/{id}/{connector}/...: it checks who is asking, signs a
// fresh single-use ticket for this one request, and forwards it (WebSocket
// upgrades included) to the connector's endpoint on the node. Users never
// see node addresses or tickets.
func (g *Gateway) proxy(w http.ResponseWriter, r *http.Request) error {
	id, conn := r.PathValue("id"), r.PathValue("connector")
	id2, err := g.identify(r)
	if err != nil {
		return err
	}
	s, err := g.cfg.Store.GetSession(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return apiErr(404, "no_session", "no such session")
	}
	if err != nil {
		return storeFault("session lookup", err)
	}
	v, err := g.authorizeView(r, id2, s)
	if err != nil {
		return err
	}
	if s.State != session.Ready {
		return apiErr(409, "not_ready", fmt.Sprintf("session %s is %s", s.ID, s.State))
	}
	endpoint, ok := s.Endpoints[conn]
	if !ok {
		return apiErr(404, "no_connector", fmt.Sprintf("session %s has no connector %q", s.ID, conn))
	}
	tok, err := ticket.Sign(g.sessionKey(s.ID), ticket.Claims{
		Session: s.ID, Connector: conn, User: v.user, Mode: ticket.Mode(v.mode), Expires: g.now().Add(ticketTTL),
	})
	if err != nil {
		return err
	}
	upgrade := strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
	p, _ := g.profile(s.Profile)
	strip := p.StripPrefix && connectorView(p, conn) == contract.ViewApp
	if upgrade {
		g.audit(r.Context(), v.user, "connect", s.ID, r.RemoteAddr, fmt.Sprintf("%s (%s)", conn, v.mode))
	}

	// A WebSocket viewer holds the session open until its connection
	// ends; Serve's shutdown cancels the context, which closes hijacked
	// connections too, and so does revoking the right it came in by
	// (every proxied request is tracked: an app's event stream is as
	// long-lived as a viewer). A plain request only counts as activity.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer g.track(viewerTag{Session: s.ID, Owner: s.Owner, User: v.user, Share: v.share.ID, Login: id2.login, Token: id2.token,
		Mode: v.mode, Expires: earliest(v.share.Expires, id2.until), proof: id2.proof, shareHash: v.share.Hash}, cancel)()
	if upgrade {
		done := g.viewerStart(s.ID)
		defer done()
	} else {
		g.touch(s.ID, false)
	}

	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// Always "http": for a node's TCP endpoint the transport's
			// DialContext already speaks TLS (pinned); "https" would make
			// http.Transport wrap that in TLS a second time.
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = "session"
			if strip {
				pr.Out.URL.Path = "/" + strings.TrimPrefix(pr.In.URL.Path, "/s/"+s.ID+"/"+conn+"/")
				pr.Out.URL.RawPath = ""
			}
			pr.Out.Host = pr.In.Host // apps such as Jupyter compare Origin with Host
			pr.SetXForwarded()
			// The gateway's own cookies (the login, share links) are for
			// the gateway; the connector gets a ticket instead.
			stripAirlockCookies(pr.Out.Header)
			// The trusted proxy's identity header vouched for the user to
			// us; an app must not take it as a login of its own.
			if g.cfg.HeaderName != "" {
				pr.Out.Header.Del(g.cfg.HeaderName)
			}
			pr.Out.Header.Set("Authorization", "Bearer "+tok)
		},
		Transport: g.transport(endpoint, s.TLSSHA256),
		ModifyResponse: func(resp *http.Response) error {
			stripSetCookies(resp.Header, "airlock_")
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			g.log.WarnContext(r.Context(), "proxy to connector", "session", s.ID, "connector", conn, "error", err)
			writeErr(w, apiErr(502, "connector_unreachable", "the session did not answer"))
		},
		FlushInterval: -1, // stream: a framebuffer or an event stream must not wait in a buffer
	}
	rp.ServeHTTP(w, r.WithContext(ctx))
	return nil
}

// connectorIdleTimeout closes a pooled connection to a connector after it
// carried no request for this long. It is below the connector's own idle
// timeout (2 minutes), so the gateway, not the connector, ends an idle
// connection, and a request is not sent on one the connector is closing.
const connectorIdleTimeout = 30 * time.Second

// transportUnused is how long a cached transport may go unused before the
// next new one sweeps it away (its connections closed at
// connectorIdleTimeout already); it bounds the cache to the sessions used
// lately.
const transportUnused = 10 * time.Minute

// transportKey names one connector endpoint.
type transportKey struct{ endpoint, sha string }

type cachedTransport struct {
	t    *http.Transport
	used atomic.Int64 // unix nanoseconds of the last request
}

// transports keeps one pooled transport per connector endpoint, so
// requests reuse connections to the connector instead of dialing it
// afresh each time (measured with BenchmarkAppProxy: the largest cost
// after the store lookups, in the gateway and in the connector). Reuse
// changes nothing about tickets: every request still carries its own fresh
// single-use ticket, which the connector checks per request.
type transports struct {
	mu sync.Mutex
	m  map[transportKey]*cachedTransport
}

// transport returns the pooled transport for a connector endpoint.
func (g *Gateway) transport(endpoint, sha string) http.RoundTripper {
	k := transportKey{endpoint, sha}
	now := time.Now()
	g.transports.mu.Lock()
	defer g.transports.mu.Unlock()
	ct := g.transports.m[k]
	if ct == nil {
		if g.transports.m == nil {
			g.transports.m = map[transportKey]*cachedTransport{}
		}
		// Sweep only when adding one: once per new session, not per request.
		for k2, old := range g.transports.m {
			if now.Sub(time.Unix(0, old.used.Load())) > transportUnused {
				old.t.CloseIdleConnections()
				delete(g.transports.m, k2)
			}
		}
		ct = &cachedTransport{t: g.newTransport(endpoint, sha)}
		g.transports.m[k] = ct
	}
	ct.used.Store(now.UnixNano())
	return ct.t
}

// dropTransports closes the pooled connections to connectors and forgets
// the transports.
func (g *Gateway) dropTransports() {
	g.transports.mu.Lock()
	defer g.transports.mu.Unlock()
	for k, ct := range g.transports.m {
		ct.t.CloseIdleConnections()
		delete(g.transports.m, k)
	}
}

// newTransport dials a connector endpoint: a UNIX socket on this node, or
// TLS to a node pinned to the session certificate's SHA-256.
func (g *Gateway) newTransport(endpoint, sha string) *http.Transport {
	var dial func(ctx context.Context) (net.Conn, error)
	if p, ok := strings.CutPrefix(endpoint, "unix:"); ok {
		dial = func(ctx context.Context) (net.Conn, error) {
			return (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "unix", p)
		}
	} else {
		dial = func(ctx context.Context) (net.Conn, error) {
			d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: pinned(sha)}
			return d.DialContext(ctx, "tcp", endpoint)
		}
	}
	return &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := dial(ctx)
			if err != nil {
				return nil, err
			}
			g.metrics.connsOpen.Add(1)
			return &countingConn{Conn: c, m: &g.metrics}, nil
		},
		// Keep-alive: each request carries its own ticket (see transports).
		// Enough idle connections for a burst of a browser's parallel
		// requests, or a busy API client, to find one.
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     connectorIdleTimeout,
		ForceAttemptHTTP2:   false,
	}
}

func pinned(sha string) *tls.Config {
	return &tls.Config{
		InsecureSkipVerify: true, // replaced by the pin below: the session's own self-signed cert
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("no certificate")
			}
			sum := sha256.Sum256(raw[0])
			if sha == "" || hex.EncodeToString(sum[:]) != sha {
				return errors.New("connector certificate does not match the session's pin")
			}
			return nil
		},
		NextProtos: []string{"http/1.1"},
	}
}

type countingConn struct {
	net.Conn
	m      *metrics
	closed atomic.Bool
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.m.bytesFrom.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.m.bytesTo.Add(int64(n))
	return n, err
}

func (c *countingConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.m.connsOpen.Add(-1)
	}
	return c.Conn.Close()
}

func stripCookies(h http.Header, prefix string) {
	cookies := (&http.Request{Header: h}).Cookies()
	h.Del("Cookie")
	var keep []string
	for _, c := range cookies {
		if !strings.HasPrefix(c.Name, prefix) {
			keep = append(keep, c.Name+"="+c.Value)
		}
	}
	if len(keep) > 0 {
		h.Set("Cookie", strings.Join(keep, "; "))
	}
}

func stripSetCookies(h http.Header, prefix string) {
	var keep []string
	for _, v := range h.Values("Set-Cookie") {
		if !strings.HasPrefix(strings.TrimSpace(v), prefix) {
			keep = append(keep, v)
		}
	}
	h.Del("Set-Cookie")
	for _, v := range keep {
		h.Add("Set-Cookie", v)
	}
}

// viewerStart counts a viewer of session id until the returned func runs.
func (g *Gateway) viewerStart(id string) func() {
	g.mu.Lock()
	g.viewers[id]++
	g.mu.Unlock()
	g.metrics.viewers.Add(1)
	g.touch(id, true)
	return func() {
		g.mu.Lock()
		g.viewers[id]--
		if g.viewers[id] <= 0 {
			delete(g.viewers, id)
		}
		g.mu.Unlock()
		g.metrics.viewers.Add(-1)
		g.touch(id, true)
	}
}

// touchEvery is how often, at most, an unforced touch writes a session's
// LastSeen.
const touchEvery = 10 * time.Second

// touch records that a viewer was there now (idle and single-shot timing).
// Unless forced it writes at most every touchEvery per session: it runs on
// every proxied request.
func (g *Gateway) touch(id string, force bool) {
	now := g.now()
	g.mu.Lock()
	if g.lastTouch == nil {
		g.lastTouch = map[string]time.Time{}
	}
	if !force && now.Sub(g.lastTouch[id]) < touchEvery {
		g.mu.Unlock()
		return
	}
	g.lastTouch[id] = now
	g.mu.Unlock()
	_, err := g.cfg.Store.UpdateSession(context.WithoutCancel(g.ctx), id, func(s *session.Session) error {
		s.LastSeen = now
		return nil
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		// The viewer is served anyway; a LastSeen left behind only makes
		// the janitor think the session idle for longer than it is.
		g.log.WarnContext(g.ctx, "record viewer activity", "session", id, "error", err)
	}
}

// forgetTouch drops an ended session's entry from lastTouch.
func (g *Gateway) forgetTouch(id string) {
	g.mu.Lock()
	delete(g.lastTouch, id)
	g.mu.Unlock()
}

// pruneTouches drops the lastTouch entries older than touchEvery: they no
// longer hold a write back, so the map stays as large as the sessions
// viewed lately, also for sessions whose end this gateway did not see.
func (g *Gateway) pruneTouches() {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	for id, t := range g.lastTouch {
		if now.Sub(t) >= touchEvery {
			delete(g.lastTouch, id)
		}
	}
}

func (g *Gateway) closeViewers() {
	g.mu.Lock()
	for _, v := range g.viewerCancels {
		v.cancel()
	}
	g.mu.Unlock()
	g.dropTransports()
}
