// Package storetest is the conformance suite for [store.Store]. Each
// implementation's tests call [Run] with a factory for empty stores, so the
// SQLite store and a later PostgreSQL one behave alike for the gateway;
// [Seed] fills a store for benchmarks the same way for both.
//
// It is test support and imports testing: only _test.go files may import
// it. It knows only the store interface, never an implementation.
package storetest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// Run runs the suite as parallel subtests of t. open must return a new,
// empty store that lives until the subtest ends and is closed by a
// t.Cleanup that open registers; it is called once per subtest.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.Store)
	}{
		{"Session/RoundTrip", testSessionRoundTrip},
		{"Session/NoAliasing", testSessionNoAliasing},
		{"Session/CreateExists", testSessionCreateExists},
		{"Session/CreateInvalid", testSessionCreateInvalid},
		{"Session/GetNotFound", testSessionGetNotFound},
		{"Session/List", testSessionList},
		{"Session/Update", testSessionUpdate},
		{"Session/UpdateTransitions", testSessionUpdateTransitions},
		{"Session/UpdateLife", testSessionUpdateLife},
		{"Session/UpdateError", testSessionUpdateError},
		{"Session/UpdateChangesID", testSessionUpdateChangesID},
		{"Session/UpdateNotFound", testSessionUpdateNotFound},
		{"Session/UpdateConcurrent", testSessionUpdateConcurrent},
		{"Session/CreateConcurrent", testSessionCreateConcurrent},
		{"Session/CountActive", testSessionCountActive},
		{"Session/CreateWithin", testSessionCreateWithin},
		{"Session/CreateWithinConcurrent", testSessionCreateWithinConcurrent},
		{"User", testUser},
		{"Token", testToken},
		{"Token/Revoke", testTokenRevoke},
		{"Token/Invalid", testTokenInvalid},
		{"User/Put", testUserPut},
		{"Login", testLogin},
		{"Terms", testTerms},
		{"TOTP", testTOTP},
		{"PendingLogin", testPendingLogin},
		{"Login/RevokeUser", testRevokeUser},
		{"Share", testShare},
		{"Share/Revoke", testShareRevoke},
		{"Share/Invalid", testShareInvalid},
		{"Audit", testAudit},
		{"Audit/Filter", testAuditFilter},
		{"CanceledContext", testCanceledContext},
		{"CloseTwice", testCloseTwice},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, open(t))
		})
	}
}

// t0 is the suite's epoch: in a zone other than UTC and with every
// nanosecond digit set, so a store that drops either is caught.
var t0 = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.FixedZone("UTC+1", 3600))

// at returns t0 plus d.
func at(d time.Duration) time.Time { return t0.Add(d) }

// full returns a session with every field set.
func full(id string) *session.Session {
	return &session.Session{
		ID:         id,
		Owner:      "alice",
		Profile:    "desktop-xfce",
		State:      session.Ready,
		Reason:     "scheduler: Resources",
		Persistent: true,
		CPUs:       8,
		MemoryMB:   16384,
		Lifetime:   8*time.Hour + 1,
		Created:    at(0),
		Started:    at(time.Minute + 7),
		Ended:      time.Time{},
		LastSeen:   at(time.Hour + 123456789).In(time.Local),
		Backend:    "slurm",
		BackendRef: "123456",
		Node:       "cn042",
		Endpoints:  map[string]string{"vnc": "10.0.0.42:5901", "web": "[fd00::1]:8443"},
		TLSSHA256:  "4f3c2b…",
	}
}

// minimal returns a session with only what is required.
func minimal(id, owner string, state session.State, created time.Time) *session.Session {
	return &session.Session{ID: id, Owner: owner, State: state, Created: created}
}

// canon returns s as the suite compares sessions: a store need not keep a
// time's zone or monotonic reading, nor tell a nil map from an empty one.
func canon(s *session.Session) session.Session {
	c := *s
	c.Created, c.Started, c.Ended, c.LastSeen = c.Created.UTC(), c.Started.UTC(), c.Ended.UTC(), c.LastSeen.UTC()
	if len(c.Endpoints) == 0 {
		c.Endpoints = nil
	}
	return c
}

func sameSession(t testing.TB, what string, got, want *session.Session) {
	t.Helper()
	if got == nil || want == nil {
		if got != want {
			t.Errorf("%s: got %+v, want %+v", what, got, want)
		}
		return
	}
	if g, w := canon(got), canon(want); !reflect.DeepEqual(g, w) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, g, w)
	}
}

func mustCreate(t testing.TB, st store.Store, ss ...*session.Session) {
	t.Helper()
	for _, s := range ss {
		if err := st.CreateSession(t.Context(), s); err != nil {
			t.Fatalf("CreateSession(%s): %v", s.ID, err)
		}
	}
}

func mustGet(t testing.TB, st store.Store, id string) *session.Session {
	t.Helper()
	s, err := st.GetSession(t.Context(), id)
	if err != nil {
		t.Fatalf("GetSession(%s): %v", id, err)
	}
	return s
}

func wantErr(t testing.TB, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: got error %v, want one wrapping %q", what, err, target)
	}
}

func testSessionRoundTrip(t *testing.T, st store.Store) {
	ctx := t.Context()
	want := full("s-full")
	mustCreate(t, st, want)
	sameSession(t, "full session", mustGet(t, st, want.ID), full("s-full"))

	// Zero times stay zero, nothing else set stays empty.
	mustCreate(t, st, minimal("s-min", "bob", session.Queued, at(0)))
	got := mustGet(t, st, "s-min")
	sameSession(t, "minimal session", got, minimal("s-min", "bob", session.Queued, at(0)))
	if !got.Started.IsZero() || !got.Ended.IsZero() || !got.LastSeen.IsZero() {
		t.Errorf("zero times came back as %v, %v, %v", got.Started, got.Ended, got.LastSeen)
	}

	// The Unix epoch itself is a time, not the zero time.
	epoch := minimal("s-epoch", "bob", session.Ended, time.Unix(0, 0))
	epoch.Ended = time.Unix(0, 0)
	mustCreate(t, st, epoch)
	if got := mustGet(t, st, "s-epoch"); !got.Ended.Equal(time.Unix(0, 0)) || got.Ended.IsZero() {
		t.Errorf("epoch Ended came back as %v", got.Ended)
	}

	// An empty map is as good as none.
	empty := minimal("s-empty", "bob", session.Queued, at(0))
	empty.Endpoints = map[string]string{}
	mustCreate(t, st, empty)
	if got := mustGet(t, st, "s-empty"); len(got.Endpoints) != 0 {
		t.Errorf("empty Endpoints came back as %v", got.Endpoints)
	}

	// Every field lands in the list as in a get.
	list, err := st.ListSessions(ctx, store.SessionFilter{Owner: "alice"})
	if err != nil || len(list) != 1 {
		t.Fatalf("ListSessions(alice) = %d sessions, %v; want 1", len(list), err)
	}
	sameSession(t, "listed session", list[0], full("s-full"))
}

func testSessionNoAliasing(t *testing.T, st store.Store) {
	s := full("s-1")
	mustCreate(t, st, s)
	s.Endpoints["vnc"] = "changed"
	s.CPUs = 99
	got := mustGet(t, st, "s-1")
	sameSession(t, "after changing the created value", got, full("s-1"))
	got.Endpoints["vnc"] = "changed again"
	sameSession(t, "after changing a got value", mustGet(t, st, "s-1"), full("s-1"))
}

func testSessionCreateExists(t *testing.T, st store.Store) {
	mustCreate(t, st, full("s-1"))
	dup := minimal("s-1", "mallory", session.Queued, at(time.Hour))
	wantErr(t, "CreateSession of a taken id", st.CreateSession(t.Context(), dup), store.ErrExists)
	sameSession(t, "first session after a duplicate create", mustGet(t, st, "s-1"), full("s-1"))
}

