package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKioskWMMkdirRefusesRelative: --mkdir takes absolute paths only (the
// window manager's working directory is the seal's /, but a relative
// profile path would depend on it), refused before any X connection.
func TestKioskWMMkdirRefusesRelative(t *testing.T) {
	var stderr bytes.Buffer
	code := cmdKioskWM(t.Context(), &Env{Stderr: &stderr}, []string{"--display", ":99", "--mkdir", "tmp/profile", "--", "true"})
	if code != 2 || !strings.Contains(stderr.String(), `"tmp/profile" is not an absolute path`) {
		t.Fatalf("exit %d, stderr %q; want 2 and the path refused", code, stderr.String())
	}
}

// TestKioskWMMkdir: --mkdir makes the directory, private to the owner,
// before the window manager connects to the display (here one that does
// not exist, so it fails after).
func TestKioskWMMkdir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kiosk", "profile")
	var stderr bytes.Buffer
	code := cmdKioskWM(t.Context(), &Env{Stderr: &stderr}, []string{"--display", ":987", "--mkdir", dir, "--", "true"})
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("--mkdir %s: %v %v", dir, fi, err)
	}
	if code != 1 || !strings.Contains(stderr.String(), "X display :987") {
		t.Fatalf("exit %d, stderr %q; want the display refused", code, stderr.String())
	}
}
