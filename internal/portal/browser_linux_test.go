package portal

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

const chromium = "/usr/bin/chromium"

// TestBrowser loads every page in headless Chromium (driven by
// testdata/browser.mjs through playwright-core) from a stand-in gateway
// that sends the real Content-Security-Policy, answers the JSON API like
// the gateway does, and speaks RFB on the console WebSocket. It checks
// that no page logs an error or breaks the CSP, that noVNC connects and
// draws, that the clipboard works both ways, that a view-only viewer
// sends no input, that launching follows a session to ready, and that an
// ended session says why. Screenshots go to .artifacts/screenshots/.
func TestBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no browser")
	}
	root := moduleRoot(t)
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("no %s (apt-get install chromium): %v", chromium, err)
	}
	if _, err := os.Stat(filepath.Join(root, "node_modules", "playwright-core", "package.json")); err != nil {
		t.Skip("no node_modules/playwright-core (run scripts/build-web.sh)")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("no node in PATH")
	}
	p := newEmbedded(t)
	if !p.novnc {
		t.Skip("noVNC not built (run scripts/build-web.sh)")
	}
	// The browser computes "time left" from its own clock: the view
	// models are made around the real time.
	saved := now
	now = time.Now()
	t.Cleanup(func() { now = saved })
	gw := newFakeGateway(t, p, newWithoutNoVNC(t))
	srv := httptest.NewTLSServer(gw)
	t.Cleanup(srv.Close)

	shots := filepath.Join(root, ".artifacts", "screenshots")
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("testdata", "browser.mjs"), srv.URL, shots)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Chromium runs in node's process group; a deadline ends all of it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err = cmd.Run()
	t.Logf("browser script: %v in %s; stderr:\n%s", err, time.Since(start).Round(time.Millisecond), stderr.String())
	var res browserResult
	if jerr := json.Unmarshal(stdout.Bytes(), &res); jerr != nil {
		t.Fatalf("script output is not JSON (%v): %s", jerr, stdout.String())
	}
	if err != nil || res.Error != "" {
		t.Fatalf("browser script failed: %v %s\nsteps: %s", err, res.Error, strings.Join(res.Steps, "\n"))
	}
	t.Logf("steps:\n%s", strings.Join(res.Steps, "\n"))

	// The check itself must be able to see a violation.
	if c := res.Pages["csp-canary"]; len(c.CSP) == 0 || c.Facts["inlineRan"] != false {
		t.Errorf("the CSP canary's inline script was not reported blocked: %+v", c)
	}
	for name, pg := range res.Pages {
		if name == "csp-canary" {
			continue
		}
		if len(pg.Console) > 0 || len(pg.PageErrors) > 0 || len(pg.CSP) > 0 {
			t.Errorf("%s: console errors %q, page errors %q, CSP violations %q", name, pg.Console, pg.PageErrors, pg.CSP)
		}
	}
	for _, name := range []string{"login", "home", "home-phone", "desktop", "view-only", "app", "admin", "error", "no-novnc", "launched", "app-phone"} {
		if _, ok := res.Pages[name]; !ok {
			t.Errorf("page %s was not visited", name)
		}
	}

	fact := func(page, key string) any { return res.Pages[page].Facts[key] }
	want := func(page, key string, v any) {
		t.Helper()
		if got := fact(page, key); fmt.Sprint(got) != fmt.Sprint(v) {
			t.Errorf("%s: %s = %v, want %v", page, key, got, v)
		}
	}
	// Desktop: noVNC connected, drew the test pattern, and the clipboard
	// went both ways; the ended session then said why.
	want("desktop", "connected", "connected")
	want("desktop", "centre", "[46 125 50]")
	want("desktop", "clipboardIn", "hello from the desktop")
	want("desktop", "shareURL", "https://"+srv.Listener.Addr().String()+"/share/SECRET-control")
	want("desktop", "revoked", "revoked")
	want("desktop", "finalState", "disconnected:ended")
	want("desktop", "message", "The session has ended: stopped by alice.")
	if got := gw.rfb.stats("s-0a1b2c3d4e5f"); len(got.cut) != 1 || got.cut[0] != "from the browser" || got.connects != 2 {
		t.Errorf("desktop: the server got clipboard %q in %d connections, want [from the browser] in 2 (one reconnect)", got.cut, got.connects)
	}
	want("view-only", "connected", "connected")
	want("view-only", "pill", "view only")
	if got := gw.rfb.stats("s-view"); got.connects != 1 || got.keys != 0 || got.pointers != 0 {
		t.Errorf("view-only: %d connects, %d key and %d pointer events; want 1, 0, 0", got.connects, got.keys, got.pointers)
	}
	// Home: a refused launch shows the API's message, an accepted one is
	// followed through queued and starting to the session's page.
	want("home", "refused", "Not started: the node is busy (load 3.10 per CPU, limit 2.00); try later")
	// The chosen profile's description, none for one without.
	want("home", "descriptionFirst", "(hidden)")
	want("home", "descriptionBusy", "A virtual machine on the big node.")
	want("home", "sawQueued", true)
	want("home", "sawStarting", true)
	want("launched", "path", "/sessions/s-new")
	want("home", "token", "alk_secret-test-token")
	want("home", "tokenRows", 2) // one revoked, one made
	want("app", "banner", true)
	want("home-phone", "overflow", false)
	want("app-phone", "overflow", false)
	want("admin", "stopAll", "Stopping 2 sessions.")
	want("admin", "stopAllFailed", "Stopping 1 session; could not stop s-333333333333 (internal error; it has been logged).")
	want("error", "status", 404)
	want("login", "status", 401)
	want("no-novnc", "state", "disconnected:no-client")

	launches := gw.calls("POST /api/v1/sessions")
	if len(launches) != 2 {
		t.Fatalf("launches: %q", launches)
	}
	var req struct {
		Profile    string `json:"profile"`
		CPUs       int    `json:"cpus"`
		MemoryMB   int    `json:"memory_mb"`
		Lifetime   string `json:"lifetime"`
		Persistent *bool  `json:"persistent"`
	}
	dec := json.NewDecoder(strings.NewReader(launches[1]))
	dec.DisallowUnknownFields() // as the gateway decodes LaunchRequest
	if err := dec.Decode(&req); err != nil {
		t.Fatalf("launch body %s: %v", launches[1], err)
	}
	if req.Profile != "desktop" || req.CPUs != 4 || req.MemoryMB != 4096 || req.Lifetime != "90m" || req.Persistent == nil || *req.Persistent {
		t.Errorf("launch body %s", launches[1])
	}
	for c, n := range map[string]int{"DELETE /api/v1/tokens/t-ZyXwVuTs": 1, "POST /api/v1/admin/stop-all": 2, "DELETE /api/v1/sessions/s-0a1b2c3d4e5f/shares/sh-valid": 1} {
		if len(gw.calls(c)) != n {
			t.Errorf("%s: called %d times, want %d", c, len(gw.calls(c)), n)
		}
	}
	if got := gw.calls("POST /api/v1/sessions/s-0a1b2c3d4e5f/shares"); len(got) != 1 || !strings.Contains(got[0], `"mode":"control"`) || !strings.Contains(got[0], `"ttl":"8h"`) {
		t.Errorf("share request %q", got)
	}
	if gw.badContentType.Load() != 0 {
		t.Errorf("%d API requests with a body were not application/json", gw.badContentType.Load())
	}
}

