package gateway

// `airlock forward`: a web app on a node, published through a tunnel the
// node dials out.
//
// A forward is a session like any other in the store (owner, state, share
// links, Stop in the portal and the API), with backend "forward" and one
// app connector whose endpoint is "tunnel:ID" instead of an address on a
// node. So everything the app hosts do for app sessions holds for it
// unchanged: its own origin, the sign-in handshake, the app cookie, shares
// with view or control, and revocation (apphost.go, revoke.go). Only its
// host name differs: https://NAME-USER.DOMAIN/ rather than the session ID.
//
// The node's side (internal/forward) registers the forward with the user's
// token (POST /api/v1/forwards) and gets the session ID and a secret that
// only it knows. It then dials GET /api/v1/forwards/ID/tunnel, a WebSocket,
// with the same token and the secret; over it, yamux multiplexes one
// stream per connection the gateway opens towards the app. When the tunnel
// breaks (a gateway restart, a network blink), the node dials again with
// the same ID and secret and keeps its URL. When the forward is stopped
// (the portal, the API, the node ending it), the session ends, the tunnel
// is closed, the next dial is told 410 Gone and the node ends the app.
//
// Names: a host label is NAME-USER with NAME of [a-z0-9] only, so a label
// splits into name and user one way only and no user can make a label
// that ends in another user's name. A user's label is held by one live
// forward at a time; a new forward takes it over only from one whose
// tunnel is down (the same user starting again after a crash), and the
// session it takes over from ends, so the stale tunnel, if it ever comes
// back, is refused (its session is gone and its secret names no other).

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/forward"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// Forward configures `airlock forward`.
type Forward struct {
	// MaxPerUser caps the live forwards of one user. Default 5; negative:
	// no forwards at all.
	MaxPerUser int
	// BytesPerSecond caps what one forward carries, both ways together;
	// 0: no cap.
	BytesPerSecond int64
	// MaxStreams caps the connections open at once through one tunnel.
	// Default 256.
	MaxStreams int
	// Grace is how long a forward whose tunnel is down is kept for it to
	// come back (a gateway restart, a network blink) before it ends.
	// Default 2m.
	Grace time.Duration
}

const (
	forwardBackend        = "forward"
	forwardProfilePrefix  = "forward:"
	forwardEndpointPrefix = "tunnel:"
	// ForwardSecretHeader carries a forward's secret on its tunnel's
	// handshake.
	ForwardSecretHeader = forward.SecretHeader
	maxForwardName      = 32
)

// forwards is the gateway's memory of the forwards it serves.
type forwards struct {
	mu      sync.Mutex
	byLabel map[string]string     // host label → session ID
	labelOf map[string]string     // session ID → host label
	tunnels map[string]*tunnel    // session ID → its connected tunnel
	down    map[string]time.Time  // session ID → since when it has no tunnel
	limits  map[string]*byteLimit // session ID → its bandwidth, shared by its tunnels
	// orphans, the leader's, are live forwards held nowhere living, since
	// when this gateway has seen them so (reapForwards).
	orphans map[string]time.Time
	// listed remembers, per user, the names of the live forwards the
	// store had when last asked (forwardFromStore): a host label naming
	// none of them is no forward, without a store query for each request
	// (anyone may send any Host). Emptied, and gen moved on, whenever a
	// session changes here or at another gateway (forwardsChanged).
	listed    map[string]listedForwards
	listedGen uint64
	// create serialises the name check and the insert of new forwards.
	create sync.Mutex
}

// listedForwards is what the store said of one user's live forwards.
type listedForwards struct {
	at    time.Time
	names []string
}

const (
	// forwardMissTTL bounds how long a listing answers for the store
	// when no change was heard (a store without broadcast, or one lost).
	forwardMissTTL = 5 * time.Second
	// maxListedUsers bounds forwards.listed: host labels naming made-up
	// users each cost one query, and no memory beyond this.
	maxListedUsers = 4096
)

