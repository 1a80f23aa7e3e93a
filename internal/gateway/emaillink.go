package gateway

import (
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/airlock-hpc/airlock/internal/auth"
	"github.com/airlock-hpc/airlock/internal/auth/oidc"
	"github.com/airlock-hpc/airlock/internal/auth/ratelimit"
	"github.com/airlock-hpc/airlock/internal/session"
)

// Sender sends a plain-text e-mail (mailer.Mailer).
type Sender interface {
	Send(ctx context.Context, to, subject, body string) error
}

// EmailLogin is login by a link e-mailed to an address of an allowed
// domain (farhi's "authentication using an email").
type EmailLogin struct {
	// Domains are the domains whose addresses may log in; the user name is
	// the address's local part (a valid user name, or no link is sent).
	Domains []string
	// TTL is how long a link works. Default 10m.
	TTL time.Duration
	// AdminUsers are admins when they log in so.
	AdminUsers []string
	// PerAddress and PerClient bound the links asked for one address and
	// by one client address in Window. Defaults 3, 10, 15m.
	PerAddress, PerClient int
	Window                time.Duration
}

// emailCookie binds a link to the browser that asked for it: someone
// else who gets the link (a forwarded mail, a mail scanner that follows
// links, a shared inbox) cannot log in with it.
const emailCookie = "__Host-airlock_email"

// emailMethod is the Identity.Method of users who log in by a link.
const emailMethod = "email"

// emailLink is a link sent, by the SHA-256 of its secret.
type emailLink struct {
	user, email string
	bind        []byte
	next        string
	expires     time.Time
}

// emailLinks are the links sent and not yet used or expired.
type emailLinks struct {
	mu    sync.Mutex
	links map[string]emailLink
	lim   *ratelimit.Limiter
}

// maxEmailLinks bounds the links waiting to be used.
const maxEmailLinks = 10000

func (e *emailLinks) put(key string, l emailLink, now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.links == nil {
		e.links = map[string]emailLink{}
	}
	if len(e.links) >= maxEmailLinks {
		for k, v := range e.links {
			if !now.Before(v.expires) {
				delete(e.links, k)
			}
		}
		if len(e.links) >= maxEmailLinks {
			return false
		}
	}
	e.links[key] = l
	return true
}

// take removes and returns the link key if bind is its browser's. A link
// opened elsewhere (a mail scanner following links, a forwarded mail)
// stays for its own browser: the binding is a 256-bit secret, so keeping
// it gives nobody a second guess worth having.
func (e *emailLinks) take(key string, bind []byte) (emailLink, bool, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	l, ok := e.links[key]
	if !ok {
		return l, false, false
	}
	if subtle.ConstantTimeCompare(bind, l.bind) != 1 {
		return l, true, false
	}
	delete(e.links, key)
	return l, true, true
}

// emailLinkJSON is an emailLink as the store keeps it for several
// gateways (its binding is the handoff's own).
type emailLinkJSON struct {
	User    string    `json:"user"`
	Email   string    `json:"email"`
	Next    string    `json:"next"`
	Expires time.Time `json:"expires"`
}

func (g *Gateway) putEmailLink(ctx context.Context, key []byte, l emailLink, now time.Time) error {
	v, err := json.Marshal(emailLinkJSON{User: l.user, Email: l.email, Next: l.next, Expires: l.expires})
	if err != nil {
		return err
	}
	return g.handoffs.PutHandoff(ctx, key, l.bind, v, now, l.expires)
}

// takeEmailLink is emailLinks.take on the store. A link held for another
// browser stays for it, as in memory; an expired one is not found.
func (g *Gateway) takeEmailLink(ctx context.Context, key, bind []byte) (emailLink, bool, bool, error) {
	if len(bind) == 0 {
		bind = []byte{0} // no cookie: matches no browser's binding
	}
	v, found, mine, err := g.handoffs.TakeHandoff(ctx, key, bind, g.now())
	if err != nil || !mine {
		return emailLink{}, found, false, err
	}
	var j emailLinkJSON
	if err := json.Unmarshal(v, &j); err != nil {
		return emailLink{}, false, false, fmt.Errorf("login link: %w", err)
	}
	return emailLink{user: j.User, email: j.Email, next: j.Next, expires: j.Expires, bind: bind}, true, true, nil
}

