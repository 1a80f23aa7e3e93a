package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/auth"
	"github.com/airlock-hpc/airlock/internal/auth/ratelimit"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
	"github.com/airlock-hpc/airlock/internal/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(realtest.PostgresMain(m)) }

func mustOpen(t testing.TB, dsn string) *DB {
	t.Helper()
	db, err := Open(t.Context(), Config{DSN: dsn})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestConformance runs the store suite against a real PostgreSQL server,
// each subtest in a database of its own.
func TestConformance(t *testing.T) {
	t.Parallel()
	pg := realtest.SharedPostgres(t)
	storetest.Run(t, func(t *testing.T) store.Store { return mustOpen(t, pg.NewDatabase(t)) })
}

// TestLeaser: two handles on one database, as two gateways have.
func TestLeaser(t *testing.T) {
	t.Parallel()
	pg := realtest.SharedPostgres(t)
	storetest.RunLeaser(t, func(t *testing.T) (store.Leaser, store.Leaser) {
		dsn := pg.NewDatabase(t)
		return mustOpen(t, dsn), mustOpen(t, dsn)
	})
}

// TestServerGone: with the server down every call is an error that is not
// ErrNotFound: a store fault is "try again", never a false "no" (a token
// reported unknown, a share link reported missing, a lease reported held
// by another).
func TestServerGone(t *testing.T) {
	t.Parallel()
	pg := realtest.StartPostgres(t)
	db := mustOpen(t, pg.NewDatabase(t))
	ctx := t.Context()
	if err := db.CreateUser(ctx, session.User{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	pg.Stop()
	check := func(what string, err error) {
		t.Helper()
		if err == nil || errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s with the server gone: %v; want a fault, not a not-found", what, err)
		}
	}
	_, err := db.TokenByHash(ctx, []byte("h"), time.Time{})
	check("TokenByHash", err)
	_, err = db.LoginByHash(ctx, []byte("h"))
	check("LoginByHash", err)
	_, err = db.ShareByHash(ctx, []byte("h"))
	check("ShareByHash", err)
	_, err = db.GetSession(ctx, "s-1")
	check("GetSession", err)
	_, err = db.GetUser(ctx, "alice")
	check("GetUser", err)
	_, err = db.GetTOTP(ctx, "alice")
	check("GetTOTP", err)
	ok, err := db.TakeLease(ctx, "expiry", "gw-a", time.Now(), time.Minute)
	if ok || err == nil {
		t.Errorf("TakeLease with the server gone = %v, %v; want false and an error", ok, err)
	}
}

// TestMigrateTogether: gateways starting at once on an empty database
// migrate it once between them (the advisory lock), none failing.
func TestMigrateTogether(t *testing.T) {
	t.Parallel()
	pg := realtest.SharedPostgres(t)
	dsn := pg.NewDatabase(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			db, err := Open(t.Context(), Config{DSN: dsn})
			if err != nil {
				t.Errorf("Open: %v", err)
				return
			}
			db.Close()
		})
	}
	wg.Wait()
	db := mustOpen(t, dsn)
	var n int
	if err := db.db.QueryRowContext(t.Context(), "SELECT count(*) FROM schema_migrations").Scan(&n); err != nil || n != 1 {
		t.Errorf("schema_migrations rows = %d, %v; want 1", n, err)
	}
}

// TestNewerSchema: a schema newer than this build is refused, untouched.
func TestNewerSchema(t *testing.T) {
	t.Parallel()
	pg := realtest.SharedPostgres(t)
	dsn := pg.NewDatabase(t)
	db := mustOpen(t, dsn)
	if _, err := db.db.ExecContext(t.Context(), "INSERT INTO schema_migrations VALUES (999, '0999_future.sql', 0)"); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(t.Context(), Config{DSN: dsn}); !errors.Is(err, ErrNewerSchema) {
		t.Errorf("Open of a newer schema: %v, want ErrNewerSchema", err)
	}
}

// TestAuditAppendOnly: the audit log refuses changes from outside the
// store too (an operator's psql).
func TestAuditAppendOnly(t *testing.T) {
	t.Parallel()
	pg := realtest.SharedPostgres(t)
	db := mustOpen(t, pg.NewDatabase(t))
	ctx := t.Context()
	if err := db.AppendAudit(ctx, session.AuditEvent{Actor: "alice", Action: "launch"}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"UPDATE audit SET actor = 'mallory'", "DELETE FROM audit", "TRUNCATE audit"} {
		if _, err := db.db.ExecContext(ctx, q); err == nil {
			t.Errorf("%s succeeded", q)
		}
	}
}

// TestDSNPasswordNotInErrors: a DSN that does not parse, or a server that
// refuses, never puts the password in the error (it ends up in logs).
func TestDSNPasswordNotInErrors(t *testing.T) {
	t.Parallel()
	for _, dsn := range []string{
		"postgres://airlock:s3cret-pw@[::1/airlock",
		"host=/nonexistent-dir port=1 user=airlock password=s3cret-pw dbname=x connect_timeout=2",
	} {
		_, err := Open(t.Context(), Config{DSN: dsn})
		if err == nil {
			t.Fatalf("Open(%q) succeeded", dsn)
		}
		if strings.Contains(err.Error(), "s3cret-pw") {
			t.Errorf("error names the password: %v", err)
		}
	}
}

func TestSharedSecrets(t *testing.T) {
	t.Parallel()
	pg := realtest.SharedPostgres(t)
	storetest.RunSharedSecrets(t, func(t *testing.T) (store.SharedSecrets, store.SharedSecrets) {
		dsn := pg.NewDatabase(t)
		return mustOpen(t, dsn), mustOpen(t, dsn)
	})
}

