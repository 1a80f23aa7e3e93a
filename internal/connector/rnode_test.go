package connector

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/airlock-hpc/airlock/internal/ticket"
)

const testSecret = "0123456789abcdefghijklmnopqrstuvWXYZ"

// postLogin posts the rnode login form.
func (b *browser) postLogin(t testing.TB, secret, next string) (*http.Response, string) {
	t.Helper()
	form := url.Values{RNodeSecretField: {secret}}
	if next != "" {
		form.Set(RNodeNextField, next)
	}
	return b.do(t, "POST", RNodeLoginPath, strings.NewReader(form.Encode()),
		http.Header{"Content-Type": {"application/x-www-form-urlencoded"}})
}

// TestRNodeSecretCookieFlow: the posted secret becomes an HttpOnly cookie
// scoped to the session's path and a 303 to the page asked for; with the
// cookie, requests and WebSockets reach the app, which never sees the
// secret or the cookie. The secret is in no log line.
func TestRNodeSecretCookieFlow(t *testing.T) {
	app := startApp(t, false)
	logs, logger := newLogSink(t)
	addr, _ := startConnector(t, Config{Kind: KindRNode, Target: app.target, Secret: testSecret,
		CookiePath: "/rnode/n1/4000/", Logger: logger})
	b := newBrowser(t, addr, nil)

	resp, body := b.postLogin(t, testSecret, "vnc.html?autoconnect=true&path=rnode/n1/4000/websockify")
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %s %s, want 303", resp.Status, body)
	}
	if loc := resp.Header.Get("Location"); loc != "./vnc.html?autoconnect=true&path=rnode/n1/4000/websockify" {
		t.Errorf("Location %q", loc)
	}
	var ck *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "airlock_s1_c1" {
			ck = c
		}
	}
	if ck == nil {
		t.Fatalf("no cookie in %q", resp.Header.Values("Set-Cookie"))
	}
	if !ck.HttpOnly || ck.Path != "/rnode/n1/4000/" || ck.SameSite != http.SameSiteStrictMode || strings.Contains(ck.Value, testSecret) {
		t.Errorf("cookie %s: want HttpOnly, Path=/rnode/n1/4000/, SameSite=Strict, not the secret", ck)
	}
	// The jar would not send a cookie scoped to /rnode/... to this
	// connector's own root (the proxy strips the prefix): send it by hand.
	hdr := http.Header{"Cookie": {ck.Name + "=" + ck.Value + "; app=1"}}
	resp, body = b.do(t, "GET", "/vnc.html", nil, hdr)
	if resp.StatusCode != http.StatusOK || body != "app:/vnc.html" {
		t.Fatalf("with cookie: %s %q", resp.Status, body)
	}
	got := app.last(t)
	if got.cookie != "app=1" || strings.Contains(got.body+got.rawQuery, testSecret) {
		t.Errorf("app saw cookie %q body %q query %q", got.cookie, got.body, got.rawQuery)
	}
	if strings.Contains(logs.String(), testSecret) {
		t.Errorf("the secret is in the log:\n%s", logs)
	}
	logs.waitLine(t, "secret accepted")
}

// TestRNodeRefusals is the attack test: another OnDemand user reaches the
// same host and port through the proxy (which admits any logged-in user)
// without the secret, with a wrong one, with the secret in the URL instead
// of a form, or with a forged cookie; none reaches the app, each refusal
// is logged and the connector keeps serving the holder.
func TestRNodeRefusals(t *testing.T) {
	app := startApp(t, false)
	logs, logger := newLogSink(t)
	addr, _ := startConnector(t, Config{Kind: KindRNode, Target: app.target, Secret: testSecret, Logger: logger})
	other := newBrowser(t, addr, nil)

	for _, tc := range []struct {
		name   string
		do     func() (*http.Response, string)
		status int
	}{
		{"no secret", func() (*http.Response, string) { return other.do(t, "GET", "/", nil, nil) }, http.StatusUnauthorized},
		{"no secret websocket", func() (*http.Response, string) {
			return other.do(t, "GET", "/ws", nil, http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}})
		}, http.StatusUnauthorized},
		{"wrong secret", func() (*http.Response, string) { return other.postLogin(t, testSecret[:len(testSecret)-1]+"!", "") }, http.StatusForbidden},
		{"empty secret", func() (*http.Response, string) { return other.postLogin(t, "", "") }, http.StatusForbidden},
		{"secret in the URL", func() (*http.Response, string) {
			return other.do(t, "GET", RNodeLoginPath+"?secret="+testSecret, nil, nil)
		}, http.StatusMethodNotAllowed},
		{"forged cookie", func() (*http.Response, string) {
			return other.do(t, "GET", "/", nil, http.Header{"Cookie": {"airlock_s1_c1=" + testSecret}})
		}, http.StatusForbidden},
		{"next leaves the session", func() (*http.Response, string) { return other.postLogin(t, testSecret, "//evil.example/") }, http.StatusBadRequest},
		{"next goes up", func() (*http.Response, string) { return other.postLogin(t, testSecret, "a/../../x") }, http.StatusBadRequest},
	} {
		resp, body := tc.do()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %s %q, want %d", tc.name, resp.Status, body, tc.status)
		}
		if len(resp.Cookies()) > 0 {
			t.Errorf("%s: got a cookie", tc.name)
		}
	}
	if m := app.methods(); len(m) > 0 {
		t.Fatalf("the app saw %v from refused clients", m)
	}
	logs.waitLine(t, "secret wrong")
	if strings.Contains(logs.String(), testSecret[:20]) {
		t.Errorf("a secret or guess is in the log:\n%s", logs)
	}
	// Still serving the holder.
	holder := newBrowser(t, addr, nil)
	if resp, body := holder.postLogin(t, testSecret, ""); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "./" {
		t.Fatalf("holder: %s %q %q", resp.Status, body, resp.Header.Get("Location"))
	}
}

