package seal

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
)

func TestParseStatParent(t *testing.T) {
	for in, want := range map[string]int{
		"123 (sh) S 45 123 123 0 -1":            45,
		"7 (a) b) (c) R 1 7 7 0":                1,
		"9 (x y\n) Z 0 0 0":                     0,
		"9 (no close paren S 1 2":               -1,
		"9 (short) S":                           -1,
		"10 (bad) S notanumber 1 2":             -1,
		"11 ()) S 2147483647 1":                 2147483647,
		"12 (airlock-init) S 4242 12 12 0 -1 1": 4242,
	} {
		got, ok := parseStatParent([]byte(in))
		if (want < 0) == ok || ok && got != want {
			t.Errorf("%q: got %d %v, want %d", in, got, ok, want)
		}
	}
}

func FuzzParseStatParent(f *testing.F) {
	f.Add([]byte("123 (sh) S 45 123 123 0 -1"))
	f.Add([]byte("7 (a) b) (c) R 1 7 7 0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, ok := parseStatParent(b)
		if !ok && p != 0 {
			t.Fatalf("failed but returned %d", p)
		}
	})
}

// TestDescendants: a child and its grandchild are found, in /proc as it
// is now, and this process's parent is not.
func TestDescendants(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", "sleep 60 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var got []int
	// The shell forks its sleep a moment after it starts.
	if err := realtest.WaitFor(30*time.Second, func() error {
		got = descendants(os.Getpid())
		if !slices.Contains(got, cmd.Process.Pid) || len(got) < 2 {
			return fmt.Errorf("descendants %v, want the shell %d and its sleep", got, cmd.Process.Pid)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(got, os.Getppid()) || slices.Contains(got, os.Getpid()) {
		t.Errorf("descendants %v include this process or its parent", got)
	}
	for _, p := range got {
		if p == cmd.Process.Pid {
			continue
		}
		if pp, ok := parentOf(p); !ok || pp != cmd.Process.Pid {
			t.Errorf("pid %d: parent %d, want the shell %d", p, pp, cmd.Process.Pid)
		}
	}
}
