package forward

import (
	"encoding/binary"
	"net"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCheckTCPPeerOwn: a listener of this process's user passes, over
// IPv4 and IPv6 loopback and a UNIX socket (another user's is refused:
// the gateway's TestForwardPortSquatted and TestForwardSocketSquatted,
// which need root to be two users).
func TestCheckTCPPeerOwn(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	uln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer uln.Close()
	if err := CheckTarget(t.Context(), "unix:"+sock); err != nil {
		t.Errorf("own UNIX socket: %v", err)
	}
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Logf("%s: %v", addr, err)
			continue
		}
		defer ln.Close()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := checkTCPPeer(c); err != nil {
			t.Errorf("own listener on %s: %v", ln.Addr(), err)
		}
		if err := CheckTarget(t.Context(), ln.Addr().String()); err != nil {
			t.Errorf("CheckTarget %s: %v", ln.Addr(), err)
		}
	}
}

// diagReply is a sock_diag answer about one socket owned by uid.
func diagReply(uid uint32) []byte {
	b := make([]byte, unix.SizeofNlMsghdr+diagMsgMin)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.NativeEndian.PutUint32(b[unix.SizeofNlMsghdr+diagMsgUID:], uid)
	return b
}

func TestParseDiagUID(t *testing.T) {
	if uid, err := parseDiagUID(diagReply(1234)); err != nil || uid != 1234 {
		t.Fatalf("uid %d %v", uid, err)
	}
	short := diagReply(1)
	binary.NativeEndian.PutUint32(short[0:], uint32(len(short)-1))
	if _, err := parseDiagUID(short[:len(short)-1]); err == nil {
		t.Error("a truncated socket message was read")
	}
}

// FuzzParseDiagUID: no answer from the kernel (or anything else) makes
// the parser read out of bounds.
func FuzzParseDiagUID(f *testing.F) {
	f.Add(diagReply(1000))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		parseDiagUID(b)
	})
}

// BenchmarkCheckTCPPeer: what the check adds to each connection a
// visitor opens to a TCP app.
func BenchmarkCheckTCPPeer(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for b.Loop() {
		if err := checkTCPPeer(c); err != nil {
			b.Fatal(err)
		}
	}
}
