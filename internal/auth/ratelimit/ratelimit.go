// Package ratelimit throttles failed logins per user name and per client
// address, in bounded memory. It implements auth.Limiter and knows nothing
// about passwords, authenticators or HTTP: callers say when a login failed
// or succeeded, and ask before checking a password.
//
// # Algorithm
//
// Each key (a user name, or an address) has a leaky bucket of Limit
// failures that drains one failure every Window/Limit, kept as a single
// "theoretical arrival time" (the generic cell rate algorithm, GCRA). A
// key may fail Limit times in a burst; after that it may try once more
// each time Window/Limit passes. Over any stretch of time t a key gets at
// most Limit + t·Limit/Window failed attempts, and a key that stops
// failing is forgotten once its bucket drains, at most Window later.
//
// # Memory
//
// Each of the two tables (users, addresses) holds at most MaxKeys keys.
// Drained keys are dropped as time passes. When a table is full of keys
// that still matter, the key whose bucket drains soonest (the one with
// the least recorded failure) is evicted, so a flood of random user names
// can neither grow memory nor push out a key that an attacker is hammering.
// Keys longer than 64 bytes are stored as a hash.
package ratelimit

import (
	"container/heap"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/airlock-hpc/airlock/internal/auth"
)

// Config sets the limits. The zero value of a field means its default.
type Config struct {
	// UserLimit is how many failures in a burst a user name may have.
	// Default 5.
	UserLimit int
	// AddrLimit is how many failures in a burst a client address may have.
	// IPv6 addresses are grouped by /64, since one host commonly owns a
	// whole /64. Default 20.
	AddrLimit int
	// Window is the time a full bucket takes to drain. Default 15 minutes.
	Window time.Duration
	// MaxKeys bounds each table. At about 150 bytes a key, the default of
	// 65536 keeps both tables under 20 MB.
	MaxKeys int
}

// DefaultConfig returns the defaults: 5 failures per user, 20 per address,
// per 15 minutes, 65536 keys per table.
func DefaultConfig() Config {
	return Config{UserLimit: 5, AddrLimit: 20, Window: 15 * time.Minute, MaxKeys: 1 << 16}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.UserLimit == 0 {
		c.UserLimit = d.UserLimit
	}
	if c.AddrLimit == 0 {
		c.AddrLimit = d.AddrLimit
	}
	if c.Window == 0 {
		c.Window = d.Window
	}
	if c.MaxKeys == 0 {
		c.MaxKeys = d.MaxKeys
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.UserLimit < 1:
		return fmt.Errorf("UserLimit %d: must be at least 1", c.UserLimit)
	case c.AddrLimit < 1:
		return fmt.Errorf("AddrLimit %d: must be at least 1", c.AddrLimit)
	case c.Window < time.Second:
		return fmt.Errorf("window %s: must be at least 1s", c.Window)
	case c.MaxKeys < 1:
		return fmt.Errorf("MaxKeys %d: must be at least 1", c.MaxKeys)
	}
	return nil
}

// LimitError is what Allow returns. It wraps auth.ErrRateLimited, whose
// text is the one to show a user.
type LimitError struct {
	// By is "user" or "address": which limit was hit.
	By string
	// RetryAfter is how long until one more attempt is allowed.
	RetryAfter time.Duration
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("login limited by %s for %s: %v", e.By, e.RetryAfter.Round(time.Second), auth.ErrRateLimited)
}

// Unwrap returns auth.ErrRateLimited.
func (e *LimitError) Unwrap() error { return auth.ErrRateLimited }

// Limiter counts failed logins. It is safe for concurrent use. Times come
// from the caller, so tests control the clock; they should not go
// backwards by much, but nothing breaks if they do.
type Limiter struct {
	mu    sync.Mutex
	users table
	addrs table
}

var _ auth.Limiter = (*Limiter)(nil)

// New returns a Limiter with cfg's limits, defaults filled in.
func New(cfg Config) (*Limiter, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("rate limiter config: %w", err)
	}
	return &Limiter{
		users: newTable(cfg.UserLimit, cfg.Window, cfg.MaxKeys),
		addrs: newTable(cfg.AddrLimit, cfg.Window, cfg.MaxKeys),
	}, nil
}

// Allow returns a *LimitError wrapping auth.ErrRateLimited if user or addr
// may not try again yet, or nil. It records nothing.
func (l *Limiter) Allow(user, addr string, now time.Time) error {
	uk, ak := userKey(user), addrKey(addr)
	t := now.UnixNano()
	l.mu.Lock()
	du := l.users.wait(uk, t)
	da := l.addrs.wait(ak, t)
	l.mu.Unlock()
	switch {
	case da > 0:
		return &LimitError{By: "address", RetryAfter: time.Duration(da)}
	case du > 0:
		return &LimitError{By: "user", RetryAfter: time.Duration(du)}
	}
	return nil
}

