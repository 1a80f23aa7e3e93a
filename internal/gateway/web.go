package gateway

import (
	"cmp"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/portal"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// PortalRenderer renders the browser pages (the portal package does).
type PortalRenderer interface {
	Static() http.Handler
	Login(w http.ResponseWriter, status int, v portal.LoginPage) error
	Home(w http.ResponseWriter, v portal.HomePage) error
	Session(w http.ResponseWriter, v portal.SessionPage) error
	Admin(w http.ResponseWriter, v portal.AdminPage) error
	Error(w http.ResponseWriter, v portal.ErrorPage) error
	Terms(w http.ResponseWriter, v portal.TermsPage) error
	TOTP(w http.ResponseWriter, status int, v portal.TOTPPage) error
	Recordings(w http.ResponseWriter, v portal.RecordingsPage) error
}

// Handler is the gateway's whole HTTP surface.
func (g *Gateway) Handler() http.Handler {
	mux := http.NewServeMux()
	g.routesAPI(mux)
	mux.Handle("/s/{id}/{connector}/", g.appRoute())
	mux.HandleFunc("GET /rdp/{id}", g.serveRDPWeb)
	mux.Handle("POST /login", g.page(g.loginPost))
	mux.Handle("POST /logout", g.page(g.logoutPost))
	mux.Handle("POST /login/email", g.page(g.emailLoginPost))
	mux.Handle("POST /terms/{name}", g.page(g.termsPost))
	mux.Handle("POST /login/totp", g.page(g.loginTOTPPost))
	mux.Handle("POST /account/totp", g.page(g.accountTOTPPost))
	mux.Handle("POST /account/totp/remove", g.page(g.accountTOTPRemove))
	mux.Handle("GET /login/email/{secret}", g.page(g.emailLoginLink))
	mux.Handle("GET /auth/oidc/{name}/login", g.page(g.oidcLogin))
	mux.Handle("GET /auth/oidc/{name}/callback", g.page(g.oidcCallback))
	mux.Handle("GET /share/{secret}", g.page(g.sharePage))
	if p := g.cfg.Portal; p != nil {
		mux.Handle("GET /static/", http.StripPrefix("/static/", p.Static()))
		mux.Handle("GET /{$}", g.page(g.homePage))
		mux.Handle("GET /login", g.page(g.loginPage))
		mux.Handle("GET /sessions/{id}", g.page(g.sessionPage))
		mux.Handle("GET /admin", g.page(g.adminPage))
		mux.Handle("GET /admin/recordings", g.page(g.recordingsPage))
		mux.Handle("GET /terms/{name}", g.page(g.termsPage))
		mux.Handle("GET /login/totp", g.page(g.loginTOTPPage))
		mux.Handle("GET /account/totp", g.page(g.accountTOTPPage))
	}
	return g.withHosts(securityHeaders(mux))
}

// securityHeaders sets what every response should carry: no inline script,
// no framing, no sniffing, no referrer leaking session paths.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		if !strings.HasPrefix(r.URL.Path, "/s/") {
			// Apps behind the proxy set their own policies.
			hd.Set("Content-Security-Policy", portal.ContentSecurityPolicy)
			hd.Set("X-Frame-Options", "DENY")
		}
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("Strict-Transport-Security", "max-age=31536000")
		h.ServeHTTP(w, r)
	})
}

// page wraps a browser handler: errors become an error page, and an
// unauthenticated visitor is sent to the login page.
func (g *Gateway) page(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			if err := crossOrigin.Check(r); err != nil {
				g.renderErr(w, r, apiErr(403, "cross_origin", "cross-origin form refused"))
				return
			}
		}
		if err := h(w, r); err != nil {
			ae := asAPIError(err)
			if ae.Status == 401 && r.Method == http.MethodGet {
				http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			if ae.Status >= 500 {
				g.log.ErrorContext(r.Context(), "page failed", "path", r.URL.Path, "error", err)
			}
			g.renderErr(w, r, err)
		}
	})
}

func (g *Gateway) renderErr(w http.ResponseWriter, r *http.Request, err error) {
	if g.cfg.Portal == nil {
		writeErr(w, err)
		return
	}
	ae := asAPIError(err)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if ae.Code == "store_unavailable" {
		w.Header().Set("Retry-After", storeRetryAfter)
	}
	w.WriteHeader(ae.Status)
	if err := g.cfg.Portal.Error(w, portal.ErrorPage{Base: portal.Base{Title: "Error"}, Status: ae.Status, Message: ae.Message}); err != nil {
		g.log.ErrorContext(r.Context(), "render error page", "error", err)
	}
}

