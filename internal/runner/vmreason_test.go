package runner

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestVMExitReasonReadsOnlyQEMUsLog attacks the runner's look at QEMU's
// log after a VM session: the file is in the seal's /tmp, which the
// session's processes control, and a root runner reads it as root. A
// symlink or a hard link there must not make it read (and report in the
// exit reason, and log) a file the owner cannot, and a FIFO must not hang
// it.
func TestVMExitReasonReadsOnlyQEMUsLog(t *testing.T) {
	r := &run{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	dir := t.TempDir()
	secret := filepath.Join(dir, "shadow")
	if err := os.WriteFile(secret, []byte("root:$y$secret-hash:19000::::::\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	scratch := filepath.Join(dir, "scratch")
	tmp := filepath.Join(scratch, "tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(tmp, "qemu.log")

	if err := os.WriteFile(log, []byte("qemu-system-x86_64: -drive: Could not open 'x'\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := r.vmExitReason("workload exited with code 1", 1, scratch); !strings.Contains(got, "Could not open") {
		t.Errorf("QEMU's own log: reason %q lacks its last line", got)
	}

	os.Remove(log)
	if err := os.Symlink(secret, log); err != nil {
		t.Fatal(err)
	}
	if got := r.vmExitReason("workload exited with code 1", 1, scratch); strings.Contains(got, "secret-hash") {
		t.Errorf("followed a symlink out of the scratch directory: reason %q", got)
	}

	// A hard link, where protected_hardlinks is off (or the file is the
	// owner's to link, but not to read back once the runner is done).
	os.Remove(log)
	if err := os.Link(secret, log); err != nil {
		t.Fatal(err)
	}
	if got := r.vmExitReason("workload exited with code 1", 1, scratch); strings.Contains(got, "secret-hash") {
		t.Errorf("read a hard link to another file: reason %q", got)
	}

	os.Remove(log)
	if err := syscall.Mkfifo(log, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	go func() { done <- r.vmExitReason("workload exited with code 1", 1, scratch) }()
	select {
	case got := <-done:
		if got != "workload exited with code 1" {
			t.Errorf("a FIFO as QEMU's log: reason %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a FIFO in place of QEMU's log hung the runner")
	}
}
