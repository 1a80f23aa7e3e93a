package rdpclient

import (
	"context"
	"encoding/binary"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestTunnelRefusesOtherLocalUsers: the tunnel's loopback port is open to
// everyone on the machine, and every connection through it carries the
// user's certificate: one another local user (nobody) opens is closed
// before anything is sent to the gateway, while the user's own goes on.
func TestTunnelRefusesOtherLocalUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as another local user")
	}
	py := "/usr/bin/python3" // the system's: the test runner's may be under /root
	if _, err := os.Stat(py); err != nil {
		t.Skip("no /usr/bin/python3")
	}
	// A stand-in for the gateway: it counts the connections the tunnel
	// makes to it and closes them (each tunnel attempt then fails).
	gw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	var dialled atomic.Int64
	go func() {
		for {
			c, err := gw.Accept()
			if err != nil {
				return
			}
			dialled.Add(1)
			c.Close()
		}
	}()
	f := sampleFile(t)
	f.Gateway, f.Expires = gw.Addr().String(), time.Now().Add(time.Hour)
	tun, err := New(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- tun.Serve(ctx, ln, nil) }()
	defer func() { cancel(); <-served }()

	// connect opens a connection to the tunnel as uid and waits until
	// the tunnel closes it (it reads until EOF).
	connect := func(uid int) {
		t.Helper()
		cmd := exec.Command(py, "-c", `import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.settimeout(20)
while s.recv(4096):
    pass
print("closed")`, strings.Split(ln.Addr().String(), ":")[1])
		if uid != os.Getuid() {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
		}
		if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "closed" {
			t.Fatalf("uid %d: %v %s", uid, err, out)
		}
	}
	connect(os.Getuid())
	if n := dialled.Load(); n != 1 {
		t.Fatalf("the user's own connection: the gateway saw %d dials, want 1", n)
	}
	connect(65534)
	if n := dialled.Load(); n != 1 {
		t.Fatalf("another local user's connection reached for the gateway (%d dials)", n)
	}
}

// TestProcAddr: the socket table's addresses, as a little-endian kernel
// prints them, for IPv4 and IPv6 loopback.
func TestProcAddr(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("the samples are a little-endian kernel's")
	}
	for in, want := range map[string]string{
		"0100007F:0D05":                         "127.0.0.1:3333",
		"00000000000000000000000001000000:1F90": "[::1]:8080",
		"0000000000000000FFFF00000100007F:0050": "[::ffff:127.0.0.1]:80",
	} {
		got, err := procAddr(in)
		if err != nil || got.String() != want {
			t.Errorf("%s: %v %v, want %s", in, got, err, want)
		}
	}
}
