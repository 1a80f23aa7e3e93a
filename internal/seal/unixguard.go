package seal

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The unix guard keeps the workload from reaching host pathname UNIX
// sockets (an ssh ControlMaster or gpg-agent in the owner's home, any
// daemon's socket on a shared file system). A network namespace does not
// cover them, Landlock cannot, and a socket may appear after the session
// started, so the decision is made at each connect.
//
// The workload's spawner thread runs a seccomp filter (unixguard_filter.go)
// that hands every connect to init and refuses AF_UNIX datagram sockets,
// the only kind whose sends name a destination. Init never answers
// "continue": the workload could rewrite the address, or swap the
// descriptor, between the check and the kernel's second look. It takes a
// copy of the workload's socket (pidfd_getfd) and of the address, and
// connects that copy, which is the same socket, itself. A pathname is
// opened with O_PATH as the workload would see it and allowed only when
// that inode is on one of the seal's private mounts (/tmp, /run, /var/tmp,
// /dev/shm) and bound in the seal's network namespace (a host socket
// moved into the scratch directory is on the private /tmp mount too; see
// unixguard_diag.go), or is a socket the profile lists; the connect then
// goes to /proc/self/fd/N of the inode that was checked.

// unixGuardPolicy says which pathname sockets the workload may reach.
type unixGuardPolicy struct {
	// privateMounts are the mount ids of the seal's own mounts.
	privateMounts map[uint64]bool
	// mountDevs are their file systems' kernel device numbers
	// (unixguard_diag.go); without one, stat's is used.
	mountDevs map[uint64]uint32
	// listed are host sockets the profile allows (unix_sockets).
	listed []string
	// ready, when not nil, is closed once the guard has pinned the listed
	// sockets the owner could replace (unixguard_listed.go); the workload
	// must not start before.
	ready chan struct{}
	// switchCreds: init is not the owner (root mode). Connects on the
	// workload's behalf run on threads that took the owner's ids, so
	// permission checks and SO_PEERCRED are the owner's; in every mode
	// those threads hold no capability, so init's cannot lend the
	// workload anything.
	switchCreds bool
	uid, gid    int
	groups      []int
}

// privateMountIDs returns the mount ids of the seal's private mounts.
// Called once setupMounts has run.
func privateMountIDs() (map[uint64]bool, error) {
	ids := map[uint64]bool{}
	for _, d := range []string{"/tmp", "/run", "/var/tmp", "/dev/shm"} {
		var st unix.Statx_t
		if err := unix.Statx(unix.AT_FDCWD, d, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return nil, fmt.Errorf("unix guard: mount id of %s: %w", d, err)
		}
		if st.Mask&unix.STATX_MNT_ID == 0 {
			return nil, fmt.Errorf("unix guard: the kernel gives no mount id for %s", d)
		}
		ids[st.Mnt_id] = true
	}
	return ids, nil
}

// seccomp_notif, seccomp_notif_resp (linux/seccomp.h); x/sys has only
// the constants.
type seccompNotif struct {
	id    uint64
	pid   uint32
	flags uint32
	nr    int32
	arch  uint32
	ip    uint64
	args  [6]uint64
}

type seccompNotifResp struct {
	id    uint64
	val   int64
	error int32
	flags uint32
}

const (
	ioctlNotifIDValid  = 0x40082102 // SECCOMP_IOCTL_NOTIF_ID_VALID
	ioctlNotifSetFlags = 0x40082104 // SECCOMP_IOCTL_NOTIF_SET_FLAGS
)

type unixGuard struct {
	fd      int
	policy  unixGuardPolicy
	pinned  map[string]unix.Statx_t // listed path → the inode it had at the start
	log     *slog.Logger
	creds   *credRunner
	logged  sync.Map // path → struct{}: refusals already logged
	nLogged atomic.Int32
}

