package seal

import (
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// A listed socket is found by its path at each connect, so a daemon may
// re-create it during the session. But if the owner can write the
// directory that holds it, or any directory above, the workload can
// replace it: rename its ssh ControlMaster (or any other of the owner's
// sockets on that file system) onto the listed name, and the guard would
// let it through. Such a listed socket is pinned instead: only the inode
// it had when the session started counts (if it was missing then, none
// does), and init says so in its log.

// pinListed pins every listed socket the owner could replace. It runs
// before the workload starts, and asks on one of the guard's threads,
// which hold the owner's ids and no capabilities, so the kernel answers
// for the owner (groups, ACLs, read-only mounts included).
func (g *unixGuard) pinListed() {
	if len(g.policy.listed) == 0 {
		return
	}
	g.pinned = map[string]unix.Statx_t{}
	done := make(chan struct{})
	g.creds.do(func(threadErr error) {
		defer close(done)
		for _, p := range g.policy.listed {
			// Without the owner's ids, assume the worst.
			replaceable, why := true, "could not take the owner's ids to check"
			if threadErr == nil {
				replaceable, why = ownerCanReplace(p)
			}
			if !replaceable {
				continue
			}
			var st unix.Statx_t
			if err := unix.Statx(unix.AT_FDCWD, p, 0, unix.STATX_TYPE|unix.STATX_INO, &st); err != nil {
				st = unix.Statx_t{} // matches no socket
			}
			g.pinned[p] = st
			g.log.Warn(fmt.Sprintf("seal: listed socket %s is pinned to the inode it has now (%s): if it is re-created during the session, it is no longer reachable", p, why))
		}
	})
	<-done
}

// ownerCanReplace reports whether the calling thread's ids may write a
// directory on path (lexically, or once its symlinks are resolved), and so
// put another socket in its place; why names the directory.
func ownerCanReplace(path string) (bool, string) {
	paths := []string{filepath.Clean(path)}
	if r, err := filepath.EvalSymlinks(path); err == nil && r != paths[0] {
		paths = append(paths, r)
	}
	for _, p := range paths {
		for d := filepath.Dir(p); ; d = filepath.Dir(d) {
			if unix.Faccessat2(unix.AT_FDCWD, d, unix.W_OK, unix.AT_EACCESS) == nil {
				return true, "the owner can write " + d
			}
			if d == "/" || d == "." {
				break
			}
		}
	}
	return false, ""
}
