package realtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// StartHAProxy starts Debian's HAProxy in front of backends (host:port
// each), in TCP mode so TLS passes through to them, round robin, checking
// each every 200 ms and sending a connection that cannot reach one to
// another (redispatch). It returns the address it listens on (loopback)
// and stops it when t ends; it skips t if HAProxy is not installed.
func StartHAProxy(t testing.TB, backends ...string) string {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("HAProxy is not installed (scripts/install-deps.sh installs the haproxy package)")
	}
	// A free port: taken and given back, for HAProxy to bind.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var servers strings.Builder
	for i, b := range backends {
		fmt.Fprintf(&servers, "  server g%d %s check inter 200ms fall 1 rise 2\n", i, b)
	}
	cfg := fmt.Sprintf(`global
  maxconn 1000
defaults
  mode tcp
  timeout connect 2s
  timeout client 5m
  timeout server 5m
  retries 3
  option redispatch
frontend gateways
  bind %s
  default_backend gateways
backend gateways
  balance roundrobin
%s`, addr, servers.String())
	dir := t.TempDir()
	file := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	log := &LockedBuffer{}
	cmd := exec.Command(bin, "-db", "-f", file)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy:\n%s", log.String())
		}
	})
	err = WaitFor(10*time.Second, func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err != nil {
		t.Fatalf("haproxy did not listen on %s: %v\n%s", addr, err, log.String())
	}
	return addr
}
