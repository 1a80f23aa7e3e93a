package seal

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"unsafe"

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

// dropCapabilities empties every capability set of every thread of init:
// bounding, ambient, then effective/permitted/inheritable, so neither init
// nor anything it starts holds a capability, even in its user namespace.
// It needs a build without cgo (syscall.AllThreadsSyscall).
func dropCapabilities() error {
	last := lastCap()
	for c := 0; c <= last; c++ {
		if _, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0); e != 0 && e != unix.EINVAL {
			return fmt.Errorf("drop bounding capability %d: %w", c, e)
		}
	}
	if _, _, e := syscall.AllThreadsSyscall6(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0); e != 0 {
		return fmt.Errorf("clear ambient capabilities: %w", e)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		if e == unix.ENOTSUP {
			return fmt.Errorf("airlock was built with cgo; build it with CGO_ENABLED=0: %w", e)
		}
		return fmt.Errorf("capset: %w", e)
	}
	return nil
}

func lastCap() int {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 63
	}
	n, err := strconv.Atoi(string(trimNL(b)))
	if err != nil {
		return 63
	}
	return n
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}
