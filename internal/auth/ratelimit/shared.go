package ratelimit

import (
	"context"
	"log/slog"
	"time"

	"github.com/airlock-hpc/airlock/internal/auth"
)

// Buckets keeps the limiter's buckets where several gateways see them (a
// store they share: PostgreSQL), so that guesses spread over the gateways
// count against one budget. Each bucket is a GCRA "theoretical arrival
// time" under a key, as in this package's own tables.
type Buckets interface {
	// BucketTAT returns key's theoretical arrival time (zero: none).
	BucketTAT(ctx context.Context, key string) (time.Time, error)
	// FailBucket moves key's time to min(max(tat, now)+interval,
	// now+window), in one atomic step.
	FailBucket(ctx context.Context, key string, now time.Time, interval, window time.Duration) error
	// ForgetBucket drops key.
	ForgetBucket(ctx context.Context, key string) error
}

// Shared is a Limiter whose counts are also kept in Buckets, shared by
// several gateways: a login is refused if either this gateway's memory or
// the shared buckets say wait. When the buckets cannot be reached the
// local limits still hold, and a fault never refuses a login by itself
// (a fault is not a "no"); it is logged.
type Shared struct {
	local        *Limiter
	b            Buckets
	cfg          Config
	log          *slog.Logger
	userI, addrI time.Duration
	timeout      time.Duration
}

var _ auth.Limiter = (*Shared)(nil)

// NewShared returns a Shared limiter with cfg's limits over b.
func NewShared(cfg Config, b Buckets, log *slog.Logger) (*Shared, error) {
	local, err := New(cfg)
	if err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.Default()
	}
	return &Shared{local: local, b: b, cfg: cfg, log: log, timeout: 2 * time.Second,
		userI: cfg.Window / time.Duration(cfg.UserLimit), addrI: cfg.Window / time.Duration(cfg.AddrLimit)}, nil
}

func (s *Shared) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.timeout)
}

// Allow is Limiter.Allow over both this gateway's memory and the shared
// buckets.
func (s *Shared) Allow(user, addr string, now time.Time) error {
	if err := s.local.Allow(user, addr, now); err != nil {
		return err
	}
	ctx, cancel := s.ctx()
	defer cancel()
	for _, k := range []struct {
		by, key  string
		interval time.Duration
	}{{"address", "addr:" + addrKey(addr), s.addrI}, {"user", "user:" + userKey(user), s.userI}} {
		tat, err := s.b.BucketTAT(ctx, k.key)
		if err != nil {
			s.log.Warn("shared login limits unreadable; this gateway's own apply", "error", err)
			return nil
		}
		// As table.wait: one more failure would push tat past now+window.
		if wait := tat.Add(k.interval).Sub(now) - s.cfg.Window; !tat.IsZero() && wait > 0 {
			return &LimitError{By: k.by, RetryAfter: wait}
		}
	}
	return nil
}

// Fail records a failed login here and in the shared buckets.
func (s *Shared) Fail(user, addr string, now time.Time) {
	s.local.Fail(user, addr, now)
	ctx, cancel := s.ctx()
	defer cancel()
	for _, k := range []struct {
		key      string
		interval time.Duration
	}{{"user:" + userKey(user), s.userI}, {"addr:" + addrKey(addr), s.addrI}} {
		// Each bucket on its own: one that faults must not leave the
		// other uncounted.
		if err := s.b.FailBucket(ctx, k.key, now, k.interval, s.cfg.Window); err != nil {
			s.log.Warn("shared login limits not updated; this gateway's own apply", "error", err)
		}
	}
}

// Succeed forgets user's failures here and in the shared buckets (the
// address's are kept, as Limiter.Succeed says why).
func (s *Shared) Succeed(user, addr string) {
	s.local.Succeed(user, addr)
	ctx, cancel := s.ctx()
	defer cancel()
	if err := s.b.ForgetBucket(ctx, "user:"+userKey(user)); err != nil {
		s.log.Warn("shared login limits not updated", "error", err)
	}
}
