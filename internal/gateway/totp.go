package gateway

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"html/template"
	"net/http"
	"slices"
	"time"

	"github.com/airlock-hpc/airlock/internal/auth"
	"github.com/airlock-hpc/airlock/internal/auth/header"
	"github.com/airlock-hpc/airlock/internal/auth/oidc"
	"github.com/airlock-hpc/airlock/internal/auth/totp"
	"github.com/airlock-hpc/airlock/internal/portal"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// TOTP configures the second factor for password logins (local, LDAP,
// IMAP, SMTP): users may enrol an authenticator app in the portal; members
// of RequiredGroups must. An OpenID provider, a trusted proxy or an
// e-mailed link is a login of its own kind and is not asked for a code.
type TOTP struct {
	// Issuer labels the account in the user's app. Default "airlock".
	Issuer string
	// RequiredGroups are the groups (as the authenticator names them at
	// login) whose members must have a second factor; "*" is every user
	// who logs in with a password.
	RequiredGroups []string
	// MaxFailures wrong codes per user in Window, counted in the store
	// (so every gateway agrees), and further codes are refused until the
	// window has passed. Defaults 5 and 15m.
	MaxFailures int
	Window      time.Duration
	// PendingTTL is how long a browser has between its password and its
	// code. Default 5m.
	PendingTTL time.Duration
}

// pendingCookie holds the secret of a browser between its password and its
// code (a session.PendingLogin). It is not a login: nothing but the second
// step accepts it. SameSite=Strict: only the gateway's own forms send it.
const pendingCookie = "__Host-airlock_pending"

// totpHeader carries the code with HTTP Basic credentials when a token is
// made (POST /api/v1/tokens, airlock login).
const totpHeader = "X-Airlock-TOTP"

func (c *TOTP) defaults() {
	c.Issuer = cmp.Or(c.Issuer, "airlock")
	c.MaxFailures = cmp.Or(c.MaxFailures, 5)
	c.Window = cmp.Or(c.Window, 15*time.Minute)
	c.PendingTTL = cmp.Or(c.PendingTTL, 5*time.Minute)
}

// passwordMethod: the user logged in with a password, the only kind of
// login the second factor applies to.
func passwordMethod(m string) bool {
	return m != oidc.Method && m != header.Method && m != emailMethod
}

// totpRequired: a user logging in with method, in groups, must have a
// second factor.
func (g *Gateway) totpRequired(method string, groups []string) bool {
	if !passwordMethod(method) {
		return false
	}
	for _, want := range g.cfg.TOTP.RequiredGroups {
		if want == "*" || slices.Contains(groups, want) {
			return true
		}
	}
	return false
}

// totpKey seals second-factor secrets in the store; enrolKey seals the key
// being enrolled in the enrolment form, for one browser.
func (g *Gateway) totpKey() [32]byte  { return derive(g.master, "airlock totp secret", "") }
func (g *Gateway) enrolKey() [32]byte { return derive(g.master, "airlock totp enrolment", "") }

// totpStatus says whether user has a second factor.
func (g *Gateway) totpStatus(ctx context.Context, user string) (session.TOTP, bool, error) {
	t, err := g.cfg.Store.GetTOTP(ctx, user)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return session.TOTP{}, false, nil
	case err != nil:
		return session.TOTP{}, false, storeFault("second factor lookup", err)
	}
	return t, true, nil
}

