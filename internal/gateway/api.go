package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"time"

	"github.com/airlock-hpc/airlock/internal/registration"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// handlerFunc is an HTTP handler that returns its error; one adapter turns
// errors into responses.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

var crossOrigin = http.NewCrossOriginProtection()

// api wraps an API handler: security headers, JSON bodies only for unsafe
// methods (a form post from another site cannot reach the API), and the
// cross-origin check for cookie-authenticated unsafe requests.
func (g *Gateway) api(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if err := crossOrigin.Check(r); err != nil {
				writeErr(w, apiErr(403, "cross_origin", "cross-origin request refused"))
				return
			}
			if ct := r.Header.Get("Content-Type"); ct != "" && r.ContentLength != 0 {
				if mt, _, _ := mime.ParseMediaType(ct); mt != "application/json" {
					writeErr(w, apiErr(415, "bad_content_type", "send application/json"))
					return
				}
			}
		}
		if err := h(w, r); err != nil {
			ae := asAPIError(err)
			if ae.Status >= 500 {
				g.log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "error", err)
			}
			writeErr(w, err)
		}
	})
}

// authed runs h for an identified user.
func (g *Gateway) authed(h func(w http.ResponseWriter, r *http.Request, id identity) error) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := g.identify(r)
		if err != nil {
			return err
		}
		return h(w, r, id)
	}
}

func (g *Gateway) admin(h func(w http.ResponseWriter, r *http.Request, id identity) error) handlerFunc {
	return g.authed(func(w http.ResponseWriter, r *http.Request, id identity) error {
		if !id.admin {
			return apiErr(403, "not_admin", "admins only")
		}
		// CORS keeps another site's page from reading an answer, not
		// from sending a GET: a user's app host is same-site, so the
		// login cookie goes with its <img> and no-cors fetches. Such a
		// page must not make the admin fetch recordings (audited in
		// their name, streamed, parsed into memory) as often as it
		// likes. A browser says where a request comes from; a script
		// with a token is no browser.
		if site := r.Header.Get("Sec-Fetch-Site"); r.Header.Get("Authorization") == "" && (site == "same-site" || site == "cross-site") {
			g.log.WarnContext(r.Context(), "refused: admin request from another site's page", "user", id.user, "path", r.URL.Path, "sec_fetch_site", site, "remote_addr", r.RemoteAddr)
			return apiErr(403, "cross_site", "admin requests are taken only from the gateway's own pages")
		}
		return h(w, r, id)
	})
}

// sessionJSON is a session as the API shows it: no node addresses.
type sessionJSON struct {
	ID         string            `json:"id"`
	State      session.State     `json:"state"`
	Reason     string            `json:"reason,omitempty"`
	Owner      string            `json:"owner"`
	Profile    string            `json:"profile"`
	Backend    string            `json:"backend"`
	Node       string            `json:"node,omitempty"`
	Persistent bool              `json:"persistent"`
	CPUs       int               `json:"cpus"`
	MemoryMB   int               `json:"memory_mb"`
	Created    time.Time         `json:"created"`
	Started    time.Time         `json:"started,omitzero"`
	Ends       time.Time         `json:"ends,omitzero"`
	Ended      time.Time         `json:"ended,omitzero"`
	Connect    map[string]string `json:"connect"`
	// Accel (vm sessions) is kvm or tcg (emulation); empty when the
	// runner's node decides.
	Accel string `json:"accel,omitempty"`
}

func toJSON(s *session.Session) sessionJSON {
	j := sessionJSON{ID: s.ID, State: s.State, Reason: s.Reason, Owner: s.Owner, Profile: s.Profile, Backend: s.Backend, Node: s.Node, Persistent: s.Persistent,
		CPUs: s.CPUs, MemoryMB: s.MemoryMB, Created: s.Created, Started: s.Started, Ends: s.Ends(), Ended: s.Ended, Connect: map[string]string{}}
	if s.State == session.Ready {
		for name := range s.Endpoints {
			j.Connect[name] = "/s/" + s.ID + "/" + name + "/"
		}
	}
	return j
}

