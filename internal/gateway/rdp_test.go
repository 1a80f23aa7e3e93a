package gateway

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"io"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/portal"
	"github.com/airlock-hpc/airlock/internal/rdpclient"
	"github.com/airlock-hpc/airlock/internal/rdpfile"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// rdpGateway starts a gateway with its RDP port on 127.0.0.1 and a desktop
// profile "rdpdesk" whose xterm writes the first line typed into it to
// typedFile.
func rdpGateway(t *testing.T, typedFile string) (*testGateway, net.Listener) {
	return rdpGatewayWith(t, typedFile, nil, nil)
}

// rdpGatewayPortal is rdpGateway with the portal's pages.
func rdpGatewayPortal(t *testing.T, typedFile string) (*testGateway, net.Listener) {
	p, err := portal.New()
	if err != nil {
		t.Fatal(err)
	}
	return rdpGatewayWith(t, typedFile, p, nil)
}

func rdpGatewayWith(t *testing.T, typedFile string, pr PortalRenderer, mod func(*Profile)) (*testGateway, net.Listener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tg := startGateway(t, "", func(c *Config) {
		c.RDPListen, c.RDPAddress = ln.Addr().String(), ln.Addr().String()
		if pr != nil {
			c.Portal = pr
		}
		p := desktopProfile()
		p.Name, p.RDP, p.Geometry = "rdpdesk", true, "800x600"
		p.Programs = [][]string{{"xterm", "-geometry", "60x15+0+0", "-e", "sh", "-c",
			`echo RDP-XTERM-READY; read l; echo "$l" > ` + typedFile + `; exec sleep 3600`}}
		if mod != nil {
			mod(&p)
		}
		c.Profiles = append(c.Profiles, p)
	}, "alice", "bob")
	serveRDP(t, tg.g, ln)
	return tg, ln
}

// serveRDP serves g's RDP port on ln until the test ends.
func serveRDP(tb testing.TB, g *Gateway, ln net.Listener) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.ServeRDP(ctx, ln) }()
	tb.Cleanup(func() { cancel(); <-done })
}

func needRDPTools(t *testing.T) {
	t.Helper()
	for _, p := range []string{"xrdp", "xfreerdp", "Xvfb", "xdotool", "import", "Xvnc", "xterm", "openssl"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s not installed (scripts/install-deps.sh installs it)", p)
		}
	}
}

// rdpFile asks the API for a session's .airlock file, with c's token, or
// with its login cookie as the portal's session page does.
func rdpFile(t *testing.T, c *client, id string) (*rdpfile.File, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", c.tg.url+"/api/v1/sessions/"+id+"/rdp", nil)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	} else {
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 201 {
		t.Fatalf("rdp file: %d %s", resp.StatusCode, b)
	}
	f, err := rdpfile.Parse(b)
	if err != nil {
		t.Fatalf("rdp file: %v\n%s", err, b)
	}
	return f, resp.Header.Get("X-Airlock-Token-Id")
}

// startXvfb starts an X server for the client and returns its DISPLAY.
// The display number is a random high one, not the first free one
// (-displayfd alone picks :0 up): an X server of another test in a mount
// namespace of its own holds no lock file in this /tmp but may hold the
// abstract socket of a low display, which the client would reach instead
// ("failed to open display :0", seen in CI). -displayfd still says when
// the server is ready; a display that is taken makes it exit, and another
// is tried. -noreset: without it Xvfb resets whenever its last client
// leaves, and the test's xdotool polls come and go while xfreerdp opens
// its display; a connection that lands in a reset is dropped ("failed to
// open display :2635", seen in CI with a display nobody else held).
func startXvfb(t *testing.T) string {
	t.Helper()
	for range 20 {
		n := 200 + mathrand.IntN(30000)
		if _, err := os.Stat(fmt.Sprintf("/tmp/.X%d-lock", n)); err == nil {
			continue
		}
		r, w, _ := os.Pipe()
		cmd := exec.Command("Xvfb", fmt.Sprintf(":%d", n), "-displayfd", "3", "-screen", "0", "1280x900x24", "-nolisten", "tcp", "-noreset")
		cmd.ExtraFiles = []*os.File{w}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		w.Close()
		line, err := bufio.NewReader(r).ReadString('\n')
		r.Close()
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			continue
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return ":" + strings.TrimSpace(line)
	}
	t.Fatal("Xvfb: no free display in 20 tries")
	return ""
}

