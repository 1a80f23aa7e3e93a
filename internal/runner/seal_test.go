package runner_test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
)

// mode is how a test starts its runner: as root with the test account as
// the session's owner, or as the test account itself (no privileges at all).
type mode struct {
	name  string
	as    *realtest.Account // runner runs as this account (nil: as the test)
	owner realtest.Account  // session owner
}

// modes lists the ways the seal can be made on this machine.
func modes(t testing.TB) []mode {
	if os.Geteuid() != 0 {
		cur := realtest.Current(t)
		return []mode{{name: "unprivileged", owner: cur}}
	}
	u := realtest.TestUser(t)
	return []mode{
		{name: "root", owner: u},
		{name: "unprivileged", as: &u, owner: u},
	}
}

// resultsDir is a directory visible inside the seal (not under /tmp, which
// the seal replaces) where the probe writes what it saw.
func resultsDir(t testing.TB, acct realtest.Account) string {
	t.Helper()
	base := acct.Home
	if os.Geteuid() != 0 {
		base = filepath.Join(moduleRoot(t), ".artifacts")
		os.MkdirAll(base, 0o755)
	}
	dir, err := os.MkdirTemp(base, "airlock-probe-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		os.Chown(dir, acct.UID, acct.GID)
	}
	return dir
}

func moduleRoot(t testing.TB) string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

type probeResult struct {
	Addr    string `json:"addr"`
	Reached bool   `json:"reached"`
	Error   string `json:"error"`
}

func readResults(t *testing.T, path string) map[string]probeResult {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("probe results: %v", err)
	}
	var rs []probeResult
	if err := json.Unmarshal(b, &rs); err != nil {
		t.Fatal(err)
	}
	m := map[string]probeResult{}
	for _, r := range rs {
		m[r.Addr] = r
	}
	return m
}

// dialOutside runs the probe outside any seal, as acct, optionally in a
// network namespace, and returns what it reached.
func dialOutside(t *testing.T, acct *realtest.Account, netns string, addrs []string) map[string]probeResult {
	t.Helper()
	dir := t.TempDir()
	if acct != nil {
		dir = realtest.SharedDir(t, *acct)
	}
	out := filepath.Join(dir, "outside.json")
	args := append([]string{realtest.Probe(t), "dial", out}, addrs...)
	if netns != "" {
		args = append([]string{"ip", "netns", "exec", netns}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	if acct != nil && os.Geteuid() == 0 && netns == "" {
		cmd.SysProcAttr = credential(acct)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("probe outside: %v\n%s", err, b)
	}
	return readResults(t, out)
}

// dialInside runs the probe as the workload of a seal and returns what it
// reached. The session ends when the probe exits.
func dialInside(t *testing.T, m mode, netns string, egress []string, addrs []string) map[string]probeResult {
	t.Helper()
	dir := resultsDir(t, m.owner)
	out := filepath.Join(dir, "inside.json")
	spec := map[string]any{
		"id":       fmt.Sprintf("probe-%d", time.Now().UnixNano()),
		"owner":    m.owner.Name,
		"workload": map[string]any{"argv": append([]string{realtest.Probe(t), "dial", out}, addrs...)},
		"egress":   egress,
	}
	r := realtest.StartRunner(t, spec, realtest.RunOptions{As: m.as, Netns: netns, NoWaitReady: true})
	ev := r.WaitExit(t, 60*time.Second)
	if ev.Code == nil || *ev.Code != 0 {
		t.Fatalf("probe inside the seal failed: %+v\n%s", ev, r.Stderr.String())
	}
	return readResults(t, out)
}

// echoTCP serves an echo on network/addr in this process until the test ends.
func echoListen(t testing.TB, network, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
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
	return ln
}

func echoUDP(t *testing.T, addr string) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	return pc
}

// TestSealBlocksLoopbackAndSockets: from inside a seal, every path to the
// host fails (TCP and UDP to the host's 127.0.0.1 and ::1, UNIX sockets under
// the host's /tmp and /run, an abstract socket, DNS to a host resolver),
// while the same probe outside the seal reaches every one of them.
func TestSealBlocksLoopbackAndSockets(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			tcp4 := echoListen(t, "tcp", "127.0.0.1:0").Addr().String()
			tcp6 := echoListen(t, "tcp", "[::1]:0").Addr().String()
			udp4 := echoUDP(t, "127.0.0.1:0").LocalAddr().String()
			udp6 := echoUDP(t, "[::1]:0").LocalAddr().String()

			tmpDir := realtest.SharedDir(t, m.owner)
			tmpSock := filepath.Join(tmpDir, "host.sock")
			echoListen(t, "unix", tmpSock)
			os.Chmod(tmpSock, 0o777)

			runDir := filepath.Join("/run", filepath.Base(tmpDir))
			if os.Geteuid() != 0 {
				runDir = filepath.Join(os.Getenv("XDG_RUNTIME_DIR"), filepath.Base(tmpDir))
			}
			if err := os.MkdirAll(runDir, 0o755); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(runDir) })
			runSock := filepath.Join(runDir, "host.sock")
			echoListen(t, "unix", runSock)
			os.Chmod(runSock, 0o777)

			abstract := fmt.Sprintf("airlock-test-%d", time.Now().UnixNano())
			echoListen(t, "unix", "@"+abstract)

			dnsPC, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			dnsPC.Close()
			// The probe's own DNS server, so "outside" does not depend on
			// this machine's resolver.
			dnsAddr := dnsPC.LocalAddr().String()
			srv := exec.Command(realtest.Probe(t), "serve", "dns:"+dnsAddr)
			stdout, _ := srv.StdoutPipe()
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
			buf := make([]byte, 8)
			stdout.Read(buf) // "serving"

			addrs := []string{
				"tcp:" + tcp4, "tcp:" + tcp6, "udp:" + udp4, "udp:" + udp6,
				"unix:" + tmpSock, "unix:" + runSock, "abstract:" + abstract,
				"dns:" + dnsAddr + ":licence.example.org",
			}
			outside := dialOutside(t, m.as, "", addrs)
			inside := dialInside(t, m, "", nil, addrs)
			for _, a := range addrs {
				if !outside[a].Reached {
					t.Errorf("%s: not reached even outside the seal (%s): the probe proves nothing", a, outside[a].Error)
				}
				if inside[a].Reached {
					t.Errorf("%s: reached from inside the seal", a)
				} else {
					t.Logf("%s: refused inside: %s", a, inside[a].Error)
				}
			}
		})
	}
}

// TestSealEgressException: an egress entry is reachable as 127.0.0.1:PORT
// inside; a host port that is not listed stays unreachable.
func TestSealEgressException(t *testing.T) {
	m := modes(t)[len(modes(t))-1]
	allowed := echoListen(t, "tcp", "127.0.0.1:0").Addr().String()
	other := echoListen(t, "tcp", "127.0.0.1:0").Addr().String()
	inside := dialInside(t, m, "", []string{allowed}, []string{"tcp:" + allowed, "tcp:" + other})
	if !inside["tcp:"+allowed].Reached {
		t.Errorf("egress exception %s not reached: %s", allowed, inside["tcp:"+allowed].Error)
	}
	if inside["tcp:"+other].Reached {
		t.Errorf("%s reached from inside, but it is not an egress exception", other)
	}
}
