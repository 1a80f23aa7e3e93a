package seal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A mount id says through which mount the workload sees an inode, not
// where the inode came from. The seal's /tmp is a bind mount of a host
// directory, so a host socket renamed or hard-linked into that directory
// through its host path (reachable whenever the scratch directory lies on
// a file system the workload also sees, such as a scratch_dir or $TMPDIR in
// the owner's home) shows up on the private /tmp mount. So a socket on a
// private mount passes only if it is also bound in the seal's own network
// namespace (listening, or an unconnected datagram socket, the only states
// a connect can reach): a socket belongs for good to the network namespace of
// the process that made it, so one in ours was made inside the seal, and a
// host daemon's never is. The kernel's sock_diag answers that, for the
// caller's network namespace only, without any privilege.

// unix_diag (linux/unix_diag.h); x/sys has only the netlink constants.
const (
	udiagShowVFS = 0x2 // UDIAG_SHOW_VFS
	unixDiagVFS  = 1   // UNIX_DIAG_VFS attribute
	tcpListen    = 10  // TCP_LISTEN, the state of a listening UNIX socket
	tcpClose     = 7   // TCP_CLOSE, an unconnected one (a datagram socket's)
)

type unixDiagReq struct {
	family   uint8
	protocol uint8
	pad      uint16
	states   uint32
	ino      uint32
	show     uint32
	cookie   [2]uint32
}

// sizeofUnixDiagMsg is sizeof(struct unix_diag_msg); its attributes follow.
const sizeofUnixDiagMsg = 16

// vfsID names a bound socket's inode as unix_diag does: the kernel's
// encoding of the file system's device number and the low 32 bits of the
// inode number.
type vfsID struct {
	dev uint32
	ino uint32
}

// vfsIDOf is st's vfsID.
func vfsIDOf(st *unix.Statx_t) vfsID {
	// The kernel's internal dev_t: MINORBITS is 20.
	return vfsID{dev: st.Dev_major<<20 | st.Dev_minor, ino: uint32(st.Ino)}
}

// boundHere reports whether a UNIX socket bound at the inode id, listening
// or unconnected, is in the caller's network namespace. It makes one
// sock_diag dump of this namespace's sockets in those states; the calling
// thread must be in the seal's network namespace (every thread of init
// is).
func boundHere(id vfsID) (bool, error) {
	s, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return false, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(s)
	req := unixDiagReq{family: unix.AF_UNIX, states: 1<<tcpListen | 1<<tcpClose, show: udiagShowVFS}
	const reqLen = unix.SizeofNlMsghdr + int(unsafe.Sizeof(req))
	msg := make([]byte, reqLen)
	binary.NativeEndian.PutUint32(msg[0:], uint32(reqLen))
	binary.NativeEndian.PutUint16(msg[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(msg[8:], 1) // sequence number
	copy(msg[unix.SizeofNlMsghdr:], (*[unsafe.Sizeof(req)]byte)(unsafe.Pointer(&req))[:])
	if err := unix.Sendto(s, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return false, fmt.Errorf("sock_diag request: %w", err)
	}
	// Larger than any datagram the kernel makes for a dump (at most 32 KiB),
	// so none is ever cut short.
	buf := make([]byte, 64<<10)
	found := false
	for {
		n, _, err := unix.Recvfrom(s, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return false, fmt.Errorf("sock_diag reply: %w", err)
		}
		ids, done, err := parseUnixDiag(buf[:n])
		if err != nil {
			return false, err
		}
		for _, got := range ids {
			found = found || got == id
		}
		if done {
			return found, nil
		}
	}
}

// parseUnixDiag decodes one datagram of a unix_diag dump: the vfsIDs it
// lists, and whether it ends the dump. It trusts no length in it.
func parseUnixDiag(b []byte) (ids []vfsID, done bool, err error) {
	for len(b) > 0 {
		if len(b) < unix.SizeofNlMsghdr {
			return nil, false, errors.New("sock_diag: truncated message header")
		}
		l := int(binary.NativeEndian.Uint32(b[0:]))
		typ := binary.NativeEndian.Uint16(b[4:])
		if l < unix.SizeofNlMsghdr || l > len(b) {
			return nil, false, fmt.Errorf("sock_diag: message length %d out of range", l)
		}
		body := b[unix.SizeofNlMsghdr:l]
		switch typ {
		case unix.NLMSG_DONE:
			return ids, true, nil
		case unix.NLMSG_ERROR:
			if len(body) >= 4 {
				if e := int32(binary.NativeEndian.Uint32(body)); e < 0 {
					return nil, false, fmt.Errorf("sock_diag: %w", unix.Errno(-e))
				}
			}
			return nil, false, errors.New("sock_diag: error reply")
		case unix.SOCK_DIAG_BY_FAMILY:
			if id, ok := vfsOfDiagMsg(body); ok {
				ids = append(ids, id)
			}
		}
		// Messages are 4-byte aligned.
		next := (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
		if next >= len(b) {
			break
		}
		b = b[next:]
	}
	return ids, false, nil
}

// vfsOfDiagMsg finds the UNIX_DIAG_VFS attribute of one unix_diag_msg.
func vfsOfDiagMsg(body []byte) (vfsID, bool) {
	if len(body) < sizeofUnixDiagMsg {
		return vfsID{}, false
	}
	attrs := body[sizeofUnixDiagMsg:]
	for len(attrs) >= unix.SizeofRtAttr {
		l := int(binary.NativeEndian.Uint16(attrs[0:]))
		typ := binary.NativeEndian.Uint16(attrs[2:])
		if l < unix.SizeofRtAttr || l > len(attrs) {
			return vfsID{}, false
		}
		if typ == unixDiagVFS && l >= unix.SizeofRtAttr+8 {
			v := attrs[unix.SizeofRtAttr:]
			return vfsID{ino: binary.NativeEndian.Uint32(v[0:]), dev: binary.NativeEndian.Uint32(v[4:])}, true
		}
		next := (l + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1)
		if next >= len(attrs) {
			break
		}
		attrs = attrs[next:]
	}
	return vfsID{}, false
}

// mountDevs maps the seal's private mounts to the device number their
// file system has in the kernel (its s_dev, in the kernel's encoding),
// which is what unix_diag reports. stat's device number is not always
// that: btrfs reports a subvolume's own.
func mountDevs(ids map[uint64]bool) (map[uint64]uint32, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("unix guard: %w", err)
	}
	all := parseMountinfoDevs(b)
	out := map[uint64]uint32{}
	for id := range ids {
		if dev, ok := all[id]; ok {
			out[id] = dev
		}
	}
	return out, nil
}

// parseMountinfoDevs reads, from /proc/PID/mountinfo, each mount's id
// (field 1) and its file system's "major:minor" (field 3), encoded as the
// kernel's dev_t. Lines it cannot read are skipped.
func parseMountinfoDevs(b []byte) map[uint64]uint32 {
	out := map[uint64]uint32{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		id, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			continue
		}
		maj, min, ok := strings.Cut(f[2], ":")
		if !ok {
			continue
		}
		ma, err1 := strconv.ParseUint(maj, 10, 12)
		mi, err2 := strconv.ParseUint(min, 10, 20)
		if err1 != nil || err2 != nil {
			continue
		}
		out[id] = uint32(ma<<20 | mi)
	}
	return out
}