type browserResult struct {
	Error string   `json:"error"`
	Steps []string `json:"steps"`
	Pages map[string]struct {
		Console    []string       `json:"console"`
		PageErrors []string       `json:"pageErrors"`
		CSP        []string       `json:"csp"`
		Facts      map[string]any `json:"facts"`
	} `json:"pages"`
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above %s", dir)
		}
	}
}

// fakeGateway answers like the gateway for the pages under test.
type fakeGateway struct {
	t              *testing.T
	mux            *http.ServeMux
	rfb            *fakeRFB
	mu             sync.Mutex
	log            []string // "METHOD path body"
	polls          int      // GETs of s-new
	ended          bool     // s-0a1b2c3d4e5f has ended
	badContentType atomic.Int64
}

func (g *fakeGateway) calls(prefix string) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for _, l := range g.log {
		if rest, ok := strings.CutPrefix(l, prefix+" "); ok {
			out = append(out, rest)
		}
	}
	return out
}

func (g *fakeGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	if !strings.HasPrefix(r.URL.Path, "/s/") {
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
	}
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	if strings.HasPrefix(r.URL.Path, "/api/") {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		if len(body) > 0 && r.Header.Get("Content-Type") != "application/json" {
			g.badContentType.Add(1)
		}
		g.mu.Lock()
		g.log = append(g.log, r.Method+" "+r.URL.Path+" "+string(body))
		g.mu.Unlock()
	}
	g.mux.ServeHTTP(w, r)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func apiError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func newFakeGateway(t *testing.T, p, bare *Portal) *fakeGateway {
	g := &fakeGateway{t: t, mux: http.NewServeMux(), rfb: &fakeRFB{t: t, conns: map[string]*rfbStats{}}}
	m := g.mux
	page := func(f func(w http.ResponseWriter) error) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if err := f(w); err != nil {
				t.Errorf("render %s: %v", r.URL.Path, err)
			}
		}
	}
	m.Handle("GET /static/", http.StripPrefix("/static/", p.Static()))
	m.Handle("GET /{$}", page(func(w http.ResponseWriter) error { return p.Home(w, homePage()) }))
	m.Handle("GET /login", page(func(w http.ResponseWriter) error {
		return p.Login(w, http.StatusUnauthorized, LoginPage{Base: Base{Title: "Log in"}, Error: "wrong user name or password", Next: "/sessions/s-1"})
	}))
	m.Handle("GET /admin", page(func(w http.ResponseWriter) error { return p.Admin(w, adminPage()) }))
	m.Handle("GET /error", page(func(w http.ResponseWriter) error {
		w.WriteHeader(http.StatusNotFound)
		return p.Error(w, ErrorPage{Base: Base{Title: "Error"}, Status: 404, Message: "no such session"})
	}))
	m.HandleFunc("GET /csp-canary", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, `<!doctype html><html><head><title>canary</title></head><body><p>canary</p><script>window.inlineRan = true</script></body></html>`)
	})
	sessionPages := map[string]func() (SessionPage, *Portal){
		"s-0a1b2c3d4e5f": func() (SessionPage, *Portal) {
			return desktopPage(), p
		},
		"s-view": func() (SessionPage, *Portal) {
			v := viewOnlyPage()
			v.Session.ID, v.WebSocketPath = "s-view", "/s/s-view/console/"
			return v, p
		},
		"s-333333333333": func() (SessionPage, *Portal) {
			v := appPage()
			v.Session.Ends = time.Now().Add(3*time.Minute + 30*time.Second)
			return v, p
		},
		"s-new": func() (SessionPage, *Portal) {
			v := desktopPage()
			v.Session.ID, v.Session.Created, v.Session.Ends = "s-new", now, now.Add(90*time.Minute)
			v.WebSocketPath, v.Shares = "/s/s-new/console/", nil
			return v, p
		},
		"s-nonovnc": func() (SessionPage, *Portal) {
			v := desktopPage()
			v.Session.ID = "s-nonovnc"
			return v, bare
		},
	}
	m.HandleFunc("GET /sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		f, ok := sessionPages[r.PathValue("id")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		v, pp := f()
		if err := pp.Session(w, v); err != nil {
			t.Errorf("render session %s: %v", r.PathValue("id"), err)
		}
	})
	m.HandleFunc("/s/{id}/console/", func(w http.ResponseWriter, r *http.Request) {
		g.rfb.serve(w, r, r.PathValue("id"), func() {
			g.mu.Lock()
			g.ended = true
			g.mu.Unlock()
		})
	})

	// The JSON API, as internal/gateway/api.go answers it.
	m.HandleFunc("GET /api/v1/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		defer g.mu.Unlock()
		id := r.PathValue("id")
		s := map[string]any{"id": id, "owner": "alice", "profile": "desktop", "persistent": true, "connect": map[string]string{}}
		switch id {
		case "s-0a1b2c3d4e5f":
			s["state"] = "ready"
			if g.ended {
				s["state"], s["reason"] = "ended", "stopped by alice"
			}
		case "s-new":
			g.polls++
			s["state"] = []string{"queued", "queued", "starting", "starting", "ready"}[min(g.polls-1, 4)]
			if s["state"] == "queued" {
				s["reason"] = "waiting for a node"
			}
		case "s-333333333333", "s-nonovnc":
			s["state"] = "ready"
		default: // share viewers may not ask (s-view)
			apiError(w, 404, "no_session", "no such session")
			return
		}
		writeJSON(w, 200, s)
	})
	// The stand-in has no event stream (the gateway's is tested with the
	// real gateway, internal/gateway/events_test.go): 204 tells
	// EventSource not to reconnect, so the pages fall back to polling the
	// route above, and the steps that follow a session test the fallback.
	m.HandleFunc("GET /api/v1/sessions/{id}/events", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	m.HandleFunc("GET /api/v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"sessions": []map[string]any{
			{"id": "s-0a1b2c3d4e5f", "state": "ready", "ends": time.Now().Add(6 * time.Hour).UTC()},
			{"id": "s-111111111111", "state": "starting", "reason": "sealing"},
		}})
	})
	m.HandleFunc("POST /api/v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Profile string `json:"profile"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		if req.Profile == "busy" {
			apiError(w, 503, "node_busy", "the node is busy (load 3.10 per CPU, limit 2.00); try later")
			return
		}
		writeJSON(w, 201, map[string]any{"id": "s-new", "state": "queued"})
	})
	m.HandleFunc("DELETE /api/v1/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 202, map[string]any{"id": r.PathValue("id"), "state": "stopping"})
	})
	m.HandleFunc("POST /api/v1/sessions/{id}/shares", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Mode, TTL string }
		json.NewDecoder(r.Body).Decode(&req)
		writeJSON(w, 201, map[string]any{"id": "sh-new", "mode": req.Mode, "expires": time.Now().Add(8 * time.Hour).UTC(),
			"url": "https://" + r.Host + "/share/SECRET-" + req.Mode})
	})
	m.HandleFunc("DELETE /api/v1/sessions/{id}/shares/{share}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(204)
	})
	m.HandleFunc("POST /api/v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 201, map[string]string{"token": "alk_secret-test-token", "id": "t-new"})
	})
	m.HandleFunc("DELETE /api/v1/tokens/{tid}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(204)
	})
	m.HandleFunc("GET /api/v1/admin/sessions", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"sessions": []map[string]any{
			{"session": map[string]any{"id": "s-0a1b2c3d4e5f", "state": "stopping"}, "node": "node1"},
			{"session": map[string]any{"id": "s-444444444444", "state": "stopping"}, "node": "node3"},
		}, "node": map[string]any{"load_per_cpu": 0.5, "free_memory_mb": 12000}})
	})
	var stopAlls atomic.Int32
	m.HandleFunc("POST /api/v1/admin/stop-all", func(w http.ResponseWriter, r *http.Request) {
		if stopAlls.Add(1) == 1 {
			writeJSON(w, 202, map[string]any{"stopping": 2, "failed": []any{}})
			return
		}
		// The second time one session cannot be stopped.
		writeJSON(w, 202, map[string]any{"stopping": 1, "failed": []any{
			map[string]any{"session": "s-333333333333", "error": map[string]any{"code": "internal", "message": "internal error; it has been logged"}},
		}})
	})
	return g
}

