package gateway

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/airlock-hpc/airlock/internal/backend"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
	"github.com/airlock-hpc/airlock/internal/store/sqlite"
)

// openViewer opens the session's console through the gateway as c (its
// token, or the cookies in its jar: a login and share links), reads the
// desktop once, and returns a channel that receives the error the
// connection ends with.
func openViewer(t *testing.T, c *client, id string) <-chan error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hdr := http.Header{}
	if c.token != "" {
		hdr.Set("Authorization", "Bearer "+c.token)
	}
	hc := &http.Client{Jar: c.http.Jar, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	ws, resp, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(c.tg.url, "https")+"/s/"+id+"/console/",
		&websocket.DialOptions{HTTPClient: hc, HTTPHeader: hdr})
	if err != nil {
		t.Fatalf("console websocket: %v (%v)", err, resp)
	}
	rfb, err := realtest.NewRFB(websocket.NetConn(context.Background(), ws, websocket.MessageBinary))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rfb.Close() })
	if err := rfb.Update(false); err != nil {
		t.Fatalf("first frame: %v", err)
	}
	ended := make(chan error, 1)
	go func() {
		// Incremental updates block until the desktop changes or the
		// connection ends; only the end is of interest.
		for {
			if err := rfb.Update(true); err != nil {
				ended <- err
				return
			}
		}
	}()
	return ended
}

// waitClosed waits until a viewer's connection ends, at most d after now.
func waitClosed(t *testing.T, what string, ended <-chan error, d time.Duration) {
	t.Helper()
	start := time.Now()
	select {
	case err := <-ended:
		t.Logf("%s: viewer closed after %v (%v)", what, time.Since(start).Round(time.Millisecond), err)
	case <-time.After(d):
		t.Errorf("%s: viewer still open %v later", what, d)
	}
}

