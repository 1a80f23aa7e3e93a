package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/backend"
	"github.com/airlock-hpc/airlock/internal/portal"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/registration"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// logBuffer collects a gateway's log for a test to search, and passes it
// on to the test's output.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	out io.Writer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.buf.Write(p)
	l.mu.Unlock()
	return l.out.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// waitLog waits until the log has a line holding every one of parts.
func (l *logBuffer) waitLog(t *testing.T, parts ...string) {
	t.Helper()
	err := realtest.WaitFor(10*time.Second, func() error {
	lines:
		for line := range strings.SplitSeq(l.String(), "\n") {
			for _, p := range parts {
				if !strings.Contains(line, p) {
					continue lines
				}
			}
			return nil
		}
		return errors.New("not logged")
	})
	if err != nil {
		t.Fatalf("no log line with %q; the log:\n%s", parts, l.String())
	}
}

// captureLog makes cfg log to a buffer the test can read.
func captureLog(t *testing.T, cfg *Config) *logBuffer {
	lb := &logBuffer{out: t.Output()}
	cfg.Logger = slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return lb
}

// faultyBackend is a real backend whose Start, or Stop of chosen
// sessions, fails as a broken scheduler would, with words that belong in
// the log only.
type faultyBackend struct {
	backend.Backend
	startErr atomic.Value // error; nil: Start works
	stopFail sync.Map     // session id → struct{}: its Stop fails
}

// errBackendDetail is what a failing backend says: host paths and a
// scheduler's own words, which a user must not see.
var errBackendDetail = errors.New("sbatch: error: /var/spool/slurmctld/secret-partition: permission denied")

func (b *faultyBackend) Start(ctx context.Context, j backend.Job) (string, error) {
	if err, _ := b.startErr.Load().(error); err != nil {
		return "", err
	}
	return b.Backend.Start(ctx, j)
}

func (b *faultyBackend) Stop(ctx context.Context, id, ref string) error {
	if _, ok := b.stopFail.Load(id); ok {
		return errBackendDetail
	}
	return b.Backend.Stop(ctx, id, ref)
}

func (f *faultyStore) UpdateSession(ctx context.Context, id string, fn func(*session.Session) error) (*session.Session, error) {
	if f.failing("UpdateSession") {
		return nil, errStoreDown
	}
	return f.Store.UpdateSession(ctx, id, fn)
}

func (f *faultyStore) ListSessions(ctx context.Context, fl store.SessionFilter) ([]*session.Session, error) {
	if f.failing("ListSessions") {
		return nil, errStoreDown
	}
	return f.Store.ListSessions(ctx, fl)
}

func (f *faultyStore) ListTokens(ctx context.Context, user string) ([]session.Token, error) {
	if f.failing("ListTokens") {
		return nil, errStoreDown
	}
	return f.Store.ListTokens(ctx, user)
}

func (f *faultyStore) ListShares(ctx context.Context, id string) ([]session.Share, error) {
	if f.failing("ListShares") {
		return nil, errStoreDown
	}
	return f.Store.ListShares(ctx, id)
}

// faultyGateway is a gateway whose store and backend can be made to fail,
// logging to a buffer.
func faultyGateway(t *testing.T, mod func(*Config), users ...string) (*testGateway, *faultyStore, *faultyBackend, *logBuffer) {
	var (
		fs *faultyStore
		fb *faultyBackend
		lb *logBuffer
	)
	tg := startGateway(t, "", func(c *Config) {
		fs = &faultyStore{Store: c.Store}
		c.Store = fs
		fb = &faultyBackend{Backend: c.Backend}
		c.Backend = fb
		lb = captureLog(t, c)
		if mod != nil {
			mod(c)
		}
	}, users...)
	return tg, fs, fb, lb
}

