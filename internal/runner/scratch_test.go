package runner_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
)

// TestScratchSquatted: another local user who makes the old predictable
// scratch root ($TMPDIR/airlock-UID) first, as a directory of their own or
// as a symlink to one, neither blocks sessions nor receives their files.
func TestScratchSquatted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the attacker is another account")
	}
	attacker := realtest.TestUser(t)
	for _, m := range modes(t) {
		for _, how := range []string{"dir", "symlink"} {
			t.Run(m.name+"/"+how, func(t *testing.T) {
				// A world-writable sticky directory, as /tmp is, for TMPDIR:
				// the test's own, so no other test meets the squatter.
				tmp, err := os.MkdirTemp("", "squat-")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { os.RemoveAll(tmp) })
				os.Chmod(tmp, os.ModeSticky|0o777)
				runnerUID := 0
				if m.as != nil {
					runnerUID = m.as.UID
				}
				// The attacker: a uid that is not the runner's.
				evil := attacker.UID
				if evil == runnerUID {
					evil = 4242
				}
				lair := filepath.Join(tmp, "lair")
				os.Mkdir(lair, 0o777)
				os.Chmod(lair, 0o777)
				os.Chown(lair, evil, evil)
				old := filepath.Join(tmp, "airlock-"+strconv.Itoa(runnerUID))
				if how == "dir" {
					os.Mkdir(old, 0o777)
					os.Chmod(old, 0o777)
					os.Chown(old, evil, evil)
				} else if err := os.Symlink(lair, old); err != nil {
					t.Fatal(err)
				}

				id := fmt.Sprintf("squat-%d", time.Now().UnixNano())
				spec := map[string]any{
					"id": id, "owner": m.owner.Name,
					"workload": map[string]any{"argv": []string{"sh", "-c", "echo mine > /tmp/mark && exec sleep 1000"}},
					"grace":    "2s",
				}
				r := realtest.StartRunner(t, spec, realtest.RunOptions{As: m.as, Env: []string{"TMPDIR=" + tmp, "XDG_RUNTIME_DIR="}})

				var scratch string
				if m.as == nil {
					scratch = filepath.Join("/run/airlock", id)
				} else {
					matches, _ := filepath.Glob(filepath.Join(tmp, "airlock-"+id+"-*"))
					if len(matches) != 1 {
						t.Fatalf("want one random scratch dir in %s, got %v", tmp, matches)
					}
					scratch = matches[0]
				}
				if err := realtest.WaitFor(10*time.Second, func() error {
					_, err := os.Stat(filepath.Join(scratch, "tmp", "mark"))
					return err
				}); err != nil {
					t.Fatalf("the workload's /tmp is not in %s: %v", scratch, err)
				}
				st, err := os.Lstat(scratch)
				if err != nil {
					t.Fatal(err)
				}
				if uid := st.Sys().(*syscall.Stat_t).Uid; uid != uint32(runnerUID) || st.Mode().Perm() != 0o700 || !st.IsDir() {
					t.Errorf("scratch %s: uid %d mode %v, want uid %d 0700 dir", scratch, uid, st.Mode(), runnerUID)
				}
				for _, d := range []string{old, lair} {
					if ents, _ := os.ReadDir(d); len(ents) > 0 {
						t.Errorf("the squatter's %s received %d entries", d, len(ents))
					}
				}
				// The runner cleans up after itself; killed, its janitor does.
				sig := syscall.SIGTERM
				if how == "symlink" {
					sig = syscall.SIGKILL
				}
				r.Signal(sig)
				r.WaitExit(t, 20*time.Second)
				if err := realtest.WaitFor(20*time.Second, func() error { return realtest.Gone(id, scratch) }); err != nil {
					t.Errorf("after the session: %v", err)
				}
			})
		}
	}
}

// TestSocketDirSquatted: a connector's UNIX socket is not made in a
// directory another user owns or may write, where they could swap it for
// their own and receive the gateway's connections.
func TestSocketDirSquatted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the attacker is another account")
	}
	owner := realtest.TestUser(t)
	// Another local user's directory (a uid that is neither root nor the
	// session's owner).
	attacker := realtest.Account{Name: "squatter", UID: 4242, GID: 4242}
	dir := realtest.SharedDir(t, attacker)
	os.Chmod(dir, 0o755)
	key := filepath.Join(realtest.OutsideTmp(t, "key-"), "key")
	os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef"), 0o600)
	id := fmt.Sprintf("sockdir-%d", time.Now().UnixNano())
	spec := map[string]any{
		"id": id, "owner": owner.Name,
		"workload": map[string]any{"argv": []string{"sleep", "1000"}},
		"connectors": []any{map[string]any{
			"name": "web", "kind": "http", "target": "127.0.0.1:9", "listen": "unix:" + filepath.Join(dir, "web.sock"), "wait": false,
		}},
		"ticket_key_file": key,
		"grace":           "2s",
	}
	r := realtest.StartRunner(t, spec, realtest.RunOptions{NoWaitReady: true})
	e := r.WaitExit(t, 20*time.Second)
	if e.Event != "exit" || !strings.Contains(e.Reason, "socket directory") {
		t.Fatalf("runner as root with its socket in uid %d's directory: %+v", attacker.UID, e)
	}
}

// TestScratchRuntimeDir: an unprivileged runner keeps scratch in its own
// private $XDG_RUNTIME_DIR, and ignores one that is not its own.
func TestScratchRuntimeDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs the runner as the test account")
	}
	u := realtest.TestUser(t)
	for _, own := range []bool{true, false} {
		t.Run(fmt.Sprintf("own=%v", own), func(t *testing.T) {
			rt := realtest.SharedDir(t, u)
			os.Chmod(rt, 0o700)
			if !own {
				os.Chmod(rt, 0o777)
				os.Chown(rt, 4242, 4242)
			}
			tmp := realtest.SharedDir(t, u)
			id := fmt.Sprintf("xdg-%d", time.Now().UnixNano())
			spec := map[string]any{
				"id": id, "owner": u.Name,
				"workload": map[string]any{"argv": []string{"sh", "-c", "echo mine > /tmp/mark && exec sleep 1000"}},
				"grace":    "2s",
			}
			realtest.StartRunner(t, spec, realtest.RunOptions{As: &u, Env: []string{"XDG_RUNTIME_DIR=" + rt, "TMPDIR=" + tmp}})
			want := filepath.Join(rt, "airlock", id, "tmp", "mark")
			if !own {
				matches, _ := filepath.Glob(filepath.Join(tmp, "airlock-"+id+"-*"))
				if len(matches) != 1 {
					t.Fatalf("want one random scratch dir in %s, got %v", tmp, matches)
				}
				want = filepath.Join(matches[0], "tmp", "mark")
			}
			if err := realtest.WaitFor(10*time.Second, func() error {
				_, err := os.Stat(want)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if !own {
				if ents, _ := os.ReadDir(rt); len(ents) > 0 {
					t.Errorf("scratch went into a runtime dir that is not ours: %v", ents)
				}
			}
		})
	}
}
