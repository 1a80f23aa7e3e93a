package seal

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// guardedThread is a thread of the test process under the unix guard's
// filter, with init's supervisor serving it: the same code the seal runs,
// without a seal, so each rule can be attacked directly.
type guardedThread struct {
	jobs chan func()
}

// newGuardedThread installs the filter on a fresh locked thread. The
// thread ends (it is never unlocked) when the test does.
func newGuardedThread(t testing.TB, policy unixGuardPolicy) *guardedThread {
	t.Helper()
	return newGuardedThreadDatagram(t, policy, false)
}

// newGuardedThreadDatagram is newGuardedThread with the filter a session
// with Config.UnixDatagram runs under when allowDatagram is set.
func newGuardedThreadDatagram(t testing.TB, policy unixGuardPolicy, allowDatagram bool) *guardedThread {
	t.Helper()
	g := &guardedThread{jobs: make(chan func())}
	policy.ready = make(chan struct{})
	installed := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread carries the filter
		fd, err := installUnixGuard(allowDatagram)
		installed <- err
		if err != nil {
			return
		}
		go func() {
			defer close(served)
			serveUnixGuard(ctx, fd, policy, slog.New(slog.NewTextHandler(os.Stderr, nil)))
		}()
		for f := range g.jobs {
			f()
		}
	}()
	if err := <-installed; err != nil {
		t.Fatal(err)
	}
	<-policy.ready // as init does before it starts the workload
	t.Cleanup(func() {
		close(g.jobs)
		cancel()
		<-served
	})
	return g
}

// do runs f on the guarded thread.
func (g *guardedThread) do(f func()) {
	done := make(chan struct{})
	g.jobs <- func() { defer close(done); f() }
	<-done
}

func mountID(t testing.TB, path string) uint64 {
	t.Helper()
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_MNT_ID, &st); err != nil {
		t.Fatal(err)
	}
	return st.Mnt_id
}

// privateAndHost returns a directory on a mount the policy treats as the
// seal's own (under /dev/shm) and one on another mount (the test's
// temporary directory), standing in for the host.
func privateAndHost(t testing.TB) (private, host string, policy unixGuardPolicy) {
	t.Helper()
	private, err := os.MkdirTemp("/dev/shm", "unixguard-")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(private) })
	host = t.TempDir()
	if mountID(t, private) == mountID(t, host) {
		t.Skip("/dev/shm and the test's temporary directory are on one mount")
	}
	return private, host, unixGuardPolicy{privateMounts: map[uint64]bool{mountID(t, private): true}}
}

