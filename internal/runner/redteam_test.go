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

// TestSealListedSocketCannotBeSwapped attacks unix_sockets: a listed
// socket is looked up by path at each connect, so when the owner can write
// its directory the workload could rename another of the owner's sockets
// (its ssh ControlMaster) onto the listed name. The listed socket works
// before the swap; after it, the connect is refused and the other socket
// never sees a connection.
func TestSealListedSocketCannotBeSwapped(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			host := realtest.OutsideTmp(t, "redteam-")
			dir := filepath.Join(host, "owned")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			os.Chown(dir, m.owner.UID, m.owner.GID)
			listed := listenHostUnix(t, filepath.Join(dir, "listed.sock"))
			agent := listenHostUnix(t, filepath.Join(dir, "agent.sock"))
			for _, s := range []string{"listed.sock", "agent.sock"} {
				os.Chown(filepath.Join(dir, s), m.owner.UID, m.owner.GID)
			}
			out := filepath.Join(resultsDir(t, m.owner), "inside.json")
			out2 := filepath.Join(resultsDir(t, m.owner), "after.json")
			probe := realtest.Probe(t)
			script := fmt.Sprintf(`%[1]s dial %[2]s unix:%[4]s/listed.sock && mv %[4]s/agent.sock %[4]s/listed.sock && exec %[1]s dial %[3]s unix:%[4]s/listed.sock`,
				probe, out, out2, dir)
			spec := map[string]any{
				"id":           fmt.Sprintf("redteam-swap-%d", time.Now().UnixNano()),
				"owner":        m.owner.Name,
				"unix_sockets": []string{filepath.Join(dir, "listed.sock")},
				"workload":     map[string]any{"argv": []string{"/bin/sh", "-c", script}, "dir": host},
			}
			r := realtest.StartRunner(t, spec, realtest.RunOptions{As: m.as})
			ev := r.WaitExit(t, 90*time.Second)
			if ev.Code == nil || *ev.Code != 0 {
				t.Fatalf("probe inside the seal failed: %+v\n%s", ev, r.Stderr.String())
			}
			a := "unix:" + filepath.Join(dir, "listed.sock")
			before, after := readResults(t, out)[a], readResults(t, out2)[a]
			t.Logf("before the swap: reached=%v %s; after: reached=%v %s", before.Reached, before.Error, after.Reached, after.Error)
			if !before.Reached || listed.accepted.Load() != 1 {
				t.Errorf("the listed socket was not reachable before the swap: %+v, accepted %d", before, listed.accepted.Load())
			}
			if after.Reached || agent.accepted.Load() != 0 {
				t.Errorf("after renaming another socket onto the listed name, the workload reached it (accepted %d)", agent.accepted.Load())
			}
			if !strings.Contains(after.Error, "permission denied") {
				t.Errorf("after the swap: %q; want EACCES", after.Error)
			}
		})
	}
}

// TestSealHidesHostUevents: the kernel broadcasts device events
// (NETLINK_KOBJECT_UEVENT) to every network namespace owned by the initial
// user namespace, which a root-mode seal's is. The workload listens while
// the host makes events; it must hear none (the socket is refused).
func TestSealHidesHostUevents(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("making a device event on the host needs root")
	}
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			dir := resultsDir(t, m.owner)
			out, ready := filepath.Join(dir, "inside.json"), filepath.Join(dir, "listening")
			a := "uevent:" + ready
			spec := map[string]any{
				"id":       fmt.Sprintf("redteam-uevent-%d", time.Now().UnixNano()),
				"owner":    m.owner.Name,
				"workload": map[string]any{"argv": []string{realtest.Probe(t), "dial", out, a}, "dir": dir},
			}
			r := realtest.StartRunner(t, spec, realtest.RunOptions{As: m.as})
			// Make events until the workload is done: as soon as it listens,
			// if it ever does.
			stop := make(chan struct{})
			go func() {
				tick := time.NewTicker(100 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
						if _, err := os.Stat(ready); err == nil {
							os.WriteFile("/sys/class/mem/null/uevent", []byte("change"), 0)
						}
					}
				}
			}()
			ev := r.WaitExit(t, 60*time.Second)
			close(stop)
			if ev.Code == nil || *ev.Code != 0 {
				t.Fatalf("probe inside the seal failed: %+v\n%s", ev, r.Stderr.String())
			}
			res := readResults(t, out)[a]
			t.Logf("%s: reached=%v %s", a, res.Reached, res.Error)
			if res.Reached {
				t.Errorf("the workload heard the host's device events")
			}
			if !strings.Contains(res.Error, "protocol not supported") {
				t.Errorf("%q; want EPROTONOSUPPORT", res.Error)
			}
		})
	}
}

