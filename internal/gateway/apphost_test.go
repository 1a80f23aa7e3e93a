package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store/sqlite"
	"github.com/coder/websocket"
)

// reachApps lets c's HTTP client reach app hosts: every *.localhost name
// is dialled on 127.0.0.1, as browsers do.
func (c *client) reachApps() *client {
	tr := c.http.Transport.(*http.Transport)
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if host, port, err := net.SplitHostPort(addr); err == nil && strings.HasSuffix(host, ".localhost") {
			addr = net.JoinHostPort("127.0.0.1", port)
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	return c
}

// get sends a GET to an absolute URL and returns the answer, body read.
func (c *client) get(u string) (*http.Response, string) {
	c.t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	return c.send(req)
}

func (c *client) send(req *http.Request) (*http.Response, string) {
	c.t.Helper()
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// signIn goes through the app handshake for session id as a browser does:
// GET /s/ID/app/PATH on the gateway (login cookie), the redirect to the
// app host's /_airlock/auth, the redirect to PATH. It returns the app
// host's base URL and the handshake URL (to try replaying it).
func (c *client) signIn(id, path string) (base, auth string) {
	c.t.Helper()
	resp, body := c.get(c.tg.url + "/s/" + id + "/app" + path)
	if resp.StatusCode != 303 {
		c.t.Fatalf("GET /s/%s/app%s: %d %s, want 303 to the app host", id, path, resp.StatusCode, body)
	}
	auth = resp.Header.Get("Location")
	u, err := url.Parse(auth)
	if err != nil || u.Scheme != "https" || u.Hostname() != id+".apps.localhost" || u.Path != "/_airlock/auth" || u.Query().Get("next") != path {
		c.t.Fatalf("handshake redirect %q", auth)
	}
	base = "https://" + u.Host
	resp, body = c.get(auth)
	if resp.StatusCode != 303 || resp.Header.Get("Location") != path {
		c.t.Fatalf("redeem: %d %q %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	return base, auth
}

// appSaw is what the probe app reports.
type appSaw map[string]string

func decodeSaw(t *testing.T, body string) appSaw {
	t.Helper()
	var s appSaw
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("not the app's answer: %v: %q", err, body)
	}
	return s
}

// TestAppOwnOrigin: a web app is served on a host of its own, reached
// through the handshake; the app host serves nothing of the gateway's;
// codes are single-use and bound to their host; app cookies are bound to
// their session and follow the share they came through.
func TestAppOwnOrigin(t *testing.T) {
	tg := startGateway(t, "", nil, "alice", "bob")
	alice := tg.client().loginCookie("alice").reachApps()
	s := tg.client().loginToken("alice").launch("app")

	base, auth := alice.signIn(s.ID, "/hello?x=1")
	var cookie *http.Cookie
	for _, c := range alice.http.Jar.Cookies(&url.URL{Scheme: "https", Host: strings.TrimPrefix(base, "https://")}) {
		if c.Name == appCookie {
			cookie = c
		}
	}
	if cookie == nil {
		t.Fatal("no app cookie after the handshake")
	}
	// The code was spent: replayed, by anyone, it is refused.
	resp, _ := tg.client().reachApps().get(auth)
	if resp.StatusCode != 400 {
		t.Errorf("replayed code: %d, want 400", resp.StatusCode)
	}

	t.Run("app reached on its own host", func(t *testing.T) {
		resp, body := alice.get(base + "/hello?x=1")
		if resp.StatusCode != 200 {
			t.Fatalf("app: %d %s", resp.StatusCode, body)
		}
		saw := decodeSaw(t, body)
		if saw["path"] != "/hello" || saw["query"] != "x=1" || !strings.HasPrefix(saw["host"], s.ID+".apps.localhost:") {
			t.Fatalf("app saw %v", saw)
		}
		if strings.Contains(saw["cookie"], "airlock") || saw["authorization"] != "" {
			t.Fatalf("the app saw airlock's cookies or a credential: %v", saw)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); csp != "" {
			t.Errorf("the gateway's CSP %q on an app answer", csp)
		}
	})
	t.Run("cookie attributes", func(t *testing.T) {
		c := tg.client().loginCookie("alice").reachApps()
		resp, _ := c.get(tg.url + "/s/" + s.ID + "/app/")
		resp, _ = c.get(resp.Header.Get("Location"))
		sc := resp.Header.Get("Set-Cookie")
		for _, want := range []string{appCookie + "=", "Path=/", "HttpOnly", "Secure", "SameSite=Lax"} {
			if !strings.Contains(sc, want) {
				t.Errorf("Set-Cookie %q lacks %s", sc, want)
			}
		}
		if strings.Contains(strings.ToLower(sc), "domain=") {
			t.Errorf("Set-Cookie %q has a Domain: not host-only", sc)
		}
	})
	t.Run("the app host serves nothing of the gateway's", func(t *testing.T) {
		for _, p := range []string{"/api/v1/me", "/api/v1/tokens", "/login", "/static/app.css", "/sessions/" + s.ID, "/admin"} {
			resp, body := alice.get(base + p)
			if resp.StatusCode != 200 || decodeSaw(t, body)["path"] != p {
				t.Errorf("%s on the app host: %d %s; want the app's own answer", p, resp.StatusCode, body)
			}
		}
		// The login cookie, were a client to send it there, is not
		// believed and does not reach the app.
		anon := tg.client().reachApps()
		req, _ := http.NewRequest("GET", base+"/api/v1/me", nil)
		for _, c := range alice.http.Jar.Cookies(&url.URL{Scheme: "https", Host: strings.TrimPrefix(tg.url, "https://")}) {
			req.AddCookie(c)
		}
		resp, _ := anon.send(req)
		if resp.StatusCode != 303 || !strings.HasPrefix(resp.Header.Get("Location"), tg.url+"/s/"+s.ID+"/app/api/v1/me") {
			t.Errorf("the gateway's login cookie on the app host: %d %q, want 303 to the gateway", resp.StatusCode, resp.Header.Get("Location"))
		}
		req, _ = http.NewRequest("POST", base+"/api/v1/tokens", strings.NewReader("{}"))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tg.client().loginToken("alice").token)
		if resp, _ := anon.send(req); resp.StatusCode != 401 {
			t.Errorf("POST with a gateway token on the app host: %d, want 401", resp.StatusCode)
		}
		if resp, _ := alice.get(base + "/_airlock/other"); resp.StatusCode != 404 {
			t.Errorf("/_airlock/other: %d, want 404", resp.StatusCode)
		}
		// An unknown session's host sends the browser to the gateway,
		// which knows no such session.
		other := strings.Replace(base, s.ID, "s-000000000000", 1)
		resp, _ = alice.get(other + "/x")
		if loc := resp.Header.Get("Location"); resp.StatusCode != 303 || loc != tg.url+"/s/s-000000000000/app/x" {
			t.Fatalf("unknown session's host: %d %q", resp.StatusCode, loc)
		}
		if resp, body := alice.get(tg.url + "/s/s-000000000000/app/x"); resp.StatusCode != 404 {
			t.Errorf("unknown session at the gateway: %d %s", resp.StatusCode, body)
		}
		for _, host := range []string{"apps.localhost", "x.y.apps.localhost", "evil.apps.localhost"} {
			if resp, _ := alice.get(strings.Replace(base, s.ID+".apps.localhost", host, 1) + "/"); resp.StatusCode != 404 {
				t.Errorf("%s: %d, want 404", host, resp.StatusCode)
			}
		}
	})
	t.Run("forged codes", func(t *testing.T) {
		anon := tg.client().reachApps()
		for _, code := range []string{"", "x", "abc.def", strings.Repeat("A", 12) + "." + strings.Repeat("B", 32)} {
			resp, body := anon.get(base + "/_airlock/auth?code=" + url.QueryEscape(code) + "&next=/")
			if resp.StatusCode != 400 || resp.Header.Get("Set-Cookie") != "" {
				t.Errorf("code %q: %d %s", code, resp.StatusCode, body)
			}
		}
		// A good code, on another session's host.
		resp, _ := alice.get(tg.url + "/s/" + s.ID + "/app/")
		u, _ := url.Parse(resp.Header.Get("Location"))
		u.Host = strings.Replace(u.Host, s.ID, "s-000000000000", 1)
		resp, body := anon.get(u.String())
		if resp.StatusCode != 403 || resp.Header.Get("Set-Cookie") != "" {
			t.Errorf("code on another host: %d %s", resp.StatusCode, body)
		}
		// The id part right, the secret wrong: refused, and the code is
		// still good for its owner.
		resp, _ = alice.get(tg.url + "/s/" + s.ID + "/app/")
		good := resp.Header.Get("Location")
		gu, _ := url.Parse(good)
		pub, _, _ := strings.Cut(gu.Query().Get("code"), ".")
		if resp, _ := anon.get(base + "/_airlock/auth?code=" + pub + "." + strings.Repeat("A", 32)); resp.StatusCode != 400 {
			t.Errorf("wrong secret: %d", resp.StatusCode)
		}
		if resp, _ := anon.get(good); resp.StatusCode != 303 {
			t.Errorf("the real code after a wrong guess: %d", resp.StatusCode)
		}
	})
	t.Run("open redirect after the handshake", func(t *testing.T) {
		for _, next := range []string{"//evil.example/", "/\\evil.example", "/\t/evil.example", "https://evil.example/", "/ /evil.example"} {
			resp, _ := alice.get(tg.url + "/s/" + s.ID + "/app/")
			u, _ := url.Parse(resp.Header.Get("Location"))
			q := u.Query()
			q.Set("next", next)
			u.RawQuery = q.Encode()
			resp, _ = alice.get(u.String())
			if loc := resp.Header.Get("Location"); resp.StatusCode != 303 || loc != "/" {
				t.Errorf("next %q: %d Location %q, want /", next, resp.StatusCode, loc)
			}
		}
	})
	t.Run("another user's app cookie", func(t *testing.T) {
		// Mallory holds a good cookie for her own app host; on Alice's it
		// opens nothing.
		value, err := tg.g.appAuth.keep(appGrant{viewerTag: viewerTag{Session: "s-aaaaaaaaaaaa", User: "mallory", Mode: session.Control,
			Expires: time.Now().Add(time.Hour)}, connector: "app", created: time.Now()}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		m := tg.client().reachApps()
		for _, method := range []string{"GET", "POST"} {
			req, _ := http.NewRequest(method, base+"/secret", nil)
			req.AddCookie(&http.Cookie{Name: appCookie, Value: value})
			resp, body := m.send(req)
			if resp.StatusCode == 200 || strings.Contains(body, `"path"`) {
				t.Errorf("%s with another session's cookie: %d %s", method, resp.StatusCode, body)
			}
		}
		// Nor may Mallory, a logged-in user without a share, start a
		// handshake for Alice's session.
		bob := tg.client().loginCookie("bob").reachApps()
		if resp, body := bob.get(tg.url + "/s/" + s.ID + "/app/"); resp.StatusCode != 403 && resp.StatusCode != 404 {
			t.Errorf("handshake for another's session: %d %s", resp.StatusCode, body)
		}
	})
	t.Run("websocket through the app host", func(t *testing.T) {
		ws, _, err := websocket.Dial(t.Context(), "wss"+strings.TrimPrefix(base, "https")+"/ws", &websocket.DialOptions{HTTPClient: alice.http})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer ws.CloseNow()
		if err := ws.Write(t.Context(), websocket.MessageText, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		if _, b, err := ws.Read(t.Context()); err != nil || string(b) != "ping" {
			t.Fatalf("echo: %q %v", b, err)
		}
		// From the app's own page: fine. From another app host of the
		// same site, with the viewer's app cookie: refused.
		own, _, err := websocket.Dial(t.Context(), "wss"+strings.TrimPrefix(base, "https")+"/ws",
			&websocket.DialOptions{HTTPClient: alice.http, HTTPHeader: http.Header{"Origin": {base}}})
		if err != nil {
			t.Fatalf("WebSocket from the app's own origin: %v", err)
		}
		own.CloseNow()
		other := strings.Replace(base, s.ID, "s-0123456789ab", 1)
		_, resp, err := websocket.Dial(t.Context(), "wss"+strings.TrimPrefix(base, "https")+"/ws",
			&websocket.DialOptions{HTTPClient: alice.http, HTTPHeader: http.Header{"Origin": {other}}})
		if err == nil || resp == nil || resp.StatusCode != 403 {
			t.Fatalf("WebSocket from another app host: %v %v, want 403", resp, err)
		}
	})
	t.Run("view share", func(t *testing.T) {
		var share struct{ ID, URL string }
		if code, body := tg.client().loginToken("alice").do("POST", "/api/v1/sessions/"+s.ID+"/shares", map[string]string{"mode": "view"}, &share); code != 201 {
			t.Fatalf("share: %d %s", code, body)
		}
		bob := tg.client().loginCookie("bob").reachApps()
		if resp, _ := bob.get(tg.url + strings.TrimPrefix(share.URL, tg.url)); resp.StatusCode != 303 {
			t.Fatalf("open share: %d", resp.StatusCode)
		}
		bbase, _ := bob.signIn(s.ID, "/x")
		if resp, body := bob.get(bbase + "/x"); resp.StatusCode != 200 {
			t.Fatalf("view share GET: %d %s", resp.StatusCode, body)
		}
		req, _ := http.NewRequest("POST", bbase+"/x", strings.NewReader("a=1"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if resp, _ := bob.send(req); resp.StatusCode != 403 {
			t.Fatalf("view share POST: %d, want 403 from the connector", resp.StatusCode)
		}
		if _, _, err := websocket.Dial(t.Context(), "wss"+strings.TrimPrefix(bbase, "https")+"/ws", &websocket.DialOptions{HTTPClient: bob.http}); err == nil {
			t.Fatal("a view share opened the app's WebSocket")
		}
		// Revoked: Bob's app cookie stops at once.
		if code, _ := tg.client().loginToken("alice").do("DELETE", "/api/v1/sessions/"+s.ID+"/shares/"+share.ID, nil, nil); code != 204 {
			t.Fatal("revoke")
		}
		// The revocation forgot the app cookie: the app host sends Bob
		// back to the gateway, which says why.
		resp, body := bob.get(bbase + "/x")
		if resp.StatusCode != 303 {
			t.Fatalf("after revocation: %d %s, want 303 back to the gateway", resp.StatusCode, body)
		}
		loc, err := url.Parse(resp.Header.Get("Location"))
		if err != nil || loc.Path != "/s/"+s.ID+"/app/x" {
			t.Fatalf("after revocation, sent to %q, want the app's path on the gateway", resp.Header.Get("Location"))
		}
		if resp, body := bob.get(tg.url + loc.RequestURI()); resp.StatusCode != 403 || !strings.Contains(body, "revoked") {
			t.Fatalf("after revocation, at the gateway: %d %s", resp.StatusCode, body)
		}
	})
	t.Run("dropped cookies", func(t *testing.T) {
		if resp, _ := alice.get(base + "/hello"); resp.StatusCode != 200 {
			t.Fatalf("before the revocation: %d, want 200", resp.StatusCode)
		}
		tg.g.revoke(context.Background(), revokeEvent{Reason: "test", User: "alice"})
		if resp, _ := alice.get(base + "/hello"); resp.StatusCode != 303 {
			t.Fatalf("a dropped cookie: %d, want 303 back to the gateway", resp.StatusCode)
		}
	})
}

// TestAppHostShareChecked: an app cookie that came through a share link
// checks the link on every request, for revocations this gateway did not
// see (another gateway on the database): from the store, or from the fast
// path's copy of the record for at most fastTTL (fastpath.go); a store
// fault is "try again", not a revocation, and keeps the cookie.
func TestAppHostShareChecked(t *testing.T) {
	var fs *faultyStore
	tg := startGateway(t, "", func(c *Config) {
		fs = &faultyStore{Store: c.Store}
		c.Store = fs
	}, "alice", "bob")
	other, err := sqlite.Open(t.Context(), sqlite.Config{Path: filepath.Join(tg.stateDir, "airlock.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	alice := tg.client().loginToken("alice")
	s := alice.launch("app")
	var share struct{ ID, URL string }
	if code, body := alice.do("POST", "/api/v1/sessions/"+s.ID+"/shares", map[string]string{"mode": "view"}, &share); code != 201 {
		t.Fatalf("share: %d %s", code, body)
	}
	bob := tg.client().loginCookie("bob").reachApps()
	if resp, _ := bob.get(share.URL); resp.StatusCode != 303 {
		t.Fatalf("open share: %d", resp.StatusCode)
	}
	base, _ := bob.signIn(s.ID, "/x")
	if resp, body := bob.get(base + "/x"); resp.StatusCode != 200 {
		t.Fatalf("through the share: %d %s", resp.StatusCode, body)
	}

	fs.fail.Store("ShareByHash")
	tg.g.fast.forgetAll() // a lookup the cache does not answer
	resp, body := bob.get(base + "/x")
	fs.fail.Store("")
	if resp.StatusCode != 503 {
		t.Errorf("share lookup failing: %d %s, want 503", resp.StatusCode, body)
	}
	if resp, body := bob.get(base + "/x"); resp.StatusCode != 200 {
		t.Fatalf("store back after a fault: %d %s, want 200 (the cookie kept)", resp.StatusCode, body)
	}

	if err := other.RevokeShare(t.Context(), s.ID, share.ID); err != nil {
		t.Fatal(err)
	}
	// Not seen by this gateway: refused once the fast path's copy is
	// older than fastTTL (≤ the 2 s recheck), no later.
	revoked := time.Now()
	if err := realtest.WaitFor(tg.g.fastTTL()+time.Second, func() error {
		// 403 from the request's own check, or 303 when the 2 s recheck
		// forgot the cookie first: either way nothing reaches the app.
		resp, body := bob.get(base + "/x")
		if resp.StatusCode == 403 && strings.Contains(body, "revoked") || resp.StatusCode == 303 {
			return nil
		}
		return fmt.Errorf("share revoked elsewhere: %d %s, want 403 revoked", resp.StatusCode, body)
	}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(revoked); took > tg.g.fastTTL()+500*time.Millisecond {
		t.Fatalf("share revoked elsewhere refused after %s, want within fastTTL %s", took, tg.g.fastTTL())
	}
	// The cookie is forgotten: back to the gateway, which refuses.
	if resp, body := bob.get(base + "/x"); resp.StatusCode != 303 {
		t.Fatalf("after the refusal: %d %s, want 303 back to the gateway", resp.StatusCode, body)
	}
}

// TestAppCodeExpiry: a code is good for 30 seconds, once.
func TestAppCodeExpiry(t *testing.T) {
	var a appAuth
	now := time.Now()
	code, err := a.mint(appGrant{viewerTag: viewerTag{Session: "s-0123456789ab", User: "alice"}, created: now}, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.redeem(code, "s-0123456789ab", now.Add(appCodeTTL)); err != errCodeExpired {
		t.Fatalf("after %s: %v, want expired", appCodeTTL, err)
	}
	if _, err := a.redeem(code, "s-0123456789ab", now); err != errCodeUnknown {
		t.Fatalf("again: %v, want unknown (spent)", err)
	}
}

// TestAppNext: the redirect after the handshake stays on the app host.
func TestAppNext(t *testing.T) {
	for next, want := range map[string]string{
		"/a/b?c=d": "/a/b?c=d", "": "/", "a": "/", "//evil.example": "/", "/\\evil.example": "/",
		"/\t/evil.example": "/", "/\n/evil": "/", "https://evil.example/": "/", "/ok%2F%2Fx": "/ok%2F%2Fx",
		"/x\\y": "/", "/ /evil": "/",
	} {
		if got := appNext(next); got != want {
			t.Errorf("appNext(%q) = %q, want %q", next, got, want)
		}
	}
}

// FuzzAppNext: whatever next is, the browser stays on the app host.
func FuzzAppNext(f *testing.F) {
	for _, s := range []string{"/", "//x", "/\\x", "/\t/x", "/a?b#c", "https://x/"} {
		f.Add(s)
	}
	base, _ := url.Parse("https://s-0123456789ab.apps.localhost:8443/now")
	f.Fuzz(func(t *testing.T, next string) {
		got := appNext(next)
		// What a browser does with a Location: drop tabs and newlines,
		// read backslashes as slashes, resolve against the page.
		clean := strings.NewReplacer("\t", "", "\n", "", "\r", "", "\\", "/").Replace(got)
		u, err := base.Parse(clean)
		if err != nil {
			return
		}
		if u.Host != base.Host || u.Scheme != "https" {
			t.Fatalf("appNext(%q) = %q leads to %s", next, got, u)
		}
	})
}

// TestAppHostLabel: only session IDs under the apps domain are app hosts.
// TestGatewayURL: an app host sends visitors to the public URL, else to the
// listen host on the port the visitor came in by (the same listener).
func TestGatewayURL(t *testing.T) {
	for _, c := range []struct{ listen, public, host, want string }{
		{"127.0.0.1:8443", "", "s-0123456789ab.apps.localhost:40123", "https://127.0.0.1:40123"},
		{"127.0.0.1:0", "", "s-0123456789ab.apps.localhost:443", "https://127.0.0.1"},
		{"[::1]:8443", "", "s-0123456789ab.apps.localhost", "https://[::1]"},
		{"[::1]:8443", "", "s-0123456789ab.apps.localhost:8443", "https://[::1]:8443"},
		{"127.0.0.1:8443", "https://gw.example/airlock/", "s-0123456789ab.apps.example:8443", "https://gw.example/airlock"},
	} {
		g := &Gateway{cfg: Config{PublicURL: c.public}, listenHost: listenHost(c.listen)}
		if got := g.gatewayURL(&http.Request{Host: c.host}); got != c.want {
			t.Errorf("listen %s, public_url %q, Host %s: %s, want %s", c.listen, c.public, c.host, got, c.want)
		}
	}
}

func TestAppHostLabel(t *testing.T) {
	g := &Gateway{cfg: Config{Apps: Apps{Domain: "apps.localhost"}}}
	for host, want := range map[string]struct {
		id    string
		under bool
	}{
		"s-0123456789ab.apps.localhost:8443": {"s-0123456789ab", true},
		"S-0123456789AB.apps.localhost.":     {"s-0123456789ab", true},
		"apps.localhost":                     {"", true},
		"x.s-0123456789ab.apps.localhost":    {"", true},
		"s-0123456789ab.apps.localhost.evil": {"", false},
		"127.0.0.1:8443":                     {"", false},
		"localhost":                          {"", false},
		"s-0123456789abc.apps.localhost":     {"", true},
	} {
		id, under := g.appHostLabel(host)
		if id != want.id || under != want.under {
			t.Errorf("%q: %q %v, want %q %v", host, id, under, want.id, want.under)
		}
	}
	for range 1000 {
		if id := newID(); !validSessionID(id) {
			t.Fatalf("newID made %q, not a lower-case DNS label", id)
		}
	}
}

// TestAppForms: the app path passes every method, content type and body
// size, streamed: forms, a multipart upload of several MiB (the app gets
// the exact bytes), PUT, DELETE and PATCH with odd content types, on the
// app host and for scripts with a token on the gateway's origin.
func TestAppForms(t *testing.T) {
	tg := startGateway(t, "", nil, "alice")
	tok := tg.client().loginToken("alice")
	s := tok.launch("app")
	alice := tg.client().loginCookie("alice").reachApps()
	base, _ := alice.signIn(s.ID, "/")

	upload := make([]byte, 6<<20+123)
	for i := range upload {
		upload[i] = byte(i*7 + i>>13)
	}
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	mw.WriteField("title", "results")
	fw, _ := mw.CreateFormFile("file", "data.bin")
	fw.Write(upload)
	mw.Close()

	type send struct {
		method, ctype string
		body          []byte
	}
	cases := map[string]send{
		"urlencoded form": {"POST", "application/x-www-form-urlencoded", []byte("a=1&b=two+words&c=%E2%9C%93")},
		"multipart":       {"POST", mw.FormDataContentType(), mp.Bytes()},
		"PUT csv":         {"PUT", "text/csv; charset=latin1", []byte("a,b\n1,2\n")},
		"PATCH odd":       {"PATCH", "application/x-odd+thing; v=\"1 2\"", []byte{0, 1, 2, 255}},
		"DELETE none":     {"DELETE", "", nil},
		"POST plain":      {"POST", "text/plain", []byte("hello")},
	}
	for name, c := range cases {
		sum := sha256.Sum256(c.body)
		for _, via := range []string{"app host", "token on the gateway"} {
			t.Run(name+" via "+via, func(t *testing.T) {
				var req *http.Request
				cl := alice
				if via == "app host" {
					req, _ = http.NewRequest(c.method, base+"/upload", bytes.NewReader(c.body))
				} else {
					cl = tok
					req, _ = http.NewRequest(c.method, tg.url+"/s/"+s.ID+"/app/upload", bytes.NewReader(c.body))
					req.Header.Set("Authorization", "Bearer "+tok.token)
				}
				if c.ctype != "" {
					req.Header.Set("Content-Type", c.ctype)
				}
				resp, body := cl.send(req)
				if resp.StatusCode != 200 {
					t.Fatalf("%d %s", resp.StatusCode, body)
				}
				saw := decodeSaw(t, body)
				if saw["method"] != c.method || saw["content_type"] != c.ctype || saw["path"] != "/upload" ||
					saw["body_sha256"] != hex.EncodeToString(sum[:]) || saw["body_len"] != strconv.Itoa(len(c.body)) {
					t.Fatalf("the app saw %v", saw)
				}
			})
		}
	}
}

// TestAppSameOriginOptIn: with apps.same_origin the app is served under
// /s/ID/app/ on the gateway's origin, every answer sandboxed by CSP, and
// forms pass; there are no app hosts.
func TestAppSameOriginOptIn(t *testing.T) {
	tg := startGateway(t, "", func(c *Config) { c.Apps.SameOrigin = true }, "alice")
	s := tg.client().loginToken("alice").launch("app")
	alice := tg.client().loginCookie("alice").reachApps()
	resp, body := alice.get(tg.url + "/s/" + s.ID + "/app/hello")
	if resp.StatusCode != 200 || decodeSaw(t, body)["path"] != "/s/"+s.ID+"/app/hello" {
		t.Fatalf("app on the gateway's origin: %d %s", resp.StatusCode, body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); csp != sandboxCSP {
		t.Fatalf("CSP %q, want %q", csp, sandboxCSP)
	}
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	mw.WriteField("a", "b")
	mw.Close()
	req, _ := http.NewRequest("POST", tg.url+"/s/"+s.ID+"/app/form", bytes.NewReader(mp.Bytes()))
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, body = alice.send(req)
	if resp.StatusCode != 200 || decodeSaw(t, body)["method"] != "POST" || resp.Header.Get("Content-Security-Policy") != sandboxCSP {
		t.Fatalf("form POST: %d %s", resp.StatusCode, body)
	}
	if resp, _ := alice.get("https://" + s.ID + ".apps.localhost" + strings.TrimPrefix(tg.url, "https://127.0.0.1") + "/hello"); resp.StatusCode != 404 {
		t.Fatalf("an app host with same_origin: %d, want 404", resp.StatusCode)
	}
}

// TestAppForScripts: a script's bearer token reaches the app on the
// gateway's origin (browsers never send one by themselves), with a CSP
// that runs nothing should a browser render the answer.
func TestAppForScripts(t *testing.T) {
	tg := startGateway(t, "", nil, "alice")
	c := tg.client().loginToken("alice")
	s := c.launch("app")
	req, _ := http.NewRequest("GET", tg.url+"/s/"+s.ID+"/app/x", nil)
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, body := c.send(req)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Security-Policy") != "sandbox" {
		t.Fatalf("%d CSP %q %s", resp.StatusCode, resp.Header.Get("Content-Security-Policy"), body)
	}
}

// FuzzAppHostLabel: a Host header is an app host's only if it names a
// session ID, which is a lower-case DNS label, under the apps domain.
func FuzzAppHostLabel(f *testing.F) {
	for _, s := range []string{"s-0123456789ab.apps.localhost:8443", "apps.localhost", "127.0.0.1:8443", "a.b.apps.localhost", "S-0123456789AB.APPS.LOCALHOST."} {
		f.Add(s)
	}
	g := &Gateway{cfg: Config{Apps: Apps{Domain: "apps.localhost"}}}
	f.Fuzz(func(t *testing.T, host string) {
		id, under := g.appHostLabel(host)
		if id != "" && (!under || !validSessionID(id) || strings.ToLower(id) != id || strings.ContainsAny(id, ".:/")) {
			t.Fatalf("%q: id %q under %v", host, id, under)
		}
	})
}

// TestSelfSignedCoversApps: the self-signed certificate names the app
// hosts, and one made before them is replaced.
func TestSelfSignedCoversApps(t *testing.T) {
	dir := t.TempDir()
	old, err := loadOrMakeTLS("", "", dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if old.Leaf.VerifyHostname("s-0123456789ab.apps.localhost") == nil {
		t.Fatal("a certificate made without an apps domain covers it")
	}
	c, err := loadOrMakeTLS("", "", dir, "apps.localhost")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"s-0123456789ab.apps.localhost", "localhost", "127.0.0.1"} {
		if err := c.Leaf.VerifyHostname(h); err != nil {
			t.Errorf("%s: %v", h, err)
		}
	}
	again, err := loadOrMakeTLS("", "", dir, "apps.localhost")
	if err != nil || !bytes.Equal(again.Certificate[0], c.Certificate[0]) {
		t.Fatalf("the certificate was not kept: %v", err)
	}
}

// TestTossedCookiesIgnored: an app host under the same parent domain as
// the gateway can set a cookie with Domain= for the gateway (cookie
// tossing), e.g. its owner's own login, to have a viewer act as the owner.
// The gateway's cookies carry the __Host- prefix, which browsers never
// accept with a Domain; a cookie of the old, unprefixed name is no login.
func TestTossedCookiesIgnored(t *testing.T) {
	tg := startGateway(t, "", nil, "alice")
	alice := tg.client().loginCookie("alice")
	var login *http.Cookie
	for _, c := range alice.http.Jar.Cookies(&url.URL{Scheme: "https", Host: strings.TrimPrefix(tg.url, "https://")}) {
		if strings.Contains(c.Name, "airlock_login") {
			login = c
		}
	}
	if login == nil || !strings.HasPrefix(login.Name, "__Host-") {
		t.Fatalf("login cookie %v: want a __Host- name", login)
	}
	// What a tossing app host can plant: the same value under a name
	// without the prefix.
	req, _ := http.NewRequest("GET", tg.url+"/api/v1/me", nil)
	req.AddCookie(&http.Cookie{Name: "airlock_login", Value: login.Value})
	if resp, body := tg.client().send(req); resp.StatusCode != 401 {
		t.Fatalf("an unprefixed login cookie: %d %s, want 401", resp.StatusCode, body)
	}
}

// TestCrossOriginWebSocketRefused: a page of another origin, e.g. an app
// host of the same site (apps.example.org beside airlock.example.org),
// cannot open the viewer's desktop with their login cookie: a WebSocket
// handshake is a GET that CORS does not guard.
func TestCrossOriginWebSocketRefused(t *testing.T) {
	tg := startGateway(t, "", nil, "alice")
	s := tg.client().loginToken("alice").launch("desktop")
	alice := tg.client().loginCookie("alice")
	dial := func(origin string) (int, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		ws, resp, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(tg.url, "https")+"/s/"+s.ID+"/console/",
			&websocket.DialOptions{HTTPClient: alice.http, HTTPHeader: http.Header{"Origin": {origin}}})
		if err == nil {
			ws.CloseNow()
		}
		if resp == nil {
			return 0, err
		}
		return resp.StatusCode, err
	}
	port := tg.url[strings.LastIndexByte(tg.url, ':'):]
	for _, origin := range []string{"https://s-0123456789ab.apps.localhost" + port, "https://evil.example", "null", "http://" + strings.TrimPrefix(tg.url, "https://")} {
		if code, err := dial(origin); err == nil || code != 403 {
			t.Errorf("Origin %s: %d %v, want 403", origin, code, err)
		}
	}
	if code, err := dial(tg.url); err != nil || code != 101 {
		t.Fatalf("the gateway's own origin: %d %v", code, err)
	}
}

// TestAppUploadStreams: a large upload through the app host is streamed,
// not held: the gateway's heap (this process) stays far below the body's
// size while it passes, and the app gets every byte.
func TestAppUploadStreams(t *testing.T) {
	tg := startGateway(t, "", nil, "alice")
	s := tg.client().loginToken("alice").launch("app")
	alice := tg.client().loginCookie("alice").reachApps()
	base, _ := alice.signIn(s.ID, "/")

	const size = 96 << 20
	pr, pw := io.Pipe()
	sent := make(chan string, 1)
	go func() {
		sum := sha256.New()
		defer func() { sent <- hex.EncodeToString(sum.Sum(nil)) }()
		chunk := make([]byte, 64<<10)
		for i := 0; i < size/len(chunk); i++ {
			for j := range chunk {
				chunk[j] = byte(i + j)
			}
			sum.Write(chunk)
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
		pw.Close()
	}()
	var peak uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	start := ms.HeapAlloc
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}
	}()
	req, _ := http.NewRequest("PUT", base+"/big", pr)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, body := alice.send(req)
	close(stop)
	<-sampled
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	saw := decodeSaw(t, body)
	if saw["body_len"] != strconv.Itoa(size) || saw["body_sha256"] != <-sent {
		t.Fatalf("the app saw %v", saw)
	}
	grew := int64(peak) - int64(start)
	t.Logf("heap grew by at most %d KiB while %d MiB passed", grew>>10, size>>20)
	if grew > size/4 {
		t.Fatalf("the heap grew by %d MiB for a %d MiB upload: the body is buffered", grew>>20, size>>20)
	}
}

// TestAppStreamsArrive: an event stream and a chunked answer of unknown
// length pass the gateway and the connector as they are written. The app
// sends a first part and then holds the answer open; the client must read
// that part while the answer is still open.
func TestAppStreamsArrive(t *testing.T) {
	tg := startGateway(t, "", nil, "alice")
	s := tg.client().loginToken("alice").launch("app")
	alice := tg.client().loginCookie("alice").reachApps()
	base, _ := alice.signIn(s.ID, "/")
	for kind, first := range map[string]string{"sse": "data: first", "chunked": "first part"} {
		t.Run(kind, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", base+"/stream/"+kind, nil)
			resp, err := alice.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 || resp.ContentLength != -1 {
				t.Fatalf("status %d, length %d", resp.StatusCode, resp.ContentLength)
			}
			line, err := bufio.NewReader(resp.Body).ReadString('\n')
			if err != nil {
				t.Fatalf("the first part did not arrive while the answer was open: %v (read %q)", err, line)
			}
			if strings.TrimSpace(line) != first {
				t.Fatalf("first line %q, want %q", line, first)
			}
		})
	}
}
