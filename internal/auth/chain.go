package auth

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// MaxUserNameLen is the longest user name [ValidateUserName] accepts.
const MaxUserNameLen = 64

// ValidateUserName reports whether name may be a user name: 1 to
// [MaxUserNameLen] bytes of lowercase ASCII letters, digits, '.', '_' and
// '-', starting with a letter or digit.
//
// The rule is deliberately narrow because a name travels far from the login
// form: it becomes a directory and account-like identifier on the hosts
// sessions run on (so no '/', no leading '-' or '.' that a command line or
// a path would misread), a field of the local password file (so no ':' or
// newline), a cookie and log field (so no spaces, quotes, '=' or control
// characters that would let a user forge log lines or cookie attributes),
// and an LDAP DN or filter value (so fewer characters need escaping at
// all). Lowercase only, because LDAP compares names without regard to case:
// "Alice" and "alice" must not become two airlock users.
//
// The error never repeats name, which is sometimes a password typed into
// the wrong field.
func ValidateUserName(name string) error {
	if name == "" {
		return errors.New("invalid user name: empty")
	}
	if len(name) > MaxUserNameLen {
		return fmt.Errorf("invalid user name: longer than %d characters", MaxUserNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return errors.New("invalid user name: use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit")
		}
	}
	return nil
}

// Limiter throttles failed logins. ratelimit.Limiter implements it; the
// interface lives here so this package need not import its subpackages.
type Limiter interface {
	// Allow returns an error wrapping ErrRateLimited if user or addr has
	// failed too often recently.
	Allow(user, addr string, now time.Time) error
	// Fail records a failed login.
	Fail(user, addr string, now time.Time)
	// Succeed records a successful login.
	Succeed(user, addr string)
}

// Chain logs users in by trying several authenticators in order.
//
// A zero Chain has no authenticators and refuses every login with
// ErrUnavailable. A Chain must not be modified while Login runs; Login
// itself may be called concurrently.
type Chain struct {
	// Authenticators are tried in order. ErrInvalid from one moves on to
	// the next, because a user may exist only in a later one (an LDAP
	// user with no local entry); so does ErrUnavailable, which is logged.
	// The first success wins.
	Authenticators []PasswordAuthenticator
	// Limiter, if not nil, is asked before any password is checked and
	// told the outcome. Nil means no rate limiting: only tests should
	// want that.
	Limiter Limiter
	// Logger gets one line per login attempt. Defaults to slog.Default().
	Logger *slog.Logger
}

// invalidNameLog stands in for a user name that fails ValidateUserName in
// logs: such a "name" is often a password typed into the wrong field.
const invalidNameLog = "(invalid)"

// Login checks user and password against the authenticators and returns
// who the user is. remoteAddr is the client's address ("ip:port" or "ip")
// and is used for rate limiting and logs only.
//
// Errors match, with errors.Is, one of:
//   - ErrRateLimited: the limiter refused; no password was checked.
//   - ErrInvalid: an invalid name, an empty password, or every
//     authenticator that could decide said no (even if others were
//     unavailable).
//   - ErrUnavailable: every authenticator was unavailable (or there are
//     none); the failure is not counted against the user.
//   - ctx.Err(): the context ended first; not counted either.
//
// The password is never logged, and the user name only if it is valid.
func (c *Chain) Login(ctx context.Context, user, password, remoteAddr string) (Identity, error) {
	log := cmp.Or(c.Logger, slog.Default()).With("component", "auth")
	user = c.mapLogin(user)
	nameErr := ValidateUserName(user)
	logUser := user
	if nameErr != nil {
		logUser = invalidNameLog
	}
	log = log.With("user", logUser, "remote_addr", remoteAddr)

	if c.Limiter != nil {
		if err := c.Limiter.Allow(user, remoteAddr, time.Now()); err != nil {
			log.WarnContext(ctx, "login refused", "error", err)
			return Identity{}, err
		}
	}
	if nameErr != nil || password == "" {
		// Counted as a failure so that spraying malformed names still
		// costs the address its budget.
		c.fail(user, remoteAddr)
		reason := "empty password"
		if nameErr != nil {
			reason = nameErr.Error()
		}
		log.InfoContext(ctx, "login failed", "reason", reason)
		return Identity{}, ErrInvalid
	}

	var unavailable []error
	invalid := false
	for _, a := range c.Authenticators {
		id, err := a.Authenticate(ctx, user, password)
		if err == nil && id.User != user {
			err = fmt.Errorf("authenticator %s vouched for a different user: %w", a.Name(), ErrUnavailable)
		}
		switch {
		case err == nil:
			if id.Method == "" {
				id.Method = a.Name()
			}
			if c.Limiter != nil {
				c.Limiter.Succeed(user, remoteAddr)
			}
			log.InfoContext(ctx, "login", "method", id.Method, "admin", id.Admin)
			return id, nil
		case ctx.Err() != nil:
			log.InfoContext(ctx, "login abandoned", "method", a.Name(), "error", ctx.Err())
			return Identity{}, fmt.Errorf("login: %w", ctx.Err())
		case errors.Is(err, ErrInvalid):
			invalid = true
		default:
			// Anything that is not a clear "no" counts as unavailable:
			// an authenticator that cannot decide must not decide.
			log.WarnContext(ctx, "authenticator unavailable", "method", a.Name(), "error", err)
			if !errors.Is(err, ErrUnavailable) {
				err = fmt.Errorf("%w: %w", ErrUnavailable, err)
			}
			unavailable = append(unavailable, fmt.Errorf("%s: %w", a.Name(), err))
		}
	}
	if invalid {
		c.fail(user, remoteAddr)
		log.InfoContext(ctx, "login failed", "reason", "invalid credentials", "unavailable", len(unavailable))
		return Identity{}, ErrInvalid
	}
	log.WarnContext(ctx, "login failed", "reason", "no authenticator available")
	if len(unavailable) == 0 {
		return Identity{}, fmt.Errorf("login: no authenticators configured: %w", ErrUnavailable)
	}
	return Identity{}, fmt.Errorf("login: %w", errors.Join(unavailable...))
}

func (c *Chain) fail(user, remoteAddr string) {
	if c.Limiter != nil {
		c.Limiter.Fail(user, remoteAddr, time.Now())
	}
}

// mapLogin turns a login typed in a server's form (an e-mail address) into
// the user name the first authenticator that knows the form maps it to;
// anything else is returned as it is. A mapped name is still validated.
func (c *Chain) mapLogin(login string) string {
	if ValidateUserName(login) == nil {
		return login
	}
	for _, a := range c.Authenticators {
		if m, ok := a.(LoginMapper); ok {
			if u, ok := m.MapLogin(login); ok {
				return u
			}
		}
	}
	return login
}
