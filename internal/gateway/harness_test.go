package gateway

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/auth"
	"github.com/airlock-hpc/airlock/internal/auth/local"
	"github.com/airlock-hpc/airlock/internal/auth/ratelimit"
	backendlocal "github.com/airlock-hpc/airlock/internal/backend/local"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/store/sqlite"
)

// testGateway is a real gateway on 127.0.0.1 with a SQLite store, the
// local backend starting real runners, and a local password file.
type testGateway struct {
	t        testing.TB
	g        *Gateway
	url      string
	stateDir string
	cancel   context.CancelFunc
	done     chan error
	cfg      Config
}

const testPassword = "correct horse battery"

func appProfile(t *testing.T) Profile {
	return Profile{Name: "app", Title: "Test app", Kind: "app", Command: []string{realtest.Probe(t), "serve", "http:tcp:127.0.0.1:8888"},
		Port: 8888, CPUs: 1, MaxCPUs: 2, MemoryMB: 512, MaxMemoryMB: 1024, Lifetime: time.Hour, MaxLifetime: 2 * time.Hour}
}

func desktopProfile() Profile {
	return Profile{Name: "desktop", Title: "Linux desktop", Kind: "desktop", Geometry: "640x480",
		Programs: [][]string{{"xterm", "-geometry", "60x15+0+0"}}, CPUs: 1, MaxCPUs: 2, MemoryMB: 1024, MaxMemoryMB: 2048, Lifetime: time.Hour, MaxLifetime: 8 * time.Hour}
}

// startGateway starts a gateway; stateDir "" makes a new one. users are
// created with testPassword; "admin" is an admin.
func startGateway(t *testing.T, stateDir string, mod func(*Config), users ...string) *testGateway {
	t.Helper()
	if stateDir == "" {
		stateDir = t.TempDir()
		// Runners outlive the gateway by design (--outlive-parent): end
		// every session this test started once it is over. Registered
		// first, so it runs after the gateway's own clean-up.
		t.Cleanup(func() { endSessions(t, stateDir) })
	}
	cfg := testConfig(t, stateDir, 50*time.Millisecond, slog.LevelWarn, users...)
	cfg.Profiles = []Profile{appProfile(t), desktopProfile()}
	if mod != nil {
		mod(&cfg)
	}
	g, url, cancel, done := serveGateway(t, cfg)
	tg := &testGateway{t: t, g: g, url: url, stateDir: stateDir, cancel: cancel, done: done, cfg: cfg}
	t.Cleanup(tg.stop)
	return tg
}

// testConfig is a gateway's Config on stateDir: a SQLite store, the local
// backend (poll as given) starting the real airlock binary, and a local
// password file holding users with testPassword ("admin" is an admin). As
// root, sessions run as the test account. Profiles are the caller's.
func testConfig(tb testing.TB, stateDir string, poll time.Duration, level slog.Level, users ...string) Config {
	tb.Helper()
	db, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(stateDir, "airlock.db")})
	if err != nil {
		tb.Fatal(err)
	}
	// Whoever uses the config may close the store first (a restart test
	// does); a second Close only says it is closed.
	tb.Cleanup(func() { db.Close() })
	pw, err := local.Open(filepath.Join(stateDir, "users"))
	if err != nil {
		tb.Fatal(err)
	}
	for _, u := range users {
		if err := pw.Add(u, []byte(testPassword), u == "admin"); err != nil && !strings.Contains(err.Error(), "exists") {
			tb.Fatal(err)
		}
	}
	lim, _ := ratelimit.New(ratelimit.DefaultConfig())
	be, err := backendlocal.New(backendlocal.Config{Dir: filepath.Join(stateDir, "sessions"), Exe: realtest.Binary(tb), Poll: poll})
	if err != nil {
		tb.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: level}))
	cfg := Config{
		StateDir: stateDir, Store: db, Backend: be, Logger: log,
		Auth:       &auth.Chain{Authenticators: []auth.PasswordAuthenticator{pw}, Limiter: lim, Logger: log},
		LocalUsers: pw,
	}
	if os.Geteuid() == 0 {
		cfg.RunAs = realtest.TestUser(tb).Name
	}
	return cfg
}

