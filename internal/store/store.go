// Package store keeps the gateway's state: sessions, users, API tokens,
// share links and the audit log. It defines the Store interface the
// gateway uses; sqlite/ implements it with a pure-Go SQLite (the embedded
// default, one gateway) and postgres/ with PostgreSQL, which several
// gateways share (it adds Leaser, SharedSecrets and Broadcaster); both
// pass storetest's conformance suite. It knows only the session package's types:
// never the gateway, the runner, backends, auth or the seal.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/airlock-hpc/airlock/internal/session"
)

// Errors every implementation returns, matchable with errors.Is.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	// ErrConflict: an update would make an illegal state change.
	ErrConflict = errors.New("conflict")
	// ErrLimit: a new session would go past a Limits cap. The error is a
	// *LimitError, which says which cap.
	ErrLimit = errors.New("session limit reached")
)

// Limits caps the active (not Ended) sessions CreateSessionWithin may
// bring about; a zero field is no cap.
type Limits struct {
	// MaxActive caps everyone's active sessions together.
	MaxActive int
	// MaxActivePerOwner caps the active sessions of the new session's
	// owner.
	MaxActivePerOwner int
}

// LimitError is the error CreateSessionWithin returns for a session that
// would go past a cap; it wraps ErrLimit.
type LimitError struct {
	// PerOwner is true when the owner's cap was reached, false for the
	// cap on everyone's sessions.
	PerOwner bool
	// Max is the cap and Active the active sessions counted against it.
	Max, Active int
}

func (e *LimitError) Error() string {
	if e.PerOwner {
		return fmt.Sprintf("the owner has %d active sessions, at most %d allowed: %v", e.Active, e.Max, ErrLimit)
	}
	return fmt.Sprintf("%d active sessions, at most %d allowed: %v", e.Active, e.Max, ErrLimit)
}

func (e *LimitError) Unwrap() error { return ErrLimit }

// SessionFilter selects sessions; zero fields match everything.
type SessionFilter struct {
	Owner  string
	States []session.State
	// Limit caps the number returned (0: no cap), newest first.
	Limit int
}

// AuditFilter selects audit events, newest first.
type AuditFilter struct {
	Actor   string
	Session string
	Since   time.Time
	Limit   int
}

// Store is the gateway's state. Implementations are safe for concurrent use.
type Store interface {
	// CreateSession stores a new session; ErrExists if the id is taken.
	CreateSession(ctx context.Context, s *session.Session) error
	// CreateSessionWithin is CreateSession that first counts the active
	// sessions against lim and returns a *LimitError (wrapping ErrLimit)
	// instead if s would go past a cap. Counting and inserting are one
	// atomic step: however many run at once, the caps hold.
	CreateSessionWithin(ctx context.Context, s *session.Session, lim Limits) error
	// GetSession returns a session by id, or ErrNotFound.
	GetSession(ctx context.Context, id string) (*session.Session, error)
	// ListSessions returns the matching sessions, newest first.
	ListSessions(ctx context.Context, f SessionFilter) ([]*session.Session, error)
	// UpdateSession reads the session, calls update on it and writes it
	// back, in one transaction. If update returns an error nothing is
	// written and the error is returned. A state change that
	// session.State.CanMoveTo refuses returns an error wrapping ErrConflict.
	UpdateSession(ctx context.Context, id string, update func(*session.Session) error) (*session.Session, error)
	// CountActive counts sessions not Ended: all of them, or one owner's.
	CountActive(ctx context.Context, owner string) (int, error)

	// CreateUser adds a user; ErrExists if the name is taken.
	CreateUser(ctx context.Context, u session.User) error
	// PutUser records u's admin flag and method as their authenticator
	// says at a login, adding the user if new (keeping Created if not).
	PutUser(ctx context.Context, u session.User) error
	GetUser(ctx context.Context, name string) (session.User, error)
	ListUsers(ctx context.Context) ([]session.User, error)

	// CreateToken stores a token (its hash; the secret is never stored).
	CreateToken(ctx context.Context, t session.Token) error
	// TokenByHash returns a token that is not revoked, or ErrNotFound, and
	// stamps its LastUsed with now (the returned token shows it; the
	// store may write it just after returning). The lookup must not need
	// the write lock, and a stamp that cannot be written (the store busy)
	// is logged, never returned: a good token must not fail because of a
	// stamp. Any error but ErrNotFound is a fault, not a "no".
	TokenByHash(ctx context.Context, hash []byte, now time.Time) (session.Token, error)
	ListTokens(ctx context.Context, user string) ([]session.Token, error)
	// RevokeToken revokes a user's token; ErrNotFound if the user has no
	// such token.
	RevokeToken(ctx context.Context, user, id string) error

	// CreateLogin stores a browser login (its hash only), dropping
	// expired ones on the way.
	CreateLogin(ctx context.Context, l session.Login) error
	// LoginByHash returns the login whose Hash is hash, expired or not
	// (the caller decides), or ErrNotFound.
	LoginByHash(ctx context.Context, hash []byte) (session.Login, error)
	// DeleteLogin ends a login (logout); a missing one is no error.
	DeleteLogin(ctx context.Context, id string) error
	// RevokeUser ends every login of user and revokes all their tokens,
	// for a user who was removed: if the name comes back, nothing the old
	// account held works for the new one.
	RevokeUser(ctx context.Context, user string) error

	CreateShare(ctx context.Context, s session.Share) error
	// ShareByHash returns a share (revoked or not, expired or not: the
	// caller decides and says why), or ErrNotFound.
	ShareByHash(ctx context.Context, hash []byte) (session.Share, error)
	ListShares(ctx context.Context, sessionID string) ([]session.Share, error)
	RevokeShare(ctx context.Context, sessionID, id string) error

	// AcceptTerms records the hash of the terms of use of a profile a
	// user accepted, replacing an earlier one.
	AcceptTerms(ctx context.Context, user, profile, hash string, at time.Time) error
	// TermsAccepted returns the hash of the terms of a profile a user
	// accepted last, or ErrNotFound.
	TermsAccepted(ctx context.Context, user, profile string) (string, error)
	// CreatePendingLogin stores a browser between its password and its
	// second factor (by the cookie's hash), dropping expired ones.
	CreatePendingLogin(ctx context.Context, p session.PendingLogin) error
	// PendingLoginByHash returns a pending login, expired or not (the
	// caller decides), or ErrNotFound.
	PendingLoginByHash(ctx context.Context, hash []byte) (session.PendingLogin, error)
	// TakePendingLogin deletes a pending login; ErrNotFound if it is
	// gone, so of two requests racing with one only one may go on.
	TakePendingLogin(ctx context.Context, hash []byte) error
	// GetTOTP returns a user's second factor, or ErrNotFound if they have
	// enrolled none.
	GetTOTP(ctx context.Context, user string) (session.TOTP, error)
	// EnrolTOTP stores a second factor with the hashes of its recovery
	// codes; ErrExists if the user has one (reset it first), ErrNotFound
	// if the user is not recorded.
	EnrolTOTP(ctx context.Context, t session.TOTP, recovery [][]byte) error
	// UseTOTPStep records that a code for time step was accepted and
	// clears the failure count, only if step is after the last accepted
	// one: else ErrConflict (a replay), in one atomic step across every
	// gateway on the store. ErrNotFound if not enrolled.
	UseTOTPStep(ctx context.Context, user string, step int64) error
	// UseRecoveryCode deletes the recovery code with this hash and clears
	// the failure count; ErrNotFound if the user has no such code (used
	// already, or never).
	UseRecoveryCode(ctx context.Context, user string, hash []byte) error
	// FailTOTP counts a wrong code at now, restarting the count when the
	// last one began before now-window, and returns the count.
	FailTOTP(ctx context.Context, user string, now time.Time, window time.Duration) (int, error)
	// DeleteTOTP removes a user's second factor and recovery codes; a
	// missing one is no error.
	DeleteTOTP(ctx context.Context, user string) error

	// AppendAudit adds an event to the append-only audit log.
	AppendAudit(ctx context.Context, e session.AuditEvent) error
	ListAudit(ctx context.Context, f AuditFilter) ([]session.AuditEvent, error)

	Close() error
}

