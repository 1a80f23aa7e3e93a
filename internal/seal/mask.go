package seal

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// maskPaths covers each host path in paths with an empty, read-only
// stand-in: an empty directory for a directory, an empty file for anything
// else. The stand-ins live on one small tmpfs whose superblock is made
// read-only, so nothing can write through any of the binds.
//
// Why this holds against the workload: it has no capability to unmount in
// the seal's mount namespace, and a mount namespace it makes itself (in a
// user namespace of its own, `unshare -Urm`) receives these mounts locked
// to what is below them: the kernel refuses to unmount them there or to
// bind what they cover without them. /proc is the seal's own, so no host
// process's /proc/PID/root leads around them either.
//
// rootMode says init runs as real root; otherwise it has the owner's
// access to host files, no more, and a path it cannot even look up is one
// the workload cannot reach either.
func maskPaths(paths []string, rootMode bool) error {
	if len(paths) == 0 {
		return nil
	}
	base := "/run"
	if _, err := os.Stat(base); err != nil {
		base = "/tmp"
	}
	stage, err := os.MkdirTemp(base, ".airlock-mask-")
	if err != nil {
		return fmt.Errorf("hide paths: %w", err)
	}
	defer os.Remove(stage)
	const flags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if err := unix.Mount("tmpfs", stage, "tmpfs", flags, "mode=0755,size=16k,nr_inodes=8"); err != nil {
		return fmt.Errorf("hide paths: mount stand-ins: %w", err)
	}
	// Once the binds hold the tmpfs, the stage itself can go.
	defer unix.Unmount(stage, unix.MNT_DETACH)
	dir, file := filepath.Join(stage, "d"), filepath.Join(stage, "f")
	if err := os.Mkdir(dir, 0o555); err != nil {
		return fmt.Errorf("hide paths: %w", err)
	}
	if err := os.WriteFile(file, nil, 0o444); err != nil {
		return fmt.Errorf("hide paths: %w", err)
	}
	if err := unix.Mount("", stage, "", unix.MS_REMOUNT|unix.MS_RDONLY|flags, ""); err != nil {
		return fmt.Errorf("hide paths: make stand-ins read-only: %w", err)
	}
	for _, p := range paths {
		st, err := os.Stat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, unix.ENOTDIR):
			continue // nothing there to see
		case err != nil && !rootMode && errors.Is(err, fs.ErrPermission):
			continue // init has the owner's access: the workload cannot reach it either
		case err != nil:
			// Not knowing what it is, we cannot cover it: refuse to start
			// rather than leave it visible.
			return fmt.Errorf("hide %s: %w", p, err)
		}
		src := file
		if st.IsDir() {
			src = dir
		}
		if err := unix.Mount(src, p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("hide %s: %w", p, err)
		}
		if err := unix.Mount("", p, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|flags, ""); err != nil {
			return fmt.Errorf("hide %s: make read-only: %w", p, err)
		}
	}
	return nil
}
