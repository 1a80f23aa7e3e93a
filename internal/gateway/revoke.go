package gateway

// Revocation: taking a right away ends what it let in, at once.
//
// Every request decides who it is from afresh (identify): a token or a
// login is looked up in the store, and the user's standing (do they still
// exist, are they an admin) comes from the current user record and, for a
// user the local password file vouched for, from the file itself, which is
// re-read whenever it changes (one stat per request). Nothing about a
// right is baked into a credential at its creation.
//
// What a request check cannot reach is a connection already open: a
// WebSocket viewer, or a long HTTP stream to an app. Each proxied
// connection is registered with a viewerTag saying by what right it was
// let in (whose session, which user, which share link, which login, until
// when), and every event that takes a right away calls revoke with a
// revokeEvent; revoke cancels the matching connections (which closes
// them) and then runs the hooks registered with onRevoke, so other state
// tied to the same rights (the per-app-origin cookies) can be dropped on
// the same events. An expiry needs no event: each connection let in by a
// share link or a login has a timer that cancels it when the first of them
// expires. Events made on another gateway of a shared store arrive by its
// broadcast (broadcast.go). Under the events, recheckViewers looks every
// open connection's and every app cookie's rights up again every few
// seconds, for revocations this gateway did not see (a lost broadcast, a
// hand edit of the store).

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/airlock-hpc/airlock/internal/auth/local"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// LocalDirectory is the local password file (auth/local.File is one): the
// authority on the users it vouched for.
type LocalDirectory interface {
	// Role reports whether name is in the file now, and as an admin; an
	// error means the file could not be read.
	Role(name string) (admin, ok bool, err error)
	// Roles returns every user in the file and whether each is an admin.
	Roles() (map[string]bool, error)
}

// viewerTag says whose a proxied connection is and by what right it was
// let in.
type viewerTag struct {
	Session string // the session it views
	Owner   string // the session's owner
	User    string // who is viewing
	Share   string // the share link's id, if it came in by one
	Login   string // the login's id, if it came in by the login cookie
	Token   string // the token's id, if it came in by a bearer token
	Mode    session.Mode
	// Expires is when the share link or the login it came in by expires,
	// whichever is first; zero: neither.
	Expires time.Time
	// proof and shareHash are the stored hashes of the login and of the
	// share link, for recheckViewers to look them up again.
	proof, shareHash []byte
}

// revokeEvent is a right taken away. Zero fields match anything, but an
// event always names at least one of them (revoke ignores an empty one).
type revokeEvent struct {
	Reason  string // for the log: "share revoked", "session stopped", …
	Session string // every connection to this session …
	Share   string // … let in by this share link
	User    string // every connection of this user
	Login   string // every connection let in by this login
	Token   string // every connection let in by this token
}

func (ev revokeEvent) empty() bool {
	return ev.Session == "" && ev.Share == "" && ev.User == "" && ev.Login == "" && ev.Token == ""
}

// matches reports whether ev takes away the right t was let in by.
func (ev revokeEvent) matches(t viewerTag) bool {
	return (ev.Session == "" || ev.Session == t.Session) &&
		(ev.Share == "" || ev.Share == t.Share) &&
		(ev.User == "" || ev.User == t.User) &&
		(ev.Login == "" || ev.Login == t.Login) &&
		(ev.Token == "" || ev.Token == t.Token)
}

// viewerEntry is one open proxied connection.
type viewerEntry struct {
	tag    viewerTag
	cancel context.CancelFunc
}

