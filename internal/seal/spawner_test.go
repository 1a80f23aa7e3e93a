package seal

import (
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
)

// statusOf returns the named lines of a /proc status file.
func statusOf(t *testing.T, path string, fields ...string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		for _, f := range fields {
			if k == f {
				out[k] = strings.TrimSpace(v)
			}
		}
	}
	return out
}

// runFrom starts sh -c script from s and returns its output and exit code.
func runFrom(t *testing.T, s *spawner, script string) (string, int) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	pid, err := s.forkExec("/bin/sh", []string{"sh", "-c", script}, &syscall.ProcAttr{
		Env: []string{"PATH=/usr/bin:/bin"}, Files: []uintptr{0, w.Fd(), 2},
	})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(r)
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
		t.Fatal(err)
	}
	return string(out), ws.ExitStatus()
}

// TestSpawnerConfinesItsThreadOnly: processes a confined spawner starts
// have no capabilities and no_new_privs, a scoped one's cannot signal the
// process outside their domain, and none of it leaks to the rest of the
// process (its main thread, which /proc and kill(2) judge it by).
func TestSpawnerConfinesItsThreadOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: an unprivileged process cannot drop its bounding set")
	}
	if landlockABI() < landlockScopeABI {
		t.Skipf("kernel Landlock ABI %d: no scoping to test", landlockABI())
	}
	before := statusOf(t, "/proc/self/status", "CapBnd", "NoNewPrivs")
	for range 10 {
		plain, _, err := newSpawner("test", func() ([]string, error) { return confineThread(false) })
		if err != nil {
			t.Fatal(err)
		}
		scoped, _, err := newSpawner("test-scoped", func() ([]string, error) {
			w, err := confineThread(false)
			if err != nil {
				return w, err
			}
			return w, scopeThread(landlockABI())
		})
		if err != nil {
			t.Fatal(err)
		}
		defer plain.stop()
		defer scoped.stop()
		out, _ := runFrom(t, plain, "grep -E '^(Cap(Bnd|Amb|Prm|Eff|Inh)|NoNewPrivs):' /proc/self/status")
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimSpace(v)
			if (k == "NoNewPrivs" && v != "1") || (k != "NoNewPrivs" && v != "0000000000000000") {
				t.Errorf("child of a confined spawner: %s", line)
			}
		}
		if _, code := runFrom(t, plain, "kill -0 $PPID"); code != 0 {
			t.Errorf("a child of the unscoped spawner cannot signal the test process (exit %d)", code)
		}
		if _, code := runFrom(t, scoped, "kill -0 $PPID 2>/dev/null"); code == 0 {
			t.Error("a child of the scoped spawner signalled the test process, outside its domain")
		}
	}
	if after := statusOf(t, "/proc/self/status", "CapBnd", "NoNewPrivs"); after["CapBnd"] != before["CapBnd"] || after["NoNewPrivs"] != before["NoNewPrivs"] {
		t.Errorf("the process's main thread changed: %v before, %v after", before, after)
	}
}
