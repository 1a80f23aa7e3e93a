package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/airlock-hpc/airlock/internal/auth"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
	"github.com/airlock-hpc/airlock/internal/ticket"
)

// loginCookie is the gateway's login. __Host-: browsers take it only
// Secure, Path=/ and without Domain, so an app host (a sibling or child
// name) cannot plant one for the gateway (cookie tossing: logging a
// viewer in as the app's owner).
const loginCookie = "__Host-airlock_login"

// identity is who a request is from and how they proved it.
type identity struct {
	user   string
	admin  bool
	cookie bool // by the login cookie: unsafe methods need the CSRF check
}

func (g *Gateway) loginKey() ticket.Key {
	return ticket.Key(derive(g.master, "airlock login cookie", ""))
}

// identify finds out who r is from: a bearer token, the login cookie, or a
// header from a trusted proxy. No credential is a 401; a bad one too.
func (g *Gateway) identify(r *http.Request) (identity, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return identity{}, apiErr(401, "unauthenticated", "use Authorization: Bearer TOKEN")
		}
		sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		t, err := g.cfg.Store.TokenByHash(r.Context(), sum[:], g.now())
		if err != nil {
			return identity{}, apiErr(401, "bad_token", "the token is unknown or revoked")
		}
		u, err := g.cfg.Store.GetUser(r.Context(), t.User)
		if err != nil {
			return identity{}, apiErr(401, "bad_token", "the token's user is gone")
		}
		return identity{user: u.Name, admin: u.Admin}, nil
	}
	if c, err := r.Cookie(loginCookie); err == nil {
		cl, err := ticket.Verify(g.loginKey(), c.Value, g.now())
		if err != nil {
			return identity{}, apiErr(401, "login_expired", "your login has expired or is not valid; log in again")
		}
		return identity{user: cl.User, admin: cl.Connector == "admin", cookie: true}, nil
	}
	if g.cfg.Header != nil {
		id, ok, err := g.cfg.Header.FromRequest(r)
		if err != nil {
			g.log.WarnContext(r.Context(), "header login refused", "remote_addr", r.RemoteAddr, "error", err)
			return identity{}, apiErr(403, "untrusted_proxy", "login headers are accepted only from the configured proxies")
		}
		if ok {
			g.ensureUser(r.Context(), id)
			return identity{user: id.User, admin: id.Admin}, nil
		}
	}
	return identity{}, apiErr(401, "unauthenticated", "log in first")
}

// ensureUser records a user the first time they log in, and their admin flag.
func (g *Gateway) ensureUser(ctx context.Context, id auth.Identity) {
	err := g.cfg.Store.CreateUser(ctx, session.User{Name: id.User, Admin: id.Admin, Created: g.now()})
	if err != nil && !errors.Is(err, store.ErrExists) {
		g.log.WarnContext(ctx, "record user", "user", id.User, "error", err)
	}
}

func remoteIP(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return h
}

// login checks a name and password and sets the login cookie.
func (g *Gateway) login(w http.ResponseWriter, r *http.Request, user, password string) (auth.Identity, error) {
	id, err := g.cfg.Auth.Login(r.Context(), user, password, remoteIP(r))
	if err != nil {
		g.metrics.loginsFaild.Add(1)
		g.audit(r.Context(), user, "login_failed", "", r.RemoteAddr, err.Error())
		switch {
		case errors.Is(err, auth.ErrRateLimited):
			return id, apiErr(429, "rate_limited", auth.ErrRateLimited.Error())
		case errors.Is(err, auth.ErrUnavailable):
			return id, apiErr(503, "auth_unavailable", auth.ErrUnavailable.Error())
		}
		return id, apiErr(401, "bad_login", auth.ErrInvalid.Error())
	}
	g.metrics.logins.Add(1)
	g.ensureUser(r.Context(), id)
	g.audit(r.Context(), id.User, "login", "", r.RemoteAddr, id.Method)
	role := "user"
	if id.Admin {
		role = "admin"
	}
	tok, err := ticket.Sign(g.loginKey(), ticket.Claims{Session: "login", Connector: role, User: id.User, Mode: ticket.Control, Expires: g.now().Add(g.cfg.LoginTTL)})
	if err != nil {
		return id, err
	}
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: tok, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteLaxMode, MaxAge: int(g.cfg.LoginTTL / time.Second)})
	return id, nil
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
		g.ensureUser(r.Context(), id)
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
	json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&body)
	raw := make([]byte, 32)
	rand.Read(raw)
	secret := "alk_" + base64.RawURLEncoding.EncodeToString(raw)
	sum := sha256.Sum256([]byte(secret))
	idb := make([]byte, 6)
	rand.Read(idb)
	t := session.Token{ID: "t-" + base64.RawURLEncoding.EncodeToString(idb), User: user, Name: body.Name, Created: g.now(), Hash: sum[:]}
	if t.Name == "" {
		t.Name = "token " + t.Created.UTC().Format(time.DateTime)
	}
	if err := g.cfg.Store.CreateToken(r.Context(), t); err != nil {
		return err
	}
	g.audit(r.Context(), user, "token_create", "", r.RemoteAddr, t.ID)
	writeJSON(w, 201, map[string]string{"token": secret, "id": t.ID})
	return nil
}
