package gateway

// Session events: the portal follows a session's state as server-sent
// events (GET /api/v1/sessions/{id}/events) instead of asking every half
// second. Every change of a session's record goes through the store's
// UpdateSession; the gateway's store is wrapped (notifyStore) so that each
// successful update wakes the streams of that session, and only of that
// session. A woken stream does what a new request would: it decides who
// is asking from the credential again (identify), checks again that they
// may see the session (visibleSession: owner, admin, or a valid share
// link), reads the session from the store and sends it if what the API
// would show changed. So a wake-up carries no data from one stream to
// another, and an event is never sent on a right that no longer holds.
// Revoking the right a stream was let in by (the token, the login, the
// share link, the user) closes it at once (onRevoke), and so does the
// share link's or login's expiry. A heartbeat every eventHeartbeat keeps
// proxies from timing the stream out and looks the session up again, for
// changes another gateway made on a shared database. The page keeps its
// poll only as a fallback for when the stream fails.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// eventHeartbeat is how often an idle event stream sends a comment line
// (proxies close connections idle for a minute or so) and looks its
// session up again.
const eventHeartbeat = 15 * time.Second

// eventWriteTimeout bounds one write to an event stream: a client that
// stops reading does not hold its handler forever.
const eventWriteTimeout = 10 * time.Second

// eventHub is the set of open event streams, by session. The zero value
// is ready to use.
type eventHub struct {
	mu     sync.Mutex
	subs   map[string]map[*eventSub]struct{}
	closed bool
}

// eventSub is one open event stream.
type eventSub struct {
	tag    viewerTag     // the rights it was let in by, for revocation
	wake   chan struct{} // capacity 1: a pending wake-up is enough
	cancel context.CancelFunc
}

// subscribe registers a stream of session tag.Session; cancel ends it. It
// returns nil (and cancels) once the hub is closed.
func (h *eventHub) subscribe(tag viewerTag, cancel context.CancelFunc) *eventSub {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		cancel()
		return nil
	}
	if h.subs == nil {
		h.subs = map[string]map[*eventSub]struct{}{}
	}
	sub := &eventSub{tag: tag, wake: make(chan struct{}, 1), cancel: cancel}
	if h.subs[tag.Session] == nil {
		h.subs[tag.Session] = map[*eventSub]struct{}{}
	}
	h.subs[tag.Session][sub] = struct{}{}
	return sub
}

func (h *eventHub) unsubscribe(sub *eventSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if m := h.subs[sub.tag.Session]; m != nil {
		delete(m, sub)
		if len(m) == 0 {
			delete(h.subs, sub.tag.Session)
		}
	}
}

// changed wakes the streams of session id. It never blocks.
func (h *eventHub) changed(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs[id] {
		select {
		case sub.wake <- struct{}{}:
		default:
		}
	}
}

// revoked closes the streams let in by a right ev takes away. An event
// that names only the session (it was stopped or ended) closes nothing:
// the stream reports the end itself, then closes.
func (h *eventHub) revoked(ev revokeEvent) {
	if ev.Share == "" && ev.User == "" && ev.Login == "" && ev.Token == "" {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.subs {
		for sub := range m {
			if ev.matches(sub.tag) {
				sub.cancel()
			}
		}
	}
}

// close ends every stream and refuses new ones (the server is shutting
// down: http.Server.Shutdown waits for handlers, and a stream never ends
// by itself).
func (h *eventHub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for _, m := range h.subs {
		for sub := range m {
			sub.cancel()
		}
	}
}

// notifyStore is the gateway's store: each successful UpdateSession wakes
// the event streams of that session.
type notifyStore struct {
	store.Store
	changed func(id string)
	// state, if set, is told each session after an update (ready mails).
	state func(*session.Session)
}

func (s notifyStore) UpdateSession(ctx context.Context, id string, update func(*session.Session) error) (*session.Session, error) {
	out, err := s.Store.UpdateSession(ctx, id, update)
	if err == nil {
		s.changed(id)
		if s.state != nil && out != nil {
			s.state(out)
		}
	}
	return out, err
}

// visibleSession returns the session the request's {id} names if id may
// see it: its owner, an admin, or someone holding a valid share link of it
// (whose page follows the session's state); the share is returned then.
// Anything else is "no such session", as for an id that does not exist,
// so ids cannot be probed; a store fault is a 503.
func (g *Gateway) visibleSession(r *http.Request, id identity) (*session.Session, session.Share, error) {
	s, err := g.cfg.Store.GetSession(r.Context(), r.PathValue("id"))
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, session.Share{}, errNoSession
		}
		return nil, session.Share{}, storeFault("session lookup", err)
	}
	if s.Owner == id.user || id.admin {
		return s, session.Share{}, nil
	}
	sh, err := g.shareFor(r, s)
	if err != nil {
		if isStoreFault(err) {
			return nil, session.Share{}, err
		}
		return nil, session.Share{}, errNoSession
	}
	return s, sh, nil
}