// serveUnixGuard answers the filter's notifications on fd until ctx ends
// or the descriptor fails. Each call is handled on a thread of its own
// that holds the owner's ids and no capabilities (credRunner): a blocking
// connect must not hold up the others, and nothing init may do can be done
// on the workload's behalf.
func serveUnixGuard(ctx context.Context, fd int, policy unixGuardPolicy, log *slog.Logger) {
	g := &unixGuard{fd: fd, policy: policy, log: log}
	g.creds = &credRunner{switchIDs: policy.switchCreds, uid: policy.uid, gid: policy.gid, groups: policy.groups, jobs: make(chan func(error)), log: log}
	// 6.6+: wake the caller on this CPU when answering, to shorten each
	// round trip; older kernels lack it and lose only speed.
	unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ioctlNotifSetFlags, unix.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
	g.pinListed()
	if policy.ready != nil {
		close(policy.ready)
	}
	// Poll, not a bare RECV: a RECV blocks on, even once every process
	// under the filter is gone, while poll reports that as POLLHUP.
	stop, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		log.Error("unix guard: eventfd", "error", err)
		return
	}
	defer unix.Close(stop)
	go func() {
		<-ctx.Done()
		unix.Write(stop, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	}()
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(stop), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			log.Error("unix guard: poll", "error", err)
			return
		}
		if fds[1].Revents != 0 || fds[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
			return
		}
		var n seccompNotif
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SECCOMP_IOCTL_NOTIF_RECV, uintptr(unsafe.Pointer(&n)))
		switch e {
		case 0:
			g.creds.do(func(err error) { g.handle(n, err) })
		case unix.EINTR, unix.ENOENT:
			// ENOENT: the caller died before we got to it.
		default:
			log.Error("unix guard: read notifications", "error", e)
			return
		}
	}
}

func (g *unixGuard) handle(n seccompNotif, threadErr error) {
	val, errno := int64(0), unix.EACCES
	if threadErr == nil {
		val, errno = g.decide(&n)
	}
	resp := seccompNotifResp{id: n.id, val: val}
	if errno != 0 {
		resp.val, resp.error = 0, -int32(errno)
	}
	// ENOENT: the caller is gone (killed); nothing to answer.
	unix.Syscall(unix.SYS_IOCTL, uintptr(g.fd), unix.SECCOMP_IOCTL_NOTIF_SEND, uintptr(unsafe.Pointer(&resp)))
}

// target is the thread that made a call, pinned by a pidfd.
type target struct {
	tid   int
	pidfd int
}

func (g *unixGuard) idValid(id uint64) bool {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(g.fd), ioctlNotifIDValid, uintptr(unsafe.Pointer(&id)))
	return e == 0
}

func (g *unixGuard) decide(n *seccompNotif) (int64, unix.Errno) {
	pidfd, err := openCallerPidfd(int(n.pid))
	if err != nil {
		return 0, unix.ESRCH
	}
	defer unix.Close(pidfd)
	// The tid could have been reused before the pidfd was taken; a valid
	// notification id proves the pidfd names the caller.
	if !g.idValid(n.id) {
		return 0, unix.ESRCH
	}
	t := &target{tid: int(n.pid), pidfd: pidfd}
	if int(n.nr) != unix.SYS_CONNECT {
		return 0, unix.ENOSYS
	}
	return g.connect(t, n.args)
}

// openCallerPidfd pins the calling thread tid. Before Linux 6.9 a pidfd
// names only a process, so it names the thread group instead: its threads
// share the descriptor table unless one unshared it, in which case the
// guard acts on the wrong table's socket, which gets it nothing either.
func openCallerPidfd(tid int) (int, error) {
	fd, err := unix.PidfdOpen(tid, unix.PIDFD_THREAD)
	if !errors.Is(err, unix.EINVAL) {
		return fd, err
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return -1, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			tgid, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return -1, fmt.Errorf("tgid of %d: %w", tid, err)
			}
			return unix.PidfdOpen(tgid, 0)
		}
	}
	return -1, fmt.Errorf("no Tgid in /proc/%d/status", tid)
}

// read copies n bytes at addr out of the target.
func (t *target) read(addr uint64, n int) ([]byte, unix.Errno) {
	if n == 0 {
		return nil, 0
	}
	b := make([]byte, n)
	got, err := unix.ProcessVMReadv(t.tid, []unix.Iovec{{Base: &b[0], Len: uint64(n)}},
		[]unix.RemoteIovec{{Base: uintptr(addr), Len: n}}, 0)
	if err != nil || got != n {
		return nil, unix.EFAULT
	}
	return b, 0
}