// forwardsChanged forgets the listings forwardFromStore keeps: a session
// changed, and a forward may have started.
func (g *Gateway) forwardsChanged() {
	f := &g.fwd
	f.mu.Lock()
	f.listedGen++
	clear(f.listed)
	f.mu.Unlock()
}

// tunnel is one connected node.
type tunnel struct {
	mux   *yamux.Session
	slots chan struct{} // one per open stream, up to MaxStreams
	limit *byteLimit
}

// validForwardName reports why name cannot be a forward's name, or nil.
func validForwardName(name string) error {
	if name == "" || len(name) > maxForwardName {
		return fmt.Errorf("name: %d characters; want 1 to %d", len(name), maxForwardName)
	}
	for _, c := range name {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return fmt.Errorf("name %q: only lower-case letters and digits (no '-': the host is NAME-USER)", name)
		}
	}
	return nil
}

// forwardLabel is the host label of user's forward name: NAME-USER. The
// user's name must be usable in a DNS label as it is.
func forwardLabel(name, user string) (string, error) {
	if err := validForwardName(name); err != nil {
		return "", err
	}
	if user == "" || user[0] == '-' || user[len(user)-1] == '-' {
		return "", fmt.Errorf("user name %q cannot be part of a host name", user)
	}
	for _, c := range user {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return "", fmt.Errorf("user name %q cannot be part of a host name (lower-case letters, digits and '-' only)", user)
		}
	}
	label := name + "-" + user
	if len(label) > 63 {
		return "", fmt.Errorf("host label %q is over 63 characters; choose a shorter name", label)
	}
	if validSessionID(label) {
		// s-0123456789ab is a session's host.
		return "", fmt.Errorf("name %q with user %q reads as a session ID; choose another name", name, user)
	}
	return label, nil
}

// isForward reports whether s is a forward.
func isForward(s *session.Session) bool { return s.Backend == forwardBackend }

// forwardName is the name of forward s.
func forwardName(s *session.Session) string {
	return strings.TrimPrefix(s.Profile, forwardProfilePrefix)
}

// forwardByLabel returns the session ID a forward's host label names.
func (g *Gateway) forwardByLabel(label string) (string, bool) {
	g.fwd.mu.Lock()
	defer g.fwd.mu.Unlock()
	id, ok := g.fwd.byLabel[label]
	return id, ok
}

// storeFaultHost is what appHostLabel gives for a forward's host when
// the store did not answer the look-up: "try again", not "no such app".
const storeFaultHost = "\x00store-fault"

// forwardFromStore finds the live forward a host label names in the
// store several gateways share, made through another gateway, and
// remembers it; "" if there is none. With cached, a label of a user whose
// forwards were listed a moment ago, and that named none of them, is
// answered "" from that listing (a visitor's Host); without, the store is
// asked (a forward being created, which must see every other).
func (g *Gateway) forwardFromStore(label string, cached bool) (string, error) {
	if !g.lease.shared() {
		return "", nil // one gateway knows every forward (adoptForward)
	}
	name, user, ok := strings.Cut(label, "-")
	if !ok {
		return "", nil
	}
	if _, err := forwardLabel(name, user); err != nil {
		return "", nil
	}
	f := &g.fwd
	now := g.now()
	f.mu.Lock()
	gen := f.listedGen
	l, seen := f.listed[user]
	f.mu.Unlock()
	if cached && seen && now.Sub(l.at) < forwardMissTTL && !slices.Contains(l.names, name) {
		return "", nil
	}
	ctx, cancel := context.WithTimeout(g.ctx, 5*time.Second)
	defer cancel()
	live, err := g.cfg.Store.ListSessions(ctx, store.SessionFilter{Owner: user, States: []session.State{session.Starting, session.Ready}})
	if err != nil {
		g.log.WarnContext(ctx, "find a forward made through another gateway", "label", label, "error", err)
		return "", err
	}
	var names []string
	found := ""
	for _, s := range live {
		if !isForward(s) {
			continue
		}
		names = append(names, forwardName(s))
		if found == "" && forwardName(s) == name {
			g.adoptForward(s, false)
			found = s.ID
		}
	}
	f.mu.Lock()
	// Not if a session changed while the store was asked: the listing
	// may be older than the change.
	if f.listedGen == gen {
		if f.listed == nil || len(f.listed) >= maxListedUsers {
			f.listed = map[string]listedForwards{}
		}
		f.listed[user] = listedForwards{at: now, names: names}
	}
	f.mu.Unlock()
	return found, nil
}