// TestRDPDesktopXfreerdp is the whole path with real parts: Debian's
// xfreerdp under Xvfb, started by `airlock rdp FILE`, through the
// gateway's RDP port and the session's tls connector to xrdp in the seal,
// bridged to the session's own Xvnc. The client window shows the remote
// desktop (pixels), and a line typed into it reaches the xterm.
func TestRDPDesktopXfreerdp(t *testing.T) { rdpDesktopE2E(t, false, "") }

// TestRDPDesktopVNCPassword is the same with desktop.vnc_password: xrdp
// answers Xvnc's per-session password itself.
func TestRDPDesktopVNCPassword(t *testing.T) { rdpDesktopE2E(t, true, "") }

// TestRDPDesktopShadowNLA is the same with rdp_server: shadow: xfreerdp
// logs on to FreeRDP's shadow server with NLA, with the session's
// one-time password that the .airlock file carries and `airlock rdp`
// hands it on its standard input; TLS and CredSSP run end to end.
func TestRDPDesktopShadowNLA(t *testing.T) {
	if _, err := exec.LookPath("freerdp-shadow-cli"); err != nil {
		t.Skip("freerdp-shadow-cli not installed (scripts/install-deps.sh installs freerdp2-shadow-x11)")
	}
	rdpDesktopE2E(t, false, RDPServerShadow)
}

func rdpDesktopE2E(t *testing.T, vncPassword bool, server string) {
	needRDPTools(t)
	owner := realtest.Current(t)
	if os.Geteuid() == 0 {
		owner = realtest.TestUser(t)
	}
	dir := ownerDir(t, owner, "airlock-rdp-")
	typed := filepath.Join(dir, "typed")
	tg, _ := rdpGatewayWith(t, typed, nil, func(p *Profile) { p.VNCPassword, p.RDPServer = vncPassword, server })
	alice := tg.client().loginToken("alice")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("session logs:\n%s", connectorLog(t, tg, ""))
		}
	})
	s := alice.launch("rdpdesk")
	f, _ := rdpFile(t, alice, s.ID)
	if server == RDPServerShadow && f.Password == "" {
		t.Fatal("the .airlock file has no password for the shadow server's NLA")
	}
	fileDir := t.TempDir()
	path := filepath.Join(fileDir, s.ID+".airlock")
	b, _ := f.Marshal()
	os.WriteFile(path, b, 0o600)

	display := startXvfb(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, realtest.Binary(t), "rdp", path)
	cmd.Env = append(os.Environ(), "DISPLAY="+display, "WAYLAND_DISPLAY=")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		t.Logf("airlock rdp:\n%s", out.String())
	}()
	xdo := func(args ...string) (string, error) {
		c := exec.Command("xdotool", args...)
		c.Env = append(os.Environ(), "DISPLAY="+display)
		o, err := c.Output()
		return strings.TrimSpace(string(o)), err
	}
	var win string
	if err := realtest.WaitFor(60*time.Second, func() error {
		w, err := xdo("search", "--name", "FreeRDP")
		if err != nil || w == "" {
			return fmt.Errorf("no FreeRDP window yet (%v)", err)
		}
		win = strings.Fields(w)[0]
		return nil
	}); err != nil {
		t.Fatalf("%v\n%s\nsession log:\n%s", err, out.String(), connectorLog(t, tg, s.ID))
	}
	shot := filepath.Join(cmp.Or(os.Getenv("AIRLOCK_TEST_ARTIFACTS"), fileDir), fmt.Sprintf("rdp-xfreerdp-vncpw-%v%s.png", vncPassword, server))
	// The remote desktop is drawn: the xterm (white) on Xvnc's black root.
	if err := realtest.WaitFor(60*time.Second, func() error {
		c := exec.Command("import", "-window", win, shot)
		c.Env = append(os.Environ(), "DISPLAY="+display)
		if o, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("import: %v %s", err, o)
		}
		white, dark, total, err := countPixels(shot)
		if err != nil {
			return err
		}
		// xrdp's login dialog (teal) or a blank window fails this.
		if white < 5000 || dark < total/2 {
			return fmt.Errorf("screenshot not drawn yet: %d white, %d dark pixels", white, dark)
		}
		return nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Logf("screenshot of the client window: %s", shot)

	// Type a line into the xterm: the pointer over it gives it the focus
	// (no window manager: focus follows the pointer).
	if _, err := xdo("mousemove", "--window", win, "100", "60"); err != nil {
		t.Fatal(err)
	}
	line := "typed-through-rdp-42"
	if err := realtest.WaitFor(30*time.Second, func() error {
		if b, err := os.ReadFile(typed); err == nil {
			if strings.TrimSpace(string(b)) != line {
				return fmt.Errorf("typed file has %q", b)
			}
			return nil
		}
		xdo("windowfocus", "--sync", win)
		xdo("mousemove", "--window", win, "100", "60")
		xdo("click", "1")
		xdo("type", "--delay", "40", line)
		xdo("key", "Return")
		return errors.New("the line has not reached the xterm yet")
	}); err != nil {
		c := exec.Command("import", "-window", win, shot+".after.png")
		c.Env = append(os.Environ(), "DISPLAY="+display)
		c.Run()
		t.Fatal(err)
	}
	audits, err := tg.cfg.Store.ListAudit(context.Background(), store.AuditFilter{Session: s.ID})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, a := range audits {
		found = found || (a.Action == "connect" && a.Detail == "rdp (control)" && a.Actor == "alice")
	}
	if !found {
		t.Errorf("no audit of the RDP connection: %+v", audits)
	}
}