// socket takes a copy of the target's descriptor fd.
func (t *target) socket(fd uint64) (int, unix.Errno) {
	s, err := unix.PidfdGetfd(t.pidfd, int(int32(fd)), 0)
	if err != nil {
		if errors.Is(err, unix.EBADF) {
			return -1, unix.EBADF
		}
		// EPERM: the owner may not look into this process (it made itself
		// non-dumpable). Refusing is the only safe answer.
		return -1, unix.EACCES
	}
	return s, 0
}

func errnoOf(err error) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return unix.EIO
}

// connect(fd, addr, addrlen).
func (g *unixGuard) connect(t *target, args [6]uint64) (int64, unix.Errno) {
	addrLen := int32(args[2])
	if addrLen < 0 || addrLen > sockaddrMax {
		return 0, unix.EINVAL
	}
	sock, errno := t.socket(args[0])
	if errno != 0 {
		return 0, errno
	}
	defer unix.Close(sock)
	addr, errno := t.read(args[1], int(addrLen))
	if errno != 0 {
		return 0, errno
	}
	domain, err := unix.GetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return 0, errnoOf(err)
	}
	var a unixAddr
	if domain == unix.AF_UNIX {
		a, _ = parseSockaddr(addr) // a malformed one goes to the kernel as is
	}
	if a.path == "" {
		return 0, rawConnect(sock, addr)
	}
	return 0, g.viaCheckedPath(t, a.path, "connect to", func(checked []byte) unix.Errno {
		return rawConnect(sock, checked)
	})
}

func rawConnect(sock int, addr []byte) unix.Errno {
	var p unsafe.Pointer
	if len(addr) > 0 {
		p = unsafe.Pointer(&addr[0])
	}
	_, _, e := unix.Syscall(unix.SYS_CONNECT, uintptr(sock), uintptr(p), uintptr(len(addr)))
	return e
}

// viaCheckedPath resolves path as the target sees it (its root, its cwd),
// checks the socket it names, and calls do with an AF_UNIX address for
// that very inode (/proc/self/fd/N of our O_PATH descriptor), so nothing
// the workload changes afterwards can redirect the call.
func (g *unixGuard) viaCheckedPath(t *target, path, what string, do func(addr []byte) unix.Errno) unix.Errno {
	base, rel, resolve := "cwd", path, uint64(unix.RESOLVE_NO_MAGICLINKS)
	if filepath.IsAbs(path) {
		base, resolve = "root", resolve|unix.RESOLVE_IN_ROOT
	}
	dir, err := unix.Open("/proc/"+strconv.Itoa(t.tid)+"/"+base, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return g.refuse(path, what, fmt.Sprintf("cannot see the caller's %s: %v", base, err))
	}
	defer unix.Close(dir)
	fd, err := unix.Openat2(dir, rel, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: resolve})
	if err != nil {
		// ENOENT, EACCES, ELOOP …: what the caller would have got.
		return errnoOf(err)
	}
	defer unix.Close(fd)
	var st unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_TYPE|unix.STATX_INO|unix.STATX_MNT_ID, &st); err != nil {
		return errnoOf(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return unix.ECONNREFUSED
	}
	if !g.listed(&st) {
		if !g.policy.privateMounts[st.Mnt_id] {
			return g.refuse(path, what, "not on the seal's private mounts and not listed in unix_sockets")
		}
		// On a private mount, but perhaps a host socket moved there through
		// the scratch directory's host path (unixguard_diag.go).
		id := vfsIDOf(&st)
		if dev, ok := g.policy.mountDevs[st.Mnt_id]; ok {
			id.dev = dev
		}
		here, err := boundHere(id)
		if err != nil {
			// Not a "no": the check could not be made. Refuse, and say so.
			g.log.Error("unix guard: is "+path+" bound inside the seal", "error", err)
			return unix.EAGAIN
		}
		if !here {
			return g.refuse(path, what, "on the seal's private mounts but not bound inside the seal (a host socket moved or linked there)")
		}
	}
	proc := "/proc/self/fd/" + strconv.Itoa(fd)
	addr := make([]byte, sunPathOffset+len(proc)+1)
	binary.LittleEndian.PutUint16(addr, unix.AF_UNIX)
	copy(addr[sunPathOffset:], proc)
	return do(addr)
}

