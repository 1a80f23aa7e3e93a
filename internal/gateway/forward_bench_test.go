package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
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
// returns the local socket, or "" without sshd.
func sshForward(b *testing.B, appSock string) string {
	sshd := "/usr/sbin/sshd"
	if _, err := os.Stat(sshd); err != nil {
		b.Log("no ssh -L path: openssh-server is not installed (scripts/install-deps.sh installs it)")
		return ""
	}
	dir, err := os.MkdirTemp("", "fwd-ssh-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
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
		"-o", "ExitOnForwardFailure=yes", "-i", filepath.Join(dir, "user"), "-p", fmt.Sprint(port),
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
	return local
}

// loadRun sends b.N GETs of u from 100 concurrent clients and reports
// requests per second and the p50 and p99 latency.
func loadRun(b *testing.B, c *http.Client, u string) {
	const clients = 100
	var mu sync.Mutex
	var lat []time.Duration
	work := make(chan struct{}, b.N)
	for range b.N {
		work <- struct{}{}
	}
	close(work)
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
		return
	}
	b.ReportMetric(float64(len(lat))/el.Seconds(), "req/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(0, "ns/op")
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

// BenchmarkForward: the same app reached directly on its socket, through
// `ssh -L` (Debian's OpenSSH on loopback, conductor's design) and through
// the gateway and an airlock forward tunnel, with 100 concurrent clients,
// and a 64 MiB download on each path.
//
//	go test -run '^$' -bench BenchmarkForward -benchtime 20000x ./internal/gateway/
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

	ssh := sshForward(b, appSock)
	viaSSH := unixClient(ssh)

	b.Run("rps/direct", func(b *testing.B) { loadRun(b, direct, "http://app/") })
	if ssh != "" {
		b.Run("rps/ssh-L", func(b *testing.B) { loadRun(b, viaSSH, "http://app/") })
	}
	b.Run("rps/forward", func(b *testing.B) { loadRun(b, alice.http, f.URL) })
	b.Run("download/direct", func(b *testing.B) { download(b, direct, "http://app/big") })
	if ssh != "" {
		b.Run("download/ssh-L", func(b *testing.B) { download(b, viaSSH, "http://app/big") })
	}
	b.Run("download/forward", func(b *testing.B) { download(b, alice.http, f.URL+"big") })
}