func testSessionCreateInvalid(t *testing.T, st store.Store) {
	for _, s := range []*session.Session{
		minimal("", "alice", session.Queued, at(0)),
		minimal("s-bogus", "alice", "bogus", at(0)),
		minimal("s-nostate", "alice", "", at(0)),
	} {
		if err := st.CreateSession(t.Context(), s); err == nil {
			t.Errorf("CreateSession(id %q, state %q) succeeded", s.ID, s.State)
		}
	}
	if n, err := st.CountActive(t.Context(), ""); n != 0 || err != nil {
		t.Errorf("after refused creates, CountActive = %d, %v; want 0", n, err)
	}
}

func testSessionGetNotFound(t *testing.T, st store.Store) {
	_, err := st.GetSession(t.Context(), "s-missing")
	wantErr(t, "GetSession of a missing id", err, store.ErrNotFound)
	_, err = st.GetSession(t.Context(), "")
	wantErr(t, "GetSession of an empty id", err, store.ErrNotFound)
}

func ids(ss []*session.Session) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.ID
	}
	return out
}

func testSessionList(t *testing.T, st store.Store) {
	ctx := t.Context()
	// Created out of id order, so the order must come from Created.
	mustCreate(t, st,
		minimal("a1", "alice", session.Ended, at(1*time.Minute)),
		minimal("b1", "bob", session.Ready, at(2*time.Minute)),
		minimal("a2", "alice", session.Ready, at(5*time.Minute)),
		minimal("a3", "alice", session.Queued, at(3*time.Minute)),
		minimal("b2", "bob", session.Stopping, at(4*time.Minute)),
		minimal("c1", "carol", session.Starting, at(6*time.Minute)),
		// One nanosecond after a2, in another zone.
		minimal("a4", "alice", session.Ended, at(5*time.Minute+1).In(time.FixedZone("UTC-7", -7*3600))),
	)
	for _, tc := range []struct {
		f    store.SessionFilter
		want []string
	}{
		{store.SessionFilter{}, []string{"c1", "a4", "a2", "b2", "a3", "b1", "a1"}},
		{store.SessionFilter{Owner: "alice"}, []string{"a4", "a2", "a3", "a1"}},
		{store.SessionFilter{Owner: "bob"}, []string{"b2", "b1"}},
		{store.SessionFilter{Owner: "nobody"}, nil},
		{store.SessionFilter{States: []session.State{session.Ready}}, []string{"a2", "b1"}},
		{store.SessionFilter{States: []session.State{session.Queued, session.Starting, session.Ready, session.Stopping}}, []string{"c1", "a2", "b2", "a3", "b1"}},
		{store.SessionFilter{Owner: "alice", States: []session.State{session.Ended}}, []string{"a4", "a1"}},
		{store.SessionFilter{Owner: "bob", States: []session.State{session.Ended}}, nil},
		{store.SessionFilter{States: []session.State{"bogus"}}, nil},
		{store.SessionFilter{Limit: 3}, []string{"c1", "a4", "a2"}},
		{store.SessionFilter{Limit: 100}, []string{"c1", "a4", "a2", "b2", "a3", "b1", "a1"}},
		{store.SessionFilter{Owner: "alice", Limit: 2}, []string{"a4", "a2"}},
		{store.SessionFilter{Owner: "alice", States: []session.State{session.Ready, session.Queued}, Limit: 1}, []string{"a2"}},
	} {
		got, err := st.ListSessions(ctx, tc.f)
		if err != nil {
			t.Errorf("ListSessions(%+v): %v", tc.f, err)
			continue
		}
		if g := ids(got); !slices.Equal(g, tc.want) {
			t.Errorf("ListSessions(%+v) = %q, want %q", tc.f, g, tc.want)
		}
	}
}

