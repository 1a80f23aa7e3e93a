package runner_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
)

// sleeperSpec is a session whose workload and helper sleep, marked with an
// environment variable so the test can find every process it made.
func sleeperSpec(t *testing.T, m mode, marker, scratch, sock, lifetime string) map[string]any {
	key := filepath.Join(realtest.SharedDir(t, m.owner), "key")
	realtest.WriteFile(t, m.owner, key, []byte("0123456789abcdef0123456789abcdef"), 0o600)
	env := map[string]string{"AIRLOCK_TEST_MARKER": marker}
	return map[string]any{
		"id":        marker,
		"owner":     m.owner.Name,
		"workload":  map[string]any{"argv": []string{"sleep", "1000"}, "env": env},
		"processes": []any{map[string]any{"argv": []string{"sh", "-c", "sleep 1000 & sleep 1000"}, "env": env}},
		"connectors": []any{map[string]any{
			"name": "web", "kind": "http", "target": "127.0.0.1:9", "listen": "unix:" + sock, "wait": false,
		}},
		"ticket_key_file": key,
		"scratch_dir":     scratch,
		"lifetime":        lifetime,
		"grace":           "3s",
	}
}

// TestTeardown: however a session ends (SIGTERM, SIGKILL of the runner,
// the workload exiting, its lifetime running out), no process of it
// remains, and its scratch directory and socket file are gone.
func TestTeardown(t *testing.T) {
	ends := []struct {
		name     string
		lifetime string
		end      func(t *testing.T, r *realtest.Runner, marker string)
		reason   string
	}{
		{name: "sigterm", end: func(t *testing.T, r *realtest.Runner, _ string) {
			r.Signal(syscall.SIGTERM)
		}, reason: "stopped by SIGTERM"},
		{name: "sigkill", end: func(t *testing.T, r *realtest.Runner, _ string) {
			r.Signal(syscall.SIGKILL)
		}},
		{name: "workload-exit", end: func(t *testing.T, r *realtest.Runner, marker string) {
			// Kill the workload from outside, as a crash would.
			pids := workloadPids(marker)
			if len(pids) == 0 {
				t.Fatal("workload not found")
			}
			for _, p := range pids {
				syscall.Kill(p, syscall.SIGKILL)
			}
		}, reason: "workload workload exited with code 137"},
		{name: "lifetime", lifetime: "2s", end: func(t *testing.T, r *realtest.Runner, _ string) {}, reason: "lifetime of 2s is over"},
	}
	for _, m := range modes(t) {
		for _, e := range ends {
			t.Run(m.name+"/"+e.name, func(t *testing.T) {
				marker := fmt.Sprintf("teardown-%s-%d", e.name, time.Now().UnixNano())
				base := realtest.SharedDir(t, m.owner)
				scratch := filepath.Join(base, "scratch")
				sock := filepath.Join(base, "sockets", "web.sock")
				r := realtest.StartRunner(t, sleeperSpec(t, m, marker, scratch, sock, e.lifetime), realtest.RunOptions{As: m.as})
				if _, err := os.Stat(scratch); err != nil {
					t.Fatalf("scratch dir missing while running: %v", err)
				}
				// init, the workload, the helper's shell and two sleeps, the connector
				if err := realtest.WaitFor(10*time.Second, func() error {
					if n := len(realtest.ProcessesOf(marker)); n < 6 {
						return fmt.Errorf("want init, workload, 3 helper processes and the connector running, found %d", n)
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				e.end(t, r, marker)
				if e.reason != "" {
					ev := r.WaitExit(t, 30*time.Second)
					if ev.Reason != e.reason {
						t.Errorf("exit reason %q, want %q", ev.Reason, e.reason)
					}
				}
				if err := realtest.WaitFor(20*time.Second, func() error {
					// The marker is the session id: it is in the workload's
					// environment and in init's and the connectors' argv; the
					// janitor's argv names the scratch directory.
					if err := realtest.Gone(scratch); err != nil {
						return err
					}
					return realtest.Gone(marker, scratch, sock, filepath.Dir(sock))
				}); err != nil {
					t.Fatalf("after %s: %v\nrunner stderr:\n%s", e.name, err, r.Stderr.String())
				}
			})
		}
	}
}

// workloadPids finds the session's `sleep 1000` workload: the marked
// process whose parent is the seal's init.
func workloadPids(marker string) []int {
	var out []int
	for _, p := range realtest.ProcessesOf(marker) {
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
		if string(cmd) == "sleep\x001000\x00" && parentIsInit(p) {
			out = append(out, p)
		}
	}
	return out
}

func parentIsInit(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	var ppid int
	for _, line := range splitLines(string(st)) {
		if n, _ := fmt.Sscanf(line, "PPid:\t%d", &ppid); n == 1 {
			break
		}
	}
	cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", ppid))
	return strings.HasPrefix(string(cmd), "airlock-init\x00")
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := range len(s) {
		if s[i] == '\n' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return out
}

// TestTeardownWhenParentDies: a runner whose parent (a backend, a batch
// job's shell) dies, even by SIGKILL, ends its session and cleans up.
func TestTeardownWhenParentDies(t *testing.T) {
	m := modes(t)[0]
	marker := fmt.Sprintf("teardown-parent-%d", time.Now().UnixNano())
	base := realtest.SharedDir(t, m.owner)
	scratch := filepath.Join(base, "scratch")
	sock := filepath.Join(base, "sockets", "web.sock")
	specFile := filepath.Join(base, "spec.json")
	b, _ := json.Marshal(sleeperSpec(t, m, marker, scratch, sock, ""))
	realtest.WriteFile(t, m.owner, specFile, b, 0o644)
	// The parent is a shell that starts the runner and waits for it.
	parent := exec.Command("sh", "-c", `"$0" run --spec "$1" & wait`, realtest.Binary(t), specFile)
	if m.as != nil {
		parent.SysProcAttr = credential(m.as)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { parent.Wait(); close(done) }()
	if err := realtest.WaitFor(30*time.Second, func() error {
		if n := len(realtest.ProcessesOf(marker)); n < 3 {
			return fmt.Errorf("%d session processes running", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	parent.Process.Kill()
	<-done
	if err := realtest.WaitFor(30*time.Second, func() error {
		if err := realtest.Gone(specFile); err != nil {
			return err // the runner itself
		}
		return realtest.Gone(marker, scratch, sock, filepath.Dir(sock))
	}); err != nil {
		t.Fatalf("after the runner's parent died: %v", err)
	}
}
