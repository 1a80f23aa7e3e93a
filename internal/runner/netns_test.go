package runner_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
)

// testNet is two network namespaces joined by a veth pair: "node", where
// the runner runs, at 192.0.2.1, and "peer", another host on the cluster
// network, at 192.0.2.2 (TEST-NET-1: never a real address).
type testNet struct{ node, peer string }

const (
	nodeIP = "192.0.2.1"
	peerIP = "192.0.2.2"
)

func newTestNet(t *testing.T) testNet {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces for a test node need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) not installed")
	}
	suffix := fmt.Sprintf("%d", time.Now().UnixNano()%1e8)
	n := testNet{node: "alnode" + suffix, peer: "alpeer" + suffix}
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", n.node)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.node).Run() })
	ip("netns", "add", n.peer)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.peer).Run() })
	va, vb := "vn"+suffix, "vp"+suffix
	ip("link", "add", va, "netns", n.node, "type", "veth", "peer", "name", vb, "netns", n.peer)
	ip("-n", n.node, "addr", "add", nodeIP+"/24", "dev", va)
	ip("-n", n.peer, "addr", "add", peerIP+"/24", "dev", vb)
	for _, ns := range []string{n.node, n.peer} {
		ip("-n", ns, "link", "set", "lo", "up")
	}
	ip("-n", n.node, "link", "set", va, "up")
	ip("-n", n.peer, "link", "set", vb, "up")
	return n
}

// serveIn runs the probe's echo servers in a network namespace.
func serveIn(t *testing.T, netns string, addrs ...string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", netns, realtest.Probe(t), "serve"}, addrs...)...)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "serving\n" {
		t.Fatalf("probe serve in %s: %q", netns, line)
	}
}

// TestSealBlocksClusterNetwork runs the runner on a test node: from inside
// the seal neither the node's own cluster address nor another host on the
// cluster network is reachable, while the node itself reaches both; and the
// session's connector, bound before the seal, is reachable from the other
// host with TLS.
func TestSealBlocksClusterNetwork(t *testing.T) {
	n := newTestNet(t)
	serveIn(t, n.node, "tcp:"+nodeIP+":7001", "udp:"+nodeIP+":7002", "dns:"+nodeIP+":53")
	serveIn(t, n.peer, "tcp:"+peerIP+":7001", "udp:"+peerIP+":7002")
	addrs := []string{
		"tcp:" + nodeIP + ":7001", "udp:" + nodeIP + ":7002",
		"tcp:" + peerIP + ":7001", "udp:" + peerIP + ":7002",
		"dns:" + nodeIP + ":53:licence.example.org",
	}
	m := modes(t)[0] // root: ip netns exec needs it
	outside := dialOutside(t, nil, n.node, addrs)
	inside := dialInside(t, m, n.node, nil, addrs)
	for _, a := range addrs {
		if !outside[a].Reached {
			t.Errorf("%s: not reached from the node outside the seal (%s): the probe proves nothing", a, outside[a].Error)
		}
		if inside[a].Reached {
			t.Errorf("%s: reached from inside the seal", a)
		} else {
			t.Logf("%s: refused inside: %s", a, inside[a].Error)
		}
	}

	// The connector's listener lives on the node's cluster address.
	dir := realtest.SharedDir(t, m.owner)
	key := dir + "/key"
	realtest.WriteFile(t, m.owner, key, []byte("0123456789abcdef0123456789abcdef"), 0o600)
	r := realtest.StartRunner(t, map[string]any{
		"id": "netns-connector", "owner": m.owner.Name,
		"workload": map[string]any{"argv": []string{realtest.Probe(t), "serve", "tcp:127.0.0.1:8080"}},
		"connectors": []any{map[string]any{
			"name": "web", "kind": "http", "target": "127.0.0.1:8080", "listen": "tcp:" + nodeIP + ":0",
		}},
		"ticket_key_file": key,
	}, realtest.RunOptions{Netns: n.node})
	ep := r.Ready.Endpoints["web"]
	if !strings.HasPrefix(ep, nodeIP+":") {
		t.Fatalf("endpoint %q: want it on %s", ep, nodeIP)
	}
	// From the peer host: the connector answers, with TLS.
	probeTLS := exec.Command("ip", "netns", "exec", n.peer, realtest.Probe(t), "tlsinfo", ep)
	out, err := probeTLS.CombinedOutput()
	if err != nil {
		t.Fatalf("TLS to the connector from the peer host: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), r.Ready.TLSSHA256) || r.Ready.TLSSHA256 == "" {
		t.Fatalf("peer saw certificate %s; ready event pins %q", out, r.Ready.TLSSHA256)
	}
}