// checkSecondFactor checks code (a TOTP code or a recovery code) for an
// enrolled user: the brute-force limit first, then the code, recording
// its time step so it is accepted once on every gateway.
//
// Every attempt is counted as a failure before the code is looked at, in
// one atomic update, and a good code clears the count: counting only after
// a wrong answer would let guesses sent all at once each read a count
// below the limit.
func (g *Gateway) checkSecondFactor(ctx context.Context, r *http.Request, t session.TOTP, code string) error {
	now := g.now()
	n, err := g.cfg.Store.FailTOTP(ctx, t.User, now, g.cfg.TOTP.Window)
	if err != nil {
		return storeFault("count attempt", err)
	}
	if n > g.cfg.TOTP.MaxFailures {
		g.audit(ctx, t.User, "totp_failed", "", r.RemoteAddr, "rate limited")
		return apiErr(429, "rate_limited", "too many wrong codes; try again later")
	}
	secret, err := totp.Open(g.totpKey(), t.User, t.Secret)
	if err != nil {
		// A secret sealed under another master key (a copied store): no
		// code can be checked. Not the user's fault, and not a "no".
		return &apiError{Status: 503, Code: "totp_unavailable", Message: "the second factor cannot be checked; ask an admin", cause: err}
	}
	if step, ok, err := totp.Check(secret, code, now, t.LastStep); err != nil {
		return &apiError{Status: 500, Code: "internal", Message: "internal error", cause: err}
	} else if ok {
		switch err := g.cfg.Store.UseTOTPStep(ctx, t.User, step); {
		case err == nil:
			g.audit(ctx, t.User, "totp_ok", "", r.RemoteAddr, "code")
			return nil
		case errors.Is(err, store.ErrConflict):
			// Another request took this step first: a replay.
			return g.wrongCode(ctx, r, t.User, n, "code used already")
		default:
			return storeFault("record code", err)
		}
	}
	if rc, ok := totp.ParseRecovery(code); ok {
		switch err := g.cfg.Store.UseRecoveryCode(ctx, t.User, totp.RecoveryHash(t.User, rc)); {
		case err == nil:
			g.audit(ctx, t.User, "totp_ok", "", r.RemoteAddr, "recovery code")
			return nil
		case !errors.Is(err, store.ErrNotFound):
			return storeFault("use recovery code", err)
		}
		return g.wrongCode(ctx, r, t.User, n, "unknown or used recovery code")
	}
	// A code for a step at or before the last one used is a replay too;
	// Check does not say which, so both count as wrong.
	return g.wrongCode(ctx, r, t.User, n, "wrong or used code")
}

// wrongCode says a code was wrong (checkSecondFactor counted it already
// as the n-th failure).
func (g *Gateway) wrongCode(ctx context.Context, r *http.Request, user string, n int, why string) error {
	g.metrics.loginsFaild.Add(1)
	g.audit(ctx, user, "totp_failed", "", r.RemoteAddr, why)
	g.log.InfoContext(ctx, "second factor refused", "user", user, "remote_addr", r.RemoteAddr, "why", why, "failures", n)
	return apiErr(401, "bad_code", "wrong code")
}

// startPending records that id passed the password and still owes the
// second factor, and gives the browser the pending cookie.
func (g *Gateway) startPending(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	secret, sum := newSecret()
	now := g.now()
	p := session.PendingLogin{Hash: sum, User: id.User, Admin: id.Admin, Method: id.Method, Groups: id.Groups, Email: id.Email,
		Created: now, Expires: now.Add(g.cfg.TOTP.PendingTTL)}
	if err := g.cfg.Store.CreatePendingLogin(r.Context(), p); err != nil {
		return storeFault("record pending login", err)
	}
	g.audit(r.Context(), id.User, "login_password_ok", "", r.RemoteAddr, id.Method+"; second factor next")
	http.SetCookie(w, &http.Cookie{Name: pendingCookie, Value: secret, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode, MaxAge: int(g.cfg.TOTP.PendingTTL / time.Second)})
	return nil
}

// pending returns the browser's pending login; 401 if it has none (or an
// expired one), which sends a page back to the login form.
func (g *Gateway) pending(r *http.Request) (session.PendingLogin, error) {
	c, err := r.Cookie(pendingCookie)
	if err != nil {
		return session.PendingLogin{}, apiErr(401, "no_pending_login", "log in with your password first")
	}
	p, err := g.cfg.Store.PendingLoginByHash(r.Context(), sha256Sum(c.Value))
	switch {
	case errors.Is(err, store.ErrNotFound) || err == nil && !g.now().Before(p.Expires):
		return session.PendingLogin{}, apiErr(401, "no_pending_login", "your login took too long; log in again")
	case err != nil:
		return session.PendingLogin{}, storeFault("pending login lookup", err)
	}
	return p, nil
}

func clearPending(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: pendingCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}

