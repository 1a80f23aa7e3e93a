package runner_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
	"golang.org/x/sys/unix"
)

// hostUnixListener serves on a pathname socket in a host directory the seal
// sees, counts what it accepts and records the peers' uids.
type hostUnixListener struct {
	accepted atomic.Int32
	mu       sync.Mutex
	uids     []uint32
}

func listenHostUnix(t *testing.T, path string) *hostUnixListener {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	// Anyone may connect: only the seal stands in the way.
	os.Chmod(path, 0o777)
	h := &hostUnixListener{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.accepted.Add(1)
			if rc, err := c.(*net.UnixConn).SyscallConn(); err == nil {
				rc.Control(func(fd uintptr) {
					if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
						h.mu.Lock()
						h.uids = append(h.uids, cred.Uid)
						h.mu.Unlock()
					}
				})
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 512)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					c.Write(buf[:n])
				}
			}()
		}
	}()
	return h
}

// TestSealRefusesHostUnixSockets attacks host pathname sockets from inside
// a seal, as the unprivileged owner and in root mode: sockets made before
// and after the session started, by absolute path, relative to the
// workload's directory, through a symlink in the seal's /tmp, a datagram
// with sendto, io_uring, vsock, and a thread rewriting the address while
// another connects. All are refused with EACCES and the host listeners never see a
// thing; a socket in the seal's own /tmp and a socket the spec lists work,
// the latter with the owner's uid as its peer.
func TestSealRefusesHostUnixSockets(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			host := realtest.OutsideTmp(t, "unixguard-")
			before := listenHostUnix(t, filepath.Join(host, "before.sock"))
			listed := listenHostUnix(t, filepath.Join(host, "listed.sock"))
			dg, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(host, "dgram.sock"), Net: "unixgram"})
			if err != nil {
				t.Fatal(err)
			}
			defer dg.Close()
			os.Chmod(filepath.Join(host, "dgram.sock"), 0o777)

			out := filepath.Join(resultsDir(t, m.owner), "inside.json")
			p := func(name string) string { return filepath.Join(host, name) }
			addrs := []string{
				"selfunix:/tmp/own.sock",
				"wait:" + p("go"),
				"unix:" + p("before.sock"),
				"unix:" + p("after.sock"),
				"unix:before.sock",
				"via:/tmp/link.sock=" + p("before.sock"),
				"sendto:" + p("dgram.sock"),
				"iouring:",
				"unix:" + p("listed.sock"),
				"race:/tmp/own.sock|" + p("before.sock") + "|300",
				"vsock:",
			}
			spec := map[string]any{
				"id":           fmt.Sprintf("unixguard-%d", time.Now().UnixNano()),
				"owner":        m.owner.Name,
				"workload":     map[string]any{"argv": append([]string{realtest.Probe(t), "dial", out}, addrs...), "dir": host},
				"unix_sockets": []string{p("listed.sock")},
			}
			r := realtest.StartRunner(t, spec, realtest.RunOptions{As: m.as})
			// The session is running: this socket is newer than it.
			after := listenHostUnix(t, p("after.sock"))
			if err := os.WriteFile(p("go"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			ev := r.WaitExit(t, 90*time.Second)
			if ev.Code == nil || *ev.Code != 0 {
				t.Fatalf("probe inside the seal failed: %+v\n%s", ev, r.Stderr.String())
			}
			res := readResults(t, out)
			for _, a := range addrs {
				t.Logf("%s: reached=%v %s", a, res[a].Reached, res[a].Error)
			}
			for _, a := range []string{"selfunix:/tmp/own.sock", "wait:" + p("go"), "unix:" + p("listed.sock")} {
				if !res[a].Reached {
					t.Errorf("%s: not reached (%s); want it allowed", a, res[a].Error)
				}
			}
			for _, a := range addrs[2:8] {
				if res[a].Reached {
					t.Errorf("%s: reached from inside the seal", a)
				}
			}
			for _, a := range addrs[2:7] {
				if !strings.Contains(res[a].Error, "permission denied") {
					t.Errorf("%s: %q; want EACCES (permission denied)", a, res[a].Error)
				}
			}
			if res["iouring:"].Reached || !strings.Contains(res["iouring:"].Error, "operation not permitted") {
				t.Errorf("io_uring_setup: %+v; want EPERM", res["iouring:"])
			}
			// On a virtual machine vsock reaches the hypervisor's host from
			// any network namespace; the socket is not even made.
			if v := res["vsock:"]; v.Reached || !strings.Contains(v.Error, "address family not supported") {
				t.Errorf("vsock: %+v; want EAFNOSUPPORT", v)
			}
			race := addrs[len(addrs)-2]
			if res[race].Reached {
				t.Errorf("the racing thread got a connection to the host socket: %s", res[race].Error)
			}
			if n := before.accepted.Load() + after.accepted.Load(); n != 0 {
				t.Errorf("host sockets accepted %d connections from inside", n)
			}
			dg.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if n, _, err := dg.ReadFrom(make([]byte, 64)); err == nil {
				t.Errorf("the host datagram socket received %d bytes from inside", n)
			}
			listed.mu.Lock()
			defer listed.mu.Unlock()
			if len(listed.uids) != 1 || listed.uids[0] != uint32(m.owner.UID) {
				t.Errorf("the listed socket saw peers with uids %v; want one, the owner's %d", listed.uids, m.owner.UID)
			}
			if !strings.Contains(r.Stderr.String(), "refused connect to host socket "+p("before.sock")) {
				t.Errorf("init did not log the refusal; stderr:\n%s", r.Stderr.String())
			}
		})
	}
}