// shareLink makes a share link of session id as owner and opens it as
// viewer, whose jar then holds the share cookie. It returns the share id.
func shareLink(t *testing.T, owner, viewer *client, id, mode, ttl string) string {
	t.Helper()
	var sh struct{ ID, URL string }
	if code, body := owner.do("POST", "/api/v1/sessions/"+id+"/shares", map[string]any{"mode": mode, "ttl": ttl}, &sh); code != 201 {
		t.Fatalf("share: %d %s", code, body)
	}
	resp, err := viewer.http.Get(sh.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 303 {
		t.Fatalf("open share link: %d", resp.StatusCode)
	}
	return sh.ID
}

// TestViewersClosedOnRevoke (issue 9 item 11): an open viewer ends within a
// second of the share link it came in by being revoked, of that link
// expiring, and of its session being stopped; on main it kept receiving
// the desktop.
func TestViewersClosedOnRevoke(t *testing.T) {
	var held *heldStop
	tg := startGateway(t, "", func(c *Config) {
		held = &heldStop{Backend: c.Backend, release: make(chan struct{})}
		c.Backend = held
	}, "alice", "bob")
	alice := tg.client().loginToken("alice")
	bob := tg.client().loginCookie("bob")
	s := alice.launch("desktop")

	// Revoked.
	shID := shareLink(t, alice, bob, s.ID, "view", "1h")
	ended := openViewer(t, bob, s.ID)
	if code, body := alice.do("DELETE", "/api/v1/sessions/"+s.ID+"/shares/"+shID, nil, nil); code != 204 {
		t.Fatalf("revoke share: %d %s", code, body)
	}
	waitClosed(t, "share revoked", ended, time.Second)
	if code, _ := bob.do("GET", "/api/v1/sessions/"+s.ID, nil, nil); code != 404 {
		t.Errorf("session through a revoked share: %d, want 404", code)
	}

	// Expired: a 3s link, opened at once, must close by 3s + 1s.
	start := time.Now()
	shareLink(t, alice, bob, s.ID, "control", "3s")
	ended = openViewer(t, bob, s.ID)
	waitClosed(t, "share expired", ended, 4*time.Second-time.Since(start))

	// Token revoked: a viewer that came in by a bearer token.
	script := tg.client()
	var made struct{ Token, ID string }
	if code, body := alice.do("POST", "/api/v1/tokens", map[string]any{"name": "viewer"}, &made); code != 201 {
		t.Fatalf("token: %d %s", code, body)
	}
	script.token = made.Token
	ended = openViewer(t, script, s.ID)
	if code, body := alice.do("DELETE", "/api/v1/tokens/"+made.ID, nil, nil); code != 204 {
		t.Fatalf("revoke token: %d %s", code, body)
	}
	waitClosed(t, "token revoked", ended, time.Second)

	// Stopped: the owner's own viewer ends when the session is stopped,
	// not when the runner has torn it down, which a scheduler may take its
	// time over: the backend's Stop is held until the viewer is closed.
	ended = openViewer(t, alice, s.ID)
	stopped := make(chan int, 1)
	go func() {
		code, _ := alice.do("DELETE", "/api/v1/sessions/"+s.ID, nil, nil)
		stopped <- code
	}()
	waitClosed(t, "session stopped", ended, time.Second)
	close(held.release)
	if code := <-stopped; code != 202 {
		t.Fatalf("stop: %d", code)
	}
}

// heldStop is a backend whose Stop waits until release is closed, as a
// busy scheduler's would.
type heldStop struct {
	backend.Backend
	release chan struct{}
}

func (h *heldStop) Stop(ctx context.Context, id, ref string) error {
	select {
	case <-h.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return h.Backend.Stop(ctx, id, ref)
}

// TestUserRemovedByCLI (issue 9 item 10): `airlock users remove` while the
// gateway runs ends the user's token, login cookie and open viewer at
// once, refuses their launches, and (auth.on_user_removed: stop) stops
// their sessions. On main all of it went on working.
func TestUserRemovedByCLI(t *testing.T) {
	tg := startGateway(t, "", func(c *Config) { c.UserPoll = 100 * time.Millisecond }, "alice", "admin")
	alice := tg.client().loginToken("alice")
	aliceBrowser := tg.client().loginCookie("alice")
	admin := tg.client().loginToken("admin")
	s := alice.launch("desktop")
	ended := openViewer(t, alice, s.ID)

	cfgFile := filepath.Join(t.TempDir(), "airlock.yaml")
	os.WriteFile(cfgFile, fmt.Appendf(nil, "auth:\n  methods:\n    - kind: local\n      file: %s\n", filepath.Join(tg.stateDir, "users")), 0o600)
	out, err := exec.Command(realtest.Binary(t), "users", "remove", "alice", "--config", cfgFile, "--state-dir", tg.stateDir).CombinedOutput()
	if err != nil {
		t.Fatalf("airlock users remove: %v: %s", err, out)
	}
	removed := time.Now()

	// The very next request of each credential is refused: no cache.
	if code, body := alice.do("GET", "/api/v1/me", nil, nil); code != 401 {
		t.Errorf("removed user's token: %d %s, want 401", code, body)
	}
	if code, body := aliceBrowser.do("GET", "/api/v1/me", nil, nil); code != 401 {
		t.Errorf("removed user's login cookie: %d %s, want 401", code, body)
	}
	if code, body := alice.do("POST", "/api/v1/sessions", map[string]any{"profile": "app"}, nil); code != 401 {
		t.Errorf("removed user's launch: %d %s, want 401", code, body)
	}
	waitClosed(t, "user removed", ended, 2*time.Second-time.Since(removed))
	var st sessionOut
	err = realtest.WaitFor(5*time.Second, func() error {
		admin.do("GET", "/api/v1/sessions/"+s.ID, nil, &st)
		if st.State != "stopping" && st.State != "ended" {
			return fmt.Errorf("removed user's session is %s", st.State)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}

	// Adding the name again does not bring the old credentials back.
	out, err = exec.Command("sh", "-c", fmt.Sprintf("echo '%s' | %s users add alice --password-stdin --config %s --state-dir %s",
		testPassword, realtest.Binary(t), cfgFile, tg.stateDir)).CombinedOutput()
	if err != nil {
		t.Fatalf("airlock users add: %v: %s", err, out)
	}
	if code, body := alice.do("GET", "/api/v1/me", nil, nil); code != 401 {
		t.Errorf("old token of a removed and re-added user: %d %s, want 401", code, body)
	}
	if code, body := aliceBrowser.do("GET", "/api/v1/me", nil, nil); code != 401 {
		t.Errorf("old cookie of a removed and re-added user: %d %s, want 401", code, body)
	}
}

// TestDemotedAdmin (issue 9 item 10): an admin demoted with `airlock users
// role NAME user` while the gateway runs loses admin rights on the next
// request of a token or cookie made while they were an admin. On main
// (demoting by editing the file, as it had no role command) the token and
// cookie stayed admin.
func TestDemotedAdmin(t *testing.T) {
	tg := startGateway(t, "", nil, "admin")
	c := tg.client().loginToken("admin")
	browser := tg.client().loginCookie("admin")
	if code, body := c.do("GET", "/api/v1/admin/sessions", nil, nil); code != 200 {
		t.Fatalf("admin endpoint as admin: %d %s", code, body)
	}
	cfgFile := filepath.Join(t.TempDir(), "airlock.yaml")
	os.WriteFile(cfgFile, fmt.Appendf(nil, "auth:\n  methods:\n    - kind: local\n      file: %s\n", filepath.Join(tg.stateDir, "users")), 0o600)
	out, err := exec.Command(realtest.Binary(t), "users", "role", "admin", "user", "--config", cfgFile, "--state-dir", tg.stateDir).CombinedOutput()
	if err != nil {
		t.Fatalf("airlock users role admin user: %v: %s", err, out)
	}
	if code, body := browser.do("GET", "/api/v1/admin/sessions", nil, nil); code != 403 {
		t.Errorf("admin endpoint with a demoted admin's old cookie: %d %s, want 403", code, body)
	}
	if code, body := c.do("GET", "/api/v1/admin/sessions", nil, nil); code != 403 {
		t.Errorf("admin endpoint with a demoted admin's old token: %d %s, want 403", code, body)
	}
	var me struct{ Admin bool }
	if c.do("GET", "/api/v1/me", nil, &me); me.Admin {
		t.Errorf("/me of a demoted admin says admin")
	}
}

// TestLogoutEndsCookie (issue 9 item 10): after logout, a copy of the login
// cookie is refused. On main the signed cookie stayed valid until it
// expired.
func TestLogoutEndsCookie(t *testing.T) {
	tg := startGateway(t, "", func(c *Config) {
		c.Profiles[0].StripPrefix = true // the test app serves its WebSocket at /ws
	}, "alice")
	c := tg.client().loginCookie("alice")
	u, _ := url.Parse(tg.url)
	// An app's WebSocket opened with this login ends with it too.
	s := c.launch("app")
	ended := appViewer(t, c, s)
	var stolen string
	for _, ck := range c.http.Jar.Cookies(u) {
		if ck.Name == loginCookie {
			stolen = ck.Value
		}
	}
	if stolen == "" {
		t.Fatal("no login cookie")
	}
	req, _ := http.NewRequest("POST", tg.url+"/logout", nil)
	req.Header.Set("Origin", tg.url)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 303 {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	waitClosed(t, "logged out", ended, time.Second)
	thief := tg.client()
	thief.http.Jar.SetCookies(u, []*http.Cookie{{Name: loginCookie, Value: stolen}})
	if code, body := thief.do("GET", "/api/v1/me", nil, nil); code != 401 {
		t.Errorf("login cookie replayed after logout: %d %s, want 401", code, body)
	}
	// The app cookie the login obtained is forgotten with it: the app
	// host sends the browser back to the gateway instead of to the app.
	c.reachApps()
	c.http.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	appHost := "https://" + s.ID + ".apps.localhost:" + u.Port()
	if resp, body := c.get(appHost + "/hello"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("app host with the app cookie of a logged-out login: %d %s, want a redirect to sign in", resp.StatusCode, body)
	}
}

// lockStore holds SQLite's write lock on the gateway's database from
// another connection, as an operator's sqlite3 shell or a second process
// would, until the returned func runs.
func lockStore(t *testing.T, stateDir string) (release func()) {
	t.Helper()
	raw, err := sql.Open("sqlite", "file:"+filepath.Join(stateDir, "airlock.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := raw.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(t.Context(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	done := false
	release = func() {
		if !done {
			done = true
			conn.ExecContext(context.Background(), "ROLLBACK")
			conn.Close()
			raw.Close()
		}
	}
	t.Cleanup(release)
	return release
}

// TestStoreLockedIsNotRevoked (issue 9 item 14): with the write lock held
// elsewhere for longer than the busy timeout, a good token and a good
// cookie still work (their lookups only read), a revoked token is still
// refused, and what needs a write (logging in, out) answers 503 "try
// again" rather than pretending. On main the good token got 401 "unknown
// or revoked".
func TestStoreLockedIsNotRevoked(t *testing.T) {
	tg := startGateway(t, "", func(c *Config) {
		c.Store.Close()
		db, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(c.StateDir, "airlock.db"), BusyTimeout: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		c.Store = db
	}, "alice")
	tok := tg.client().loginToken("alice")
	browser := tg.client().loginCookie("alice")
	revoked := tg.client()
	var made struct{ Token, ID string }
	if code, body := tok.do("POST", "/api/v1/tokens", map[string]any{"name": "to revoke"}, &made); code != 201 {
		t.Fatalf("token: %d %s", code, body)
	}
	revoked.token = made.Token
	if code, body := tok.do("DELETE", "/api/v1/tokens/"+made.ID, nil, nil); code != 204 {
		t.Fatalf("revoke: %d %s", code, body)
	}

	release := lockStore(t, tg.stateDir)
	for i := range 3 { // beyond the busy timeout, more than once
		if code, body := tok.do("GET", "/api/v1/me", nil, nil); code != 200 {
			t.Fatalf("good token with the store locked (try %d): %d %s, want 200", i, code, body)
		}
	}
	if code, body := browser.do("GET", "/api/v1/me", nil, nil); code != 200 {
		t.Errorf("good cookie with the store locked: %d %s, want 200", code, body)
	}
	if code, body := revoked.do("GET", "/api/v1/me", nil, nil); code != 401 {
		t.Errorf("revoked token with the store locked: %d %s, want 401", code, body)
	}
	// A login needs a write: 503 with Retry-After, not a false "bad login".
	req, _ := http.NewRequest("POST", tg.url+"/login", strings.NewReader(url.Values{"user": {"alice"}, "password": {testPassword}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", tg.url)
	resp, err := tg.client().http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("login with the store locked: %d (Retry-After %q), want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	release()
	if code, body := tok.do("GET", "/api/v1/me", nil, nil); code != 200 {
		t.Errorf("good token after the lock: %d %s", code, body)
	}
	tg.client().loginCookie("alice")
}

// faultyStore is a store whose lookup named in fail fails, as a store
// that is down or locked beyond its busy timeout does.
type faultyStore struct {
	store.Store
	fail atomic.Value // string: the method that fails; "" none
}

var errStoreDown = errors.New("database is locked (5)")

func (f *faultyStore) failing(method string) bool {
	m, _ := f.fail.Load().(string)
	return m == method
}

func (f *faultyStore) TokenByHash(ctx context.Context, h []byte, now time.Time) (session.Token, error) {
	if f.failing("TokenByHash") {
		return session.Token{}, errStoreDown
	}
	return f.Store.TokenByHash(ctx, h, now)
}

func (f *faultyStore) LoginByHash(ctx context.Context, h []byte) (session.Login, error) {
	if f.failing("LoginByHash") {
		return session.Login{}, errStoreDown
	}
	return f.Store.LoginByHash(ctx, h)
}

func (f *faultyStore) ShareByHash(ctx context.Context, h []byte) (session.Share, error) {
	if f.failing("ShareByHash") {
		return session.Share{}, errStoreDown
	}
	return f.Store.ShareByHash(ctx, h)
}

func (f *faultyStore) GetSession(ctx context.Context, id string) (*session.Session, error) {
	if f.failing("GetSession") {
		return nil, errStoreDown
	}
	return f.Store.GetSession(ctx, id)
}

func (f *faultyStore) GetUser(ctx context.Context, name string) (session.User, error) {
	if f.failing("GetUser") {
		return session.User{}, errStoreDown
	}
	return f.Store.GetUser(ctx, name)
}

// TestStoreFaultIsTryAgain (issue 9 item 14): when the store cannot answer
// a lookup that decides who someone is or what they may reach (token,
// login, user, share link, session), the answer is 503 store_unavailable
// with Retry-After and "try again", never 401, 403 or 404. On main a
// failing token lookup was a 401 "unknown or revoked", a failing share
// lookup a 403 and a failing session lookup in the proxy a 404.
func TestStoreFaultIsTryAgain(t *testing.T) {
	var fs *faultyStore
	tg := startGateway(t, "", func(c *Config) {
		fs = &faultyStore{Store: c.Store}
		c.Store = fs
	}, "alice", "bob")
	alice := tg.client().loginToken("alice")
	bob := tg.client().loginCookie("bob")
	s := alice.launch("app")
	var sh struct{ URL string }
	if code, body := alice.do("POST", "/api/v1/sessions/"+s.ID+"/shares", map[string]any{"mode": "view"}, &sh); code != 201 {
		t.Fatalf("share: %d %s", code, body)
	}
	if resp, err := bob.http.Get(sh.URL); err != nil || resp.StatusCode != 303 {
		t.Fatalf("open share: %v %v", resp, err)
	} else {
		resp.Body.Close() // an unread body holds its connection (and two goroutines) open
	}

	for _, tc := range []struct {
		what, method string
		c            *client
		path         string
	}{
		// The fast path (fastpath.go) asks the store only for what it
		// has not kept: each case starts with nothing kept.
		{"token", "TokenByHash", alice, "/api/v1/me"},
		{"login cookie", "LoginByHash", bob, "/api/v1/me"},
		{"user record", "GetUser", alice, "/api/v1/me"},
		{"proxy session lookup", "GetSession", alice, s.Connect["app"]},
		{"share cookie in the proxy", "ShareByHash", bob, s.Connect["app"]},
		{"share cookie on the session's API", "ShareByHash", bob, "/api/v1/sessions/" + s.ID},
		{"share link page", "ShareByHash", bob, strings.TrimPrefix(sh.URL, tg.url)},
	} {
		fs.fail.Store(tc.method)
		tg.g.fast.forgetAll()
		req, _ := http.NewRequest("GET", tg.url+tc.path, nil)
		if tc.c.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.c.token)
		}
		resp, err := tc.c.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fs.fail.Store("")
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(b), "try again") {
			t.Errorf("%s with %s failing: %d (Retry-After %q) %.200s; want 503, Retry-After, \"try again\"", tc.what, tc.method, resp.StatusCode, resp.Header.Get("Retry-After"), b)
		}
		// With the store back, the same request works.
		resp, err = tc.c.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 400 {
			t.Errorf("%s with the store back: %d", tc.what, resp.StatusCode)
		}
	}
}

// TestRevokeMatching: an event closes exactly the connections whose right
// it takes away, and the onRevoke hooks see every event.
func TestRevokeMatching(t *testing.T) {
	g := &Gateway{log: slog.New(slog.DiscardHandler), now: time.Now}
	var hooked []revokeEvent
	g.onRevoke(func(ev revokeEvent) { hooked = append(hooked, ev) })
	tags := map[string]viewerTag{
		"owner":     {Session: "s-1", Owner: "alice", User: "alice", Token: "t-1", Mode: session.Control},
		"by share":  {Session: "s-1", Owner: "alice", User: "bob", Share: "sh-1", Login: "l-bob", Mode: session.View},
		"other":     {Session: "s-2", Owner: "carol", User: "carol", Login: "l-carol", Mode: session.Control},
		"bob again": {Session: "s-2", Owner: "carol", User: "bob", Share: "sh-2", Login: "l-bob", Mode: session.View},
	}
	for _, tc := range []struct {
		ev     revokeEvent
		closed []string
	}{
		{revokeEvent{Share: "sh-1", Session: "s-1"}, []string{"by share"}},
		{revokeEvent{Session: "s-2"}, []string{"other", "bob again"}},
		{revokeEvent{User: "bob"}, []string{"by share", "bob again"}},
		{revokeEvent{Login: "l-bob"}, []string{"by share", "bob again"}},
		{revokeEvent{User: "alice", Token: "t-1"}, []string{"owner"}},
		{revokeEvent{User: "alice", Token: "t-9"}, nil},
		{revokeEvent{Reason: "nothing named"}, nil},
	} {
		closed := map[string]bool{}
		var untrack []func()
		for name, tag := range tags {
			untrack = append(untrack, g.track(tag, func() { closed[name] = true }))
		}
		n := g.revoke(t.Context(), tc.ev)
		for _, u := range untrack {
			u()
		}
		if n != len(tc.closed) || len(closed) != len(tc.closed) {
			t.Errorf("%+v closed %v (%d), want %v", tc.ev, closed, n, tc.closed)
		}
		for _, name := range tc.closed {
			if !closed[name] {
				t.Errorf("%+v left %q open", tc.ev, name)
			}
		}
	}
	for _, tc := range []struct{ a, b, want time.Time }{
		{time.Time{}, time.Time{}, time.Time{}},
		{time.Unix(5, 0), time.Time{}, time.Unix(5, 0)},
		{time.Time{}, time.Unix(5, 0), time.Unix(5, 0)},
		{time.Unix(5, 0), time.Unix(3, 0), time.Unix(3, 0)},
		{time.Unix(3, 0), time.Unix(5, 0), time.Unix(3, 0)},
	} {
		if got := earliest(tc.a, tc.b); !got.Equal(tc.want) {
			t.Errorf("earliest(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
	if len(hooked) != 6 {
		t.Errorf("hooks saw %d events, want the 6 that name something", len(hooked))
	}
}

// appViewer opens the app session's WebSocket (/ws of the test app) as c
// and returns a channel that receives the error it ends with.
func appViewer(t *testing.T, c *client, s sessionOut) <-chan error {
	t.Helper()
	hdr := http.Header{}
	if c.token != "" {
		hdr.Set("Authorization", "Bearer "+c.token)
	}
	// A browser login is sent through the app host's sign-in (redirects
	// the client follows); *.localhost is dialled on loopback, as browsers do.
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if host, port, err := net.SplitHostPort(addr); err == nil && strings.HasSuffix(host, ".localhost") {
			addr = net.JoinHostPort("127.0.0.1", port)
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	hc := &http.Client{Jar: c.http.Jar, Transport: tr}
	ws, _, err := websocket.Dial(t.Context(), "wss"+strings.TrimPrefix(c.tg.url, "https")+s.Connect["app"]+"ws", &websocket.DialOptions{HTTPClient: hc, HTTPHeader: hdr})
	if err != nil {
		t.Fatalf("app websocket: %v", err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	ended := make(chan error, 1)
	go func() {
		for {
			if _, _, err := ws.Read(context.Background()); err != nil {
				ended <- err
				return
			}
		}
	}()
	return ended
}

// TestRevokedElsewhereClosesViewers (issue 9 item 11): a share link, token
// or login revoked by another gateway on the same database (here: a second
// store on the same SQLite file) closes this gateway's open connections
// within its recheck interval, though it never saw the event.
func TestRevokedElsewhereClosesViewers(t *testing.T) {
	const every = 300 * time.Millisecond
	tg := startGateway(t, "", func(c *Config) {
		c.RecheckEvery = every
		c.Profiles[0].StripPrefix = true // the test app serves its WebSocket at /ws
	}, "alice", "bob")
	other, err := sqlite.Open(t.Context(), sqlite.Config{Path: filepath.Join(tg.stateDir, "airlock.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	alice := tg.client().loginToken("alice")
	bob := tg.client().loginCookie("bob")
	s := alice.launch("app")

	var sh struct{ ID, URL string }
	if code, body := alice.do("POST", "/api/v1/sessions/"+s.ID+"/shares", map[string]any{"mode": "control"}, &sh); code != 201 {
		t.Fatalf("share: %d %s", code, body)
	}
	if resp, err := bob.http.Get(sh.URL); err != nil || resp.StatusCode != 303 {
		t.Fatalf("open share: %v %v", resp, err)
	} else {
		resp.Body.Close() // an unread body holds its connection (and two goroutines) open
	}
	ended := appViewer(t, bob, s)
	if err := other.RevokeShare(t.Context(), s.ID, sh.ID); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, "share revoked elsewhere", ended, every+time.Second)

	script := tg.client()
	var made struct{ Token, ID string }
	if code, body := alice.do("POST", "/api/v1/tokens", map[string]any{"name": "elsewhere"}, &made); code != 201 {
		t.Fatalf("token: %d %s", code, body)
	}
	script.token = made.Token
	ended = appViewer(t, script, s)
	if err := other.RevokeToken(t.Context(), "alice", made.ID); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, "token revoked elsewhere", ended, every+time.Second)

	bobsOwn := bob.launch("app")
	ended = appViewer(t, bob, bobsOwn)
	u, _ := url.Parse(tg.url)
	// The app cookie the login asked for (the viewer's sign-in left it in
	// the jar) opens the app host; once the login is gone, it must not.
	appHost := "https://" + bobsOwn.ID + ".apps.localhost:" + u.Port() + "/x"
	if resp, body := bob.reachApps().get(appHost); resp.StatusCode != 200 {
		t.Fatalf("the app cookie before the logout: %d %s", resp.StatusCode, body)
	}
	var cookie string
	for _, ck := range bob.http.Jar.Cookies(u) {
		if ck.Name == loginCookie {
			cookie = ck.Value
		}
	}
	l, err := other.LoginByHash(t.Context(), sha256Sum(cookie))
	if err != nil {
		t.Fatal(err)
	}
	if err := other.DeleteLogin(t.Context(), l.ID); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, "logged out elsewhere", ended, every+time.Second)
	if err := realtest.WaitFor(every+time.Second, func() error {
		if resp, _ := bob.get(appHost); resp.StatusCode != http.StatusSeeOther {
			return fmt.Errorf("%d, want 303 back to the gateway", resp.StatusCode)
		}
		return nil
	}); err != nil {
		t.Fatalf("the app cookie after a logout elsewhere: %v", err)
	}
}
