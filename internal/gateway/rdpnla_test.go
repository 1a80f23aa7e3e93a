package gateway

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/store"
)

// relayCapture collects what rdpWebTap shows: every byte the browser RDP
// relay held in the clear.
type relayCapture struct {
	mu    sync.Mutex
	stage map[string]*bytes.Buffer
}

func (c *relayCapture) tap(stage string, b []byte) {
	c.mu.Lock()
	if c.stage == nil {
		c.stage = map[string]*bytes.Buffer{}
	}
	if c.stage[stage] == nil {
		c.stage[stage] = &bytes.Buffer{}
	}
	c.stage[stage].Write(b)
	c.mu.Unlock()
}

func (c *relayCapture) bytes(stage string) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stage[stage] == nil {
		return nil
	}
	return bytes.Clone(c.stage[stage].Bytes())
}

// utf16le is s as RDP's PDUs carry strings.
func utf16le(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = append(b, byte(u), byte(u>>8))
	}
	return b
}

// TestRDPWebNLA is NLA end to end with real parts: a desktop whose RDP
// server is FreeRDP's shadow server (rdp_server: shadow) in the seal,
// sharing its Xvnc with NLA against the SAM file the runner wrote from the
// session's generated password. Headless Chromium opens the session page,
// whose IronRDP client runs CredSSP with the account and password the
// page names, through the gateway's RDCleanPath WebSocket: the desktop is
// drawn (pixels in a screenshot). The same page with a wrong password
// shows the server's refusal in words. The password appears in none of
// the gateway's log lines, its audit log or the bytes its relay held in
// the clear (as text or as RDP's UTF-16): it crossed only inside CredSSP's
// encryption.
func TestRDPWebNLA(t *testing.T) {
	needRDPTools(t)
	if _, err := exec.LookPath("freerdp-shadow-cli"); err != nil {
		t.Skip("freerdp-shadow-cli not installed (scripts/install-deps.sh installs freerdp2-shadow-x11)")
	}
	root := needBrowser(t)
	if _, err := os.Stat(filepath.Join(root, "internal", "portal", "static", "vendor", "ironrdp", "iron-remote-desktop-rdp.js")); err != nil {
		t.Skip("the IronRDP web client is not built (make web)")
	}
	owner := realtest.Current(t)
	if os.Geteuid() == 0 {
		owner = realtest.TestUser(t)
	}
	dir := ownerDir(t, owner, "airlock-i12nla-")
	capture := &relayCapture{}
	rdpWebTap = capture.tap
	t.Cleanup(func() { rdpWebTap = nil })
	tg, lb := rdpWebGateway(t, filepath.Join(dir, "typed"), func(p *Profile) {
		p.RDPServer, p.Clipboard = RDPServerShadow, contract.ClipboardBoth
	})
	alice := tg.client().loginToken("alice")
	s := alice.launch("rdpdesk")
	sess, err := tg.cfg.Store.GetSession(context.Background(), s.ID)
	if err != nil {
		t.Fatal(err)
	}
	pw := tg.g.rdpPassword(sess)
	if len(pw) < 16 {
		t.Fatalf("session password %q", pw)
	}
	b := startBrowser(t, "rdp-nla.mjs", map[string]string{
		"base": tg.url, "password": testPassword, "user": "alice", "session": s.ID,
	})
	if m := b.wait("connected", 150*time.Second); strings.Contains(m["url"].(string), pw) {
		t.Errorf("the password is in the page's URL %v", m["url"])
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		m := b.wait("shot", 30*time.Second)
		white, dark, total, err := countPixels(m["path"].(string))
		if err == nil && white > 3000 && dark > total/3 {
			t.Logf("drawn: %d white, %d dark of %d pixels (%s)", white, dark, total, m["path"])
			b.send("drawn")
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the desktop was not drawn: %d white, %d dark of %d pixels, %v", white, dark, total, err)
		}
		b.send("again")
	}
	m := b.wait("refused", 120*time.Second)
	state, _ := m["state"].(string)
	msg, _ := m["message"].(string)
	if !strings.HasPrefix(state, "failed:") || !strings.Contains(msg, "refused the logon") {
		t.Errorf("a wrong password: state %q, message %q", state, msg)
	}
	t.Logf("wrong password: %q", msg)
	lb.waitLog(t, "rdp (browser): disconnected", "session="+s.ID, "info_password_blanked=false", `nla_logon="ended inside CredSSP`)
	b.proceed()
	if m := b.wait("done", 30*time.Second); m["errors"] != nil && len(m["errors"].([]any)) > 0 {
		t.Logf("page errors: %v", m["errors"])
	}
	lb.waitLog(t, "rdp (browser): connected", "session="+s.ID)

	// Another portal user, then the same user holding a control share:
	// neither page names the password (nor the account).
	bob := tg.client().loginCookie("bob")
	page := func(c *client) (int, string) { return c.do("GET", "/sessions/"+s.ID, nil, nil) }
	if code, body := page(bob); code == 200 || strings.Contains(body, pw) {
		t.Errorf("another user's view of the session page: %d, password shown %v", code, strings.Contains(body, pw))
	}
	var share struct{ URL string }
	if code, body := alice.do("POST", "/api/v1/sessions/"+s.ID+"/shares", map[string]string{"mode": "control"}, &share); code != 201 {
		t.Fatalf("control share: %d %s", code, body)
	}
	resp, err := bob.http.Get(tg.url + strings.TrimPrefix(share.URL, "https://"+strings.TrimPrefix(tg.url, "https://")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if code, body := page(bob); code != 200 || strings.Contains(body, pw) || strings.Contains(body, "data-rdp-user") {
		t.Errorf("the control-share holder's session page: %d, password shown %v", code, strings.Contains(body, pw))
	}

	// Where the password must not be: what the relay passed on, either
	// way, in the clear (it crossed inside CredSSP's encryption), the
	// gateway's log and its audit log.
	relayed, server, client := capture.bytes("relayed"), capture.bytes("server"), capture.bytes("client")
	if len(server) < 10000 {
		t.Fatalf("the relay held only %d bytes of the server's in the clear: the capture saw no desktop", len(server))
	}
	// IronRDP copies the password into the Client Info PDU after CredSSP
	// too (MS-RDPBCGR 2.2.1.11.1.1), which reaches the relay in the clear;
	// the filter zeroes it there (rdpfilter Policy.NLA).
	t.Logf("the client's own bytes held the password in the clear: %v (the Client Info PDU)", bytes.Contains(client, utf16le(pw)))
	lb.waitLog(t, "rdp (browser): disconnected", "session="+s.ID, "info_password_blanked=true")
	var seen []byte
	for _, form := range [][]byte{[]byte(pw), utf16le(pw)} {
		seen = append(relayed, server...)
		if bytes.Contains(relayed, form) || bytes.Contains(server, form) {
			t.Errorf("the relay passed the password on in the clear (%d bytes seen)", len(seen))
		}
		if bytes.Contains([]byte(lb.String()), form) {
			t.Error("the password is in the gateway's log")
		}
		// The runner's, the connectors' and the shadow server's logs.
		if sl := connectorLog(t, tg, s.ID); strings.Contains(sl, string(form)) {
			t.Error("the password is in the session's logs")
		}
	}
	audits, err := tg.cfg.Store.ListAudit(context.Background(), store.AuditFilter{Session: s.ID})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range audits {
		if strings.Contains(a.Detail+a.Actor+a.Action, pw) {
			t.Errorf("the password is in the audit event %+v", a)
		}
	}
	t.Logf("relay passed on %d bytes in the clear; no password in them, in %d bytes of log or in %d audit events", len(seen), len([]byte(lb.String())), len(audits))
}
