package gateway

// Benchmarks of the gateway's hot paths, on real loopback with a real
// gateway, real runners and real seals (STYLE §3 item 19). The targets
// they check, and the comparison with nginx and configurable-http-proxy,
// are in TestGatewayReport (report_bench_test.go), which runs everything
// once and writes .artifacts/bench-gateway.md.
//
// What is compared with what, honestly:
//
//   - The browser path is measured through the app connector (kind http)
//     to a WebSocket served by the probe inside the seal, not through the
//     vnc connector: the vnc connector exists only for desktop profiles,
//     whose workload is Xvnc, and Xvnc cannot be made a byte source of
//     known size. Both connectors relay an upgraded stream the same way
//     once the handshake is done.
//   - The gateway can reach only apps inside a seal, so the "same backend"
//     is the same probe binary twice: one instance in the session (behind
//     the gateway) and one on the host's loopback (direct, nginx,
//     configurable-http-proxy).
//   - Every request through the gateway is authenticated (a bearer token
//     looked up in SQLite), gets a fresh single-use ticket and is proxied
//     twice: gateway → connector (UNIX socket) → app. It is also HTTPS,
//     where the others are plain HTTP.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/auth/local"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store/sqlite"
	"github.com/airlock-hpc/airlock/internal/ticket"
	"github.com/coder/websocket"
)

const (
	benchChunk = 64 << 10 // bytes per message of the download benchmarks (the probe's benchChunk)
	benchEcho  = 64       // bytes per echo round trip
	benchUser  = "bench"
)

// benchAppProfile is an app session serving the probe's bench mode (see
// internal/realtest/probe) on port 8888 inside the seal.
func benchAppProfile(tb testing.TB) Profile {
	return Profile{Name: "bench", Title: "Bench app", Kind: "app",
		Command: []string{realtest.Probe(tb), "serve", "bench:tcp:127.0.0.1:{port}"}, Port: 8888,
		CPUs: 1, MaxCPUs: 2, MemoryMB: 512, MaxMemoryMB: 1024, Lifetime: time.Hour, MaxLifetime: 2 * time.Hour}
}

// demoDesktopProfile is the demo desktop of the embedded defaults (Xvnc at
// 1280x800x24 with one xterm).
func demoDesktopProfile() Profile {
	return Profile{Name: "desktop", Title: "Linux desktop", Kind: "desktop", Geometry: "1280x800", Depth: 24,
		Programs: [][]string{{"xterm"}}, CPUs: 1, MaxCPUs: 4, MemoryMB: 2048, MaxMemoryMB: 4096, Lifetime: time.Hour, MaxLifetime: 8 * time.Hour}
}

// benchGateway is a gateway served on 127.0.0.1 inside the test process,
// as startGateway makes one, for benchmarks and the report (startGateway
// takes a *testing.T).
type benchGateway struct {
	tb    testing.TB
	g     *Gateway
	url   string // https://127.0.0.1:PORT
	store *sqlite.DB
	users *local.File // the password file, which decides who is a user
	token string      // bearer token of benchUser
	http  *http.Client

	mu       sync.Mutex
	launched []string // sessions launch started, for stopAll
}

// startBenchGateway starts a gateway with the bench and demo desktop
// profiles, then mods applied to its config. poll is the local backend's
// event poll; 0 is its production default.
func startBenchGateway(tb testing.TB, poll time.Duration, mods ...func(*Config)) *benchGateway {
	tb.Helper()
	cfg := testConfig(tb, tb.TempDir(), poll, slog.LevelError)
	cfg.Profiles = []Profile{benchAppProfile(tb), demoDesktopProfile()}
	for _, mod := range mods {
		mod(&cfg)
	}
	g, url, cancel, done := serveGateway(tb, cfg)
	db := cfg.Store.(*sqlite.DB)
	bg := &benchGateway{tb: tb, g: g, url: url, store: db, users: cfg.LocalUsers.(*local.File), http: tlsClient(64)}
	tb.Cleanup(func() {
		bg.stopAll()
		cancel()
		<-done
		g.Close()
		db.Close()
	})
	bg.token = bg.newToken(benchUser, false)
	return bg
}

// tlsClient is an HTTP/1.1 client for the gateway's self-signed test
// certificate, keeping up to conns connections alive.
func tlsClient(conns int) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true}, // the gateway's self-signed test certificate
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		DisableCompression:  true,
	}}
}

