package portal

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

// now is the fixed clock of these tests.
var now = time.Date(2025, 6, 2, 12, 0, 0, 0, time.UTC)

// newTest returns a portal over the embedded files with the fixed clock.
// Its pages render as if noVNC were built, built or not: the tree is the
// committed files plus a stand-in rfb.js.
func newTest(t *testing.T) *Portal {
	t.Helper()
	return newFromTree(t, true)
}

// newWithoutNoVNC returns a portal whose static tree lacks vendor/, as in
// a fresh clone before scripts/build-web.sh.
func newWithoutNoVNC(t *testing.T) *Portal {
	t.Helper()
	return newFromTree(t, false)
}

// newEmbedded returns the portal New gives, with the fixed clock.
func newEmbedded(t *testing.T) *Portal {
	t.Helper()
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	p.now = func() time.Time { return now }
	return p
}

func newFromTree(t *testing.T, withNoVNC bool) *Portal {
	t.Helper()
	m := fstest.MapFS{}
	err := fs.WalkDir(staticFiles, "static", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasPrefix(name, "static/vendor/") {
			return err
		}
		data, err := staticFiles.ReadFile(name)
		m[strings.TrimPrefix(name, "static/")] = &fstest.MapFile{Data: data}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if withNoVNC {
		m[rfbModule] = &fstest.MapFile{Data: []byte("export default class RFB {}\n")}
	}
	p, err := newPortal(m, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	if p.novnc != withNoVNC {
		t.Fatalf("noVNC found: %v, want %v", p.novnc, withNoVNC)
	}
	return p
}

// Realistic view models, shared with the browser test.

func homePage() HomePage {
	return HomePage{
		Base: Base{Title: "Sessions", User: "alice", Admin: true},
		Sessions: []SessionRow{
			{ID: "s-0a1b2c3d4e5f", Profile: "desktop", State: "ready", Owner: "alice", Persistent: true,
				Created: now.Add(-75 * time.Minute), Ends: now.Add(6*time.Hour + 45*time.Minute), Node: "node1"},
			{ID: "s-111111111111", Profile: "jupyter", State: "queued", Reason: "Priority: waiting for resources", Owner: "alice",
				Persistent: false, Created: now.Add(-2 * time.Minute)},
			{ID: "s-222222222222", Profile: "windows-vm", State: "ended", Reason: "lifetime over after 8h0m0s", Owner: "alice",
				Persistent: true, Created: now.Add(-30 * time.Hour), Ends: now.Add(-22 * time.Hour)},
		},
		Profiles: []Profile{
			{Name: "desktop", Title: "Linux desktop", Kind: "desktop", CPUs: 2, MaxCPUs: 8, MemoryMB: 4096, MaxMemoryMB: 16384,
				Lifetime: 8 * time.Hour, MaxLifetime: 24 * time.Hour},
			{Name: "jupyter", Title: "JupyterLab", Kind: "app", CPUs: 1, MaxCPUs: 4, MemoryMB: 2048, MaxMemoryMB: 8192,
				Lifetime: 4 * time.Hour, MaxLifetime: 12 * time.Hour},
			{Name: "busy", Title: "Big node (busy)", Description: "A virtual machine on the big node.", Kind: "vm", CPUs: 1, MemoryMB: 1024, Lifetime: 90 * time.Minute},
		},
		Tokens: []Token{
			{ID: "t-AbCdEfGh", Name: "laptop sync script", Created: now.Add(-72 * time.Hour), LastUsed: now.Add(-3 * time.Hour)},
			{ID: "t-ZyXwVuTs", Name: "ci", Created: now.Add(-24 * time.Hour)},
		},
	}
}

func desktopPage() SessionPage {
	return SessionPage{
		Base: Base{Title: "desktop s-0a1b2c3d4e5f", User: "alice"},
		Session: SessionRow{ID: "s-0a1b2c3d4e5f", Profile: "desktop", State: "ready", Owner: "alice", Persistent: true,
			Created: now.Add(-75 * time.Minute), Ends: now.Add(6*time.Hour + 45*time.Minute), Node: "node1"},
		WebSocketPath: "/s/s-0a1b2c3d4e5f/console/",
		IsOwner:       true,
		Shares: []Share{
			{ID: "sh-valid", Mode: "view", Created: now.Add(-time.Hour), Expires: now.Add(time.Hour)},
			{ID: "sh-revoked", Mode: "control", Created: now.Add(-2 * time.Hour), Expires: now.Add(time.Hour), Revoked: true},
			{ID: "sh-expired", Mode: "control", Created: now.Add(-48 * time.Hour), Expires: now.Add(-24 * time.Hour)},
		},
	}
}

func viewOnlyPage() SessionPage {
	v := desktopPage()
	v.Base = Base{Title: v.Base.Title, User: "bob"}
	v.ViewOnly, v.IsOwner, v.Shares = true, false, nil
	return v
}

func appPage() SessionPage {
	return SessionPage{
		Base: Base{Title: "jupyter s-333333333333", User: "alice"},
		Session: SessionRow{ID: "s-333333333333", Profile: "jupyter", State: "ready", Owner: "alice", Persistent: false,
			Created: now.Add(-10 * time.Minute), Ends: now.Add(3 * time.Minute), Node: "node2"},
		AppPath: "/s/s-333333333333/app/",
		IsOwner: true,
	}
}

func endedPage() SessionPage {
	v := desktopPage()
	v.Session.State, v.Session.Reason, v.Session.Ends = "ended", "stopped by admin root", time.Time{}
	return v
}

func adminPage() AdminPage {
	h := homePage()
	ss := append([]SessionRow{}, h.Sessions...)
	ss = append(ss, SessionRow{ID: "s-444444444444", Profile: "desktop", State: "starting", Owner: "bob",
		Persistent: true, Created: now.Add(-20 * time.Second), Node: "node3"})
	return AdminPage{Base: Base{Title: "Admin", User: "root", Admin: true}, Sessions: ss, Load: 0.42,
		FreeMemoryMB: 12345, TotalMemoryMB: 32000}
}

// render renders one page into a recorder.
func render(t *testing.T, p *Portal, page string, v any) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	var err error
	switch page {
	case "login":
		err = p.Login(w, http.StatusOK, v.(LoginPage))
	case "home":
		err = p.Home(w, v.(HomePage))
	case "session":
		err = p.Session(w, v.(SessionPage))
	case "admin":
		err = p.Admin(w, v.(AdminPage))
	case "recordings":
		err = p.Recordings(w, v.(RecordingsPage))
	case "error":
		w.WriteHeader(v.(ErrorPage).Status)
		err = p.Error(w, v.(ErrorPage))
	}
	if err != nil {
		t.Fatalf("render %s: %v", page, err)
	}
	return w
}

// A second, plain look at the markup besides the XML walk: each start tag
// and its attribute names (values quoted or not are skipped whole).
var (
	startTag  = regexp.MustCompile(`<([a-zA-Z][a-zA-Z0-9-]*)((?:\s[^>]*)?)>`)
	attribute = regexp.MustCompile(`([^\s=/>"']+)(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>"']+))?`)
	onAttr    = regexp.MustCompile(`(?i)^on[a-z]+$`)
)

// checkPolicy fails t for each policyProblems finding.
func checkPolicy(t *testing.T, page, body string) {
	t.Helper()
	for _, p := range policyProblems(body) {
		t.Errorf("%s: %s", page, p)
	}
}

// policyProblems walks the HTML as the browser's CSP would judge it: every
// script comes from a file (src, no body), no inline event handler, no
// style attribute or element, no javascript: URL.
func policyProblems(body string) []string {
	var out []string
	for _, tag := range startTag.FindAllStringSubmatch(body, -1) {
		for _, a := range attribute.FindAllStringSubmatch(tag[2], -1) {
			if onAttr.MatchString(a[1]) || strings.EqualFold(a[1], "style") {
				out = append(out, fmt.Sprintf("<%s> has attribute %s", tag[1], a[1]))
			}
		}
	}
	d := xml.NewDecoder(strings.NewReader(body))
	d.Strict = false
	d.AutoClose = xml.HTMLAutoClose
	d.Entity = xml.HTMLEntity
	var stack []string
	elements := 0
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return append(out, fmt.Sprintf("walk the HTML: %v", err))
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			elements++
			name := strings.ToLower(tok.Name.Local)
			stack = append(stack, name)
			src := false
			for _, a := range tok.Attr {
				an := strings.ToLower(a.Name.Local)
				switch {
				case strings.HasPrefix(an, "on"):
					out = append(out, fmt.Sprintf("<%s %s=...> is an inline event handler", name, an))
				case an == "style":
					out = append(out, fmt.Sprintf("<%s style=...>", name))
				case an == "src" && a.Value != "":
					src = true
				case (an == "href" || an == "action") && strings.HasPrefix(strings.ToLower(strings.TrimSpace(a.Value)), "javascript:"):
					out = append(out, fmt.Sprintf("<%s %s=%q>", name, an, a.Value))
				}
			}
			if name == "script" && !src {
				out = append(out, "<script> without src")
			}
			if name == "style" {
				out = append(out, "<style> element")
			}
		case xml.EndElement:
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		case xml.CharData:
			if len(stack) > 0 && stack[len(stack)-1] == "script" && strings.TrimSpace(string(tok)) != "" {
				out = append(out, fmt.Sprintf("<script> has a body: %q", tok))
			}
		}
	}
	if elements < 3 {
		out = append(out, fmt.Sprintf("only %d elements: the walk saw too little", elements))
	}
	return out
}

