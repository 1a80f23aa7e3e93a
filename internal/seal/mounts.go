package seal

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// setupMounts gives the seal its own view of the file system: host UNIX
// sockets under /tmp, /run, /var/tmp and /dev/shm (X11, D-Bus, a container
// engine's socket) are a way out of a network namespace, so those paths are
// replaced; /proc is remounted so only the seal's processes show (a host
// process's /proc/PID/root would otherwise lead back to the host's /tmp).
func (in *initProc) setupMounts() error {
	p := in.plan
	// Nothing we mount may propagate back to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	// Binds first: their sources live in the session's scratch
	// directory, under the host's /run or /tmp, which are replaced next.
	for _, b := range p.Binds {
		if err := bindReadOnly(b.Source, b.Target); err != nil {
			return err
		}
	}
	if err := unix.Mount(p.ScratchDir, "/tmp", "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("mount scratch %s on /tmp: %w", p.ScratchDir, err)
	}
	for _, m := range []struct{ dir, opts string }{
		{"/run", "mode=0755"},
		{"/var/tmp", "mode=1777"},
		{"/dev/shm", "mode=1777"},
	} {
		if _, err := os.Stat(m.dir); err != nil {
			continue
		}
		if err := unix.Mount("tmpfs", m.dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, m.opts); err != nil {
			return fmt.Errorf("mount private %s: %w", m.dir, err)
		}
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc for the seal's PID namespace: %w", err)
	}
	// XDG_RUNTIME_DIR for the owner, on the private /run.
	rt := "/run/user/" + strconv.Itoa(p.UID)
	if err := os.MkdirAll(rt, 0o700); err != nil {
		return fmt.Errorf("make %s: %w", rt, err)
	}
	if p.RootMode {
		// MkdirAll made /run/user 0700 too: root's, so the owner could
		// not reach its own directory below it.
		os.Chmod("/run/user", 0o755)
		os.Chown("/run/user", 0, 0)
		if err := os.Chown(rt, p.UID, p.GID); err != nil {
			return fmt.Errorf("chown %s: %w", rt, err)
		}
	}
	// A devpts instance of our own: ptys then belong to groups that exist
	// in the user namespace, so xterm can set its pty's group.
	opts := "newinstance,ptmxmode=0666,mode=0620"
	if p.TTYGID >= 0 {
		opts += ",gid=" + strconv.Itoa(p.TTYGID)
	}
	if err := unix.Mount("devpts", "/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, opts); err != nil {
		in.warn("private devpts: %v (terminals use the host's)", err)
	} else if err := unix.Mount("/dev/pts/ptmx", "/dev/ptmx", "", unix.MS_BIND, ""); err != nil {
		in.warn("bind /dev/pts/ptmx on /dev/ptmx: %v", err)
	}
	if p.TTYGID < 0 {
		in.warn("tty group not mapped in the user namespace: xterm and other programs that set a pty's group may fail")
	}
	// Last, so nothing mounted above can cover a mask.
	return maskPaths(p.Hide, p.RootMode)
}

// loopbackUp sets IFF_UP on lo, without needing ip(8) inside the seal.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// bindReadOnly mounts host directory src over dst, read-only. In a user
// namespace the remount must keep the flags the kernel locked on the
// source's mount (nosuid, nodev, noexec), so they are read first.
func bindReadOnly(src, dst string) error {
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", src, dst, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dst, &st); err != nil {
		return fmt.Errorf("bind %s on %s: %w", src, dst, err)
	}
	keep := uintptr(st.Flags) & (unix.ST_NOSUID | unix.ST_NODEV | unix.ST_NOEXEC | unix.ST_NOATIME | unix.ST_NODIRATIME | unix.ST_RELATIME)
	flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY)
	for st, ms := range map[uintptr]uintptr{
		unix.ST_NOSUID: unix.MS_NOSUID, unix.ST_NODEV: unix.MS_NODEV, unix.ST_NOEXEC: unix.MS_NOEXEC,
		unix.ST_NOATIME: unix.MS_NOATIME, unix.ST_NODIRATIME: unix.MS_NODIRATIME, unix.ST_RELATIME: unix.MS_RELATIME,
	} {
		if keep&st != 0 {
			flags |= ms
		}
	}
	if err := unix.Mount("", dst, "", flags, ""); err != nil {
		return fmt.Errorf("bind %s on %s: make read-only: %w", src, dst, err)
	}
	return nil
}
