package gateway

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/auth/header"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/coder/websocket"
)

// TestAppSessionThroughAPI: the scripted contract. A token from HTTP Basic,
// a launch, ready with a connect path, the app reached through the proxy
// with the same token and never seeing it, a stop, and the session ended.
func TestAppSessionThroughAPI(t *testing.T) {
	tg := startGateway(t, "", nil, "alice")
	c := tg.client().loginToken("alice")
	s := c.launch("app")
	if s.Owner != "alice" || s.Profile != "app" || s.Connect["app"] != "/s/"+s.ID+"/app/" {
		t.Fatalf("session %+v", s)
	}
	var seen map[string]string
	code, body := c.do("GET", s.Connect["app"]+"hello?x=1", nil, &seen)
	if code != 200 {
		t.Fatalf("proxy: %d %s", code, body)
	}
	// Apps live at "/" of their own host; a script's /s/ID/app/ is cut off.
	if seen["path"] != "/hello" || seen["query"] != "x=1" {
		t.Fatalf("app saw %v", seen)
	}
	if strings.Contains(seen["authorization"], c.token) || strings.Contains(seen["cookie"], "airlock") {
		t.Fatalf("the app saw the user's credentials: %v", seen)
	}
	if code, _ := c.do("DELETE", "/api/v1/sessions/"+s.ID, nil, nil); code != 202 {
		t.Fatalf("delete: %d", code)
	}
	ended := c.waitState(s.ID, "ended")
	if ended.Reason != "stopped by alice" {
		t.Fatalf("reason %q", ended.Reason)
	}
	if code, _ := c.do("GET", s.Connect["app"], nil, nil); code != 409 {
		t.Fatalf("proxy to an ended session: %d, want 409", code)
	}
}

