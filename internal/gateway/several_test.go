package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/backend/slurm"
	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/rdcleanpath"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
	"github.com/airlock-hpc/airlock/internal/store/postgres"
)

// severalGateway starts one of several gateways on the PostgreSQL
// database dsn, each with a state directory (and so, at first, keys) of
// its own, sessions on the real Slurm test cluster under one job prefix.
func severalGateway(t *testing.T, cl *realtest.Slurm, dsn, prefix, holder string, mod func(*Config)) *testGateway {
	t.Helper()
	stateDir := t.TempDir()
	cfg := testConfig(t, stateDir, 50*time.Millisecond, slog.LevelWarn, "alice")
	cfg.Store.Close() // testConfig's SQLite: this gateway's store is the shared one
	db, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cfg.Store = db
	be, err := slurm.New(slurm.Config{Airlock: realtest.Binary(t), Poll: 300 * time.Millisecond, Env: cl.Env(), JobPrefix: prefix, Logger: cfg.Logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	cfg.Backend = be
	cfg.Profiles = []Profile{desktopProfile()}
	cfg.ReconcileEvery = time.Second
	cfg.Limits.MaxLoad = 1e-9 // not this host's business: sessions run on the cluster
	cfg.LeaseTTL, cfg.LeaseHolder = 2*time.Second, holder
	if mod != nil {
		mod(&cfg)
	}
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	host, _ := os.Hostname()
	cfg.RegisterURL = fmt.Sprintf("https://%s:%d", host, port)
	g, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.readLoad = func() (float64, error) { return 1000, nil }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Serve(ctx, ln) }()
	tg := &testGateway{t: t, g: g, url: fmt.Sprintf("https://127.0.0.1:%d", port), stateDir: stateDir, cancel: cancel, done: done, cfg: cfg}
	t.Cleanup(tg.stop)
	return tg
}

// severalGateways starts one gateway per mod (nil: none) on one new
// PostgreSQL database and the Slurm test cluster, under one job prefix,
// their lease holders named NAME-0, NAME-1, …
func severalGateways(t *testing.T, name string, mods ...func(*Config)) []*testGateway {
	t.Helper()
	cl := realtest.SlurmCluster(t)
	pg := realtest.StartPostgres(t)
	dsn := pg.NewDatabase(t)
	sum := sha256.Sum256([]byte(dsn + t.TempDir()))
	prefix := "airlock" + hex.EncodeToString(sum[:4])
	gws := make([]*testGateway, len(mods))
	for i, mod := range mods {
		gws[i] = severalGateway(t, cl, dsn, prefix, fmt.Sprintf("%s-%d", name, i), mod)
	}
	return gws
}

// behindHAProxy starts Debian's HAProxy in front of gws and returns it as
// a gateway to talk to (with the first one's state directory).
func behindHAProxy(t *testing.T, gws []*testGateway) *testGateway {
	t.Helper()
	backends := make([]string, len(gws))
	for i, tg := range gws {
		backends[i] = strings.TrimPrefix(tg.url, "https://")
	}
	return &testGateway{t: t, url: "https://" + realtest.StartHAProxy(t, backends...), stateDir: gws[0].stateDir}
}

// waitLeader waits until exactly one of gws (nil: stopped) leads the
// background work and returns its index; two leading at once fails t.
func waitLeader(t *testing.T, gws []*testGateway, within time.Duration) int {
	t.Helper()
	leader := -1
	err := realtest.WaitFor(within, func() error {
		leader = -1
		for i, tg := range gws {
			if tg == nil || !tg.g.lease.leading() {
				continue
			}
			if leader >= 0 {
				t.Fatalf("gateways %d and %d both lead the background work", leader, i)
			}
			leader = i
		}
		if leader < 0 {
			return fmt.Errorf("no gateway leads")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return leader
}

// TestSeveralGateways: three gateways on one PostgreSQL and the Slurm test
// cluster. A desktop launched through one is viewed through another (the
// master key the ticket key derives from is common); one gateway leads
// the background work. Killed (its lease left to expire, as a crash
// would), another takes the lead within a few lease lengths, adopts the
// session's runner, keeps it alive while a viewer on a third gateway
// watches it (the heartbeat), and ends it once the viewer left (the
// single-shot expiry) exactly once: one stop, one end in the audit log,
// the job gone.
func TestSeveralGateways(t *testing.T) {
	t.Parallel()
	cl := realtest.SlurmCluster(t)
	realtest.TestUser(t)
	const grace = 3 * time.Second
	gws := severalGateways(t, "gw", slices.Repeat([]func(*Config){func(c *Config) {
		c.Limits.SingleShotGrace = grace
		// Only the broadcast may close a viewer another gateway's
		// revocation took the right of (broadcast.go).
		c.RecheckEvery = time.Hour
	}}, 3)...)
	for i, tg := range gws[1:] {
		if string(tg.g.master) != string(gws[0].g.master) {
			t.Fatalf("gateway %d has a master key of its own", i+1)
		}
		if !tg.g.cert.Leaf.Equal(gws[0].g.cert.Leaf) {
			t.Fatalf("gateway %d has a self-signed certificate of its own", i+1)
		}
	}
	lead := waitLeader(t, gws, 10*time.Second)
	launchVia, viewVia := gws[(lead+1)%3], gws[(lead+2)%3]

	c := launchVia.client().loginToken("alice")
	s := c.start(map[string]any{"profile": "desktop", "persistent": false})
	c.waitStateFor(s.ID, "ready", 90*time.Second)
	st, err := launchVia.g.cfg.Store.GetSession(t.Context(), s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.Persistent {
		t.Fatal("the session is persistent; the test needs a single-shot one")
	}
	// The leader, not the gateway it was launched through, follows it.
	err = realtest.WaitFor(10*time.Second, func() error {
		gws[lead].g.mu.Lock()
		_, ok := gws[lead].g.watching[s.ID]
		gws[lead].g.mu.Unlock()
		launchVia.g.mu.Lock()
		_, also := launchVia.g.watching[s.ID]
		launchVia.g.mu.Unlock()
		if !ok || also {
			return fmt.Errorf("followed by the leader: %v, by the launching gateway: %v", ok, also)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Viewed through another gateway, with the same bearer token.
	viewer := *c
	viewer.tg = viewVia
	rfb := consoleThrough(t, &viewer, s.ID)

	// A token revoked through one gateway: the viewer it let in through
	// another is closed, and that gateway refuses the token, as soon as
	// the broadcast arrives (milliseconds; the revoking request does not
	// wait for it). Its cache is warm: without the broadcast it would take
	// the token for two seconds more, its viewer for an hour.
	var made struct{ Token, ID string }
	if code, body := c.do("POST", "/api/v1/tokens", map[string]any{"name": "script"}, &made); code != 201 {
		t.Fatalf("token: %d %s", code, body)
	}
	script := viewer
	script.token = made.Token
	rfb2 := consoleThrough(t, &script, s.ID)
	if code, body := script.do("GET", "/api/v1/sessions/"+s.ID, nil, nil); code != 200 {
		t.Fatalf("the script's token on the viewing gateway: %d %s", code, body)
	}
	if code, body := c.do("DELETE", "/api/v1/tokens/"+made.ID, nil, nil); code != 204 {
		t.Fatalf("revoke the token: %d %s", code, body)
	}
	revoked := time.Now()
	err = realtest.WaitFor(time.Second, func() error {
		if code, body := script.do("GET", "/api/v1/sessions/"+s.ID, nil, nil); code != 401 {
			return fmt.Errorf("the revoked token's request on another gateway: %d %s, want 401", code, body)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the other gateway refuses the revoked token %s after the revocation", time.Since(revoked).Round(time.Millisecond))
	closed := make(chan error, 1)
	go func() {
		for {
			if err := rfb2.Update(false); err != nil {
				closed <- err
				return
			}
		}
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the revoked token's viewer on another gateway is still open after 5 s")
	}
	rfb2.Close()

	// The leader dies without a word.
	killed := time.Now()
	gws[lead].g.lease.crashed.Store(true)
	gws[lead].stop()
	gws[lead] = nil
	next := waitLeader(t, gws, 5*2*time.Second)
	if gws[next] == nil {
		t.Fatal("a stopped gateway leads")
	}
	t.Logf("gateway %d leads %s after the leader's death (lease 2s)", next, time.Since(killed).Round(10*time.Millisecond))
	// The viewer on the third gateway keeps the session alive past the
	// grace, though the leader has no viewer of its own.
	err = realtest.WaitFor(30*time.Second, func() error {
		cur, err := gws[next].g.cfg.Store.GetSession(t.Context(), s.ID)
		if err != nil {
			return err
		}
		if cur.State != session.Ready {
			t.Fatalf("a session viewed through another gateway went %s (%s)", cur.State, cur.Reason)
		}
		if !cur.LastSeen.After(killed.Add(2 * grace)) {
			return fmt.Errorf("LastSeen %s, not yet past the grace after the kill", cur.LastSeen)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rfb.Close()

	// The new leader ends it, and its poller sees the job go.
	ended := c.waitStateFor(s.ID, "ended", 60*time.Second)
	if ended.Reason != "single-shot session: the last viewer left" {
		t.Fatalf("ended: %q", ended.Reason)
	}
	// The "ended" entry follows the state's change in the store (one
	// after the other, not in one transaction): wait for it, then check
	// that nothing was done twice.
	count := map[string]int{}
	err = realtest.WaitFor(10*time.Second, func() error {
		events, err := gws[next].g.cfg.Store.ListAudit(t.Context(), store.AuditFilter{Session: s.ID})
		if err != nil {
			return err
		}
		count = map[string]int{}
		for _, e := range events {
			count[e.Action]++
		}
		if count["ended"] == 0 {
			return fmt.Errorf("audit of the session: %v, no ended yet", count)
		}
		return nil
	})
	if err != nil || count["stop"] != 1 || count["ended"] != 1 {
		t.Fatalf("audit of the session: %v (%v); want one stop and one ended", count, err)
	}
	err = realtest.WaitFor(30*time.Second, func() error {
		if j := slurmJob(t, cl, st.BackendRef); j != "" && j[:len("CANCELLED")] != "CANCELLED" && j[:len("COMPLETED")] != "COMPLETED" {
			return fmt.Errorf("job after the end: %s", j)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSeveralGatewaysBehindHAProxy: two gateways on one PostgreSQL behind
// Debian's HAProxy (TCP mode: TLS goes through to the gateways, which
// share one self-signed certificate). A user who only knows the balancer's
// address logs in, launches and views a desktop; the gateway carrying the
// viewer is killed; the viewer's one reconnection reaches the other
// gateway and sees the desktop again; nothing is lost: the session is
// ready throughout and is stopped through the balancer.
func TestSeveralGatewaysBehindHAProxy(t *testing.T) {
	t.Parallel()
	realtest.TestUser(t)
	gws := severalGateways(t, "gw", nil, nil)
	lb := behindHAProxy(t, gws)
	c := lb.client().loginToken("alice")
	s := c.start(map[string]any{"profile": "desktop", "persistent": true})
	c.waitStateFor(s.ID, "ready", 90*time.Second)
	rfb := consoleThrough(t, c, s.ID)

	carrier := -1
	for i, tg := range gws {
		tg.g.mu.Lock()
		if tg.g.viewers[s.ID] > 0 {
			carrier = i
		}
		tg.g.mu.Unlock()
	}
	if carrier < 0 {
		t.Fatal("no gateway counts the viewer")
	}
	gws[carrier].g.lease.crashed.Store(true)
	gws[carrier].stop()
	if err := rfb.Update(false); err == nil {
		t.Fatal("the viewer's connection outlived its gateway")
	}
	rfb.Close()

	// One reconnection, through the balancer, reaches the other gateway.
	other := gws[1-carrier]
	rfb = consoleThrough(t, c, s.ID)
	defer rfb.Close()
	other.g.mu.Lock()
	n := other.g.viewers[s.ID]
	other.g.mu.Unlock()
	if n != 1 {
		t.Fatalf("the surviving gateway counts %d viewers, want 1", n)
	}
	if got := c.waitStateFor(s.ID, "ready", time.Second); got.State != "ready" {
		t.Fatalf("after the kill the session is %s", got.State)
	}
	if code, body := c.do("DELETE", "/api/v1/sessions/"+s.ID, nil, nil); code != 202 {
		t.Fatalf("stop through the balancer: %d %s", code, body)
	}
	// The survivor leads by now or within two lease lengths, follows the
	// job and sees it end.
	c.waitStateFor(s.ID, "ended", 60*time.Second)
}

// TestLeadLapsesWithoutStore: a leader whose database stops answering
// stops leading within the lease's length, so that it does not act on
// sessions beside a gateway that took the lease meanwhile; it follows no
// runner any more.
func TestLeadLapsesWithoutStore(t *testing.T) {
	t.Parallel()
	cl := realtest.SlurmCluster(t)
	realtest.TestUser(t)
	pg := realtest.StartPostgres(t)
	dsn := pg.NewDatabase(t)
	tg := severalGateway(t, cl, dsn, "airlocklapse", "gw-0", nil)
	if !tg.g.lease.leading() {
		t.Fatal("a gateway alone on the database does not lead")
	}
	pg.Stop()
	stopped := time.Now()
	err := realtest.WaitFor(2*time.Second, func() error {
		if tg.g.lease.leading() {
			return fmt.Errorf("still leading")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v %s after the database stopped (lease 2s)", err, time.Since(stopped).Round(time.Millisecond))
	}
	t.Logf("the lead lapsed %s after the database stopped (lease 2s)", time.Since(stopped).Round(time.Millisecond))
	err = realtest.WaitFor(2*time.Second, func() error {
		tg.g.mu.Lock()
		defer tg.g.mu.Unlock()
		if len(tg.g.watching) > 0 {
			return fmt.Errorf("still following %d runners", len(tg.g.watching))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSeveralGatewaysRDPTicketOnce: with one master key a browser RDP
// ticket from one gateway is taken by any (the page may be balanced to
// another), and so it must still work once across them: spent at the
// second gateway, it is refused when brought back to the first, whose own
// memory never saw it (only the store's record can refuse it there).
func TestSeveralGatewaysRDPTicketOnce(t *testing.T) {
	needRDPTools(t)
	t.Parallel()
	realtest.TestUser(t)
	withRDP := func(c *Config) {
		p := desktopProfile()
		p.Name, p.RDP, p.Clipboard = "rdpdesk", true, contract.ClipboardNone
		c.Profiles = append(c.Profiles, p)
	}
	gws := severalGateways(t, "gw", withRDP, withRDP)
	a, b := gws[0], gws[1]
	alice := a.client().loginToken("alice")
	atB := *alice
	atB.tg = b
	s := alice.waitStateFor(alice.start(map[string]any{"profile": "rdpdesk"}).ID, "ready", 90*time.Second)
	path := "/rdp/" + s.ID
	cr := realtest.RDPConnectionRequest(1)
	// xrdp starts after the session is ready: fresh tickets until it
	// answers through the second gateway.
	err := realtest.WaitFor(60*time.Second, func() error {
		_, p := rdpWebExchange(t, b, &atB, path, rdpRequest(t, s.ID, rdpTicket(t, alice, s.ID).Ticket, cr))
		if p.Kind() != rdcleanpath.KindResponse {
			return fmt.Errorf("answer %v %+v", p.Kind(), p.Error)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	tk := rdpTicket(t, alice, s.ID).Ticket
	if _, p := rdpWebExchange(t, b, &atB, path, rdpRequest(t, s.ID, tk, cr)); p.Kind() != rdcleanpath.KindResponse {
		t.Fatalf("a ticket from gateway a at gateway b: %v %+v", p.Kind(), p.Error)
	}
	for _, tc := range []struct {
		name string
		tg   *testGateway
		c    *client
	}{{"back at the gateway that issued it", a, alice}, {"again at the gateway that took it", b, &atB}} {
		if _, p := rdpWebExchange(t, tc.tg, tc.c, path, rdpRequest(t, s.ID, tk, cr)); p.Kind() != rdcleanpath.KindGeneralError || p.Error.HTTPStatus != 401 {
			t.Errorf("the spent ticket %s: %v %+v, want HTTP 401", tc.name, p.Kind(), p.Error)
		}
	}
	alice.do("DELETE", "/api/v1/sessions/"+s.ID, nil, nil)
	alice.waitStateFor(s.ID, "ended", 60*time.Second)
}
