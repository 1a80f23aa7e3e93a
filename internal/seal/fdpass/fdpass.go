// Package fdpass turns inherited file descriptors into listeners and moves
// connected sockets across the seal with SCM_RIGHTS.
//
// It owns the --fd N convention (descriptors numbered from 3, like systemd's
// LISTEN_FDS) and the checks a connector makes before trusting an inherited
// descriptor: it must not be stdin, stdout or stderr, and it must be a
// listening socket. It never calls listen itself.
package fdpass

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// First is the first descriptor number a child inherits after stdin, stdout
// and stderr; os/exec puts ExtraFiles[i] at First+i.
const First = 3

// Max bounds accepted descriptor numbers so a typo cannot name a huge fd.
const Max = 1 << 16

// ParseFD parses the value of an --fd flag. It accepts a decimal number in
// [First, Max) and nothing else: no sign, no spaces, no leading zeros.
func ParseFD(s string) (int, error) {
	if s == "" {
		return 0, fmt.Errorf("parse fd %q: empty", s)
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("parse fd %q: leading zero", s)
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, fmt.Errorf("parse fd %q: not a decimal number", s)
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n >= Max {
		return 0, fmt.Errorf("parse fd %q: out of range", s)
	}
	if n < First {
		// stdin/stdout/stderr are never a listener: refusing them stops a
		// misconfigured runner from making a connector read its own stdin.
		return 0, fmt.Errorf("parse fd %q: must be %d or more (0-2 are stdin, stdout and stderr)", s, First)
	}
	return n, nil
}

// Listener returns a net.Listener for the inherited descriptor fd after
// checking that it is a listening socket. The descriptor is consumed: the
// returned listener owns a duplicate and fd itself is closed.
func Listener(fd int) (net.Listener, error) {
	if fd < First {
		return nil, fmt.Errorf("listener from fd %d: must be %d or more", fd, First)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("listener from fd %d: %w", fd, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, fmt.Errorf("listener from fd %d: not a socket", fd)
	}
	acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return nil, fmt.Errorf("listener from fd %d: %w", fd, err)
	}
	if acc != 1 {
		return nil, fmt.Errorf("listener from fd %d: socket is not listening", fd)
	}
	f := os.NewFile(uintptr(fd), "fd/"+strconv.Itoa(fd))
	defer f.Close() // FileListener dups; the original must not leak into children.
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("listener from fd %d: %w", fd, err)
	}
	return ln, nil
}

// ListenFDs returns the descriptors systemd-style socket activation passed
// to this process (LISTEN_PID must be our pid), and unsets the variables so
// they do not reach grandchildren. It returns nil when none were passed.
func ListenFDs() []int {
	defer func() {
		os.Unsetenv("LISTEN_PID")
		os.Unsetenv("LISTEN_FDS")
		os.Unsetenv("LISTEN_FDNAMES")
	}()
	pid, err := strconv.Atoi(os.Getenv("LISTEN_PID"))
	if err != nil || pid != os.Getpid() {
		return nil
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n <= 0 || n > Max-First {
		return nil
	}
	fds := make([]int, n)
	for i := range fds {
		fds[i] = First + i
		unix.CloseOnExec(fds[i])
	}
	return fds
}

// Listen binds addr in the calling process's network namespace. addr is
// "tcp:HOST:PORT" or "unix:/absolute/path". It returns the listener and the
// address it is bound to ("127.0.0.1:40123" or "unix:/path").
func Listen(addr string) (net.Listener, string, error) {
	network, rest, ok := strings.Cut(addr, ":")
	if !ok {
		return nil, "", fmt.Errorf("listen %q: want tcp:HOST:PORT or unix:/path", addr)
	}
	switch network {
	case "tcp":
		ln, err := net.Listen("tcp", rest)
		if err != nil {
			return nil, "", fmt.Errorf("listen %q: %w", addr, err)
		}
		return ln, ln.Addr().String(), nil
	case "unix":
		if !strings.HasPrefix(rest, "/") {
			return nil, "", fmt.Errorf("listen %q: unix socket path must be absolute", addr)
		}
		ln, err := net.Listen("unix", rest)
		if err != nil {
			return nil, "", fmt.Errorf("listen %q: %w", addr, err)
		}
		// The listener is closed by fd in the seal's children as well; the
		// runner removes the socket file itself at teardown.
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		return ln, "unix:" + rest, nil
	}
	return nil, "", fmt.Errorf("listen %q: unknown network %q (want tcp or unix)", addr, network)
}

// File returns a duplicate descriptor of ln for passing to a child.
func File(ln net.Listener) (*os.File, error) {
	type filer interface{ File() (*os.File, error) }
	fl, ok := ln.(filer)
	if !ok {
		return nil, fmt.Errorf("listener %s: cannot be passed to a child", ln.Addr())
	}
	return fl.File()
}

// SendConn sends the descriptor of c over u with a payload, as one
// SCM_RIGHTS message. The caller still owns c.
func SendConn(u *net.UnixConn, payload []byte, c net.Conn) error {
	f, err := connFile(c)
	if err != nil {
		return err
	}
	defer f.Close()
	_, _, err = u.WriteMsgUnix(payload, unix.UnixRights(int(f.Fd())), nil)
	if err != nil {
		return fmt.Errorf("send fd: %w", err)
	}
	return nil
}

// connFile returns a duplicate descriptor of a TCP or UNIX connection.
func connFile(c net.Conn) (*os.File, error) {
	type filer interface{ File() (*os.File, error) }
	fl, ok := c.(filer)
	if !ok {
		return nil, fmt.Errorf("conn %s: cannot be passed", c.RemoteAddr())
	}
	return fl.File()
}

// RecvMsg reads one message from u into buf, and the connection it carried,
// if any. Exactly one descriptor is accepted; extra ones are closed and
// refused. The received descriptor is close-on-exec.
func RecvMsg(u *net.UnixConn, buf []byte) (int, net.Conn, error) {
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := u.ReadMsgUnix(buf, oob)
	if err != nil {
		return 0, nil, fmt.Errorf("receive fd: %w", err)
	}
	if oobn == 0 {
		return n, nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return n, nil, fmt.Errorf("receive fd: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		fds = append(fds, got...)
	}
	if len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return n, nil, fmt.Errorf("receive fd: want exactly one descriptor, got %d", len(fds))
	}
	f := os.NewFile(uintptr(fds[0]), "received")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return n, nil, fmt.Errorf("receive fd: %w", err)
	}
	return n, c, nil
}
