package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/airlock-hpc/airlock/internal/auth"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// loginCookie is the gateway's login. __Host-: browsers take it only
// Secure, Path=/ and without Domain, so an app host (a sibling or child
// name) cannot plant one for the gateway (cookie tossing: logging a
// viewer in as the app's owner).
const loginCookie = "__Host-airlock_login"

// identity is who a request is from and how they proved it.
type identity struct {
	user  string
	admin bool
	// groups are the user's groups as of their last login (LDAP, OIDC).
	groups []string
	cookie bool   // by the login cookie: unsafe methods need the CSRF check
	login  string // the login's id when by the cookie (logout, revoke)
	token  string // the token's id when by a bearer token (revoke)
	// until is when the login expires (by cookie); zero: no end.
	until time.Time
	// proof is the stored hash of the login, to look it up again while a
	// connection it let in stays open (recheckViewers).
	proof []byte
}

// identify finds out who r is from: a bearer token, the login cookie, or a
// header from a trusted proxy. No credential is a 401; a bad one too.
// Whether the user still exists and is an admin is decided now, for this
// request (current), never taken from when the credential was made. A
// store that cannot answer is a 503 "try again", never a 401.
func (g *Gateway) identify(r *http.Request) (identity, error) {
	ctx := r.Context()
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return identity{}, apiErr(401, "unauthenticated", "use Authorization: Bearer TOKEN")
		}
		// The records from the fast path's cache (fastpath.go).
		return g.bearerIdentity(ctx, sha256.Sum256([]byte(strings.TrimSpace(tok))))
	}
	if c, err := r.Cookie(loginCookie); err == nil {
		l, err := g.cfg.Store.LoginByHash(ctx, sha256Sum(c.Value))
		switch {
		case errors.Is(err, store.ErrNotFound) || (err == nil && !g.now().Before(l.Expires)):
			return identity{}, apiErr(401, "login_expired", "your login has expired or is not valid; log in again")
		case err != nil:
			return identity{}, storeFault("login lookup", err)
		}
		id, err := g.current(ctx, l.User)
		id.cookie, id.login, id.until, id.proof = true, l.ID, l.Expires, l.Hash
		return id, err
	}
	if g.cfg.Header != nil {
		id, ok, err := g.cfg.Header.FromRequest(r)
		if err != nil {
			g.log.WarnContext(ctx, "header login refused", "remote_addr", r.RemoteAddr, "error", err)
			return identity{}, apiErr(403, "untrusted_proxy", "login headers are accepted only from the configured proxies")
		}
		if ok {
			// The proxy vouches for the user on every request: that is
			// the re-check. The record only serves their tokens.
			if u, err := g.cfg.Store.GetUser(ctx, id.User); err != nil || u.Admin != id.Admin || u.Method != id.Method {
				if err := g.ensureUser(ctx, id); err != nil {
					g.log.WarnContext(ctx, "record user", "user", id.User, "error", err)
				}
			}
			return identity{user: id.User, admin: id.Admin}, nil
		}
	}
	return identity{}, apiErr(401, "unauthenticated", "log in first")
}

// ensureUser records a user at a login: their admin flag and the method
// that vouched for them, as it says now.
func (g *Gateway) ensureUser(ctx context.Context, id auth.Identity) error {
	err := g.cfg.Store.PutUser(ctx, session.User{Name: id.User, Admin: id.Admin, Method: id.Method, Groups: id.Groups, Email: id.Email, Created: g.now()})
	g.fast.forgetAll() // a cached user record may be stale now
	return err
}

func remoteIP(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return h
}

// login checks a name and password and sets the login cookie; or, for a
// user who has or needs a second factor, only the pending cookie
// (pending true), for the second step (totp.go).
func (g *Gateway) login(w http.ResponseWriter, r *http.Request, user, password string) (pending bool, err error) {
	id, err := g.cfg.Auth.Login(r.Context(), user, password, remoteIP(r))
	if err != nil {
		g.metrics.loginsFaild.Add(1)
		g.audit(r.Context(), user, "login_failed", "", r.RemoteAddr, err.Error())
		switch {
		case errors.Is(err, auth.ErrRateLimited):
			return false, apiErr(429, "rate_limited", auth.ErrRateLimited.Error())
		case errors.Is(err, auth.ErrUnavailable):
			return false, apiErr(503, "auth_unavailable", auth.ErrUnavailable.Error())
		}
		return false, apiErr(401, "bad_login", auth.ErrInvalid.Error())
	}
	if passwordMethod(id.Method) {
		_, enrolled, err := g.totpStatus(r.Context(), id.User)
		if err != nil {
			return false, err
		}
		if enrolled || g.totpRequired(id.Method, id.Groups) {
			// The user record first: enrolment needs it.
			if err := g.ensureUser(r.Context(), id); err != nil {
				return false, storeFault("record user", err)
			}
			return true, g.startPending(w, r, id)
		}
	}
	return false, g.startLogin(w, r, id, session.Login{})
}

