package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/backend"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/registration"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
	"github.com/airlock-hpc/airlock/internal/store/postgres"
)

// slurmLike is an Adopter that keeps job names as Slurm does, shared by
// every gateway given it (one cluster): Adopt reads the job's name, then
// renames it, in two steps as the Slurm backend's squeue and scontrol
// are, so two gateways can meet between them. It counts what the gateway
// asked of it.
type slurmLike struct {
	mu    sync.Mutex
	names map[string]string // job id: its name now
	// err, when set, is Adopt's answer before it looks at the job.
	err error
	// entered gets a value as each Adopt has read the name; Adopt then
	// waits for proceed to close before it renames (nil: at once).
	entered chan struct{}
	proceed chan struct{}
	// renamed is called (mu held) after each rename by Adopt.
	renamed  func(jid string)
	adopts   atomic.Int64
	unadopts atomic.Int64
	stops    atomic.Int64
}

func newSlurmLike(jobs ...string) *slurmLike {
	f := &slurmLike{names: map[string]string{}}
	for _, j := range jobs {
		f.names[j] = "ood-airlock-desktop"
	}
	return f
}

// set changes f under its lock (its fields are read by the gateway's
// goroutines).
func (f *slurmLike) set(change func(f *slurmLike)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f)
}

func (f *slurmLike) name(jid string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.names[jid]
}

func (f *slurmLike) Name() string { return "slurm-like" }
func (f *slurmLike) Start(context.Context, backend.Job) (string, error) {
	return "", errors.New("slurm-like: only adopts")
}
func (f *slurmLike) Stop(context.Context, string, string) error { f.stops.Add(1); return nil }
func (f *slurmLike) Watch(ctx context.Context, _, _ string) (<-chan backend.Event, error) {
	ch := make(chan backend.Event)
	go func() { <-ctx.Done(); close(ch) }()
	return ch, nil
}
func (f *slurmLike) Register(context.Context, string, string, net.IP, registration.Registration) (backend.Event, error) {
	return backend.Event{}, nil
}
func (f *slurmLike) Runners(context.Context) (map[string]string, error) { return nil, nil }

func (f *slurmLike) Adopt(ctx context.Context, id, jid, _ string) (backend.Adoption, error) {
	jid = slurmID(jid)
	f.mu.Lock()
	old, ok := f.names[jid]
	ferr := f.err
	f.mu.Unlock()
	if ferr != nil {
		return backend.Adoption{}, ferr
	}
	switch {
	case !ok:
		return backend.Adoption{}, backend.ErrGone
	case strings.HasPrefix(old, "airlock-"):
		return backend.Adoption{}, backend.ErrTaken
	}
	if f.entered != nil {
		f.entered <- struct{}{}
	}
	if f.proceed != nil {
		select {
		case <-f.proceed:
		case <-ctx.Done():
			return backend.Adoption{}, ctx.Err()
		}
	}
	f.mu.Lock()
	f.names[jid] = "airlock-" + id
	f.adopts.Add(1)
	if f.renamed != nil {
		f.renamed(jid)
	}
	f.mu.Unlock()
	return backend.Adoption{Ref: "job:" + jid, Name: old}, nil
}

func (f *slurmLike) Unadopt(_ context.Context, id, jid, name string) error {
	jid = slurmID(jid)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unadopts.Add(1)
	if f.names[jid] == "airlock-"+id {
		f.names[jid] = name
	}
	return nil
}

// slurmID is job id jid as Slurm reads it: a number, so leading zeros
// name the same job.
func slurmID(jid string) string {
	if t := strings.TrimLeft(jid, "0"); t != "" {
		return t
	}
	return "0"
}

// adoptingGateway is a gateway that adopts from be, one account per user
// (so it may adopt at all: root only).
func adoptingGateway(t *testing.T, be backend.Adopter, mod func(*Config)) *testGateway {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("adoption needs a gateway with an account per user (root)")
	}
	return startGateway(t, "", func(c *Config) {
		c.Backend = be
		c.RegisterURL = "https://127.0.0.1/"
		c.RunAs = "{user}"
		if mod != nil {
			mod(c)
		}
	}, "alice", "bob")
}