// ownSession returns the session if id.user owns it (or is an admin and
// adminOK); another user's session is "not found", not "forbidden", so
// ids cannot be probed.
func (g *Gateway) ownSession(r *http.Request, id identity, adminOK bool) (*session.Session, error) {
	s, err := g.cfg.Store.GetSession(r.Context(), r.PathValue("id"))
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, apiErr(404, "no_session", "no such session")
		}
		return nil, storeFault("session lookup", err)
	}
	if s.Owner != id.user && !(adminOK && id.admin) {
		g.log.WarnContext(r.Context(), "refused: another user's session", "user", id.user, "session", s.ID, "remote_addr", r.RemoteAddr)
		return nil, apiErr(404, "no_session", "no such session")
	}
	return s, nil
}

// routesAPI is the JSON API's route table: each route names its handler
// and the wrapper that decides who may call it.
func (g *Gateway) routesAPI(mux *http.ServeMux) {
	mux.Handle("POST /api/v1/tokens", g.api(g.createToken))
	mux.Handle("GET /api/v1/tokens", g.api(g.authed(g.listTokens)))
	mux.Handle("DELETE /api/v1/tokens/{tid}", g.api(g.authed(g.revokeToken)))
	mux.Handle("GET /api/v1/me", g.api(g.authed(g.whoami)))
	mux.Handle("GET /api/v1/profiles", g.api(g.authed(g.listProfiles)))
	mux.Handle("GET /api/v1/sessions", g.api(g.authed(g.listSessions)))
	mux.Handle("POST /api/v1/sessions", g.api(g.authed(g.launchSession)))
	mux.Handle("GET /api/v1/profiles/{name}/terms", g.api(g.authed(g.getTerms)))
	mux.Handle("POST /api/v1/profiles/{name}/terms", g.api(g.authed(g.acceptTermsAPI)))
	mux.Handle("GET /api/v1/sessions/{id}", g.api(g.authed(g.getSession)))
	mux.Handle("GET /api/v1/sessions/{id}/events", g.api(g.authed(g.sessionEvents)))
	mux.Handle("DELETE /api/v1/sessions/{id}", g.api(g.authed(g.stopSession)))
	mux.Handle("POST /api/v1/sessions/{id}/shares", g.api(g.authed(g.createShare)))
	mux.Handle("POST /api/v1/sessions/{id}/rdp", g.api(g.authed(g.createRDPFile)))
	mux.Handle("POST /api/v1/sessions/{id}/rdp-ticket", g.api(g.authed(g.createRDPTicket)))
	mux.Handle("GET /api/v1/sessions/{id}/shares", g.api(g.authed(g.listShares)))
	mux.Handle("DELETE /api/v1/sessions/{id}/shares/{share}", g.api(g.authed(g.revokeShare)))
	mux.Handle("POST /api/v1/forwards", g.api(g.authed(g.createForward)))
	mux.Handle("GET /api/v1/forwards/{id}/tunnel", g.api(g.authed(g.forwardTunnel)))
	// Another gateway's way to a tunnel held here (peer.go): no user,
	// the proof of a gateway of this site.
	mux.HandleFunc("GET /api/v1/peer/forwards/{id}/stream", g.peerStream)
	mux.Handle("GET /api/v1/admin/sessions", g.api(g.admin(g.adminSessions)))
	mux.Handle("POST /api/v1/admin/sessions/{id}/vm/{action}", g.api(g.admin(g.vmMonitor)))
	mux.Handle("DELETE /api/v1/admin/users/{name}/totp", g.api(g.admin(g.adminResetTOTP)))
	mux.Handle("POST /api/v1/admin/stop-all", g.api(g.admin(g.adminStopAll)))
	mux.Handle("GET /api/v1/admin/recordings", g.api(g.admin(g.adminRecordings)))
	mux.Handle("GET /api/v1/admin/recordings/{session}/{name}", g.api(g.admin(g.adminRecording)))
	mux.Handle("GET /api/v1/admin/recordings/{session}/{name}/pointer", g.api(g.admin(g.adminRecordingPointer)))
	mux.Handle("GET /api/v1/admin/recordings/{session}/{name}/replay", g.api(g.admin(g.replayRecording)))
	mux.Handle("POST "+registration.Path("{id}"), g.api(g.register))
	mux.Handle("GET /metrics", g.api(g.metricsHandler))
}

// listTokens lists the caller's API tokens.
// GET /api/v1/tokens
func (g *Gateway) listTokens(w http.ResponseWriter, r *http.Request, id identity) error {
	ts, err := g.cfg.Store.ListTokens(r.Context(), id.user)
	if err != nil {
		return storeFault("list tokens", err)
	}
	writeJSON(w, 200, map[string]any{"tokens": ts})
	return nil
}