// enrolView makes a new key for user and the enrolment page showing it:
// the QR code inline (a data: URL, so the key never appears in a URL the
// browser fetches or a log), and the key sealed to bind (a pending
// login's hash, or a login's id) for the form to post back.
func (g *Gateway) enrolView(user, bind string) (portal.TOTPPage, error) {
	k, err := totp.Generate(g.cfg.TOTP.Issuer, user)
	if err != nil {
		return portal.TOTPPage{}, err
	}
	png, err := totp.QRPNG(k.URL, 200)
	if err != nil {
		return portal.TOTPPage{}, err
	}
	sealed, err := totp.Seal(g.enrolKey(), enrolBinding(user, bind, g.now()), k.Secret)
	if err != nil {
		return portal.TOTPPage{}, err
	}
	return portal.TOTPPage{Base: portal.Base{Title: "Second factor"}, Mode: "enrol", Secret: k.Secret,
		QR:     template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(png)),
		Sealed: base64.RawURLEncoding.EncodeToString(sealed)}, nil
}

// enrolBinding is what a sealed enrolment key is bound to: the user, the
// browser (bind) and the hour it was made in, so a form cannot be posted
// by another user, another browser, or much later.
func enrolBinding(user, bind string, at time.Time) string {
	return user + "\x00" + bind + "\x00" + at.UTC().Format("2006-01-02T15")
}

// openEnrol opens a sealed enrolment key posted back by the browser bind
// of user; it was made this hour or the one before.
func (g *Gateway) openEnrol(user, bind, sealed string) (string, bool) {
	if len(sealed) > 512 {
		return "", false
	}
	raw, err := base64.RawURLEncoding.DecodeString(sealed)
	if err != nil {
		return "", false
	}
	for _, at := range []time.Time{g.now(), g.now().Add(-time.Hour)} {
		if s, err := totp.Open(g.enrolKey(), enrolBinding(user, bind, at), raw); err == nil {
			return s, true
		}
	}
	return "", false
}

// enrol confirms a key the user's app now shows codes for and stores it
// with fresh recovery codes, which it returns (to show once).
func (g *Gateway) enrol(ctx context.Context, r *http.Request, user, secret, code string) ([]string, error) {
	step, ok, err := totp.Check(secret, code, g.now(), 0)
	if err != nil {
		return nil, &apiError{Status: 500, Code: "internal", Message: "internal error", cause: err}
	}
	if !ok {
		g.audit(ctx, user, "totp_enrol_failed", "", r.RemoteAddr, "wrong code")
		return nil, apiErr(401, "bad_code", "wrong code; check your phone's clock and try the next one")
	}
	sealed, err := totp.Seal(g.totpKey(), user, secret)
	if err != nil {
		return nil, &apiError{Status: 500, Code: "internal", Message: "internal error", cause: err}
	}
	codes := totp.NewRecoveryCodes(totp.RecoveryCount)
	hashes := make([][]byte, len(codes))
	for i, c := range codes {
		hashes[i] = totp.RecoveryHash(user, c)
	}
	// The confirming code's step counts as used.
	switch err := g.cfg.Store.EnrolTOTP(ctx, session.TOTP{User: user, Secret: sealed, LastStep: step, Created: g.now()}, hashes); {
	case errors.Is(err, store.ErrExists):
		return nil, apiErr(409, "totp_enrolled", "a second factor is set up already; remove it first")
	case err != nil:
		return nil, storeFault("enrol second factor", err)
	}
	g.audit(ctx, user, "totp_enrol", "", r.RemoteAddr, "")
	return codes, nil
}

// totpPage renders v, or returns the error when there is no portal.
func (g *Gateway) totpPage(w http.ResponseWriter, status int, v portal.TOTPPage) error {
	if g.cfg.Portal == nil {
		return apiErr(404, "not_found", "no portal")
	}
	return g.cfg.Portal.TOTP(w, status, v)
}

// loginTOTPPage is the login's second step: the code form, or enrolment
// for a user whose groups require a second factor they do not have yet.
func (g *Gateway) loginTOTPPage(w http.ResponseWriter, r *http.Request) error {
	p, err := g.pending(r)
	if err != nil {
		return err
	}
	next := localPath(r.URL.Query().Get("next"))
	_, enrolled, err := g.totpStatus(r.Context(), p.User)
	if err != nil {
		return err
	}
	if enrolled {
		return g.totpPage(w, 200, portal.TOTPPage{Base: portal.Base{Title: "Second factor"}, Mode: "code", Action: "/login/totp", Next: next})
	}
	if !g.totpRequired(p.Method, p.Groups) {
		// Removed (by an admin) since the password: nothing more to ask.
		return g.finishPending(w, r, p, next, nil)
	}
	v, err := g.enrolView(p.User, hex.EncodeToString(p.Hash))
	if err != nil {
		return &apiError{Status: 500, Code: "internal", Message: "internal error", cause: err}
	}
	v.Action, v.Next, v.Required = "/login/totp", next, true
	return g.totpPage(w, 200, v)
}