func testSessionUpdate(t *testing.T, st store.Store) {
	ctx := t.Context()
	mustCreate(t, st, minimal("s-1", "alice", session.Queued, at(0)))
	want := full("s-1")
	want.State = session.Starting
	got, err := st.UpdateSession(ctx, "s-1", func(s *session.Session) error {
		*s = *full("s-1")
		s.State = session.Starting
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}
	sameSession(t, "UpdateSession's result", got, want)
	sameSession(t, "GetSession after UpdateSession", mustGet(t, st, "s-1"), want)

	// Clearing fields clears them.
	_, err = st.UpdateSession(ctx, "s-1", func(s *session.Session) error {
		s.Endpoints, s.LastSeen, s.Reason, s.Persistent = nil, time.Time{}, "", false
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}
	want.Endpoints, want.LastSeen, want.Reason, want.Persistent = nil, time.Time{}, "", false
	sameSession(t, "GetSession after clearing fields", mustGet(t, st, "s-1"), want)
}

func testSessionUpdateTransitions(t *testing.T, st store.Store) {
	ctx := t.Context()
	states := []session.State{session.Queued, session.Starting, session.Ready, session.Stopping, session.Ended, "bogus", ""}
	n := 0
	for _, from := range states[:5] {
		for _, to := range states {
			n++
			id := fmt.Sprintf("s-%d", n)
			orig := minimal(id, "alice", from, at(time.Duration(n)))
			orig.CPUs = 1
			mustCreate(t, st, orig)
			got, err := st.UpdateSession(ctx, id, func(s *session.Session) error {
				s.State = to
				s.CPUs = 2 // written only with a legal change
				return nil
			})
			stored := mustGet(t, st, id)
			if from.CanMoveTo(to) {
				if err != nil {
					t.Errorf("%s → %s: %v", from, to, err)
				} else if got.State != to || stored.State != to || stored.CPUs != 2 {
					t.Errorf("%s → %s: returned state %s, stored %s with %d CPUs", from, to, got.State, stored.State, stored.CPUs)
				}
				continue
			}
			wantErr(t, fmt.Sprintf("%s → %q", from, to), err, store.ErrConflict)
			if got != nil {
				t.Errorf("%s → %q: returned a session with the error", from, to)
			}
			sameSession(t, fmt.Sprintf("%s after refused %s → %q", id, from, to), stored, orig)
		}
	}
}

// testSessionUpdateLife walks a session through its life the way the
// gateway does, with session.Move.
func testSessionUpdateLife(t *testing.T, st store.Store) {
	ctx := t.Context()
	mustCreate(t, st, minimal("s-1", "alice", session.Queued, at(0)))
	for i, to := range []session.State{session.Starting, session.Ready, session.Stopping, session.Ended} {
		now := at(time.Duration(i+1) * time.Minute)
		got, err := st.UpdateSession(ctx, "s-1", func(s *session.Session) error { return s.Move(to, string(to)+" reason", now) })
		if err != nil {
			t.Fatalf("move to %s: %v", to, err)
		}
		if got.State != to {
			t.Fatalf("move to %s: state %s", to, got.State)
		}
	}
	s := mustGet(t, st, "s-1")
	if !s.Started.Equal(at(2*time.Minute)) || !s.Ended.Equal(at(4*time.Minute)) || s.Reason != "ended reason" {
		t.Errorf("after its life: started %v, ended %v, reason %q", s.Started, s.Ended, s.Reason)
	}
	// Ended is final: even Move's own refusal comes back as the update's
	// error, and a direct change is a conflict.
	_, err := st.UpdateSession(ctx, "s-1", func(s *session.Session) error { return s.Move(session.Ready, "", at(time.Hour)) })
	if err == nil {
		t.Errorf("Move from ended to ready succeeded")
	}
	_, err = st.UpdateSession(ctx, "s-1", func(s *session.Session) error { s.State = session.Queued; return nil })
	wantErr(t, "ended → queued", err, store.ErrConflict)
	// Other fields of an ended session may still change.
	if _, err := st.UpdateSession(ctx, "s-1", func(s *session.Session) error { s.Reason = "reaped"; return nil }); err != nil {
		t.Errorf("update of an ended session's reason: %v", err)
	}
}

var errUpdate = errors.New("the update's own error")

func testSessionUpdateError(t *testing.T, st store.Store) {
	mustCreate(t, st, full("s-1"))
	got, err := st.UpdateSession(t.Context(), "s-1", func(s *session.Session) error {
		s.CPUs, s.Owner, s.State = 1, "mallory", session.Stopping
		s.Endpoints["vnc"] = "elsewhere"
		return fmt.Errorf("wrapped: %w", errUpdate)
	})
	wantErr(t, "UpdateSession with a failing update", err, errUpdate)
	if got != nil {
		t.Errorf("returned a session with the error")
	}
	sameSession(t, "session after a failed update", mustGet(t, st, "s-1"), full("s-1"))
}

func testSessionUpdateChangesID(t *testing.T, st store.Store) {
	mustCreate(t, st, full("s-1"))
	_, err := st.UpdateSession(t.Context(), "s-1", func(s *session.Session) error {
		s.ID, s.CPUs = "s-2", 1
		return nil
	})
	if err == nil {
		t.Errorf("UpdateSession that changed the id succeeded")
	}
	sameSession(t, "session after a refused id change", mustGet(t, st, "s-1"), full("s-1"))
	_, err = st.GetSession(t.Context(), "s-2")
	wantErr(t, "GetSession of the id the update tried", err, store.ErrNotFound)
}

func testSessionUpdateNotFound(t *testing.T, st store.Store) {
	called := false
	_, err := st.UpdateSession(t.Context(), "s-missing", func(*session.Session) error { called = true; return nil })
	wantErr(t, "UpdateSession of a missing id", err, store.ErrNotFound)
	if called {
		t.Errorf("update was called for a missing session")
	}
}

// testSessionUpdateConcurrent: concurrent read-modify-writes of one
// session all land, while readers list and count.
func testSessionUpdateConcurrent(t *testing.T, st store.Store) {
	ctx := t.Context()
	mustCreate(t, st, minimal("s-1", "alice", session.Queued, at(0)))
	const n = 20
	var wg sync.WaitGroup
	stop := make(chan struct{})
	readers := sync.WaitGroup{}
	for range 2 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := st.ListSessions(ctx, store.SessionFilter{Owner: "alice"}); err != nil {
					t.Errorf("ListSessions during updates: %v", err)
					return
				}
				if _, err := st.CountActive(ctx, ""); err != nil {
					t.Errorf("CountActive during updates: %v", err)
					return
				}
			}
		})
	}
	for range n {
		wg.Go(func() {
			_, err := st.UpdateSession(ctx, "s-1", func(s *session.Session) error {
				s.CPUs++
				return nil
			})
			if err != nil {
				t.Errorf("UpdateSession: %v", err)
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	if got := mustGet(t, st, "s-1").CPUs; got != n {
		t.Errorf("after %d concurrent increments CPUs = %d", n, got)
	}
}

// testSessionCreateConcurrent: concurrent creates of distinct ids all
// land, and of one id exactly one does.
func testSessionCreateConcurrent(t *testing.T, st store.Store) {
	ctx := t.Context()
	const n = 20
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		won     int
		results []error
	)
	for i := range n {
		wg.Go(func() {
			if err := st.CreateSession(ctx, minimal(fmt.Sprintf("s-%d", i), "alice", session.Queued, at(time.Duration(i)))); err != nil {
				t.Errorf("CreateSession: %v", err)
			}
		})
		wg.Go(func() {
			err := st.CreateSession(ctx, minimal("s-same", "bob", session.Queued, at(time.Duration(i))))
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				won++
			} else {
				results = append(results, err)
			}
		})
	}
	wg.Wait()
	if won != 1 {
		t.Errorf("%d of %d concurrent creates of one id succeeded", won, n)
	}
	for _, err := range results {
		wantErr(t, "losing create", err, store.ErrExists)
	}
	if c, err := st.CountActive(ctx, "alice"); c != n || err != nil {
		t.Errorf("CountActive(alice) = %d, %v; want %d", c, err, n)
	}
}

func testSessionCountActive(t *testing.T, st store.Store) {
	ctx := t.Context()
	count := func(owner string, want int) {
		t.Helper()
		if n, err := st.CountActive(ctx, owner); n != want || err != nil {
			t.Errorf("CountActive(%q) = %d, %v; want %d", owner, n, err, want)
		}
	}
	count("", 0)
	count("alice", 0)
	mustCreate(t, st,
		minimal("a1", "alice", session.Queued, at(1)),
		minimal("a2", "alice", session.Starting, at(2)),
		minimal("a3", "alice", session.Ready, at(3)),
		minimal("a4", "alice", session.Stopping, at(4)),
		minimal("a5", "alice", session.Ended, at(5)),
		minimal("b1", "bob", session.Ready, at(6)),
		minimal("b2", "bob", session.Ended, at(7)),
	)
	count("", 5)
	count("alice", 4)
	count("bob", 1)
	count("carol", 0)
	if _, err := st.UpdateSession(ctx, "a3", func(s *session.Session) error { return s.Move(session.Ended, "done", at(time.Hour)) }); err != nil {
		t.Fatal(err)
	}
	count("", 4)
	count("alice", 3)
}

func testSessionCreateWithin(t *testing.T, st store.Store) {
	ctx := t.Context()
	lim := store.Limits{MaxActive: 4, MaxActivePerOwner: 2}
	create := func(id, owner string, want error) {
		t.Helper()
		err := st.CreateSessionWithin(ctx, minimal(id, owner, session.Queued, at(time.Minute)), lim)
		if want == nil {
			if err != nil {
				t.Errorf("CreateSessionWithin(%s of %s): %v", id, owner, err)
			}
			return
		}
		wantErr(t, "CreateSessionWithin("+id+" of "+owner+")", err, want)
		if _, err := st.GetSession(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s was refused but stored (%v)", id, err)
		}
	}
	// Ended sessions do not count.
	mustCreate(t, st, minimal("old1", "alice", session.Ended, at(0)), minimal("old2", "alice", session.Ended, at(0)))
	create("a1", "alice", nil)
	create("a2", "alice", nil)
	create("a3", "alice", store.ErrLimit)
	err := st.CreateSessionWithin(ctx, minimal("a3", "alice", session.Queued, at(time.Minute)), lim)
	if le, ok := errors.AsType[*store.LimitError](err); !ok || !le.PerOwner || le.Max != 2 || le.Active != 2 {
		t.Errorf("owner over the cap: %#v, want a per-owner *LimitError with Max 2, Active 2", err)
	}
	create("b1", "bob", nil)
	create("c1", "carol", nil)
	create("d1", "dave", store.ErrLimit)
	err = st.CreateSessionWithin(ctx, minimal("d1", "dave", session.Queued, at(time.Minute)), lim)
	if le, ok := errors.AsType[*store.LimitError](err); !ok || le.PerOwner || le.Max != 4 || le.Active != 4 {
		t.Errorf("everyone over the cap: %#v, want a *LimitError with Max 4, Active 4", err)
	}
	// No caps is CreateSession: an id taken is still ErrExists.
	if err := st.CreateSessionWithin(ctx, minimal("a1", "erin", session.Queued, at(0)), store.Limits{}); !errors.Is(err, store.ErrExists) {
		t.Errorf("taken id: %v, want ErrExists", err)
	}
	// A session that ends makes room.
	if _, err := st.UpdateSession(ctx, "a1", func(s *session.Session) error { return s.Move(session.Ended, "", at(time.Hour)) }); err != nil {
		t.Fatal(err)
	}
	create("e1", "erin", nil)
	create("a3", "alice", store.ErrLimit) // alice has 1, but everyone has 4: a2, b1, c1, e1
}

// testSessionCreateWithinConcurrent: the caps hold when many creates race,
// as concurrent launches do (a count, then an insert, would let several
// through). Each round, n creates start at once for owners with a fresh
// cap; a race that a round misses, another round catches.
func testSessionCreateWithinConcurrent(t *testing.T, st store.Store) {
	ctx := t.Context()
	const n, rounds = 50, 20
	for r := range rounds {
		var (
			wg sync.WaitGroup
			mu sync.Mutex
			ok = map[string]int{}
		)
		start := make(chan struct{})
		// Two new owners, 25 creates each: their caps of 3 would allow 6,
		// one more than everyone's cap leaves room for.
		for i := range n {
			owner := fmt.Sprintf("r%d-u%d", r, i%2)
			wg.Go(func() {
				<-start
				s := minimal(fmt.Sprintf("r%d-s%d", r, i), owner, session.Queued, at(time.Duration(i)))
				err := st.CreateSessionWithin(ctx, s, store.Limits{MaxActive: 5 * (r + 1), MaxActivePerOwner: 3})
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					ok[owner]++
				} else if !errors.Is(err, store.ErrLimit) {
					t.Errorf("CreateSessionWithin: %v, want nil or ErrLimit", err)
				}
			})
		}
		close(start)
		wg.Wait()
		// Every round before left 5 active sessions, so everyone's cap of
		// 5 more than that leaves room for 5 of this round's 6.
		if total := ok[fmt.Sprintf("r%d-u0", r)] + ok[fmt.Sprintf("r%d-u1", r)]; total != 5 {
			t.Fatalf("round %d: %d of %d concurrent creates succeeded with room for 5 under everyone's cap", r, total, n)
		}
		for owner, k := range ok {
			if k > 3 {
				t.Fatalf("round %d: %s got %d sessions, cap 3", r, owner, k)
			}
		}
	}
	if c, _ := st.CountActive(ctx, ""); c != 5*rounds {
		t.Errorf("%d active sessions, want %d", c, 5*rounds)
	}
}

