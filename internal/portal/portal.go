package portal

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ContentSecurityPolicy is the policy the pages are written for: no inline
// script or style, everything from this origin. The gateway sends it on
// every browser route; the browser test serves the pages with it.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// ContentSecurityPolicyRDP is the policy of a session page that runs the
// browser's RDP client: its WebAssembly needs 'wasm-unsafe-eval' (which
// compiles WebAssembly, never JavaScript from strings), and the module
// loads its inlined WebAssembly from a data: URL; its web component sets
// inline styles (without 'unsafe-inline' for styles Chromium blocks them,
// which TestRDPWebBrowser sees as page errors). Scripts stay 'self' only.
// Only that page gets it, and the recordings page when it lists an RDP
// recording (its player is the same client).
const ContentSecurityPolicyRDP = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// rdpModule is the IronRDP web client's RDP backend, there once
// scripts/build-web.sh copied it in.
const rdpModule = "vendor/ironrdp/iron-remote-desktop-rdp.js"

// The static tree always holds the committed CSS and JavaScript, so the
// pattern matches in a fresh clone; static/vendor/ appears only after
// scripts/build-web.sh has copied noVNC in from node_modules.
//
//go:embed static
var staticFiles embed.FS

//go:embed templates/*.html
var templateFiles embed.FS

// rfbModule is the noVNC entry point the desktop view imports.
const rfbModule = "vendor/novnc/core/rfb.js"

// pageNames are the templates; each is parsed together with layout.html.
var pageNames = []string{"login", "home", "session", "admin", "error", "terms", "totp", "recordings"}

// Portal renders the pages and serves the static assets. It is safe for
// concurrent use; its zero value is not usable, call New.
type Portal struct {
	pages   map[string]*template.Template
	assets  map[string]asset // by path below static/, e.g. "airlock.css"
	novnc   bool             // the noVNC client was built into static/vendor
	ironrdp bool             // and the IronRDP web client
	now     func() time.Time
}

type asset struct {
	data        []byte
	contentType string
	etag        string
	vendor      bool
}

// New parses the embedded templates and indexes the embedded static files.
func New() (*Portal, error) {
	static, err := fs.Sub(staticFiles, "static")
	if err != nil {
		return nil, fmt.Errorf("portal: static files: %w", err)
	}
	return newPortal(static, time.Now)
}

func newPortal(static fs.FS, now func() time.Time) (*Portal, error) {
	p := &Portal{pages: map[string]*template.Template{}, assets: map[string]asset{}, now: now}
	err := fs.WalkDir(static, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(static, name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		p.assets[name] = asset{
			data:        data,
			contentType: contentType(name),
			etag:        `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`,
			vendor:      strings.HasPrefix(name, "vendor/"),
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("portal: static files: %w", err)
	}
	_, p.novnc = p.assets[rfbModule]
	_, p.ironrdp = p.assets[rdpModule]
	funcs := template.FuncMap{
		"novnc":     func() bool { return p.novnc },
		"ironrdp":   func() bool { return p.ironrdp },
		"age":       func(t time.Time) string { return p.age(t) },
		"left":      func(t time.Time) string { return p.left(t) },
		"iso":       iso,
		"when":      when,
		"hours":     hours,
		"active":    active,
		"shareOpen": func(s Share) bool { return !s.Revoked && p.now().Before(s.Expires) },
	}
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFiles, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("portal: parse template %s: %w", name, err)
		}
		p.pages[name] = t
	}
	return p, nil
}

func contentType(name string) string {
	switch path.Ext(name) {
	case ".js", ".mjs":
		// What the HTML standard asks for module scripts; with nosniff a
		// wrong type would make the browser refuse the module.
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	case ".png":
		return "image/png"
	case ".ico":
		return "image/x-icon"
	case ".json", ".map":
		return "application/json"
	case ".txt", ".md", "":
		return "text/plain; charset=utf-8"
	}
	return "application/octet-stream"
}

