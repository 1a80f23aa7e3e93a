// Package session is airlock's vocabulary: what a session, a share, a user,
// an API token and an audit event are, and which state changes are legal.
// It does no I/O and imports nothing from internal/, so every other package
// may import it.
package session

import (
	"fmt"
	"time"
)

// State is where a session is in its life.
type State string

// The states, in order. Ended is final.
const (
	Queued   State = "queued"   // accepted, waiting for the backend (a Slurm queue)
	Starting State = "starting" // the runner is making the seal
	Ready    State = "ready"    // connectors answer; users may connect
	Stopping State = "stopping" // asked to end; the runner is tearing down
	Ended    State = "ended"    // gone; Reason says why
)

var next = map[State][]State{
	Queued:   {Starting, Ready, Stopping, Ended},
	Starting: {Ready, Stopping, Ended},
	Ready:    {Stopping, Ended},
	Stopping: {Ended},
	Ended:    {},
}

// Valid reports whether s is one of the states.
func (s State) Valid() bool { _, ok := next[s]; return ok }

// Active reports whether a session in s counts against limits.
func (s State) Active() bool { return s.Valid() && s != Ended }

// CanMoveTo reports whether a session may go from s to t. Staying in the
// same state is allowed (an update of other fields).
func (s State) CanMoveTo(t State) bool {
	if s == t {
		return s.Valid()
	}
	for _, n := range next[s] {
		if n == t {
			return true
		}
	}
	return false
}

// Mode is what a viewer may do.
type Mode string

const (
	Control Mode = "control" // keyboard, mouse, clipboard
	View    Mode = "view"    // watch only; enforced by the connector
)

// Session is one sealed unit as the gateway knows it.
type Session struct {
	ID      string `json:"id"`
	Owner   string `json:"owner"`
	Profile string `json:"profile"`
	State   State  `json:"state"`
	// Reason says why a session is queued (a scheduler's reason) or ended.
	Reason string `json:"reason,omitempty"`
	// Persistent sessions survive their viewers leaving; single-shot ones
	// end when the last viewer leaves (after a grace period).
	Persistent bool `json:"persistent"`
	CPUs       int  `json:"cpus"`
	MemoryMB   int  `json:"memory_mb"`
	// Lifetime is how long the session may run from when it started.
	Lifetime time.Duration `json:"lifetime"`
	Created  time.Time     `json:"created"`
	Started  time.Time     `json:"started,omitzero"`
	Ended    time.Time     `json:"ended,omitzero"`
	// LastSeen is when a viewer was last connected, for idle timeouts.
	LastSeen time.Time `json:"last_seen,omitzero"`
	// Backend names where the runner runs ("local", "slurm"), BackendRef
	// what it calls it there (a pid, a job id), Node the host.
	Backend    string `json:"backend"`
	BackendRef string `json:"backend_ref,omitempty"`
	Node       string `json:"node,omitempty"`
	// Endpoints are the connectors' addresses on the node, by name; users
	// never see them. TLSSHA256 pins the connectors' certificate.
	Endpoints map[string]string `json:"-"`
	TLSSHA256 string            `json:"-"`
}

// Ends is when the session's lifetime is over, or zero if it has not
// started or has no limit.
func (s *Session) Ends() time.Time {
	if s.Started.IsZero() || s.Lifetime <= 0 {
		return time.Time{}
	}
	return s.Started.Add(s.Lifetime)
}

// Move changes the state, refusing an illegal change.
func (s *Session) Move(t State, reason string, now time.Time) error {
	if !s.State.CanMoveTo(t) {
		return fmt.Errorf("session %s: cannot go from %s to %s", s.ID, s.State, t)
	}
	if s.State != t {
		switch t {
		case Ready:
			if s.Started.IsZero() {
				s.Started = now
			}
		case Ended:
			s.Ended = now
		}
	}
	s.State = t
	if reason != "" {
		s.Reason = reason
	}
	return nil
}

// User is an account known to the gateway.
type User struct {
	Name    string    `json:"name"`
	Admin   bool      `json:"admin"`
	Created time.Time `json:"created"`
	// Method is the authenticator that vouched for the user at their last
	// login ("local", "ldap", "header"); the gateway asks that one whether
	// the user still exists. Empty for users recorded before it was kept.
	Method string `json:"method,omitempty"`
	// Groups are the groups the authenticator named at the user's last
	// login (LDAP, OIDC), sorted; nil for the others.
	Groups []string `json:"groups,omitempty"`
	// Email is the address the last login's method knew (OIDC, a login
	// link); "" for the others.
	Email string `json:"email,omitempty"`
}

// Login is a browser's login: the cookie holds a random secret, the store
// its hash, so logging out (deleting the row) ends it everywhere, and a
// copy of the cookie is worth nothing afterwards.
type Login struct {
	ID      string    `json:"id"`
	User    string    `json:"user"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	// Hash is the SHA-256 of the cookie's secret.
	Hash []byte `json:"-"`
	// Provider and IDToken: for a login through an OpenID provider, its
	// name and the ID token, sent back as id_token_hint at logout.
	Provider string `json:"provider,omitempty"`
	IDToken  string `json:"-"`
}

// Share is a link that lets someone else view or control a session.
type Share struct {
	ID        string    `json:"id"`
	Session   string    `json:"session"`
	Mode      Mode      `json:"mode"`
	CreatedBy string    `json:"created_by"`
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires"`
	Revoked   bool      `json:"revoked"`
	// Hash is the SHA-256 of the share's secret; the secret itself is
	// shown once and never stored.
	Hash []byte `json:"-"`
}

// Token is a bearer token for scripts.
type Token struct {
	ID       string    `json:"id"`
	User     string    `json:"user"`
	Name     string    `json:"name"`
	Created  time.Time `json:"created"`
	LastUsed time.Time `json:"last_used,omitzero"`
	Revoked  bool      `json:"revoked"`
	Hash     []byte    `json:"-"`
}

// AuditEvent is one line of the append-only audit log.
type AuditEvent struct {
	Time       time.Time `json:"time"`
	Actor      string    `json:"actor"`
	Action     string    `json:"action"` // login, login_failed, launch, connect, share, revoke, stop, ...
	Session    string    `json:"session,omitempty"`
	RemoteAddr string    `json:"remote_addr,omitempty"`
	Detail     string    `json:"detail,omitempty"`
}
