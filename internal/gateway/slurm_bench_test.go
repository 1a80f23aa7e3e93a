package gateway

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/backend/slurm"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/session"
)

// BenchmarkSlurmLaunch: from the API call that launches the desktop to the
// session being ready, through the real one-node cluster: sbatch as the
// owner, Slurm's scheduling, the runner sealing the desktop on the node and
// registering over HTTPS. Compare with BenchmarkLaunchLatency/desktop (the
// local backend) from the same run.
func BenchmarkSlurmLaunch(b *testing.B) {
	cl := realtest.SlurmCluster(b)
	realtest.TestUser(b)
	tg, _ := slurmGateway(b, cl, b.TempDir(), 0, "alice")
	c := tg.client().loginToken("alice")
	var all latencies
	for b.Loop() {
		t0 := time.Now()
		s := c.start(map[string]any{"profile": "desktop"})
		c.waitStateFor(s.ID, "ready", 60*time.Second)
		all = append(all, time.Since(t0))
		b.StopTimer()
		c.do("DELETE", "/api/v1/sessions/"+s.ID, nil, nil)
		c.waitStateFor(s.ID, "ended", 30*time.Second)
		b.StartTimer()
	}
	reportLatency(b, all, "ms")
}

// BenchmarkSlurmReconcile1000: one reconciliation of the store against
// Slurm with 1,000 airlock jobs queued (held) in the real controller and
// 1,000 active sessions: squeue of every job, parsing, the store's list and
// the comparison. The sessions are already watched, as in a running
// gateway.
func BenchmarkSlurmReconcile1000(b *testing.B) {
	cl := realtest.SlurmCluster(b)
	const n = 1000
	tg, _ := slurmGateway(b, cl, b.TempDir(), 0)
	be := tg.g.cfg.Backend.(*slurm.Backend)
	ctx := context.Background()
	ids := make([]string, n)
	refs := make([]string, n)
	// The sessions first, without a job (as during a launch), so the
	// gateway's own reconciler takes none of the jobs for a ghost.
	for i := range n {
		ids[i] = fmt.Sprintf("s-bench%07d", i)
		s := &session.Session{ID: ids[i], Owner: "alice", Profile: "desktop", State: session.Queued, Persistent: true,
			Created: time.Now(), Backend: "slurm"}
		if err := tg.g.cfg.Store.CreateSession(ctx, s); err != nil {
			b.Fatal(err)
		}
	}
	// Submitting is setup: four at a time, as root (held jobs never run).
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 4)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out, err := cl.Command("sbatch", "--parsable", "--hold", "--job-name="+be.JobName(ids[i]), "--output=/dev/null", "--chdir=/", "--wrap", "true")
			if err != nil {
				errs <- err
				return
			}
			refs[i] = "job:" + strings.TrimSpace(out)
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		jobs := make([]string, n)
		for i, r := range refs {
			jobs[i] = strings.TrimPrefix(r, "job:")
		}
		cl.Command("scancel", jobs...)
	})
	for i := range n {
		if _, err := tg.g.cfg.Store.UpdateSession(ctx, ids[i], func(s *session.Session) error { s.BackendRef = refs[i]; return nil }); err != nil {
			b.Fatal(err)
		}
	}
	if ghosts, err := tg.g.reconcile(ctx); err != nil || ghosts != 0 {
		b.Fatalf("first reconcile: %d ghosts, %v", ghosts, err)
	}
	for b.Loop() {
		if ghosts, err := tg.g.reconcile(ctx); err != nil || ghosts != 0 {
			b.Fatalf("reconcile: %d ghosts, %v", ghosts, err)
		}
	}
}
