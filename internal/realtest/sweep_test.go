package realtest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSweepBinDirs: the binaries of test processes that are gone are
// removed; those of a running process, one being made and anything else
// under the base stay.
func TestSweepBinDirs(t *testing.T) {
	base := t.TempDir()
	mk := func(name, owner string, age time.Duration) {
		dir := filepath.Join(base, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if owner != "" {
			os.WriteFile(filepath.Join(dir, binOwnerFile), []byte(owner), 0o644)
		}
		old := time.Now().Add(-age)
		os.Chtimes(dir, old, old)
	}
	me := procStamp(os.Getpid())
	if me == "" {
		t.Fatal("no stamp for this process")
	}
	mk("bin-live", me, 3*time.Hour)
	mk("bin-gone", "999999999 1", 0)
	mk("bin-reused", fmt.Sprint(os.Getpid())+" 1", 0) // this pid, another start time
	mk("bin-young", "", time.Minute)
	mk("bin-legacy", "", 2*time.Hour)
	mk("demo-state", "", 5*time.Hour)
	sweepBinDirs(base)
	for name, want := range map[string]bool{"bin-live": true, "bin-gone": false, "bin-reused": false, "bin-young": true, "bin-legacy": false, "demo-state": true} {
		_, err := os.Stat(filepath.Join(base, name))
		if got := err == nil; got != want {
			t.Errorf("%s: kept %v, want %v", name, got, want)
		}
	}
}