// SharedSecrets is a store several gateways share, which keeps what they
// must hold alike (the master key every ticket and cookie derives from,
// the RDP CAs, a self-signed certificate), so that a session launched
// through one gateway is viewed through any other.
type SharedSecrets interface {
	// SharedSecret returns the secret called name, storing fresh as it
	// first if there is none: of gateways racing, every one gets the
	// first's.
	SharedSecret(ctx context.Context, name string, fresh []byte) ([]byte, error)
}

// Broadcaster is a store several gateways share that carries messages
// from each to all (PostgreSQL's NOTIFY): a revocation made on one closes
// the connections it let in on every other at once, and a session's
// change wakes its event streams everywhere. Delivery is best effort: a
// message sent while a gateway's listener reconnects is lost, which the
// gateways' periodic re-checks cover.
type Broadcaster interface {
	// Broadcast sends payload (at most 7,000 bytes) to every listener,
	// the sender's own included, once the call returns.
	Broadcast(ctx context.Context, payload []byte) error
	// Listen delivers what is broadcast until ctx ends, then closes the
	// channel. Each time its connection is (re)made it first delivers a
	// nil payload: messages may have been lost, forget what they would
	// have invalidated.
	Listen(ctx context.Context) <-chan []byte
}

// Spender is a store several gateways share that remembers single-use
// things (a browser RDP ticket's nonce) across them, so that one spent
// at one gateway is refused at every other.
type Spender interface {
	// Spend records key as used until expires and returns nil the first
	// time; while an earlier record is unexpired (at now) it returns an
	// error wrapping ErrExists, in one atomic step across gateways.
	Spend(ctx context.Context, key string, now, expires time.Time) error
}

// Handoffs is a store several gateways share that carries a one-time
// thing from the gateway that made it to whichever gateway it comes back
// to (an e-mailed login link: asked at one, opened at another behind a
// balancer), bound to the browser that asked.
type Handoffs interface {
	// PutHandoff stores value under key for the browser bind until
	// expires, dropping expired ones on the way; ErrExists if key is
	// taken.
	PutHandoff(ctx context.Context, key, bind, value []byte, now, expires time.Time) error
	// TakeHandoff removes and returns key's value if bind is its
	// browser's (found and mine). One held for another browser stays
	// (found, not mine); an unknown or expired one is neither. Of two
	// takes racing, one gets it.
	TakeHandoff(ctx context.Context, key, bind []byte, now time.Time) (value []byte, found, mine bool, err error)
}

// Leaser is a store several gateways share: it lets one of them at a time
// hold a named lease, for background work that must run exactly once
// across them (polling backends, expiring sessions). A store only one
// gateway can open need not implement it: that gateway runs everything.
type Leaser interface {
	// TakeLease gives name to holder until now+ttl if nobody else holds
	// it unexpired, and reports whether holder has it now. A holder
	// renews by taking it again before it expires. An error is a fault
	// ("try again"), never a "no": the caller must not treat it as
	// another gateway holding the lease, nor as holding it itself.
	TakeLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error)
	// ReleaseLease gives name up if holder has it, so another gateway
	// need not wait for it to expire (a clean shutdown).
	ReleaseLease(ctx context.Context, name, holder string) error
}