// hostLabel is the app host label of session id: its forward label, or
// the ID itself.
func (g *Gateway) hostLabel(id string) string {
	g.fwd.mu.Lock()
	defer g.fwd.mu.Unlock()
	if l, ok := g.fwd.labelOf[id]; ok {
		return l
	}
	return id
}

// adoptForward remembers forward s (created now, or found alive in the
// store at start) as waiting for its tunnel. A forward another gateway
// holds (peer.go) is remembered with down false: its janitor is the
// holder's.
func (g *Gateway) adoptForward(s *session.Session, down bool) {
	label, err := forwardLabel(forwardName(s), s.Owner)
	if err != nil {
		if err := g.end(g.ctx, s.ID, "bad forward name: "+err.Error()); err != nil {
			g.log.ErrorContext(g.ctx, "end a forward with a bad name", "session", s.ID, "error", err)
		}
		return
	}
	f := &g.fwd
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.byLabel == nil {
		f.byLabel, f.labelOf = map[string]string{}, map[string]string{}
		f.tunnels, f.down, f.limits = map[string]*tunnel{}, map[string]time.Time{}, map[string]*byteLimit{}
	}
	f.byLabel[label], f.labelOf[s.ID] = s.ID, label
	if down {
		f.down[s.ID] = g.now()
	}
	if _, ok := f.limits[s.ID]; !ok && g.cfg.Forward.BytesPerSecond > 0 {
		f.limits[s.ID] = newByteLimit(g.cfg.Forward.BytesPerSecond)
	}
}

// dropForward forgets forward id and closes its tunnel.
func (g *Gateway) dropForward(id string) {
	f := &g.fwd
	f.mu.Lock()
	t := f.tunnels[id]
	if l, ok := f.labelOf[id]; ok && f.byLabel[l] == id {
		delete(f.byLabel, l)
	}
	delete(f.labelOf, id)
	delete(f.tunnels, id)
	delete(f.down, id)
	delete(f.limits, id)
	f.mu.Unlock()
	if t != nil {
		t.mux.Close()
	}
	g.dropForwardTransports(id)
}

// dropForwardTransports closes the pooled connections to forward id,
// wherever its tunnel was held.
func (g *Gateway) dropForwardTransports(id string) {
	g.transports.mu.Lock()
	defer g.transports.mu.Unlock()
	for k, ct := range g.transports.m {
		if fid, _, ok := tunnelHolder(k.endpoint); ok && fid == id {
			ct.t.CloseIdleConnections()
			delete(g.transports.m, k)
		}
	}
}

// forwardJSON is what POST /api/v1/forwards answers.
type forwardJSON struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	URL    string `json:"url"`
	Secret string `json:"secret"`
}