// track registers a proxied connection until the returned func runs; cancel
// closes it. A share's expiry cancels it by timer.
func (g *Gateway) track(tag viewerTag, cancel context.CancelFunc) (untrack func()) {
	key := new(int)
	g.mu.Lock()
	if g.viewerCancels == nil {
		g.viewerCancels = map[*int]viewerEntry{}
	}
	g.viewerCancels[key] = viewerEntry{tag: tag, cancel: cancel}
	g.mu.Unlock()
	var timer *time.Timer
	if !tag.Expires.IsZero() {
		// Wall-clock time left, measured on g.now so tests with a fake
		// clock can shorten it; at least a tick, so an expired share
		// still goes through the timer rather than a special case.
		timer = time.AfterFunc(max(tag.Expires.Sub(g.now()), time.Millisecond), func() {
			g.log.Info("viewer closed: its share link or login expired", "session", tag.Session, "user", tag.User, "share", tag.Share)
			cancel()
		})
	}
	return func() {
		if timer != nil {
			timer.Stop()
		}
		g.mu.Lock()
		delete(g.viewerCancels, key)
		g.mu.Unlock()
	}
}

// onRevoke registers f to run on every revokeEvent, after the matching
// viewers are closed. f must not block: it runs on the path of the request
// (or the watcher) that took the right away.
func (g *Gateway) onRevoke(f func(revokeEvent)) {
	g.mu.Lock()
	g.revokeHooks = append(g.revokeHooks, f)
	g.mu.Unlock()
}

// earliest is the earlier of two times, zero meaning never.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// closeViewersWhere closes every open proxied connection whose tag match
// accepts, and returns how many.
func (g *Gateway) closeViewersWhere(match func(viewerTag) bool) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, v := range g.viewerCancels {
		if match(v.tag) {
			v.cancel()
			n++
		}
	}
	return n
}

// revoke closes every open proxied connection that ev takes the right of
// away and runs the onRevoke hooks, here and on every other gateway of a
// shared store (broadcast.go). It returns how many it closed here.
func (g *Gateway) revoke(ctx context.Context, ev revokeEvent) int {
	if ev.empty() {
		return 0
	}
	n := g.revokeHere(ctx, ev)
	g.publish(peerMsg{Revoke: &ev})
	return n
}

// revokeHere is revoke on this gateway only.
func (g *Gateway) revokeHere(ctx context.Context, ev revokeEvent) int {
	if ev.empty() {
		return 0
	}
	// The fast path's caches first, so no request after this one is let
	// in by what they remembered (fastpath.go).
	g.fast.forgetAll()
	n := g.closeViewersWhere(ev.matches)
	g.mu.Lock()
	hooks := g.revokeHooks
	g.mu.Unlock()
	for _, f := range hooks {
		f(ev)
	}
	if n > 0 {
		g.log.InfoContext(ctx, "viewers closed: "+ev.Reason, "closed", n, "session", ev.Session, "share", ev.Share, "user", ev.User)
	}
	return n
}

// current is what name may do now: the user record says whether they
// exist and are an admin, except for a user the local password file
// vouched for, whom the file itself decides (so `airlock users remove` and
// a change of role take effect on the next request). A user recorded
// before the method was kept (method "") is decided by the file when there
// is one.
func (g *Gateway) current(ctx context.Context, name string) (identity, error) {
	u, err := g.cfg.Store.GetUser(ctx, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return identity{}, apiErr(401, "user_removed", "your account no longer exists; ask an admin")
	case err != nil:
		return identity{}, storeFault("user lookup", err)
	}
	return g.standing(ctx, name, u)
}

// standing is what the user of record u may do now: the record's admin
// flag and groups, but the local password file's word for a user it
// vouched for (current); and, for a member of a group that requires a
// second factor, that they have one (a store read only for them).
func (g *Gateway) standing(ctx context.Context, name string, u session.User) (identity, error) {
	admin := u.Admin
	if g.cfg.LocalUsers != nil && (u.Method == local.Method || u.Method == "") {
		a, ok, err := g.cfg.LocalUsers.Role(name)
		if err != nil {
			return identity{}, &apiError{Status: 503, Code: "auth_unavailable", Message: "the user list cannot be read; try again later",
				cause: fmt.Errorf("local password file: %w", err)}
		}
		if !ok {
			return identity{}, apiErr(401, "user_removed", "your account no longer exists; ask an admin")
		}
		admin = a
	}
	if err := g.requireEnrolled(ctx, u); err != nil {
		return identity{}, err
	}
	return identity{user: name, admin: admin, groups: u.Groups}, nil
}

