package seal

import (
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func vfsIDOfPath(t *testing.T, path string) vfsID {
	t.Helper()
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_INO, &st); err != nil {
		t.Fatal(err)
	}
	return vfsIDOf(&st)
}

// TestBoundHere: sock_diag finds a socket listening in this network
// namespace by its inode, and a bound datagram socket, and not one that
// was closed.
func TestBoundHere(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "l.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	id := vfsIDOfPath(t, path)
	if here, err := boundHere(id); err != nil || !here {
		t.Fatalf("listening socket %s: here=%v err=%v; want true", path, here, err)
	}
	ln.Close()
	if here, err := boundHere(id); err != nil || here {
		t.Fatalf("closed socket %s: here=%v err=%v; want false", path, here, err)
	}
	dgPath := filepath.Join(dir, "dg.sock")
	dg, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: dgPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer dg.Close()
	if here, err := boundHere(vfsIDOfPath(t, dgPath)); err != nil || !here {
		t.Fatalf("bound datagram socket %s: here=%v err=%v; want true", dgPath, here, err)
	}
}

// TestBoundHereNotOtherNetns: a socket made in another network namespace
// (a host daemon's, seen from the seal), listening or datagram, is not
// found, though its file is right there.
func TestBoundHereNotOtherNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a network namespace")
	}
	dir := t.TempDir()
	made := make(chan error, 1)
	release := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread leaves our netns
		err := unix.Unshare(unix.CLONE_NEWNET)
		for _, typ := range []int{unix.SOCK_STREAM, unix.SOCK_DGRAM} {
			if err != nil {
				break
			}
			var fd int
			if fd, err = unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0); err == nil {
				defer unix.Close(fd)
				if err = unix.Bind(fd, &unix.SockaddrUnix{Name: filepath.Join(dir, strconv.Itoa(typ))}); err == nil && typ == unix.SOCK_STREAM {
					err = unix.Listen(fd, 1)
				}
			}
		}
		made <- err
		<-release
	}()
	defer close(release)
	if err := <-made; err != nil {
		t.Fatal(err)
	}
	for _, typ := range []int{unix.SOCK_STREAM, unix.SOCK_DGRAM} {
		path := filepath.Join(dir, strconv.Itoa(typ))
		if here, err := boundHere(vfsIDOfPath(t, path)); err != nil || here {
			t.Errorf("socket %s made in another network namespace: here=%v err=%v; want false", path, here, err)
		}
	}
}

// diagMsg is one SOCK_DIAG_BY_FAMILY message with a UNIX_DIAG_VFS
// attribute, as the kernel sends it.
func diagMsg(ino, dev uint32) []byte {
	const attrLen = unix.SizeofRtAttr + 8
	l := unix.SizeofNlMsghdr + sizeofUnixDiagMsg + attrLen
	b := make([]byte, l)
	binary.NativeEndian.PutUint32(b[0:], uint32(l))
	binary.NativeEndian.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	a := b[unix.SizeofNlMsghdr+sizeofUnixDiagMsg:]
	binary.NativeEndian.PutUint16(a[0:], attrLen)
	binary.NativeEndian.PutUint16(a[2:], unixDiagVFS)
	binary.NativeEndian.PutUint32(a[4:], ino)
	binary.NativeEndian.PutUint32(a[8:], dev)
	return b
}

func doneMsg() []byte {
	b := make([]byte, unix.SizeofNlMsghdr+4)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], unix.NLMSG_DONE)
	return b
}

func TestParseUnixDiag(t *testing.T) {
	b := append(append(diagMsg(7, 8<<20|1), diagMsg(9, 3)...), doneMsg()...)
	ids, done, err := parseUnixDiag(b)
	if err != nil || !done || len(ids) != 2 || ids[0] != (vfsID{dev: 8<<20 | 1, ino: 7}) || ids[1] != (vfsID{dev: 3, ino: 9}) {
		t.Fatalf("got %v %v %v", ids, done, err)
	}
	if _, _, err := parseUnixDiag(diagMsg(1, 1)[:10]); err == nil {
		t.Fatal("a truncated header was accepted")
	}
}