// TestAdoptOnceAcrossGateways: two gateways on one PostgreSQL asked at
// once to adopt one job, both reaching the scheduler's read of its name
// before either renames it (the window the backend's own lock cannot
// close across processes): one adopts it (201), the other is told it is
// taken (409 job_taken), the job renamed once, one session stored. Before
// the store's claim both answered 201 with a session each for one job.
func TestAdoptOnceAcrossGateways(t *testing.T) {
	adoptOnceAcrossGateways(t, [2]string{"21", "21"})
}

// TestAdoptOnceAcrossGatewaysSpelledTwoWays attacks the claim with
// another spelling of the job's id: Slurm reads "0021" as job 21 (its
// ids are numbers), so a claim named after the spelling let one gateway
// adopt "21" while another adopted "0021", both past the claim into the
// scheduler's read-then-rename window: two sessions, one job. The claim
// must be on the job, not on how it was written.
func TestAdoptOnceAcrossGatewaysSpelledTwoWays(t *testing.T) {
	adoptOnceAcrossGateways(t, [2]string{"21", "0021"})
}

func adoptOnceAcrossGateways(t *testing.T, spellings [2]string) {
	pg := realtest.StartPostgres(t)
	dsn := pg.NewDatabase(t)
	slurm := newSlurmLike("21")
	slurm.entered, slurm.proceed = make(chan struct{}, 2), make(chan struct{})
	var gws [2]*testGateway
	for i := range gws {
		gws[i] = adoptingGateway(t, slurm, func(c *Config) {
			c.Store.Close()
			db, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			c.Store, c.LeaseHolder = db, fmt.Sprintf("gw-%d", i)
		})
	}
	type answer struct {
		code int
		body string
	}
	answers := make(chan answer, 2)
	for i, tg := range gws {
		c := tg.client().loginToken("alice")
		go func() {
			code, body := c.do("POST", "/api/v1/sessions", map[string]any{"profile": "desktop", "slurm_job": spellings[i]}, nil)
			answers <- answer{code, body}
		}()
	}
	// Both in the scheduler (no claim), or one in and one answered (the
	// claim): either way nothing more happens until the renames go on.
	var got []answer
	deadline := time.After(60 * time.Second)
	for entered := 0; entered+len(got) < 2; {
		select {
		case <-slurm.entered:
			entered++
		case a := <-answers:
			got = append(got, a)
		case <-deadline:
			t.Fatalf("neither gateway reached the scheduler nor answered; answers %v", got)
		}
	}
	close(slurm.proceed)
	for len(got) < 2 {
		select {
		case a := <-answers:
			got = append(got, a)
		case <-deadline:
			t.Fatalf("no second answer; answers %v", got)
		}
	}
	var created, taken int
	for _, a := range got {
		switch {
		case a.code == 201:
			created++
		case a.code == 409 && strings.Contains(a.body, "job_taken"):
			taken++
		default:
			t.Errorf("adoption answered %d %s", a.code, a.body)
		}
	}
	if created != 1 || taken != 1 {
		t.Errorf("answers %v: want one 201 and one 409 job_taken", got)
	}
	if n := slurm.adopts.Load(); n != 1 {
		t.Errorf("the job was renamed %d times", n)
	}
	ss, err := gws[0].cfg.Store.ListSessions(context.Background(), store.SessionFilter{})
	if err != nil || len(ss) != 1 {
		t.Errorf("sessions for one job: %v %v", ss, err)
	}
	// Taken now by its name: a third try on either gateway is a 409 too.
	code, body := gws[1].client().loginToken("alice").do("POST", "/api/v1/sessions", map[string]any{"profile": "desktop", "slurm_job": "21"}, nil)
	if code != 409 || !strings.Contains(body, "job_taken") {
		t.Errorf("adopting an adopted job: %d %s, want 409 job_taken", code, body)
	}
}