// listed reports whether st is one of the profile's sockets, compared by
// device and inode at the time of the call (a listed socket may be
// re-created, and a bind mount of it is the same socket), or, for one the
// owner could replace, with the inode it had when the session started.
func (g *unixGuard) listed(st *unix.Statx_t) bool {
	for _, p := range g.policy.listed {
		l, pinned := g.pinned[p]
		if !pinned && unix.Statx(unix.AT_FDCWD, p, 0, unix.STATX_TYPE|unix.STATX_INO, &l) != nil {
			continue
		}
		if l.Ino == st.Ino && l.Dev_major == st.Dev_major && l.Dev_minor == st.Dev_minor && l.Mode&unix.S_IFMT == unix.S_IFSOCK {
			return true
		}
	}
	return false
}

// maxLoggedRefusals bounds the paths remembered for logging once each: a
// workload trying paths by the million must not grow init without end.
const maxLoggedRefusals = 1000

func (g *unixGuard) refuse(path, what, why string) unix.Errno {
	if g.nLogged.Load() >= maxLoggedRefusals {
		return unix.EACCES
	}
	if _, seen := g.logged.LoadOrStore(path, struct{}{}); !seen {
		if g.nLogged.Add(1) == maxLoggedRefusals {
			g.log.Warn(fmt.Sprintf("seal: refused %s host socket %s: %s (further refusals are not logged)", what, path, why))
		} else {
			g.log.Warn(fmt.Sprintf("seal: refused %s host socket %s: %s", what, path, why))
		}
	}
	return unix.EACCES
}

// credRunner keeps threads that hold the owner's uid, gid and groups and
// no capabilities. setresuid, capset and friends are made as raw system
// calls, which change only the calling thread (syscall.Setuid would change
// every thread of init); those threads stay locked and are never handed
// back to the runtime.
type credRunner struct {
	switchIDs bool
	uid, gid  int
	groups    []int
	jobs      chan func(error)
	log       *slog.Logger
}

// do runs f on an idle thread of the runner, or on a new one, and does
// not wait for it. f gets the error of a thread that could not take the
// owner's ids, and must then do nothing on the workload's behalf.
func (c *credRunner) do(f func(error)) {
	select {
	case c.jobs <- f: // an idle thread took it
	default:
		goOffMainThread(func() { c.worker(f) })
	}
}

// worker runs on a thread of its own (goOffMainThread): its ids are not
// init's.
func (c *credRunner) worker(f func(error)) {
	err := c.become()
	if err != nil {
		c.log.Error("unix guard: take the owner's ids on a thread", "error", err)
	}
	for {
		f(err)
		f = <-c.jobs
	}
}

func (c *credRunner) become() error {
	if c.switchIDs {
		if err := c.switchToOwner(); err != nil {
			return err
		}
	}
	// Leaving root empties the capability sets already; this covers init
	// running as the owner with capabilities in its own user namespace.
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if _, _, e := unix.RawSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("capset: %w", e)
	}
	return nil
}

func (c *credRunner) switchToOwner() error {
	gids := make([]uint32, len(c.groups))
	for i, g := range c.groups {
		gids[i] = uint32(g)
	}
	var p unsafe.Pointer
	if len(gids) > 0 {
		p = unsafe.Pointer(&gids[0])
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(gids)), uintptr(p), 0); e != 0 {
		return fmt.Errorf("setgroups: %w", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(c.gid), uintptr(c.gid), uintptr(c.gid)); e != 0 {
		return fmt.Errorf("setresgid: %w", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(c.uid), uintptr(c.uid), uintptr(c.uid)); e != 0 {
		return fmt.Errorf("setresuid: %w", e)
	}
	return nil
}
