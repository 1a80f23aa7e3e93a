package gateway

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
)

// appTarget is one way to send small GETs to the bench app.
type appTarget struct {
	name string
	url  string
	hdr  http.Header
	// client returns a client of its own for one load worker, so each
	// worker keeps exactly one keep-alive connection.
	client func() (*http.Client, error)
	note   string // how the path is made, for the report
	// cpu are the processes that do the proxying, whose CPU time the
	// report divides by the requests; none for direct.
	cpu []cpuPart
}

// cpuPart is a named set of processes.
type cpuPart struct {
	name string
	pids []int
}

// appConns are the connection counts of the app proxy benchmarks.
var appConns = []int{1, 100}

// plainClient is a client with one keep-alive connection.
func plainClient() (*http.Client, error) {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, DisableCompression: true,
	}}, nil
}

// appTargets returns the paths to the bench app that can run here; for
// each one that cannot, skipped names it and says why.
func (e *browserEnv) appTargets(tb testing.TB) (ts []appTarget, skipped map[string]string) {
	skipped = map[string]string{}
	direct := "http://" + e.hp.bench
	ts = append(ts, appTarget{name: "direct", url: direct + "/", client: plainClient,
		note: "the probe on the host's loopback, no proxy"})
	// Each proxy twice: plain HTTP, and behind the same TLS as the
	// gateway's (HTTPS on the listener, a self-signed ECDSA certificate,
	// TLS 1.3) for the like-for-like comparison issue 18 asks for.
	cert, key, certErr := benchCert(tb)
	for _, tlsOn := range []bool{false, true} {
		suffix, scheme, client, c, k := "", "http://", plainClient, "", ""
		if tlsOn {
			if certErr != nil {
				skipped["nginx-tls"], skipped["chp-tls"] = certErr.Error(), certErr.Error()
				continue
			}
			suffix, scheme, c, k = "-tls", "https://", cert, key
			client = func() (*http.Client, error) { return tlsClient(1), nil }
		}
		if addr, pid, err := startNginx(tb, e.hp.bench, c, k); err != nil {
			skipped["nginx"+suffix] = err.Error()
		} else {
			ts = append(ts, appTarget{name: "nginx" + suffix, url: scheme + addr + "/", client: client,
				note: "nginx, 2 workers, upstream keepalive, in front of the host probe" + map[bool]string{true: "; HTTPS"}[tlsOn],
				cpu:  []cpuPart{{"nginx", processGroup(pid)}}})
		}
		if addr, pid, err := startCHP(tb, e.hp.bench, c, k); err != nil {
			skipped["chp"+suffix] = err.Error()
		} else {
			ts = append(ts, appTarget{name: "chp" + suffix, url: scheme + addr + "/", client: client,
				note: "configurable-http-proxy (Node) in front of the host probe" + map[bool]string{true: "; HTTPS"}[tlsOn],
				cpu:  []cpuPart{{"chp", processGroup(pid)}}})
		}
	}
	gwPid := e.gwPid
	if gwPid == 0 {
		gwPid = os.Getpid() // the runners are children of this process then
	}
	conn := cpuPart{"connector", []int{connectorPid(gwPid, e.sess.id)}}
	gwCPU := []cpuPart{conn}
	if e.gwPid != 0 {
		gwCPU = []cpuPart{{"gateway", []int{e.gwPid}}, conn}
	}
	connURL := "http://session/s/" + e.sess.id + "/app/"
	dial := e.sess.connectorDial()
	ts = append(ts, appTarget{name: "connector", url: connURL,
		note: "the session's app connector alone (UNIX socket, its cookie after one ticket) → the probe in the seal",
		cpu:  []cpuPart{conn},
		client: func() (*http.Client, error) {
			jar, _ := cookiejar.New(nil)
			c := &http.Client{Jar: jar, Timeout: 30 * time.Second, Transport: &http.Transport{
				DialContext: dial, MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, DisableCompression: true}}
			// One ticket buys the cookie the connector's later requests use,
			// as a browser arriving from the portal does.
			tok, err := e.sess.ticket()
			if err != nil {
				return nil, err
			}
			req, _ := http.NewRequest("GET", connURL, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			return c, getOnce(c, req)
		}})
	ts = append(ts, appTarget{name: "gateway", url: e.sess.gwURL + "/s/" + e.sess.id + "/app/",
		hdr:  http.Header{"Authorization": {"Bearer " + e.sess.token}},
		note: "HTTPS, bearer token (its record and the session's from the fast path's cache, standing per request), the connector's cookie after one ticket, → the connector (pooled UNIX connections) → the probe in the seal",
		cpu:  gwCPU,
		client: func() (*http.Client, error) {
			return tlsClient(1), nil
		}})
	return ts, skipped
}

// loadResult is what a load run measured.
type loadResult struct {
	n, errs  int
	firstErr error
	elapsed  time.Duration
	lat      latencies
	cpu      []time.Duration // CPU time of each of the target's cpu parts
}

// cpuPerReq is part i's CPU time per request.
func (r loadResult) cpuPerReq(i int) time.Duration {
	if r.n == 0 {
		return 0
	}
	return r.cpu[i] / time.Duration(r.n)
}

func (r loadResult) rps() float64 { return float64(r.n) / r.elapsed.Seconds() }

// loadWorkers makes conns clients for t, each with its connection open.
func loadWorkers(t appTarget, conns int) ([]*http.Client, error) {
	cs := make([]*http.Client, conns)
	var wg sync.WaitGroup
	errs := make([]error, conns)
	for i := range cs {
		wg.Go(func() {
			c, err := t.client()
			if err == nil {
				err = getOnce(c, t.request(context.Background()))
			}
			cs[i], errs[i] = c, err
		})
	}
	wg.Wait()
	return cs, errors.Join(errs...)
}

func closeWorkers(cs []*http.Client) {
	for _, c := range cs {
		if c != nil {
			c.CloseIdleConnections()
		}
	}
}

func (t appTarget) request(ctx context.Context) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, "GET", t.url, nil)
	for k, v := range t.hdr {
		req.Header[k] = v
	}
	return req
}