// TestAdoptRefusedLeavesNoSession: an adoption the scheduler refuses
// (another user's job, an ended one, a taken one) or does not answer
// leaves no session (not even an ended one in the user's list) and counts
// no launch, only a failure; the scheduler's silence is a 503 "try
// again". Before, each left an ended session and counted a launch.
func TestAdoptRefusedLeavesNoSession(t *testing.T) {
	slurm := newSlurmLike("31")
	slurm.names["32"] = "airlock-s-000000000000"
	tg := adoptingGateway(t, slurm, nil)
	c := tg.client().loginToken("alice")
	for _, tc := range []struct {
		job    string
		err    error
		status int
		code   string
	}{
		{"31", fmt.Errorf("job 31 is bob's: %w", backend.ErrRefused), 403, "not_your_job"},
		{"33", nil, 404, "no_such_job"},
		{"32", nil, 409, "job_taken"},
		{"31", errors.New("squeue: slurm_load_jobs error: Socket timed out"), 503, "scheduler_unavailable"},
	} {
		slurm.set(func(f *slurmLike) { f.err = tc.err })
		code, body := c.do("POST", "/api/v1/sessions", map[string]any{"profile": "desktop", "slurm_job": tc.job}, nil)
		if code != tc.status || !strings.Contains(body, tc.code) {
			t.Errorf("job %s (%v): %d %s, want %d %s", tc.job, tc.err, code, body, tc.status, tc.code)
		}
	}
	if ss, err := tg.cfg.Store.ListSessions(context.Background(), store.SessionFilter{}); err != nil || len(ss) != 0 {
		t.Errorf("sessions after refused adoptions: %v %v", ss, err)
	}
	if l, f := tg.g.metrics.launches.Load(), tg.g.metrics.failures.Load(); l != 0 || f != 4 {
		t.Errorf("metrics: %d launches and %d failures, want 0 and 4", l, f)
	}
	if n := slurm.stops.Load(); n != 0 {
		t.Errorf("%d jobs stopped", n)
	}
}

// faultAfterRename is a store that fails the first session write made
// after the scheduler renamed a job: a store fault between the rename
// and the session's record.
type faultAfterRename struct {
	store.Store
	armed atomic.Bool
}

var errStoreGone = errors.New("the store is unreachable (test)")

func (f *faultAfterRename) CreateSessionWithin(ctx context.Context, s *session.Session, lim store.Limits) error {
	if f.armed.CompareAndSwap(true, false) {
		return errStoreGone
	}
	return f.Store.CreateSessionWithin(ctx, s, lim)
}

func (f *faultAfterRename) UpdateSession(ctx context.Context, id string, update func(*session.Session) error) (*session.Session, error) {
	if f.armed.CompareAndSwap(true, false) {
		return nil, errStoreGone
	}
	return f.Store.UpdateSession(ctx, id, update)
}