// TestRNodeConfig: the secret is required, long, and only for rnode.
func TestRNodeConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Kind: KindRNode, Secret: "short"}, "field Secret"},
		{Config{Kind: KindRNode}, "field Secret"},
		{Config{Kind: KindHTTP, Key: newKey(t), Secret: testSecret}, "field Secret: not for kind"},
		{Config{Kind: KindHTTP, Key: newKey(t), CookiePath: "/x/"}, "field CookiePath: not for kind"},
		{Config{Kind: KindRNode, Secret: testSecret, CookiePath: "/x/; Domain=evil"}, "field CookiePath"},
	} {
		tc.cfg.Name, tc.cfg.Session, tc.cfg.Target = "c1", "s1", "127.0.0.1:1"
		if err := tc.cfg.validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestCleanNext(t *testing.T) {
	for next, ok := range map[string]bool{
		"": true, "vnc.html?autoconnect=true&path=rnode/h/1/websockify": true, "lab/tree": true,
		"/abs": false, "//evil": false, "http://evil": false, "a/../../b": false, "..": false,
		"a\\b": false, "a b": false, "a\nb": false, "x#y": false,
	} {
		if _, got := cleanNext(next); got != ok {
			t.Errorf("cleanNext(%q) = %v, want %v", next, got, ok)
		}
	}
}

// FuzzCleanNext: whatever next the login form carries, an accepted one
// keeps the browser on the proxy's origin and under the session's path.
func FuzzCleanNext(f *testing.F) {
	for _, s := range []string{"", "vnc.html?autoconnect=true&path=rnode/h/1/websockify", "//evil", "a/../..", "%2e%2e/x", "http:x", "\\\\evil"} {
		f.Add(s)
	}
	base, _ := url.Parse("https://ood.example.org/rnode/n1/4000/airlock-login")
	f.Fuzz(func(t *testing.T, next string) {
		got, ok := cleanNext(next)
		if !ok {
			return
		}
		u, err := base.Parse("./" + got)
		if err != nil {
			return // the browser would not follow it either
		}
		if u.Host != base.Host || u.Scheme != base.Scheme || !strings.HasPrefix(u.Path, "/rnode/n1/4000/") {
			t.Fatalf("next %q leads to %s", next, u)
		}
	})
}

// BenchmarkProxiedRequest: one small GET through the connector with its
// cookie, for the http kind (ticket-minted cookie) and the rnode kind
// (secret-minted cookie): the same proxy, so the two should match.
func BenchmarkProxiedRequest(b *testing.B) {
	for _, kind := range []string{"http", "rnode"} {
		b.Run(kind, func(b *testing.B) {
			app := startApp(b, false)
			_, logger := newLogSink(b)
			cfg := Config{Kind: KindHTTP, Target: app.target, Key: newKey(b), Logger: logger}
			if kind == "rnode" {
				cfg = Config{Kind: KindRNode, Target: app.target, Secret: testSecret, Logger: logger}
			}
			addr, _ := startConnector(b, cfg)
			br := newBrowser(b, addr, nil)
			var ck *http.Cookie
			if kind == "rnode" {
				resp, _ := br.postLogin(b, testSecret, "")
				ck = resp.Cookies()[0]
			} else {
				ck = br.login(b, mint(b, cfg.Key, ticket.Control))
			}
			hdr := http.Header{"Cookie": {ck.Name + "=" + ck.Value}}
			b.ResetTimer()
			for b.Loop() {
				if resp, _ := br.do(b, "GET", "/x", nil, hdr); resp.StatusCode != http.StatusOK {
					b.Fatalf("status %s", resp.Status)
				}
			}
		})
	}
}