// newToken stores a user (in the password file and the store) and a
// bearer token for them, as POST /api/v1/tokens would (without the
// password check and its rate limit).
func (bg *benchGateway) newToken(user string, admin bool) string {
	bg.tb.Helper()
	ctx := context.Background()
	if err := bg.users.Add(user, []byte(testPassword), admin); err != nil && !errors.Is(err, local.ErrUserExists) {
		bg.tb.Fatal(err)
	}
	if err := bg.store.PutUser(ctx, session.User{Name: user, Admin: admin, Method: local.Method, Created: time.Now()}); err != nil {
		bg.tb.Fatal(err)
	}
	raw := make([]byte, 32)
	rand.Read(raw)
	secret := "alk_" + base64.RawURLEncoding.EncodeToString(raw)
	sum := sha256.Sum256([]byte(secret))
	if err := bg.store.CreateToken(ctx, session.Token{ID: "t-" + secret[4:12], User: user, Name: "bench", Created: time.Now(), Hash: sum[:]}); err != nil {
		bg.tb.Fatal(err)
	}
	return secret
}

// api sends a JSON API request with token and decodes the answer into out.
func (bg *benchGateway) api(token, method, path string, body, out any) (int, error) {
	return apiCall(bg.http, bg.url, token, method, path, body, out)
}

// apiCall sends a JSON API request to the gateway at base with a bearer
// token and decodes the answer into out (if not nil).
func apiCall(hc *http.Client, base, token, method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, base+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if out != nil && err == nil {
		err = json.Unmarshal(b, out)
	}
	return resp.StatusCode, err
}

// launch starts a session of profile through the API and returns its id
// and the time from sending the POST to the store saying Ready (checked
// every 2 ms: the gateway writes Ready to the store when it learns it).
func (bg *benchGateway) launch(profile string) (string, time.Duration, error) {
	start := time.Now()
	var created struct{ ID string }
	code, err := bg.api(bg.token, "POST", "/api/v1/sessions", map[string]any{"profile": profile}, &created)
	if err != nil || code != 201 {
		return "", 0, fmt.Errorf("launch %s: status %d: %v", profile, code, err)
	}
	bg.mu.Lock()
	bg.launched = append(bg.launched, created.ID)
	bg.mu.Unlock()
	deadline := start.Add(60 * time.Second)
	for {
		s, err := bg.store.GetSession(context.Background(), created.ID)
		if err != nil {
			return created.ID, 0, err
		}
		switch s.State {
		case session.Ready:
			return created.ID, time.Since(start), nil
		case session.Ended:
			return created.ID, 0, fmt.Errorf("session %s ended: %s", s.ID, s.Reason)
		}
		if time.Now().After(deadline) {
			return created.ID, 0, fmt.Errorf("session %s still %s after 60s", s.ID, s.State)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// mustLaunch is launch for setup.
func (bg *benchGateway) mustLaunch(profile string) string {
	bg.tb.Helper()
	id, _, err := bg.launch(profile)
	if err != nil {
		bg.tb.Fatal(err)
	}
	return id
}

// stop ends a session and waits until the runner says it ended.
func (bg *benchGateway) stop(id string) error {
	if err := bg.g.Stop(context.Background(), benchUser, id, "benchmark done", ""); err != nil {
		return err
	}
	return realtest.WaitFor(30*time.Second, func() error {
		s, err := bg.store.GetSession(context.Background(), id)
		if err != nil {
			return err
		}
		if s.State != session.Ended {
			return fmt.Errorf("session %s is %s", id, s.State)
		}
		return nil
	})
}

// stopAll ends every session launch started that is still alive, so no
// runner outlives the test (runners outlive the gateway on purpose).
// Seeded sessions have no runner and are left alone.
func (bg *benchGateway) stopAll() {
	bg.mu.Lock()
	ids := bg.launched
	bg.mu.Unlock()
	for _, id := range ids {
		s, err := bg.store.GetSession(context.Background(), id)
		if err != nil {
			bg.tb.Error(err)
			continue
		}
		if s.State == session.Ended {
			continue
		}
		if err := bg.stop(id); err != nil {
			bg.tb.Errorf("stop %s: %v", id, err)
		}
	}
}

// benchSession is a bench app session behind a gateway, in this process
// or an `airlock serve` one.
type benchSession struct {
	gwURL string // https://127.0.0.1:PORT
	token string // bearer token of the session's owner
	id    string
	dir   string // the session's directory in the state dir: app.sock, ticket.key
}

func (bg *benchGateway) session(id string) benchSession {
	return benchSession{gwURL: bg.url, token: bg.token, id: id, dir: bg.g.sessionDir(id)}
}

// connectorDial dials the session's app connector, a UNIX socket in its
// directory, as the gateway does.
func (s benchSession) connectorDial() func(ctx context.Context, _, _ string) (net.Conn, error) {
	path := filepath.Join(s.dir, "app.sock")
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}
}

// ticket signs a control ticket for the session's app connector with the
// session's key, as the gateway's proxy does for each request.
func (s benchSession) ticket() (string, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, "ticket.key"))
	if err != nil {
		return "", err
	}
	var k ticket.Key
	if len(b) != len(k) {
		return "", fmt.Errorf("ticket key of %d bytes", len(b))
	}
	copy(k[:], b)
	return ticket.Sign(k, ticket.Claims{Session: s.id, Connector: "app", User: benchUser,
		Mode: ticket.Control, Expires: time.Now().Add(time.Minute)})
}