// TestBroadcast: what one handle broadcasts reaches another's listener,
// after the nil that says it is connected; ending the context closes it.
func TestBroadcast(t *testing.T) {
	t.Parallel()
	pg := realtest.SharedPostgres(t)
	dsn := pg.NewDatabase(t)
	a, b := mustOpen(t, dsn), mustOpen(t, dsn)
	ctx, cancel := context.WithCancel(t.Context())
	ch := b.Listen(ctx)
	select {
	case m := <-ch:
		if m != nil {
			t.Fatalf("first delivery %q, want the nil that says connected", m)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the listener never connected")
	}
	if err := a.Broadcast(t.Context(), []byte(`{"revoke":{"Token":"t-1"}}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-ch:
		if string(m) != `{"revoke":{"Token":"t-1"}}` {
			t.Fatalf("got %q", m)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the broadcast did not arrive")
	}
	if err := a.Broadcast(t.Context(), make([]byte, maxPayload+1)); err == nil {
		t.Error("an oversized broadcast was sent")
	}
	cancel()
	for range ch {
	}
}

func TestSpender(t *testing.T) {
	t.Parallel()
	pg := realtest.SharedPostgres(t)
	storetest.RunSpender(t, func(t *testing.T) (store.Spender, store.Spender) {
		dsn := pg.NewDatabase(t)
		return mustOpen(t, dsn), mustOpen(t, dsn)
	})
}

// TestSharedLoginLimits: failed logins spread over two gateways (two
// handles, each with its own memory) count against one budget; a success
// clears the user's; a stopped database leaves each gateway's own limits
// and refuses no login by itself.
func TestSharedLoginLimits(t *testing.T) {
	t.Parallel()
	pg := realtest.StartPostgres(t)
	dsn := pg.NewDatabase(t)
	cfg := ratelimit.Config{UserLimit: 4, AddrLimit: 100, Window: time.Minute}
	a, err := ratelimit.NewShared(cfg, mustOpen(t, dsn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := ratelimit.NewShared(cfg, mustOpen(t, dsn), nil)
	now := time.Now()
	for i := range 4 {
		l := a
		if i%2 == 1 {
			l = b
		}
		if err := l.Allow("alice", fmt.Sprintf("10.0.0.%d:1", i), now); err != nil {
			t.Fatalf("guess %d refused early: %v", i, err)
		}
		l.Fail("alice", fmt.Sprintf("10.0.0.%d:1", i), now)
	}
	// Each gateway saw two failures (under its own limit of 4); together 4.
	for name, l := range map[string]*ratelimit.Shared{"a": a, "b": b} {
		if err := l.Allow("alice", "10.0.0.9:1", now); !errors.Is(err, auth.ErrRateLimited) {
			t.Errorf("gateway %s after four guesses spread over two: %v, want rate limited", name, err)
		}
	}
	if err := a.Allow("bob", "10.0.0.9:1", now); err != nil {
		t.Errorf("another user: %v", err)
	}
	b.Succeed("alice", "10.0.0.9:1")
	if err := a.Allow("alice", "10.0.0.9:1", now); err != nil {
		t.Errorf("after a success at the other gateway: %v", err)
	}
	pg.Stop()
	if err := a.Allow("carol", "10.0.0.9:1", now); err != nil {
		t.Errorf("database down: a login refused by the fault alone: %v", err)
	}
	for range 4 {
		a.Fail("carol", "10.0.0.9:1", now)
	}
	if err := a.Allow("carol", "10.0.0.9:1", now); !errors.Is(err, auth.ErrRateLimited) {
		t.Errorf("database down: this gateway's own limit does not hold: %v", err)
	}
}

func TestHandoffs(t *testing.T) {
	t.Parallel()
	pg := realtest.SharedPostgres(t)
	storetest.RunHandoffs(t, func(t *testing.T) (store.Handoffs, store.Handoffs) {
		dsn := pg.NewDatabase(t)
		return mustOpen(t, dsn), mustOpen(t, dsn)
	})
}

// TestSharedLoginLimitsMalformedNames: a login spray with names
// PostgreSQL cannot store as text (not UTF-8, or holding a NUL) still
// costs the address its shared budget, and reading the shared buckets for
// them is no store fault. Seen failing: the user bucket's statement failed,
// so Fail gave up before counting the address, and every such login
// logged a fault.
func TestSharedLoginLimitsMalformedNames(t *testing.T) {
	t.Parallel()
	pg := realtest.SharedPostgres(t)
	dsn := pg.NewDatabase(t)
	cfg := ratelimit.Config{UserLimit: 100, AddrLimit: 3, Window: time.Minute}
	var logs bytes.Buffer
	a, err := ratelimit.NewShared(cfg, mustOpen(t, dsn), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := ratelimit.NewShared(cfg, mustOpen(t, dsn), nil)
	now := time.Now()
	for i, name := range []string{"alice\xff", "bob\x00", "\xc3("} {
		if err := a.Allow(name, "10.0.0.1:1", now); err != nil {
			t.Fatalf("guess %d refused early: %v", i, err)
		}
		a.Fail(name, "10.0.0.1:1", now)
	}
	if err := b.Allow("carol", "10.0.0.1:2", now); !errors.Is(err, auth.ErrRateLimited) {
		t.Errorf("the other gateway, after three malformed guesses from one address: %v, want rate limited", err)
	}
	if logs.Len() > 0 {
		t.Errorf("malformed names made store faults:\n%s", logs.String())
	}
}