// runLoad sends GETs to t from conns workers, each on its own keep-alive
// connection, back to back: for warm (not counted) and then for dur.
func runLoad(t appTarget, conns int, warm, dur time.Duration) (loadResult, error) {
	cs, err := loadWorkers(t, conns)
	defer closeWorkers(cs)
	if err != nil {
		return loadResult{}, fmt.Errorf("%s: open %d connections: %w", t.name, conns, err)
	}
	run := func(d time.Duration) loadResult {
		var (
			mu  sync.Mutex
			res loadResult
			wg  sync.WaitGroup
		)
		start := time.Now()
		deadline := start.Add(d)
		for _, c := range cs {
			wg.Go(func() {
				lat := make(latencies, 0, 4096)
				var errs int
				var first error
				for time.Now().Before(deadline) {
					t0 := time.Now()
					if err := getOnce(c, t.request(context.Background())); err != nil {
						errs++
						if first == nil {
							first = err
						}
						continue
					}
					lat = append(lat, time.Since(t0))
				}
				mu.Lock()
				res.lat = append(res.lat, lat...)
				res.errs += errs
				if res.firstErr == nil {
					res.firstErr = first
				}
				mu.Unlock()
			})
		}
		wg.Wait()
		res.elapsed = time.Since(start)
		res.n = len(res.lat)
		return res
	}
	run(warm)
	cpu0 := make([]time.Duration, len(t.cpu))
	for i, p := range t.cpu {
		cpu0[i] = cpuOf(p.pids)
	}
	res := run(dur)
	for i, p := range t.cpu {
		res.cpu = append(res.cpu, cpuOf(p.pids)-cpu0[i])
	}
	return res, nil
}

