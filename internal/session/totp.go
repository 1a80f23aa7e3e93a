package session

import "time"

// TOTP is a user's second factor: a time-based one-time password
// generator (RFC 6238) they enrolled in the portal.
type TOTP struct {
	User string `json:"user"`
	// Secret is the shared key sealed by the gateway (AES-GCM under a key
	// derived from its master key): the store never holds it in clear.
	Secret []byte `json:"-"`
	// LastStep is the last time step (Unix time / 30 s) a code was
	// accepted for: a code for it or an earlier one is a replay.
	LastStep int64     `json:"-"`
	Created  time.Time `json:"created"`
	// Failures counts wrong codes since FailSince (the brute-force limit,
	// shared by every gateway on the store).
	Failures  int       `json:"-"`
	FailSince time.Time `json:"-"`
}

// PendingLogin is a browser that passed the first factor (a password) and
// still owes the second: a cookie holds a random secret, the store its
// hash. It is not a login: nothing but the second step accepts it, it
// lasts minutes and is deleted when used.
type PendingLogin struct {
	Hash    []byte
	User    string
	Admin   bool
	Method  string
	Groups  []string
	Email   string
	Created time.Time
	Expires time.Time
}