// loginTOTPPost checks the second step and only then makes the login.
func (g *Gateway) loginTOTPPost(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		return apiErr(400, "bad_request", "bad form")
	}
	p, err := g.pending(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	next := localPath(r.PostForm.Get("next"))
	code := r.PostForm.Get("code")
	t, enrolled, err := g.totpStatus(ctx, p.User)
	if err != nil {
		return err
	}
	var codes []string
	if enrolled {
		if err := g.checkSecondFactor(ctx, r, t, code); err != nil {
			ae := asAPIError(err)
			if ae.Status >= 500 {
				return err
			}
			return g.totpPage(w, ae.Status, portal.TOTPPage{Base: portal.Base{Title: "Second factor"}, Mode: "code", Action: "/login/totp", Next: next, Error: ae.Message})
		}
	} else if !g.totpRequired(p.Method, p.Groups) {
		return g.finishPending(w, r, p, next, nil)
	} else {
		// Enrolment is offered only to a user who has no second factor:
		// someone who knows only the password cannot replace one.
		bind := hex.EncodeToString(p.Hash)
		secret, ok := g.openEnrol(p.User, bind, r.PostForm.Get("enrol"))
		if !ok {
			g.audit(ctx, p.User, "totp_enrol_failed", "", r.RemoteAddr, "bad or foreign enrolment form")
			return apiErr(400, "bad_enrolment", "this enrolment form is not yours or has expired; log in again")
		}
		codes, err = g.enrol(ctx, r, p.User, secret, code)
		if err != nil {
			ae := asAPIError(err)
			if ae.Status != 401 {
				return err
			}
			v, verr := g.enrolView(p.User, bind)
			if verr != nil {
				return &apiError{Status: 500, Code: "internal", Message: "internal error", cause: verr}
			}
			v.Action, v.Next, v.Required, v.Error = "/login/totp", next, true, ae.Message
			return g.totpPage(w, 401, v)
		}
	}
	return g.finishPending(w, r, p, next, codes)
}

