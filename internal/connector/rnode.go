package connector

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/airlock-hpc/airlock/internal/ticket"
)

// The rnode kind serves a session to Open OnDemand's /rnode/HOST/PORT/
// proxy. That proxy speaks plain HTTP to the node and lets every user
// logged in to OnDemand reach every node and port, so the connector, not
// the proxy, decides who gets in: the holder of the per-session secret the
// job wrote to its connection.yml (readable by its owner only), as
// OnDemand's own VNC apps do with their password.
//
// The secret never travels in a URL, where OnDemand's and the node's
// access logs and the browser's history would keep it: the session card
// posts it once in a form to RNodeLoginPath, the connector answers with an
// HttpOnly cookie scoped to the session's path and a 303 to the page
// asked for. Every other request needs the cookie. The rest is the http
// kind's reverse proxy (airlock's cookies stripped both ways, WebSockets
// included), to a web app or to noVNC under websockify inside the seal.

// RNodeLoginPath is where the session card posts the secret, relative to
// the connector's root (OnDemand's /rnode/HOST/PORT/ strips the prefix).
const RNodeLoginPath = "/airlock-login"

// RNodeSecretField and RNodeNextField are the login form's fields: the
// secret, and the page to go to after it, relative to the connector's
// root ("vnc.html?autoconnect=true&path=..."); default the root.
const (
	RNodeSecretField = "secret"
	RNodeNextField   = "next"
)

// rnodeUser is the user name the rnode kind's cookies and logs carry: the
// connector knows no user, only that the secret was presented.
const rnodeUser = "secret-holder"

// maxLoginForm bounds the login form's body.
const maxLoginForm = 4 << 10

type rnodeConnector struct {
	*httpConnector
	secretSum [sha256.Size]byte
}

// serveRNodeKind is the rnode kind: the http kind's proxy behind a secret.
func (s *server) serveRNodeKind(ctx context.Context, ln net.Listener) error {
	h, err := s.newHTTPConnector()
	if err != nil {
		return err
	}
	defer h.transport.CloseIdleConnections()
	return s.serveHTTP(ctx, ln, &rnodeConnector{httpConnector: h, secretSum: sha256.Sum256([]byte(s.cfg.Secret))})
}

func (h *rnodeConnector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := h.s
	done, ok := s.enter()
	if !ok {
		http.Error(w, "connector shutting down", http.StatusServiceUnavailable)
		return
	}
	defer done()
	ctx := r.Context()
	now := s.cfg.Now()
	refuse := func(rf refusal, attrs ...any) {
		s.logRefusal(ctx, r.RemoteAddr, rf, append(attrs, "method", r.Method, "path", r.URL.Path)...)
		writeRefusal(w, rf)
	}
	if r.URL.Path == RNodeLoginPath {
		h.login(w, r, now, refuse)
		return
	}
	claims, err := h.checkCookie(r, now)
	if err != nil {
		if errors.Is(err, http.ErrNoCookie) {
			refuse(refusal{http.StatusUnauthorized, "secret missing: open the session from its Open OnDemand card", nil})
		} else {
			refuse(cookieRefusal(err))
		}
		return
	}
	h.proxyAdmitted(w, r, claims, refuse)
}

// login checks the posted secret and exchanges it for the cookie.
func (h *rnodeConnector) login(w http.ResponseWriter, r *http.Request, now time.Time, refuse func(refusal, ...any)) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		refuse(refusal{http.StatusMethodNotAllowed, "login takes a POSTed form", nil})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginForm)
	if err := r.ParseForm(); err != nil {
		refuse(refusal{http.StatusBadRequest, "login form unreadable", err})
		return
	}
	got := sha256.Sum256([]byte(r.PostForm.Get(RNodeSecretField)))
	// Equal-length digests, compared in constant time: the answer says
	// nothing about how much of a guess was right.
	if subtle.ConstantTimeCompare(got[:], h.secretSum[:]) != 1 {
		refuse(refusal{http.StatusForbidden, "secret wrong", nil})
		return
	}
	next, ok := cleanNext(r.PostForm.Get(RNodeNextField))
	if !ok {
		refuse(refusal{http.StatusBadRequest, "login form: next must be a path relative to the session", nil})
		return
	}
	claims := ticket.Claims{Session: h.s.cfg.Session, Connector: h.s.cfg.Name, User: rnodeUser, Mode: ticket.Control}
	c, err := h.cookie(claims, now)
	if err != nil {
		refuse(refusal{http.StatusInternalServerError, "could not issue cookie", err})
		return
	}
	http.SetCookie(w, c)
	if tc := trackedFrom(r.Context()); tc != nil {
		tc.peer.Store(&claims)
	}
	h.s.log.InfoContext(r.Context(), "secret accepted", "remote_addr", r.RemoteAddr, "via", "form")
	w.Header().Set("Location", "./"+next)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusSeeOther)
}

// cleanNext accepts a path relative to the connector's root, with an
// optional query, and nothing that could leave it: the path is plain
// [A-Za-z0-9._/-] (no scheme, no percent-escape a browser would decode to
// "..", no leading slash) without a ".." segment, and the query has no
// fragment, backslash, space or control byte.
func cleanNext(next string) (string, bool) {
	p, q, _ := strings.Cut(next, "?")
	if strings.HasPrefix(p, "/") || len(next) > 1024 {
		return "", false
	}
	for _, c := range []byte(p) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '/' || c == '-') {
			return "", false
		}
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." {
			return "", false
		}
	}
	for _, c := range []byte(q) {
		if c < 0x21 || c == 0x7f || c == '#' || c == '\\' {
			return "", false
		}
	}
	return next, true
}