// Static serves the embedded static tree. Mount it with the "/static/"
// prefix stripped. Only embedded files are served: no directory listings,
// and a path that is not clean (".." or "." elements, a leading slash) is
// not found. The portal's own CSS and JavaScript are revalidated on every
// load (they change with the binary, under the same names); the vendored
// noVNC modules, some fifty files, are cached for a week.
func (p *Portal) Static() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		name := r.URL.Path
		a, ok := p.assets[name]
		if !ok || !fs.ValidPath(name) {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.contentType)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("ETag", a.etag)
		if a.vendor {
			h.Set("Cache-Control", "public, max-age=604800")
		} else {
			h.Set("Cache-Control", "no-cache")
		}
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.data))
	})
}

// Login renders the login page with the given status (200, or the error
// status of a failed attempt).
func (p *Portal) Login(w http.ResponseWriter, status int, v LoginPage) error {
	return p.render(w, status, "login", v)
}

// Home renders the user's sessions, the launch form and the API tokens.
func (p *Portal) Home(w http.ResponseWriter, v HomePage) error {
	return p.render(w, http.StatusOK, "home", v)
}

// Session renders one session: the noVNC desktop, or the link to its app.
func (p *Portal) Session(w http.ResponseWriter, v SessionPage) error {
	if v.RDPWeb && p.ironrdp {
		w.Header().Set("Content-Security-Policy", ContentSecurityPolicyRDP)
	}
	return p.render(w, http.StatusOK, "session", v)
}

// Admin renders every session and the node's load.
func (p *Portal) Admin(w http.ResponseWriter, v AdminPage) error {
	return p.render(w, http.StatusOK, "admin", v)
}

// Recordings renders the session recordings and their player.
func (p *Portal) Recordings(w http.ResponseWriter, v RecordingsPage) error {
	if p.ironrdp && slices.ContainsFunc(v.Recordings, func(r RecordingRow) bool { return r.Kind == "rdp" }) {
		w.Header().Set("Content-Security-Policy", ContentSecurityPolicyRDP)
	}
	return p.render(w, http.StatusOK, "recordings", v)
}

// Error renders an error page. It does not write a status: the caller
// has already called WriteHeader with v.Status.
func (p *Portal) Error(w http.ResponseWriter, v ErrorPage) error {
	return p.render(w, 0, "error", v)
}

// Terms renders a profile's terms of use with the form accepting them.
func (p *Portal) Terms(w http.ResponseWriter, v TermsPage) error {
	return p.render(w, http.StatusOK, "terms", v)
}

// TOTP renders the second factor's pages: the code at login, enrolment
// with its QR code, the recovery codes (once) and the account view.
func (p *Portal) TOTP(w http.ResponseWriter, status int, v TOTPPage) error {
	return p.render(w, status, "totp", v)
}

// render executes a page into a buffer first, so a template error never
// sends half a page: the error is returned and nothing is written.
// status 0 leaves the status line to the caller.
func (p *Portal) render(w http.ResponseWriter, status int, page string, v any) error {
	t, ok := p.pages[page]
	if !ok {
		return fmt.Errorf("portal: no page %q", page)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, v); err != nil {
		return fmt.Errorf("portal: render %s: %w", page, err)
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	// Pages carry the user's sessions and share lists.
	h.Set("Cache-Control", "no-store")
	if status != 0 {
		w.WriteHeader(status)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// age is how long ago t was, in the largest two units ("3h 05m").
func (p *Portal) age(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return short(p.now().Sub(t))
}

// left is how long until t, "—" when t is zero (no limit or not started)
// and "over" once it has passed.
func (p *Portal) left(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	d := t.Sub(p.now())
	if d <= 0 {
		return "over"
	}
	return short(d)
}

// short formats a duration for a table cell; the JavaScript in
// static/api.js formats countdowns the same way.
func short(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	d = d.Truncate(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh %02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd %dh", int(d.Hours())/24, int(d.Hours())%24)
}

// iso is t for a datetime or data- attribute, empty when t is zero.
func iso(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// when is t for reading; static/api.js rewrites it in the viewer's zone.
func when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

// hours is d in hours for a number input, without trailing zeros.
func hours(d time.Duration) string {
	return strconv.FormatFloat(d.Hours(), 'f', -1, 64)
}

// active reports whether a session in state may still be opened or
// stopped.
func active(state string) bool {
	switch state {
	case "queued", "starting", "ready":
		return true
	}
	return false
}