// startLogin records id (their admin flag and groups as the authenticator
// says now) and a login for them, and sets the login cookie. l carries
// what the method keeps with the login (an OIDC provider and ID token).
func (g *Gateway) startLogin(w http.ResponseWriter, r *http.Request, id auth.Identity, l session.Login) error {
	if err := g.ensureUser(r.Context(), id); err != nil {
		return storeFault("record user", err)
	}
	// The cookie is a random secret; the store keeps its hash, so logout
	// (deleting the row) ends the login everywhere.
	secret, sum := newSecret()
	now := g.now()
	l.ID, l.User, l.Created, l.Expires, l.Hash = "l-"+newShortID(), id.User, now, now.Add(g.cfg.LoginTTL), sum
	if err := g.cfg.Store.CreateLogin(r.Context(), l); err != nil {
		return storeFault("record login", err)
	}
	g.metrics.logins.Add(1)
	g.audit(r.Context(), id.User, "login", "", r.RemoteAddr, id.Method)
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: secret, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteLaxMode, MaxAge: int(g.cfg.LoginTTL / time.Second)})
	return nil
}

// maxTokenName is the longest token name: a label a person reads in a list.
const maxTokenName = 100

// checkTokenName refuses a token name too long to be a label, or one with
// characters that would garble the list it is shown in.
func checkTokenName(name string) error {
	if len(name) > maxTokenName {
		return apiErr(400, "bad_request", fmt.Sprintf("field \"name\": %d bytes; at most %d", len(name), maxTokenName))
	}
	if !utf8.ValidString(name) {
		return apiErr(400, "bad_request", `field "name": not UTF-8`)
	}
	for _, c := range name {
		if unicode.IsControl(c) {
			return apiErr(400, "bad_request", `field "name": control characters are not allowed`)
		}
	}
	return nil
}

// createToken makes a bearer token for scripts. POST /api/v1/tokens with
// HTTP Basic credentials (or a logged-in browser) → {"token": "..."}.
func (g *Gateway) createToken(w http.ResponseWriter, r *http.Request) error {
	var user string
	if u, p, ok := r.BasicAuth(); ok {
		id, err := g.cfg.Auth.Login(r.Context(), u, p, remoteIP(r))
		if err != nil {
			g.audit(r.Context(), u, "login_failed", "", r.RemoteAddr, "token: "+err.Error())
			if errors.Is(err, auth.ErrRateLimited) {
				return apiErr(429, "rate_limited", err.Error())
			}
			return apiErr(401, "bad_login", auth.ErrInvalid.Error())
		}
		if err := g.secondFactorForToken(r, id); err != nil {
			return err
		}
		if err := g.ensureUser(r.Context(), id); err != nil {
			return storeFault("record user", err)
		}
		user = id.User
	} else {
		id, err := g.identify(r)
		if err != nil {
			return err
		}
		user = id.user
	}
	var body struct {
		Name string `json:"name"`
	}
	if err := readJSON(w, r, &body, false); err != nil {
		return err
	}
	if err := checkTokenName(body.Name); err != nil {
		return err
	}
	secret := "alk_" + randomToken(32)
	t := session.Token{ID: "t-" + newShortID(), User: user, Name: body.Name, Created: g.now(), Hash: sha256Sum(secret)}
	if t.Name == "" {
		t.Name = "token " + t.Created.UTC().Format(time.DateTime)
	}
	if err := g.cfg.Store.CreateToken(r.Context(), t); err != nil {
		return storeFault("create token", err)
	}
	g.audit(r.Context(), user, "token_create", "", r.RemoteAddr, t.ID)
	writeJSON(w, 201, map[string]string{"token": secret, "id": t.ID})
	return nil
}

// randomToken returns n random bytes, URL-safe base64.
func randomToken(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// newSecret returns a random secret for a cookie and its SHA-256.
func newSecret() (string, []byte) {
	secret := randomToken(32)
	return secret, sha256Sum(secret)
}

// newShortID returns 8 random URL-safe characters for a row id.
func newShortID() string { return randomToken(6) }

// logout ends the login r carries, in the store (so a copy of the cookie
// is worthless) and its open viewers. It returns the login it ended (zero
// if none).
func (g *Gateway) logout(r *http.Request) (session.Login, error) {
	c, err := r.Cookie(loginCookie)
	if err != nil {
		return session.Login{}, nil
	}
	l, err := g.cfg.Store.LoginByHash(r.Context(), sha256Sum(c.Value))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return session.Login{}, nil
	case err != nil:
		return session.Login{}, storeFault("login lookup", err)
	}
	if err := g.cfg.Store.DeleteLogin(r.Context(), l.ID); err != nil {
		return session.Login{}, storeFault("delete login", err)
	}
	g.audit(r.Context(), l.User, "logout", "", r.RemoteAddr, l.ID)
	g.revoke(r.Context(), revokeEvent{Reason: "logged out", Login: l.ID})
	return l, nil
}
