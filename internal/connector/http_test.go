package connector

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/airlock-hpc/airlock/internal/ticket"
)

// appRequest is what the app behind the connector saw of one request.
type appRequest struct {
	method, path, rawQuery, host, body string
	cookie, authorization, xff         string
}

// testApp is a web app for the http connector to proxy to: it records
// every request, echoes WebSocket messages on /ws, and on /setcookie tries
// to set an airlock cookie besides its own.
type testApp struct {
	target string // Config.Target for it
	mu     sync.Mutex
	reqs   []appRequest
}

func startApp(t testing.TB, unix bool) *testApp {
	t.Helper()
	app := &testApp{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		app.mu.Lock()
		app.reqs = append(app.reqs, appRequest{
			method: r.Method, path: r.URL.Path, rawQuery: r.URL.RawQuery, host: r.Host, body: string(body),
			cookie: r.Header.Get("Cookie"), authorization: r.Header.Get("Authorization"), xff: r.Header.Get("X-Forwarded-For"),
		})
		app.mu.Unlock()
		switch r.URL.Path {
		case "/ws":
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			for {
				typ, msg, err := c.Read(r.Context())
				if err != nil {
					return
				}
				if err := c.Write(r.Context(), typ, msg); err != nil {
					return
				}
			}
		case "/setcookie":
			http.SetCookie(w, &http.Cookie{Name: "airlock_s1_c1", Value: "planted"})
			http.SetCookie(w, &http.Cookie{Name: "app", Value: "1"})
		}
		io.WriteString(w, "app:"+r.URL.Path)
	})
	srv := httptest.NewUnstartedServer(h)
	if unix {
		sock := filepath.Join(t.TempDir(), "app.sock")
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		srv.Listener.Close()
		srv.Listener = ln
		app.target = "unix:" + sock
	} else {
		app.target = srv.Listener.Addr().String()
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return app
}

// last returns the last request the app saw.
func (a *testApp) last(t testing.TB) appRequest {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.reqs) == 0 {
		t.Fatal("the app saw no request")
	}
	return a.reqs[len(a.reqs)-1]
}

func (a *testApp) methods() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var m []string
	for _, r := range a.reqs {
		m = append(m, r.method)
	}
	return m
}

// browser is an HTTP client with a cookie jar that does not follow
// redirects, so tests see the 303.
type browser struct {
	*http.Client
	base string // "http://addr" or "https://addr"
	jar  *cookiejar.Jar
	tr   *http.Transport
}

func newBrowser(t testing.TB, addr string, tlsCfg *tls.Config) *browser {
	jar, _ := cookiejar.New(nil)
	tr := &http.Transport{TLSClientConfig: tlsCfg}
	t.Cleanup(tr.CloseIdleConnections)
	base := "http://" + addr
	if tlsCfg != nil {
		base = "https://" + addr
	}
	return &browser{
		Client: &http.Client{
			Transport:     tr,
			Jar:           jar,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Timeout:       5 * time.Second,
		},
		base: base, jar: jar, tr: tr,
	}
}

// do sends a request and returns the response with its body read.
func (b *browser) do(t testing.TB, method, path string, body io.Reader, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, b.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := b.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	return resp, string(text)
}

// login exchanges tok for the connector's cookie and returns the cookie.
func (b *browser) login(t testing.TB, tok string) *http.Cookie {
	t.Helper()
	resp, body := b.do(t, "GET", "/?ticket="+url.QueryEscape(tok), nil, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %s %s, want 303", resp.Status, body)
	}
	for _, c := range resp.Cookies() {
		if c.Name == "airlock_s1_c1" {
			return c
		}
	}
	t.Fatalf("login: no airlock cookie in %q", resp.Header.Values("Set-Cookie"))
	return nil
}

