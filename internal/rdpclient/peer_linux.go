package rdpclient

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// peerIsMe reports whether the loopback TCP connection c, accepted on the
// tunnel's port, was opened by this process's user. Anyone on the machine
// can connect to a loopback port, and the tunnel adds the user's
// certificate to every connection: another local user must not ride it.
// The kernel's socket table (/proc/net/tcp, tcp6) names the owner of the
// peer's end. A peer that cannot be found (gone already) is not me.
func peerIsMe(c net.Conn) (bool, error) {
	local, err := netip.ParseAddrPort(c.LocalAddr().String())
	if err != nil {
		return false, err
	}
	remote, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return false, err
	}
	uid, found, err := socketOwner("/proc/net/tcp", remote, local)
	if err == nil && !found {
		uid, found, err = socketOwner("/proc/net/tcp6", remote, local)
	}
	if err != nil || !found {
		return false, err
	}
	return uid == os.Getuid(), nil
}

// socketOwner finds the socket from src to dst in table (the format of
// /proc/net/tcp) and returns its owner's uid.
func socketOwner(table string, src, dst netip.AddrPort) (uid int, found bool, err error) {
	f, err := os.Open(table)
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid ...
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 {
			continue
		}
		l, err1 := procAddr(fields[1])
		r, err2 := procAddr(fields[2])
		if err1 != nil || err2 != nil || !sameAddrPort(l, src) || !sameAddrPort(r, dst) {
			continue
		}
		uid, err := strconv.Atoi(fields[7])
		return uid, err == nil, err
	}
	return 0, false, sc.Err()
}

// procAddr parses an address of /proc/net/tcp: the address as 32-bit
// words in the kernel's byte order, in hex, a colon, the port in hex.
func procAddr(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	b, err := hex.DecodeString(a)
	if !ok || err != nil || (len(b) != 4 && len(b) != 16) {
		return netip.AddrPort{}, fmt.Errorf("socket table address %q", s)
	}
	for i := 0; i < len(b); i += 4 {
		binary.NativeEndian.PutUint32(b[i:], binary.BigEndian.Uint32(b[i:]))
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("socket table port %q", s)
	}
	addr, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(addr, uint16(port)), nil
}

// sameAddrPort compares two addresses, an IPv4 one and its IPv6-mapped
// form alike.
func sameAddrPort(a, b netip.AddrPort) bool {
	return a.Port() == b.Port() && a.Addr().Unmap() == b.Addr().Unmap()
}