func testUser(t *testing.T, st store.Store) {
	ctx := t.Context()
	alice := session.User{Name: "alice", Admin: true, Created: at(0)}
	bob := session.User{Name: "bob", Created: at(time.Second).In(time.Local)}
	for _, u := range []session.User{bob, alice} {
		if err := st.CreateUser(ctx, u); err != nil {
			t.Fatalf("CreateUser(%s): %v", u.Name, err)
		}
	}
	wantErr(t, "CreateUser of a taken name", st.CreateUser(ctx, session.User{Name: "alice", Created: at(time.Hour)}), store.ErrExists)
	if err := st.CreateUser(ctx, session.User{Created: at(0)}); err == nil {
		t.Errorf("CreateUser with no name succeeded")
	}
	got, err := st.GetUser(ctx, "alice")
	if err != nil || got.Name != "alice" || !got.Admin || !got.Created.Equal(alice.Created) {
		t.Errorf("GetUser(alice) = %+v, %v; want %+v", got, err, alice)
	}
	_, err = st.GetUser(ctx, "carol")
	wantErr(t, "GetUser of a missing name", err, store.ErrNotFound)

	list, err := st.ListUsers(ctx)
	if err != nil {
		t.Fatalf("ListUsers: %v", err)
	}
	slices.SortFunc(list, func(a, b session.User) int { return cmp.Compare(a.Name, b.Name) })
	if len(list) != 2 || list[0].Name != "alice" || !list[1].Created.Equal(bob.Created) || list[1].Admin {
		t.Errorf("ListUsers = %+v, want alice and bob", list)
	}
}

func hash(s string) []byte {
	// Any bytes do: the store keys on them and never hashes them itself.
	b := make([]byte, 32)
	copy(b, s)
	return b
}

func mustUsers(t testing.TB, st store.Store, names ...string) {
	t.Helper()
	for _, n := range names {
		if err := st.CreateUser(t.Context(), session.User{Name: n, Created: at(0)}); err != nil {
			t.Fatalf("CreateUser(%s): %v", n, err)
		}
	}
}

func sameToken(t testing.TB, what string, got, want session.Token) {
	t.Helper()
	g, w := got, want
	g.Created, g.LastUsed, w.Created, w.LastUsed = g.Created.UTC(), g.LastUsed.UTC(), w.Created.UTC(), w.LastUsed.UTC()
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, g, w)
	}
}

func testToken(t *testing.T, st store.Store) {
	ctx := t.Context()
	mustUsers(t, st, "alice", "bob")
	tok := session.Token{ID: "t-1", User: "alice", Name: "ci", Created: at(0), Hash: hash("secret-1")}
	older := session.Token{ID: "t-0", User: "alice", Name: "laptop", Created: at(-time.Hour), Hash: hash("secret-0")}
	bobs := session.Token{ID: "t-2", User: "bob", Name: "ci", Created: at(time.Hour), Hash: hash("secret-2")}
	for _, tk := range []session.Token{tok, older, bobs} {
		if err := st.CreateToken(ctx, tk); err != nil {
			t.Fatalf("CreateToken(%s): %v", tk.ID, err)
		}
	}

	list, err := st.ListTokens(ctx, "alice")
	if err != nil || len(list) != 2 {
		t.Fatalf("ListTokens(alice) = %+v, %v; want two", list, err)
	}
	slices.SortFunc(list, func(a, b session.Token) int { return a.Created.Compare(b.Created) })
	sameToken(t, "older listed token", list[0], older)
	sameToken(t, "listed token", list[1], tok)
	if list, err := st.ListTokens(ctx, "carol"); len(list) != 0 || err != nil {
		t.Errorf("ListTokens(carol) = %+v, %v; want none", list, err)
	}

	// A lookup returns the token and stamps it.
	used := at(time.Minute)
	got, err := st.TokenByHash(ctx, hash("secret-1"), used)
	want := tok
	want.LastUsed = used
	if err != nil {
		t.Fatalf("TokenByHash: %v", err)
	}
	sameToken(t, "TokenByHash", got, want)
	used2 := at(2 * time.Minute)
	if _, err := st.TokenByHash(ctx, hash("secret-1"), used2); err != nil {
		t.Fatalf("second TokenByHash: %v", err)
	}
	want.LastUsed = used2
	// The stamp may be written just after the lookup returns (it must not
	// hold the lookup up when the store is busy): give it a moment.
	list = stamped(t, st, "alice", "t-1", used2)
	for _, tk := range list {
		switch tk.ID {
		case "t-1":
			sameToken(t, "token after two lookups", tk, want)
		case "t-0":
			if !tk.LastUsed.IsZero() {
				t.Errorf("unused token stamped %v", tk.LastUsed)
			}
		}
	}

	_, err = st.TokenByHash(ctx, hash("unknown"), used)
	wantErr(t, "TokenByHash of an unknown hash", err, store.ErrNotFound)
	_, err = st.TokenByHash(ctx, nil, used)
	wantErr(t, "TokenByHash of no hash", err, store.ErrNotFound)

	wantErr(t, "CreateToken of a taken id", st.CreateToken(ctx, session.Token{ID: "t-1", User: "bob", Created: at(0), Hash: hash("other")}), store.ErrExists)
	wantErr(t, "CreateToken of a taken hash", st.CreateToken(ctx, session.Token{ID: "t-9", User: "bob", Created: at(0), Hash: hash("secret-1")}), store.ErrExists)
	wantErr(t, "CreateToken for a missing user", st.CreateToken(ctx, session.Token{ID: "t-8", User: "carol", Created: at(0), Hash: hash("secret-8")}), store.ErrNotFound)
}

