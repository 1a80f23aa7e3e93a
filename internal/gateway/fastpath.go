package gateway

// The proxy's fast path (issue 18).
//
// Profiled (BenchmarkAppProxy, BenchmarkForward), a proxied request spent
// most of the gateway's CPU in the store, not in proxying: a bearer token
// looked up (and stamped) and its user read, the session read, a share
// link read, per request; and in the connector most of what it spent above
// the bare proxy went on the fresh ticket each request carried (checked,
// entered in the replay guard, logged, answered with a new cookie). So:
//
//   - What a request needs from the store (a ready session and its route,
//     a share link's record, a bearer token's record and its user's record)
//     is kept in memory for at most fastTTL. Only what the store said yes
//     to is kept: an unknown token, share or session is asked again each
//     time, so a new one works at once. The checks that depend on the time
//     (a share's expiry) and on the local password file (is the user still
//     there, an admin) run on every request as before.
//   - Revocation still takes effect at once: every revokeEvent (token
//     revoked, share revoked, logout, user removed, session stopped or
//     ended) and every session update this gateway makes empties the
//     caches before the call that made it returns (a generation number
//     stops a lookup that raced with it from putting back what it read).
//     Another gateway's revocation reaches this one at once through the
//     store's broadcast (broadcast.go); one it does not see (a message
//     lost, a hand edit of the store) reaches new requests within
//     fastTTL, which is at most cfg.RecheckEvery: the bound recheckViewers
//     already gives connections that are open.
//   - The hop to the connector: the http connector answers a request let
//     in by a ticket with its own cookie (connector/http.go), which lets
//     the requests after it in without a ticket. The gateway keeps that
//     cookie in memory, per (session, connector, user, mode), and sends it
//     instead of a fresh ticket: the connector still checks who and in
//     which mode (view-only stays view-only) on each request, with no
//     replay-guard entry and no new cookie. The cookie never leaves the
//     gateway (stripped from every answer, as before) and the connector
//     strips it before the app. Revocation empties these too, and a 401 on
//     one drops it. Kinds that set no cookie (vnc) keep a ticket per
//     connection.
//   - One reverse proxy for every proxied request, its per-request part in
//     the request's context, instead of one built per request.

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

const (
	// fastTTLMax bounds how long a store answer is reused (see above).
	fastTTLMax = 2 * time.Second
	// maxFastEntries bounds each cache; a full one is emptied, which
	// costs a store lookup each for what is in use, not correctness.
	maxFastEntries = 100_000
	// hopMargin: a connector cookie is not used in its last minute, so
	// a request never carries one that expires on the way.
	hopMargin = time.Minute
)

type fastEntry[T any] struct {
	v  T
	at time.Time // when the store said it (monotonic)
}

// tokenUser is a bearer token's record and its user's.
type tokenUser struct {
	tok  session.Token
	user session.User
}

// hopKey names a connector cookie: whose, for what, in which mode.
type hopKey struct {
	session, conn, user string
	mode                session.Mode
}

// hopCookie is a connector's cookie as the gateway keeps it.
type hopCookie struct {
	name, value string
	expires     time.Time // on g.now, hopMargin before the connector's
}

// fastCache is the fast path's memory (see the top of this file).
type fastCache struct {
	mu       sync.Mutex
	gen      uint64
	sessions map[string]fastEntry[*session.Session]
	shares   map[string]fastEntry[session.Share] // by string(hash)
	tokens   map[[32]byte]fastEntry[tokenUser]
	hops     map[hopKey]hopCookie
}

// forgetAll empties every cache. It runs on each revokeEvent and each
// change to a user record: rare next to requests, so the price of
// refilling is small and no finer rule can be got wrong.
func (c *fastCache) forgetAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.sessions, c.shares, c.tokens, c.hops = nil, nil, nil, nil
}

// forgetSession drops session id's record (this gateway updated it).
func (c *fastCache) forgetSession(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.sessions, id)
}