// hostProbe is the probe running on the host's loopback, outside any seal:
// the same program as the app inside the bench session.
type hostProbe struct {
	bench  string // host:port of the bench web app
	stream string // host:port of the raw TCP stream/echo server
}

// startHostProbe starts the probe with the bench and stream modes on
// 127.0.0.1 and stops it at the end of tb.
func startHostProbe(tb testing.TB) hostProbe {
	tb.Helper()
	cmd := exec.Command(realtest.Probe(tb), "serve", "bench:tcp:127.0.0.1:0", "stream:tcp:127.0.0.1:0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = tb.Output()
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	var hp hostProbe
	lines := make(chan string)
	go func() {
		defer close(lines)
		b := make([]byte, 0, 256)
		buf := make([]byte, 1)
		for {
			if _, err := out.Read(buf); err != nil {
				return
			}
			if buf[0] != '\n' {
				b = append(b, buf[0])
				continue
			}
			lines <- string(b)
			b = b[:0]
		}
	}()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				tb.Fatal("probe exited before serving")
			}
			f := strings.Fields(l)
			switch {
			case len(f) == 3 && f[0] == "listening" && f[1] == "bench":
				hp.bench = f[2]
			case len(f) == 3 && f[0] == "listening" && f[1] == "stream":
				hp.stream = f[2]
			case l == "serving":
				go io.Copy(io.Discard, out)
				return hp
			}
		case <-timeout:
			tb.Fatal("probe did not start within 30s")
		}
	}
}

// stream is one connection of the browser-path benchmarks: a download of
// benchChunk-byte messages, or an echo of small ones.
type stream interface {
	readChunk() error           // reads one benchChunk-byte message
	echo(msg, buf []byte) error // sends msg, reads it back into buf
	close()
}

// tcpStream is the floor: bytes on a plain loopback TCP connection.
type tcpStream struct {
	c   net.Conn
	buf []byte
}

func (s *tcpStream) readChunk() error {
	_, err := io.ReadFull(s.c, s.buf)
	return err
}

func (s *tcpStream) echo(msg, buf []byte) error {
	if _, err := s.c.Write(msg); err != nil {
		return err
	}
	_, err := io.ReadFull(s.c, buf[:len(msg)])
	return err
}

func (s *tcpStream) close() { s.c.Close() }

// wsStream is a WebSocket to the probe's bench app, direct or proxied.
type wsStream struct {
	c   *websocket.Conn
	buf []byte
}

func (s *wsStream) readChunk() error {
	_, r, err := s.c.Reader(context.Background())
	if err != nil {
		return err
	}
	n, err := io.ReadFull(r, s.buf)
	if err != nil {
		return err
	}
	if n != benchChunk {
		return fmt.Errorf("message of %d bytes, want %d", n, benchChunk)
	}
	return nil
}

func (s *wsStream) echo(msg, buf []byte) error {
	ctx := context.Background()
	if err := s.c.Write(ctx, websocket.MessageBinary, msg); err != nil {
		return err
	}
	_, r, err := s.c.Reader(ctx)
	if err != nil {
		return err
	}
	_, err = io.ReadFull(r, buf[:len(msg)])
	return err
}

func (s *wsStream) close() { s.c.CloseNow() }

// browserPaths are the ways to the same kind of app, fastest first.
var browserPaths = []string{"direct-tcp", "direct-ws", "connector", "gateway"}

// browserEnv is a bench session behind a gateway, and the host probe.
type browserEnv struct {
	sess benchSession
	hp   hostProbe
	// gwPid is the gateway's process when it is `airlock serve`, for
	// counting its CPU time; 0 when it runs in this process.
	gwPid int
}