// fakeRFB is a tiny RFB 3.8 server (security type None) that sends one
// raw frame with a test pattern and a clipboard text, and counts what
// the client sends.
type fakeRFB struct {
	t     *testing.T
	mu    sync.Mutex
	conns map[string]*rfbStats
}

type rfbStats struct {
	connects, keys, pointers int
	cut                      []string
}

func (f *fakeRFB) stats(id string) rfbStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.conns[id]; s != nil {
		return *s
	}
	return rfbStats{}
}

func (f *fakeRFB) update(id string, fn func(*rfbStats)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.conns[id]
	if s == nil {
		s = &rfbStats{}
		f.conns[id] = s
	}
	fn(s)
}

const fbW, fbH = 640, 400

func (f *fakeRFB) serve(w http.ResponseWriter, r *http.Request, id string, onEnd func()) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"binary"}, CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		f.t.Errorf("console %s: accept: %v", id, err)
		return
	}
	if c.Subprotocol() != "binary" {
		f.t.Errorf("console %s: subprotocol %q, want binary", id, c.Subprotocol())
	}
	f.update(id, func(s *rfbStats) { s.connects++ })
	nc := websocket.NetConn(r.Context(), c, websocket.MessageBinary)
	defer nc.Close()
	if err := f.session(nc, id, onEnd); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) &&
		websocket.CloseStatus(err) == -1 && !errors.Is(err, context.Canceled) {
		f.t.Logf("console %s: %v", id, err)
	}
}