// countPixels counts near-white and near-black pixels of a PNG.
func countPixels(path string) (white, dark, total int, err error) {
	fh, err := os.Open(path)
	if err != nil {
		return 0, 0, 0, err
	}
	defer fh.Close()
	img, err := png.Decode(fh)
	if err != nil {
		return 0, 0, 0, err
	}
	bnd := img.Bounds()
	for y := bnd.Min.Y; y < bnd.Max.Y; y++ {
		for x := bnd.Min.X; x < bnd.Max.X; x++ {
			r, g, b, _ := img.At(x, y).RGBA()
			switch {
			case r > 0xE000 && g > 0xE000 && b > 0xE000:
				white++
			case r < 0x2000 && g < 0x2000 && b < 0x2000:
				dark++
			}
		}
	}
	return white, dark, bnd.Dx() * bnd.Dy(), nil
}

// TestRDPRefusals attacks the RDP port of a gateway with a running
// desktop session that serves RDP: each attempt is refused with a reason
// in the audit log, and none reaches the session's connector (its runner
// logs no connection).
func TestRDPRefusals(t *testing.T) {
	needRDPTools(t)
	tg, ln := rdpGatewayPortal(t, "/dev/null")
	addr := ln.Addr().String()
	alice := tg.client().loginToken("alice")
	s := alice.launch("rdpdesk")
	good, tokenID := rdpFile(t, alice, s.ID)

	// The owner's session page offers the file; bob, even with a
	// control share, is not offered one (a file is the owner's).
	page := tg.client().loginCookie("alice")
	if code, body := page.do("GET", "/sessions/"+s.ID, nil, nil); code != 200 || !strings.Contains(body, `id="rdp-download"`) {
		t.Errorf("owner's session page: %d, offers no .airlock file", code)
	}
	var sh struct{ URL string }
	alice.do("POST", "/api/v1/sessions/"+s.ID+"/shares", map[string]any{"mode": "control"}, &sh)
	bobPage := tg.client().loginCookie("bob")
	if code, body := bobPage.do("GET", strings.TrimPrefix(sh.URL, tg.url), nil, nil); code >= 400 || strings.Contains(body, `id="rdp-download"`) {
		t.Errorf("a share's viewer: %d, offered an .airlock file: %v", code, strings.Contains(body, `id="rdp-download"`))
	}
	// Nor may bob get one by asking, through the portal (his cookie, with
	// the control share) or the API (his token); nor revoke alice's.
	bobAPI := tg.client().loginToken("bob")
	for _, c := range []struct {
		via string
		c   *client
	}{{"portal", bobPage}, {"API", bobAPI}} {
		if code, body := c.c.do("POST", "/api/v1/sessions/"+s.ID+"/rdp", nil, nil); code != 404 {
			t.Errorf("bob (%s) asked for a file of alice's session: %d %s, want 404", c.via, code, body)
		}
		if code, body := c.c.do("DELETE", "/api/v1/tokens/"+tokenID, nil, nil); code != 404 {
			t.Errorf("bob (%s) revoked alice's file: %d %s, want 404", c.via, code, body)
		}
	}
	var bobToks struct{ Tokens []struct{ ID string } }
	if bobAPI.do("GET", "/api/v1/tokens", nil, &bobToks); len(bobToks.Tokens) != 1 {
		t.Errorf("bob's tokens after asking for a file: %+v, want only his API token", bobToks.Tokens)
	}
	ctx := context.Background()

	// The good file is admitted (and so the refusals below are refusals;
	// bob's attempt to revoke it did nothing).
	tun, err := rdpclient.New(good, nil)
	if err != nil {
		t.Fatal(err)
	}
	open, err := tun.Dial(ctx)
	if err != nil {
		t.Fatalf("good file refused: %v", err)
	}
	connects := func() int {
		t.Helper()
		n := 0
		for _, line := range strings.Split(connectorLog(t, tg, s.ID), "\n") {
			if strings.Contains(line, "connector=rdp") && strings.Contains(line, "msg=connected") ||
				strings.Contains(line, `"connector":"rdp"`) && strings.Contains(line, `"msg":"connected"`) {
				n++
			}
		}
		return n
	}
	if err := realtest.WaitFor(10*time.Second, func() error {
		if connects() != 1 {
			return fmt.Errorf("the connector logged %d connections, want 1:\n%s", connects(), connectorLog(t, tg, s.ID))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	mkFile := func(cert leaf) *rdpfile.File {
		f := *good
		f.CertPEM, f.KeyPEM = string(cert.certPEM), string(cert.keyPEM)
		return &f
	}
	now := time.Now()
	// A certificate from the gateway's own CA that the store never issued
	// (bob's, naming alice's session: what a forged record would be).
	unknown, err := tg.g.rdp.client.issue("bob", s.ID, "", true, now.Add(-time.Minute), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// Bob's certificate recorded in the store, naming alice's session.
	tg.client().loginToken("bob") // bob is a user the store knows
	bobs, _ := tg.g.rdp.client.issue("bob", s.ID, "", true, now.Add(-time.Minute), now.Add(time.Hour))
	if err := tg.cfg.Store.CreateToken(ctx, session.Token{ID: "rdp-bob", User: "bob", Name: "x", Created: now, Hash: rdpCertHash(bobs.der)}); err != nil {
		t.Fatal(err)
	}
	// A certificate for another session of alice's.
	other, _ := tg.g.rdp.client.issue("alice", "s-other", "", true, now.Add(-time.Minute), now.Add(time.Hour))
	tg.cfg.Store.CreateToken(ctx, session.Token{ID: "rdp-other", User: "alice", Name: "x", Created: now, Hash: rdpCertHash(other.der)})
	// An expired one, recorded.
	expired, _ := tg.g.rdp.client.issue("alice", s.ID, "", true, now.Add(-2*time.Hour), now.Add(-time.Hour))
	tg.cfg.Store.CreateToken(ctx, session.Token{ID: "rdp-expired", User: "alice", Name: "x", Created: now, Hash: rdpCertHash(expired.der)})
	// One from another CA, naming alice and her session.
	dir := t.TempDir()
	strange, err := loadOrMakeCA(dir, "strange", "not airlock")
	if err != nil {
		t.Fatal(err)
	}
	foreign, _ := strange.issue("alice", s.ID, "", true, now.Add(-time.Minute), now.Add(time.Hour))
	// The hop certificate's CA: a connector's, not a user's.
	hopUser, _ := tg.g.rdp.hop.issue("alice", s.ID, "", true, now.Add(-time.Minute), now.Add(time.Hour))

	dialWith := func(f *rdpfile.File) error {
		tun, err := rdpclient.New(f, nil)
		if err != nil {
			return err
		}
		tun.Now = func() time.Time { return now } // the client's own expiry check is not what is tested
		c, err := tun.Dial(ctx)
		if err == nil {
			c.Close()
			return errors.New("admitted")
		}
		return err
	}
	cases := []struct {
		name   string
		try    func() error
		reason string
	}{
		{"no client certificate", func() error {
			c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = c.Read(make([]byte, 1))
			return err
		}, "TLS handshake failed"},
		{"plain TCP", func() error {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return err
			}
			defer c.Close()
			c.Write([]byte("\x03\x00\x00\x13\x0e\xe0\x00\x00\x00\x00\x00\x01\x00\x08\x00\x03\x00\x00\x00"))
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			b, err := io.ReadAll(c)
			if err == nil && !bytes.Contains(b, []byte(rdpfile.StatusOK)) {
				err = fmt.Errorf("closed after %d bytes", len(b))
			}
			return err
		}, "TLS handshake failed"},
		{"unknown certificate of the gateway's CA", func() error { return dialWith(mkFile(unknown)) }, "certificate revoked (or unknown)"},
		{"another user's certificate", func() error { return dialWith(mkFile(bobs)) }, "not the session's owner"},
		{"another session's certificate", func() error { return dialWith(mkFile(other)) }, "no such session"},
		{"expired certificate", func() error { return dialWith(mkFile(expired)) }, "TLS handshake failed"},
		{"certificate from another CA", func() error { return dialWith(mkFile(foreign)) }, "TLS handshake failed"},
		{"certificate from the hop CA", func() error { return dialWith(mkFile(hopUser)) }, "TLS handshake failed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := refusals(t, tg)
			if err := c.try(); err == nil {
				t.Fatal("admitted")
			} else {
				t.Logf("client side: %v", err)
			}
			if err := realtest.WaitFor(10*time.Second, func() error {
				got := refusals(t, tg)
				if len(got) <= len(before) {
					return errors.New("no refusal audited")
				}
				if !strings.HasPrefix(got[0].Detail, c.reason) {
					return fmt.Errorf("refusal %q, want %q", got[0].Detail, c.reason)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		})
	}
	// The user's own good certificate presented straight to the session's
	// connector (as someone on the node could): the connector trusts only
	// the hop CA and refuses it in the handshake.
	st, err := tg.cfg.Store.GetSession(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := good.Certificate()
	direct, err := tls.Dial("unix", strings.TrimPrefix(st.Endpoints[ConnRDP], "unix:"), &tls.Config{
		InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}})
	if err == nil {
		direct.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = direct.Read(make([]byte, 1))
		direct.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a user's certificate straight to the connector: %v, want a refused certificate", err)
	}
	if n := connects(); n != 1 {
		t.Errorf("the connector saw %d connections, want only the good one", n)
	}

	// Revoking the file closes its open tunnel at once and refuses the
	// next one with a sentence: with the API (alice's token) and with the
	// portal (her cookie: the session page's download, the revoke button
	// under her API tokens).
	waitClosed := func(after string, open net.Conn) {
		t.Helper()
		open.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, open); err != nil && !errors.Is(err, io.EOF) {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("%s: the open tunnel was not closed", after)
			}
		}
		open.Close()
	}
	revoke := func(via string, c *client, f *rdpfile.File, id string, open net.Conn, seen int) {
		t.Helper()
		if code, body := c.do("DELETE", "/api/v1/tokens/"+id, nil, nil); code != 204 {
			t.Fatalf("revoke (%s): %d %s", via, code, body)
		}
		waitClosed("revoke ("+via+")", open)
		if err := dialWith(f); err == nil || !strings.Contains(err.Error(), "revoked") {
			t.Fatalf("revoked (%s) file: %v", via, err)
		}
		if n := connects(); n != seen {
			t.Errorf("after the revocation (%s) the connector saw %d connections, want %d", via, n, seen)
		}
	}
	revoke("API", alice, good, tokenID, open, 1)
	viaPortal, portalTokenID := rdpFile(t, page, s.ID)
	tun, err = rdpclient.New(viaPortal, nil)
	if err != nil {
		t.Fatal(err)
	}
	open, err = tun.Dial(ctx)
	if err != nil {
		t.Fatalf("the portal's file refused: %v", err)
	}
	if err := realtest.WaitFor(10*time.Second, func() error {
		if n := connects(); n != 2 {
			return fmt.Errorf("the connector logged %d connections, want 2", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	revoke("portal", page, viaPortal, portalTokenID, open, 2)

	// airlock login (password on stdin, the gateway's certificate pinned),
	// then airlock rdp SESSION fetches a fresh file with the stored token.
	cfgDir := t.TempDir()
	t.Setenv("AIRLOCK_CONFIG_DIR", cfgDir)
	var lout bytes.Buffer
	if code := rdpclient.CmdLogin(ctx, []string{"--user", "alice", "--pin", good.PinSHA256, tg.url}, strings.NewReader(testPassword+"\n"), &lout, &lout); code != 0 {
		t.Fatalf("airlock login: exit %d: %s", code, lout.String())
	}
	if fi, err := os.Stat(filepath.Join(cfgDir, "login.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("login.json: %v %v", fi, err)
	}
	lout.Reset()
	if code := rdpclient.CmdLogin(ctx, []string{"--user", "alice", "--pin", strings.Repeat("00", 32), tg.url}, strings.NewReader(testPassword+"\n"), &lout, &lout); code != 1 || !strings.Contains(lout.String(), "not sending your password") {
		t.Errorf("login with a wrong pin: exit %d: %s", code, lout.String())
	}
	var rout realtest.LockedBuffer
	rctx, rcancel := context.WithCancel(ctx)
	rdone := make(chan int, 1)
	go func() { rdone <- rdpclient.CmdRDP(rctx, []string{"--no-launch", s.ID}, &rout, &rout) }()
	if err := realtest.WaitFor(20*time.Second, func() error {
		if !strings.Contains(rout.String(), "point your RDP client at") {
			return fmt.Errorf("airlock rdp SESSION: %q", rout.String())
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	rcancel()
	if code := <-rdone; code != 0 {
		t.Errorf("airlock rdp SESSION: exit %d: %s", code, rout.String())
	}

	// A stopped session: its open tunnel closes, and a fresh file's
	// connection is refused plainly.
	fresh, _ := rdpFile(t, alice, s.ID)
	tun, err = rdpclient.New(fresh, nil)
	if err != nil {
		t.Fatal(err)
	}
	if open, err = tun.Dial(ctx); err != nil {
		t.Fatalf("the fresh file refused: %v", err)
	}
	if code, body := alice.do("DELETE", "/api/v1/sessions/"+s.ID, nil, nil); code >= 300 {
		t.Fatalf("stop: %d %s", code, body)
	}
	waitClosed("stop", open)
	alice.waitState(s.ID, "ended")
	err = dialWith(fresh)
	if err == nil || !strings.Contains(err.Error(), "no longer running") {
		t.Fatalf("stopped session: %v", err)
	}
}

// refusals are the gateway's rdp_refused audit events, newest first.
func refusals(t *testing.T, tg *testGateway) []session.AuditEvent {
	t.Helper()
	all, err := tg.cfg.Store.ListAudit(context.Background(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var out []session.AuditEvent
	for _, a := range all {
		if a.Action == "rdp_refused" {
			out = append(out, a)
		}
	}
	return out
}

// connectorLog is the session's runner log (its connectors log there).
func connectorLog(t *testing.T, tg *testGateway, id string) string {
	t.Helper()
	var all []byte
	filepath.Walk(filepath.Join(tg.stateDir, "sessions", id), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && strings.HasSuffix(p, ".log") {
			b, _ := os.ReadFile(p)
			all = append(all, b...)
		}
		return nil
	})
	return string(all)
}

// TestRDPClientPin: `airlock rdp` against a gateway whose certificate is
// not the pinned one refuses before sending anything: the impostor never
// sees a client certificate, and the user gets one plain sentence.
func TestRDPClientPin(t *testing.T) {
	dir := t.TempDir()
	ca, err := loadOrMakeCA(dir, "ca", "test")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	client, _ := ca.issue("alice", "s-1", "", true, now.Add(-time.Minute), now.Add(time.Hour))
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: randSerial(), Subject: pkix.Name{CommonName: "impostor"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		DNSNames: []string{"127.0.0.1"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	sawCert := make(chan int, 10)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		ClientAuth:   tls.RequestClientCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				tc.Handshake()
				sawCert <- len(tc.ConnectionState().PeerCertificates)
				b, _ := io.ReadAll(c)
				got <- b
			}()
		}
	}()
	f := &rdpfile.File{Version: 1, Gateway: ln.Addr().String(), PinSHA256: strings.Repeat("ab", 32), Session: "s-1", User: "alice",
		Expires: now.Add(time.Hour), CertPEM: string(client.certPEM), KeyPEM: string(client.keyPEM)}
	b, _ := f.Marshal()
	path := filepath.Join(dir, "s-1.airlock")
	os.WriteFile(path, b, 0o600)
	var out bytes.Buffer
	code := rdpclient.CmdRDP(context.Background(), []string{"--no-launch", path}, &out, &out)
	if code != 1 || !strings.Contains(out.String(), "is not the one this file was made for") || strings.Count(strings.TrimSpace(out.String()), "\n") > 0 {
		t.Fatalf("exit %d, output %q", code, out.String())
	}
	select {
	case n := <-sawCert:
		if n != 0 {
			t.Fatalf("the impostor received %d client certificates", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the impostor saw no handshake")
	}
	if b := <-got; len(b) != 0 {
		t.Fatalf("the impostor received %d bytes of data", len(b))
	}
}

// TestRDPFileAPIRefusals: only the owner gets a file, only for a session
// that serves RDP, only when the gateway has an RDP port.
func TestRDPFileAPIRefusals(t *testing.T) {
	tg, _ := rdpGateway(t, "/dev/null")
	alice := tg.client().loginToken("alice")
	bob := tg.client().loginToken("bob")
	s := alice.launch("app")
	if code, body := alice.do("POST", "/api/v1/sessions/"+s.ID+"/rdp", nil, nil); code != 409 || !strings.Contains(body, "serves no RDP") {
		t.Errorf("app session: %d %s", code, body)
	}
	if code, _ := bob.do("POST", "/api/v1/sessions/"+s.ID+"/rdp", nil, nil); code != 404 {
		t.Errorf("bob got a file for alice's session: %d", code)
	}
	// Neither refusal left a certificate on record.
	for _, c := range []*client{alice, bob} {
		var toks struct{ Tokens []struct{ ID string } }
		if code, body := c.do("GET", "/api/v1/tokens", nil, &toks); code != 200 || len(toks.Tokens) != 1 {
			t.Errorf("tokens after the refusals: %d %s, want only the API token", code, body)
		}
	}
	// A gateway with no RDP port gives no file.
	off := startGateway(t, "", nil, "alice")
	offAlice := off.client().loginToken("alice")
	other := offAlice.start(map[string]any{"profile": "app"})
	if code, body := offAlice.do("POST", "/api/v1/sessions/"+other.ID+"/rdp", nil, nil); code != 404 || !strings.Contains(body, "rdp_off") {
		t.Errorf("a gateway with no RDP port: %d %s, want 404 rdp_off", code, body)
	}
}

// TestRDPVM: the VM path. The tiny test guest cannot run an RDP server;
// it serves a line ("RDP-PONG") on its port 3389, which QEMU forwards to
// the seal's loopback. Through an .airlock file, `airlock rdp`'s tunnel,
// the gateway's RDP port and the session's tls connector, that line
// arrives: the same path a Windows guest's RDP takes (the desktop test
// covers a real RDP client on it).
func TestRDPVM(t *testing.T) {
	g := realtest.BuildGuest(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	probe := fmt.Sprintf("airlock-rdp-vm-%d.txt", time.Now().UnixNano())
	tg := startGateway(t, "", func(c *Config) {
		c.RDPListen, c.RDPAddress = ln.Addr().String(), ln.Addr().String()
		c.Profiles = append(c.Profiles, vmProfile(g, probe))
	}, "alice")
	serveRDP(t, tg.g, ln)
	ctx := context.Background()
	alice := tg.client().loginToken("alice")
	s := alice.waitStateFor(alice.start(map[string]any{"profile": "vm"}).ID, "ready", 120*time.Second)
	f, _ := rdpFile(t, alice, s.ID)
	tun, err := rdpclient.New(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := realtest.WaitFor(180*time.Second, func() error {
		c, err := tun.Dial(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, _ := io.ReadAll(c)
		if !strings.Contains(string(b), "RDP-PONG") {
			return fmt.Errorf("the guest's port answered %q", b)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestRDPSpecs: what an RDP desktop's spec carries with the local backend
// (connector certificate files from the hop CA in the session directory)
// and with a remote one (the hop CA inline, a TCP listener whose
// certificate the runner makes and the gateway pins); without an RDP port
// nothing changes.
func TestRDPSpecs(t *testing.T) {
	s := &session.Session{ID: "s-0123456789ab", Owner: "alice", CPUs: 1, MemoryMB: 1024, Lifetime: time.Hour}
	p := desktopProfile()
	p.RDP = true
	for _, remote := range []bool{false, true} {
		g := &Gateway{cfg: Config{StateDir: t.TempDir(), Backend: localStub{}, RDPListen: "127.0.0.1:8444"}, master: make([]byte, 32)}
		if remote {
			g.cfg.Backend, g.remote = remoteStub{}, remoteStub{}
		}
		if err := g.initRDP(); err != nil {
			t.Fatal(err)
		}
		b, err := g.spec(s, p, LaunchRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var spec struct {
			Processes  []struct{ Argv []string }
			Connectors []struct{ Name, Kind, Target, Listen string }
			TLS        struct {
				CertFile     string `json:"cert_file"`
				KeyFile      string `json:"key_file"`
				ClientCAFile string `json:"client_ca_file"`
				ClientCAPEM  string `json:"client_ca_pem"`
			} `json:"tls"`
		}
		if err := json.Unmarshal(b, &spec); err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(spec.Connectors, func(c struct{ Name, Kind, Target, Listen string }) bool { return c.Name == ConnRDP })
		if i < 0 || spec.Connectors[i].Kind != "tls" || spec.Connectors[i].Target != "127.0.0.1:3389" {
			t.Fatalf("remote=%v: no tls connector to 127.0.0.1:3389: %s", remote, b)
		}
		if !strings.Contains(string(b), "xrdp --nodaemon") || !strings.Contains(string(b), sessionVNCPasswordFile) {
			t.Errorf("remote=%v: no xrdp process: %s", remote, b)
		}
		if remote {
			if spec.TLS.ClientCAPEM != string(g.rdp.hop.pem) || spec.TLS.CertFile != "" || spec.Connectors[i].Listen != "tcp::0" {
				t.Errorf("remote: tls %+v, listen %s", spec.TLS, spec.Connectors[i].Listen)
			}
		} else {
			ca, err := os.ReadFile(spec.TLS.ClientCAFile)
			if err != nil || !bytes.Equal(ca, g.rdp.hop.pem) || spec.TLS.CertFile == "" {
				t.Errorf("local: tls %+v (%v)", spec.TLS, err)
			}
		}
		// The client CA (users' certificates) is never a connector's.
		if strings.Contains(string(b), strings.TrimSpace(string(g.rdp.client.pem))[30:80]) {
			t.Errorf("remote=%v: the client CA reached the spec", remote)
		}
	}
}

// TestRDPSlurm: an RDP desktop as a job on the real one-node Slurm
// cluster. The connector listens on the node's TCP port with the runner's
// own certificate (pinned by the gateway) and the hop CA from the spec;
// through the tunnel, xrdp in the job's seal answers an RDP connection
// request (an X.224 connection confirm).
func TestRDPSlurm(t *testing.T) {
	needRDPTools(t)
	t.Parallel()
	cl := realtest.SlurmCluster(t)
	realtest.TestUser(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tg, _ := slurmGatewayWith(t, cl, t.TempDir(), 0, func(c *Config) {
		c.RDPListen, c.RDPAddress = ln.Addr().String(), ln.Addr().String()
		p := desktopProfile()
		p.Name, p.RDP = "rdpdesk", true
		c.Profiles = append(c.Profiles, p)
	}, "alice")
	serveRDP(t, tg.g, ln)
	ctx := context.Background()
	alice := tg.client().loginToken("alice")
	s := alice.waitStateFor(alice.start(map[string]any{"profile": "rdpdesk"}).ID, "ready", 90*time.Second)
	f, _ := rdpFile(t, alice, s.ID)
	tun, err := rdpclient.New(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	// X.224 Connection Request with an RDP negotiation request (TLS).
	cr := []byte("\x03\x00\x00\x13\x0e\xe0\x00\x00\x00\x00\x00\x01\x00\x08\x00\x01\x00\x00\x00")
	if err := realtest.WaitFor(60*time.Second, func() error {
		c, err := tun.Dial(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(cr); err != nil {
			return err
		}
		hdr := make([]byte, 6)
		if _, err := io.ReadFull(c, hdr); err != nil {
			return fmt.Errorf("no answer from xrdp: %w", err)
		}
		if hdr[0] != 3 || hdr[5] != 0xd0 {
			return fmt.Errorf("not an X.224 connection confirm: % x", hdr)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	alice.do("DELETE", "/api/v1/sessions/"+s.ID, nil, nil)
	alice.waitStateFor(s.ID, "ended", 60*time.Second)
}