// revokeToken revokes one of the caller's tokens; the revocation reaches
// open viewers on the next request.
// DELETE /api/v1/tokens/{tid}
func (g *Gateway) revokeToken(w http.ResponseWriter, r *http.Request, id identity) error {
	if err := noBody(w, r); err != nil {
		return err
	}
	if err := g.cfg.Store.RevokeToken(r.Context(), id.user, r.PathValue("tid")); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return err
		}
		return storeFault("revoke token", err)
	}
	g.audit(r.Context(), id.user, "token_revoke", "", r.RemoteAddr, r.PathValue("tid"))
	g.revoke(r.Context(), revokeEvent{Reason: "token revoked", User: id.user, Token: r.PathValue("tid")})
	w.WriteHeader(204)
	return nil
}

// whoami says who the caller is and whether they are an admin.
// GET /api/v1/me
func (g *Gateway) whoami(w http.ResponseWriter, r *http.Request, id identity) error {
	groups := id.groups
	if groups == nil {
		groups = []string{}
	}
	writeJSON(w, 200, map[string]any{"user": id.user, "admin": id.admin, "groups": groups})
	return nil
}

// listProfiles lists the profiles a user may launch, with their limits.
// GET /api/v1/profiles
func (g *Gateway) listProfiles(w http.ResponseWriter, r *http.Request, id identity) error {
	var out []map[string]any
	for _, p := range g.cfg.Profiles {
		if !p.allows(id.groups) {
			continue
		}
		m := map[string]any{"name": p.Name, "title": p.Title, "kind": p.Kind,
			"cpus": p.CPUs, "max_cpus": p.MaxCPUs, "memory_mb": p.MemoryMB, "max_memory_mb": p.MaxMemoryMB,
			"lifetime": p.Lifetime.String(), "max_lifetime": p.MaxLifetime.String()}
		if p.Terms != "" {
			m["terms"] = "/api/v1/profiles/" + p.Name + "/terms"
		}
		out = append(out, m)
	}
	writeJSON(w, 200, map[string]any{"profiles": out})
	return nil
}

// listSessions lists the caller's sessions (everyone's for an admin asking ?all=1).
// GET /api/v1/sessions
func (g *Gateway) listSessions(w http.ResponseWriter, r *http.Request, id identity) error {
	f := store.SessionFilter{Owner: id.user, Limit: 500}
	if r.URL.Query().Get("all") == "1" && id.admin {
		f.Owner = ""
	}
	ss, err := g.cfg.Store.ListSessions(r.Context(), f)
	if err != nil {
		return storeFault("list sessions", err)
	}
	out := make([]sessionJSON, 0, len(ss))
	for _, s := range ss {
		out = append(out, g.sessionJSON(s))
	}
	writeJSON(w, 200, map[string]any{"sessions": out})
	return nil
}

// launchSession launches a session from a LaunchRequest.
// POST /api/v1/sessions
func (g *Gateway) launchSession(w http.ResponseWriter, r *http.Request, id identity) error {
	var req LaunchRequest
	if err := readJSON(w, r, &req, true); err != nil {
		return err
	}
	if err := g.launchable(id, req.Profile); err != nil {
		g.audit(r.Context(), id.user, "launch_refused", "", r.RemoteAddr, req.Profile+": "+err.Error())
		return err
	}
	if err := g.termsAccepted(r.Context(), id, req.Profile); err != nil {
		return err
	}
	var mailTo string
	if req.NotifyEmail {
		to, err := g.wantReadyMail(r.Context(), id.user)
		if err != nil {
			return err
		}
		mailTo = to
	}
	s, adopted, err := g.launch(r.Context(), id.user, req, r.RemoteAddr)
	if err != nil {
		return err
	}
	if mailTo != "" {
		g.oweReadyMail(r.Context(), s, mailTo, g.baseURL(r))
	}
	out := map[string]any{"id": s.ID, "state": s.State}
	if adopted != nil {
		// The adopted job's runner gets here what a submitted job gets in
		// its environment: the registration token and the ticket key travel
		// only in this answer over the API's TLS, to the token's holder,
		// never in a URL or a log.
		w.Header().Set("Cache-Control", "no-store")
		out["url"] = g.baseURL(r) + "/sessions/" + s.ID
		if p, ok := g.profile(s.Profile); ok {
			out["ways"] = g.waysIn(p, out["url"].(string))
		}
		out["runner"] = map[string]any{"spec": json.RawMessage(adopted.Spec), "env": adopted.Env}
	}
	writeJSON(w, 201, out)
	return nil
}

