package forward

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Loopback ports are shared by every user of the node: another user may
// bind the port an app is to listen on (a --port named in advance, one
// picked before the app took it, one the app let go) and would then serve
// their pages at the forward's URL; the same goes for a socket path in a
// directory others may write to (/tmp) once the app's socket is gone. So
// a connection to the app is used only when the socket that accepted it
// is the forwarder's own user's, or root's. For TCP the kernel keeps the
// owner of every socket (a listener's accepted sockets inherit it) and
// tells it through sock_diag, which any user may ask about one socket; a
// UNIX socket says who listens on it (SO_PEERCRED).

// checkPeer returns nil when the far end of c, a connection to the app,
// belongs to this process's user or to root.
func checkPeer(c net.Conn) error {
	if _, ok := c.(*net.UnixConn); ok {
		return checkUnixPeer(c.(*net.UnixConn))
	}
	return checkTCPPeer(c)
}

// checkUnixPeer is checkPeer for a UNIX socket.
func checkUnixPeer(c *net.UnixConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("who listens on %s: %w", c.RemoteAddr(), err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		cerr = err
	}
	if cerr != nil {
		return fmt.Errorf("who listens on %s: %w", c.RemoteAddr(), cerr)
	}
	return owned(c.RemoteAddr().String(), cred.Uid)
}

// owned says whether a socket of uid's may be served.
func owned(what string, uid uint32) error {
	if me := uint32(os.Geteuid()); uid != me && uid != 0 {
		return fmt.Errorf("%s: %w (uid %d, not this user's %d): refused", what, ErrNotOwn, uid, me)
	}
	return nil
}

// ErrNotOwn is wrapped by the refusal of an app another user listens as.
var ErrNotOwn = errors.New("another user listens there")

// checkTCPPeer returns nil when the far end of c, a TCP connection on
// this node, belongs to this process's user or to root.
func checkTCPPeer(c net.Conn) error {
	local, ok1 := c.LocalAddr().(*net.TCPAddr)
	remote, ok2 := c.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return fmt.Errorf("the app's connection is not TCP (%T)", c.RemoteAddr())
	}
	// The app's end: its source is our destination and the other way.
	uid, err := tcpSocketUID(remote.AddrPort(), local.AddrPort())
	if err != nil {
		return fmt.Errorf("who listens on %s: %w", remote, err)
	}
	return owned(remote.String(), uid)
}

// inet_diag_req_v2 and inet_diag_msg (linux/inet_diag.h), by offset.
const (
	diagReqLen   = 56
	diagMsgUID   = 64 // family, state, timer, retrans, sockid (48), expires, rqueue, wqueue
	diagMsgMin   = diagMsgUID + 8
	diagNoCookie = 0xffffffff
)

// tcpSocketUID asks sock_diag for the owner of the TCP socket whose
// local address is src and remote address is dst.
func tcpSocketUID(src, dst netip.AddrPort) (uint32, error) {
	family := byte(unix.AF_INET)
	if !src.Addr().Unmap().Is4() {
		family = unix.AF_INET6
	}
	s, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return 0, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(s)
	msg := make([]byte, unix.SizeofNlMsghdr+diagReqLen)
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST) // one socket, no dump
	binary.NativeEndian.PutUint32(msg[8:], 1)
	req := msg[unix.SizeofNlMsghdr:]
	req[0], req[1] = family, unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(req[4:], 0xffffffff) // any state
	id := req[8:]
	binary.BigEndian.PutUint16(id[0:], src.Port())
	binary.BigEndian.PutUint16(id[2:], dst.Port())
	putDiagAddr(id[4:20], src.Addr(), family)
	putDiagAddr(id[20:36], dst.Addr(), family)
	binary.NativeEndian.PutUint32(id[40:], diagNoCookie)
	binary.NativeEndian.PutUint32(id[44:], diagNoCookie)
	if err := unix.Sendto(s, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("sock_diag request: %w", err)
	}
	buf := make([]byte, 8<<10)
	for {
		n, _, err := unix.Recvfrom(s, buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("sock_diag reply: %w", err)
		}
		return parseDiagUID(buf[:n])
	}
}

func putDiagAddr(b []byte, a netip.Addr, family byte) {
	if family == unix.AF_INET {
		v4 := a.Unmap().As4()
		copy(b, v4[:])
		return
	}
	v6 := a.As16()
	copy(b, v6[:])
}

// parseDiagUID reads the owner's uid from sock_diag's answer about one
// socket. It trusts no length in it.
func parseDiagUID(b []byte) (uint32, error) {
	if len(b) < unix.SizeofNlMsghdr {
		return 0, errors.New("sock_diag: truncated message header")
	}
	l := int(binary.NativeEndian.Uint32(b[0:]))
	if l < unix.SizeofNlMsghdr || l > len(b) {
		return 0, fmt.Errorf("sock_diag: message length %d out of range", l)
	}
	body := b[unix.SizeofNlMsghdr:l]
	switch binary.NativeEndian.Uint16(b[4:]) {
	case unix.NLMSG_ERROR:
		if len(body) >= 4 {
			if e := int32(binary.NativeEndian.Uint32(body)); e < 0 {
				return 0, fmt.Errorf("sock_diag: %w", unix.Errno(-e))
			}
		}
		return 0, errors.New("sock_diag: error reply")
	case unix.SOCK_DIAG_BY_FAMILY:
		if len(body) < diagMsgMin {
			return 0, errors.New("sock_diag: truncated socket message")
		}
		return binary.NativeEndian.Uint32(body[diagMsgUID:]), nil
	}
	return 0, errors.New("sock_diag: unexpected reply")
}

// CheckTarget connects to target once and says whether it may be served:
// a listener of this user's or root's.
func CheckTarget(ctx context.Context, target string) error {
	network, addr := "tcp", target
	if p, ok := strings.CutPrefix(target, "unix:"); ok {
		network, addr = "unix", p
	}
	c, err := (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, network, addr)
	if err != nil {
		return fmt.Errorf("connect to the app: %w", err)
	}
	defer c.Close()
	return checkPeer(c)
}
