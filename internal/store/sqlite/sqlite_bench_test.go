package sqlite

import (
	"fmt"
	"slices"
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

// latencies records each iteration's duration, so a benchmark reports the
// 99th percentile the target is written in, not only the mean ns/op.
type latencies []time.Duration

func newLatencies() latencies { return make(latencies, 0, 1<<16) }

// report adds the p99 to b's results.
func (l latencies) report(b *testing.B) {
	if len(l) == 0 {
		return
	}
	slices.Sort(l)
	b.ReportMetric(float64(l[(len(l)*99)/100]), "p99-ns")
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
			lat := newLatencies()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				start := time.Now()
				got, err := db.ListSessions(ctx, bc.f(i))
				lat = append(lat, time.Since(start))
				if err != nil || len(got) != bc.want {
					b.Fatalf("ListSessions = %d sessions, %v; want %d", len(got), err, bc.want)
				}
				i++
			}
			lat.report(b)
		})
	}
}

func BenchmarkGetSession(b *testing.B) {
	db, _ := seeded(b)
	ctx := b.Context()
	lat := newLatencies()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("s-%07d", (i*7919)%benchSessions) // spread over the table
		start := time.Now()
		_, err := db.GetSession(ctx, id)
		lat = append(lat, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		i++
	}
	lat.report(b)
}

// BenchmarkUpdateSession is a runner's report: stamp LastSeen on one
// session, read-modify-write in one transaction.
func BenchmarkUpdateSession(b *testing.B) {
	db, _ := seeded(b)
	ctx := b.Context()
	now := time.Now()
	lat := newLatencies()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("s-%07d", (i*7919)%benchSessions)
		start := time.Now()
		_, err := db.UpdateSession(ctx, id, func(s *session.Session) error {
			s.LastSeen = now.Add(time.Duration(i))
			return nil
		})
		lat = append(lat, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		i++
	}
	lat.report(b)
}

func BenchmarkCreateSession(b *testing.B) {
	db, _ := seeded(b)
	ctx := b.Context()
	now := time.Now()
	lat := newLatencies()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		s := &session.Session{
			ID: fmt.Sprintf("new-%08d", i), Owner: "user-00001", Profile: "desktop", State: session.Queued,
			CPUs: 4, MemoryMB: 8192, Lifetime: 8 * time.Hour, Created: now.Add(time.Duration(i)), Backend: "slurm",
		}
		start := time.Now()
		err := db.CreateSession(ctx, s)
		lat = append(lat, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		i++
	}
	lat.report(b)
}

// BenchmarkCountActive is the limit check on every launch.
func BenchmarkCountActive(b *testing.B) {
	db, owners := seeded(b)
	ctx := b.Context()
	b.Run("all", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if n, err := db.CountActive(ctx, ""); err != nil || n != benchSessions/10 {
				b.Fatalf("CountActive = %d, %v", n, err)
			}
		}
	})
	b.Run("owner", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := db.CountActive(ctx, owners[i%len(owners)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
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
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := db.TokenByHash(ctx, hashes[i%len(hashes)], now); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