// createForward registers a forward of the caller's.
// POST /api/v1/forwards {"name": "jupyter"}
func (g *Gateway) createForward(w http.ResponseWriter, r *http.Request, who identity) error {
	var req struct {
		Name string `json:"name"`
		Node string `json:"node"`
	}
	if err := readJSON(w, r, &req, true); err != nil {
		return err
	}
	if g.cfg.Forward.MaxPerUser < 0 {
		return apiErr(403, "forwards_disabled", "this gateway does not take forwards")
	}
	label, err := forwardLabel(req.Name, who.user)
	if err != nil {
		return apiErr(400, "bad_name", err.Error())
	}
	if len(req.Node) > 253 {
		return apiErr(400, "bad_node", "node: over 253 characters")
	}
	ctx := r.Context()
	g.fwd.create.Lock()
	defer g.fwd.create.Unlock()
	old, ok := g.forwardByLabel(label)
	if !ok {
		// Made through another gateway of the site?
		if old, err = g.forwardFromStore(label, false); err != nil {
			return storeFault("look for a forward with this name", err)
		}
		ok = old != ""
	}
	if ok {
		up, err := g.forwardUp(ctx, old)
		if err != nil {
			return storeFault("look at the forward with this name", err)
		}
		if up {
			return apiErr(409, "name_in_use", fmt.Sprintf("your forward %q is running (session %s); stop it first or choose another name", req.Name, old))
		}
		// Its tunnel is down: the same user starting again after a crash.
		// It ends, so its tunnel cannot come back to this name.
		if err := g.Stop(ctx, who.user, old, "replaced by a new forward with the same name", r.RemoteAddr); err != nil {
			return storeFault("end the old forward", err)
		}
	}
	live, err := g.cfg.Store.ListSessions(ctx, store.SessionFilter{Owner: who.user, States: []session.State{session.Queued, session.Starting, session.Ready, session.Stopping}})
	if err != nil {
		return storeFault("count forwards", err)
	}
	n := 0
	for _, s := range live {
		if isForward(s) {
			n++
		}
	}
	if n >= g.cfg.Forward.MaxPerUser {
		return apiErr(429, "too_many_forwards", fmt.Sprintf("you have %d forwards, the most this gateway allows; stop one first", n))
	}
	secret := randomToken(32)
	sum := sha256.Sum256([]byte(secret))
	s := &session.Session{
		ID: newID(), Owner: who.user, Profile: forwardProfilePrefix + req.Name, State: session.Starting, Persistent: true,
		Created: g.now(), Backend: forwardBackend, BackendRef: hex.EncodeToString(sum[:]), Node: req.Node,
	}
	lim := store.Limits{MaxActive: g.cfg.Limits.MaxSessions, MaxActivePerOwner: g.cfg.Limits.MaxSessionsPerUser}
	if err := g.cfg.Store.CreateSessionWithin(ctx, s, lim); err != nil {
		if le, ok := errors.AsType[*store.LimitError](err); ok {
			return limitRefusal(le)
		}
		return storeFault("create forward", err)
	}
	g.adoptForward(s, true)
	g.audit(ctx, who.user, "forward", s.ID, r.RemoteAddr, label)
	writeJSON(w, 201, forwardJSON{ID: s.ID, Name: req.Name, URL: g.appURL(r, s.ID) + "/", Secret: secret})
	return nil
}

