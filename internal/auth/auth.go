// Package auth decides who someone is: it checks a name and password
// against the configured authenticators in order (a local password file,
// an LDAP directory), or trusts a header set by a reverse proxy from a
// configured address, and rate-limits failed logins. It returns an
// Identity and never touches sessions, the store or the gateway.
package auth

import (
	"context"
	"errors"
)

// Identity is who a request is from.
type Identity struct {
	User  string
	Admin bool
	// Method names the authenticator that vouched for the user
	// ("local", "ldap", "header", "oidc").
	Method string
	// Groups are the groups the authenticator says the user is in (LDAP
	// and OIDC), sorted; they decide which profiles the user may launch.
	// Nil: the authenticator knows of none.
	Groups []string
	// Email and Display are the user's address and full name, when the
	// authenticator knows them.
	Email, Display string
}

// Errors, matchable with errors.Is. Their text is safe to show a user.
var (
	// ErrInvalid: wrong name or password (never saying which).
	ErrInvalid = errors.New("invalid user name or password")
	// ErrUnavailable: the authenticator could not decide (an LDAP server
	// down); the next one is tried.
	ErrUnavailable = errors.New("authentication service unavailable")
	// ErrRateLimited: too many failed attempts; try later.
	ErrRateLimited = errors.New("too many failed logins; try again later")
)

// PasswordAuthenticator checks a user name and password.
type PasswordAuthenticator interface {
	// Name is the method name reported in Identity.Method and the audit log.
	Name() string
	// Authenticate returns the identity, ErrInvalid, or an error wrapping
	// ErrUnavailable. It must take about the same time for an unknown user
	// as for a wrong password.
	Authenticate(ctx context.Context, user, password string) (Identity, error)
}

// LoginMapper is an authenticator whose users may type their login as a
// server knows it (an e-mail address) instead of their user name.
type LoginMapper interface {
	// MapLogin returns the user name login stands for, if it has this
	// authenticator's form (such as NAME@example.org).
	MapLogin(login string) (user string, ok bool)
}
