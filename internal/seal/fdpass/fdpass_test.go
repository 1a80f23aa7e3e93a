package fdpass

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestParseFD(t *testing.T) {
	good := map[string]int{"3": 3, "4": 4, "65535": 65535}
	for in, want := range good {
		got, err := ParseFD(in)
		if err != nil || got != want {
			t.Errorf("ParseFD(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	bad := map[string]string{
		"": "empty", "0": "stdin", "1": "must be 3", "2": "must be 3", "-3": "not a decimal",
		"+3": "not a decimal", " 3": "not a decimal", "03": "leading zero", "3x": "not a decimal",
		"65536": "out of range", "99999999999999999999": "out of range",
	}
	for in, want := range bad {
		_, err := ParseFD(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseFD(%q) error %v; want it to say %q", in, err, want)
		}
	}
}

// FuzzParseFD: never panics; accepted values are in range and print back
// to exactly the input.
func FuzzParseFD(f *testing.F) {
	for _, s := range []string{"3", "0", "03", "-1", "65535", "65536", "", " 4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseFD(s)
		if err != nil {
			return
		}
		if n < First || n >= Max || strconv.Itoa(n) != s {
			t.Fatalf("ParseFD(%q) = %d", s, n)
		}
	})
}

// TestListenerChecks: an inherited descriptor is used only if it is a
// listening socket; a file, a connected socket or a bound-but-not-listening
// socket is refused with a reason.
func TestListenerChecks(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, _ := File(ln)
	got, err := Listener(int(f.Fd()))
	if err != nil {
		t.Fatalf("listening socket refused: %v", err)
	}
	defer got.Close()
	if got.Addr().String() != ln.Addr().String() {
		t.Fatalf("listener on %s, want %s", got.Addr(), ln.Addr())
	}

	file, _ := os.Create(filepath.Join(t.TempDir(), "x"))
	defer file.Close()
	if _, err := Listener(int(file.Fd())); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("regular file: %v", err)
	}

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cf, _ := c.(*net.TCPConn).File()
	defer cf.Close()
	if _, err := Listener(int(cf.Fd())); err == nil || !strings.Contains(err.Error(), "not listening") {
		t.Errorf("connected socket: %v", err)
	}
	if _, err := Listener(1); err == nil {
		t.Error("stdout accepted as a listener")
	}
}

func TestListen(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	for _, c := range []struct{ in, wantPrefix, err string }{
		{"tcp:127.0.0.1:0", "127.0.0.1:", ""},
		{"unix:" + sock, "unix:" + sock, ""},
		{"unix:rel.sock", "", "must be absolute"},
		{"udp:127.0.0.1:0", "", "unknown network"},
		{"127.0.0.1:0", "", "unknown network"},
		{"nocolon", "", "want tcp"},
	} {
		ln, addr, err := Listen(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("Listen(%q) error %v; want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || !strings.HasPrefix(addr, c.wantPrefix) {
			t.Errorf("Listen(%q) = %q, %v", c.in, addr, err)
			continue
		}
		ln.Close()
	}
}

// TestSendRecvConn: a connected socket crosses a UNIX socket and still
// talks to its peer.
func TestSendRecvConn(t *testing.T) {
	a, b := socketpair(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	c, _ := net.Dial("tcp", ln.Addr().String())
	srv, _ := ln.Accept()
	defer srv.Close()
	if err := SendConn(a, []byte("hi"), c); err != nil {
		t.Fatal(err)
	}
	c.Close()
	buf := make([]byte, 16)
	n, got, err := RecvMsg(b, buf)
	if err != nil || string(buf[:n]) != "hi" || got == nil {
		t.Fatalf("RecvMsg = %q, %v, %v", buf[:n], got, err)
	}
	defer got.Close()
	got.Write([]byte("ping"))
	srv.Read(buf[:4])
	if string(buf[:4]) != "ping" {
		t.Fatalf("peer read %q", buf[:4])
	}
}
