package seal

import (
	"log/slog"
	"os"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCredRunnerSparesMainThread: the unix guard's threads take the
// owner's ids and drop their capabilities, and none of them may be init's
// main thread, whose ids kill(2) judges init by: a workload running as the
// owner could otherwise signal init on a kernel without Landlock scoping.
func TestCredRunnerSparesMainThread(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the runner's threads switch to another uid")
	}
	const owner = 65534
	before := statusOf(t, "/proc/self/status", "Uid", "CapEff")
	c := &credRunner{switchIDs: true, uid: owner, gid: owner, jobs: make(chan func(error)), log: slog.Default()}
	// Jobs that wait for each other need a thread each: many threads, so
	// that the main one would be among them if it could be.
	const n = 64
	var started, release sync.WaitGroup
	started.Add(n)
	release.Add(1)
	onMain := make(chan int, n)
	for range n {
		c.do(func(err error) {
			if err != nil {
				t.Error(err)
			}
			if unix.Gettid() == unix.Getpid() {
				onMain <- unix.Gettid()
			}
			if uid := unix.Geteuid(); uid != owner {
				t.Errorf("a job ran with euid %d, not the owner's %d", uid, owner)
			}
			started.Done()
			release.Wait()
		})
	}
	started.Wait()
	release.Done()
	close(onMain)
	for tid := range onMain {
		t.Errorf("a job ran on the main thread (%d)", tid)
	}
	if after := statusOf(t, "/proc/self/status", "Uid", "CapEff"); after["Uid"] != before["Uid"] || after["CapEff"] != before["CapEff"] {
		t.Errorf("the process's main thread changed: %v before, %v after", before, after)
	}
}
