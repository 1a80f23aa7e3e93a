package gateway

// Several gateways on one store (issue 18).
//
// Gateways that share a PostgreSQL store serve any session's pages and
// connect paths alike: sessions, logins, tokens and share links are in the
// store, and the keys every ticket and cookie derive from come from it too
// (shareFiles). What must not run on every gateway is the background work
// that acts on sessions: following runners (the backend's poller),
// reconciling the backend with the store, and ending idle and single-shot
// sessions. Run N times it would poll the scheduler N times, append every
// "ended" to the audit log N times, and race stops. So it runs on the one
// gateway holding the store's "background" lease, renewed every ttl/3; if
// that gateway dies, the lease expires and another takes it within about
// ttl, adopts every live session and carries on.
//
// A gateway leads only while it is sure no one else can: from the moment
// it asked for the lease until ttl*4/5 after, so clocks a little out of
// step (the lease's expiry is written with the holder's clock) do not
// give two leaders. A store fault renews nothing: the lead lapses, and a
// gateway that cannot reach the store stops acting on sessions rather
// than act beside another.
//
// Work that belongs to one gateway stays on each: its viewers, tunnels,
// recordings, password file. A viewer's activity reaches the leader
// through the session's LastSeen, which every gateway refreshes for the
// sessions it has viewers on (heartbeat) more often than the single-shot
// grace, so the leader does not end a session watched elsewhere.

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// backgroundLease names the lease the background work runs under.
const backgroundLease = "background"

// lease is this gateway's part in the background lease.
type lease struct {
	l      store.Leaser // nil: the store is this gateway's alone, and it always leads
	holder string
	ttl    time.Duration
	// until is when this gateway's lead lapses (unix nanoseconds, wall
	// clock); 0: it does not lead.
	until atomic.Int64
	// crashed is for tests: Close leaves the lease to expire, as a killed
	// gateway would.
	crashed atomic.Bool
	mu      sync.Mutex // serialises take
}

// newLease: the lease is taken only on a store other gateways may share
// and with a remote backend. The local backend's runners are children of
// this host, which no other gateway could follow: one gateway on the
// store, which always leads.
func newLease(st store.Store, remote bool, holder string, ttl time.Duration) *lease {
	l, _ := st.(store.Leaser)
	if !remote {
		l = nil
	}
	if holder == "" {
		host, _ := os.Hostname()
		b := make([]byte, 4)
		rand.Read(b)
		holder = fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b))
	}
	return &lease{l: l, holder: holder, ttl: cmp.Or(ttl, 15*time.Second)}
}

// shared reports whether other gateways may share the store. A nil lease
// (a Gateway made by hand in a test) is a gateway alone.
func (ls *lease) shared() bool { return ls != nil && ls.l != nil }

// leading reports whether this gateway runs the background work now.
func (ls *lease) leading() bool {
	return !ls.shared() || time.Now().UnixNano() < ls.until.Load()
}

