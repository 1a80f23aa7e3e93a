package ticket

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// DefaultReplayLimit is the number of unexpired nonces a [ReplayGuard]
// remembers when its Limit is zero. With nonces of at most [MaxFieldLen]
// bytes that bounds the guard to roughly 20 MiB, and in practice (26-byte
// nonces from [Sign]) to a few MiB.
const DefaultReplayLimit = 1 << 16

// sweepEvery is how often Use looks for expired nonces to forget when the
// guard is not full. Sweeping is O(entries), so it is rate-limited rather
// than done on every call; between sweeps expired entries only cost memory,
// which the limit already bounds.
const sweepEvery = time.Minute

var (
	// ErrReplayed means the ticket's nonce was already used.
	ErrReplayed = errors.New("ticket already used")
	// ErrGuardFull means the guard holds Limit unexpired nonces and cannot
	// accept another until some expire. Refusing, rather than forgetting a
	// nonce early, keeps the replay promise; the peer may retry later.
	ErrGuardFull = errors.New("ticket replay guard full, try again later")
)

// ReplayGuard remembers the nonces of tickets a connector has accepted until
// those tickets expire, so each ticket admits one connection. Memory is
// bounded by Limit. The zero value is ready to use; a ReplayGuard must not
// be copied after first use. It is safe for concurrent use.
type ReplayGuard struct {
	// Limit caps the remembered nonces; zero means [DefaultReplayLimit].
	// Set it before first use.
	Limit int

	mu sync.Mutex
	// seen maps a nonce to the expiry of the ticket that used it.
	seen map[string]time.Time
	// soonest is the earliest expiry in seen at the last sweep or insert;
	// before it nothing can be swept, so a full guard refuses in O(1).
	soonest   time.Time
	nextSweep time.Time
}

// Use records c's nonce and returns nil the first time, or [ErrReplayed]
// while a ticket with that nonce is unexpired. It returns [ErrExpired] for
// claims already expired at now, [ErrMalformed] for claims without a nonce
// and [ErrGuardFull] when Limit unexpired nonces are held. Call it after
// [Verify] or [Check] succeeds, with the same now.
func (g *ReplayGuard) Use(c Claims, now time.Time) error {
	if c.Nonce == "" {
		return fmt.Errorf("%w: no nonce", ErrMalformed)
	}
	if !now.Before(c.Expires) {
		return ErrExpired
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.seen == nil {
		g.seen = make(map[string]time.Time)
	}
	if exp, ok := g.seen[c.Nonce]; ok && now.Before(exp) {
		return ErrReplayed
	}
	limit := g.Limit
	if limit <= 0 {
		limit = DefaultReplayLimit
	}
	if len(g.seen) >= limit || !now.Before(g.nextSweep) {
		g.sweep(now)
	}
	if len(g.seen) >= limit {
		return ErrGuardFull
	}
	g.seen[c.Nonce] = c.Expires
	if g.soonest.IsZero() || c.Expires.Before(g.soonest) {
		g.soonest = c.Expires
	}
	return nil
}

// Release forgets c's nonce, which Use has just recorded, when the use
// it stood for did not happen (a store fault before anything was let in):
// the ticket may be tried again rather than be refused as used.
func (g *ReplayGuard) Release(c Claims) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.seen, c.Nonce)
}

// sweep forgets nonces whose tickets expired at or before now.
func (g *ReplayGuard) sweep(now time.Time) {
	g.nextSweep = now.Add(sweepEvery)
	if now.Before(g.soonest) {
		return
	}
	g.soonest = time.Time{}
	for nonce, exp := range g.seen {
		if !now.Before(exp) {
			delete(g.seen, nonce)
		} else if g.soonest.IsZero() || exp.Before(g.soonest) {
			g.soonest = exp
		}
	}
}