func testTokenRevoke(t *testing.T, st store.Store) {
	ctx := t.Context()
	mustUsers(t, st, "alice", "bob")
	tok := session.Token{ID: "t-1", User: "alice", Name: "ci", Created: at(0), LastUsed: at(time.Second), Hash: hash("secret-1")}
	if err := st.CreateToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	// Only the owner's revoke counts.
	wantErr(t, "RevokeToken of another user's token", st.RevokeToken(ctx, "bob", "t-1"), store.ErrNotFound)
	wantErr(t, "RevokeToken of a missing token", st.RevokeToken(ctx, "alice", "t-9"), store.ErrNotFound)
	if _, err := st.TokenByHash(ctx, tok.Hash, at(time.Minute)); err != nil {
		t.Fatalf("TokenByHash after refused revokes: %v", err)
	}

	if err := st.RevokeToken(ctx, "alice", "t-1"); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	_, err := st.TokenByHash(ctx, tok.Hash, at(time.Hour))
	wantErr(t, "TokenByHash of a revoked token", err, store.ErrNotFound)
	if err := st.RevokeToken(ctx, "alice", "t-1"); err != nil {
		t.Errorf("second RevokeToken: %v", err)
	}
	list := stamped(t, st, "alice", "t-1", at(time.Minute))
	if len(list) != 1 {
		t.Fatalf("ListTokens = %+v", list)
	}
	want := tok
	want.Revoked, want.LastUsed = true, at(time.Minute) // not the revoked lookup's
	sameToken(t, "revoked token", list[0], want)
}

func testTokenInvalid(t *testing.T, st store.Store) {
	ctx := t.Context()
	mustUsers(t, st, "alice")
	for _, tk := range []session.Token{
		{ID: "", User: "alice", Created: at(0), Hash: hash("a")},
		{ID: "t-1", User: "alice", Created: at(0)},
	} {
		if err := st.CreateToken(ctx, tk); err == nil {
			t.Errorf("CreateToken(%+v) succeeded", tk)
		}
	}
	if list, _ := st.ListTokens(ctx, "alice"); len(list) != 0 {
		t.Errorf("refused tokens were stored: %+v", list)
	}
}

func sameShare(t testing.TB, what string, got, want session.Share) {
	t.Helper()
	g, w := got, want
	g.Created, g.Expires, w.Created, w.Expires = g.Created.UTC(), g.Expires.UTC(), w.Created.UTC(), w.Expires.UTC()
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, g, w)
	}
}

func testShare(t *testing.T, st store.Store) {
	ctx := t.Context()
	mustCreate(t, st, full("s-1"), full("s-2"))
	sh := session.Share{ID: "sh-1", Session: "s-1", Mode: session.View, CreatedBy: "alice", Created: at(0), Expires: at(time.Hour), Hash: hash("share-1")}
	// Expired and revoked when created: ShareByHash still returns it.
	old := session.Share{ID: "sh-0", Session: "s-1", Mode: session.Control, CreatedBy: "alice", Created: at(-2 * time.Hour), Expires: at(-time.Hour), Revoked: true, Hash: hash("share-0")}
	other := session.Share{ID: "sh-2", Session: "s-2", Mode: session.View, CreatedBy: "bob", Created: at(0), Hash: hash("share-2")}
	for _, s := range []session.Share{sh, old, other} {
		if err := st.CreateShare(ctx, s); err != nil {
			t.Fatalf("CreateShare(%s): %v", s.ID, err)
		}
	}
	for _, want := range []session.Share{sh, old, other} {
		got, err := st.ShareByHash(ctx, want.Hash)
		if err != nil {
			t.Errorf("ShareByHash(%s): %v", want.ID, err)
			continue
		}
		sameShare(t, "ShareByHash", got, want)
	}
	_, err := st.ShareByHash(ctx, hash("unknown"))
	wantErr(t, "ShareByHash of an unknown hash", err, store.ErrNotFound)
	_, err = st.ShareByHash(ctx, nil)
	wantErr(t, "ShareByHash of no hash", err, store.ErrNotFound)

	list, err := st.ListShares(ctx, "s-1")
	if err != nil || len(list) != 2 {
		t.Fatalf("ListShares(s-1) = %+v, %v; want two", list, err)
	}
	slices.SortFunc(list, func(a, b session.Share) int { return a.Created.Compare(b.Created) })
	sameShare(t, "older listed share", list[0], old)
	sameShare(t, "listed share", list[1], sh)
	if list, err := st.ListShares(ctx, "s-9"); len(list) != 0 || err != nil {
		t.Errorf("ListShares(s-9) = %+v, %v; want none", list, err)
	}

	wantErr(t, "CreateShare of a taken id", st.CreateShare(ctx, session.Share{ID: "sh-1", Session: "s-2", Created: at(0), Hash: hash("x")}), store.ErrExists)
	wantErr(t, "CreateShare of a taken hash", st.CreateShare(ctx, session.Share{ID: "sh-9", Session: "s-2", Created: at(0), Hash: hash("share-1")}), store.ErrExists)
	wantErr(t, "CreateShare for a missing session", st.CreateShare(ctx, session.Share{ID: "sh-8", Session: "s-9", Created: at(0), Hash: hash("share-8")}), store.ErrNotFound)
}

func testShareRevoke(t *testing.T, st store.Store) {
	ctx := t.Context()
	mustCreate(t, st, full("s-1"), full("s-2"))
	sh := session.Share{ID: "sh-1", Session: "s-1", Mode: session.Control, CreatedBy: "alice", Created: at(0), Expires: at(time.Hour), Hash: hash("share-1")}
	if err := st.CreateShare(ctx, sh); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "RevokeShare through another session", st.RevokeShare(ctx, "s-2", "sh-1"), store.ErrNotFound)
	wantErr(t, "RevokeShare of a missing share", st.RevokeShare(ctx, "s-1", "sh-9"), store.ErrNotFound)
	if got, err := st.ShareByHash(ctx, sh.Hash); err != nil || got.Revoked {
		t.Fatalf("after refused revokes ShareByHash = %+v, %v", got, err)
	}
	if err := st.RevokeShare(ctx, "s-1", "sh-1"); err != nil {
		t.Fatalf("RevokeShare: %v", err)
	}
	want := sh
	want.Revoked = true
	got, err := st.ShareByHash(ctx, sh.Hash)
	if err != nil {
		t.Fatalf("ShareByHash of a revoked share: %v", err)
	}
	sameShare(t, "revoked share", got, want)
	if err := st.RevokeShare(ctx, "s-1", "sh-1"); err != nil {
		t.Errorf("second RevokeShare: %v", err)
	}
	if list, err := st.ListShares(ctx, "s-1"); err != nil || len(list) != 1 || !list[0].Revoked {
		t.Errorf("ListShares after revoke = %+v, %v", list, err)
	}
}

func testShareInvalid(t *testing.T, st store.Store) {
	ctx := t.Context()
	mustCreate(t, st, full("s-1"))
	for _, sh := range []session.Share{
		{ID: "", Session: "s-1", Created: at(0), Hash: hash("a")},
		{ID: "sh-1", Session: "s-1", Created: at(0)},
	} {
		if err := st.CreateShare(ctx, sh); err == nil {
			t.Errorf("CreateShare(%+v) succeeded", sh)
		}
	}
	if list, _ := st.ListShares(ctx, "s-1"); len(list) != 0 {
		t.Errorf("refused shares were stored: %+v", list)
	}
}

