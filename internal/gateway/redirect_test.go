package gateway

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// openRedirects are next values that browsers (or a hop that decodes
// once more) would take off-site, or that are doubtful enough to refuse.
var openRedirects = []string{
	"//evil.example",
	"///evil.example",
	"/\\evil.example",
	"\\\\evil.example",
	"/\t/evil.example",
	"/%09/evil.example", // decoded once by the form: "/\t/evil.example"
	"/\n/evil.example",
	"/\r\n/evil.example",
	"/ /evil.example",
	" //evil.example",
	"\x00//evil.example",
	"/\x0b/evil.example",
	"https://evil.example",
	"https:evil.example",
	"javascript:alert(1)",
	"evil.example",
	"//user:pass@evil.example",
	"/%2F/evil.example",
	"/%2f%2fevil.example",
	"/%5Cevil.example",
	"/%252F%252Fevil.example",
	"/%25252F%25252Fevil.example",
	"/.//evil.example",
	"/./%2Fevil.example",
	"/../evil.example",
	"/%2e%2e//evil.example",
	"/a/..//evil.example",
	"/\u2215\u2215evil.example", // DIVISION SLASH, which some parsers fold
	"/\uff0f\uff0fevil.example", // FULLWIDTH SOLIDUS
	"/%E2%88%95%E2%88%95evil.example",
	"/%zz",
	"",
}

// TestLoginRedirect posts the real login form with each known bypass as
// next and checks where the browser is sent: always "/", while the paths
// the gateway itself sends people back to are kept.
func TestLoginRedirect(t *testing.T) {
	tg := startGateway(t, "", nil, "alice")
	login := func(next string) string {
		t.Helper()
		c := tg.client()
		req, _ := http.NewRequest("POST", tg.url+"/login", strings.NewReader(url.Values{"user": {"alice"}, "password": {testPassword}, "next": {next}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		// The transport, not the client: a client parses the Location to
		// follow it, and fails on the control characters a browser drops.
		resp, err := c.http.Transport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("login with next %q: %d", next, resp.StatusCode)
		}
		return resp.Header.Get("Location")
	}
	for _, next := range openRedirects {
		if got := login(next); got != "/" {
			t.Errorf("next %q: sent to %q, want /", next, got)
		}
	}
	for _, next := range []string{"/", "/sessions/s-0123456789ab", "/admin", "/share/abc-DEF_123", "/sessions/s-1?tab=shares#top", "/static/app.js"} {
		if got := login(next); got != next {
			t.Errorf("next %q: sent to %q, want it kept", next, got)
		}
	}
}

// FuzzLocalPath: whatever next is, the target localPath returns stays on
// gw.example, read by net/url and read as a browser would (tabs and
// newlines dropped, ends trimmed, backslashes as slashes), and again after
// one more round of percent-decoding.
func FuzzLocalPath(f *testing.F) {
	for _, s := range openRedirects {
		f.Add(s)
	}
	for _, s := range []string{"/", "/sessions/s-1", "/a/b?c=//d#e"} {
		f.Add(s)
	}
	base, _ := url.Parse("https://gw.example/")
	onSite := func(t *testing.T, next, target string) {
		t.Helper()
		u, err := url.Parse(target)
		if err != nil {
			t.Fatalf("localPath(%q) = %q: %v", next, target, err)
		}
		if r := base.ResolveReference(u); r.Host != "gw.example" || r.Scheme != "https" || r.User != nil {
			t.Fatalf("localPath(%q) = %q, which resolves to %s", next, target, r)
		}
	}
	f.Fuzz(func(t *testing.T, next string) {
		got := localPath(next)
		if got != "/" && got != next {
			t.Fatalf("localPath(%q) = %q: neither next nor /", next, got)
		}
		onSite(t, next, got)
		onSite(t, next, browserNormal(got))
		if d, err := url.PathUnescape(got); err == nil {
			onSite(t, next, browserNormal(d))
		}
	})
}

// browserNormal applies what a WHATWG URL parser does to a URL before
// reading it: drop ASCII tabs and newlines, trim C0 controls and spaces
// from the ends, and take backslashes as slashes (http and https).
func browserNormal(s string) string {
	s = strings.NewReplacer("\t", "", "\n", "", "\r", "").Replace(s)
	s = strings.TrimFunc(s, func(r rune) bool { return r <= ' ' })
	return strings.ReplaceAll(s, "\\", "/")
}