// newBrowserEnv starts a gateway in this process (so a CPU profile of the
// benchmark shows it), a bench session and the host probe.
func newBrowserEnv(tb testing.TB) *browserEnv {
	bg := startBenchGateway(tb, 50*time.Millisecond)
	return &browserEnv{sess: bg.session(bg.mustLaunch("bench")), hp: startHostProbe(tb)}
}

// dial opens a stream on path; what is "source" or "echo".
func (e *browserEnv) dial(path, what string) (stream, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var (
		url  string
		opts = &websocket.DialOptions{CompressionMode: websocket.CompressionDisabled, HTTPHeader: http.Header{}}
	)
	switch path {
	case "direct-tcp":
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", e.hp.stream)
		if err != nil {
			return nil, err
		}
		op := []byte{'s'}
		if what == "echo" {
			op[0] = 'e'
		}
		if _, err := c.Write(op); err != nil {
			c.Close()
			return nil, err
		}
		return &tcpStream{c: c, buf: make([]byte, benchChunk)}, nil
	case "direct-ws":
		url = "ws://" + e.hp.bench + "/" + what
	case "connector":
		url = "ws://session/s/" + e.sess.id + "/app/" + what
		opts.HTTPClient = &http.Client{Transport: &http.Transport{DialContext: e.sess.connectorDial()}}
		tok, err := e.sess.ticket()
		if err != nil {
			return nil, err
		}
		opts.HTTPHeader.Set("Authorization", "Bearer "+tok)
	case "gateway":
		url = "wss" + strings.TrimPrefix(e.sess.gwURL, "https") + "/s/" + e.sess.id + "/app/" + what
		opts.HTTPClient = tlsClient(1)
		opts.HTTPHeader.Set("Authorization", "Bearer "+e.sess.token)
	default:
		return nil, fmt.Errorf("no path %q", path)
	}
	c, _, err := websocket.Dial(ctx, url, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.SetReadLimit(2 * benchChunk)
	return &wsStream{c: c, buf: make([]byte, benchChunk)}, nil
}

// latencies is a sample of durations.
type latencies []time.Duration

// pct returns the p-th percentile (0 < p ≤ 100); it sorts l.
func (l latencies) pct(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	slices.Sort(l)
	i := int(float64(len(l))*p/100+0.5) - 1
	return l[max(0, min(i, len(l)-1))]
}

// reportLatency adds p50 and p99 in unit ("µs" or "ms") to b's results.
func reportLatency(b *testing.B, l latencies, unit string) {
	d := map[string]float64{"µs": float64(time.Microsecond), "ms": float64(time.Millisecond)}[unit]
	b.ReportMetric(float64(l.pct(50))/d, "p50-"+unit)
	b.ReportMetric(float64(l.pct(99))/d, "p99-"+unit)
}

// BenchmarkBrowserPath: a browser's WebSocket to an app in a session,
// through the gateway and the connector, against the connector alone, the
// app's own WebSocket with no proxy, and plain TCP. download-64KiB reads
// 64 KiB messages the app sends as fast as it can (MB/s); echo-64B times
// round trips of 64-byte messages (p50/p99 in µs).
func BenchmarkBrowserPath(b *testing.B) {
	e := newBrowserEnv(b)
	for _, p := range browserPaths {
		b.Run("download-64KiB/"+p, func(b *testing.B) {
			s, err := e.dial(p, "source")
			if err != nil {
				b.Fatal(err)
			}
			defer s.close()
			b.SetBytes(benchChunk)
			b.ReportAllocs()
			for b.Loop() {
				if err := s.readChunk(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	for _, p := range browserPaths {
		b.Run("echo-64B/"+p, func(b *testing.B) {
			s, err := e.dial(p, "echo")
			if err != nil {
				b.Fatal(err)
			}
			defer s.close()
			msg, buf := bytes.Repeat([]byte{'x'}, benchEcho), make([]byte, benchEcho)
			lat := make(latencies, 0, 1<<16)
			b.SetBytes(2 * benchEcho)
			b.ReportAllocs()
			for b.Loop() {
				t0 := time.Now()
				if err := s.echo(msg, buf); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			reportLatency(b, lat, "µs")
		})
	}
}

// errStatus is a response other than 200 during a load run.
var errStatus = errors.New("status not 200")

// getOnce sends one GET with c and reads the whole answer.
func getOnce(c *http.Client, req *http.Request) error {
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("%w: %d", errStatus, resp.StatusCode)
	}
	return err
}