// TestHTTPTicketCookieFlow: a ticket in the URL becomes a cookie and a
// redirect; with the cookie, requests and WebSockets reach the app, which
// never sees the ticket or the airlock cookie but does see its own.
func TestHTTPTicketCookieFlow(t *testing.T) {
	ca := newCA(t, "session CA")
	for _, tc := range []struct {
		name string
		unix bool
		tls  bool
	}{{"tcp", false, false}, {"tcp+tls", false, true}, {"unix", true, false}} {
		t.Run(tc.name, func(t *testing.T) {
			k := newKey(t)
			app := startApp(t, tc.unix)
			logs, logger := newLogSink(t)
			cfg := Config{Kind: KindHTTP, Target: app.target, Key: k, Logger: logger}
			var clientTLS *tls.Config
			if tc.tls {
				cfg.TLS = ca.serverTLS(t)
				clientTLS = ca.clientTLS()
			}
			addr, _ := startConnector(t, cfg)
			b := newBrowser(t, addr, clientTLS)

			tok := mint(t, k, ticket.Control)
			resp, _ := b.do(t, "GET", "/lab/tree?x=1&ticket="+url.QueryEscape(tok)+"&y=a%20b", nil, nil)
			if resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("status %s, want 303", resp.Status)
			}
			loc, err := resp.Location()
			if err != nil {
				t.Fatal(err)
			}
			if loc.Path != "/lab/tree" || loc.RawQuery != "x=1&y=a%20b" {
				t.Fatalf("redirect to %s, want /lab/tree?x=1&y=a%%20b", loc)
			}
			var cookie *http.Cookie
			for _, c := range resp.Cookies() {
				if c.Name == "airlock_s1_c1" {
					cookie = c
				}
			}
			if cookie == nil {
				t.Fatalf("no airlock cookie set: %q", resp.Header.Values("Set-Cookie"))
			}
			if !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/" || cookie.Secure != tc.tls {
				t.Fatalf("cookie %s: want HttpOnly, SameSite=Strict, Path=/, Secure=%v", cookie, tc.tls)
			}
			logs.waitLine(t, `msg="ticket accepted"`, "user=alice", "mode=control", "via=query")

			u, _ := url.Parse(b.base)
			b.jar.SetCookies(u, []*http.Cookie{{Name: "other", Value: "1"}})
			resp, body := b.do(t, "GET", loc.RequestURI(), nil, nil)
			if resp.StatusCode != http.StatusOK || body != "app:/lab/tree" {
				t.Fatalf("got %s %q, want 200 from the app", resp.Status, body)
			}
			seen := app.last(t)
			if seen.rawQuery != "x=1&y=a%20b" {
				t.Errorf("app saw query %q", seen.rawQuery)
			}
			if seen.cookie != "other=1" {
				t.Errorf("app saw cookies %q, want only other=1", seen.cookie)
			}
			if seen.host != addr {
				t.Errorf("app saw Host %q, want the client's %q", seen.host, addr)
			}
			if seen.xff != "127.0.0.1" {
				t.Errorf("app saw X-Forwarded-For %q, want 127.0.0.1", seen.xff)
			}

			// A WebSocket through the proxy, authenticated by the cookie.
			scheme := "ws"
			if tc.tls {
				scheme = "wss"
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, resp, err := websocket.Dial(ctx, scheme+"://"+addr+"/ws", &websocket.DialOptions{
				HTTPClient: &http.Client{Transport: b.tr},
				HTTPHeader: http.Header{"Cookie": {cookie.Name + "=" + cookie.Value + "; other=2"}},
			})
			if err != nil {
				t.Fatalf("WebSocket through the proxy: %v (%s)", err, respText(resp))
			}
			defer c.CloseNow()
			if err := c.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
				t.Fatal(err)
			}
			if _, msg, err := c.Read(ctx); err != nil || string(msg) != "hello" {
				t.Fatalf("echo %q, %v; want hello", msg, err)
			}
			if seen := app.last(t); seen.path != "/ws" || seen.cookie != "other=2" {
				t.Errorf("app saw %s with cookies %q, want /ws with only other=2", seen.path, seen.cookie)
			}
			c.Close(websocket.StatusNormalClosure, "")
			logs.waitLine(t, `msg="upgrade ended"`, "user=alice", "path=/ws")
		})
	}
}

// TestHTTPViewMode: a view ticket may read but not write, and may not
// open WebSockets.
func TestHTTPViewMode(t *testing.T) {
	k := newKey(t)
	app := startApp(t, false)
	logs, logger := newLogSink(t)
	addr, _ := startConnector(t, Config{Kind: KindHTTP, Target: app.target, Key: k, Logger: logger})
	b := newBrowser(t, addr, nil)
	cookie := b.login(t, mint(t, k, ticket.View))

	if resp, body := b.do(t, "GET", "/notebook", nil, nil); resp.StatusCode != 200 {
		t.Fatalf("GET: %s %s", resp.Status, body)
	}
	if resp, body := b.do(t, "HEAD", "/notebook", nil, nil); resp.StatusCode != 200 {
		t.Fatalf("HEAD: %s %s", resp.Status, body)
	}
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH"} {
		resp, body := b.do(t, m, "/api/contents", strings.NewReader("x"), nil)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "view-only") {
			t.Errorf("%s: %s %q, want 403 view-only", m, resp.Status, body)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, "ws://"+addr+"/ws", &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: b.tr},
		HTTPHeader: http.Header{"Cookie": {cookie.Name + "=" + cookie.Value}},
	})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden || !strings.Contains(respText(resp), "view-only") {
		t.Fatalf("WebSocket in view mode: %v %s, want 403 view-only", err, respText(resp))
	}
	if got := app.methods(); !slices.Equal(got, []string{"GET", "HEAD"}) {
		t.Fatalf("app saw methods %v, want only GET and HEAD", got)
	}
	logs.waitLine(t, "msg=refused", "status=403", "mode=view", "method=POST")
}