// forwardTunnel is the node's end of a forward: a WebSocket carrying
// yamux, on which the gateway opens a stream per connection to the app.
// GET /api/v1/forwards/{id}/tunnel, the owner's token, the secret.
func (g *Gateway) forwardTunnel(w http.ResponseWriter, r *http.Request, who identity) error {
	s, err := g.ownSession(r, who, false)
	if err != nil {
		return err
	}
	if !isForward(s) {
		return apiErr(404, "no_session", "no such forward")
	}
	sum := sha256.Sum256([]byte(r.Header.Get(ForwardSecretHeader)))
	want, _ := hex.DecodeString(s.BackendRef)
	if subtle.ConstantTimeCompare(sum[:], want) != 1 {
		g.log.WarnContext(r.Context(), "refused: forward tunnel with a wrong secret", "session", s.ID, "user", who.user, "remote_addr", r.RemoteAddr)
		return apiErr(403, "bad_secret", "this tunnel's secret does not match the forward")
	}
	if s.State != session.Starting && s.State != session.Ready {
		return apiErr(410, "forward_ended", fmt.Sprintf("this forward is %s: %s", s.State, s.Reason))
	}
	if !isWebSocket(r) {
		return apiErr(400, "not_websocket", "the tunnel is a WebSocket")
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{})
	if err != nil {
		return nil // Accept has answered
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	// Frames gathered into fewer messages (forward.Coalesce); the node's
	// pings held to a rate, for yamux answers each in a goroutine
	// (forward.GuardPings).
	nc := forward.GuardPings(forward.Coalesce(websocket.NetConn(ctx, c, websocket.MessageBinary)), func() {
		g.log.WarnContext(ctx, "refused: forward tunnel's node floods pings; tunnel closed", "session", s.ID, "user", who.user, "remote_addr", r.RemoteAddr)
	})
	mux, err := yamux.Client(nc, forward.MuxConfig())
	if err != nil {
		c.Close(websocket.StatusInternalError, "multiplexer")
		return nil
	}
	defer mux.Close()
	// The node never opens a stream (the gateway opens one per visitor's
	// connection). One it opens would sit in yamux's accept backlog, never
	// read, holding up to a window of the node's bytes here for as long
	// as the tunnel lives: such a node is not ours, and its tunnel ends.
	go func() {
		st, err := mux.AcceptStream()
		if err != nil {
			return // the tunnel closed
		}
		st.Close()
		g.log.WarnContext(ctx, "refused: forward tunnel's node opened a stream; tunnel closed", "session", s.ID, "user", who.user, "remote_addr", r.RemoteAddr)
		mux.Close()
	}()
	g.fwd.mu.Lock()
	_, known := g.fwd.labelOf[s.ID]
	g.fwd.mu.Unlock()
	if !known {
		// Made through another gateway, or its tunnel moved here from
		// one (gone, or the balancer chose this one): held here now. A
		// forward stopped meanwhile is caught below.
		g.adoptForward(s, false)
	}
	g.fwd.mu.Lock()
	t := &tunnel{mux: mux, slots: make(chan struct{}, g.cfg.Forward.MaxStreams), limit: g.fwd.limits[s.ID]}
	old := g.fwd.tunnels[s.ID]
	g.fwd.tunnels[s.ID] = t
	delete(g.fwd.down, s.ID)
	g.fwd.mu.Unlock()
	if old != nil {
		// The same node dialling again before the gateway saw the old
		// tunnel break: the new one is the live one.
		old.mux.Close()
	}
	g.dropForwardTransports(s.ID)
	here := forwardEndpointPrefix + s.ID + "@" + g.peerAddr()
	if _, err := g.cfg.Store.UpdateSession(ctx, s.ID, func(s *session.Session) error {
		if s.State != session.Starting && s.State != session.Ready {
			return errForwardEnded
		}
		s.Endpoints = map[string]string{contract.ConnApp: here}
		if s.State == session.Ready {
			return nil
		}
		return s.Move(session.Ready, "", g.now())
	}); err != nil {
		if errors.Is(err, errForwardEnded) {
			// Stopped between the check above and now.
			g.dropForward(s.ID)
			c.Close(websocket.StatusPolicyViolation, "forward ended")
			return nil
		}
		g.log.ErrorContext(ctx, "forward ready", "session", s.ID, "error", err)
	}
	g.publish(peerMsg{Changed: s.ID})
	g.log.InfoContext(ctx, "forward tunnel up", "session", s.ID, "user", who.user, "remote_addr", r.RemoteAddr)
	// The tunnel is let in by the owner's token: revoking it, removing
	// the user or stopping the forward closes the tunnel.
	defer g.track(viewerTag{Session: s.ID, Owner: s.Owner, User: who.user, Login: who.login, Token: who.token, Mode: session.Control,
		Expires: who.until, proof: who.proof}, cancel)()
	select {
	case <-mux.CloseChan():
	case <-ctx.Done():
	}
	mux.Close()
	c.Close(websocket.StatusGoingAway, "tunnel closed")
	g.fwd.mu.Lock()
	last := g.fwd.tunnels[s.ID] == t
	if last {
		delete(g.fwd.tunnels, s.ID)
		if _, ok := g.fwd.labelOf[s.ID]; ok {
			g.fwd.down[s.ID] = g.now()
		}
	}
	g.fwd.mu.Unlock()
	bg := context.WithoutCancel(ctx)
	if last {
		// No longer held here, unless it has moved on already.
		if _, err := g.cfg.Store.UpdateSession(bg, s.ID, func(s *session.Session) error {
			if s.Endpoints[contract.ConnApp] == here {
				s.Endpoints = map[string]string{contract.ConnApp: forwardEndpointPrefix + s.ID}
			}
			return nil
		}); err != nil && !errors.Is(err, store.ErrNotFound) {
			g.log.WarnContext(bg, "forward tunnel down: record it", "session", s.ID, "error", err)
		}
	}
	g.log.InfoContext(bg, "forward tunnel down", "session", s.ID, "user", who.user)
	return nil
}

var errForwardEnded = errors.New("the forward has ended")

// forwardUp reports whether forward id's tunnel is connected here or,
// as the store says, to another gateway.
func (g *Gateway) forwardUp(ctx context.Context, id string) (bool, error) {
	g.fwd.mu.Lock()
	_, up := g.fwd.tunnels[id]
	g.fwd.mu.Unlock()
	if up || !g.lease.shared() {
		return up, nil
	}
	s, err := g.cfg.Store.GetSession(ctx, id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	_, holder, _ := tunnelHolder(s.Endpoints[contract.ConnApp])
	return holder != "" && holder != g.peerAddr() && (s.State == session.Starting || s.State == session.Ready), nil
}

var errTunnelDown = errors.New("the forward's tunnel is not connected (the node may be reconnecting)")

// dialTunnel opens a stream to forward id's app through its tunnel.
func (g *Gateway) dialTunnel(ctx context.Context, id string) (net.Conn, error) {
	g.fwd.mu.Lock()
	t := g.fwd.tunnels[id]
	g.fwd.mu.Unlock()
	if t == nil {
		return nil, errTunnelDown
	}
	select {
	case t.slots <- struct{}{}:
	default:
		return nil, fmt.Errorf("forward %s: %d connections open, the most allowed", id, cap(t.slots))
	}
	st, err := t.mux.OpenStream()
	if err != nil {
		<-t.slots
		return nil, fmt.Errorf("forward %s: open stream: %w", id, err)
	}
	return &tunnelConn{Conn: st, t: t}, nil
}

// tunnelConn is one stream to a forward's app: it frees its slot when
// closed and spends the forward's bandwidth.
type tunnelConn struct {
	net.Conn
	t    *tunnel
	once sync.Once
}

func (c *tunnelConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.t.limit != nil && n > 0 {
		c.t.limit.wait(n)
	}
	return n, err
}

func (c *tunnelConn) Write(p []byte) (int, error) {
	if c.t.limit != nil {
		c.t.limit.wait(len(p))
	}
	return c.Conn.Write(p)
}

func (c *tunnelConn) Close() error {
	c.once.Do(func() { <-c.t.slots })
	// A yamux stream's Close is a half-close: a Read blocked on it (the
	// proxy's copy of a response the visitor left) would wait for the
	// app. The deadline ends it now.
	c.Conn.SetDeadline(time.Now())
	return c.Conn.Close()
}

// byteLimit is a token bucket of bytes: wait spends n, sleeping as long as
// the rate requires. One second's worth may go in a burst.
type byteLimit struct {
	mu     sync.Mutex
	rate   float64 // bytes per second
	tokens float64
	last   time.Time
}

func newByteLimit(rate int64) *byteLimit {
	return &byteLimit{rate: float64(rate), tokens: float64(rate), last: time.Now()}
}

func (l *byteLimit) wait(n int) {
	l.mu.Lock()
	now := time.Now()
	l.tokens = min(l.rate, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	l.tokens -= float64(n)
	var d time.Duration
	if l.tokens < 0 {
		d = time.Duration(-l.tokens / l.rate * float64(time.Second))
	}
	l.mu.Unlock()
	if d > 0 {
		time.Sleep(d)
	}
}

// forwardJanitor ends forwards whose tunnel stayed down past the grace.
func (g *Gateway) forwardJanitor() {
	defer g.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-t.C:
		}
		now := g.now()
		var gone []string
		g.fwd.mu.Lock()
		for id, since := range g.fwd.down {
			if now.Sub(since) > g.cfg.Forward.Grace {
				gone = append(gone, id)
			}
		}
		g.fwd.mu.Unlock()
		for _, id := range gone {
			if up, err := g.forwardUp(g.ctx, id); err != nil || up {
				// Held by another gateway now, whose janitor it is; or
				// the store does not say: the next tick asks again.
				if up {
					g.fwd.mu.Lock()
					delete(g.fwd.down, id)
					g.fwd.mu.Unlock()
				}
				continue
			}
			if err := g.Stop(g.ctx, "", id, fmt.Sprintf("its tunnel was down for %s", g.cfg.Forward.Grace), ""); err != nil {
				g.log.WarnContext(g.ctx, "end a forward whose tunnel is down", "session", id, "error", err)
			}
		}
	}
}

// reapForwards, the leader's, ends the forwards among live whose tunnel
// is held nowhere living and has not come back for the grace (and
// forwardReapMargin more: a gateway that saw the tunnel go down ends it
// first): their
// gateway went (killed, or shut down) and their node is gone too, so no
// gateway's forwardJanitor would ever end them. Held nowhere living is:
// the store names a holder and nothing answers at its address (a holder
// that only lost the store still answers there, and keeps its forwards;
// one restarting comes back within the grace), or it names none and this
// gateway did not see it go down (its own forwardJanitor's). The times are
// this leader's own: visitors of a dead URL keep LastSeen fresh, so it
// cannot say.
const forwardReapMargin = 10 * time.Second

func (g *Gateway) reapForwards(live []*session.Session, now time.Time) {
	if !g.lease.shared() {
		return // one gateway: its forwardJanitor has every tunnel
	}
	alive := map[string]bool{} // holder → answers, asked once a tick
	orphans := map[string]time.Time{}
	for _, s := range live {
		if !isForward(s) {
			continue
		}
		_, holder, _ := tunnelHolder(s.Endpoints[contract.ConnApp])
		g.fwd.mu.Lock()
		_, here := g.fwd.tunnels[s.ID]
		_, down := g.fwd.down[s.ID]
		since, seen := g.fwd.orphans[s.ID]
		g.fwd.mu.Unlock()
		if here || down || holder == g.peerAddr() {
			continue // ours: forwardJanitor
		}
		if holder != "" {
			up, asked := alive[holder]
			if !asked {
				c, err := (&net.Dialer{Timeout: 2 * time.Second}).DialContext(g.ctx, "tcp", holder)
				if up = err == nil; up {
					c.Close()
				}
				alive[holder] = up
			}
			if up {
				continue
			}
		}
		if !seen {
			since = now
		}
		orphans[s.ID] = since
		if now.Sub(since) <= g.cfg.Forward.Grace+forwardReapMargin {
			continue
		}
		reason := fmt.Sprintf("its tunnel has been down for over %s with its gateway (%s) gone", now.Sub(since).Round(time.Second), cmp.Or(holder, "shut down"))
		if err := g.Stop(g.ctx, "", s.ID, reason, ""); err != nil && g.ctx.Err() == nil {
			g.log.WarnContext(g.ctx, "end a forward whose gateway is gone", "session", s.ID, "holder", holder, "error", err)
		}
	}
	g.fwd.mu.Lock()
	g.fwd.orphans = orphans
	g.fwd.mu.Unlock()
}
