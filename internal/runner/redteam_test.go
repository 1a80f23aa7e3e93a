package runner_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
)

// TestSealRefusesHostSocketLinkedIntoTmp attacks the unix guard's mount
// rule: the seal's /tmp is a bind mount of a host directory, so a host
// socket hard-linked or renamed into that directory through its host path
// (reachable whenever the scratch directory lies on a file system the
// workload sees, e.g. a scratch_dir or $TMPDIR in the owner's home) sits
// on the private /tmp mount. The workload links one host socket and
// renames another into its scratch directory by the host path, then
// connects to both through /tmp. Neither host listener may see a
// connection.
func TestSealRefusesHostSocketLinkedIntoTmp(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			host := realtest.OutsideTmp(t, "redteam-")
			// The owner may rename in it (its own socket directory, as
			// ~/.ssh would be).
			os.Chmod(host, 0o777)
			linked := listenHostUnix(t, filepath.Join(host, "linked.sock"))
			moved := listenHostUnix(t, filepath.Join(host, "moved.sock"))
			// The owner's own sockets (its ssh ControlMaster), so the
			// kernel lets it link them (protected_hardlinks).
			for _, s := range []string{"linked.sock", "moved.sock"} {
				os.Chown(filepath.Join(host, s), m.owner.UID, m.owner.GID)
			}
			id := fmt.Sprintf("redteam-link-%d", time.Now().UnixNano())
			scratch := filepath.Join(host, "scratch-"+id)
			out := filepath.Join(resultsDir(t, m.owner), "inside.json")
			script := fmt.Sprintf(`ln %[1]s/linked.sock %[2]s/tmp/ln.sock; mv %[1]s/moved.sock %[2]s/tmp/mv.sock; ls -la %[2]s/tmp >&2; exec %[3]s dial %[4]s unix:/tmp/ln.sock unix:/tmp/mv.sock`,
				host, scratch, realtest.Probe(t), out)
			spec := map[string]any{
				"id":          id,
				"owner":       m.owner.Name,
				"scratch_dir": scratch,
				"workload":    map[string]any{"argv": []string{"/bin/sh", "-c", script}, "dir": host},
			}
			r := realtest.StartRunner(t, spec, realtest.RunOptions{As: m.as})
			ev := r.WaitExit(t, 90*time.Second)
			if ev.Code == nil || *ev.Code != 0 {
				t.Fatalf("probe inside the seal failed: %+v\n%s", ev, r.Stderr.String())
			}
			res := readResults(t, out)
			for _, a := range []string{"unix:/tmp/ln.sock", "unix:/tmp/mv.sock"} {
				t.Logf("%s: reached=%v %s", a, res[a].Reached, res[a].Error)
				if res[a].Reached {
					t.Errorf("%s: a host socket moved into the seal's /tmp was reached from inside", a)
				}
				// As root the runner's scratch directory is root's (0700):
				// the workload cannot even put the socket there. As the
				// owner it can; the guard must say no.
				if m.as != nil && !strings.Contains(res[a].Error, "permission denied") {
					t.Errorf("%s: %q; want the move to work and the connect refused with EACCES", a, res[a].Error)
				}
			}
			if n := linked.accepted.Load() + moved.accepted.Load(); n != 0 {
				t.Errorf("host sockets accepted %d connections from inside", n)
			}
		})
	}
}