// Fail records a failed login by user from addr.
func (l *Limiter) Fail(user, addr string, now time.Time) {
	uk, ak := userKey(user), addrKey(addr)
	t := now.UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.users.fail(uk, t)
	l.addrs.fail(ak, t)
}

// Succeed forgets user's failures: whoever knows the password is the user,
// and must not stay locked out by a guesser. The address's failures are
// kept on purpose: otherwise anyone with one valid account could reset
// their address's budget between guesses at other accounts.
func (l *Limiter) Succeed(user, addr string) {
	uk := userKey(user)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.users.forget(uk)
}

// Len returns how many user and address keys are held.
func (l *Limiter) Len() (users, addrs int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.users.keys), len(l.addrs.keys)
}

// maxKeyLen is the longest key stored as is; longer ones are hashed, so an
// attacker sending megabyte user names cannot make each key expensive.
const maxKeyLen = 64

// userKey is user's bucket key. A name that is not UTF-8, or holds a NUL,
// is hashed too: a shared store keeps keys as text (PostgreSQL refuses
// such bytes), and a key it cannot store would make every malformed login
// a store fault, counted nowhere.
func userKey(user string) string {
	if len(user) <= maxKeyLen && utf8.ValidString(user) && !strings.ContainsRune(user, 0) {
		return user
	}
	sum := sha256.Sum256([]byte(user))
	return "sha256:" + hex.EncodeToString(sum[:16])
}

// addrKey reduces "ip:port" or "ip" to the IP, so that each new connection
// (a new source port) is not a new key, and IPv6 to its /64. Anything else
// is used as given (hashed if long), which is safe: it only makes the key
// more specific.
func addrKey(addr string) string {
	var ip netip.Addr
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		ip = ap.Addr()
	} else if a, err := netip.ParseAddr(addr); err == nil {
		ip = a
	} else {
		return userKey(addr)
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		return netip.PrefixFrom(ip, 64).Masked().String()
	}
	return ip.String()
}

// table is one set of buckets, indexed by key and by drain time.
type table struct {
	interval int64 // nanoseconds to drain one failure: window / limit
	window   int64
	max      int
	keys     map[string]*bucket
	byDrain  drainHeap
}

type bucket struct {
	key string
	// tat is when the bucket is empty again (Unix nanoseconds). Each
	// failure pushes it interval further; it is full when tat is a
	// window ahead of now.
	tat   int64
	index int // in byDrain
}

func newTable(limit int, window time.Duration, max int) table {
	return table{
		interval: int64(window) / int64(limit),
		window:   int64(window),
		max:      max,
		keys:     make(map[string]*bucket),
	}
}

// wait returns how long key must wait before its next attempt, or 0.
func (t *table) wait(key string, now int64) int64 {
	b := t.keys[key]
	if b == nil {
		return 0
	}
	// One more failure would push tat past now+window: the bucket is full.
	return max(0, b.tat+t.interval-now-t.window)
}

func (t *table) fail(key string, now int64) {
	t.prune(now)
	b := t.keys[key]
	if b == nil {
		if len(t.keys) >= t.max {
			t.remove(t.byDrain[0])
		}
		b = &bucket{key: key, tat: now}
		t.keys[key] = b
		heap.Push(&t.byDrain, b)
	}
	// A full bucket does not overflow: failures while blocked (Allow
	// ignored, or racing requests) must not extend the lockout without end.
	b.tat = min(max(b.tat, now)+t.interval, now+t.window)
	heap.Fix(&t.byDrain, b.index)
}

func (t *table) forget(key string) {
	if b := t.keys[key]; b != nil {
		t.remove(b)
	}
}

// prune drops every key whose bucket has drained.
func (t *table) prune(now int64) {
	for len(t.byDrain) > 0 && t.byDrain[0].tat <= now {
		t.remove(t.byDrain[0])
	}
}

func (t *table) remove(b *bucket) {
	heap.Remove(&t.byDrain, b.index)
	delete(t.keys, b.key)
}

// drainHeap is a min-heap of buckets by tat.
type drainHeap []*bucket

func (h drainHeap) Len() int           { return len(h) }
func (h drainHeap) Less(i, j int) bool { return h[i].tat < h[j].tat }
func (h drainHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *drainHeap) Push(x any) {
	b := x.(*bucket)
	b.index = len(*h)
	*h = append(*h, b)
}
func (h *drainHeap) Pop() any {
	old := *h
	b := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return b
}
