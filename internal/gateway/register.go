package gateway

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/airlock-hpc/airlock/internal/backend"
	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/registration"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// registerToken is the token session id's runner proves itself with. It is
// derived, not stored: the gateway can check it after a restart, and it
// opens nothing but this session's registration.
func (g *Gateway) registerToken(id string) string {
	k := derive(g.master, "airlock runner registration", id)
	return hex.EncodeToString(k[:])
}

// certSHA256 is the hex SHA-256 of the gateway's own certificate, which
// runners pin when the certificate is the self-signed one.
func (g *Gateway) certSHA256() string {
	if len(g.cert.Certificate) == 0 {
		return ""
	}
	sum := sha256.Sum256(g.cert.Certificate[0])
	return hex.EncodeToString(sum[:])
}

// remoteJob is what a remote backend's runner needs in its environment:
// where and how to register, and the ticket key (never on a disk of the
// node, never on a command line).
func (g *Gateway) remoteJob(id string) map[string]string {
	k := g.sessionKey(id)
	env := map[string]string{
		registration.EnvURL:       g.cfg.RegisterURL,
		registration.EnvToken:     g.registerToken(id),
		registration.EnvTicketKey: hex.EncodeToString(k[:]),
	}
	if g.cfg.TLSCertFile == "" {
		env[registration.EnvSHA256] = g.certSHA256()
	}
	return env
}