func sameEvents(t testing.TB, what string, got, want []session.AuditEvent) {
	t.Helper()
	norm := func(es []session.AuditEvent) []session.AuditEvent {
		out := slices.Clone(es)
		for i := range out {
			out[i].Time = out[i].Time.UTC()
		}
		if len(out) == 0 {
			return nil
		}
		return out
	}
	if g, w := norm(got), norm(want); !reflect.DeepEqual(g, w) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, g, w)
	}
}

func appendAll(t testing.TB, st store.Store, es ...session.AuditEvent) {
	t.Helper()
	for _, e := range es {
		if err := st.AppendAudit(t.Context(), e); err != nil {
			t.Fatalf("AppendAudit(%+v): %v", e, err)
		}
	}
}

func testAudit(t *testing.T, st store.Store) {
	ctx := t.Context()
	if got, err := st.ListAudit(ctx, store.AuditFilter{}); len(got) != 0 || err != nil {
		t.Errorf("ListAudit of an empty log = %+v, %v", got, err)
	}
	e1 := session.AuditEvent{Time: at(0), Actor: "alice", Action: "login", RemoteAddr: "192.0.2.1:5555", Detail: "ldap"}
	e2 := session.AuditEvent{Time: at(time.Second).In(time.Local), Actor: "alice", Action: "launch", Session: "s-1", RemoteAddr: "[2001:db8::1]:443"}
	// Two events in the same nanosecond come back newest-appended first.
	e3 := session.AuditEvent{Time: at(2 * time.Second), Actor: "bob", Action: "connect", Session: "s-1"}
	e4 := session.AuditEvent{Time: at(2 * time.Second), Actor: "bob", Action: "stop", Session: "s-1", Detail: "user asked"}
	appendAll(t, st, e1, e2, e3, e4)
	got, err := st.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	sameEvents(t, "ListAudit", got, []session.AuditEvent{e4, e3, e2, e1})
	// Appending the same event again is a second event, not a conflict.
	appendAll(t, st, e1)
	if got, _ := st.ListAudit(ctx, store.AuditFilter{}); len(got) != 5 {
		t.Errorf("after appending a repeat, %d events, want 5", len(got))
	}
}

func testAuditFilter(t *testing.T, st store.Store) {
	ctx := t.Context()
	var all []session.AuditEvent
	for i := range 10 {
		all = append(all, session.AuditEvent{
			Time:    at(time.Duration(i) * time.Minute),
			Actor:   []string{"alice", "bob"}[i%2],
			Action:  "connect",
			Session: []string{"s-1", "s-2", ""}[i%3],
			Detail:  fmt.Sprint(i),
		})
	}
	appendAll(t, st, all...)
	pick := func(idx ...int) []session.AuditEvent {
		var out []session.AuditEvent
		for _, i := range idx {
			out = append(out, all[i])
		}
		return out
	}
	for _, tc := range []struct {
		f    store.AuditFilter
		want []session.AuditEvent
	}{
		{store.AuditFilter{Limit: 3}, pick(9, 8, 7)},
		{store.AuditFilter{Actor: "alice"}, pick(8, 6, 4, 2, 0)},
		{store.AuditFilter{Session: "s-2"}, pick(7, 4, 1)},
		{store.AuditFilter{Actor: "bob", Session: "s-2"}, pick(7, 1)},
		{store.AuditFilter{Since: at(7 * time.Minute)}, pick(9, 8, 7)}, // inclusive
		{store.AuditFilter{Since: at(7*time.Minute + 1)}, pick(9, 8)},
		{store.AuditFilter{Since: at(time.Hour)}, nil},
		{store.AuditFilter{Since: at(-time.Hour)}, pick(9, 8, 7, 6, 5, 4, 3, 2, 1, 0)},
		{store.AuditFilter{Actor: "alice", Since: at(3 * time.Minute), Limit: 2}, pick(8, 6)},
		{store.AuditFilter{Actor: "carol"}, nil},
		{store.AuditFilter{Session: "s-1", Since: at(2 * time.Minute).In(time.FixedZone("UTC-5", -5*3600)), Limit: 10}, pick(9, 6, 3)},
	} {
		got, err := st.ListAudit(ctx, tc.f)
		if err != nil {
			t.Errorf("ListAudit(%+v): %v", tc.f, err)
			continue
		}
		sameEvents(t, fmt.Sprintf("ListAudit(%+v)", tc.f), got, tc.want)
	}
}

