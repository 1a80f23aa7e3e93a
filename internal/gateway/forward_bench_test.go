package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
)

// benchApp is the app every path of BenchmarkForward reaches: a Go HTTP
// server on a UNIX socket (fast, so the paths' own costs show), with a
// small page at / and 64 MiB at /big.
func benchApp(b *testing.B) string {
	big := make([]byte, 64<<20)
	return goApp(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			w.Header().Set("Content-Length", fmt.Sprint(len(big)))
			w.Write(big)
			return
		}
		io.WriteString(w, "hello from the app\n")
	}))
}

// unixClient is an HTTP client whose every connection goes to sock.
func unixClient(sock string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
		MaxIdleConnsPerHost: 200,
	}}
}

// sshForward starts Debian's OpenSSH server on loopback and `ssh -N -L`
// forwarding a local UNIX socket to appSock, as conductor does, and
// returns the local socket and the processes that relay (ssh, sshd and
// its session's children, for their CPU time), or "" without sshd.
//
// The local socket is open to every local user (StreamLocalBindMask
// 0111), as conductor's must be for its reverse proxy, which runs as
// another user (nginx's workers here).
func sshForward(b *testing.B, appSock string) (string, []int) {
	sshd := "/usr/sbin/sshd"
	if _, err := os.Stat(sshd); err != nil {
		b.Log("no ssh -L path: openssh-server is not installed (scripts/install-deps.sh installs it)")
		return "", nil
	}
	dir, err := os.MkdirTemp("", "fwd-ssh-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o711) // nginx's workers reach local.sock in it
	for _, k := range []string{"host", "user"} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			b.Fatalf("ssh-keygen: %v %s", err, out)
		}
	}
	pub, _ := os.ReadFile(filepath.Join(dir, "user.pub"))
	os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	conf := fmt.Sprintf("Port %d\nListenAddress 127.0.0.1\nHostKey %s\nPidFile %s\nAuthorizedKeysFile %s\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nAllowStreamLocalForwarding yes\n",
		port, filepath.Join(dir, "host"), filepath.Join(dir, "sshd.pid"), filepath.Join(dir, "authorized_keys"))
	os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(conf), 0o600)
	os.MkdirAll("/run/sshd", 0o755) // its privilege-separation directory
	d := exec.Command(sshd, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	if err := d.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Process.Kill(); d.Wait() })
	me, _ := user.Current()
	local := filepath.Join(dir, "local.sock")
	s := exec.Command("ssh", "-N", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
		"-o", "ExitOnForwardFailure=yes", "-o", "StreamLocalBindMask=0111", "-i", filepath.Join(dir, "user"), "-p", fmt.Sprint(port),
		"-L", local+":"+appSock, me.Username+"@127.0.0.1")
	if err := realtest.WaitFor(10*time.Second, func() error {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		b.Fatalf("sshd: %v", err)
	}
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Process.Kill(); s.Wait() })
	if err := realtest.WaitFor(20*time.Second, func() error {
		c, err := net.Dial("unix", local)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		b.Fatalf("ssh -L: %v", err)
	}
	return local, append([]int{s.Process.Pid, d.Process.Pid}, descendants(d.Process.Pid)...)
}

// armResult is what one arm of BenchmarkForward measured in its last run.
type armResult struct {
	rps float64
	cpu map[string]float64 // µs of CPU per request, by process name
}