// countingListener accepts on path and counts connections.
func countingListener(t testing.TB, network, path string) *atomic.Int32 {
	t.Helper()
	ln, err := net.Listen(network, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return &n
}

func sockaddrUn(path string) *unix.SockaddrUnix { return &unix.SockaddrUnix{Name: path} }

func connectUnix(typ int, path string) error {
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Connect(fd, sockaddrUn(path))
}

// TestUnixGuardConnect: a pathname connect reaches a socket on the seal's
// own mounts and a listed one, and is refused with EACCES for any other,
// however it is named (absolute, relative, through a symlink on a private
// mount, a socket made after the guard started).
func TestUnixGuardConnect(t *testing.T) {
	private, host, policy := privateAndHost(t)
	listed := filepath.Join(host, "listed.sock")
	policy.listed = []string{listed}
	// Before the guard starts: this test can write its directory, so the
	// guard pins it to the inode it has then (unixguard_listed.go).
	listedN := countingListener(t, "unix", listed)
	g := newGuardedThread(t, policy)

	own := countingListener(t, "unix", filepath.Join(private, "own.sock"))
	hostN := countingListener(t, "unix", filepath.Join(host, "host.sock"))
	if err := os.Symlink(filepath.Join(host, "host.sock"), filepath.Join(private, "link.sock")); err != nil {
		t.Fatal(err)
	}

	g.do(func() {
		if err := connectUnix(unix.SOCK_STREAM, filepath.Join(private, "own.sock")); err != nil {
			t.Errorf("connect to a socket on a private mount: %v", err)
		}
		if err := connectUnix(unix.SOCK_STREAM, listed); err != nil {
			t.Errorf("connect to a listed socket: %v", err)
		}
		for _, p := range []string{filepath.Join(host, "host.sock"), filepath.Join(private, "link.sock")} {
			if err := connectUnix(unix.SOCK_STREAM, p); !errors.Is(err, unix.EACCES) {
				t.Errorf("connect to %s: %v, want EACCES", p, err)
			}
		}
		// A socket made now, after the guard started.
		countingListener(t, "unix", filepath.Join(host, "late.sock"))
		if err := connectUnix(unix.SOCK_STREAM, filepath.Join(host, "late.sock")); !errors.Is(err, unix.EACCES) {
			t.Errorf("connect to a socket made later: %v, want EACCES", err)
		}
		// Relative to this thread's own working directory.
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			t.Fatal(err)
		}
		if err := unix.Chdir(host); err != nil {
			t.Fatal(err)
		}
		if err := connectUnix(unix.SOCK_STREAM, "host.sock"); !errors.Is(err, unix.EACCES) {
			t.Errorf("connect to host.sock relative to %s: %v, want EACCES", host, err)
		}
		if err := connectUnix(unix.SOCK_STREAM, "nothere.sock"); !errors.Is(err, unix.ENOENT) {
			t.Errorf("connect to a missing socket: %v, want ENOENT", err)
		}
	})
	// Each listener counts in its own goroutine: wait for both.
	waitCount(own, 1)
	if waitCount(listedN, 1); own.Load() != 1 || listedN.Load() != 1 {
		t.Errorf("accepted: own %d, listed %d; want 1 each", own.Load(), listedN.Load())
	}
	if hostN.Load() != 0 {
		t.Errorf("the host socket accepted %d connections", hostN.Load())
	}
}

func waitCount(n *atomic.Int32, want int32) {
	deadline := time.Now().Add(10 * time.Second)
	for n.Load() < want && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
}

// TestUnixGuardOtherCalls: no UNIX datagram socket can be made (its
// sends name a destination the guard would not see), so a datagram never
// reaches a host socket; sends on other sockets are the caller's own, with
// its own credentials and passed descriptors; TCP connects work through the
// supervisor; io_uring and vsock are unavailable.
func TestUnixGuardOtherCalls(t *testing.T) {
	_, host, policy := privateAndHost(t)
	g := newGuardedThread(t, policy)
	hostDG, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(host, "dg.sock"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer hostDG.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	g.do(func() {
		for _, typ := range []int{unix.SOCK_DGRAM, unix.SOCK_RAW, unix.SOCK_DGRAM | unix.SOCK_NONBLOCK | unix.SOCK_CLOEXEC} {
			if fd, err := unix.Socket(unix.AF_UNIX, typ, 0); !errors.Is(err, unix.EACCES) {
				unix.Close(fd)
				t.Errorf("socket(AF_UNIX, %#x): %v, want EACCES", typ, err)
			}
			if fds, err := unix.Socketpair(unix.AF_UNIX, typ, 0); !errors.Is(err, unix.EACCES) {
				unix.Close(fds[0])
				unix.Close(fds[1])
				t.Errorf("socketpair(AF_UNIX, %#x): %v, want EACCES", typ, err)
			}
		}
		// A stream pair passing a descriptor, to a receiver that asks for
		// the sender's credentials: they are this process's own.
		pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(pair[0])
		defer unix.Close(pair[1])
		if err := unix.SetsockoptInt(pair[1], unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
			t.Fatal(err)
		}
		r, w, _ := os.Pipe()
		defer r.Close()
		defer w.Close()
		// A name on a seqpacket socket is ignored: no lookup, no way out.
		to := sockaddrUn(filepath.Join(host, "dg.sock"))
		if n, err := unix.SendmsgN(pair[0], []byte("fd"), unix.UnixRights(int(w.Fd())), to, 0); err != nil || n != 2 {
			t.Errorf("sendmsg with SCM_RIGHTS: %d, %v", n, err)
		}
		buf, oob := make([]byte, 8), make([]byte, 128)
		_, oobn, _, _, err := unix.Recvmsg(pair[1], buf, oob, 0)
		if err != nil {
			t.Fatal(err)
		}
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		var fds []int
		var cred *unix.Ucred
		for i := range msgs {
			if f, err := unix.ParseUnixRights(&msgs[i]); err == nil {
				fds = append(fds, f...)
			} else if c, err := unix.ParseUnixCredentials(&msgs[i]); err == nil {
				cred = c
			}
		}
		if cred == nil || int(cred.Pid) != os.Getpid() {
			t.Errorf("SCM_CREDENTIALS %+v; want this process's pid %d", cred, os.Getpid())
		}
		if len(fds) != 1 {
			t.Fatalf("passed descriptors: %v", fds)
		}
		unix.Write(fds[0], []byte("x"))
		unix.Close(fds[0])
		got := make([]byte, 1)
		if _, err := r.Read(got); err != nil || got[0] != 'x' {
			t.Errorf("the passed descriptor is not the pipe: %q %v", got, err)
		}
		// TCP, connected by the supervisor on this thread's socket.
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 2*time.Second)
		if err != nil {
			t.Errorf("TCP connect: %v", err)
		} else {
			c.Close()
		}
		if _, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0); !errors.Is(err, unix.EAFNOSUPPORT) {
			t.Errorf("socket(AF_VSOCK): %v, want EAFNOSUPPORT", err)
		}
		var params [120]byte
		if _, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params)), 0); e != unix.EPERM {
			t.Errorf("io_uring_setup: %v, want EPERM", e)
		}
	})
	hostDG.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	buf := make([]byte, 8)
	if n, _, err := hostDG.ReadFrom(buf); err == nil {
		t.Errorf("the host datagram socket received %q", buf[:n])
	}
}

