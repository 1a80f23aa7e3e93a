package runner_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
)

// BenchmarkKioskEgress is a kiosk's one way out, whole: from a process in
// the seal, through the seal's egress relay and the runner's CONNECT
// proxy, to an allowed echo server on loopback, against the same probe
// straight to the server from outside any seal. It reports the p50 and p99
// of a new tunnel with one byte there and back (connect-µs) and a 32 MiB
// echo's MB/s, for both paths, measured side by side in one run.
//
//	go test -run '^$' -bench BenchmarkKioskEgress -benchtime 1x ./internal/runner/
func BenchmarkKioskEgress(b *testing.B) {
	needKioskTools(b, "chromium")
	m := modes(b)[0]
	ca := newCA(b, "airlock kiosk bench CA")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() { // an echo server with a large buffer: the paths, not it, are measured
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	echo := ln.Addr().String()
	hub, _, _ := hubServer(b, ca, echo, "")
	const n, size = 300, 32 << 20
	run := func(label string, do func(out string)) map[string]any {
		dir := resultsDir(b, m.owner)
		out := filepath.Join(dir, label+".json")
		do(out)
		var res map[string]any
		if err := realtest.WaitFor(120*time.Second, func() error {
			raw, err := os.ReadFile(out)
			if err != nil {
				return err
			}
			return json.Unmarshal(raw, &res)
		}); err != nil {
			b.Fatalf("%s: %v", label, err)
		}
		if e, ok := res["error"]; ok {
			b.Fatalf("%s: %v", label, e)
		}
		return res
	}
	for b.Loop() {
		direct := run("direct", func(out string) {
			cmd := exec.Command(realtest.Probe(b), "egressbench", out, "-", echo, strconv.Itoa(n), strconv.Itoa(size))
			if o, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("direct: %v %s", err, o)
			}
		})
		sealed := run("kiosk", func(out string) {
			key := filepath.Join(realtest.SharedDir(b, m.owner), "key")
			realtest.WriteFile(b, m.owner, key, testKey, 0o600)
			realtest.StartRunner(b, map[string]any{
				"id": fmt.Sprintf("kbench-%d", time.Now().UnixNano()%1e6), "owner": m.owner.Name,
				"workload": map[string]any{"argv": []string{"Xvnc", ":1", "-rfbport", "5901", "-localhost",
					"-SecurityTypes", "None", "-geometry", "480x320", "-depth", "24"}},
				"processes": []any{map[string]any{"argv": []string{realtest.Probe(b), "egressbench", out,
					"127.0.0.1:3128", echo, strconv.Itoa(n), strconv.Itoa(size)}}},
				"connectors": []any{map[string]any{
					"name": "console", "kind": "vnc", "target": "127.0.0.1:5901", "listen": "tcp:127.0.0.1:0",
				}},
				"ticket_key_file": key,
				"kiosk": map[string]any{"url": "https://" + hub + "/", "allow": []string{echo},
					"ca_pem": string(ca.pem), "geometry": "480x320"},
			}, realtest.RunOptions{As: m.as})
		})
		for _, p := range []struct {
			name string
			res  map[string]any
		}{{"direct", direct}, {"kiosk", sealed}} {
			b.ReportMetric(p.res["connect_p50_us"].(float64), p.name+"-connect-p50-µs")
			b.ReportMetric(p.res["connect_p99_us"].(float64), p.name+"-connect-p99-µs")
			b.ReportMetric(p.res["mb_per_s"].(float64), p.name+"-MB/s")
		}
	}
}