// sessionEvents streams the session's state as server-sent events: an
// "state" event whose data is the session as GET /api/v1/sessions/{id}
// shows it, first at once and then whenever that changes; the stream ends
// after the session has ended, or when the right it was opened by is
// revoked or expires.
//
// GET /api/v1/sessions/{id}/events
func (g *Gateway) sessionEvents(w http.ResponseWriter, r *http.Request, id identity) error {
	s, sh, err := g.visibleSession(r, id)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	tag := viewer{user: id.user, mode: sh.Mode, share: sh}.tag(s, id)
	sub := g.events.subscribe(tag, cancel)
	if sub == nil {
		return apiErr(503, "shutting_down", "the gateway is shutting down; try again")
	}
	defer g.events.unsubscribe(sub)
	if !tag.Expires.IsZero() {
		t := time.AfterFunc(max(tag.Expires.Sub(g.now()), time.Millisecond), cancel)
		defer t.Stop()
	}

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	// A reverse proxy in front (nginx) must pass each event on at once.
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(format string, args ...any) error {
		// A deadline per write; an error setting it (a writer that has
		// none) leaves the write unbounded, as for any other handler.
		_ = rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout))
		if _, err := fmt.Fprintf(w, format, args...); err != nil {
			return err
		}
		return rc.Flush()
	}

	heartbeat := time.NewTicker(eventHeartbeat)
	defer heartbeat.Stop()
	var last []byte
	for {
		// As a new request would: who is asking, may they see it, and
		// what is it now. A store fault skips this round (try again),
		// a refusal ends the stream.
		switch id2, err := g.identify(r); {
		case err != nil && isStoreFault(err):
		case err != nil:
			g.log.InfoContext(ctx, "event stream closed: the credential no longer holds", "session", tag.Session, "user", id.user, "error", err)
			return nil
		case id2.user != id.user:
			// A trusted proxy's header now names someone else.
			g.log.InfoContext(ctx, "event stream closed: another user", "session", tag.Session, "user", id.user, "now", id2.user)
			return nil
		default:
			s, _, err = g.visibleSession(r, id2)
			if err != nil && !isStoreFault(err) {
				g.log.InfoContext(ctx, "event stream closed: the session is no longer visible", "session", tag.Session, "user", id.user, "error", err)
				return nil
			}
			if err == nil {
				b, err := json.Marshal(g.sessionJSON(s))
				if err != nil {
					return fmt.Errorf("event for session %s: %w", s.ID, err)
				}
				if !bytes.Equal(b, last) {
					if err := write("event: state\ndata: %s\n\n", b); err != nil {
						return nil // the client went away
					}
					last = b
				}
				if s.State == session.Ended {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-sub.wake:
		case <-heartbeat.C:
			if err := write(": keep-alive\n\n"); err != nil {
				return nil
			}
		}
	}
}