// getSession shows one session to its owner, an admin, or a holder of a valid share link.
// GET /api/v1/sessions/{id}
func (g *Gateway) getSession(w http.ResponseWriter, r *http.Request, id identity) error {
	// Its owner, an admin, or someone holding a valid share link (whose
	// page follows the session's state) may look.
	s, _, err := g.visibleSession(r, id)
	if err != nil {
		return err
	}
	writeJSON(w, 200, g.sessionJSON(s))
	return nil
}

// stopSession stops a session of the caller's (any, for an admin).
// DELETE /api/v1/sessions/{id}
func (g *Gateway) stopSession(w http.ResponseWriter, r *http.Request, id identity) error {
	if err := noBody(w, r); err != nil {
		return err
	}
	s, err := g.ownSession(r, id, true)
	if err != nil {
		return err
	}
	reason := "stopped by " + id.user
	if err := g.Stop(r.Context(), id.user, s.ID, reason, r.RemoteAddr); err != nil {
		return err
	}
	writeJSON(w, 202, map[string]any{"id": s.ID, "state": session.Stopping})
	return nil
}

// listShares lists the share links of a session of the caller's.
// GET /api/v1/sessions/{id}/shares
func (g *Gateway) listShares(w http.ResponseWriter, r *http.Request, id identity) error {
	s, err := g.ownSession(r, id, false)
	if err != nil {
		return err
	}
	shs, err := g.cfg.Store.ListShares(r.Context(), s.ID)
	if err != nil {
		return storeFault("list shares", err)
	}
	writeJSON(w, 200, map[string]any{"shares": shs})
	return nil
}

// revokeShare revokes a share link and closes the viewers it opened.
// DELETE /api/v1/sessions/{id}/shares/{share}
func (g *Gateway) revokeShare(w http.ResponseWriter, r *http.Request, id identity) error {
	if err := noBody(w, r); err != nil {
		return err
	}
	s, err := g.ownSession(r, id, false)
	if err != nil {
		return err
	}
	if err := g.cfg.Store.RevokeShare(r.Context(), s.ID, r.PathValue("share")); err != nil {
		return err
	}
	g.audit(r.Context(), id.user, "share_revoke", s.ID, r.RemoteAddr, r.PathValue("share"))
	g.revoke(r.Context(), revokeEvent{Reason: "share revoked", Session: s.ID, Share: r.PathValue("share")})
	w.WriteHeader(204)
	return nil
}

// adminSessions is the admin's view: newest sessions, with nodes and this node's load.
// GET /api/v1/admin/sessions
func (g *Gateway) adminSessions(w http.ResponseWriter, r *http.Request, id identity) error {
	// Newest first, 100 unless ?limit= asks for up to 1,000: a page an
	// admin reads, not a dump (the store has no paging cursor yet).
	limit := 100
	if n, err := strconv.Atoi(r.URL.Query().Get("limit")); err == nil && n > 0 {
		limit = min(n, 1000)
	}
	ss, err := g.cfg.Store.ListSessions(r.Context(), store.SessionFilter{Limit: limit})
	if err != nil {
		return storeFault("list sessions", err)
	}
	out := make([]map[string]any, 0, len(ss))
	for _, s := range ss {
		out = append(out, map[string]any{"session": g.sessionJSON(s), "node": s.Node, "backend": s.Backend})
	}
	load, _ := loadPerCPU()
	free, _ := memInfoMB("MemAvailable:")
	total, _ := memInfoMB("MemTotal:")
	writeJSON(w, 200, map[string]any{"sessions": out, "node": map[string]any{"load_per_cpu": load, "free_memory_mb": free, "total_memory_mb": total}})
	return nil
}

// adminStopAll stops every queued, starting or ready session.
// POST /api/v1/admin/stop-all
func (g *Gateway) adminStopAll(w http.ResponseWriter, r *http.Request, id identity) error {
	if err := noBody(w, r); err != nil {
		return err
	}
	rep, err := g.stopAll(r.Context(), id.user, r.RemoteAddr)
	if err != nil {
		return err
	}
	writeJSON(w, 202, rep)
	return nil
}

