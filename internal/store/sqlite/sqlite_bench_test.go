package sqlite

import (
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
	"github.com/airlock-hpc/airlock/internal/store/storetest"
)

// The gateway's target: listing one user's sessions, and an admin's first
// page of 100, within 20 ms at the 99th percentile, with 10,000 sessions
// stored (1,000 users with about ten each).
const (
	benchSessions = 10_000
	benchOwners   = 1_000
)

// seeded opens a DB in b's temporary directory holding benchSessions
// sessions.
func seeded(b *testing.B) (*DB, []string) {
	b.Helper()
	db := mustOpen(b, Config{})
	owners := storetest.Seed(b, db, benchSessions, benchOwners)
	return db, owners
}

// meter records what the target is written in, the 99th percentile of
// each iteration's latency, and the process's CPU time per iteration. On a
// shared machine wall time says mostly how busy the machine was; CPU time
// says what the code costs.
type meter struct {
	lat  []time.Duration
	cpu0 time.Duration
}

// newMeter starts measuring; call it just before b.Loop.
func newMeter() *meter {
	return &meter{lat: make([]time.Duration, 0, 1<<16), cpu0: cpuTime()}
}

// since records one iteration that began at start.
func (m *meter) since(start time.Time) { m.lat = append(m.lat, time.Since(start)) }

// report adds p99-ns (if iterations were timed) and cpu-ns/op to b's
// results; call it after b.Loop, when b.N is the iteration count.
func (m *meter) report(b *testing.B) {
	b.ReportMetric(float64(cpuTime()-m.cpu0)/float64(b.N), "cpu-ns/op")
	if len(m.lat) > 0 {
		slices.Sort(m.lat)
		b.ReportMetric(float64(m.lat[len(m.lat)*99/100]), "p99-ns")
	}
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkListSessions(b *testing.B) {
	db, owners := seeded(b)
	active := []session.State{session.Queued, session.Starting, session.Ready, session.Stopping}
	for _, bc := range []struct {
		name string
		f    func(i int) store.SessionFilter
		want int
	}{
		{"owner", func(i int) store.SessionFilter { return store.SessionFilter{Owner: owners[i%len(owners)]} }, benchSessions / benchOwners},
		{"admin-first-100", func(int) store.SessionFilter { return store.SessionFilter{Limit: 100} }, 100},
		{"admin-active-first-100", func(int) store.SessionFilter { return store.SessionFilter{States: active, Limit: 100} }, 100},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := b.Context()
			m := newMeter()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				start := time.Now()
				got, err := db.ListSessions(ctx, bc.f(i))
				m.since(start)
				if err != nil || len(got) != bc.want {
					b.Fatalf("ListSessions = %d sessions, %v; want %d", len(got), err, bc.want)
				}
				i++
			}
			m.report(b)
		})
	}
}

func BenchmarkGetSession(b *testing.B) {
	db, _ := seeded(b)
	ctx := b.Context()
	m := newMeter()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("s-%07d", (i*7919)%benchSessions) // spread over the table
		start := time.Now()
		_, err := db.GetSession(ctx, id)
		m.since(start)
		if err != nil {
			b.Fatal(err)
		}
		i++
	}
	m.report(b)
}

// BenchmarkUpdateSession is a runner's report: stamp LastSeen on one
// session, read-modify-write in one transaction.
func BenchmarkUpdateSession(b *testing.B) {
	db, _ := seeded(b)
	ctx := b.Context()
	now := time.Now()
	m := newMeter()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("s-%07d", (i*7919)%benchSessions)
		start := time.Now()
		_, err := db.UpdateSession(ctx, id, func(s *session.Session) error {
			s.LastSeen = now.Add(time.Duration(i))
			return nil
		})
		m.since(start)
		if err != nil {
			b.Fatal(err)
		}
		i++
	}
	m.report(b)
}

func BenchmarkCreateSession(b *testing.B) {
	db, _ := seeded(b)
	ctx := b.Context()
	now := time.Now()
	m := newMeter()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		s := &session.Session{
			ID: fmt.Sprintf("new-%08d", i), Owner: "user-00001", Profile: "desktop", State: session.Queued,
			CPUs: 4, MemoryMB: 8192, Lifetime: 8 * time.Hour, Created: now.Add(time.Duration(i)), Backend: "slurm",
		}
		start := time.Now()
		err := db.CreateSession(ctx, s)
		m.since(start)
		if err != nil {
			b.Fatal(err)
		}
		i++
	}
	m.report(b)
}

// BenchmarkCountActive is the limit check on every launch.
func BenchmarkCountActive(b *testing.B) {
	db, owners := seeded(b)
	ctx := b.Context()
	b.Run("all", func(b *testing.B) {
		m := newMeter()
		b.ReportAllocs()
		for b.Loop() {
			if n, err := db.CountActive(ctx, ""); err != nil || n != benchSessions/10 {
				b.Fatalf("CountActive = %d, %v", n, err)
			}
		}
		m.report(b)
	})
	b.Run("owner", func(b *testing.B) {
		m := newMeter()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := db.CountActive(ctx, owners[i%len(owners)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
		m.report(b)
	})
}

// BenchmarkTokenByHash is the lookup every scripted API call makes: find
// the token and stamp LastUsed.
func BenchmarkTokenByHash(b *testing.B) {
	db := mustOpen(b, Config{})
	ctx := b.Context()
	const users, perUser = 100, 10
	hash := func(i int) []byte { return fmt.Appendf(make([]byte, 0, 32), "%032d", i) }
	for u := range users {
		name := fmt.Sprintf("user-%05d", u)
		if err := db.CreateUser(ctx, session.User{Name: name}); err != nil {
			b.Fatal(err)
		}
		for k := range perUser {
			i := u*perUser + k
			if err := db.CreateToken(ctx, session.Token{ID: fmt.Sprint("t-", i), User: name, Name: "ci", Hash: hash(i)}); err != nil {
				b.Fatal(err)
			}
		}
	}
	hashes := make([][]byte, users*perUser)
	for i := range hashes {
		hashes[i] = hash(i)
	}
	now := time.Now()
	m := newMeter()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		start := time.Now()
		_, err := db.TokenByHash(ctx, hashes[i%len(hashes)], now)
		m.since(start)
		if err != nil {
			b.Fatal(err)
		}
		i++
	}
	m.report(b)
}

// BenchmarkStore is storetest.Bench, the operations measured alike on
// every driver (the PostgreSQL store has the same benchmark).
func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, mustOpen(b, Config{}), benchSessions, benchOwners)
}