// take asks for (or renews) the lease and reports whether this gateway
// leads now. An error leaves until as it was: it lapses on its own.
func (ls *lease) take(ctx context.Context) (bool, error) {
	if ls.l == nil {
		return true, nil
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	asked := time.Now()
	ok, err := ls.l.TakeLease(ctx, backgroundLease, ls.holder, asked, ls.ttl)
	if err != nil {
		return ls.leading(), err
	}
	if ok {
		ls.until.Store(asked.Add(ls.ttl * 4 / 5).UnixNano())
	} else {
		ls.until.Store(0)
	}
	return ok, nil
}

// release gives the lease up at a clean shutdown, so another gateway need
// not wait for it to expire.
func (ls *lease) release() {
	if ls.l == nil || ls.crashed.Load() || ls.until.Load() == 0 {
		return
	}
	ls.until.Store(0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ls.l.ReleaseLease(ctx, backgroundLease, ls.holder)
}

// leaseLoop renews the lease every ttl/3 and, each round, starts or stops
// this gateway's background work as its lead begins or ends.
func (g *Gateway) leaseLoop() {
	defer g.wg.Done()
	defer g.lease.release()
	t := time.NewTicker(g.lease.ttl / 3)
	defer t.Stop()
	was, failing := g.lease.leading(), false
	for {
		// The lead ends at its time even if no renewal has said so yet:
		// the runners are dropped then, not at the next tick.
		lapse := time.NewTimer(time.Hour)
		if u := g.lease.until.Load(); was && u != 0 {
			lapse.Reset(time.Until(time.Unix(0, u)))
		}
		var err error
		select {
		case <-g.ctx.Done():
			lapse.Stop()
			return
		case <-lapse.C:
		case <-t.C:
			// Bounded: a store that hangs rather than refuses must not
			// hold this loop past the lead's end.
			ctx, cancel := context.WithTimeout(g.ctx, g.lease.ttl/5)
			_, err = g.lease.take(ctx)
			cancel()
		}
		lapse.Stop()
		if err != nil && g.ctx.Err() == nil && !failing {
			g.log.ErrorContext(g.ctx, "background lease: the store does not answer; this gateway's lead, if any, lapses", "error", err)
		}
		failing = err != nil
		now := g.lease.leading()
		switch {
		case now && !was:
			g.log.InfoContext(g.ctx, "leading the background work (polling, reconcile, expiry)", "holder", g.lease.holder)
		case !now && was:
			g.log.InfoContext(g.ctx, "no longer leading the background work", "holder", g.lease.holder)
			g.unwatchAll()
		}
		was = now
		if now {
			// Sessions launched through other gateways, or followed by a
			// leader that is gone. Bounded as take is: a hung store must
			// not keep this loop from seeing the lead end.
			ctx, cancel := context.WithTimeout(g.ctx, g.lease.ttl/5)
			err := g.adopt(ctx)
			cancel()
			if err != nil && g.ctx.Err() == nil {
				g.log.WarnContext(g.ctx, "adopt live sessions", "error", err)
			}
		}
	}
}

// launchGrace is how long a session may stay without a runner reference
// on a shared store before the leader ends it: the gateway launching it
// went away between storing it and submitting it.
const launchGrace = 5 * time.Minute

// adopt follows every live session with a runner that this gateway does
// not follow yet. Unlike reattach it ends no session that has no runner
// yet (another gateway may be launching it) unless launchGrace passed,
// and leaves tunnels (forward sessions) to the gateway they reach.
func (g *Gateway) adopt(ctx context.Context) error {
	live, err := g.cfg.Store.ListSessions(ctx, store.SessionFilter{States: []session.State{session.Queued, session.Starting, session.Ready, session.Stopping}})
	if err != nil {
		return fmt.Errorf("list sessions to adopt: %w", err)
	}
	now := g.now()
	for _, s := range live {
		switch {
		case isForward(s):
		case s.BackendRef != "":
			g.watch(s.ID, s.BackendRef)
		case now.Sub(s.Created) > launchGrace:
			if err := g.end(ctx, s.ID, "the gateway launching it went away before the runner started"); err != nil {
				g.log.WarnContext(ctx, "end a session that never started", "session", s.ID, "error", err)
			}
		}
	}
	return nil
}

// unwatchAll stops following every runner: another gateway leads now.
func (g *Gateway) unwatchAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, cancel := range g.watching {
		cancel()
	}
}

// heartbeat refreshes LastSeen of the sessions this gateway has viewers
// on, for the leader, which counts only its own (see above).
func (g *Gateway) heartbeat() {
	if !g.lease.shared() {
		return
	}
	g.mu.Lock()
	ids := make([]string, 0, len(g.viewers))
	for id, n := range g.viewers {
		if n > 0 {
			ids = append(ids, id)
		}
	}
	g.mu.Unlock()
	for _, id := range ids {
		g.touchWithin(id, g.heartbeatEvery())
	}
}

// heartbeatEvery is how fresh heartbeat keeps LastSeen: well inside the
// single-shot grace, and never less often than touchEvery.
func (g *Gateway) heartbeatEvery() time.Duration {
	return max(time.Second, min(touchEvery, g.cfg.Limits.SingleShotGrace/3))
}

// shareFiles makes the files names in dir hold the same on every gateway
// of a shared store: the first gateway's are stored under secret, and a
// gateway holding others (made at its own first start, or before the
// site moved to a shared store) replaces its own with the stored ones.
// Every file must exist. It reports whether it replaced them. With a
// sealing key (store.master_key_file), what goes into the store is
// encrypted under it, so the database alone holds no usable key.
func shareFiles(ctx context.Context, ss store.SharedSecrets, seal []byte, dir, secret string, names ...string) (bool, error) {
	local := map[string][]byte{}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return false, fmt.Errorf("share %s: %w", secret, err)
		}
		local[n] = b
	}
	blob, err := json.Marshal(local)
	if err != nil {
		return false, err
	}
	fresh := blob
	if seal != nil {
		fresh = sealSecret(seal, secret, blob)
	}
	stored, err := ss.SharedSecret(ctx, secret, fresh)
	if err != nil {
		return false, fmt.Errorf("share %s: %w", secret, err)
	}
	if bytes.Equal(stored, fresh) {
		return false, nil
	}
	if string(stored) == keptInFile {
		return false, errKeptInFile
	}
	storedRaw := stored
	if stored, err = openSecret(seal, secret, stored); err != nil {
		return false, fmt.Errorf("share %s: %w", secret, err)
	}
	if bytes.Equal(stored, blob) {
		return false, nil
	}
	if seal != nil && !bytes.HasPrefix(storedRaw, []byte(sealedPrefix)) {
		// With the file, gateways store only sealed values: one in
		// clear was put there before the file was set or by someone
		// with write access to the database, who would choose this
		// gateway's TLS key or CA. Taken only when it changes nothing.
		return false, fmt.Errorf("share %s: the database holds it in clear, not sealed under store.master_key_file, and it differs from this gateway's; "+
			"if the site's gateways shared it before the file was set, delete it with every gateway stopped (DELETE FROM secrets WHERE name = '%s') and the first to start stores its own, sealed", secret, secret)
	}
	var theirs map[string][]byte
	if err := json.Unmarshal(stored, &theirs); err != nil {
		return false, fmt.Errorf("share %s: the stored value: %w", secret, err)
	}
	for _, n := range names {
		if theirs[n] == nil {
			return false, fmt.Errorf("share %s: the stored value lacks %s", secret, n)
		}
	}
	for _, n := range names {
		p := filepath.Join(dir, n)
		tmp := p + ".shared"
		if err := os.WriteFile(tmp, theirs[n], 0o600); err != nil {
			return false, fmt.Errorf("share %s: %w", secret, err)
		}
		if err := os.Rename(tmp, p); err != nil {
			os.Remove(tmp)
			return false, fmt.Errorf("share %s: %w", secret, err)
		}
	}
	return true, nil
}

var errNoSharedSecrets = errors.New("the store keeps no shared secrets")

// sharedFiles is shareFiles on the gateway's store, if it shares secrets.
func (g *Gateway) sharedFiles(ctx context.Context, secret string, names ...string) error {
	if g.secrets == nil {
		return errNoSharedSecrets
	}
	_, err := shareFiles(ctx, g.secrets, g.seal, g.cfg.StateDir, secret, names...)
	return err
}