// TestAdoptStoreFaultGivesTheJobBack: the store fails just after the
// scheduler renamed the user's job: the caller is told to try again
// (503), the job has its own name back (so no gateway takes it for an
// orphan of its own and cancels it), nothing is stopped and no session
// stored; the retry adopts it. Before, the answer was a 500, the session
// was ended and the job kept the session's name, for the reconcile to
// cancel.
func TestAdoptStoreFaultGivesTheJobBack(t *testing.T) {
	slurm := newSlurmLike("41")
	var st *faultAfterRename
	slurm.renamed = func(string) {
		if st != nil {
			st.armed.Store(true)
		}
	}
	tg := adoptingGateway(t, slurm, func(c *Config) {
		st = &faultAfterRename{Store: c.Store}
		c.Store = st
	})
	c := tg.client().loginToken("alice")
	code, body := c.do("POST", "/api/v1/sessions", map[string]any{"profile": "desktop", "slurm_job": "41"}, nil)
	if code != 503 || !strings.Contains(body, "store_unavailable") {
		t.Errorf("adoption with the store failing after the rename: %d %s, want 503 store_unavailable", code, body)
	}
	if n := slurm.name("41"); n != "ood-airlock-desktop" {
		t.Errorf("the job is named %q after the failed adoption, want its own name back", n)
	}
	if ss, err := tg.cfg.Store.ListSessions(context.Background(), store.SessionFilter{}); err != nil || len(ss) != 0 {
		t.Errorf("sessions after the failed adoption: %v %v", ss, err)
	}
	if n := slurm.stops.Load(); n != 0 {
		t.Errorf("%d jobs stopped", n)
	}
	slurm.set(func(f *slurmLike) { f.renamed = nil })
	code, body = c.do("POST", "/api/v1/sessions", map[string]any{"profile": "desktop", "slurm_job": "41"}, nil)
	if code != 201 {
		t.Fatalf("adoption tried again: %d %s", code, body)
	}
	if n := slurm.name("41"); !strings.HasPrefix(n, "airlock-s-") {
		t.Errorf("the adopted job is named %q", n)
	}
}

// TestAdoptAnswerWaysIn: the adoption's answer lists the ways into the
// session that an OnDemand card links to, as the session page offers them
// to the owner: a plain desktop only itself; an RDP desktop (with the
// gateway's RDP port) its VNC console and the native RDP file's panel too;
// an app itself. Each is a place on the session's page. Another user
// following the RDP link gets nothing: not the page, not the file.
func TestAdoptAnswerWaysIn(t *testing.T) {
	slurm := newSlurmLike("51", "52", "53")
	tg := adoptingGateway(t, slurm, func(c *Config) {
		c.RDPListen = "127.0.0.1:0"
		rdp := desktopProfile()
		rdp.Name, rdp.RDP = "rdpdesk", true
		c.Profiles = append(c.Profiles, rdp)
	})
	alice := tg.client().loginToken("alice")
	type ans struct {
		ID   string
		URL  string
		Ways []wayIn
	}
	adopt := func(profile, job string) ans {
		t.Helper()
		var a ans
		if code, body := alice.do("POST", "/api/v1/sessions", map[string]any{"profile": profile, "slurm_job": job}, &a); code != 201 {
			t.Fatalf("adopt %s as %s: %d %s", job, profile, code, body)
		}
		return a
	}
	names := func(a ans) string {
		var n []string
		for _, w := range a.Ways {
			if w.URL != a.URL && !strings.HasPrefix(w.URL, a.URL+"#") {
				t.Errorf("way %s at %s, not on the session's page %s", w.Name, w.URL, a.URL)
			}
			n = append(n, w.Name)
		}
		return strings.Join(n, " ")
	}
	if a := adopt("desktop", "51"); names(a) != "desktop" {
		t.Errorf("a desktop without RDP offers %q", names(a))
	}
	if a := adopt("app", "53"); names(a) != "app" {
		t.Errorf("an app offers %q", names(a))
	}
	a := adopt("rdpdesk", "52")
	if names(a) != "desktop console rdp" {
		t.Fatalf("an RDP desktop offers %q", names(a))
	}
	if a.Ways[2].URL != a.URL+"#rdp" {
		t.Errorf("the RDP way: %s", a.Ways[2].URL)
	}
	// Bob follows the card's RDP link (the page, then the file it makes).
	bob := tg.client().loginCookie("bob")
	if code, body := bob.do("GET", "/sessions/"+a.ID, nil, nil); code == 200 || strings.Contains(body, "rdp-download") {
		t.Errorf("bob opening alice's session page: %d %.200s", code, body)
	}
	bobTok := tg.client().loginToken("bob")
	if code, body := bobTok.do("POST", "/api/v1/sessions/"+a.ID+"/rdp", nil, nil); code != 404 {
		t.Errorf("bob asking for alice's RDP file: %d %s, want 404", code, body)
	}
}