// metricsHandler serves Prometheus metrics.
// GET /metrics
func (g *Gateway) metricsHandler(w http.ResponseWriter, r *http.Request) error {
	// Prometheus on this host scrapes without a login when allowed;
	// anyone else must be an admin.
	if g.cfg.MetricsForLoopback {
		if ip, err := netip.ParseAddr(remoteIP(r)); err == nil && ip.Unmap().IsLoopback() && r.Header.Get("Authorization") == "" {
			return g.serveMetrics(w, r)
		}
	}
	return g.admin(func(w http.ResponseWriter, r *http.Request, id identity) error {
		return g.serveMetrics(w, r)
	})(w, r)
}

// createShare makes a share link: POST {"mode": "view"|"control", "ttl": "1h"}.
func (g *Gateway) createShare(w http.ResponseWriter, r *http.Request, id identity) error {
	s, err := g.ownSession(r, id, false)
	if err != nil {
		return err
	}
	var req struct {
		Mode string `json:"mode"`
		TTL  string `json:"ttl"`
	}
	if err := readJSON(w, r, &req, true); err != nil {
		return err
	}
	mode := session.Mode(req.Mode)
	if mode != session.View && mode != session.Control {
		return apiErr(400, "bad_request", `mode: want "view" or "control"`)
	}
	ttl := time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > 7*24*time.Hour {
			return apiErr(400, "bad_request", "ttl: want a duration up to 168h")
		}
		ttl = d
	}
	secret, sum := newSecret()
	sh := session.Share{ID: "sh-" + newShortID(), Session: s.ID, Mode: mode, CreatedBy: id.user,
		Created: g.now(), Expires: g.now().Add(ttl), Hash: sum}
	if err := g.cfg.Store.CreateShare(r.Context(), sh); err != nil {
		return err
	}
	g.audit(r.Context(), id.user, "share", s.ID, r.RemoteAddr, fmt.Sprintf("%s %s until %s", sh.ID, mode, sh.Expires.UTC().Format(time.RFC3339)))
	writeJSON(w, 201, map[string]any{"id": sh.ID, "mode": mode, "expires": sh.Expires, "url": "https://" + r.Host + "/share/" + secret})
	return nil
}

// errNoSession is the answer for a session id that is unknown and for one
// that is not the asker's (and no share of theirs opens): the same status,
// code and message, so that ids cannot be probed.
var errNoSession = apiErr(404, "no_session", "no such session")

// shareFor checks the share cookie for session s and returns the share.
// Without a cookie, or with one that opens no share of s, s is not there
// for this user (errNoSession); a share of s that was revoked or expired
// says so, as its holder knows the session already. A store fault is a
// 503, never a "not valid".
func (g *Gateway) shareFor(r *http.Request, s *session.Session) (session.Share, error) {
	c, err := r.Cookie(shareCookiePrefix + s.ID)
	if err != nil {
		return session.Share{}, errNoSession
	}
	sum := sha256.Sum256([]byte(c.Value))
	return g.checkShare(r.Context(), sum[:], s.ID)
}

// checkShare returns the share link with hash if it opens session id now:
// errNoSession if it opens no share of id, a 403 saying so if it was
// revoked or expired, a store fault if the store could not tell.
func (g *Gateway) checkShare(ctx context.Context, hash []byte, id string) (session.Share, error) {
	sh, err := g.cfg.Store.ShareByHash(ctx, hash)
	switch {
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return session.Share{}, storeFault("share lookup", err)
	case err != nil || sh.Session != id:
		return session.Share{}, errNoSession
	case sh.Revoked:
		return session.Share{}, apiErr(403, "share_revoked", "the owner revoked this share link")
	case !g.now().Before(sh.Expires):
		return session.Share{}, apiErr(403, "share_expired", "this share link has expired")
	}
	return sh, nil
}

// authorizeView decides who may connect to s and how: its owner with full
// control, or someone holding a valid share link with the share's mode.
func (g *Gateway) authorizeView(r *http.Request, id identity, s *session.Session) (viewer, error) {
	if s.Owner == id.user {
		return viewer{user: id.user, mode: session.Control}, nil
	}
	sh, err := g.shareFor(r, s)
	if err != nil {
		g.log.WarnContext(r.Context(), "refused viewer", "user", id.user, "session", s.ID, "remote_addr", r.RemoteAddr, "error", err)
		return viewer{}, err
	}
	return viewer{user: id.user, mode: sh.Mode, share: sh}, nil
}

func sortedNames(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