// TestPolicyProblems: the checker itself catches what the CSP would block.
func TestPolicyProblems(t *testing.T) {
	page := func(s string) string {
		return "<!doctype html><html><head><title>x</title></head><body>" + s + "</body></html>"
	}
	if p := policyProblems(page(`<p class="x" title="a onclick=b">ok</p><script type="module" src="/static/a.js"></script>`)); len(p) != 0 {
		t.Errorf("clean page: %q", p)
	}
	for _, bad := range []string{
		`<script>alert(1)</script>`,
		`<script type="module">import x from "/y.js"</script>`,
		`<button onclick="x()">b</button>`,
		`<img src=x.png onerror=y>`,
		`<div STYLE="color:red">d</div>`,
		`<style>p{}</style>`,
		`<a href=" javascript:x()">a</a>`,
		`<form action="javascript:x()"></form>`,
		`<script src="/a.js">alert(1)</script>`,
	} {
		if len(policyProblems(page(bad))) == 0 {
			t.Errorf("not caught: %s", bad)
		}
	}
}

func TestPages(t *testing.T) {
	p := newTest(t)
	noVNC := newWithoutNoVNC(t)
	emptyHome := HomePage{Base: Base{Title: "Sessions", User: "carol"}}
	tests := []struct {
		name, page string
		p          *Portal
		v          any
		status     int
		want, not  []string
	}{
		{"login", "login", p, LoginPage{Base: Base{Title: "Log in"}, Next: "/sessions/s-1?x=1&y=2"}, 200,
			[]string{`action="/login"`, `method="post"`, `name="user"`, `name="password"`, `type="password"`,
				`name="next" value="/sessions/s-1?x=1&amp;y=2"`, `autocomplete="current-password"`},
			[]string{`action="/logout"`, `href="/admin"`, `class="alert error"`}},
		{"login failed", "login", p, LoginPage{Base: Base{Title: "Log in"}, Error: "wrong user name or password", Next: "/"}, 200,
			[]string{`role="alert">wrong user name or password</p>`}, nil},
		{"home", "home", p, homePage(), 200,
			[]string{`<script type="module" src="/static/home.js"></script>`,
				`action="/logout"`, `href="/admin"`, `alice`,
				`data-id="s-0a1b2c3d4e5f" data-state="ready"`, `href="/sessions/s-0a1b2c3d4e5f"`, `data-stop="s-0a1b2c3d4e5f"`,
				`>ready</span>`, `1h 15m`, `6h 45m`, // age and time left
				`data-stop="s-111111111111"`, `Priority: waiting for resources`, `single-shot`,
				`lifetime over after 8h0m0s`, `over</span>`,
				`<option value="desktop" data-kind="desktop" data-cpus="2" data-max-cpus="8" data-memory="4096" data-max-memory="16384" data-lifetime="8" data-max-lifetime="24">Linux desktop (desktop)</option>`,
				`data-lifetime="1.5" data-max-lifetime="0"`,
				`id="cpus" type="number" inputmode="numeric" min="1" max="8" step="1" value="2"`,
				`min="64" max="16384" step="1" value="4096"`,
				`min="0.1" max="24" step="any" value="8"`,
				`id="persistent" checked`,
				`laptop sync script`, `data-revoke-token="t-AbCdEfGh"`, `2025-06-02 09:00 UTC`, `never`},
			[]string{`data-stop="s-222222222222"`, `class="button small" href="/sessions/s-222222222222"`, `id="no-sessions"`, `id="no-tokens"`}},
		{"home empty", "home", p, emptyHome, 200,
			[]string{`id="no-sessions"`, `No profiles are configured`, `id="no-tokens"`, `id="tokens" hidden`, `carol`},
			[]string{`href="/admin"`, `id="launch"`, `data-stop=`}},
		{"desktop owner", "session", p, desktopPage(), 200,
			[]string{`<script type="module" src="/static/session.js"></script>`, `<script type="module" src="/static/desktop.js"></script>`,
				`data-id="s-0a1b2c3d4e5f"`, `data-ws="/s/s-0a1b2c3d4e5f/console/"`, `data-view-only="false"`, `data-owner="true"`,
				`data-ends="2025-06-02T18:45:00Z"`, `id="screen"`, `id="fullscreen"`, `id="reconnect"`, `id="ctrl-alt-del"`,
				`id="clipboard"`, `id="clip-send" class="primary">`, `id="share-form"`, `value="control"`, `value="1h" selected`,
				`id="stop"`, `6h 45m left`,
				`data-revoke-share="sh-valid"`, `>revoked</td>`, `>expired</td>`},
			[]string{`data-revoke-share="sh-revoked"`, `data-revoke-share="sh-expired"`, `id="viewonly"`, `not built`, `href="/admin"`}},
		{"desktop view-only", "session", p, viewOnlyPage(), 200,
			[]string{`data-view-only="true"`, `data-owner="false"`, `id="viewonly"`, `view only`, `id="clip-send" class="primary" disabled`, `bob`},
			[]string{`id="stop"`, `id="share-form"`, `id="ctrl-alt-del"`, `id="share-toggle"`}},
		{"desktop clipboard none", "session", p, func() SessionPage { v := desktopPage(); v.NoClipIn, v.NoClipOut = true, true; return v }(), 200,
			[]string{`id="screen"`, `id="reconnect"`},
			[]string{`id="clipboard"`, `id="clip-toggle"`, `id="clip-send"`}},
		{"desktop clipboard out only", "session", p, func() SessionPage { v := desktopPage(); v.NoClipIn = true; return v }(), 200,
			[]string{`id="clipboard"`, `id="clip-send" class="primary" disabled`, `lets no clipboard text in`, `Text copied in the desktop appears here`},
			[]string{`id="clip-send" class="primary">`}},
		{"desktop clipboard in only", "session", p, func() SessionPage { v := desktopPage(); v.NoClipOut = true; return v }(), 200,
			[]string{`id="clipboard"`, `id="clip-send" class="primary">`, `lets no clipboard text out`},
			[]string{`Text copied in the desktop appears here`}},
		{"app session", "session", p, appPage(), 200,
			[]string{`data-app="/s/s-333333333333/app/"`, `href="/s/s-333333333333/app/" target="_blank" rel="noopener"`,
				`Open the app`, `id="stop"`, `id="share-form"`, `single-shot`, `3m left`, `src="/static/session.js"`},
			[]string{`desktop.js`, `id="screen"`, `id="clipboard"`, `id="fullscreen"`}},
		{"ended session", "session", p, endedPage(), 200,
			[]string{`data-state="ended"`, `data-reason="stopped by admin root"`, `>ended</span>`, `id="countdown" class="countdown" data-ends="" hidden`},
			[]string{`id="stop"`}},
		{"waiting session", "session", p, SessionPage{Base: Base{Title: "x", User: "alice"},
			Session: SessionRow{ID: "s-5", Profile: "desktop", State: "starting", Reason: "sealing", Created: now}, IsOwner: true}, 200,
			[]string{`id="waiting"`, `This session is starting (sealing)`, `id="stop"`}, []string{`desktop.js`, `id="screen"`}},
		{"no noVNC", "session", noVNC, desktopPage(), 200,
			[]string{`id="novnc-missing"`, `the noVNC client was not built (run make web)`, `src="/static/session.js"`},
			[]string{`desktop.js`, `id="screen"`, `id="fullscreen"`, `id="clipboard"`, `id="reconnect"`}},
		{"admin", "admin", p, adminPage(), 200,
			[]string{`<script type="module" src="/static/admin.js"></script>`, `id="stop-all"`, `0.42`, `12345 MB`, `of 32000 MB`,
				`>bob</td>`, `>node3</td>`, `data-stop="s-444444444444"`, `>starting</span>`, `20s`, `>4</dd>`},
			[]string{`data-stop="s-222222222222"`, `class="hot"`}},
		{"recordings", "recordings", p, RecordingsPage{Base: Base{Title: "Recordings", User: "root", Admin: true}, Recordings: []RecordingRow{
			{Session: "s-0a1b2c3d4e5f", Name: "1796625534135-098b9ba45bc83910", User: "<alice>", Started: now, DurationMS: 4200, FileBytes: 5515, End: "closed", Complete: true},
			{Session: "s-111111111111", Name: "1796625534136-098b9ba45bc83911", User: "bob", Started: now}}}, 200,
			[]string{`src="/static/replay.js"`, `data-play="s-0a1b2c3d4e5f/1796625534135-098b9ba45bc83910" data-length="4200"`, `&lt;alice&gt;`,
				`href="/api/v1/admin/recordings/s-0a1b2c3d4e5f/1796625534135-098b9ba45bc83910"`, `in progress or cut short`, `id="speed"`, `href="/admin/recordings"`},
			[]string{`<alice>`, `id="no-recordings"`}},
		{"recordings without noVNC", "recordings", noVNC, RecordingsPage{Base: Base{Title: "Recordings", User: "root", Admin: true}}, 200,
			[]string{`id="no-recordings"`}, []string{`replay.js`, `id="speed"`}},
		{"error", "error", p, ErrorPage{Base: Base{Title: "Error"}, Status: 404, Message: "no such session"}, 404,
			[]string{`>404</p>`, `no such session`, `href="/"`}, []string{`action="/logout"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := render(t, tt.p, tt.page, tt.v)
			if w.Code != tt.status {
				t.Errorf("status %d, want %d", w.Code, tt.status)
			}
			if ct := w.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" && tt.page != "error" {
				t.Errorf("Content-Type %q", ct)
			}
			body := w.Body.String()
			for _, s := range tt.want {
				if !strings.Contains(body, s) {
					t.Errorf("missing %q", s)
				}
			}
			for _, s := range tt.not {
				if strings.Contains(body, s) {
					t.Errorf("unexpected %q", s)
				}
			}
			if !strings.HasPrefix(body, "<!doctype html>") || !strings.Contains(body, `<link rel="stylesheet" href="/static/airlock.css">`) {
				t.Errorf("not a whole page:\n%s", body)
			}
			checkPolicy(t, tt.name, body)
			if t.Failed() {
				t.Logf("page:\n%s", body)
			}
		})
	}
}

// TestEscaping: whatever the view model holds comes out as text.
func TestEscaping(t *testing.T) {
	p := newTest(t)
	evil := `<script>alert(1)</script>" onmouseover="x`
	v := desktopPage()
	v.User = evil
	v.Session.Reason = evil
	v.Session.Profile = evil
	v.Shares = append(v.Shares, Share{ID: evil, Mode: evil, Expires: now.Add(time.Hour)})
	h := homePage()
	h.User, h.Sessions[0].Reason, h.Tokens[0].Name, h.Profiles[0].Title = evil, evil, evil, evil
	pages := map[string]string{
		"session": render(t, p, "session", v).Body.String(),
		"home":    render(t, p, "home", h).Body.String(),
		"login":   render(t, p, "login", LoginPage{Error: evil, Next: evil}).Body.String(),
		"error":   render(t, p, "error", ErrorPage{Status: 400, Message: evil}).Body.String(),
	}
	for name, body := range pages {
		if strings.Contains(body, "<script>alert") || strings.Contains(body, `" onmouseover="x`) {
			t.Errorf("%s: unescaped input:\n%s", name, body)
		}
		checkPolicy(t, name, body)
	}
}

// headerCounter records WriteHeader calls.
type headerCounter struct {
	*httptest.ResponseRecorder
	calls int
}

func (h *headerCounter) WriteHeader(code int) {
	h.calls++
	h.ResponseRecorder.WriteHeader(code)
}

func TestStatuses(t *testing.T) {
	p := newTest(t)
	w := &headerCounter{ResponseRecorder: httptest.NewRecorder()}
	if err := p.Error(w, ErrorPage{Status: 503, Message: "busy"}); err != nil {
		t.Fatal(err)
	}
	if w.calls != 0 {
		t.Errorf("Error called WriteHeader %d times; the gateway already did", w.calls)
	}
	w = &headerCounter{ResponseRecorder: httptest.NewRecorder()}
	if err := p.Login(w, http.StatusTooManyRequests, LoginPage{Error: "too many attempts; wait a minute"}); err != nil {
		t.Fatal(err)
	}
	if w.calls != 1 || w.Code != http.StatusTooManyRequests {
		t.Errorf("Login: %d WriteHeader calls, status %d; want 1, 429", w.calls, w.Code)
	}
	if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
}

// TestRenderErrorWritesNothing: a page that fails to render sends no
// half page and no status; the caller gets the error.
func TestRenderErrorWritesNothing(t *testing.T) {
	p := newTest(t)
	w := &headerCounter{ResponseRecorder: httptest.NewRecorder()}
	// The home template asked to render an error page's model fails on
	// .Sessions partway through the layout.
	err := p.render(w, 200, "home", ErrorPage{Base: Base{User: "alice"}})
	if err == nil {
		t.Fatal("no error")
	}
	if w.calls != 0 || w.Body.Len() != 0 || w.Header().Get("Content-Type") != "" {
		t.Errorf("wrote %d headers, %d bytes, Content-Type %q", w.calls, w.Body.Len(), w.Header().Get("Content-Type"))
	}
}

func TestStatic(t *testing.T) {
	p := newEmbedded(t)
	// Mounted as the gateway mounts it.
	mux := http.NewServeMux()
	mux.Handle("GET /static/", http.StripPrefix("/static/", p.Static()))
	get := func(method, target string, hdr ...string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, target, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		return w
	}
	for _, name := range []string{"api.js", "home.js", "session.js", "desktop.js", "admin.js"} {
		w := get("GET", "/static/"+name)
		if w.Code != 200 || w.Header().Get("Content-Type") != "text/javascript; charset=utf-8" {
			t.Errorf("%s: %d %q", name, w.Code, w.Header().Get("Content-Type"))
		}
		if w.Header().Get("Cache-Control") != "no-cache" || w.Header().Get("ETag") == "" {
			t.Errorf("%s: Cache-Control %q ETag %q", name, w.Header().Get("Cache-Control"), w.Header().Get("ETag"))
		}
		if w.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no nosniff", name)
		}
		if w2 := get("GET", "/static/"+name, "If-None-Match", w.Header().Get("ETag")); w2.Code != http.StatusNotModified {
			t.Errorf("%s: revalidation gave %d", name, w2.Code)
		}
	}
	if w := get("GET", "/static/airlock.css"); w.Code != 200 || w.Header().Get("Content-Type") != "text/css; charset=utf-8" {
		t.Errorf("css: %d %q", w.Code, w.Header().Get("Content-Type"))
	}
	if w := get("HEAD", "/static/home.js"); w.Code != 200 || w.Body.Len() != 0 {
		t.Errorf("HEAD: %d, %d bytes", w.Code, w.Body.Len())
	}
	for _, target := range []string{"/static/missing.js", "/static/", "/static/vendor/", "/static/vendor/novnc/core/",
		"/static/../portal.go", "/static/..%2fportal.go", "/static/../templates/home.html", "/static/templates/home.html",
		"/static/%2e%2e/portal.go"} {
		w := get("GET", target)
		if w.Code/100 == 3 { // the mux cleans the path with a redirect
			w = get("GET", w.Header().Get("Location"))
		}
		if w.Code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", target, w.Code)
		}
	}
	// And unmounted, straight to the handler, with paths a mux would clean.
	for _, path := range []string{"../portal.go", "/home.js", "./home.js", "static/home.js", "../../go.mod", "vendor/../home.js", "", "."} {
		r := httptest.NewRequest("GET", "/", nil)
		r.URL.Path = path
		w := httptest.NewRecorder()
		p.Static().ServeHTTP(w, r)
		if w.Code != http.StatusNotFound {
			t.Errorf("handler path %q: %d, want 404", path, w.Code)
		}
	}
	r := httptest.NewRequest("POST", "/home.js", nil)
	r.URL.Path = "home.js"
	w := httptest.NewRecorder()
	p.Static().ServeHTTP(w, r)
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", w.Code)
	}

	if !p.novnc {
		t.Log("noVNC not built (run scripts/build-web.sh): vendor files not checked")
		return
	}
	w = get("GET", "/static/vendor/novnc/core/rfb.js")
	if w.Code != 200 || w.Header().Get("Content-Type") != "text/javascript; charset=utf-8" ||
		w.Header().Get("Cache-Control") != "public, max-age=604800" {
		t.Errorf("rfb.js: %d %q %q", w.Code, w.Header().Get("Content-Type"), w.Header().Get("Cache-Control"))
	}
	if !strings.Contains(w.Body.String(), "export default class RFB") {
		t.Errorf("rfb.js is not noVNC's RFB module")
	}
	if w := get("GET", "/static/vendor/novnc/vendor/pako/lib/zlib/inflate.js"); w.Code != 200 {
		t.Errorf("pako: %d", w.Code)
	}
	if w := get("GET", "/static/vendor/novnc/LICENSE.txt"); w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
		t.Errorf("licence: %d %q", w.Code, w.Header().Get("Content-Type"))
	}
}

// TestVendorComplete: every module the embedded noVNC imports is embedded
// too, so the browser never meets a missing import.
func TestVendorComplete(t *testing.T) {
	p := newEmbedded(t)
	if !p.novnc {
		t.Skip("noVNC not built (run scripts/build-web.sh)")
	}
	imp := regexp.MustCompile(`(?m)^\s*(?:import|export)\s[^;]*?from\s+["']([^"']+)["']`)
	for name, a := range p.assets {
		if !strings.HasSuffix(name, ".js") {
			continue
		}
		for _, m := range imp.FindAllStringSubmatch(string(a.data), -1) {
			target := m[1]
			var resolved string
			switch {
			case strings.HasPrefix(target, "/static/"):
				resolved = strings.TrimPrefix(target, "/static/")
			case strings.HasPrefix(target, "."):
				resolved = cleanJoin(name[:strings.LastIndex(name, "/")+1], target)
			default:
				t.Errorf("%s imports %q, neither relative nor under /static/", name, target)
				continue
			}
			if _, ok := p.assets[resolved]; !ok {
				t.Errorf("%s imports %q (%s), which is not embedded", name, target, resolved)
			}
		}
	}
}

func cleanJoin(dir, rel string) string {
	parts := strings.Split(strings.TrimSuffix(dir, "/"), "/")
	if dir == "" {
		parts = nil
	}
	for _, s := range strings.Split(rel, "/") {
		switch s {
		case ".", "":
		case "..":
			if len(parts) > 0 {
				parts = parts[:len(parts)-1]
			}
		default:
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, "/")
}

func TestShort(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 59 * time.Second: "59s", time.Minute: "1m", 59*time.Minute + 59*time.Second: "59m",
		time.Hour: "1h 00m", 47*time.Hour + 5*time.Minute: "47h 05m", 49 * time.Hour: "2d 1h", -time.Hour: "0s",
	} {
		if got := short(d); got != want {
			t.Errorf("short(%v) = %q, want %q", d, got, want)
		}
	}
}

// TestProfileDescription: a profile's description is shown under the
// choice in the launch form (the first profile's at once, every one's for
// the script), as text.
func TestProfileDescription(t *testing.T) {
	p := newTest(t)
	h := homePage()
	h.Profiles[0].Description = `An X desktop <b>with</b> a terminal.`
	body := render(t, p, "home", h).Body.String()
	for _, want := range []string{
		`id="profile-description" aria-live="polite">An X desktop &lt;b&gt;with&lt;/b&gt; a terminal.</p>`,
		`data-description="An X desktop &lt;b&gt;with&lt;/b&gt; a terminal."`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %q", want)
		}
	}
	for i := range h.Profiles {
		h.Profiles[i].Description = ""
	}
	body = render(t, p, "home", h).Body.String()
	if !strings.Contains(body, `id="profile-description" aria-live="polite" hidden>`) || strings.Contains(body, "data-description") {
		t.Errorf("a profile without a description still shows one")
	}
	checkPolicy(t, "home", body)
}