// register is POST /api/v1/register/{id}: a runner on a node says its
// session is ready (or has ended). Refused unless the token is the
// session's, the session waits for exactly this (a replay finds it ready
// already), and the backend confirms the request came from the job's node.
func (g *Gateway) register(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	remote := g.remote
	refuse := func(status int, code, msg string) error {
		g.log.WarnContext(r.Context(), "registration refused", "session", id, "remote_addr", r.RemoteAddr, "reason", msg)
		g.auditRefusal(r.Context(), id, r.RemoteAddr, msg)
		return apiErr(status, code, msg)
	}
	if remote == nil {
		return refuse(404, "not_found", "this gateway's backend takes no registrations")
	}
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !hmac.Equal([]byte(tok), []byte(g.registerToken(id))) {
		return refuse(403, "bad_token", "wrong registration token for this session")
	}
	var reg registration.Registration
	if err := readJSON(w, r, &reg, true); err != nil {
		ae := asAPIError(err)
		return refuse(ae.Status, ae.Code, "registration "+ae.Message)
	}
	s, err := g.cfg.Store.GetSession(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return refuse(404, "not_found", "no such session")
	}
	if err != nil {
		return storeFault("session lookup for a registration", err)
	}
	if s.Backend != remote.Name() {
		return refuse(409, "wrong_backend", "session runs on backend "+s.Backend)
	}
	switch {
	case reg.Event == contract.EventReady && s.State != session.Queued && s.State != session.Starting:
		return refuse(409, "already_registered", "session is "+string(s.State)+": a registration is accepted once, while it starts")
	case reg.Event == contract.EventExit && s.State == session.Ended:
		return refuse(409, "ended", "session has ended")
	case reg.Event == contract.EventEgress && s.State != session.Ready && s.State != session.Stopping:
		return refuse(409, "not_running", "session is "+string(s.State)+": egress is reported while it runs")
	case reg.Event == contract.EventEgress && (len(reg.Egress) == 0 || len(reg.Egress) > registration.MaxEgress):
		return refuse(400, "bad_request", fmt.Sprintf("egress: %d decisions, want 1 to %d", len(reg.Egress), registration.MaxEgress))
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	from := net.ParseIP(host)
	if from == nil {
		return refuse(400, "bad_request", "no client address")
	}
	e, err := remote.Register(r.Context(), id, s.BackendRef, from, reg)
	if errors.Is(err, backend.ErrRefused) {
		return refuse(403, "refused", err.Error())
	}
	if err != nil {
		// The scheduler or DNS did not answer: not a "no". A 503 makes the
		// runner try again (registration.Send), where a 403 would end the
		// session; the cause is logged, not sent.
		return &apiError{Status: 503, Code: "backend_unavailable",
			Message: "the gateway could not check this registration with its backend; try again", cause: fmt.Errorf("register %s: %w", id, err)}
	}
	if e.Kind != "" {
		g.apply(r.Context(), id, e)
	}
	if reg.Event == contract.EventEgress {
		// Each decision is audited as the local backend's egress events
		// are; the batch itself is not.
		keep, note := g.egressQuota(id, len(reg.Egress))
		for _, d := range reg.Egress[:keep] {
			g.apply(r.Context(), id, backend.Event{Kind: contract.EventEgress, Target: clip(d.Target, 300), Verdict: clip(d.Verdict, 16), Reason: clip(d.Reason, 300)})
		}
		if note != "" {
			g.apply(r.Context(), id, backend.Event{Kind: contract.EventEgress, Verdict: "suppressed", Reason: note})
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	g.audit(r.Context(), "", "register_"+string(reg.Event), id, r.RemoteAddr, "node "+e.Node)
	for _, w := range e.Warnings {
		// What the runner started the session without (a pod's runner
		// where the cluster forbids user namespaces): for the admin's
		// audit, beside the registration it came with.
		g.log.WarnContext(r.Context(), "session runner warning", "session", id, "warning", w)
		g.audit(r.Context(), "", "runner_warning", id, r.RemoteAddr, w)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// reconcile makes the store and a remote backend agree: runners whose
// session is not active here (a ghost job left by a crash, or by a launch
// that failed half-way) are stopped, and every active session is watched
// (the watch ends one whose job is gone). It runs at start and then every
// ReconcileEvery.
func (g *Gateway) reconcile(ctx context.Context) (ghosts int, err error) {
	remote := g.remote
	if remote == nil {
		return 0, nil
	}
	runners, err := remote.Runners(ctx)
	if err != nil {
		return 0, fmt.Errorf("reconcile: %w", err)
	}
	live, err := g.cfg.Store.ListSessions(ctx, store.SessionFilter{States: []session.State{session.Queued, session.Starting, session.Ready, session.Stopping}})
	if err != nil {
		return 0, fmt.Errorf("reconcile: %w", err)
	}
	active := make(map[string]*session.Session, len(live))
	for _, s := range live {
		active[s.ID] = s
	}
	for id, ref := range runners {
		s, ok := active[id]
		// A session being launched has no ref yet: its job is not a ghost.
		if ok && (s.BackendRef == ref || s.BackendRef == "") {
			continue
		}
		ghosts++
		g.log.WarnContext(ctx, "stopping a runner no active session owns", "session", id, "ref", ref)
		g.audit(ctx, "", "ghost_stopped", id, "", ref)
		if err := remote.Stop(ctx, id, ref); err != nil && !errors.Is(err, backend.ErrGone) {
			g.log.WarnContext(ctx, "could not stop ghost runner", "session", id, "ref", ref, "error", err)
		}
	}
	for _, s := range live {
		if s.BackendRef != "" && s.Backend == remote.Name() {
			g.watch(s.ID, s.BackendRef)
		}
	}
	return ghosts, nil
}

// reconciler runs reconcile now and every ReconcileEvery.
func (g *Gateway) reconciler() {
	defer g.wg.Done()
	every := g.cfg.ReconcileEvery
	for {
		// With several gateways, the one leading reconciles (lease.go).
		if g.lease.leading() {
			if _, err := g.reconcile(g.ctx); err != nil && g.ctx.Err() == nil {
				g.log.WarnContext(g.ctx, "reconcile failed; will retry", "error", err)
			}
		}
		select {
		case <-g.ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// clip cuts s to at most n bytes: what a runner reports is its word, and
// the audit log keeps it bounded.
func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// refusalAuditRate is how many refused registrations a minute the gateway
// audits one by one. A refusal needs no token (anyone who reaches the
// gateway can ask), and each audit event is a row in the store: past the
// rate they are only logged, and the next one audited says how many were
// not.
const refusalAuditRate = 60

// registrationRefusals counts refused registrations for auditRefusal.
type registrationRefusals struct {
	mu      sync.Mutex
	window  time.Time
	n       int
	dropped int
	// egress counts each session's audited egress decisions this minute.
	egress map[string]*egressCount
}

type egressCount struct {
	window     time.Time
	n, dropped int
}

// auditRefusal audits a refused registration, at most refusalAuditRate a
// minute (see there).
func (g *Gateway) auditRefusal(ctx context.Context, id, remote, msg string) {
	rf := &g.regRefusals
	rf.mu.Lock()
	if now := g.now(); now.Sub(rf.window) >= time.Minute {
		if rf.dropped > 0 {
			msg += fmt.Sprintf(" (and %d refused registrations before this one, over %d a minute, only logged)", rf.dropped, refusalAuditRate)
		}
		rf.window, rf.n, rf.dropped = now, 0, 0
	}
	rf.n++
	if rf.n > refusalAuditRate {
		rf.dropped++
		rf.mu.Unlock()
		return
	}
	rf.mu.Unlock()
	g.audit(ctx, "", "register_refused", id, remote, msg)
}

// egressAuditPerMinute is how many egress decisions a minute the gateway
// audits one by one for a session: twice what a runner reports (120 a
// minute, in windows of its own), with room. The registration token is
// the job owner's to read, so the runner's own cap is not enough.
const egressAuditPerMinute = 2 * registration.MaxEgress

// egressQuota says how many of n egress decisions session id may have
// audited one by one now, and a note to audit as well ("" for none): when
// the minute's quota first runs out, and for what a past minute dropped.
func (g *Gateway) egressQuota(id string, n int) (keep int, note string) {
	rf := &g.regRefusals
	rf.mu.Lock()
	defer rf.mu.Unlock()
	now := g.now()
	if rf.egress == nil {
		rf.egress = map[string]*egressCount{}
	}
	if len(rf.egress) > 4096 {
		for k, c := range rf.egress {
			if now.Sub(c.window) >= time.Minute && c.dropped == 0 {
				delete(rf.egress, k)
			}
		}
	}
	c := rf.egress[id]
	if c == nil {
		c = &egressCount{window: now}
		rf.egress[id] = c
	}
	if now.Sub(c.window) >= time.Minute {
		if c.dropped > 0 {
			note = fmt.Sprintf("%d egress decisions of the last minute not audited one by one (over %d a minute)", c.dropped, egressAuditPerMinute)
		}
		c.window, c.n, c.dropped = now, 0, 0
	}
	keep = min(n, max(0, egressAuditPerMinute-c.n))
	c.n += keep
	if keep < n {
		if c.dropped == 0 && note == "" {
			note = fmt.Sprintf("more than %d egress decisions this minute: the rest are counted, not audited one by one", egressAuditPerMinute)
		}
		c.dropped += n - keep
	}
	return keep, note
}
