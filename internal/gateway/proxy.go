package gateway

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
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

// viewable is session id for who, asked by r, if they may use its
// connector conn now: its owner, or someone with a valid share link of it
// (authorizeView); the session ready and with that connector.
func (g *Gateway) viewable(r *http.Request, who identity, id, conn string) (*session.Session, viewer, error) {
	s, err := g.readySession(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, viewer{}, errNoSession
	}
	if err != nil {
		return nil, viewer{}, storeFault("session lookup", err)
	}
	v, err := g.authorizeViewFast(r, who, s)
	if err != nil {
		return nil, viewer{}, err
	}
	if s.State != session.Ready {
		return nil, viewer{}, apiErr(409, "not_ready", fmt.Sprintf("session %s is %s", s.ID, s.State))
	}
	if _, ok := s.Endpoints[conn]; !ok {
		return nil, viewer{}, apiErr(404, "no_connector", fmt.Sprintf("session %s has no connector %q", s.ID, conn))
	}
	return s, v, nil
}

// tag is what a connection of v to s, let in by who's credential, is
// registered under (revoke.go).
func (v viewer) tag(s *session.Session, who identity) viewerTag {
	return viewerTag{Session: s.ID, Owner: s.Owner, User: v.user, Share: v.share.ID, Login: who.login, Token: who.token,
		Mode: v.mode, Expires: earliest(v.share.Expires, who.until), proof: who.proof, shareHash: v.share.Hash}
}

// proxy serves /s/{id}/{connector}/... for every connector but the web app
// (appRoute has that): it checks who is asking and forwards the request,
// WebSocket upgrades included, with a fresh single-use ticket. Users never
// see node addresses or tickets.
func (g *Gateway) proxy(w http.ResponseWriter, r *http.Request) error {
	who, err := g.identify(r)
	if err != nil {
		return err
	}
	conn := r.PathValue("connector")
	s, v, err := g.viewable(r, who, r.PathValue("id"), conn)
	if err != nil {
		return err
	}
	g.forward(w, r, s, conn, v.tag(s, who), false, "")
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
	if id, _, ok := tunnelHolder(endpoint); ok {
		dial = func(ctx context.Context) (net.Conn, error) { return g.dialForward(ctx, id) }
	} else if p, ok := strings.CutPrefix(endpoint, "unix:"); ok {
		dial = func(ctx context.Context) (net.Conn, error) {
			return (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "unix", p)
		}
	} else {
		dial = func(ctx context.Context) (net.Conn, error) {
			d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: pinned(sha)}
			return d.DialContext(ctx, "tcp", endpoint)
		}
	}
	// 256: a site's burst (100 concurrent clients in BenchmarkAppProxy)
	// finds a pooled connection rather than dialling one per request
	// past the pool, as it did with 64.
	idle := 256
	if strings.HasPrefix(endpoint, forwardEndpointPrefix) {
		// A tunnel's streams cost a few KiB each: keep as many idle as
		// the tunnel may open, so a burst does not open and close them.
		idle = cmp.Or(g.cfg.Forward.MaxStreams, 256)
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
		MaxIdleConnsPerHost: idle,
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
	every := touchEvery
	if force {
		every = 0
	}
	g.touchWithin(id, every)
}

// touchWithin writes the session's LastSeen unless this gateway wrote it
// less than every ago.
func (g *Gateway) touchWithin(id string, every time.Duration) {
	now := g.now()
	g.mu.Lock()
	if g.lastTouch == nil {
		g.lastTouch = map[string]time.Time{}
	}
	if now.Sub(g.lastTouch[id]) < every {
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