// TestUnixGuardDatagramSession: where datagram sockets are allowed (a
// Windows VM's share, whose smbd connects one to another's when a send
// would block), one can be made, but connecting it still goes through the
// guard: to a host datagram socket, refused; to one made inside, on a
// private mount, allowed.
func TestUnixGuardDatagramSession(t *testing.T) {
	private, host, policy := privateAndHost(t)
	g := newGuardedThreadDatagram(t, policy, true)
	var got []*net.UnixConn
	for _, p := range []string{filepath.Join(host, "dg.sock"), filepath.Join(private, "dg.sock")} {
		c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		got = append(got, c)
	}
	hostDG, ownDG := got[0], got[1]
	g.do(func() {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatalf("socket(AF_UNIX, SOCK_DGRAM) in a datagram session: %v", err)
		}
		defer unix.Close(fd)
		if err := unix.Connect(fd, sockaddrUn(filepath.Join(host, "dg.sock"))); !errors.Is(err, unix.EACCES) {
			t.Errorf("connect a datagram socket to a host socket: %v, want EACCES", err)
		}
		if err := unix.Connect(fd, sockaddrUn(filepath.Join(private, "dg.sock"))); err != nil {
			t.Errorf("connect a datagram socket to one on a private mount: %v", err)
		} else if _, err := unix.Write(fd, []byte("own")); err != nil {
			t.Errorf("send on it: %v", err)
		}
	})
	buf := make([]byte, 8)
	ownDG.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, _, err := ownDG.ReadFrom(buf); err != nil || string(buf[:n]) != "own" {
		t.Errorf("the private datagram socket got %q, %v; want \"own\"", buf[:n], err)
	}
	hostDG.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, _, err := hostDG.ReadFrom(buf); err == nil {
		t.Errorf("the host datagram socket received %q", buf[:n])
	}
}

