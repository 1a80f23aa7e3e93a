package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
	"github.com/airlock-hpc/airlock/internal/store/storetest"
)

func TestMain(m *testing.M) {
	// Each leftover goroutine of these is a DB or rows someone forgot to close.
	os.Exit(realtest.LeakCheckMain(m, "database/sql.", "modernc.org/sqlite", "internal/store/"))
}

// mustOpen opens cfg (a file in a new temporary directory if cfg.Path is
// empty), logging to tb, and closes it when tb ends.
func mustOpen(tb testing.TB, cfg Config) *DB {
	tb.Helper()
	if cfg.Path == "" {
		cfg.Path = filepath.Join(tb.TempDir(), "airlock.db")
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(tb)
	}
	db, err := Open(tb.Context(), cfg)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// testLogger logs to tb's output, shown when a test fails; benchmarks,
// whose output is always shown, log nowhere.
func testLogger(tb testing.TB) *slog.Logger {
	if _, ok := tb.(*testing.B); ok {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tb.Output(), nil))
}

// rawOpen opens path without this package, as an operator's tool would.
func rawOpen(t *testing.T, path string) *sql.DB {
	t.Helper()
	raw, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return raw
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return mustOpen(t, Config{}) })
}

func TestMigrations(t *testing.T) {
	ms, err := migrations()
	if err != nil {
		t.Fatalf("embedded migrations: %v", err)
	}
	path := filepath.Join(t.TempDir(), "airlock.db")
	first := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	read := func(db *DB) (versions []int64, applied []time.Time) {
		t.Helper()
		rows, err := db.read.QueryContext(t.Context(), "SELECT version, applied FROM schema_migrations ORDER BY version")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var v, a int64
			if err := rows.Scan(&v, &a); err != nil {
				t.Fatal(err)
			}
			versions, applied = append(versions, v), append(applied, fromNanos(a))
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return versions, applied
	}

	db := mustOpen(t, Config{Path: path, Now: func() time.Time { return first }})
	versions, applied := read(db)
	if len(versions) != len(ms) || versions[len(versions)-1] != ms[len(ms)-1].version {
		t.Fatalf("after first open, versions %v; want 1…%d", versions, len(ms))
	}
	for _, a := range applied {
		if !a.Equal(first) {
			t.Errorf("applied %v, want %v", a, first)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopening applies nothing again: the times are the first open's.
	db = mustOpen(t, Config{Path: path, Now: func() time.Time { return first.Add(time.Hour) }})
	v2, a2 := read(db)
	if !reflect.DeepEqual(v2, versions) || !reflect.DeepEqual(a2, applied) {
		t.Errorf("after reopen, versions %v applied %v; want %v %v", v2, a2, versions, applied)
	}
}

func TestMigrationFilesNumbered(t *testing.T) {
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range ms {
		if want := fmt.Sprintf("%04d_", i+1); !strings.HasPrefix(m.name, want) {
			t.Errorf("migration %s: want a name starting %s", m.name, want)
		}
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "airlock.db")
	db := mustOpen(t, Config{Path: path})
	if err := db.CreateSession(t.Context(), &session.Session{ID: "s-1", Owner: "alice", State: session.Ready}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	// As a newer airlock would have left it.
	raw := rawOpen(t, path)
	if _, err := raw.ExecContext(t.Context(), "INSERT INTO schema_migrations (version, name, applied) VALUES (9999, '9999_future.sql', 0)"); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	_, err = Open(t.Context(), Config{Path: path, Logger: testLogger(t)})
	if !errors.Is(err, ErrNewerSchema) {
		t.Fatalf("Open of a newer schema: %v; want an error wrapping ErrNewerSchema", err)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "9999") {
		t.Errorf("error %q should name the file and its version", err)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(before) != string(after) {
		t.Errorf("refused Open changed the file")
	}
}

// TestReopen: everything stored survives closing and reopening, exactly.
func TestReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "airlock.db")
	zone := time.FixedZone("UTC+5:30", 5*3600+1800)
	now := time.Now().In(zone) // with a monotonic reading, which is not kept
	s := &session.Session{
		ID: "s-1", Owner: "alice", Profile: "matlab", State: session.Ready, Reason: "r", Persistent: true,
		CPUs: 4, MemoryMB: 8192, Lifetime: 90*time.Minute + 7, Created: now, Started: now.Add(time.Second),
		LastSeen: now.Add(time.Minute), Backend: "local", BackendRef: "4242", Node: "n1",
		Endpoints: map[string]string{"web": "127.0.0.1:9000"}, TLSSHA256: "ab12",
	}
	u := session.User{Name: "alice", Admin: true, Created: now}
	tok := session.Token{ID: "t-1", User: "alice", Name: "ci", Created: now, LastUsed: now.Add(time.Hour), Hash: []byte{0, 1, 2, 255}}
	sh := session.Share{ID: "sh-1", Session: "s-1", Mode: session.View, CreatedBy: "alice", Created: now, Expires: now.Add(time.Hour), Hash: []byte{9, 0, 9}}
	ev := session.AuditEvent{Time: now, Actor: "alice", Action: "launch", Session: "s-1", RemoteAddr: "[::1]:1", Detail: "d"}

	db := mustOpen(t, Config{Path: path})
	for _, err := range []error{
		db.CreateUser(ctx, u), db.CreateToken(ctx, tok), db.CreateSession(ctx, s),
		db.CreateShare(ctx, sh), db.AppendAudit(ctx, ev),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db = mustOpen(t, Config{Path: path})
	// Exactly what went in, in UTC.
	s.Created, s.Started, s.LastSeen = s.Created.UTC(), s.Started.UTC(), s.LastSeen.UTC()
	u.Created = u.Created.UTC()
	tok.Created, tok.LastUsed = tok.Created.UTC(), tok.LastUsed.UTC()
	sh.Created, sh.Expires = sh.Created.UTC(), sh.Expires.UTC()
	ev.Time = ev.Time.UTC()

	gotS, err := db.GetSession(ctx, "s-1")
	if err != nil || !reflect.DeepEqual(gotS, s) {
		t.Errorf("session after reopen:\n got %+v, %v\nwant %+v", gotS, err, s)
	}
	if gotU, err := db.GetUser(ctx, "alice"); err != nil || !reflect.DeepEqual(gotU, u) {
		t.Errorf("user after reopen: got %+v, %v; want %+v", gotU, err, u)
	}
	if gotT, err := db.ListTokens(ctx, "alice"); err != nil || !reflect.DeepEqual(gotT, []session.Token{tok}) {
		t.Errorf("tokens after reopen: got %+v, %v; want %+v", gotT, err, tok)
	}
	if gotSh, err := db.ShareByHash(ctx, sh.Hash); err != nil || !reflect.DeepEqual(gotSh, sh) {
		t.Errorf("share after reopen: got %+v, %v; want %+v", gotSh, err, sh)
	}
	if gotE, err := db.ListAudit(ctx, store.AuditFilter{}); err != nil || !reflect.DeepEqual(gotE, []session.AuditEvent{ev}) {
		t.Errorf("audit after reopen: got %+v, %v; want %+v", gotE, err, ev)
	}
	if gotS.Created.Location() != time.UTC {
		t.Errorf("times come back in %v, want UTC", gotS.Created.Location())
	}
}

// TestUpdateReturnsStored: UpdateSession returns the session exactly as
// GetSession then reads it, zones and all, and keeps nil and empty maps
// apart.
func TestUpdateReturnsStored(t *testing.T) {
	ctx := t.Context()
	db := mustOpen(t, Config{})
	if err := db.CreateSession(ctx, &session.Session{ID: "s-1", State: session.Queued, Endpoints: map[string]string{}}); err != nil {
		t.Fatal(err)
	}
	got, _ := db.GetSession(ctx, "s-1")
	if got.Endpoints == nil {
		t.Errorf("an empty Endpoints map came back nil")
	}
	upd, err := db.UpdateSession(ctx, "s-1", func(s *session.Session) error {
		s.LastSeen = time.Now().In(time.FixedZone("x", -3600))
		s.Endpoints = nil
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, _ = db.GetSession(ctx, "s-1")
	if !reflect.DeepEqual(upd, got) {
		t.Errorf("UpdateSession returned\n %+v\nGetSession reads\n %+v", upd, got)
	}
	if got.Endpoints != nil {
		t.Errorf("a nil Endpoints map came back %v", got.Endpoints)
	}
}

// TestClock: times left zero are stamped with Config.Now.
func TestClock(t *testing.T) {
	ctx := t.Context()
	clock := time.Date(2030, 6, 1, 12, 0, 0, 1, time.UTC)
	db := mustOpen(t, Config{Now: func() time.Time { return clock }})
	s := &session.Session{ID: "s-1", Owner: "alice", State: session.Queued}
	if err := db.CreateSession(ctx, s); err != nil {
		t.Fatal(err)
	}
	if !s.Created.Equal(clock) {
		t.Errorf("CreateSession left the caller's Created %v, want %v", s.Created, clock)
	}
	if got, _ := db.GetSession(ctx, "s-1"); !got.Created.Equal(clock) {
		t.Errorf("stored Created %v, want %v", got.Created, clock)
	}
	if err := db.CreateUser(ctx, session.User{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	if u, _ := db.GetUser(ctx, "alice"); !u.Created.Equal(clock) {
		t.Errorf("user Created %v, want %v", u.Created, clock)
	}
	if err := db.CreateToken(ctx, session.Token{ID: "t-1", User: "alice", Hash: []byte("h")}); err != nil {
		t.Fatal(err)
	}
	tok, err := db.TokenByHash(ctx, []byte("h"), time.Time{})
	if err != nil || !tok.Created.Equal(clock) || !tok.LastUsed.Equal(clock) {
		t.Errorf("token = %+v, %v; want Created and LastUsed %v", tok, err, clock)
	}
	if err := db.CreateShare(ctx, session.Share{ID: "sh-1", Session: "s-1", Hash: []byte("h")}); err != nil {
		t.Fatal(err)
	}
	if sh, _ := db.ShareByHash(ctx, []byte("h")); !sh.Created.Equal(clock) || !sh.Expires.IsZero() {
		t.Errorf("share Created %v Expires %v; want %v and zero", sh.Created, sh.Expires, clock)
	}
	if err := db.AppendAudit(ctx, session.AuditEvent{Action: "x"}); err != nil {
		t.Fatal(err)
	}
	if es, _ := db.ListAudit(ctx, store.AuditFilter{}); len(es) != 1 || !es[0].Time.Equal(clock) {
		t.Errorf("audit = %+v, want Time %v", es, clock)
	}
}

// TestTimeRange: a time an int64 of nanoseconds cannot hold is refused,
// not wrapped around, and nothing is written.
func TestTimeRange(t *testing.T) {
	ctx := t.Context()
	db := mustOpen(t, Config{})
	far := time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)
	early := time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := db.CreateSession(ctx, &session.Session{ID: "s-1", State: session.Queued, Created: far}); err == nil {
		t.Errorf("CreateSession created in 2300 succeeded")
	}
	if err := db.CreateSession(ctx, &session.Session{ID: "s-1", State: session.Queued, Started: early}); err == nil {
		t.Errorf("CreateSession started in 1600 succeeded")
	}
	if _, err := db.GetSession(ctx, "s-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("refused session was stored: %v", err)
	}
	if err := db.CreateSession(ctx, &session.Session{ID: "s-1", State: session.Queued}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.UpdateSession(ctx, "s-1", func(s *session.Session) error { s.Ended = far; return nil }); err == nil {
		t.Errorf("UpdateSession to end in 2300 succeeded")
	}
	if s, _ := db.GetSession(ctx, "s-1"); !s.Ended.IsZero() {
		t.Errorf("refused update was stored")
	}
	if err := db.AppendAudit(ctx, session.AuditEvent{Time: far, Action: "x"}); err == nil {
		t.Errorf("AppendAudit in 2300 succeeded")
	}
	if err := db.AppendAudit(ctx, session.AuditEvent{Action: "y"}); err != nil {
		t.Fatal(err)
	}
	// A filter may name any time.
	for since, want := range map[time.Time]int{early: 1, far: 0, time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC): 1} {
		if es, err := db.ListAudit(ctx, store.AuditFilter{Since: since}); err != nil || len(es) != want {
			t.Errorf("ListAudit(since %v) = %d events, %v; want %d", since, len(es), err, want)
		}
	}
}

// TestEndpointsColumn: a NULL or empty endpoints column, as a hand edit or
// a later migration's default could leave, reads as no endpoints; a
// corrupt one is an error naming the column, not a panic.
func TestEndpointsColumn(t *testing.T) {
	ctx := t.Context()
	db := mustOpen(t, Config{})
	if err := db.CreateSession(ctx, &session.Session{ID: "s-1", State: session.Ready, Endpoints: map[string]string{"a": "b"}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		col  any
		want map[string]string
		err  bool
	}{
		{nil, nil, false},
		{"", nil, false},
		{"null", nil, false},
		{"{}", map[string]string{}, false},
		{`{"vnc":"h:1"}`, map[string]string{"vnc": "h:1"}, false},
		{"{not json", nil, true},
		{`["a"]`, nil, true},
	} {
		if _, err := db.write.ExecContext(ctx, "UPDATE sessions SET endpoints = ? WHERE id = 's-1'", tc.col); err != nil {
			t.Fatal(err)
		}
		got, err := db.GetSession(ctx, "s-1")
		if tc.err {
			if err == nil || !strings.Contains(err.Error(), "endpoints") {
				t.Errorf("endpoints %q: error %v, want one naming the column", tc.col, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got.Endpoints, tc.want) {
			t.Errorf("endpoints %q: got %#v, %v; want %#v", tc.col, got, err, tc.want)
		}
	}
}

// TestAuditAppendOnly: the schema refuses to change or remove an event
// even through SQL that bypasses the store.
func TestAuditAppendOnly(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "airlock.db")
	db := mustOpen(t, Config{Path: path})
	if err := db.AppendAudit(ctx, session.AuditEvent{Actor: "alice", Action: "login"}); err != nil {
		t.Fatal(err)
	}
	raw := rawOpen(t, path)
	for _, q := range []string{"UPDATE audit SET actor = 'mallory'", "DELETE FROM audit"} {
		if _, err := raw.ExecContext(ctx, q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: %v, want refused as append-only", q, err)
		}
	}
	if es, _ := db.ListAudit(ctx, store.AuditFilter{}); len(es) != 1 || es[0].Actor != "alice" {
		t.Errorf("audit after refused changes: %+v", es)
	}
}

func TestPragmas(t *testing.T) {
	ctx := t.Context()
	db := mustOpen(t, Config{BusyTimeout: 1234 * time.Millisecond})
	for name, h := range map[string]*sql.DB{"writer": db.write, "reader": db.read} {
		// Each reader connection runs the PRAGMAs; ask on several at once.
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				conn, err := h.Conn(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				defer conn.Close()
				for pragma, want := range map[string]string{
					"journal_mode": "wal", "foreign_keys": "1", "busy_timeout": "1234", "synchronous": "1",
					"query_only": map[string]string{"writer": "0", "reader": "1"}[name],
				} {
					var got string
					if err := conn.QueryRowContext(ctx, "PRAGMA "+pragma).Scan(&got); err != nil || got != want {
						t.Errorf("%s: PRAGMA %s = %q, %v; want %q", name, pragma, got, err, want)
					}
				}
			})
		}
		wg.Wait()
	}
	if _, err := db.read.ExecContext(ctx, "INSERT INTO users (name, admin, created) VALUES ('x', 0, 0)"); err == nil {
		t.Errorf("a write through the read pool succeeded")
	}
}

// TestQueryPlans: the list and count queries read an index in the order
// they return, with no sort and no table scan, whatever the table's size.
// This is the performance contract the benchmarks measure, checked
// without a clock.
func TestQueryPlans(t *testing.T) {
	ctx := t.Context()
	db := mustOpen(t, Config{})
	type query struct {
		q     string
		args  []any
		index string
	}
	list := func(f store.SessionFilter, index string) query {
		q, args := listSessionsQuery(f)
		return query{q, args, index}
	}
	for _, tc := range []query{
		list(store.SessionFilter{Owner: "alice"}, "sessions_owner_created (owner=?)"),
		list(store.SessionFilter{Owner: "alice", Limit: 100}, "sessions_owner_created (owner=?)"),
		list(store.SessionFilter{Limit: 100}, "sessions_created"),
		list(store.SessionFilter{States: []session.State{session.Ready}, Limit: 100}, "sessions_state_created (state=?)"),
		{selectSession + " WHERE id = ?", []any{"s-1"}, "sqlite_autoindex_sessions_1 (id=?)"},
		{countActive, nil, "sessions_active_owner"},
		{countActiveOwner, []any{"alice"}, "sessions_active_owner (owner=?)"},
		{"SELECT " + tokenCols + " FROM tokens WHERE hash = ?", []any{[]byte("h")}, "sqlite_autoindex_tokens_2 (hash=?)"},
		{"SELECT time FROM audit ORDER BY time DESC, id DESC LIMIT 100", nil, "audit_time"},
		{"SELECT time FROM audit WHERE actor = ? ORDER BY time DESC, id DESC", []any{"alice"}, "audit_actor (actor=?)"},
	} {
		rows, err := db.read.QueryContext(ctx, "EXPLAIN QUERY PLAN "+tc.q, tc.args...)
		if err != nil {
			t.Fatalf("%s: %v", tc.q, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		p := strings.Join(plan, "; ")
		if !strings.Contains(p, tc.index) || strings.Contains(p, "TEMP B-TREE") {
			t.Errorf("%s\nplan: %s\nwant index %s and no sort", tc.q, p, tc.index)
		}
	}
}

// TestTwoWriters: two DBs on one file, as two processes would be, each
// with its own writer: busy_timeout and BEGIN IMMEDIATE make them take
// turns, and no increment is lost.
func TestTwoWriters(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "airlock.db")
	a, b := mustOpen(t, Config{Path: path}), mustOpen(t, Config{Path: path})
	if err := a.CreateSession(ctx, &session.Session{ID: "s-1", State: session.Ready}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 20 {
		db := []*DB{a, b}[i%2]
		wg.Go(func() {
			if _, err := db.UpdateSession(ctx, "s-1", func(s *session.Session) error { s.CPUs++; return nil }); err != nil {
				t.Errorf("UpdateSession: %v", err)
			}
		})
	}
	wg.Wait()
	if s, _ := b.GetSession(ctx, "s-1"); s.CPUs != 20 {
		t.Errorf("CPUs = %d after 20 increments from two writers", s.CPUs)
	}
}

// TestUpdateHoldsWriter documents why update must not call the store: the
// write it makes waits for the update, so only ctx ends it.
func TestUpdateHoldsWriter(t *testing.T) {
	db := mustOpen(t, Config{})
	if err := db.CreateSession(t.Context(), &session.Session{ID: "s-1", State: session.Ready}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err := db.UpdateSession(t.Context(), "s-1", func(s *session.Session) error {
		return db.AppendAudit(ctx, session.AuditEvent{Action: "nested"})
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a write from inside update: %v, want it to wait until its context ended", err)
	}
	// Reads are fine: they do not need the writer.
	_, err = db.UpdateSession(t.Context(), "s-1", func(s *session.Session) error {
		_, err := db.GetSession(t.Context(), "s-1")
		return err
	})
	if err != nil {
		t.Errorf("a read from inside update: %v", err)
	}
}

// TestUpdatePanics: a panicking update rolls back and frees the writer.
func TestUpdatePanics(t *testing.T) {
	ctx := t.Context()
	db := mustOpen(t, Config{})
	if err := db.CreateSession(ctx, &session.Session{ID: "s-1", State: session.Ready}); err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Errorf("the update's panic did not reach the caller")
			}
		}()
		db.UpdateSession(ctx, "s-1", func(s *session.Session) error { s.CPUs = 9; panic("boom") })
	}()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := db.UpdateSession(ctx, "s-1", func(s *session.Session) error { s.MemoryMB = 1; return nil })
	if err != nil || s.CPUs != 0 {
		t.Errorf("after a panicking update: %+v, %v; want the writer free and CPUs 0", s, err)
	}
}

// TestErrorText: errors say what failed on which object.
func TestErrorText(t *testing.T) {
	ctx := t.Context()
	db := mustOpen(t, Config{})
	s := &session.Session{ID: "s-1", State: session.Ready}
	if err := db.CreateSession(ctx, s); err != nil {
		t.Fatal(err)
	}
	_, errGet := db.GetSession(ctx, "s-2")
	_, errUpd := db.UpdateSession(ctx, "s-1", func(s *session.Session) error { s.State = session.Queued; return nil })
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errGet, "get session s-2: not found"},
		{db.CreateSession(ctx, s), "create session s-1: already exists"},
		{errUpd, "update session s-1: from ready to queued: conflict"},
		{db.CreateSession(ctx, &session.Session{ID: "s-3", State: "gone"}), `create session s-3: state "gone": not a session state`},
		{db.RevokeToken(ctx, "alice", "t-1"), "revoke token t-1 of alice: not found"},
		{db.CreateShare(ctx, session.Share{ID: "sh-1", Session: "s-9", Hash: []byte("h")}), "create share sh-1: session s-9: not found"},
	} {
		if tc.err == nil || tc.err.Error() != tc.want {
			t.Errorf("error %q, want %q", tc.err, tc.want)
		}
	}
}

func TestClose(t *testing.T) {
	db, err := Open(t.Context(), Config{Path: filepath.Join(t.TempDir(), "airlock.db"), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := db.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v, want an error wrapping net.ErrClosed", err)
	}
	if _, err := db.GetSession(t.Context(), "s-1"); err == nil {
		t.Errorf("GetSession after Close succeeded")
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	notDB := filepath.Join(dir, "not.db")
	if err := os.WriteFile(notDB, []byte(strings.Repeat("not a database ", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"", filepath.Join(dir, "missing", "airlock.db"), notDB} {
		db, err := Open(t.Context(), Config{Path: path, Logger: testLogger(t)})
		if err == nil {
			db.Close()
			t.Errorf("Open(%q) succeeded", path)
			continue
		}
		if !strings.HasPrefix(err.Error(), "open store") || !strings.Contains(err.Error(), path) {
			t.Errorf("Open(%q): error %q should start \"open store\" and name the path", path, err)
		}
	}
}

// TestOddPath: characters that mean something in a file: URI are taken
// literally.
func TestOddPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a%20b?c#d")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "air lock%3f.db")
	db := mustOpen(t, Config{Path: path})
	if err := db.CreateUser(t.Context(), session.User{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database not at %s: %v", path, err)
	}
	if u, err := db.GetUser(t.Context(), "alice"); err != nil || u.Name != "alice" {
		t.Errorf("GetUser through the read pool = %+v, %v: readers opened another file?", u, err)
	}
}

// TestEndedLiteral: CountActive and the partial index spell Ended as
// 'ended' in SQL, where the Go constant cannot reach.
func TestEndedLiteral(t *testing.T) {
	if session.Ended != "ended" {
		t.Fatalf("session.Ended is %q: update CountActive and the sessions_active_owner index", session.Ended)
	}
}

// TestLookupsWhileLocked holds the write lock from another connection (an
// operator's sqlite3 shell, a second airlock) for longer than the busy
// timeout: the lookups that decide who someone is must still answer, at
// once and correctly, and the token's last-used stamp lands once the lock
// is gone.
func TestLookupsWhileLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "airlock.db")
	db := mustOpen(t, Config{Path: path, BusyTimeout: 300 * time.Millisecond})
	ctx := t.Context()
	if err := db.CreateUser(ctx, session.User{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateToken(ctx, session.Token{ID: "t-1", User: "alice", Hash: []byte("tok")}); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateLogin(ctx, session.Login{ID: "l-1", User: "alice", Expires: time.Now().Add(time.Hour), Hash: []byte("login")}); err != nil {
		t.Fatal(err)
	}

	raw := rawOpen(t, path)
	conn, err := raw.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	used := time.Now().Add(time.Minute)
	start := time.Now()
	tok, err := db.TokenByHash(ctx, []byte("tok"), used)
	if err != nil || tok.ID != "t-1" {
		t.Fatalf("TokenByHash with the write lock held elsewhere = %+v, %v; want the token", tok, err)
	}
	if d := time.Since(start); d > 2*stampWait+100*time.Millisecond {
		t.Errorf("TokenByHash took %v with the database locked: it waited for its stamp", d)
	}
	if l, err := db.LoginByHash(ctx, []byte("login")); err != nil || l.ID != "l-1" {
		t.Fatalf("LoginByHash with the write lock held elsewhere = %+v, %v", l, err)
	}
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	conn.Close()

	// The stamp that failed under the lock is written by a later lookup.
	used2 := used.Add(time.Minute)
	if _, err := db.TokenByHash(ctx, []byte("tok"), used2); err != nil {
		t.Fatal(err)
	}
	err = realtest.WaitFor(5*time.Second, func() error {
		ts, err := db.ListTokens(ctx, "alice")
		if err != nil || len(ts) != 1 {
			return fmt.Errorf("ListTokens = %v, %v", ts, err)
		}
		if !ts[0].LastUsed.Equal(used2.UTC().Truncate(0)) {
			return fmt.Errorf("LastUsed = %v, want %v", ts[0].LastUsed, used2)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