// TestAccessControl tries what an attacker would, each refused.
func TestAccessControl(t *testing.T) {
	tg := startGateway(t, "", func(c *Config) { c.Limits.MaxSessionsPerUser = 1 }, "alice", "mallory")
	alice := tg.client().loginToken("alice")
	mallory := tg.client().loginToken("mallory")
	s := alice.launch("app")

	t.Run("other user's session by API", func(t *testing.T) {
		for _, m := range []string{"GET", "DELETE"} {
			if code, _ := mallory.do(m, "/api/v1/sessions/"+s.ID, nil, nil); code != 404 {
				t.Errorf("%s: %d, want 404", m, code)
			}
		}
		if code, _ := mallory.do("POST", "/api/v1/sessions/"+s.ID+"/shares", map[string]string{"mode": "control"}, nil); code != 404 {
			t.Errorf("share another's session: %d", code)
		}
	})
	t.Run("other user's session by proxy", func(t *testing.T) {
		// 404, as for an id nobody has: see TestSessionIDsCannotBeProbed.
		if code, body := mallory.do("GET", "/s/"+s.ID+"/app/", nil, nil); code != 404 {
			t.Errorf("proxy: %d %s, want 404", code, body)
		}
	})
	t.Run("no credentials", func(t *testing.T) {
		anon := tg.client()
		if code, _ := anon.do("GET", "/api/v1/sessions", nil, nil); code != 401 {
			t.Errorf("list: %d", code)
		}
		if code, _ := anon.do("GET", "/s/"+s.ID+"/app/", nil, nil); code != 401 {
			t.Errorf("proxy: %d", code)
		}
	})
	t.Run("forged cookie", func(t *testing.T) {
		c := tg.client()
		req, _ := http.NewRequest("GET", tg.url+"/api/v1/me", nil)
		req.AddCookie(&http.Cookie{Name: loginCookie, Value: "v1.eyJ1c2VyIjoiYWxpY2UifQ.AAAA"})
		resp, err := c.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("forged cookie: %d", resp.StatusCode)
		}
	})
	t.Run("bad token", func(t *testing.T) {
		c := tg.client()
		c.token = "alk_not-a-real-token"
		if code, _ := c.do("GET", "/api/v1/me", nil, nil); code != 401 {
			t.Errorf("bad token: %d", code)
		}
	})
	t.Run("missing CSRF protection", func(t *testing.T) {
		c := tg.client().loginCookie("alice")
		req, _ := http.NewRequest("DELETE", tg.url+"/api/v1/sessions/"+s.ID, nil)
		req.Header.Set("Origin", "https://evil.example")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		resp, err := c.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 403 {
			t.Errorf("cross-site DELETE with the login cookie: %d, want 403", resp.StatusCode)
		}
		var got sessionOut
		alice.do("GET", "/api/v1/sessions/"+s.ID, nil, &got)
		if got.State != "ready" {
			t.Errorf("session is %s after a refused cross-site DELETE", got.State)
		}
	})
	t.Run("form post to the API", func(t *testing.T) {
		c := tg.client().loginCookie("alice")
		req, _ := http.NewRequest("POST", tg.url+"/api/v1/sessions", strings.NewReader("profile=app"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		resp, err := c.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 415 {
			t.Errorf("form-encoded API call: %d, want 415", resp.StatusCode)
		}
	})
	t.Run("too many sessions", func(t *testing.T) {
		var e struct {
			Error struct{ Code, Message string }
		}
		code, _ := alice.do("POST", "/api/v1/sessions", map[string]any{"profile": "app"}, &e)
		if code != 429 || e.Error.Code != "too_many_sessions" {
			t.Errorf("second session: %d %+v", code, e)
		}
	})
	t.Run("over profile limits", func(t *testing.T) {
		var e struct {
			Error struct{ Code, Message string }
		}
		code, _ := mallory.do("POST", "/api/v1/sessions", map[string]any{"profile": "app", "cpus": 64}, &e)
		if code != 400 || e.Error.Code != "over_limit" {
			t.Errorf("64 cpus: %d %+v", code, e)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		req, _ := http.NewRequest("POST", tg.url+"/api/v1/tokens", nil)
		req.SetBasicAuth("alice", "wrong password")
		resp, err := tg.client().http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("wrong password: %d", resp.StatusCode)
		}
	})
}

// TestLoadLimit: a launch when the node is past its load threshold is
// refused with the reason, and one below it is not. The load is the test's
// own reading, not the machine's: an idle machine reads 0.00, which no
// threshold is below.
func TestLoadLimit(t *testing.T) {
	tg := startGateway(t, "", func(c *Config) { c.Limits.MaxLoad = 0.5 }, "alice")
	var load atomic.Value
	tg.g.readLoad = func() (float64, error) { return load.Load().(float64), nil }
	alice := tg.client().loginToken("alice")
	for _, l := range []float64{0, 0.4} {
		load.Store(l)
		var e struct {
			Error struct{ Code, Message string }
		}
		code, body := alice.do("POST", "/api/v1/sessions", map[string]any{"profile": "app"}, &e)
		if code != 201 {
			t.Fatalf("launch at load %.2f per CPU, limit 0.5: %d %s", l, code, body)
		}
	}
	load.Store(0.75)
	var e struct {
		Error struct{ Code, Message string }
	}
	code, _ := alice.do("POST", "/api/v1/sessions", map[string]any{"profile": "app"}, &e)
	if code != 503 || e.Error.Code != "node_busy" || !strings.Contains(e.Error.Message, "load 0.75") {
		t.Fatalf("launch over the load limit: %d %+v", code, e)
	}
}

// TestShares: a view share lets another user in read-only; an expired or
// revoked share does not.
func TestShares(t *testing.T) {
	tg := startGateway(t, "", nil, "alice", "bob")
	alice := tg.client().loginToken("alice")
	s := alice.launch("app")
	var share struct{ ID, URL, Mode string }
	if code, body := alice.do("POST", "/api/v1/sessions/"+s.ID+"/shares", map[string]string{"mode": "view", "ttl": "2s"}, &share); code != 201 {
		t.Fatalf("share: %d %s", code, body)
	}
	bob := tg.client().loginCookie("bob").reachApps()
	open := func() int {
		resp, err := bob.http.Get(tg.url + strings.TrimPrefix(share.URL, "https://"+strings.TrimPrefix(tg.url, "https://")))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := open(); code != 303 {
		t.Fatalf("open share: %d", code)
	}
	// The app is on its own host, signed in to through the gateway.
	base, _ := bob.signIn(s.ID, "/x")
	app := func(method string) int {
		req, _ := http.NewRequest(method, base+"/x", strings.NewReader("{}"))
		resp, _ := bob.send(req)
		return resp.StatusCode
	}
	if code := app("GET"); code != 200 {
		t.Fatalf("view share GET: %d", code)
	}
	if code := app("POST"); code != 403 {
		t.Fatalf("view share POST reached the app: %d, want 403 from the connector", code)
	}
	// Expired: the share had a 2 s lifetime. The cookie expires with it,
	// and without one the session is not there for bob (404, as for an id
	// nobody has); a cookie kept past its expiry gets 403 share_expired.
	if err := realtest.WaitFor(10*time.Second, func() error {
		if code, _ := bob.do("GET", "/s/"+s.ID+"/app/x", nil, nil); code != 404 && code != 403 {
			return errors.New("the expired share still works")
		}
		return nil
	}); err != nil {
		t.Fatal("expired share still works")
	}
	// The cookie jar drops the share cookie by its Expires, which has
	// whole seconds: up to a second before the share itself expires. So
	// wait for the app host too, with a deadline.
	if err := realtest.WaitFor(5*time.Second, func() error {
		if code := app("GET"); code == 200 {
			return errors.New("the expired share still works on the app host")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Revoked.
	if code, _ := alice.do("POST", "/api/v1/sessions/"+s.ID+"/shares", map[string]string{"mode": "control"}, &share); code != 201 {
		t.Fatal("second share")
	}
	if code := open(); code != 303 {
		t.Fatalf("open share: %d", code)
	}
	base, _ = bob.signIn(s.ID, "/x")
	if code := app("POST"); code != 200 {
		t.Fatalf("control share POST: %d", code)
	}
	if code, _ := alice.do("DELETE", "/api/v1/sessions/"+s.ID+"/shares/"+share.ID, nil, nil); code != 204 {
		t.Fatal("revoke")
	}
	if code := app("GET"); code != 303 {
		t.Fatalf("revoked share on the app host: %d, want 303 (the app cookie is forgotten) back to the gateway", code)
	}
	var e struct{ Error struct{ Code string } }
	if code, _ := bob.do("GET", "/s/"+s.ID+"/app/x", nil, &e); code != 403 || e.Error.Code != "share_revoked" {
		t.Fatalf("revoked share: %d %+v", code, e)
	}
}

// TestRestartKeepsSessions: the gateway restarts with a session running;
// the session is still listed, still ready and still reachable.
func TestRestartKeepsSessions(t *testing.T) {
	tg := startGateway(t, "", nil, "alice")
	c := tg.client().loginToken("alice")
	s := c.launch("app")
	tok := c.token
	tg.stop()

	tg2 := startGateway(t, tg.stateDir, nil)
	c2 := tg2.client()
	c2.token = tok
	got := c2.waitState(s.ID, "ready")
	if code, body := c2.do("GET", got.Connect["app"], nil, nil); code != 200 {
		t.Fatalf("after restart, proxy: %d %s", code, body)
	}
	c2.do("DELETE", "/api/v1/sessions/"+s.ID, nil, nil)
	c2.waitState(s.ID, "ended")
}

// TestRunnerKilled: a runner killed behind the gateway's back is noticed
// within seconds and the session ends with a reason.
func TestRunnerKilled(t *testing.T) {
	tg := startGateway(t, "", nil, "alice")
	c := tg.client().loginToken("alice")
	s := c.launch("app")
	st, err := tg.cfg.Store.GetSession(t.Context(), s.ID)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	var start uint64
	if _, err := fmtSscanf(st.BackendRef, &pid, &start); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	killed := time.Now()
	ended := c.waitState(s.ID, "ended")
	if !strings.Contains(ended.Reason, "runner ended") || time.Since(killed) > 10*time.Second {
		t.Fatalf("after %s: reason %q", time.Since(killed), ended.Reason)
	}
}

func TestMetricsAndAudit(t *testing.T) {
	tg := startGateway(t, "", nil, "alice", "admin")
	tg.client().loginToken("alice").launch("app")
	admin := tg.client().loginToken("admin")
	code, body := admin.do("GET", "/metrics", nil, nil)
	if code != 200 || !strings.Contains(body, `airlock_sessions{state="ready"} 1`) || !strings.Contains(body, "airlock_launches_total 1") {
		t.Fatalf("metrics: %d\n%s", code, body)
	}
	if code, _ := tg.client().loginToken("alice").do("GET", "/metrics", nil, nil); code != 403 {
		t.Fatalf("metrics for a non-admin: %d", code)
	}
	evs, err := tg.cfg.Store.ListAudit(t.Context(), auditAll)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(evs)
	for _, want := range []string{`"action":"launch"`, `"actor":"alice"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("audit log lacks %s: %s", want, b)
		}
	}
}

// TestHeaderLogin: behind a trusted proxy the header names the user; the
// same header from an address that is not a configured proxy is refused.
func TestHeaderLogin(t *testing.T) {
	for _, c := range []struct {
		name    string
		trusted string
		want    int
	}{
		{"trusted proxy", "127.0.0.0/8", 200},
		{"untrusted address", "192.0.2.0/24", 403},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, err := header.New(header.Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix(c.trusted)}})
			if err != nil {
				t.Fatal(err)
			}
			tg := startGateway(t, "", func(cfg *Config) { cfg.Header, cfg.HeaderName = h, "X-Forwarded-User" }, "carol")
			req, _ := http.NewRequest("GET", tg.url+"/api/v1/me", nil)
			req.Header.Set("X-Forwarded-User", "carol")
			resp, err := tg.client().http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var me struct{ User string }
			json.NewDecoder(resp.Body).Decode(&me)
			resp.Body.Close()
			if resp.StatusCode != c.want || (c.want == 200 && me.User != "carol") {
				t.Fatalf("status %d user %q; want %d", resp.StatusCode, me.User, c.want)
			}
			if c.want != 200 {
				return
			}
			// The header never reaches the app inside the session.
			cl := tg.client().loginToken("carol")
			s := cl.launch("app")
			// A browser behind the proxy: the handshake, then the app's
			// own host, where the header is not believed nor passed on.
			req, _ = http.NewRequest("GET", tg.url+s.Connect["app"], nil)
			req.Header.Set("X-Forwarded-User", "carol")
			cl.reachApps()
			for range 3 {
				resp, err = cl.http.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != 303 {
					break
				}
				resp.Body.Close()
				req, _ = http.NewRequest("GET", resp.Request.URL.ResolveReference(&url.URL{Path: resp.Header.Get("Location")}).String(), nil)
				if loc, _ := url.Parse(resp.Header.Get("Location")); loc != nil {
					req, _ = http.NewRequest("GET", resp.Request.URL.ResolveReference(loc).String(), nil)
				}
				req.Header.Set("X-Forwarded-User", "carol")
			}
			var seen map[string]string
			json.NewDecoder(resp.Body).Decode(&seen)
			resp.Body.Close()
			if resp.StatusCode != 200 || seen["x_forwarded_user"] != "" {
				t.Fatalf("status %d; the app saw the identity header: %v", resp.StatusCode, seen)
			}
		})
	}
}

// TestSingleShotAndIdle: a single-shot session ends after its last viewer
// leaves; a session nobody views ends after the profile's idle timeout.
func TestSingleShotAndIdle(t *testing.T) {
	tg := startGateway(t, "", func(c *Config) {
		c.Limits.SingleShotGrace = time.Second
		c.Profiles[0].IdleTimeout = 3 * time.Second
		c.Profiles[0].StripPrefix = true // the test app serves its WebSocket at /ws
	}, "alice")
	c := tg.client().loginToken("alice")

	// Idle: launched, never viewed.
	idle := c.launch("app")
	ended := c.waitState(idle.ID, "ended")
	if !strings.Contains(ended.Reason, "idle") {
		t.Fatalf("idle session ended with %q", ended.Reason)
	}

	// Single-shot: one WebSocket viewer comes and goes.
	var created sessionOut
	if code, body := c.do("POST", "/api/v1/sessions", map[string]any{"profile": "app", "persistent": false}, &created); code != 201 {
		t.Fatalf("launch: %d %s", code, body)
	}
	s := c.waitState(created.ID, "ready")
	hdr := http.Header{"Authorization": {"Bearer " + c.token}}
	ws, _, err := websocket.Dial(t.Context(), "wss"+strings.TrimPrefix(tg.url, "https")+s.Connect["app"]+"ws",
		&websocket.DialOptions{HTTPClient: c.http, HTTPHeader: hdr})
	if err != nil {
		t.Fatalf("viewer: %v", err)
	}
	var st sessionOut
	c.do("GET", "/api/v1/sessions/"+s.ID, nil, &st)
	if st.State != "ready" {
		t.Fatalf("single-shot session with a viewer is %s", st.State)
	}
	ws.Close(websocket.StatusNormalClosure, "")
	ended = c.waitState(s.ID, "ended")
	if !strings.Contains(ended.Reason, "last viewer left") {
		t.Fatalf("single-shot session ended with %q", ended.Reason)
	}
}