// TestUnixGuardRace: one thread flips a sockaddr between a private socket
// and a host one while this thread connects with it, many times; the host
// socket never gets a connection, since the supervisor connects to what it
// checked, not to what the memory says later.
func TestUnixGuardRace(t *testing.T) {
	private, host, policy := privateAndHost(t)
	g := newGuardedThread(t, policy)
	ownN := countingListener(t, "unix", filepath.Join(private, "s"))
	hostN := countingListener(t, "unix", filepath.Join(host, "s"))
	var a, b [110]byte
	makeSun := func(dst *[110]byte, p string) {
		dst[0] = unix.AF_UNIX
		copy(dst[2:], p)
	}
	makeSun(&a, filepath.Join(private, "s"))
	makeSun(&b, filepath.Join(host, "s"))
	if len(filepath.Join(private, "s")) > 100 || len(filepath.Join(host, "s")) > 100 {
		t.Skip("paths too long for sun_path")
	}
	buf, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(buf)
	copy(buf, a[:])
	stop := make(chan struct{})
	flipped := make(chan struct{})
	go func() {
		defer close(flipped)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				copy(buf, b[:])
			} else {
				copy(buf, a[:])
			}
		}
	}()
	const tries = 2000
	var ok, refused int
	g.do(func() {
		for range tries {
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, _, e := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), 110)
			switch e {
			case 0:
				ok++
			case unix.EACCES:
				refused++
			}
			unix.Close(fd)
		}
	})
	close(stop)
	<-flipped
	waitCount(ownN, int32(ok))
	t.Logf("%d tries: %d connected (private socket accepted %d), %d refused", tries, ok, ownN.Load(), refused)
	if hostN.Load() != 0 {
		t.Fatalf("the host socket accepted %d connections", hostN.Load())
	}
	// The control: the guard saw both addresses, so the race was run.
	if ok == 0 || refused == 0 {
		t.Fatalf("%d connected, %d refused: the address never changed under the connects", ok, refused)
	}
}

// FuzzUnixGuardParse feeds arbitrary bytes to the decoder the guard
// applies to the address a workload passes to connect.
func FuzzUnixGuardParse(f *testing.F) {
	f.Add([]byte("\x01\x00/home/alice/.ssh/cm\x00"))
	f.Add([]byte("\x01\x00\x00abstract"))
	f.Add([]byte("\x01\x00relative.sock"))
	f.Add([]byte("\x02\x00\x1f\x90\x7f\x00\x00\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := parseSockaddr(b)
		if err != nil {
			if len(b) >= 2 && len(b) <= sunPathOffset+sunPathMax {
				t.Fatalf("%q refused: %v", b, err)
			}
			return
		}
		if a.family != unix.AF_UNIX {
			if a.path != "" || a.abstract {
				t.Fatalf("%q: family %d with a UNIX address", b, a.family)
			}
			return
		}
		if a.abstract == (a.path != "") {
			t.Fatalf("%q: abstract %v with path %q", b, a.abstract, a.path)
		}
		if len(a.path) > sunPathMax || strings.IndexByte(a.path, 0) >= 0 {
			t.Fatalf("%q: path %q", b, a.path)
		}
		if a.path != "" && !strings.HasPrefix(string(b[sunPathOffset:]), a.path) {
			t.Fatalf("%q: path %q is not what the address says", b, a.path)
		}
	})
}

// BenchmarkUnixGuardConnect is the cost of a guarded pathname connect
// (notification, copy of socket and address, path check, connect by the
// supervisor) against the same connect unguarded.
func BenchmarkUnixGuardConnect(b *testing.B) {
	private, _, policy := privateAndHost(b)
	path := filepath.Join(private, "bench.sock")
	countingListener(b, "unix", path)
	run := func(b *testing.B, do func(func())) {
		do(func() {
			for b.Loop() {
				if err := connectUnix(unix.SOCK_STREAM, path); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("unguarded", func(b *testing.B) { run(b, func(f func()) { f() }) })
	b.Run("guarded", func(b *testing.B) { run(b, newGuardedThread(b, policy).do) })
}

// BenchmarkUnixGuardSendmsg: a sendmsg under the filter (which lets it
// through without a notification) against the same call without it.
func BenchmarkUnixGuardSendmsg(b *testing.B) {
	_, _, policy := privateAndHost(b)
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(pair[0])
	defer unix.Close(pair[1])
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := unix.Read(pair[1], buf); err != nil {
				return
			}
		}
	}()
	msg := make([]byte, 512)
	run := func(b *testing.B, do func(func())) {
		b.SetBytes(int64(len(msg)))
		do(func() {
			for b.Loop() {
				if _, err := unix.SendmsgN(pair[0], msg, nil, nil, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("unguarded", func(b *testing.B) { run(b, func(f func()) { f() }) })
	b.Run("guarded", func(b *testing.B) { run(b, newGuardedThread(b, policy).do) })
}