// TestHTTPRefusals attacks the http connector with missing, bad, replayed
// and swapped credentials.
func TestHTTPRefusals(t *testing.T) {
	k := newKey(t)
	app := startApp(t, false)
	logs, logger := newLogSink(t)
	clock := newTestClock()
	addr, _ := startConnector(t, Config{Kind: KindHTTP, Target: app.target, Key: k, Logger: logger, Now: clock.Now, CookieTTL: time.Hour})

	check := func(t *testing.T, b *browser, path string, header http.Header, status int, reason string) {
		t.Helper()
		resp, body := b.do(t, "GET", path, nil, header)
		if resp.StatusCode != status || !strings.Contains(body, reason) {
			t.Fatalf("GET %s: %s %q, want %d %q", path, resp.Status, body, status, reason)
		}
	}
	q := func(tok string) string { return "/?ticket=" + url.QueryEscape(tok) }

	t.Run("no ticket", func(t *testing.T) {
		check(t, newBrowser(t, addr, nil), "/", nil, 401, "ticket missing")
		logs.waitLine(t, "msg=refused", "status=401", "ticket missing")
	})
	t.Run("empty ticket", func(t *testing.T) {
		check(t, newBrowser(t, addr, nil), "/?ticket=", nil, 401, "ticket missing")
	})
	t.Run("forged ticket", func(t *testing.T) {
		check(t, newBrowser(t, addr, nil), q(mint(t, newKey(t), ticket.Control)), nil, 403, "ticket signature invalid")
	})
	t.Run("other session", func(t *testing.T) {
		tok := mint(t, k, ticket.Control, func(c *ticket.Claims) { c.Session = "s2" })
		check(t, newBrowser(t, addr, nil), q(tok), nil, 403, "not valid for this session")
	})
	t.Run("replayed ticket", func(t *testing.T) {
		tok := mint(t, k, ticket.Control)
		newBrowser(t, addr, nil).login(t, tok)
		check(t, newBrowser(t, addr, nil), q(tok), nil, 403, "ticket already used")
	})
	t.Run("replayed ticket with a good cookie redirects", func(t *testing.T) {
		tok := mint(t, k, ticket.Control)
		b := newBrowser(t, addr, nil)
		b.login(t, tok)
		resp, _ := b.do(t, "GET", "/page?ticket="+url.QueryEscape(tok), nil, nil)
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "./page" {
			t.Fatalf("got %s to %q, want 303 to ./page", resp.Status, loc)
		}
	})
	t.Run("ticket as cookie", func(t *testing.T) {
		// A ticket is signed with the ticket key, a cookie with a key
		// derived from it: a ticket cannot skip the replay guard by
		// posing as a cookie.
		check(t, newBrowser(t, addr, nil), "/", http.Header{"Cookie": {"airlock_s1_c1=" + mint(t, k, ticket.Control)}}, 403, "cookie invalid: ticket signature invalid")
	})
	t.Run("cookie as ticket", func(t *testing.T) {
		// ...and a cookie cannot be spent as a ticket for a fresh cookie.
		c := newBrowser(t, addr, nil).login(t, mint(t, k, ticket.Control))
		check(t, newBrowser(t, addr, nil), q(c.Value), nil, 403, "ticket signature invalid")
	})
	t.Run("expired cookie", func(t *testing.T) {
		b := newBrowser(t, addr, nil)
		c := b.login(t, mint(t, k, ticket.Control))
		check(t, b, "/", http.Header{"Cookie": {c.Name + "=" + c.Value}}, 200, "app:/")
		clock.Advance(time.Hour + time.Second)
		defer clock.Advance(-time.Hour - time.Second)
		check(t, b, "/", http.Header{"Cookie": {c.Name + "=" + c.Value}}, 401, "cookie expired")
	})
	app.mu.Lock()
	defer app.mu.Unlock()
	for _, r := range app.reqs {
		if strings.Contains(r.rawQuery, "ticket") || strings.Contains(r.cookie, "airlock_") {
			t.Errorf("app saw a credential: %+v", r)
		}
	}
}