// watchUsers notices users removed from the local password file (by
// `airlock users remove` while the gateway runs, or while it was down) and
// ends what they had: their open viewers, logins and tokens and, with
// auth.on_user_removed "stop", their sessions. Requests need no watcher
// (identify asks the file each time); this is for what is already open.
func (g *Gateway) watchUsers() {
	defer g.wg.Done()
	// Who the file vouched for before: the local users the store knows of
	// (users removed while the gateway was down among them) and the file
	// now.
	known := map[string]bool{}
	if us, err := g.cfg.Store.ListUsers(g.ctx); err == nil {
		for _, u := range us {
			if u.Method == local.Method {
				known[u.Name] = true
			}
		}
	} else {
		g.log.Warn("list users to watch for removals", "error", err)
	}
	t := time.NewTicker(g.cfg.UserPoll)
	defer t.Stop()
	for {
		now, err := g.cfg.LocalUsers.Roles()
		if err != nil {
			g.log.Warn("read the local password file to watch for removals", "error", err)
		} else {
			for name := range known {
				if _, ok := now[name]; ok {
					continue
				}
				if err := g.userRemoved(g.ctx, name); err != nil {
					// Kept in known: tried again on the next tick.
					g.log.Warn("end a removed user's access; retrying", "user", name, "error", err)
					continue
				}
				delete(known, name)
			}
			for name := range now {
				known[name] = true
			}
		}
		select {
		case <-g.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// userRemoved ends what a removed user had open or could still use.
func (g *Gateway) userRemoved(ctx context.Context, name string) error {
	g.revoke(ctx, revokeEvent{Reason: "user removed", User: name})
	if err := g.cfg.Store.RevokeUser(ctx, name); err != nil {
		return err
	}
	g.fast.forgetAll() // what a request read between the event and now
	stopped := 0
	if g.cfg.OnUserRemoved != "keep" {
		ss, err := g.cfg.Store.ListSessions(ctx, store.SessionFilter{Owner: name, States: []session.State{session.Queued, session.Starting, session.Ready}})
		if err != nil {
			return fmt.Errorf("list sessions of %s: %w", name, err)
		}
		for _, s := range ss {
			if err := g.Stop(ctx, "", s.ID, "the user was removed", ""); err != nil {
				return fmt.Errorf("stop session %s of %s: %w", s.ID, name, err)
			}
			stopped++
		}
	}
	g.log.LogAttrs(ctx, slog.LevelInfo, "user removed: logins, tokens and viewers ended", slog.String("user", name), slog.Int("sessions_stopped", stopped))
	g.audit(ctx, "", "user_removed", "", "", fmt.Sprintf("%s (sessions stopped: %d)", name, stopped))
	return nil
}

// recheckViewers is the backstop under the events: every cfg.RecheckEvery
// it asks the store again about each right an open connection or an app
// cookie came in by (its session still ready, its share link, token or
// login still valid, its user still a user), so a revocation this gateway
// did not see (made by another gateway on the same database, or by hand in
// the store) closes the connection and forgets the cookie here too. Each distinct right is looked up once a
// round. A store fault closes nothing: it is not a "no".
func (g *Gateway) recheckViewers() {
	defer g.wg.Done()
	t := time.NewTicker(g.cfg.RecheckEvery)
	defer t.Stop()
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-t.C:
		}
		g.mu.Lock()
		open := make([]viewerEntry, 0, len(g.viewerCancels))
		for _, v := range g.viewerCancels {
			open = append(open, v)
		}
		g.mu.Unlock()
		grants := g.appAuth.tags()
		if len(open) == 0 && len(grants) == 0 {
			continue
		}
		rc := recheck{g: g, ctx: g.ctx, seen: map[string]string{}}
		for _, v := range open {
			if why := rc.refused(v.tag); why != "" {
				g.log.Info("viewer closed: "+why, "session", v.tag.Session, "user", v.tag.User, "share", v.tag.Share)
				v.cancel()
			}
		}
		// App cookies are tied to the same rights: a refused one is
		// forgotten, and its next request goes through the handshake.
		var refused [][32]byte
		for k, t := range grants {
			if rc.refused(t) != "" {
				refused = append(refused, k)
			}
		}
		g.appAuth.drop(refused)
	}
}

// recheck is one round of recheckViewers: the verdict on each right ("" it
// holds, else why not), so each is looked up once.
type recheck struct {
	g    *Gateway
	ctx  context.Context
	seen map[string]string
	// strict: a store fault is not "holds" but a verdict of its own,
	// kept in fault. recheckViewers keeps a connection through a fault
	// (closing it would be a false "no"); taking in a right this gateway
	// never saw (adoptAppCookie) must not be a false "yes".
	strict bool
	fault  error
}

// faulted is the verdict on a right the store could not be asked about:
// "" (it holds) unless rc is strict.
func (rc *recheck) faulted(what string, err error) string {
	if !rc.strict {
		return ""
	}
	if rc.fault == nil {
		rc.fault = storeFault(what, err)
	}
	return "the store does not answer"
}

func (rc *recheck) once(key string, check func() string) string {
	if why, ok := rc.seen[key]; ok {
		return why
	}
	why := check()
	rc.seen[key] = why
	return why
}

// refused says why the right t came in by no longer holds, or "".
func (rc *recheck) refused(t viewerTag) string {
	g, ctx := rc.g, rc.ctx
	if why := rc.once("session "+t.Session, func() string {
		s, err := g.cfg.Store.GetSession(ctx, t.Session)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return "session gone"
		case err != nil:
			return rc.faulted("session lookup", err)
		case s.State != session.Ready:
			return "session " + string(s.State)
		}
		return ""
	}); why != "" {
		return why
	}
	if len(t.shareHash) > 0 {
		if why := rc.once("share "+t.Share, func() string {
			_, err := g.checkShare(ctx, t.shareHash, t.Session)
			switch {
			case err == nil:
				return ""
			case isStoreFault(err):
				return rc.faulted("share lookup", err)
			case err == errNoSession:
				return "share link gone"
			}
			return asAPIError(err).Message
		}); why != "" {
			return why
		}
	}
	switch {
	case t.Login != "":
		if why := rc.once("login "+t.Login, func() string {
			l, err := g.cfg.Store.LoginByHash(ctx, t.proof)
			switch {
			case errors.Is(err, store.ErrNotFound):
				return "logged out"
			case err != nil:
				return rc.faulted("login lookup", err)
			case !g.now().Before(l.Expires):
				return "login expired"
			}
			return ""
		}); why != "" {
			return why
		}
	case t.Token != "":
		if why := rc.once("token "+t.Token, func() string {
			// Listed rather than looked up by hash: that would stamp it.
			ts, err := g.cfg.Store.ListTokens(ctx, t.User)
			if err != nil {
				return rc.faulted("token lookup", err)
			}
			for _, tk := range ts {
				if tk.ID == t.Token {
					if tk.Revoked {
						return "token revoked"
					}
					return ""
				}
			}
			return "token gone"
		}); why != "" {
			return why
		}
	default:
		// By a trusted proxy's header: the proxy vouched, and no store
		// record is what let the connection in.
		return ""
	}
	return rc.once("user "+t.User, func() string {
		_, err := g.current(ctx, t.User)
		if ae, ok := errors.AsType[*apiError](err); ok && ae.Code == "user_removed" {
			return "user removed"
		} else if ok && ae.Status == 503 {
			return rc.faulted("user lookup", err)
		}
		return ""
	})
}
