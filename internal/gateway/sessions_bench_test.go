package gateway

import (
	"database/sql"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql's "pgx" driver, to read PostgreSQL's own counters

	"github.com/airlock-hpc/airlock/internal/realtest"
)

// BenchmarkSessionsAtScale checks the README's load model: it starts
// `airlock serve` on a real PostgreSQL and launches AIRLOCK_BENCH_SESSIONS
// app sessions (default 50; real runners, seals and a small app each, as
// many at once as the machine takes), then leaves them idle for
// AIRLOCK_BENCH_IDLE (default 30s). It reports what one session costs:
//
//   - gw-KiB/session: the gateway's resident memory (VmRSS) added;
//   - node-KiB/session: the session's own processes (runner, seal,
//     connector, app) on the node, proportional set size (the airlock
//     binary's pages, shared by all, counted once);
//   - store-tx/launch: PostgreSQL transactions (pg_stat_database) per
//     launch, launch to ready;
//   - store-tx/session-min and gw-cpu-ms/session-min: what an idle
//     session costs the database and the gateway per minute (viewer
//     activity, polling, reconcile, lease);
//   - launch-s: wall time from the first launch to all ready.
//
// Viewers' costs are BenchmarkViewers1000's (memory) and
// BenchmarkBrowserPath's (CPU per byte).
func BenchmarkSessionsAtScale(b *testing.B) {
	n := envInt(b, "AIRLOCK_BENCH_SESSIONS", 50)
	idle := 30 * time.Second
	if v := os.Getenv("AIRLOCK_BENCH_IDLE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("AIRLOCK_BENCH_IDLE: %v", err)
		}
		idle = d
	}
	pg := realtest.StartPostgres(b)
	dsn := pg.NewDatabase(b)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	commits := func() int64 {
		var c int64
		if err := db.QueryRow("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()").Scan(&c); err != nil {
			b.Fatal(err)
		}
		return c
	}
	// pg_stat_database is updated when a backend reports, at most every
	// second or so, and at its transaction's end: wait for it to settle.
	settled := func() int64 {
		var last int64 = -1
		var c int64
		realtest.WaitFor(10*time.Second, func() error {
			time.Sleep(1500 * time.Millisecond)
			c = commits()
			if c != last {
				last = c
				return fmt.Errorf("still moving")
			}
			return nil
		})
		return c
	}
	sp := startServeWith(b, fmt.Sprintf("store:\n  driver: postgres\n  dsn: %q\n", dsn))
	for b.Loop() {
		gw0 := rssKiB(sp.pid)
		tx0 := settled()
		start := time.Now()
		ids := make(chan string, n)
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range 4 {
			wg.Go(func() {
				for range ids {
					var created struct{ ID string }
					if code, err := sp.api("POST", "/api/v1/sessions", map[string]any{"profile": "bench"}, &created); code != 201 || err != nil {
						errs <- fmt.Errorf("launch: %d %v", code, err)
						return
					}
					if err := sp.waitState(created.ID, "ready"); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		for range n {
			ids <- ""
		}
		close(ids)
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			b.Fatalf("after %v: %v", time.Since(start), err)
		}
		launch := time.Since(start)
		tx1 := settled()
		gw1 := rssKiB(sp.pid)
		node := pssKiB(descendants(sp.pid)...)

		cpu0, t0, itx0 := procCPU(sp.pid), time.Now(), commits()
		time.Sleep(idle) // the measurement is of doing nothing for this long
		cpu1, t1, itx1 := procCPU(sp.pid), time.Now(), commits()
		mins := t1.Sub(t0).Minutes()

		b.ReportMetric(float64(gw1-gw0)/float64(n), "gw-KiB/session")
		b.ReportMetric(float64(node)/float64(n), "node-KiB/session")
		b.ReportMetric(float64(tx1-tx0)/float64(n), "store-tx/launch")
		b.ReportMetric(float64(itx1-itx0)/float64(n)/mins, "store-tx/session-min")
		b.ReportMetric(float64((cpu1-cpu0).Milliseconds())/float64(n)/mins, "gw-cpu-ms/session-min")
		b.ReportMetric(launch.Seconds(), "launch-s")
		b.ReportMetric(float64(n), "sessions")
		b.StopTimer()
		sp.stopAll()
		b.StartTimer()
	}
}

// pssKiB sums the proportional set size of pids (smaps_rollup), KiB.
func pssKiB(pids ...int) int64 {
	var sum int64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "Pss:"); ok {
				f := strings.Fields(v)
				if len(f) > 0 {
					k, _ := strconv.ParseInt(f[0], 10, 64)
					sum += k
				}
			}
		}
	}
	return sum
}

func envInt(tb testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		tb.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}