// TestHTTPBearer: a script may present the ticket as a Bearer header; the
// request goes straight through with its body, the app does not see the
// header, and the response carries the cookie. Once a cookie is held, an
// Authorization header is the app's own and passes through.
func TestHTTPBearer(t *testing.T) {
	k := newKey(t)
	app := startApp(t, false)
	_, logger := newLogSink(t)
	addr, _ := startConnector(t, Config{Kind: KindHTTP, Target: app.target, Key: k, Logger: logger})
	b := newBrowser(t, addr, nil)

	tok := mint(t, k, ticket.Control)
	resp, body := b.do(t, "POST", "/api/run", strings.NewReader("payload"), http.Header{"Authorization": {"Bearer " + tok}})
	if resp.StatusCode != 200 || body != "app:/api/run" {
		t.Fatalf("got %s %q", resp.Status, body)
	}
	seen := app.last(t)
	if seen.body != "payload" || seen.authorization != "" {
		t.Fatalf("app saw body %q, Authorization %q; want payload and none", seen.body, seen.authorization)
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "airlock_s1_c1" {
			cookie = c
		}
	}
	if cookie == nil {
		t.Fatal("no cookie in the response to a Bearer request")
	}
	resp, _ = newBrowser(t, addr, nil).do(t, "GET", "/", nil, http.Header{"Authorization": {"Bearer " + tok}})
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("replayed Bearer ticket: %s, want 403", resp.Status)
	}
	resp, _ = newBrowser(t, addr, nil).do(t, "GET", "/api", nil, http.Header{
		"Cookie":        {cookie.Name + "=" + cookie.Value},
		"Authorization": {"Bearer app-token"},
	})
	if resp.StatusCode != 200 || app.last(t).authorization != "Bearer app-token" {
		t.Fatalf("app's own Authorization: %s, app saw %q", resp.Status, app.last(t).authorization)
	}
}

// TestHTTPAppCannotSetAirlockCookie: an app's Set-Cookie for an airlock
// cookie is dropped; its own cookies pass.
func TestHTTPAppCannotSetAirlockCookie(t *testing.T) {
	k := newKey(t)
	app := startApp(t, false)
	_, logger := newLogSink(t)
	addr, _ := startConnector(t, Config{Kind: KindHTTP, Target: app.target, Key: k, Logger: logger})
	b := newBrowser(t, addr, nil)
	c := b.login(t, mint(t, k, ticket.Control))
	resp, _ := b.do(t, "GET", "/setcookie", nil, http.Header{"Cookie": {c.Name + "=" + c.Value}})
	got := resp.Header.Values("Set-Cookie")
	if len(got) != 1 || !strings.HasPrefix(got[0], "app=1") {
		t.Fatalf("Set-Cookie %q, want only app=1", got)
	}
}

// TestHTTPAppDown: an app that is not listening is a 502.
func TestHTTPAppDown(t *testing.T) {
	k := newKey(t)
	logs, logger := newLogSink(t)
	addr, _ := startConnector(t, Config{Kind: KindHTTP, Target: "unix:" + filepath.Join(t.TempDir(), "none.sock"), Key: k, Logger: logger})
	b := newBrowser(t, addr, nil)
	c := b.login(t, mint(t, k, ticket.Control))
	resp, body := b.do(t, "GET", "/", nil, http.Header{"Cookie": {c.Name + "=" + c.Value}})
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "app not reachable") {
		t.Fatalf("got %s %q, want 502", resp.Status, body)
	}
	logs.waitLine(t, "msg=refused", "status=502", "app not reachable")
}

func TestRedirectWithoutTicket(t *testing.T) {
	for in, want := range map[string]string{
		"/?ticket=T":                     "./",
		"/lab?ticket=T":                  "./lab",
		"/a/b/?x=1&ticket=T":             "./?x=1",
		"/a/b?ticket=T&x=1&ticket=U&y=2": "./b?x=1&y=2",
		"/a/b:c?ticket=T":                "./b:c",
		"/a/%2F?ticket=T&q=%26":          "./%2F?q=%26",
	} {
		r := httptest.NewRequest("GET", in, nil)
		w := httptest.NewRecorder()
		redirectWithoutTicket(w, r)
		if got := w.Header().Get("Location"); got != want {
			t.Errorf("%s: Location %q, want %q", in, got, want)
		}
		// Resolved against the request, it is the same URL less the ticket.
		base, _ := url.Parse("http://h" + in)
		ref, _ := url.Parse(w.Header().Get("Location"))
		res := base.ResolveReference(ref)
		if res.EscapedPath() != base.EscapedPath() || strings.Contains(res.RawQuery, "ticket") {
			t.Errorf("%s: resolves to %s", in, res)
		}
	}
}

func TestStripAirlockCookies(t *testing.T) {
	h := http.Header{"Cookie": {"a=1; airlock_s1_c1=x;b=2", "airlock_other=y", "c=3"}}
	stripAirlockCookies(h)
	if got := h.Values("Cookie"); len(got) != 1 || got[0] != "a=1; b=2; c=3" {
		t.Errorf("Cookie %q, want one header a=1; b=2; c=3", got)
	}
	h = http.Header{"Cookie": {"airlock_s1_c1=x"}}
	stripAirlockCookies(h)
	if _, ok := h["Cookie"]; ok {
		t.Errorf("Cookie header left: %q", h["Cookie"])
	}
}
