package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/airlock-hpc/airlock/internal/config"
	"github.com/airlock-hpc/airlock/internal/realtest"
)

// TestServeDemo is `make run` as a newcomer meets it: the real binary's
// `serve` with the embedded defaults' profiles and the demo's (--demo adds
// them to a file that differs from the defaults only in max_load, which
// this busy machine would trip). Beside the desktop, the portal offers a
// Jupyter notebook and a Linux VM. The notebook, reached through the
// gateway on its own origin, runs Python through a kernel over a
// WebSocket (6*7 gives 42), and a client without the owner's login is
// kept out of it; the VM boots its guest, whose console text shows
// through the gateway.
func TestServeDemo(t *testing.T) {
	for _, p := range []string{"jupyter-notebook", "qemu-system-x86_64", "Xvnc", "busybox", "depmod"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s not installed (scripts/install-deps.sh installs it)", p)
		}
	}
	acct := realtest.Current(t)
	if os.Geteuid() == 0 {
		acct = realtest.TestUser(t)
	}
	bin := realtest.Binary(t)
	state := realtest.OutsideTmp(t, "airlock-demo-")
	defaults, err := exec.Command(bin, "config", "defaults").Output()
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.Replace(string(defaults), "\n  max_load: 2.0 ", "\n  max_load: 0   ", 1)
	if conf == string(defaults) {
		t.Fatal("no max_load: 2.0 in the defaults")
	}
	cfgFile := filepath.Join(state, "airlock.yaml")
	if err := os.WriteFile(cfgFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	const pw = "demo-test-pw"
	add := exec.Command(bin, "users", "add", acct.Name, "--password-stdin", "--config", cfgFile, "--state-dir", state)
	add.Stdin = strings.NewReader(pw + "\n")
	if o, err := add.CombinedOutput(); err != nil {
		t.Fatalf("airlock users add: %v\n%s", err, o)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	serve := exec.Command(bin, "serve", "--config", cfgFile, "--demo", "--listen", addr, "--state-dir", state)
	// The guest is cached where the tests keep theirs: the first run
	// builds it (about ten seconds and a 70 MB kernel package).
	serve.Env = append(os.Environ(), "AIRLOCK_DEMO_CACHE="+filepath.Join(realtest.StateBase(), "demo-vm"))
	var logs realtest.LockedBuffer
	serve.Stdout, serve.Stderr = &logs, &logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		serve.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- serve.Wait() }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			serve.Process.Kill()
			<-done
			t.Errorf("the gateway did not stop within 60s of SIGINT")
		}
		if t.Failed() {
			t.Logf("gateway log:\n%s", logs.String())
		}
	})
	if err := realtest.WaitFor(3*time.Minute, func() error {
		if !strings.Contains(logs.String(), "airlock gateway: https://") {
			return fmt.Errorf("not serving yet")
		}
		return nil
	}); err != nil {
		t.Fatalf("gateway: %v", err)
	}
	base := "https://" + addr

	// Browsers resolve *.localhost to loopback themselves; so does this
	// client.
	newClient := func() *http.Client {
		jar, _ := cookiejar.New(nil)
		d := &net.Dialer{}
		return &http.Client{Jar: jar, Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
			DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
				if host, port, err := net.SplitHostPort(a); err == nil && strings.HasSuffix(host, ".localhost") {
					a = net.JoinHostPort("127.0.0.1", port)
				}
				return d.DialContext(ctx, network, a)
			}}}
	}
	api := newClient()
	call := func(method, path, token string, body, out any) int {
		t.Helper()
		var rd io.Reader
		if body != nil {
			j, _ := json.Marshal(body)
			rd = bytes.NewReader(j)
		}
		req, _ := http.NewRequest(method, base+path, rd)
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		} else {
			req.SetBasicAuth(acct.Name, pw)
		}
		resp, err := api.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if out != nil {
			json.Unmarshal(b, out)
		}
		return resp.StatusCode
	}
	var tok struct{ Token string }
	if code := call("POST", "/api/v1/tokens", "", map[string]any{}, &tok); code != http.StatusCreated {
		t.Fatalf("log in: %d", code)
	}
	var profiles struct{ Profiles []struct{ Name, Kind string } }
	call("GET", "/api/v1/profiles", tok.Token, nil, &profiles)
	kinds := map[string]string{}
	for _, p := range profiles.Profiles {
		kinds[p.Name] = p.Kind
	}
	if kinds["desktop"] != "desktop" || kinds["jupyter"] != "app" || kinds["vm"] != "vm" {
		t.Fatalf("the demo offers %v, want a desktop, a jupyter app and a vm", kinds)
	}
	launch := func(profile string) string {
		var s struct{ ID string }
		if code := call("POST", "/api/v1/sessions", tok.Token, map[string]any{"profile": profile}, &s); code != http.StatusCreated {
			t.Fatalf("launch %s: %d", profile, code)
		}
		return s.ID
	}
	ready := func(id string) {
		t.Helper()
		if err := realtest.WaitFor(3*time.Minute, func() error {
			var s struct{ State, Reason string }
			call("GET", "/api/v1/sessions/"+id, tok.Token, nil, &s)
			if s.State == "ended" {
				t.Fatalf("session %s ended: %s", id, s.Reason)
			}
			if s.State != "ready" {
				return fmt.Errorf("%s", s.State)
			}
			return nil
		}); err != nil {
			t.Fatalf("session %s: %v", id, err)
		}
	}
	vmStart := time.Now()
	vmID := launch("vm")
	nb := launch("jupyter")

	// The owner's browser: the login form, then the portal's link to the
	// app, which hands over to the app's own origin.
	browser := newClient()
	login := url.Values{"user": {acct.Name}, "password": {pw}, "next": {"/"}}
	req, _ := http.NewRequest("POST", base+"/login", strings.NewReader(login.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := browser.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	ready(nb)
	var page string
	var appBase *url.URL
	if err := realtest.WaitFor(2*time.Minute, func() error {
		resp, err := browser.Get(base + "/s/" + nb + "/app/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(string(b), "Jupyter") {
			return fmt.Errorf("%s: %d %.200s", resp.Request.URL, resp.StatusCode, b)
		}
		page, appBase = string(b), &url.URL{Scheme: "https", Host: resp.Request.URL.Host}
		return nil
	}); err != nil {
		t.Fatalf("the notebook's page: %v", err)
	}
	if !strings.HasPrefix(appBase.Host, nb+".apps.localhost:") {
		t.Fatalf("the notebook is served at %s, not on its own origin (%.100s)", appBase, page)
	}
	xsrf := ""
	for _, c := range browser.Jar.Cookies(appBase) {
		if c.Name == "_xsrf" {
			xsrf = c.Value
		}
	}
	post, _ := http.NewRequest("POST", appBase.String()+"/api/kernels", strings.NewReader(`{"name":"python3"}`))
	post.Header.Set("X-XSRFToken", xsrf)
	post.Header.Set("Content-Type", "application/json")
	resp, err = browser.Do(post)
	if err != nil {
		t.Fatal(err)
	}
	var kernel struct{ ID string }
	json.NewDecoder(resp.Body).Decode(&kernel)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || kernel.ID == "" {
		t.Fatalf("start a kernel: %d %+v", resp.StatusCode, kernel)
	}
	ws, _, err := websocket.Dial(ctx, "wss://"+appBase.Host+"/api/kernels/"+kernel.ID+"/channels",
		&websocket.DialOptions{HTTPClient: browser, HTTPHeader: http.Header{"Origin": {appBase.String()}}})
	if err != nil {
		t.Fatalf("the kernel's WebSocket: %v", err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(1 << 22)
	exec := map[string]any{
		"header":        map[string]any{"msg_id": "airlock-1", "username": acct.Name, "session": "airlock-test", "msg_type": "execute_request", "version": "5.3"},
		"parent_header": map[string]any{}, "metadata": map[string]any{}, "channel": "shell", "buffers": []any{},
		"content": map[string]any{"code": "6*7", "silent": false, "store_history": false, "user_expressions": map[string]any{}, "allow_stdin": false, "stop_on_error": true},
	}
	b, _ := json.Marshal(exec)
	if err := ws.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatal(err)
	}
	for {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Minute)
		_, m, err := ws.Read(rctx)
		rcancel()
		if err != nil {
			t.Fatalf("waiting for the kernel's answer: %v", err)
		}
		var msg struct {
			Header struct {
				MsgType string `json:"msg_type"`
			}
			Content struct {
				Data map[string]string
			}
		}
		json.Unmarshal(m, &msg)
		if msg.Header.MsgType == "execute_result" {
			if got := msg.Content.Data["text/plain"]; got != "42" {
				t.Fatalf("the kernel says 6*7 is %q", got)
			}
			break
		}
	}

	// Someone without the owner's login reaches nothing of the notebook:
	// the app's host sends them to the gateway to sign in.
	stranger := newClient()
	stranger.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for _, p := range []string{"/tree", "/api/kernels", "/api/kernels/" + kernel.ID} {
		resp, err := stranger.Get(appBase.String() + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if !(resp.StatusCode == http.StatusSeeOther && strings.HasPrefix(loc, base+"/s/"+nb+"/app/")) && resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("a stranger's GET %s: %d %s %.200s, want a redirect to the gateway's sign-in or 401", p, resp.StatusCode, loc, b)
		}
	}

	// The VM: its console, through the gateway, shows the guest's text.
	ready(vmID)
	cws, _, err := websocket.Dial(ctx, "wss://"+addr+"/s/"+vmID+"/console/",
		&websocket.DialOptions{HTTPClient: browser, HTTPHeader: http.Header{"Origin": {base}}})
	if err != nil {
		t.Fatalf("the VM's console: %v", err)
	}
	defer cws.CloseNow()
	rfb, err := realtest.NewRFB(websocket.NetConn(ctx, cws, websocket.MessageBinary))
	if err != nil {
		t.Fatal(err)
	}
	// The guest says on its serial port when its shell is up.
	serial := func() string {
		var log string
		filepath.WalkDir(state, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Name() == "serial.log" && strings.Contains(p, vmID) {
				b, _ := os.ReadFile(p)
				log = string(b)
			}
			return nil
		})
		return log
	}
	if err := realtest.WaitFor(5*time.Minute, func() error {
		if !strings.Contains(serial(), "airlock demo VM: ready; your folder") {
			return fmt.Errorf("serial log: %q", serial())
		}
		return nil
	}); err != nil {
		t.Fatalf("the demo VM did not come up with the owner's folder: %v", err)
	}
	booted := time.Since(vmStart)
	lit := 0
	if err := realtest.WaitFor(time.Minute, func() error {
		if err := rfb.Update(false); err != nil {
			t.Fatalf("console: %v", err)
		}
		// The guest's motd, light text on black in the upper half.
		lit = 0
		for i := 0; i+3 < len(rfb.Frame)/2; i += 4 {
			if int(rfb.Frame[i])+int(rfb.Frame[i+1])+int(rfb.Frame[i+2]) > 300 {
				lit++
			}
		}
		if lit < 3000 {
			return fmt.Errorf("%d lit pixels", lit)
		}
		return nil
	}); err != nil {
		t.Fatalf("the demo VM's console shows no guest text: %v", err)
	}
	t.Logf("demo VM: launch to its shell in %v; its console shows %d lit pixels", booted.Round(100*time.Millisecond), lit)
}

// TestDemoProfilesYieldToTheFile: with serve --demo, a file's own
// profile named like a demo profile stays, and the demo's is left out
// (two profiles of one name would make URLs and launches ambiguous).
func TestDemoProfilesYieldToTheFile(t *testing.T) {
	if _, err := exec.LookPath("jupyter-notebook"); err != nil {
		t.Skip("jupyter-notebook not installed (scripts/install-deps.sh installs it)")
	}
	cfg, err := config.Parse("mine.yaml", []byte("profiles:\n  - name: jupyter\n    kind: app\n    title: Mine\n    app: {command: [my-app, \"{port}\"], port: 9000}\n"))
	if err != nil {
		t.Fatal(err)
	}
	getenv := func(k string) string {
		if k == "AIRLOCK_DEMO_CACHE" {
			return filepath.Join(realtest.StateBase(), "demo-vm")
		}
		return os.Getenv(k)
	}
	addDemoProfiles(t.Context(), &cfg, getenv, slog.New(slog.DiscardHandler))
	n := 0
	for _, p := range cfg.Profiles {
		if p.Name == "jupyter" {
			n++
			if p.Title != "Mine" {
				t.Errorf("the jupyter profile is the demo's: %+v", p)
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d profiles named jupyter", n)
	}
}