// finishPending turns a pending login into a login, once, and shows the
// recovery codes of an enrolment just made, or goes on to next.
func (g *Gateway) finishPending(w http.ResponseWriter, r *http.Request, p session.PendingLogin, next string, codes []string) error {
	// Single use: of two requests racing with the same pending login and
	// good codes, one logs in.
	switch err := g.cfg.Store.TakePendingLogin(r.Context(), p.Hash); {
	case errors.Is(err, store.ErrNotFound):
		return apiErr(401, "no_pending_login", "log in again")
	case err != nil:
		return storeFault("take pending login", err)
	}
	clearPending(w)
	id := auth.Identity{User: p.User, Admin: p.Admin, Method: p.Method, Groups: p.Groups, Email: p.Email}
	if err := g.startLogin(w, r, id, session.Login{}); err != nil {
		return err
	}
	if codes != nil {
		return g.totpPage(w, 200, portal.TOTPPage{Base: portal.Base{Title: "Recovery codes", User: id.User, Admin: id.Admin}, Mode: "recovery", Next: next, RecoveryCodes: codes})
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
	return nil
}

// accountTOTPPage lets a logged-in user enrol (or shows that they have).
func (g *Gateway) accountTOTPPage(w http.ResponseWriter, r *http.Request) error {
	id, err := g.identify(r)
	if err != nil {
		return err
	}
	base := portal.Base{Title: "Second factor", User: id.user, Admin: id.admin}
	if id.login == "" {
		return apiErr(403, "not_browser", "enrol in the browser you logged in with")
	}
	u, err := g.cfg.Store.GetUser(r.Context(), id.user)
	if err != nil {
		return storeFault("user lookup", err)
	}
	if !passwordMethod(u.Method) {
		return apiErr(403, "totp_not_for_method", "you logged in through "+u.Method+", which has its own second factor")
	}
	_, enrolled, err := g.totpStatus(r.Context(), id.user)
	if err != nil {
		return err
	}
	if enrolled {
		return g.totpPage(w, 200, portal.TOTPPage{Base: base, Mode: "account", Action: "/account/totp/remove", Next: "/account/totp"})
	}
	v, err := g.enrolView(id.user, id.login)
	if err != nil {
		return &apiError{Status: 500, Code: "internal", Message: "internal error", cause: err}
	}
	v.Base, v.Action, v.Next = base, "/account/totp", "/"
	return g.totpPage(w, 200, v)
}

// accountTOTPPost confirms an enrolment started on the account page.
func (g *Gateway) accountTOTPPost(w http.ResponseWriter, r *http.Request) error {
	id, err := g.identify(r)
	if err != nil {
		return err
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		return apiErr(400, "bad_request", "bad form")
	}
	secret, ok := g.openEnrol(id.user, id.login, r.PostForm.Get("enrol"))
	if id.login == "" || !ok {
		g.audit(r.Context(), id.user, "totp_enrol_failed", "", r.RemoteAddr, "bad or foreign enrolment form")
		return apiErr(400, "bad_enrolment", "this enrolment form is not yours or has expired; start again")
	}
	codes, err := g.enrol(r.Context(), r, id.user, secret, r.PostForm.Get("code"))
	if err != nil {
		return err
	}
	return g.totpPage(w, 200, portal.TOTPPage{Base: portal.Base{Title: "Recovery codes", User: id.user, Admin: id.admin}, Mode: "recovery", Next: "/", RecoveryCodes: codes})
}

// accountTOTPRemove removes the user's second factor, given a current
// code or a recovery code: a stolen login alone cannot.
func (g *Gateway) accountTOTPRemove(w http.ResponseWriter, r *http.Request) error {
	id, err := g.identify(r)
	if err != nil {
		return err
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		return apiErr(400, "bad_request", "bad form")
	}
	t, enrolled, err := g.totpStatus(r.Context(), id.user)
	if err != nil {
		return err
	}
	if !enrolled {
		http.Redirect(w, r, "/account/totp", http.StatusSeeOther)
		return nil
	}
	if err := g.checkSecondFactor(r.Context(), r, t, r.PostForm.Get("code")); err != nil {
		return err
	}
	if err := g.cfg.Store.DeleteTOTP(r.Context(), id.user); err != nil {
		return storeFault("remove second factor", err)
	}
	g.audit(r.Context(), id.user, "totp_remove", "", r.RemoteAddr, "by the user")
	http.Redirect(w, r, "/account/totp", http.StatusSeeOther)
	return nil
}

// adminResetTOTP removes a user's second factor (a lost phone and lost
// recovery codes). DELETE /api/v1/admin/users/{name}/totp.
func (g *Gateway) adminResetTOTP(w http.ResponseWriter, r *http.Request, id identity) error {
	name := r.PathValue("name")
	if err := g.cfg.Store.DeleteTOTP(r.Context(), name); err != nil {
		return storeFault("remove second factor", err)
	}
	g.audit(r.Context(), id.user, "totp_remove", "", r.RemoteAddr, "of "+name+" by an admin")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// secondFactorForToken is the second step of POST /api/v1/tokens with a
// password: the code comes in the X-Airlock-TOTP header.
func (g *Gateway) secondFactorForToken(r *http.Request, id auth.Identity) error {
	t, enrolled, err := g.totpStatus(r.Context(), id.User)
	if err != nil {
		return err
	}
	if !enrolled {
		if g.totpRequired(id.Method, id.Groups) {
			g.audit(r.Context(), id.User, "login_failed", "", r.RemoteAddr, "token: no second factor enrolled")
			return apiErr(403, "totp_enrol_required", "your account needs a second factor: log in to the portal in a browser to set one up")
		}
		return nil
	}
	code := r.Header.Get(totpHeader)
	if code == "" {
		return apiErr(401, "totp_required", "send the code from your authenticator app in the "+totpHeader+" header")
	}
	return g.checkSecondFactor(r.Context(), r, t, code)
}

// requireEnrolled refuses a login or token of a user whose groups now
// require a second factor they have not enrolled (the requirement came
// after the login): 401, so a browser goes back through the login, which
// makes them enrol.
func (g *Gateway) requireEnrolled(ctx context.Context, u session.User) error {
	if !g.totpRequired(u.Method, u.Groups) {
		return nil
	}
	_, enrolled, err := g.totpStatus(ctx, u.Name)
	if err != nil {
		return err
	}
	if !enrolled {
		return apiErr(401, "totp_enrol_required", "your account needs a second factor: log in again to set one up")
	}
	return nil
}