// TestSealProcessesCannotTouchTheRunnersLog: the runner's stderr is a file
// outside the seal (the gateway's runner.log for the session). A process
// inside that held it could truncate it (ftruncate works on any
// descriptor open for writing, append-only or not), erasing init's record
// of what it refused, and fill the file system it is on. The workload tries
// both; the runner's first line survives and the file stays bounded.
func TestSealProcessesCannotTouchTheRunnersLog(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			dir := resultsDir(t, m.owner)
			logPath := filepath.Join(dir, "runner.log")
			script := `import os, sys
try:
    os.ftruncate(2, 0)
    os.write(2, b"TRUNCATED the runner's log\n")
except OSError as e:
    os.write(2, ("ftruncate refused: %s\n" % e).encode())
chunk = b"A" * 65535 + b"\n"
for _ in range(1280):  # 80 MiB
    os.write(2, chunk)
`
			spec := map[string]any{
				"id":       fmt.Sprintf("redteam-log-%d", time.Now().UnixNano()),
				"owner":    m.owner.Name,
				"workload": map[string]any{"argv": []string{"/usr/bin/python3", "-c", script}, "dir": dir},
			}
			wrap := []string{"/bin/sh", "-c", `exec "$@" 2>>'` + logPath + `'`, "sh"}
			r := realtest.StartRunner(t, spec, realtest.RunOptions{As: m.as, Wrap: wrap})
			ev := r.WaitExit(t, 90*time.Second)
			if ev.Code == nil || *ev.Code != 0 {
				t.Fatalf("workload failed: %+v", ev)
			}
			st, err := os.Stat(logPath)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(logPath)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			head := make([]byte, 4096)
			n, _ := f.Read(head)
			head = head[:n]
			t.Logf("log: %d bytes, starts %.200q", st.Size(), head)
			if !strings.Contains(string(head), "seal started") {
				t.Errorf("the runner's first lines are gone: the workload truncated its log")
			}
			if strings.Contains(string(head), "TRUNCATED") {
				t.Errorf("ftruncate on the workload's stderr worked")
			}
			if st.Size() > 70<<20 {
				t.Errorf("the runner's log grew to %d bytes from one workload; want it bounded", st.Size())
			}
			tail := make([]byte, 64<<10)
			n, _ = f.ReadAt(tail, max(0, st.Size()-int64(len(tail))))
			if !strings.Contains(string(tail[:n]), "the rest of it is dropped") {
				t.Errorf("init did not say that it dropped output")
			}
		})
	}
}

// TestSealRuntimeDirUsable: $XDG_RUNTIME_DIR inside is the owner's and
// usable (dconf, PulseAudio and D-Bus put their sockets there), in root
// mode too, and no one else's.
func TestSealRuntimeDirUsable(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			script := `set -e; d=$XDG_RUNTIME_DIR; [ "$d" = /run/user/$(id -u) ]; touch "$d/probe"; stat -c '%a %u' "$d"`
			spec := map[string]any{
				"id":       fmt.Sprintf("redteam-xdg-%d", time.Now().UnixNano()),
				"owner":    m.owner.Name,
				"workload": map[string]any{"argv": []string{"/bin/sh", "-c", script}},
			}
			r := realtest.StartRunner(t, spec, realtest.RunOptions{As: m.as})
			ev := r.WaitExit(t, 60*time.Second)
			if ev.Code == nil || *ev.Code != 0 {
				t.Fatalf("the workload could not use $XDG_RUNTIME_DIR: %+v\n%s", ev, r.Stderr.String())
			}
			if want := fmt.Sprintf("700 %d", m.owner.UID); !strings.Contains(r.Stderr.String(), want) {
				t.Errorf("$XDG_RUNTIME_DIR mode and owner: want %q in\n%s", want, r.Stderr.String())
			}
		})
	}
}