// restoreEmailLink puts back a link taken for a login that a store fault
// stopped. If the store still fails, the link is lost: the user asks
// another, as for an expired one.
func (g *Gateway) restoreEmailLink(ctx context.Context, key []byte, l emailLink) {
	now := g.now()
	if g.handoffs == nil {
		g.emailLinks.put(string(key), l, now)
		return
	}
	if err := g.putEmailLink(context.WithoutCancel(ctx), key, l, now); err != nil {
		g.log.WarnContext(ctx, "a login link stopped by a store fault could not be given back", "error", err)
	}
}

// mailJob is an e-mail waiting for the sender goroutine.
type mailJob struct {
	to, subject, body string
	what              string // for the log
}

// startMailer runs the goroutine that sends e-mails one after the other,
// so a request never waits for the relay (nor tells, by taking longer,
// that a mail was sent).
func (g *Gateway) startMailer() {
	if g.cfg.Mailer == nil {
		return
	}
	g.mailq = make(chan mailJob, 256)
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		for {
			select {
			case <-g.ctx.Done():
				return
			case j := <-g.mailq:
				if err := g.cfg.Mailer.Send(g.ctx, j.to, j.subject, j.body); err != nil {
					g.log.WarnContext(g.ctx, "e-mail not sent", "what", j.what, "error", err)
				}
			}
		}
	}()
}

// queueMail hands j to the sender; false if the queue is full.
func (g *Gateway) queueMail(j mailJob) bool {
	select {
	case g.mailq <- j:
		return true
	default:
		g.log.Warn("e-mail dropped: the queue is full", "what", j.what)
		return false
	}
}

// emailUser is the user name an address logs in as, if its domain is
// allowed.
func (g *Gateway) emailUser(addr string) (string, error) {
	for _, d := range g.cfg.EmailLogin.Domains {
		if u, err := oidc.MapUser(addr, d); err == nil {
			return u, nil
		}
	}
	return "", errors.New("not an address of an allowed domain, or its local part is no valid user name")
}