// serveGateway starts a gateway from cfg on 127.0.0.1:0. Cancelling stops
// Serve, whose result arrives on done.
func serveGateway(tb testing.TB, cfg Config) (g *Gateway, url string, cancel context.CancelFunc, done chan error) {
	tb.Helper()
	g, err := New(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done = make(chan error, 1)
	go func() { done <- g.Serve(ctx, ln) }()
	return g, "https://" + ln.Addr().String(), cancel, done
}

// stop shuts the gateway down, as a restart would: sessions keep running.
func (tg *testGateway) stop() {
	if tg.cancel == nil {
		return
	}
	tg.cancel()
	<-tg.done
	tg.g.Close()
	tg.cfg.Store.Close()
	tg.cancel = nil
}

// client is a browser or script talking to the gateway.
type client struct {
	t     testing.TB
	tg    *testGateway
	http  *http.Client
	token string
}

func (tg *testGateway) client() *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: tg.t, tg: tg, http: &http.Client{
		Jar:       jar,
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, // the gateway's self-signed test certificate
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}}
}

// loginToken gets a bearer token with HTTP Basic credentials.
func (c *client) loginToken(user string) *client {
	c.t.Helper()
	req, _ := http.NewRequest("POST", c.tg.url+"/api/v1/tokens", nil)
	req.SetBasicAuth(user, testPassword)
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Token string }
	json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != 201 || out.Token == "" {
		c.t.Fatalf("token for %s: status %d", user, resp.StatusCode)
	}
	c.token = out.Token
	return c
}

// loginCookie logs in through the login form, as a browser does.
func (c *client) loginCookie(user string) *client {
	c.t.Helper()
	req, _ := http.NewRequest("POST", c.tg.url+"/login", strings.NewReader(url.Values{"user": {user}, "password": {testPassword}, "next": {"/"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", c.tg.url)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 303 {
		c.t.Fatalf("login %s: status %d", user, resp.StatusCode)
	}
	return c
}

// do sends a request and decodes a JSON answer into out (if not nil).
func (c *client) do(method, path string, body any, out any) (int, string) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	}
	req, _ := http.NewRequest(method, c.tg.url+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	} else {
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		json.Unmarshal(b, out)
	}
	return resp.StatusCode, string(b)
}

type sessionOut struct {
	ID, State, Reason, Owner, Profile string
	Connect                           map[string]string
}

// launch starts a session and waits until it is ready.
func (c *client) launch(profile string) sessionOut {
	c.t.Helper()
	return c.waitState(c.start(map[string]any{"profile": profile}).ID, "ready")
}

func (c *client) waitState(id, state string) sessionOut {
	c.t.Helper()
	return c.waitStateFor(id, state, 30*time.Second)
}

// waitStateFor waits up to d for session id to be in state.
func (c *client) waitStateFor(id, state string, d time.Duration) sessionOut {
	c.t.Helper()
	var s sessionOut
	err := realtest.WaitFor(d, func() error {
		s = sessionOut{} // fields the answer leaves out must not linger
		if code, body := c.do("GET", "/api/v1/sessions/"+id, nil, &s); code != 200 {
			return fmt.Errorf("get: %d %s", code, body)
		}
		if s.State != state {
			return fmt.Errorf("session %s is %s (%s), want %s", id, s.State, s.Reason, state)
		}
		return nil
	})
	if err != nil {
		c.t.Fatal(err)
	}
	return s
}

// start launches a session with req (its profile and options) and returns
// it as the API first shows it, without waiting.
func (c *client) start(req map[string]any) sessionOut {
	c.t.Helper()
	var s sessionOut
	if code, body := c.do("POST", "/api/v1/sessions", req, &s); code != 201 {
		c.t.Fatalf("launch %v: %d %s", req, code, body)
	}
	return s
}

// ownerDir makes a directory in the owner's home (which a seal shows, unlike
// the host's /tmp), owned by the owner and removed at the end.
func ownerDir(t *testing.T, owner realtest.Account, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp(owner.Home, prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chown(dir, owner.UID, owner.GID)
	return dir
}

// endSessions stops the runners of every session under stateDir and waits
// until none is left.
func endSessions(t *testing.T, stateDir string) {
	marker := filepath.Join(stateDir, "sessions") + "/"
	for _, pid := range realtest.ProcessesOf(marker) {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	if err := realtest.WaitFor(30*time.Second, func() error { return realtest.Gone(marker) }); err != nil {
		t.Errorf("sessions left running after the test: %v", err)
	}
}