func (f *fakeRFB) session(nc net.Conn, id string, onEnd func()) error {
	br := bufio.NewReader(nc)
	read := func(n int) ([]byte, error) {
		b := make([]byte, n)
		_, err := io.ReadFull(br, b)
		return b, err
	}
	if _, err := io.WriteString(nc, "RFB 003.008\n"); err != nil {
		return err
	}
	if v, err := read(12); err != nil || string(v) != "RFB 003.008\n" {
		return fmt.Errorf("client version %q: %v", v, err)
	}
	nc.Write([]byte{1, 1}) // one security type: None
	if t, err := read(1); err != nil || t[0] != 1 {
		return fmt.Errorf("security type %v: %v", t, err)
	}
	nc.Write([]byte{0, 0, 0, 0})       // SecurityResult OK
	if _, err := read(1); err != nil { // ClientInit
		return err
	}
	name := "airlock test desktop"
	si := binary.BigEndian.AppendUint16(nil, fbW)
	si = binary.BigEndian.AppendUint16(si, fbH)
	si = append(si, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0)
	si = binary.BigEndian.AppendUint32(si, uint32(len(name)))
	nc.Write(append(si, name...))

	pf := struct {
		big        bool
		rs, gs, bs uint8
	}{false, 16, 8, 0}
	sent := false
	for {
		t, err := read(1)
		if err != nil {
			return err
		}
		switch t[0] {
		case 0: // SetPixelFormat
			b, err := read(19)
			if err != nil {
				return err
			}
			pf.big, pf.rs, pf.gs, pf.bs = b[5] != 0, b[13], b[14], b[15]
		case 2: // SetEncodings
			b, err := read(3)
			if err != nil {
				return err
			}
			if _, err := read(4 * int(binary.BigEndian.Uint16(b[1:]))); err != nil {
				return err
			}
		case 3: // FramebufferUpdateRequest
			if _, err := read(9); err != nil {
				return err
			}
			if sent {
				continue
			}
			sent = true
			msg := []byte{0, 0, 0, 1, 0, 0, 0, 0}
			msg = binary.BigEndian.AppendUint16(msg, fbW)
			msg = binary.BigEndian.AppendUint16(msg, fbH)
			msg = append(msg, 0, 0, 0, 0) // Raw
			for y := range fbH {
				for x := range fbW {
					r, g, b := pattern(x, y)
					v := uint32(r)<<pf.rs | uint32(g)<<pf.gs | uint32(b)<<pf.bs
					if pf.big {
						msg = binary.BigEndian.AppendUint32(msg, v)
					} else {
						msg = binary.LittleEndian.AppendUint32(msg, v)
					}
				}
			}
			if _, err := nc.Write(msg); err != nil {
				return err
			}
			text := "hello from the desktop"
			cut := binary.BigEndian.AppendUint32([]byte{3, 0, 0, 0}, uint32(len(text)))
			if _, err := nc.Write(append(cut, text...)); err != nil {
				return err
			}
		case 4: // KeyEvent
			if _, err := read(7); err != nil {
				return err
			}
			f.update(id, func(s *rfbStats) { s.keys++ })
		case 5: // PointerEvent
			if _, err := read(5); err != nil {
				return err
			}
			f.update(id, func(s *rfbStats) { s.pointers++ })
		case 6: // ClientCutText
			b, err := read(7)
			if err != nil {
				return err
			}
			text, err := read(int(binary.BigEndian.Uint32(b[3:])))
			if err != nil {
				return err
			}
			f.update(id, func(s *rfbStats) { s.cut = append(s.cut, string(text)) })
			if id == "s-0a1b2c3d4e5f" {
				// The owner ends the session from elsewhere: the gateway
				// marks it ended and the connector goes away.
				onEnd()
				return nc.Close()
			}
		default:
			return fmt.Errorf("unexpected client message type %d", t[0])
		}
	}
}

// pattern is the test frame: a green field with a white frame and a
// blue band, so the screenshot shows something and the centre is green.
func pattern(x, y int) (r, g, b uint8) {
	switch {
	case x < 12 || y < 12 || x >= fbW-12 || y >= fbH-12:
		return 255, 255, 255
	case y < 80:
		return 31, 111, 235
	}
	return 46, 125, 50
}
