package vm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// BuildCached runs the bash script in dir unless it already ran there: a
// stamp named after the script's hash records a build that succeeded, so
// a changed script builds anew and an unchanged one costs nothing. Builds
// of the same dir by several processes at once (test packages, a gateway
// restarted) wait for each other on a lock file. dir is made 0755: the
// accounts sessions run as read what is built there.
func BuildCached(ctx context.Context, dir, script string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("guest build: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("guest build: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("guest build: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("guest build: lock %s: %w", dir, err)
	}
	sum := sha256.Sum256([]byte(script))
	stamp := filepath.Join(dir, "built-"+hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(stamp); err == nil {
		return nil
	}
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("guest build in %s: %w\n%s", dir, err, out)
	}
	if err := os.WriteFile(stamp, nil, 0o644); err != nil {
		return fmt.Errorf("guest build: %w", err)
	}
	return nil
}