// FuzzParseUnixDiag feeds arbitrary bytes to the decoder of the kernel's
// sock_diag replies the unix guard relies on: it must never panic, and
// must find every well-formed message placed before arbitrary junk.
func FuzzParseUnixDiag(f *testing.F) {
	f.Add(append(diagMsg(7, 8<<20|1), doneMsg()...), uint32(7))
	f.Add(diagMsg(1, 2)[:20], uint32(1))
	f.Add([]byte{}, uint32(0))
	f.Fuzz(func(t *testing.T, b []byte, ino uint32) {
		parseUnixDiag(b)
		withOne := append(diagMsg(ino, 42), b...)
		ids, _, err := parseUnixDiag(withOne)
		if err == nil && (len(ids) == 0 || ids[0] != (vfsID{dev: 42, ino: ino})) {
			t.Fatalf("the leading message was lost: %v", ids)
		}
	})
}

// BenchmarkBoundHere is the price the unix guard adds to a connect to
// a socket on the seal's private mounts.
func BenchmarkBoundHere(b *testing.B) {
	path := filepath.Join(b.TempDir(), "l.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_INO, &st); err != nil {
		b.Fatal(err)
	}
	id := vfsIDOf(&st)
	for b.Loop() {
		if here, err := boundHere(id); err != nil || !here {
			b.Fatal(here, err)
		}
	}
}

// TestBoundHereByMountDev: the device number the guard takes from
// mountinfo for a mount is the one unix_diag reports for a socket on it.
func TestBoundHereByMountDev(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "l.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_INO|unix.STATX_MNT_ID, &st); err != nil {
		t.Fatal(err)
	}
	devs, err := mountDevs(map[uint64]bool{st.Mnt_id: true})
	if err != nil {
		t.Fatal(err)
	}
	dev, ok := devs[st.Mnt_id]
	if !ok {
		t.Fatalf("mount %d of %s not in mountinfo", st.Mnt_id, dir)
	}
	if here, err := boundHere(vfsID{dev: dev, ino: uint32(st.Ino)}); err != nil || !here {
		t.Fatalf("by mountinfo's device %#x: here=%v err=%v; want true", dev, here, err)
	}
}

func TestParseMountinfoDevs(t *testing.T) {
	in := "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n" +
		"37 36 0:52 / /tmp rw - tmpfs tmpfs rw\n" +
		"garbage\n38 36 x:y / /z rw - tmpfs tmpfs rw\n"
	got := parseMountinfoDevs([]byte(in))
	if len(got) != 2 || got[36] != 98<<20 || got[37] != 52 {
		t.Fatalf("got %v", got)
	}
}

// FuzzParseMountinfoDevs: arbitrary mountinfo text never panics, and a
// well-formed line is always read.
func FuzzParseMountinfoDevs(f *testing.F) {
	f.Add([]byte("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw\n"))
	f.Add([]byte("1 2 4095:1048575 / / rw - x y z"))
	f.Add([]byte("1 2 4096:0 / /"))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseMountinfoDevs(b)
		got := parseMountinfoDevs(append([]byte("424242 1 7:3 / /x rw - ext4 /dev/x rw\n"), b...))
		// A later line may name mount 424242 again; otherwise the first
		// line's answer stands.
		if dev, ok := got[424242]; !strings.Contains(string(b), "424242") && (!ok || dev != 7<<20|3) {
			t.Fatalf("the well-formed line was lost: %v %#x", ok, dev)
		}
	})
}

// TestBoundHereManySockets: a dump that takes several datagrams still
// finds every socket.
func TestBoundHereManySockets(t *testing.T) {
	dir := t.TempDir()
	var ids []vfsID
	for i := range 1000 {
		path := filepath.Join(dir, strconv.Itoa(i))
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
			t.Fatal(err)
		}
		if err := unix.Listen(fd, 1); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, vfsIDOfPath(t, path))
	}
	for _, i := range []int{0, 500, 999} {
		if here, err := boundHere(ids[i]); err != nil || !here {
			t.Fatalf("socket %d of 1000: here=%v err=%v", i, here, err)
		}
	}
}
