package storetest

import (
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// Bench measures the store operations on the gateway's paths, the same
// way for every implementation, on a store Seed filled with sessions
// sessions of owners users and tokens bearer tokens. Each sub-benchmark
// reports the 99th percentile latency (p99-ns) and this process's CPU per
// operation (cpu-ns/op): for a database server elsewhere (PostgreSQL)
// that is the client's share only, the server's is not in it.
func Bench(b *testing.B, st store.Store, sessions, owners int) {
	owners_ := Seed(b, st, sessions, owners)
	ctx := b.Context()
	const tokens = 1000
	hash := func(i int) []byte { return fmt.Appendf(make([]byte, 0, 32), "%032d", i) }
	for i := range tokens {
		name := owners_[i%len(owners_)]
		if i < len(owners_) {
			if err := st.CreateUser(ctx, session.User{Name: name}); err != nil {
				b.Fatal(err)
			}
		}
		if err := st.CreateToken(ctx, session.Token{ID: fmt.Sprint("t-", i), User: name, Name: "ci", Hash: hash(i)}); err != nil {
			b.Fatal(err)
		}
	}
	now := time.Now()
	spread := func(i int) string { return fmt.Sprintf("s-%07d", (i*7919)%sessions) }
	ops := []struct {
		name string
		op   func(i int) error
	}{
		{"GetSession", func(i int) error { _, err := st.GetSession(ctx, spread(i)); return err }},
		{"TokenByHash", func(i int) error { _, err := st.TokenByHash(ctx, hash(i%tokens), now); return err }},
		{"ListSessions/owner", func(i int) error {
			_, err := st.ListSessions(ctx, store.SessionFilter{Owner: owners_[i%len(owners_)]})
			return err
		}},
		{"ListSessions/admin-first-100", func(int) error { _, err := st.ListSessions(ctx, store.SessionFilter{Limit: 100}); return err }},
		{"CountActive/owner", func(i int) error { _, err := st.CountActive(ctx, owners_[i%len(owners_)]); return err }},
		{"UpdateSession", func(i int) error {
			_, err := st.UpdateSession(ctx, spread(i), func(s *session.Session) error { s.LastSeen = now.Add(time.Duration(i)); return nil })
			return err
		}},
		{"CreateSessionWithin", func(i int) error {
			s := &session.Session{ID: fmt.Sprintf("new-%09d", i), Owner: fmt.Sprintf("new-owner-%d", i), Profile: "desktop",
				State: session.Queued, CPUs: 4, MemoryMB: 8192, Lifetime: 8 * time.Hour, Created: now.Add(time.Duration(i)), Backend: "slurm"}
			return st.CreateSessionWithin(ctx, s, store.Limits{MaxActive: 1 << 30, MaxActivePerOwner: 4})
		}},
		{"AppendAudit", func(i int) error {
			return st.AppendAudit(ctx, session.AuditEvent{Time: now, Actor: "alice", Action: "connect", Session: spread(i), Detail: "console"})
		}},
	}
	if l, ok := st.(store.Leaser); ok {
		ops = append(ops, struct {
			name string
			op   func(i int) error
		}{"TakeLease", func(int) error { _, err := l.TakeLease(ctx, "bench", "gw-1", time.Now(), time.Minute); return err }})
	}
	base := 0
	for _, o := range ops {
		b.Run(o.name, func(b *testing.B) {
			lat := make([]time.Duration, 0, 1<<16)
			cpu0 := cpuTime()
			b.ReportAllocs()
			for b.Loop() {
				start := time.Now()
				err := o.op(base)
				lat = append(lat, time.Since(start))
				if err != nil {
					b.Fatal(err)
				}
				base++
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)*99/100]), "p99-ns")
		})
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