// emailLoginPost sends a login link. POST /login/email (email, next).
// The answer is the same whether or not the address may log in.
func (g *Gateway) emailLoginPost(w http.ResponseWriter, r *http.Request) error {
	el := g.cfg.EmailLogin
	if el == nil || g.cfg.Mailer == nil {
		return apiErr(404, "not_found", "login by e-mail is not enabled")
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if err := r.ParseForm(); err != nil {
		return apiErr(400, "bad_request", "bad form")
	}
	next := localPath(r.PostForm.Get("next"))
	raw := strings.TrimSpace(r.PostForm.Get("email"))
	ctx := r.Context()
	log := g.log.With("component", "auth", "method", emailMethod, "remote_addr", r.RemoteAddr)
	a, err := mail.ParseAddress(raw)
	if err != nil || a.Name != "" || len(raw) > 254 {
		return g.emailAnswer(w, next, apiErr(400, "bad_request", "that is not an e-mail address"))
	}
	addr := strings.ToLower(a.Address)
	now := g.now()
	// Every request spends the address's and the client's budget, sent or
	// not: the limit is on asking, and says nothing about the address.
	if err := g.emailLinks.lim.Allow(addr, remoteIP(r), now); err != nil {
		log.WarnContext(ctx, "login link refused", "email", addr, "error", err)
		return g.emailAnswer(w, next, apiErr(429, "rate_limited", "too many login links asked for; try again later"))
	}
	g.emailLinks.lim.Fail(addr, remoteIP(r), now)
	secret := ""
	if c, err := r.Cookie(emailCookie); err == nil && len(c.Value) == 43 {
		secret = c.Value
	} else {
		secret, _ = newSecret()
	}
	ttl := cmp.Or(el.TTL, 10*time.Minute)
	http.SetCookie(w, &http.Cookie{Name: emailCookie, Value: secret, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteLaxMode, MaxAge: int(ttl / time.Second)})
	user, err := g.emailUser(addr)
	if err != nil {
		log.InfoContext(ctx, "login link not sent", "email", addr, "reason", err.Error())
		g.audit(ctx, "", "login_link_refused", "", r.RemoteAddr, addr+": "+err.Error())
		return g.emailAnswer(w, next, nil)
	}
	link, sum := newSecret()
	l := emailLink{user: user, email: addr, bind: sha256Sum(secret), next: next, expires: now.Add(ttl)}
	if g.handoffs != nil {
		// Several gateways: the link may be opened at another one.
		if err := g.putEmailLink(ctx, sum, l, now); err != nil {
			return g.emailAnswer(w, next, storeFault("keep a login link", err))
		}
	} else if !g.emailLinks.put(string(sum), l, now) {
		return g.emailAnswer(w, next, apiErr(503, "busy", "too many login links are waiting; try again later"))
	}
	// Never the request's Host: the asker chooses it, and the link goes
	// to someone else's inbox (TestEmailLinkForgedHost).
	url := strings.TrimSuffix(g.cfg.PublicURL, "/") + "/login/email/" + link
	body := fmt.Sprintf("Someone, probably you, asked to log in to airlock as %s.\n\nOpen this link in the same browser within %s to log in:\n\n%s\n\nIt works once. If you did not ask, ignore this e-mail.\n", user, ttl, url)
	g.queueMail(mailJob{to: addr, subject: "Your airlock login link", body: body, what: "login link for " + user})
	g.audit(ctx, user, "login_link_sent", "", r.RemoteAddr, addr)
	log.InfoContext(ctx, "login link sent", "user", user, "email", addr)
	return g.emailAnswer(w, next, nil)
}

// emailAnswer is the page after asking for a link: err, or the same
// notice whether or not a link was sent.
func (g *Gateway) emailAnswer(w http.ResponseWriter, next string, err error) error {
	if g.cfg.Portal == nil {
		if err != nil {
			writeErr(w, err)
			return nil
		}
		writeJSON(w, 202, map[string]string{"message": emailNotice})
		return nil
	}
	v := g.loginView(next)
	status := 200
	if err != nil {
		ae := asAPIError(err)
		v.Error, status = ae.Message, ae.Status
	} else {
		v.Notice = emailNotice
	}
	return g.cfg.Portal.Login(w, status, v)
}

const emailNotice = "If this address may log in, a link is on its way to it. Open it in this browser; it works once, for a few minutes."

// emailLoginLink logs in with a link. GET /login/email/{secret}.
func (g *Gateway) emailLoginLink(w http.ResponseWriter, r *http.Request) error {
	if g.cfg.EmailLogin == nil {
		return apiErr(404, "not_found", "login by e-mail is not enabled")
	}
	ctx := r.Context()
	log := g.log.With("component", "auth", "method", emailMethod, "remote_addr", r.RemoteAddr)
	fail := func(cause string, l emailLink) error {
		log.WarnContext(ctx, "login failed", "reason", cause, "user", l.user)
		g.metrics.loginsFaild.Add(1)
		g.audit(ctx, l.user, "login_failed", "", r.RemoteAddr, "email link: "+cause)
		return g.loginFailed(w, r, apiErr(401, "bad_login", "login failed: the link is not valid (used, expired, or opened in another browser); ask for a new one"))
	}
	var bind []byte
	if c, err := r.Cookie(emailCookie); err == nil {
		bind = sha256Sum(c.Value)
	}
	var (
		l           emailLink
		found, mine bool
	)
	key := sha256Sum(r.PathValue("secret"))
	if g.handoffs != nil {
		var err error
		if l, found, mine, err = g.takeEmailLink(ctx, key, bind); err != nil {
			return storeFault("take a login link", err)
		}
	} else {
		l, found, mine = g.emailLinks.take(string(key), bind)
	}
	switch {
	case !found:
		return fail("unknown or already used link", l)
	case !mine:
		return fail("opened in a browser other than the one that asked", l)
	case !g.now().Before(l.expires):
		return fail("expired link", l)
	}
	id := auth.Identity{User: l.user, Admin: slices.Contains(g.cfg.EmailLogin.AdminUsers, l.user), Method: emailMethod, Email: l.email}
	if err := g.startLogin(w, r, id, session.Login{}); err != nil {
		if isStoreFault(err) {
			// Nothing logged in: the link is given back, so the "try
			// again" the answer says works (once the store answers).
			g.restoreEmailLink(ctx, key, l)
		}
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: emailCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true})
	http.Redirect(w, r, l.next, http.StatusSeeOther)
	return nil
}