// generation is read before a store lookup whose answer is to be kept:
// keepers refuse the answer when anything was forgotten since.
func (c *fastCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// keep stores v under k in *m unless the generation moved since gen.
func keep[K comparable, T any](c *fastCache, m *map[K]fastEntry[T], k K, v T, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if *m == nil || len(*m) >= maxFastEntries {
		*m = map[K]fastEntry[T]{}
	}
	(*m)[k] = fastEntry[T]{v: v, at: time.Now()}
}

// fresh returns what *m holds under k if it is younger than ttl.
func fresh[K comparable, T any](c *fastCache, m *map[K]fastEntry[T], k K, ttl time.Duration) (T, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := (*m)[k]
	if !ok || time.Since(e.at) >= ttl {
		var zero T
		return zero, false
	}
	return e.v, true
}

// fastTTL is how long a store answer is reused.
func (g *Gateway) fastTTL() time.Duration { return min(g.cfg.RecheckEvery, fastTTLMax) }

// readySession is session id, from the cache if it was ready a moment
// ago. The record is shared: callers must not change it.
func (g *Gateway) readySession(ctx context.Context, id string) (*session.Session, error) {
	c := &g.fast
	if s, ok := fresh(c, &c.sessions, id, g.fastTTL()); ok {
		return s, nil
	}
	gen := c.generation()
	s, err := g.cfg.Store.GetSession(ctx, id)
	if err != nil {
		return nil, err
	}
	if s.State == session.Ready {
		keep(c, &c.sessions, id, s, gen)
	}
	return s, nil
}

// cachedShare is checkShare with the share's record from the cache. The
// verdict (revoked, expired, another session's) is made afresh each time.
func (g *Gateway) cachedShare(ctx context.Context, hash []byte, id string) (session.Share, error) {
	c := &g.fast
	sh, ok := fresh(c, &c.shares, string(hash), g.fastTTL())
	if !ok {
		gen := c.generation()
		var err error
		sh, err = g.cfg.Store.ShareByHash(ctx, hash)
		switch {
		case err != nil && !errors.Is(err, store.ErrNotFound):
			return session.Share{}, storeFault("share lookup", err)
		case err != nil:
			return session.Share{}, errNoSession
		}
		if !sh.Revoked {
			keep(c, &c.shares, string(hash), sh, gen)
		}
	}
	switch {
	case sh.Session != id:
		return session.Share{}, errNoSession
	case sh.Revoked:
		return session.Share{}, apiErr(403, "share_revoked", "the owner revoked this share link")
	case !g.now().Before(sh.Expires):
		return session.Share{}, apiErr(403, "share_expired", "this share link has expired")
	}
	return sh, nil
}

// authorizeViewFast is authorizeView with the share link from the cache.
func (g *Gateway) authorizeViewFast(r *http.Request, id identity, s *session.Session) (viewer, error) {
	if s.Owner == id.user {
		return viewer{user: id.user, mode: session.Control}, nil
	}
	ck, err := r.Cookie(shareCookiePrefix + s.ID)
	if err != nil {
		g.log.WarnContext(r.Context(), "refused viewer", "user", id.user, "session", s.ID, "remote_addr", r.RemoteAddr, "error", errNoSession)
		return viewer{}, errNoSession
	}
	sum := sha256.Sum256([]byte(ck.Value))
	sh, err := g.cachedShare(r.Context(), sum[:], s.ID)
	if err != nil {
		g.log.WarnContext(r.Context(), "refused viewer", "user", id.user, "session", s.ID, "remote_addr", r.RemoteAddr, "error", err)
		return viewer{}, err
	}
	return viewer{user: id.user, mode: sh.Mode, share: sh}, nil
}

// bearerIdentity is who the bearer token whose SHA-256 is sum stands
// for: its record and its user's record from the cache, the user's
// standing in the local password file read now (standing).
func (g *Gateway) bearerIdentity(ctx context.Context, sum [32]byte) (identity, error) {
	c := &g.fast
	tu, ok := fresh(c, &c.tokens, sum, g.fastTTL())
	if !ok {
		gen := c.generation()
		t, err := g.cfg.Store.TokenByHash(ctx, sum[:], g.now())
		switch {
		case errors.Is(err, store.ErrNotFound):
			return identity{}, apiErr(401, "bad_token", "the token is unknown or revoked")
		case err != nil:
			return identity{}, storeFault("token lookup", err)
		}
		u, err := g.cfg.Store.GetUser(ctx, t.User)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return identity{}, apiErr(401, "user_removed", "your account no longer exists; ask an admin")
		case err != nil:
			return identity{}, storeFault("user lookup", err)
		}
		tu = tokenUser{tok: t, user: u}
		keep(c, &c.tokens, sum, tu, gen)
	}
	id, err := g.standing(ctx, tu.tok.User, tu.user)
	id.token = tu.tok.ID
	return id, err
}

// hop returns the connector cookie kept for k, if one is good now.
func (c *fastCache) hop(k hopKey, now time.Time) (hopCookie, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.hops[k]
	if !ok || !now.Before(h.expires) {
		return hopCookie{}, false
	}
	return h, true
}

// keepHop keeps the connector cookie in a response's Set-Cookie for k,
// unless something was forgotten since the request went out (gen).
func (c *fastCache) keepHop(k hopKey, h http.Header, now time.Time, gen uint64) {
	for _, line := range h.Values("Set-Cookie") {
		if !strings.HasPrefix(strings.TrimSpace(line), "airlock_") {
			continue
		}
		ck, err := http.ParseSetCookie(line)
		if err != nil || ck.MaxAge <= 0 || ck.Value == "" {
			continue
		}
		ttl := time.Duration(ck.MaxAge)*time.Second - hopMargin
		if ttl <= 0 {
			continue
		}
		c.mu.Lock()
		if c.gen == gen {
			if c.hops == nil || len(c.hops) >= maxFastEntries {
				c.hops = map[hopKey]hopCookie{}
			}
			c.hops[k] = hopCookie{name: ck.Name, value: ck.Value, expires: now.Add(ttl)}
		}
		c.mu.Unlock()
		return
	}
}

// dropHop forgets k's connector cookie (the connector refused it).
func (c *fastCache) dropHop(k hopKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.hops, k)
}
