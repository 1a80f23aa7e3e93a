package seal

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// The unix guard copies structures out of a workload's memory and decodes
// them here, without trusting a single field: every length is bounded
// before it is used, and the decoders never touch memory themselves, so
// they can be fuzzed on arbitrary bytes. The layouts are those of the
// 64-bit Linux ABI (amd64 and arm64 share them).

const (
	msghdrSize  = 56 // struct msghdr
	mmsghdrSize = 64 // struct mmsghdr: msghdr, msg_len, padding
	iovecSize   = 16 // struct iovec
	cmsgHdrSize = 16 // struct cmsghdr: len (size_t), level, type
	// sockaddrMax is sizeof(struct sockaddr_storage): the kernel refuses a
	// longer address with EINVAL before looking at it.
	sockaddrMax = 128
	// sunPathOffset is offsetof(struct sockaddr_un, sun_path).
	sunPathOffset = 2
	sunPathMax    = 108
	// iovMax is UIO_MAXIOV; sendmsg refuses more with EMSGSIZE.
	iovMax = 1024
)

// msgHeader is the part of a struct msghdr the guard needs.
type msgHeader struct {
	name       uint64 // pointer in the target
	nameLen    uint32
	iov        uint64 // pointer to iovecs in the target
	iovLen     uint64
	control    uint64 // pointer in the target
	controlLen uint64
}

// parseMsghdr decodes one struct msghdr.
func parseMsghdr(b []byte) (msgHeader, error) {
	if len(b) < msghdrSize {
		return msgHeader{}, fmt.Errorf("msghdr: %d bytes, want %d", len(b), msghdrSize)
	}
	le := binary.LittleEndian
	return msgHeader{
		name:       le.Uint64(b[0:]),
		nameLen:    le.Uint32(b[8:]),
		iov:        le.Uint64(b[16:]),
		iovLen:     le.Uint64(b[24:]),
		control:    le.Uint64(b[32:]),
		controlLen: le.Uint64(b[40:]),
	}, nil
}

// remoteIovec is one struct iovec of the target.
type remoteIovec struct{ base, len uint64 }

// parseIovecs decodes n struct iovec.
func parseIovecs(b []byte, n int) ([]remoteIovec, error) {
	if n < 0 || n > iovMax {
		return nil, fmt.Errorf("iovec count %d: want 0-%d", n, iovMax)
	}
	if len(b) < n*iovecSize {
		return nil, fmt.Errorf("iovecs: %d bytes for %d entries", len(b), n)
	}
	le := binary.LittleEndian
	out := make([]remoteIovec, n)
	for i := range out {
		out[i] = remoteIovec{base: le.Uint64(b[i*iovecSize:]), len: le.Uint64(b[i*iovecSize+8:])}
	}
	return out, nil
}

// unixAddr is what a sockaddr says about a UNIX socket address.
type unixAddr struct {
	family uint16
	// path is a pathname address (possibly relative), empty otherwise.
	path string
	// abstract: the address names a socket in the abstract namespace (or is
	// an unnamed, autobind address): nothing on the file system.
	abstract bool
}

// errBadAddr is an address the kernel itself would refuse with EINVAL.
var errBadAddr = errors.New("malformed socket address")

// parseSockaddr reads the family of any sockaddr and, for AF_UNIX, what it
// names. A sun_path without a NUL ends at the address length, as in the
// kernel.
func parseSockaddr(b []byte) (unixAddr, error) {
	if len(b) < 2 || len(b) > sockaddrMax {
		return unixAddr{}, errBadAddr
	}
	a := unixAddr{family: binary.LittleEndian.Uint16(b)}
	if a.family != unix.AF_UNIX {
		return a, nil
	}
	p := b[sunPathOffset:]
	if len(p) > sunPathMax {
		return unixAddr{}, errBadAddr
	}
	if len(p) == 0 || p[0] == 0 {
		a.abstract = true
		return a, nil
	}
	for i, c := range p {
		if c == 0 {
			p = p[:i]
			break
		}
	}
	a.path = string(p)
	return a, nil
}

// cmsgRights is where one SCM_RIGHTS array sits in a control buffer.
type cmsgRights struct{ off, n int }

// parseCmsgRights walks a control buffer and returns the SCM_RIGHTS
// arrays in it, so the guard can swap the target's descriptor numbers for
// its own copies. A malformed buffer is refused, as the kernel would.
func parseCmsgRights(b []byte) ([]cmsgRights, error) {
	var out []cmsgRights
	le := binary.LittleEndian
	for off := 0; off+cmsgHdrSize <= len(b); {
		l := le.Uint64(b[off:])
		if l < cmsgHdrSize || l > uint64(len(b)-off) {
			return nil, fmt.Errorf("cmsg at %d: length %d", off, l)
		}
		level, typ := int32(le.Uint32(b[off+8:])), int32(le.Uint32(b[off+12:]))
		if level == unix.SOL_SOCKET && typ == unix.SCM_RIGHTS {
			data := int(l) - cmsgHdrSize
			if data%4 != 0 {
				return nil, fmt.Errorf("cmsg at %d: SCM_RIGHTS of %d bytes", off, data)
			}
			out = append(out, cmsgRights{off: off + cmsgHdrSize, n: data / 4})
		}
		off += int((l + 7) &^ 7)
	}
	return out, nil
}