// testCanceledContext: a done context stops every call, and a write that
// it stops leaves nothing behind.
func testCanceledContext(t *testing.T, st store.Store) {
	mustCreate(t, st, full("s-1"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := st.CreateSession(ctx, full("s-2")); !errors.Is(err, context.Canceled) {
		t.Errorf("CreateSession with a canceled context: %v", err)
	}
	if _, err := st.GetSession(ctx, "s-1"); !errors.Is(err, context.Canceled) {
		t.Errorf("GetSession with a canceled context: %v", err)
	}
	if _, err := st.ListSessions(ctx, store.SessionFilter{}); !errors.Is(err, context.Canceled) {
		t.Errorf("ListSessions with a canceled context: %v", err)
	}
	called := false
	if _, err := st.UpdateSession(ctx, "s-1", func(*session.Session) error { called = true; return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("UpdateSession with a canceled context: %v", err)
	}
	if called {
		t.Errorf("update called with a canceled context")
	}
	if err := st.AppendAudit(ctx, session.AuditEvent{Time: at(0), Action: "x"}); !errors.Is(err, context.Canceled) {
		t.Errorf("AppendAudit with a canceled context: %v", err)
	}
	_, err := st.GetSession(t.Context(), "s-2")
	wantErr(t, "GetSession of a session created with a canceled context", err, store.ErrNotFound)
	if es, _ := st.ListAudit(t.Context(), store.AuditFilter{}); len(es) != 0 {
		t.Errorf("event appended with a canceled context: %+v", es)
	}
}

func testCloseTwice(t *testing.T, st store.Store) {
	if err := st.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	_ = st.Close() // must not panic or hang; what it returns is the implementation's
}

// Seed fills st with n sessions for benchmarks, owned round-robin by
// owners users named user-00000…, so each owner's sessions are spread
// through time as they would be in life. One in ten is active (Ready),
// the rest Ended, and every field is set, so reads decode real rows. It
// returns the owner names; session i has ID fmt.Sprintf("s-%07d", i) and
// is the i-th oldest.
func Seed(tb testing.TB, st store.Store, n, owners int) []string {
	tb.Helper()
	names := make([]string, owners)
	for i := range names {
		names[i] = fmt.Sprintf("user-%05d", i)
	}
	for i := range n {
		s := full(fmt.Sprintf("s-%07d", i))
		s.Owner = names[i%owners]
		s.Created = at(time.Duration(i) * time.Second)
		s.Started = s.Created.Add(time.Minute)
		s.LastSeen = s.Created.Add(time.Hour)
		s.State, s.Ended, s.Reason = session.Ended, s.Created.Add(2*time.Hour), "lifetime over"
		if i%10 == 0 {
			s.State, s.Ended, s.Reason = session.Ready, time.Time{}, ""
		}
		if err := st.CreateSession(tb.Context(), s); err != nil {
			tb.Fatalf("seed session %d: %v", i, err)
		}
	}
	return names
}

func testUserPut(t *testing.T, st store.Store) {
	ctx := t.Context()
	if err := st.PutUser(ctx, session.User{Name: "alice", Admin: true, Method: "local", Created: at(0), Groups: []string{"hpc", "staff"}, Email: "alice@example.org"}); err != nil {
		t.Fatalf("PutUser (new): %v", err)
	}
	if u, err := st.GetUser(ctx, "alice"); err != nil || !slices.Equal(u.Groups, []string{"hpc", "staff"}) || u.Email != "alice@example.org" {
		t.Fatalf("GetUser = %+v, %v; want groups hpc, staff", u, err)
	}
	// A later login says she is no longer an admin, through LDAP now, and
	// in one group less.
	if err := st.PutUser(ctx, session.User{Name: "alice", Admin: false, Method: "ldap", Created: at(time.Hour), Groups: []string{"hpc"}}); err != nil {
		t.Fatalf("PutUser (again): %v", err)
	}
	u, err := st.GetUser(ctx, "alice")
	if err != nil || u.Admin || u.Method != "ldap" || !u.Created.Equal(at(0)) || !slices.Equal(u.Groups, []string{"hpc"}) {
		t.Fatalf("GetUser = %+v, %v; want not admin, method ldap, created %v (kept), groups [hpc]", u, err, at(0))
	}
}

func testLogin(t *testing.T, st store.Store) {
	ctx := t.Context()
	mustUsers(t, st, "alice")
	old := session.Login{ID: "l-old", User: "alice", Created: at(0), Expires: at(time.Minute), Hash: hash("old")}
	l := session.Login{ID: "l-1", User: "alice", Created: at(time.Hour), Expires: at(2 * time.Hour), Hash: hash("login-1"), Provider: "idp", IDToken: "eyJ.x.y"}
	if err := st.CreateLogin(ctx, old); err != nil {
		t.Fatalf("CreateLogin(old): %v", err)
	}
	if err := st.CreateLogin(ctx, l); err != nil {
		t.Fatalf("CreateLogin: %v", err)
	}
	got, err := st.LoginByHash(ctx, hash("login-1"))
	if err != nil || got.ID != l.ID || got.User != "alice" || !got.Created.Equal(l.Created) || !got.Expires.Equal(l.Expires) || got.Provider != "idp" || got.IDToken != "eyJ.x.y" {
		t.Fatalf("LoginByHash = %+v, %v; want %+v", got, err, l)
	}
	// Creating l dropped the login that had expired by then.
	_, err = st.LoginByHash(ctx, hash("old"))
	wantErr(t, "LoginByHash of an expired login after a newer one", err, store.ErrNotFound)
	_, err = st.LoginByHash(ctx, hash("unknown"))
	wantErr(t, "LoginByHash of an unknown hash", err, store.ErrNotFound)
	_, err = st.LoginByHash(ctx, nil)
	wantErr(t, "LoginByHash of no hash", err, store.ErrNotFound)
	wantErr(t, "CreateLogin of a taken hash", st.CreateLogin(ctx, session.Login{ID: "l-2", User: "alice", Created: at(time.Hour), Expires: at(2 * time.Hour), Hash: hash("login-1")}), store.ErrExists)
	wantErr(t, "CreateLogin for a missing user", st.CreateLogin(ctx, session.Login{ID: "l-3", User: "carol", Created: at(time.Hour), Expires: at(2 * time.Hour), Hash: hash("login-3")}), store.ErrNotFound)

	if err := st.DeleteLogin(ctx, l.ID); err != nil {
		t.Fatalf("DeleteLogin: %v", err)
	}
	_, err = st.LoginByHash(ctx, hash("login-1"))
	wantErr(t, "LoginByHash after logout", err, store.ErrNotFound)
	if err := st.DeleteLogin(ctx, l.ID); err != nil {
		t.Errorf("second DeleteLogin: %v", err)
	}
}

func testRevokeUser(t *testing.T, st store.Store) {
	ctx := t.Context()
	mustUsers(t, st, "alice", "bob")
	for _, u := range []string{"alice", "bob"} {
		if err := st.CreateLogin(ctx, session.Login{ID: "l-" + u, User: u, Created: at(0), Expires: at(time.Hour), Hash: hash("login-" + u)}); err != nil {
			t.Fatal(err)
		}
		if err := st.CreateToken(ctx, session.Token{ID: "t-" + u, User: u, Created: at(0), Hash: hash("token-" + u)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.RevokeUser(ctx, "alice"); err != nil {
		t.Fatalf("RevokeUser: %v", err)
	}
	_, err := st.LoginByHash(ctx, hash("login-alice"))
	wantErr(t, "alice's login after RevokeUser", err, store.ErrNotFound)
	_, err = st.TokenByHash(ctx, hash("token-alice"), at(time.Minute))
	wantErr(t, "alice's token after RevokeUser", err, store.ErrNotFound)
	if _, err := st.LoginByHash(ctx, hash("login-bob")); err != nil {
		t.Errorf("bob's login after alice's RevokeUser: %v", err)
	}
	if _, err := st.TokenByHash(ctx, hash("token-bob"), at(time.Minute)); err != nil {
		t.Errorf("bob's token after alice's RevokeUser: %v", err)
	}
}

// stamped lists user's tokens once token id's LastUsed is at least at, or
// after five seconds, whichever is first.
func stamped(t *testing.T, st store.Store, user, id string, at time.Time) []session.Token {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		list, err := st.ListTokens(t.Context(), user)
		if err != nil {
			t.Fatalf("ListTokens(%s): %v", user, err)
		}
		for _, tk := range list {
			if tk.ID == id && !tk.LastUsed.Before(at) {
				return list
			}
		}
		if time.Now().After(deadline) {
			return list
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testTerms(t *testing.T, st store.Store) {
	ctx := t.Context()
	_, err := st.TermsAccepted(ctx, "alice", "gpu")
	wantErr(t, "TermsAccepted before any", err, store.ErrNotFound)
	if err := st.AcceptTerms(ctx, "alice", "gpu", "h1", at(0)); err != nil {
		t.Fatal(err)
	}
	if err := st.AcceptTerms(ctx, "alice", "gpu", "h2", at(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if h, err := st.TermsAccepted(ctx, "alice", "gpu"); err != nil || h != "h2" {
		t.Fatalf("TermsAccepted = %q, %v; want the last, h2", h, err)
	}
	_, err = st.TermsAccepted(ctx, "bob", "gpu")
	wantErr(t, "TermsAccepted of another user", err, store.ErrNotFound)
	if err := st.AcceptTerms(ctx, "", "gpu", "h", at(0)); err == nil {
		t.Fatal("AcceptTerms with no user accepted")
	}
}

// RunLeaser checks a [store.Leaser]: open returns two handles on one
// empty store, as two gateways would hold.
func RunLeaser(t *testing.T, open func(t *testing.T) (store.Leaser, store.Leaser)) {
	t.Run("Lease", func(t *testing.T) {
		ctx := t.Context()
		a, b := open(t)
		take := func(l store.Leaser, holder string, now time.Time) bool {
			t.Helper()
			ok, err := l.TakeLease(ctx, "expiry", holder, now, time.Minute)
			if err != nil {
				t.Fatalf("TakeLease(%s): %v", holder, err)
			}
			return ok
		}
		if !take(a, "gw-a", at(0)) {
			t.Fatal("a free lease was not taken")
		}
		if take(b, "gw-b", at(30*time.Second)) {
			t.Fatal("a held, unexpired lease was taken by another")
		}
		if !take(a, "gw-a", at(50*time.Second)) {
			t.Fatal("the holder could not renew")
		}
		// The renewal moved the expiry: at 1m30s a is still in.
		if take(b, "gw-b", at(90*time.Second)) {
			t.Fatal("a renewed lease was taken before its new expiry")
		}
		if !take(b, "gw-b", at(111*time.Second)) {
			t.Fatal("an expired lease was not taken over")
		}
		if take(a, "gw-a", at(112*time.Second)) {
			t.Fatal("the old holder took back a lease another holds")
		}
		if err := a.ReleaseLease(ctx, "expiry", "gw-a"); err != nil {
			t.Fatalf("ReleaseLease by a non-holder: %v", err)
		}
		if take(a, "gw-a", at(113*time.Second)) {
			t.Fatal("a release by a non-holder freed the lease")
		}
		if err := b.ReleaseLease(ctx, "expiry", "gw-b"); err != nil {
			t.Fatalf("ReleaseLease: %v", err)
		}
		if !take(a, "gw-a", at(114*time.Second)) {
			t.Fatal("a released lease was not free")
		}
		// Other names are other leases.
		if ok, err := b.TakeLease(ctx, "poll-slurm", "gw-b", at(114*time.Second), time.Minute); !ok || err != nil {
			t.Fatalf("TakeLease of another name = %v, %v", ok, err)
		}
	})
	t.Run("Lease/Race", func(t *testing.T) {
		a, b := open(t)
		var wg sync.WaitGroup
		won := make([]bool, 20)
		for i := range won {
			wg.Go(func() {
				l := a
				if i%2 == 1 {
					l = b
				}
				ok, err := l.TakeLease(t.Context(), "race", fmt.Sprintf("gw-%d", i), at(0), time.Minute)
				if err != nil {
					t.Errorf("TakeLease: %v", err)
				}
				won[i] = ok
			})
		}
		wg.Wait()
		if n := len(slices.DeleteFunc(won, func(w bool) bool { return !w })); n != 1 {
			t.Errorf("%d of 20 racing holders got the lease, want 1", n)
		}
	})
}

// RunSharedSecrets checks a [store.SharedSecrets]: open returns two
// handles on one empty store.
func RunSharedSecrets(t *testing.T, open func(t *testing.T) (store.SharedSecrets, store.SharedSecrets)) {
	t.Run("SharedSecret", func(t *testing.T) {
		a, b := open(t)
		ctx := t.Context()
		got, err := a.SharedSecret(ctx, "master", []byte("from-a"))
		if err != nil || string(got) != "from-a" {
			t.Fatalf("first SharedSecret = %q, %v; want its own", got, err)
		}
		if got, err := b.SharedSecret(ctx, "master", []byte("from-b")); err != nil || string(got) != "from-a" {
			t.Fatalf("second SharedSecret = %q, %v; want the first's", got, err)
		}
		if got, err := b.SharedSecret(ctx, "ca", []byte("ca-b")); err != nil || string(got) != "ca-b" {
			t.Fatalf("another name = %q, %v", got, err)
		}
	})
	t.Run("SharedSecret/Race", func(t *testing.T) {
		a, b := open(t)
		var wg sync.WaitGroup
		got := make([]string, 20)
		for i := range got {
			wg.Go(func() {
				s := a
				if i%2 == 1 {
					s = b
				}
				v, err := s.SharedSecret(t.Context(), "k", fmt.Appendf(nil, "v%d", i))
				if err != nil {
					t.Errorf("SharedSecret: %v", err)
				}
				got[i] = string(v)
			})
		}
		wg.Wait()
		for _, g := range got {
			if g != got[0] {
				t.Fatalf("racing gateways got different secrets: %q", got)
			}
		}
	})
}

// RunSpender checks a [store.Spender]: open returns two handles on one
// empty store, as two gateways hold.
func RunSpender(t *testing.T, open func(t *testing.T) (store.Spender, store.Spender)) {
	t.Run("Spend", func(t *testing.T) {
		a, b := open(t)
		ctx := t.Context()
		if err := a.Spend(ctx, "n-1", at(0), at(time.Minute)); err != nil {
			t.Fatalf("first Spend: %v", err)
		}
		wantErr(t, "Spend again at another handle", b.Spend(ctx, "n-1", at(time.Second), at(time.Minute)), store.ErrExists)
		wantErr(t, "Spend again at the same", a.Spend(ctx, "n-1", at(59*time.Second), at(2*time.Minute)), store.ErrExists)
		if err := b.Spend(ctx, "n-2", at(time.Second), at(time.Minute)); err != nil {
			t.Fatalf("another key: %v", err)
		}
		// Once expired, a record is forgotten (the ticket itself is refused
		// as expired by then).
		if err := b.Spend(ctx, "n-1", at(time.Minute), at(2*time.Minute)); err != nil {
			t.Fatalf("Spend after the expiry: %v", err)
		}
	})
	t.Run("Spend/Race", func(t *testing.T) {
		a, b := open(t)
		var wg sync.WaitGroup
		var mu sync.Mutex
		won := 0
		for i := range 20 {
			wg.Go(func() {
				s := a
				if i%2 == 1 {
					s = b
				}
				err := s.Spend(t.Context(), "race", at(0), at(time.Minute))
				switch {
				case err == nil:
					mu.Lock()
					won++
					mu.Unlock()
				case !errors.Is(err, store.ErrExists):
					t.Errorf("Spend: %v", err)
				}
			})
		}
		wg.Wait()
		if won != 1 {
			t.Errorf("%d of 20 racing spends won, want 1", won)
		}
	})
}

// RunHandoffs checks a [store.Handoffs]: open returns two handles on one
// empty store.
func RunHandoffs(t *testing.T, open func(t *testing.T) (store.Handoffs, store.Handoffs)) {
	t.Run("Handoff", func(t *testing.T) {
		a, b := open(t)
		ctx := t.Context()
		key, mine, theirs := hash("link"), hash("browser"), hash("scanner")
		if err := a.PutHandoff(ctx, key, mine, []byte("v"), at(0), at(time.Minute)); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "PutHandoff of a taken key", a.PutHandoff(ctx, key, theirs, []byte("w"), at(0), at(time.Minute)), store.ErrExists)
		if v, found, ok, err := b.TakeHandoff(ctx, key, theirs, at(time.Second)); err != nil || !found || ok || v != nil {
			t.Fatalf("take by another browser = %q, %v, %v, %v; want found, not mine", v, found, ok, err)
		}
		if v, found, ok, err := b.TakeHandoff(ctx, key, mine, at(time.Second)); err != nil || !found || !ok || string(v) != "v" {
			t.Fatalf("take by its browser at another handle = %q, %v, %v, %v", v, found, ok, err)
		}
		if _, found, ok, err := a.TakeHandoff(ctx, key, mine, at(2*time.Second)); err != nil || found || ok {
			t.Fatalf("second take = %v, %v, %v; want gone", found, ok, err)
		}
		// Expired: gone for everyone.
		if err := a.PutHandoff(ctx, hash("old"), mine, []byte("v"), at(0), at(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if _, found, ok, err := b.TakeHandoff(ctx, hash("old"), mine, at(time.Minute)); err != nil || found || ok {
			t.Fatalf("take after expiry = %v, %v, %v; want gone", found, ok, err)
		}
	})
	t.Run("Handoff/Race", func(t *testing.T) {
		a, b := open(t)
		key, bind := hash("link"), hash("browser")
		if err := a.PutHandoff(t.Context(), key, bind, []byte("v"), at(0), at(time.Minute)); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		won := 0
		for i := range 20 {
			wg.Go(func() {
				s := a
				if i%2 == 1 {
					s = b
				}
				_, _, ok, err := s.TakeHandoff(t.Context(), key, bind, at(time.Second))
				if err != nil {
					t.Errorf("TakeHandoff: %v", err)
				}
				if ok {
					mu.Lock()
					won++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if won != 1 {
			t.Errorf("%d of 20 racing takes won, want 1", won)
		}
	})
}