// TestLaunchFailureCauseOnlyLogged: a backend that cannot start a session
// is a 500 whose cause (a scheduler's words, host paths) is in the log, not
// in the answer nor in the session's reason; and when the store then
// cannot mark the session ended, the log says so. On main the answer
// carried the backend's error and the store's was dropped.
func TestLaunchFailureCauseOnlyLogged(t *testing.T) {
	tg, fs, fb, lb := faultyGateway(t, nil, "alice")
	alice := tg.client().loginToken("alice")
	fb.startErr.Store(errBackendDetail)

	var e struct {
		Error struct{ Code, Message string }
	}
	code, body := alice.do("POST", "/api/v1/sessions", map[string]any{"profile": "app"}, &e)
	if code != 500 || e.Error.Code != "launch_failed" {
		t.Fatalf("launch with a failing backend: %d %s", code, body)
	}
	if strings.Contains(body, "secret-partition") || strings.Contains(body, "sbatch") {
		t.Errorf("the answer shows the backend's error: %s", body)
	}
	lb.waitLog(t, "launch failed", "secret-partition")
	var list struct{ Sessions []sessionOut }
	if code, body := alice.do("GET", "/api/v1/sessions", nil, &list); code != 200 || len(list.Sessions) != 1 {
		t.Fatalf("sessions: %d %s", code, body)
	}
	if s := list.Sessions[0]; s.State != "ended" || strings.Contains(s.Reason, "secret-partition") {
		t.Errorf("the failed session: %+v; want ended, without the backend's words", s)
	}

	fs.fail.Store("UpdateSession")
	defer fs.fail.Store("")
	if code, body := alice.do("POST", "/api/v1/sessions", map[string]any{"profile": "app"}, nil); code != 500 {
		t.Fatalf("launch with a failing backend and store: %d %s", code, body)
	}
	lb.waitLog(t, "mark a failed launch ended", "database is locked")
}

// TestStopAllReportsFailures: stop-all stops what it can and says which
// sessions it could not stop (a 5xx cause only in the log). On main it
// reported every session as stopping whatever failed.
func TestStopAllReportsFailures(t *testing.T) {
	tg, _, fb, lb := faultyGateway(t, nil, "alice", "admin")
	alice := tg.client().loginToken("alice")
	ok := alice.start(map[string]any{"profile": "app"})
	stuck := alice.start(map[string]any{"profile": "app"})
	alice.waitState(ok.ID, "ready")
	alice.waitState(stuck.ID, "ready")
	fb.stopFail.Store(stuck.ID, struct{}{})
	t.Cleanup(func() { fb.stopFail.Delete(stuck.ID) })

	var rep struct {
		Stopping int
		Failed   []struct {
			Session string
			Error   struct{ Code, Message string }
		}
	}
	admin := tg.client().loginToken("admin")
	code, body := admin.do("POST", "/api/v1/admin/stop-all", nil, &rep)
	if code != 202 || rep.Stopping != 1 || len(rep.Failed) != 1 || rep.Failed[0].Session != stuck.ID {
		t.Fatalf("stop-all with one session that cannot be stopped: %d %s", code, body)
	}
	if strings.Contains(body, "secret-partition") {
		t.Errorf("the report shows the backend's error: %s", body)
	}
	lb.waitLog(t, "stop-all", stuck.ID, "secret-partition")
	alice.waitState(ok.ID, "ended")
}

// TestJanitorReportsFailures: the janitor says when the store cannot list
// sessions (so idle ones are not being ended) and when stopping an idle
// session fails. On main both were silent.
func TestJanitorReportsFailures(t *testing.T) {
	tg, fs, fb, lb := faultyGateway(t, func(c *Config) {
		idle := appProfile(t)
		idle.Name, idle.IdleTimeout = "idle", time.Second
		c.Profiles = append(c.Profiles, idle)
	}, "alice")
	fs.fail.Store("ListSessions")
	lb.waitLog(t, "janitor", "list ready sessions", "database is locked")
	fs.fail.Store("")
	lb.waitLog(t, "janitor", "lists sessions again")

	alice := tg.client().loginToken("alice")
	s := alice.start(map[string]any{"profile": "idle"})
	fb.stopFail.Store(s.ID, struct{}{})
	t.Cleanup(func() { fb.stopFail.Delete(s.ID) })
	lb.waitLog(t, "janitor: stop session", s.ID, "secret-partition")
}