func rows(ss []*session.Session) []portal.SessionRow {
	out := make([]portal.SessionRow, 0, len(ss))
	for _, s := range ss {
		out = append(out, row(s))
	}
	return out
}

func row(s *session.Session) portal.SessionRow {
	return portal.SessionRow{ID: s.ID, Profile: s.Profile, State: string(s.State), Reason: s.Reason, Owner: s.Owner,
		Persistent: s.Persistent, Created: s.Created, Ends: s.Ends(), Node: s.Node}
}

func (g *Gateway) homePage(w http.ResponseWriter, r *http.Request) error {
	id, err := g.identify(r)
	if err != nil {
		return err
	}
	ss, err := g.cfg.Store.ListSessions(r.Context(), store.SessionFilter{Owner: id.user, Limit: 200})
	if err != nil {
		return storeFault("list sessions", err)
	}
	v := portal.HomePage{Base: portal.Base{Title: "Sessions", User: id.user, Admin: id.admin}, Sessions: rows(ss)}
	for _, p := range g.cfg.Profiles {
		if p.allows(id.groups) {
			v.Profiles = append(v.Profiles, portalProfile(p))
		}
	}
	if g.cfg.Mailer != nil {
		if u, err := g.cfg.Store.GetUser(r.Context(), id.user); err == nil {
			v.NotifyEmail = u.Email
		}
	}
	ts, err := g.cfg.Store.ListTokens(r.Context(), id.user)
	if err != nil {
		// Not an empty list: the user would think their tokens gone.
		return storeFault("list tokens", err)
	}
	for _, t := range ts {
		if !t.Revoked {
			v.Tokens = append(v.Tokens, portal.Token{ID: t.ID, Name: t.Name, Created: t.Created, LastUsed: t.LastUsed})
		}
	}
	return g.cfg.Portal.Home(w, v)
}

func (g *Gateway) loginPage(w http.ResponseWriter, r *http.Request) error {
	next := localPath(r.URL.Query().Get("next"))
	return g.cfg.Portal.Login(w, 200, g.loginView(next))
}

func (g *Gateway) loginPost(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		return apiErr(400, "bad_request", "bad form")
	}
	next := localPath(r.PostForm.Get("next"))
	pending, err := g.login(w, r, r.PostForm.Get("user"), r.PostForm.Get("password"))
	if err != nil {
		if g.cfg.Portal == nil {
			return err
		}
		ae := asAPIError(err)
		v := g.loginView(next)
		v.Error = ae.Message
		return g.cfg.Portal.Login(w, ae.Status, v)
	}
	if pending {
		http.Redirect(w, r, "/login/totp?next="+url.QueryEscape(next), http.StatusSeeOther)
		return nil
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
	return nil
}

func (g *Gateway) logoutPost(w http.ResponseWriter, r *http.Request) error {
	// The store must forget the login before the browser is told it is
	// logged out: a stolen copy of the cookie must not outlive the logout.
	l, err := g.logout(r)
	if err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true})
	// A login through an OpenID provider ends there too (RP-initiated
	// logout), or the next "log in" would silently log the same user in.
	if u := g.oidcLogoutURL(r.Context(), r, l); u != "" {
		providerLogout(w, u)
		return nil
	}
	http.Redirect(w, r, "/login", http.StatusSeeOther)
	return nil
}