// loadRun sends b.N GETs of u from 100 concurrent clients and reports
// requests per second, the p50 and p99 latency, and the CPU time per
// request of this process (the load generator, the app, and what else
// runs in it) and of each of parts (/proc/PID/stat, 10 ms ticks).
func loadRun(b *testing.B, c *http.Client, u string, parts ...cpuPart) armResult {
	const clients = 100
	var mu sync.Mutex
	var lat []time.Duration
	work := make(chan struct{}, b.N)
	for range b.N {
		work <- struct{}{}
	}
	close(work)
	cpu0 := make([]time.Duration, len(parts))
	for i, p := range parts {
		cpu0[i] = cpuOf(p.pids)
	}
	self0 := selfCPU()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			var mine []time.Duration
			for range work {
				t0 := time.Now()
				resp, err := c.Get(u)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Errorf("GET %s: %d", u, resp.StatusCode)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	if len(lat) == 0 {
		return armResult{}
	}
	n := float64(len(lat))
	res := armResult{rps: n / el.Seconds(), cpu: map[string]float64{}}
	res.cpu["self"] = float64(selfCPU()-self0) / float64(time.Microsecond) / n
	for i, p := range parts {
		res.cpu[p.name] = float64(cpuOf(p.pids)-cpu0[i]) / float64(time.Microsecond) / n
	}
	b.ReportMetric(res.rps, "req/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	for _, name := range slices.Sorted(maps.Keys(res.cpu)) {
		b.ReportMetric(res.cpu[name], name+"-cpu-µs/op")
	}
	b.ReportMetric(0, "ns/op")
	return res
}

// download reads 64 MiB b.N times and reports the throughput.
func download(b *testing.B, c *http.Client, u string) {
	b.SetBytes(64 << 20)
	b.ResetTimer()
	for range b.N {
		resp, err := c.Get(u)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if n != 64<<20 {
			b.Fatalf("read %d bytes", n)
		}
	}
}

// BenchmarkForward: the same app reached with 100 concurrent keep-alive
// clients, and with a 64 MiB download, by each way in:
//
//   - direct: its UNIX socket, no proxy;
//   - ssh-L: Debian's OpenSSH on loopback forwarding a UNIX socket
//     (`ssh -N -L`), plain HTTP to it: the raw tunnel alone;
//   - conductor: conductor's whole design, like for like with forward:
//     HTTPS (TLS 1.3, the same client) to nginx on the web host, which
//     proxies with upstream keep-alive to the `ssh -L` socket;
//   - forward: HTTPS to the gateway, through an airlock forward tunnel,
//     the gateway and the node's side both in this process (profile it
//     with -cpuprofile);
//   - forward-serve: the same, with the gateway as `airlock serve` and
//     the node's side as `airlock forward --to`, each a process of its
//     own, so their CPU time per request is their own, as nginx's is.
//
// The log line at the end gives the ratios issue 13's targets are about.
//
//	AIRLOCK_TEST_USER=$(scripts/test-user.sh) go test -run '^$' -bench 'BenchmarkForward/rps' -benchtime 20000x ./internal/gateway/
func BenchmarkForward(b *testing.B) {
	target := benchApp(b)
	appSock := strings.TrimPrefix(target, "unix:")
	direct := unixClient(appSock)

	stateDir := b.TempDir()
	cfg := testConfig(b, stateDir, time.Second, slog.LevelError, "alice")
	g, url, cancel, done := serveGateway(b, cfg)
	tg := &testGateway{t: b, g: g, url: url, stateDir: stateDir, cancel: cancel, done: done, cfg: cfg}
	b.Cleanup(tg.stop)
	f := serveForward(b, tg, tg.client().loginToken("alice").token, "bench", target)
	alice := tg.client().loginCookie("alice").reachApps()
	if resp, body := alice.visit(f.URL); resp.StatusCode != 200 {
		b.Fatalf("sign in: %d %s", resp.StatusCode, body)
	}
	alice.http.Transport.(*http.Transport).MaxIdleConnsPerHost = 200

	ssh, sshPids := sshForward(b, appSock)
	viaSSH := unixClient(ssh)
	conductor, nginxPids := "", []int(nil)
	if ssh != "" {
		cert, key, err := benchCert(b)
		if err != nil {
			b.Fatal(err)
		}
		addr, pid, err := startNginx(b, "unix:"+ssh, cert, key)
		if err != nil {
			b.Logf("no conductor path: %v", err)
		} else {
			conductor, nginxPids = "https://"+addr+"/", processGroup(pid)
		}
	}
	viaNginx := tlsClient(200)
	viaNginx.Transport.(*http.Transport).MaxConnsPerHost = 0
	serveURL, viaServe, servePids := forwardServe(b, target)

	res := map[string]armResult{}
	b.Run("rps/direct", func(b *testing.B) { res["direct"] = loadRun(b, direct, "http://app/") })
	if ssh != "" {
		b.Run("rps/ssh-L", func(b *testing.B) {
			res["ssh-L"] = loadRun(b, viaSSH, "http://app/", cpuPart{"ssh", sshPids})
		})
	}
	if conductor != "" {
		b.Run("rps/conductor", func(b *testing.B) {
			res["conductor"] = loadRun(b, viaNginx, conductor, cpuPart{"nginx", nginxPids}, cpuPart{"ssh", sshPids})
		})
	}
	b.Run("rps/forward", func(b *testing.B) { res["forward"] = loadRun(b, alice.http, f.URL) })
	if serveURL != "" {
		b.Run("rps/forward-serve", func(b *testing.B) {
			defer perfRecord(b, servePids)()
			res["forward-serve"] = loadRun(b, viaServe, serveURL, servePids...)
		})
	}
	b.Run("rps/ratios", func(b *testing.B) { reportForwardRatios(b, res) })
	b.Run("download/direct", func(b *testing.B) { download(b, direct, "http://app/big") })
	if ssh != "" {
		b.Run("download/ssh-L", func(b *testing.B) { download(b, viaSSH, "http://app/big") })
	}
	b.Run("download/forward", func(b *testing.B) { download(b, alice.http, f.URL+"big") })
}

// reportForwardRatios reports issue 13's ratios from what the arms
// measured, as metrics of a benchmark of their own (rps/ratios) and in
// words; the arms not run are left out.
func reportForwardRatios(b *testing.B, res map[string]armResult) {
	var out []string
	metric := func(v float64, unit, words string) {
		b.ReportMetric(v, unit)
		out = append(out, fmt.Sprintf(words, v))
	}
	ratio := func(a, c, unit string) {
		if res[a].rps > 0 && res[c].rps > 0 {
			metric(res[a].rps/res[c].rps, unit, "req/s "+a+" ÷ "+c+" %.2f×")
		}
	}
	ratio("forward", "ssh-L", "fwd/sshL")
	ratio("forward", "conductor", "fwd/conductor")
	ratio("forward-serve", "ssh-L", "serve/sshL")
	ratio("forward-serve", "conductor", "serve/conductor")
	if gw, ng := res["forward-serve"].cpu["gateway"], res["conductor"].cpu["nginx"]; gw > 0 && ng > 0 {
		metric(gw/ng, "gwcpu/nginxcpu", fmt.Sprintf("CPU per request: gateway %.0f µs ÷ nginx %.0f µs = %%.2f×", gw, ng))
	}
	if fw, sh := res["forward-serve"].cpu["forwarder"], res["conductor"].cpu["ssh"]; fw > 0 && sh > 0 {
		metric(fw/sh, "fwdcpu/sshcpu", fmt.Sprintf("node side: airlock forward %.0f µs ÷ ssh+sshd %.0f µs = %%.2f×", fw, sh))
	}
	b.ReportMetric(0, "ns/op")
	if len(out) > 0 {
		b.Log("issue 13: " + strings.Join(out, "; "))
	}
}

// forwardServe publishes target through `airlock serve` and `airlock
// forward --to`, each a child process, and returns the forward's URL, a
// client signed in to it with its connections open to 200, and the two
// processes; "" when the airlock binary cannot be had.
func forwardServe(b *testing.B, target string) (string, *http.Client, []cpuPart) {
	sp := startServe(b)
	tg := &testGateway{t: b, url: sp.url, stateDir: sp.stateDir}
	bin := realtest.Binary(b)
	fwd := exec.Command(bin, "forward", "--gateway", sp.url, "--ca", filepath.Join(sp.stateDir, "tls.crt"), "--name", "bench", "--to", target)
	fwd.Env = append(os.Environ(), "AIRLOCK_TOKEN="+sp.token)
	logf, err := os.Create(filepath.Join(b.TempDir(), "forward.log"))
	if err != nil {
		b.Fatal(err)
	}
	fwd.Stdout, fwd.Stderr = logf, logf
	if err := fwd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { fwd.Process.Signal(os.Interrupt); fwd.Wait(); logf.Close() })
	u := strings.Replace(sp.url, "127.0.0.1", "bench-"+benchUser+".apps.localhost", 1) + "/"
	c := tg.client().loginCookie(benchUser).reachApps()
	if err := c.waitVisit(u, 200, "hello from the app\n"); err != nil {
		out, _ := os.ReadFile(logf.Name())
		b.Fatalf("airlock forward: %v\n%s", err, out)
	}
	c.http.Transport.(*http.Transport).MaxIdleConnsPerHost = 200
	return u, c.http, []cpuPart{{"gateway", []int{sp.pid}}, {"forwarder", []int{fwd.Process.Pid}}}
}

// perfRecord profiles each of parts' processes with Linux perf while the
// arm runs, into FILE.NAME, when AIRLOCK_BENCH_PERF names FILE (the
// gateway and the node's side are other processes there, out of
// -cpuprofile's reach):
//
//	perf report -i FILE.gateway --no-children --sort sym
//
// It returns what stops the recordings.
func perfRecord(b *testing.B, parts []cpuPart) func() {
	out := os.Getenv("AIRLOCK_BENCH_PERF")
	if out == "" {
		return func() {}
	}
	var cmds []*exec.Cmd
	for _, p := range parts {
		var pids []string
		for _, pid := range p.pids {
			pids = append(pids, fmt.Sprint(pid))
		}
		cmd := exec.Command("perf", "record", "-q", "-F", "997", "-g", "-o", out+"."+p.name, "-p", strings.Join(pids, ","))
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			b.Logf("perf: %v", err)
			continue
		}
		cmds = append(cmds, cmd)
	}
	return func() {
		for _, cmd := range cmds {
			cmd.Process.Signal(os.Interrupt)
			cmd.Wait()
		}
	}
}
