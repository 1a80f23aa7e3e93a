package seal

import (
	"encoding/binary"
	"errors"

	"golang.org/x/sys/unix"
)

// The unix guard copies a socket address out of a workload's memory and
// decodes it here, trusting no byte of it; the decoder never touches memory
// itself, so it can be fuzzed on arbitrary bytes.

const (
	// sockaddrMax is sizeof(struct sockaddr_storage): the kernel refuses a
	// longer address with EINVAL before looking at it.
	sockaddrMax = 128
	// sunPathOffset is offsetof(struct sockaddr_un, sun_path).
	sunPathOffset = 2
	sunPathMax    = 108
)

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