func (g *Gateway) sessionPage(w http.ResponseWriter, r *http.Request) error {
	id, err := g.identify(r)
	if err != nil {
		return err
	}
	s, err := g.cfg.Store.GetSession(r.Context(), r.PathValue("id"))
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return apiErr(404, "no_session", "no such session")
		}
		return storeFault("session lookup", err)
	}
	v, err := g.authorizeView(r, id, s)
	if err != nil {
		return err
	}
	pv := portal.SessionPage{Base: portal.Base{Title: s.Profile + " " + s.ID, User: id.user, Admin: id.admin}, Session: row(s),
		ViewOnly: v.mode == session.View, IsOwner: s.Owner == id.user}
	_, hasRDP := s.Endpoints[ConnRDP]
	pv.RDP = pv.IsOwner && hasRDP && g.rdp != nil && g.cfg.RDPListen != ""
	pv.RDPWeb = pv.IsOwner && hasRDP && g.rdp != nil
	if prof, _ := g.profile(s.Profile); pv.RDPWeb {
		if !prof.clipboardWhole() {
			pv.RDP = false // native clients would bypass the clipboard rule
		}
		// xrdp in a desktop's seal does TLS only; a VM's guest (Windows)
		// and a desktop's shadow server want NLA.
		pv.RDPCredSSP = prof.Kind == "vm" || prof.RDPServer == RDPServerShadow
		if prof.Kind == "desktop" {
			pv.RDPSize = cmp.Or(prof.Geometry, "1280x800")
			pv.RDPDefault = true
		}
		pv.RDPPassword = g.rdpPasswordOf(prof, s)
		if pv.RDPPassword != "" {
			// The page gives the client this account and password, so
			// the owner types neither.
			pv.RDPUser = rdpLogonUser(prof, s)
		}
	}
	pv.Session.Accel = g.sessionJSON(s).Accel
	prof, _ := g.profile(s.Profile)
	pv.NoClipIn, pv.NoClipOut = !prof.Clipboard.AllowsIn(), !prof.Clipboard.AllowsOut()
	for _, name := range sortedNames(s.Endpoints) {
		switch connectorView(prof, name) {
		case contract.ViewVNC:
			pv.WebSocketPath = "/s/" + s.ID + "/" + name + "/"
		case contract.ViewApp:
			pv.AppPath = "/s/" + s.ID + "/" + name + "/"
		}
	}
	if pv.IsOwner {
		shs, err := g.cfg.Store.ListShares(r.Context(), s.ID)
		if err != nil {
			// Not an empty list: the owner would think every share revoked.
			return storeFault("list shares", err)
		}
		for _, sh := range shs {
			pv.Shares = append(pv.Shares, portal.Share{ID: sh.ID, Mode: string(sh.Mode), Created: sh.Created, Expires: sh.Expires, Revoked: sh.Revoked})
		}
	}
	return g.cfg.Portal.Session(w, pv)
}

// portalProfile is a profile as the launch form shows it.
func portalProfile(p Profile) portal.Profile {
	return portal.Profile{Name: p.Name, Title: p.Title, Description: p.Description, Kind: p.Kind, CPUs: p.CPUs, MaxCPUs: p.MaxCPUs,
		MemoryMB: p.MemoryMB, MaxMemoryMB: p.MaxMemoryMB, Lifetime: p.Lifetime, MaxLifetime: p.MaxLifetime,
		KeepDisk: p.VM != nil && p.VM.PersistentAllowed}
}

// sharePage opens a share link: the visitor must be logged in; the link's
// secret becomes a cookie for that session only.
func (g *Gateway) sharePage(w http.ResponseWriter, r *http.Request) error {
	id, err := g.identify(r)
	if err != nil {
		return err
	}
	secret := r.PathValue("secret")
	sum := sha256Sum(secret)
	sh, err := g.cfg.Store.ShareByHash(r.Context(), sum)
	switch {
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return storeFault("share lookup", err)
	case err != nil:
		return apiErr(404, "bad_share", "this share link is not valid")
	case sh.Revoked:
		return apiErr(403, "share_revoked", "the owner revoked this share link")
	case !g.now().Before(sh.Expires):
		return apiErr(403, "share_expired", "this share link has expired")
	}
	g.audit(r.Context(), id.user, "share_open", sh.Session, r.RemoteAddr, sh.ID+" "+string(sh.Mode))
	http.SetCookie(w, &http.Cookie{Name: shareCookiePrefix + sh.Session, Value: secret, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteLaxMode, Expires: sh.Expires})
	http.Redirect(w, r, "/sessions/"+sh.Session, http.StatusSeeOther)
	return nil
}

func (g *Gateway) adminPage(w http.ResponseWriter, r *http.Request) error {
	id, err := g.identify(r)
	if err != nil {
		return err
	}
	if !id.admin {
		return apiErr(403, "not_admin", "admins only")
	}
	ss, err := g.cfg.Store.ListSessions(r.Context(), store.SessionFilter{Limit: 200})
	if err != nil {
		return storeFault("list sessions", err)
	}
	load, _ := loadPerCPU()
	free, _ := memInfoMB("MemAvailable:")
	total, _ := memInfoMB("MemTotal:")
	return g.cfg.Portal.Admin(w, portal.AdminPage{Base: portal.Base{Title: "Admin", User: id.user, Admin: true}, Sessions: rows(ss),
		Load: load, FreeMemoryMB: free, TotalMemoryMB: total})
}