// BenchmarkAppProxy: small GETs to the same app (the probe's bench mode)
// directly, through nginx, through configurable-http-proxy, through the
// session's connector alone and through the gateway, from 1 and 100
// keep-alive connections. It reports req/s and p50/p99 latency in µs.
//
// The requests are spread over conns goroutines, each taking the next of
// b.N, rather than run in one b.Loop: a single loop cannot keep 100
// connections busy. Errors fail the benchmark (a connector refusing
// tickets, for one).
func BenchmarkAppProxy(b *testing.B) {
	e := newBrowserEnv(b)
	ts, skipped := e.appTargets(b)
	for name, why := range skipped {
		b.Logf("%s skipped: %s", name, why)
	}
	for _, t := range ts {
		for _, conns := range appConns {
			b.Run(fmt.Sprintf("%s/conns=%d", t.name, conns), func(b *testing.B) {
				cs, err := loadWorkers(t, conns)
				defer closeWorkers(cs)
				if err != nil {
					b.Fatal(err)
				}
				var (
					next  atomic.Int64
					mu    sync.Mutex
					all   latencies
					first error
					wg    sync.WaitGroup
				)
				cpu0 := make([]time.Duration, len(t.cpu))
				for i, p := range t.cpu {
					cpu0[i] = cpuOf(p.pids)
				}
				self0 := selfCPU()
				b.ReportAllocs()
				b.ResetTimer()
				start := time.Now()
				for _, c := range cs {
					wg.Go(func() {
						lat := make(latencies, 0, b.N/conns+1)
						for next.Add(1) <= int64(b.N) {
							t0 := time.Now()
							if err := getOnce(c, t.request(context.Background())); err != nil {
								mu.Lock()
								first = cmpErr(first, err)
								mu.Unlock()
								return
							}
							lat = append(lat, time.Since(t0))
						}
						mu.Lock()
						all = append(all, lat...)
						mu.Unlock()
					})
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				if first != nil {
					b.Fatal(first)
				}
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
				reportLatency(b, all, "µs")
				// CPU per request: this process (the load generator, and the
				// gateway when it runs here) and each proxy process.
				b.ReportMetric(float64(selfCPU()-self0)/float64(time.Microsecond)/float64(b.N), "self-cpu-µs/op")
				for i, p := range t.cpu {
					b.ReportMetric(float64(cpuOf(p.pids)-cpu0[i])/float64(time.Microsecond)/float64(b.N), p.name+"-cpu-µs/op")
				}
			})
		}
	}
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago,
// for programs that cannot be given a listener or report their port.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitHTTP waits until url answers 200.
func waitHTTP(url string, done <-chan struct{}) error {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the benchmark's self-signed certificate, on loopback
	}}
	return realtest.WaitFor(30*time.Second, func() error {
		select {
		case <-done:
			return errors.New("exited")
		default:
		}
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
}

// startDaemon starts cmd, stops it with SIGTERM at the end of tb, and
// waits until url answers.
func startDaemon(tb testing.TB, cmd *exec.Cmd, url string) (int, error) {
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &lockedWriter{w: &out}, &lockedWriter{w: &out}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	tb.Cleanup(func() {
		// The process group: nginx's workers and node's children too.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	if err := waitHTTP(url, done); err != nil {
		return 0, fmt.Errorf("%s did not answer: %v; output: %s", filepath.Base(cmd.Path), err, out.String())
	}
	return cmd.Process.Pid, nil
}

type lockedWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// nginxBin finds nginx (Debian puts it in /usr/sbin).
func nginxBin() (string, error) {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx", nil
	}
	return "", errors.New("nginx not installed (apt-get install -y --no-install-recommends nginx)")
}

// startNginx runs nginx in the foreground with a config in a temporary
// directory: two workers (one per core here), no access log, and a pool of
// keep-alive connections to the upstream, as one would tune it.
func startNginx(tb testing.TB, upstream, cert, key string) (string, int, error) {
	bin, err := nginxBin()
	if err != nil {
		return "", 0, err
	}
	port, err := freePort()
	if err != nil {
		return "", 0, err
	}
	dir := tb.TempDir()
	listen, scheme := "", "http://"
	if cert != "" {
		listen = fmt.Sprintf(" ssl;\n\t\tssl_certificate %s;\n\t\tssl_certificate_key %s;\n\t\tssl_protocols TLSv1.3", cert, key)
		scheme = "https://"
	}
	conf := fmt.Sprintf(`worker_processes 2;
daemon off;
master_process on;
pid %[1]s/nginx.pid;
error_log stderr error;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	upstream app {
		server %[2]s;
		keepalive 128;
	}
	server {
		listen 127.0.0.1:%[3]d%[4]s;
		location / {
			proxy_pass http://app;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header Host $host;
			proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
		}
	}
}
`, dir, upstream, port, listen)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return "", 0, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	pid, err := startDaemon(tb, exec.Command(bin, "-p", dir, "-c", path, "-e", "stderr"), scheme+addr+"/")
	return addr, pid, err
}

// chpBin finds configurable-http-proxy: $AIRLOCK_BENCH_CHP, PATH, or where
// scripts/bench-gateway.sh installs it (.artifacts/chp).
func chpBin() (string, error) {
	if p := os.Getenv("AIRLOCK_BENCH_CHP"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("configurable-http-proxy"); err == nil {
		return p, nil
	}
	p, _ := filepath.Abs("../../.artifacts/chp/node_modules/.bin/configurable-http-proxy")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	return "", errors.New("configurable-http-proxy not installed (scripts/bench-gateway.sh installs it from npm into .artifacts/chp)")
}

// startCHP runs JupyterHub's configurable-http-proxy with upstream as its
// default target.
func startCHP(tb testing.TB, upstream, cert, key string) (string, int, error) {
	bin, err := chpBin()
	if err != nil {
		return "", 0, err
	}
	port, err := freePort()
	if err != nil {
		return "", 0, err
	}
	apiPort, err := freePort()
	if err != nil {
		return "", 0, err
	}
	tok := make([]byte, 16)
	rand.Read(tok)
	cmd := exec.Command(bin, "--ip", "127.0.0.1", "--port", strconv.Itoa(port), "--api-ip", "127.0.0.1", "--api-port", strconv.Itoa(apiPort),
		"--default-target", "http://"+upstream, "--log-level", "error")
	scheme := "http://"
	if cert != "" {
		cmd.Args = append(cmd.Args, "--ssl-cert", cert, "--ssl-key", key)
		scheme = "https://"
	}
	cmd.Env = append(os.Environ(), "CONFIGPROXY_AUTH_TOKEN="+hex.EncodeToString(tok))
	addr := "127.0.0.1:" + strconv.Itoa(port)
	pid, err := startDaemon(tb, cmd, scheme+addr+"/")
	return addr, pid, err
}

// versionOf runs a program's version flag and returns its first line.
func versionOf(bin string, args ...string) string {
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}
