package runner

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// rootScratch is where a root runner keeps sessions' scratch directories.
// /run is root's alone, so no other local user can make this directory
// first or swap it for a symlink, as they could with a fixed name in /tmp.
const rootScratch = "/run/airlock"

// scratchParent returns the directory the session's scratch directory goes
// in, or "" when it must be a fresh random directory in $TMPDIR (an
// unprivileged runner with no usable $XDG_RUNTIME_DIR). It never uses a
// predictable name in a directory other users can write.
func scratchParent() (string, error) {
	if os.Geteuid() == 0 {
		return ensurePrivateDir(rootScratch, 0o711)
	}
	if rt := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(rt) {
		if err := checkPrivateDir(rt, false); err == nil {
			return ensurePrivateDir(filepath.Join(rt, "airlock"), 0o700)
		}
	}
	return "", nil
}

// ensurePrivateDir makes dir (mode) unless it exists, then checks it is
// one we can trust: see checkPrivateDir.
func ensurePrivateDir(dir string, mode fs.FileMode) (string, error) {
	if err := os.Mkdir(dir, mode); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("make scratch root %s: %w", dir, err)
	}
	if err := checkPrivateDir(dir, false); err != nil {
		return "", fmt.Errorf("scratch root: %w", err)
	}
	return dir, nil
}

// checkPrivateDir refuses dir unless it is a real directory (not a
// symlink) owned by us and writable by nobody else. sticky allows a
// world-writable directory with the sticky bit owned by root (like /tmp),
// where others cannot rename or remove our entries.
func checkPrivateDir(dir string, sticky bool) error {
	st, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || !st.IsDir() {
		return fmt.Errorf("%s is not a directory (%s); remove it", dir, st.Mode().Type())
	}
	me := uint32(os.Geteuid())
	if sticky && sys.Uid == 0 && st.Mode()&fs.ModeSticky != 0 {
		return nil
	}
	if sys.Uid != me {
		return fmt.Errorf("%s is owned by uid %d, not by us (uid %d): another user may have made it; remove it", dir, sys.Uid, me)
	}
	if st.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is writable by group or others (mode %v): another user could swap what is in it; fix its mode", dir, st.Mode().Perm())
	}
	return nil
}

// checkSocketDir refuses to put a connector's UNIX socket in a directory
// where another user could replace it (and receive the gateway's
// connections): the directory, and every one above it, must belong to
// root, to us or to the session's owner (uid owner), and only a root-owned
// sticky one (like /tmp) may be writable by others.
func checkSocketDir(dir string, owner int) error {
	me := uint32(os.Geteuid())
	for d := dir; ; d = filepath.Dir(d) {
		st, err := os.Lstat(d)
		if err != nil {
			return fmt.Errorf("socket directory: %w", err)
		}
		sys, _ := st.Sys().(*syscall.Stat_t)
		sticky := sys.Uid == 0 && st.Mode()&fs.ModeSticky != 0 && d != dir
		switch {
		case !st.IsDir():
			return fmt.Errorf("socket directory: %s is not a directory (%s)", d, st.Mode().Type())
		case sys.Uid != 0 && sys.Uid != me && sys.Uid != uint32(owner):
			return fmt.Errorf("socket directory: %s is owned by uid %d, who could swap what is below it", d, sys.Uid)
		case st.Mode().Perm()&0o022 != 0 && !sticky:
			return fmt.Errorf("socket directory: %s is writable by group or others (mode %v)", d, st.Mode().Perm())
		}
		if d == "/" || d == "." {
			return nil
		}
	}
}