// TestTouchFaultAndForget: a viewer's activity the store could not record
// is logged, and an ended session leaves nothing in the gateway's
// lastTouch map. On main the error was dropped and the map only grew.
func TestTouchFaultAndForget(t *testing.T) {
	tg, fs, _, lb := faultyGateway(t, nil, "alice")
	alice := tg.client().loginToken("alice")
	s := alice.launch("app")
	fs.fail.Store("UpdateSession")
	if code, body := alice.do("GET", s.Connect["app"]+"x", nil, nil); code != 200 {
		t.Fatalf("app with the store failing writes: %d %s", code, body)
	}
	fs.fail.Store("")
	lb.waitLog(t, "record viewer activity", s.ID, "database is locked")

	if code, body := alice.do("DELETE", "/api/v1/sessions/"+s.ID, nil, nil); code != 202 {
		t.Fatalf("stop: %d %s", code, body)
	}
	alice.waitState(s.ID, "ended")
	// The store says ended a moment before the exit's handler forgets the
	// session: wait for that, with a deadline.
	if err := realtest.WaitFor(5*time.Second, func() error {
		tg.g.mu.Lock()
		_, left := tg.g.lastTouch[s.ID]
		tg.g.mu.Unlock()
		if left {
			return fmt.Errorf("session %s ended but is still in lastTouch", s.ID)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

// TestPruneTouches: entries older than touchEvery go, newer ones stay.
func TestPruneTouches(t *testing.T) {
	now := time.Unix(1e9, 0)
	g := &Gateway{now: func() time.Time { return now }, lastTouch: map[string]time.Time{
		"s-old": now.Add(-touchEvery), "s-new": now.Add(-time.Second),
	}}
	g.pruneTouches()
	if _, ok := g.lastTouch["s-old"]; ok || len(g.lastTouch) != 1 {
		t.Errorf("after pruning: %v, want only s-new", g.lastTouch)
	}
}

// TestListFaultIsTryAgain: a store that cannot list tokens, shares or
// sessions makes the page or the API answer 503 "try again", not a page
// with an empty list (the tokens or shares look gone) nor a 500. On main
// the home page showed no tokens, the session page no shares, and the
// session list was a 500.
func TestListFaultIsTryAgain(t *testing.T) {
	p, err := portal.New()
	if err != nil {
		t.Fatal(err)
	}
	tg, fs, _, _ := faultyGateway(t, func(c *Config) { c.Portal = p }, "alice")
	alice := tg.client().loginCookie("alice")
	s := &session.Session{ID: "s-a11ce0000009", Owner: "alice", Profile: "app", State: session.Queued, Backend: "local"}
	if err := tg.cfg.Store.CreateSession(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ method, path string }{
		{"ListTokens", "/"},
		{"ListShares", "/sessions/" + s.ID},
		{"ListSessions", "/"},
		{"ListSessions", "/api/v1/sessions"},
		{"ListTokens", "/api/v1/tokens"},
		{"ListShares", "/api/v1/sessions/" + s.ID + "/shares"},
	} {
		fs.fail.Store(tc.method)
		req, _ := http.NewRequest("GET", tg.url+tc.path, nil)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		resp, err := alice.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
			t.Errorf("GET %s with %s failing: %d (Retry-After %q), want 503 with Retry-After", tc.path, tc.method, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	fs.fail.Store("")
}

// watchBackend's Watch runs until the gateway cancels it, counting the
// watchers that run.
type watchBackend struct {
	backend.Backend
	running atomic.Int32
}

func (b *watchBackend) Watch(ctx context.Context, id, ref string) (<-chan backend.Event, error) {
	b.running.Add(1)
	defer b.running.Add(-1)
	<-ctx.Done()
	ch := make(chan backend.Event)
	close(ch)
	return ch, nil
}

// TestWatchDuringClose: Close waits for a watcher that started before it.
// On main watch added to the WaitGroup after releasing the lock that
// checked closed, so Close's Wait could start first and return while the
// watcher ran on; the race detector (make test runs this package with
// -race) reports that Add as racing the Wait every time, since nothing
// orders them.
func TestWatchDuringClose(t *testing.T) {
	be := &watchBackend{}
	for range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		g := &Gateway{cfg: Config{Backend: be}, log: slog.New(slog.DiscardHandler), watching: map[string]context.CancelFunc{},
			ctx: ctx, cancel: cancel, now: time.Now}
		go g.watch("s-1", "ref")
		// Close once watch has checked closed and registered the watcher.
		err := realtest.WaitFor(5*time.Second, func() error {
			g.mu.Lock()
			defer g.mu.Unlock()
			if _, ok := g.watching["s-1"]; !ok {
				return errors.New("not watching yet")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		g.Close()
		g.mu.Lock()
		_, still := g.watching["s-1"]
		g.mu.Unlock()
		if still {
			t.Fatal("Close returned while the watcher ran")
		}
	}
}

// brokenWriter is an audit log file on a full disk.
type brokenWriter struct{}

func (brokenWriter) Write([]byte) (int, error) { return 0, errors.New("no space left on device") }

// TestAuditLogWriteFailureLogged: an audit event the audit log file could
// not take is reported in the gateway's log. On main the write's error was
// dropped.
func TestAuditLogWriteFailureLogged(t *testing.T) {
	tg, _, _, lb := faultyGateway(t, func(c *Config) { c.AuditLog = brokenWriter{} }, "alice")
	tg.client().loginToken("alice")
	lb.waitLog(t, "write the audit log", "no space left on device")
}

// flakyRemote is a remote backend whose Register fails with err.
type flakyRemote struct {
	fakeRemote
	err atomic.Value // error
}

func (f *flakyRemote) Register(context.Context, string, string, net.IP, registration.Registration) (backend.Event, error) {
	return backend.Event{}, f.err.Load().(error)
}

// TestRegistrationFaultIsTryAgain: a registration the backend could not
// check (squeue timed out) is a 503 the runner retries, its cause only
// logged; only the backend's refusal is a final 403. On main every
// Register error was a 403 "refused", so a controller's hiccup ended the
// session.
func TestRegistrationFaultIsTryAgain(t *testing.T) {
	fake := &flakyRemote{}
	var lb *logBuffer
	tg := startGateway(t, "", func(c *Config) {
		c.Backend = fake
		c.RegisterURL = "https://127.0.0.1/"
		lb = captureLog(t, c)
	})
	sid := "s-0123456789ab"
	if err := tg.cfg.Store.CreateSession(context.Background(), &session.Session{ID: sid, Owner: "alice", Profile: "app",
		State: session.Queued, Backend: fake.Name(), BackendRef: "job-1"}); err != nil {
		t.Fatal(err)
	}
	register := func() (int, string) {
		req, _ := http.NewRequest("POST", tg.url+registration.Path(sid), strings.NewReader(`{"event": "ready", "ports": {"console": 5901}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tg.g.registerToken(sid))
		resp, err := tg.client().http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	fake.err.Store(fmt.Errorf("register %s: %w", sid, errors.New("squeue: slurm_load_jobs error: Socket timed out on send/recv")))
	if code, body := register(); code != 503 || strings.Contains(body, "slurm_load_jobs") {
		t.Errorf("registration while the scheduler does not answer: %d %s, want 503 without the scheduler's words", code, body)
	}
	lb.waitLog(t, "slurm_load_jobs")
	fake.err.Store(fmt.Errorf("%w: it came from 10.0.0.9, but job 1 runs on n1", backend.ErrRefused))
	if code, body := register(); code != 403 || !strings.Contains(body, "runs on n1") {
		t.Errorf("registration from the wrong node: %d %s, want 403 saying why", code, body)
	}
}
