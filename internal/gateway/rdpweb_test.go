package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/portal"
	"github.com/airlock-hpc/airlock/internal/rdcleanpath"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/store"
)

// rdpWebGateway is rdpGatewayWith for browser RDP: the desktop profile
// "rdpdesk" with clipboard none and no drives, and the log captured.
func rdpWebGateway(t *testing.T, typedFile string, mod func(*Profile)) (*testGateway, *logBuffer) {
	t.Helper()
	var lb *logBuffer
	pr, err := portal.New()
	if err != nil {
		t.Fatal(err)
	}
	tg := startGateway(t, "", func(c *Config) {
		lb = captureLog(t, c)
		c.Portal = pr
		p := desktopProfile()
		p.Name, p.RDP, p.Geometry, p.Clipboard = "rdpdesk", true, "800x600", contract.ClipboardNone
		p.Programs = [][]string{{"xterm", "-geometry", "60x15+0+0", "-e", "sh", "-c",
			`echo RDP-XTERM-READY; read l; echo "$l" > ` + typedFile + `; exec sleep 3600`}}
		if mod != nil {
			mod(&p)
		}
		c.Profiles = append(c.Profiles, p)
	}, "alice", "bob")
	return tg, lb
}

// rdpTicket asks for a browser RDP ticket for session id as c.
func rdpTicket(t *testing.T, c *client, id string) rdpTicketJSON {
	t.Helper()
	var out rdpTicketJSON
	if code, body := c.do("POST", "/api/v1/sessions/"+id+"/rdp-ticket", nil, &out); code != 201 {
		t.Fatalf("rdp ticket: %d %s", code, body)
	}
	return out
}

// rdpWebExchange opens the RDCleanPath WebSocket at path as c (its token,
// or no credential when c is nil), sends req and returns the connection
// and the gateway's answer.
func rdpWebExchange(t *testing.T, tg *testGateway, c *client, path string, req []byte) (net.Conn, *rdcleanpath.PDU) {
	t.Helper()
	hc := tg.client().http
	h := http.Header{}
	if c != nil {
		hc = c.http
		if c.token != "" {
			h.Set("Authorization", "Bearer "+c.token)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(tg.url, "https")+path, &websocket.DialOptions{HTTPClient: hc, HTTPHeader: h})
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	conn := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.Write(req); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := rdcleanpath.Read(conn, 1<<20)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	p, err := rdcleanpath.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Time{})
	return conn, p
}

func rdpRequest(t *testing.T, dest, tok string, cr []byte) []byte {
	b, err := (&rdcleanpath.PDU{Destination: dest, ProxyAuth: tok, X224: cr}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRDPWebXrdp is the gateway's RDCleanPath path with the real server:
// xrdp in a desktop's seal, reached through the WebSocket and the
// session's tls connector. The answer carries xrdp's Confirm (TLS chosen)
// and its certificate; xrdp answers the client's MCS Connect Initial with one
// channel id per channel asked for; the profile's clipboard: none took
// cliprdr (and rdpdr, drives off) out on the way, as the relay's log says.
func TestRDPWebXrdp(t *testing.T) {
	needRDPTools(t)
	owner := realtest.Current(t)
	if os.Geteuid() == 0 {
		owner = realtest.TestUser(t)
	}
	dir := ownerDir(t, owner, "airlock-rdpweb-")
	tg, lb := rdpWebGateway(t, filepath.Join(dir, "typed"), nil)
	alice := tg.client().loginToken("alice")
	s := alice.launch("rdpdesk")
	tk := rdpTicket(t, alice, s.ID)
	if tk.Path != "/rdp/"+s.ID || tk.Destination != s.ID {
		t.Fatalf("ticket answer %+v", tk)
	}
	var conn net.Conn
	var resp *rdcleanpath.PDU
	// xrdp starts once the desktop is ready; the tls connector waits
	// for it a little, and a refusal before that is WSA 10061.
	if err := realtest.WaitFor(60*time.Second, func() error {
		conn, resp = rdpWebExchange(t, tg, alice, tk.Path, rdpRequest(t, s.ID, tk.Ticket, realtest.RDPConnectionRequest(1)))
		if resp.Kind() != rdcleanpath.KindResponse {
			tk = rdpTicket(t, alice, s.ID)
			return fmt.Errorf("answer %+v", resp.Error)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cc, err := rdcleanpath.ParseConfirm(resp.X224)
	if err != nil || cc.Protocol != 1 {
		t.Fatalf("confirm %+v, %v", cc, err)
	}
	leaf, err := x509.ParseCertificate(resp.ServerCertChain[0])
	if err != nil || leaf.Subject.CommonName != "airlock desktop" {
		t.Fatalf("server certificate %v, %v", leaf, err)
	}
	if resp.ServerAddr != "127.0.0.1:3389" {
		t.Errorf("server_addr %q", resp.ServerAddr)
	}
	// From here the client speaks RDP in the clear on the WebSocket; the
	// gateway holds the TLS to xrdp.
	tc := conn
	if _, err := tc.Write(realtest.RDPConnectInitial(800, 600, "cliprdr", "rdpdr", "rdpsnd")); err != nil {
		t.Fatal(err)
	}
	tc.SetReadDeadline(time.Now().Add(30 * time.Second))
	mcs, err := rdcleanpath.ReadTPKT(tc, 1<<16)
	if err != nil {
		t.Fatalf("xrdp's Connect Response: %v", err)
	}
	ids, err := realtest.RDPServerChannelIDs(mcs)
	if err != nil || len(ids) != 3 {
		t.Fatalf("xrdp's channel ids %v, %v (response %x)", ids, err, mcs)
	}
	tc.Close()
	lb.waitLog(t, "rdp (browser): disconnected", "session="+s.ID, `channels="[cliprdr rdpdr rdpsnd]"`, `channels_blocked="[cliprdr rdpdr]"`)
}

// TestRDPWebRefusals: every way in that is not the owner's own, fresh
// ticket, on the path and destination it names, is refused before a byte
// reaches the session, with the RDCleanPath error the client shows in
// words, a log line and an audit event.
func TestRDPWebRefusals(t *testing.T) {
	needRDPTools(t)
	owner := realtest.Current(t)
	if os.Geteuid() == 0 {
		owner = realtest.TestUser(t)
	}
	dir := ownerDir(t, owner, "airlock-rdpweb-")
	tg, lb := rdpWebGateway(t, filepath.Join(dir, "typed"), nil)
	alice := tg.client().loginToken("alice")
	bob := tg.client().loginToken("bob")
	s := alice.launch("rdpdesk")
	path := "/rdp/" + s.ID
	cr := realtest.RDPConnectionRequest(1)

	// The ticket itself: the owner's only.
	if code, _ := bob.do("POST", "/api/v1/sessions/"+s.ID+"/rdp-ticket", nil, nil); code != 404 {
		t.Errorf("bob got a ticket for alice's session: %d", code)
	}
	status := func(p *rdcleanpath.PDU) int64 { return p.Error.HTTPStatus }
	type refusal struct {
		name   string
		c      *client
		path   string
		req    []byte
		status int64
		why    string
	}
	tk := rdpTicket(t, alice, s.ID).Ticket
	cases := []refusal{
		{"malformed PDU", alice, path, []byte("GET / HTTP/1.1\r\n\r\n"), 400, "unreadable RDCleanPath request"},
		{"not the PDU's DER", alice, path, []byte{0x30, 0x03, 0x02, 0x01, 0x05}, 400, "malformed RDCleanPath request"},
		{"no ticket", alice, path, rdpRequest(t, s.ID, "", cr), 401, "no ticket"},
		{"forged ticket", alice, path, rdpRequest(t, s.ID, tk[:len(tk)-4]+"AAAA", cr), 401, "bad ticket"},
		{"not logged in", nil, path, rdpRequest(t, s.ID, tk, cr), 401, "not logged in"},
		{"another user's ticket", bob, path, rdpRequest(t, s.ID, tk, cr), 403, "another user's ticket"},
		{"ticket for another session", alice, "/rdp/s-000000000000", rdpRequest(t, "s-000000000000", tk, cr), 403, "ticket for another session"},
		{"destination the ticket does not name", alice, path, rdpRequest(t, "10.0.0.1:3389", tk, cr), 403, "destination the ticket does not name"},
		{"not a Connection Request", alice, path, rdpRequest(t, s.ID, tk, []byte{0x03, 0x00, 0x00, 0x0B, 0x06, 0xD0, 0, 0, 0, 0, 0}), 400, "bad X.224 Connection Request"},
		{"VMConnect request", alice, path, func() []byte {
			b, _ := (&rdcleanpath.PDU{Destination: s.ID, ProxyAuth: tk, PreconnectionBlob: "vm"}).Marshal()
			return b
		}(), 400, "RDCleanPath VMConnect request where a request belongs"},
	}
	for _, c := range cases {
		_, p := rdpWebExchange(t, tg, c.c, c.path, c.req)
		if p.Kind() != rdcleanpath.KindGeneralError || status(p) != c.status {
			t.Errorf("%s: answer %v %+v, want HTTP %d", c.name, p.Kind(), p.Error, c.status)
		}
		lb.waitLog(t, "rdp (browser): refused", "reason=\""+c.why+"\"")
	}
	// Another site's page cannot open the WebSocket with the user's
	// credentials (the login cookie rides along in a browser).
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, hresp, err := websocket.Dial(dctx, "wss"+strings.TrimPrefix(tg.url, "https")+path, &websocket.DialOptions{HTTPClient: alice.http,
		HTTPHeader: http.Header{"Authorization": {"Bearer " + alice.token}, "Origin": {"https://evil.example"}}})
	dcancel()
	if err == nil || hresp == nil || hresp.StatusCode != 403 {
		t.Errorf("a WebSocket from another origin: %v %v, want 403", hresp, err)
	}
	// None of those spent the ticket: it still works, once.
	if err := realtest.WaitFor(60*time.Second, func() error {
		_, p := rdpWebExchange(t, tg, alice, path, rdpRequest(t, s.ID, tk, cr))
		if p.Kind() != rdcleanpath.KindResponse {
			tk = rdpTicket(t, alice, s.ID).Ticket
			return fmt.Errorf("answer %v %+v", p.Kind(), p.Error)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, p := rdpWebExchange(t, tg, alice, path, rdpRequest(t, s.ID, tk, cr)); status(p) != 401 {
		t.Errorf("replayed ticket: %+v, want HTTP 401", p.Error)
	}
	lb.waitLog(t, "rdp (browser): refused", "reason=\"ticket already used\"")
	// A ticket for a session that has since stopped.
	tk = rdpTicket(t, alice, s.ID).Ticket
	if code, body := alice.do("DELETE", "/api/v1/sessions/"+s.ID, nil, nil); code != 202 {
		t.Fatalf("stop: %d %s", code, body)
	}
	alice.waitState(s.ID, "ended")
	if _, p := rdpWebExchange(t, tg, alice, path, rdpRequest(t, s.ID, tk, cr)); status(p) != 409 {
		t.Errorf("stopped session: %+v, want HTTP 409", p.Error)
	}
	audits, err := tg.cfg.Store.ListAudit(context.Background(), store.AuditFilter{Session: s.ID})
	if err != nil {
		t.Fatal(err)
	}
	refused := map[string]bool{}
	for _, a := range audits {
		if a.Action == "rdp_refused" {
			refused[a.Actor+" "+a.Detail] = true
		}
	}
	for _, want := range []string{"bob browser: another user's ticket", "alice browser: destination the ticket does not name", "alice browser: ticket already used"} {
		if !refused[want] {
			t.Errorf("no audit %q in %v", want, refused)
		}
	}
}

// TestRDPServerHandshakeFailures: what the RDP server (behind the
// session's connector) does wrong maps to the RDCleanPath error IronRDP
// turns into words. The server here is a stand-in on a socket pair; the
// real server's path is TestRDPWebXrdp.
func TestRDPServerHandshakeFailures(t *testing.T) {
	cr := realtest.RDPConnectionRequest(3)
	ccFail := []byte{0x03, 0x00, 0x00, 0x13, 0x0E, 0xD0, 0, 0, 0, 0, 0, 0x03, 0x00, 0x08, 0x00, 0x05, 0, 0, 0}
	ccTLS := []byte{0x03, 0x00, 0x00, 0x13, 0x0E, 0xD0, 0, 0, 0, 0, 0, 0x02, 0x00, 0x08, 0x00, 0x01, 0, 0, 0}
	ccRDP := []byte{0x03, 0x00, 0x00, 0x13, 0x0E, 0xD0, 0, 0, 0, 0, 0, 0x02, 0x00, 0x08, 0x00, 0x00, 0, 0, 0}
	cert := selfSigned(t)
	for _, tc := range []struct {
		name   string
		server func(c net.Conn)
		check  func(p *rdcleanpath.PDU) bool
	}{
		{"server down: the connector closes", func(c net.Conn) { c.Close() },
			func(p *rdcleanpath.PDU) bool { return p.Error.WSALastError == rdcleanpath.WSAEConnRefused }},
		{"negotiation failure", func(c net.Conn) { io.ReadFull(c, make([]byte, len(cr))); c.Write(ccFail) },
			func(p *rdcleanpath.PDU) bool {
				return p.Kind() == rdcleanpath.KindNegotiationError && string(p.X224) == string(ccFail)
			}},
		{"huge TPKT", func(c net.Conn) { io.ReadFull(c, make([]byte, len(cr))); c.Write([]byte{3, 0, 0xFF, 0xFF}) },
			func(p *rdcleanpath.PDU) bool { return p.Error.HTTPStatus == 502 }},
		{"standard RDP security", func(c net.Conn) { io.ReadFull(c, make([]byte, len(cr))); c.Write(ccRDP) },
			func(p *rdcleanpath.PDU) bool { return p.Error.HTTPStatus == 502 }},
		{"TLS alert", func(c net.Conn) {
			io.ReadFull(c, make([]byte, len(cr)))
			c.Write(ccTLS)
			// A server that speaks only TLS 1.0 answers the gateway's
			// hello with protocol_version (70).
			tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: tls.VersionTLS10, MinVersion: tls.VersionTLS10}).Handshake()
		}, func(p *rdcleanpath.PDU) bool { return p.Error.TLSAlert == 70 }},
	} {
		a, b := net.Pipe()
		go func() { defer b.Close(); tc.server(b) }()
		up, resp, ref := rdpServerHandshake(a, cr)
		a.Close()
		if up != nil || resp != nil || ref == nil {
			t.Errorf("%s: admitted", tc.name)
			continue
		}
		if !tc.check(ref.pdu) {
			t.Errorf("%s: answer %v %+v (%s: %v)", tc.name, ref.pdu.Kind(), ref.pdu.Error, ref.why, ref.err)
		}
	}
}

func selfSigned(t testing.TB) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rdp server"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestRDPWebBrowser is browser RDP end to end with real parts: headless
// Chromium runs the portal's session page, whose IronRDP client (the npm
// WebAssembly build, embedded) opens the desktop over RDP by default,
// through the gateway's RDCleanPath WebSocket and the session's tls
// connector to xrdp in the seal. The desktop is drawn (pixels in a
// screenshot), a typed line reaches the xterm, and the connection
// survives a window resize.
func TestRDPWebBrowser(t *testing.T) {
	needRDPTools(t)
	root := needBrowser(t)
	if _, err := os.Stat(filepath.Join(root, "internal", "portal", "static", "vendor", "ironrdp", "iron-remote-desktop-rdp.js")); err != nil {
		t.Skip("the IronRDP web client is not built (make web)")
	}
	owner := realtest.Current(t)
	if os.Geteuid() == 0 {
		owner = realtest.TestUser(t)
	}
	dir := ownerDir(t, owner, "airlock-rdpweb-")
	typed := filepath.Join(dir, "typed")
	tg, lb := rdpWebGateway(t, typed, func(p *Profile) { p.Clipboard = contract.ClipboardBoth })
	alice := tg.client().loginToken("alice")
	s := alice.launch("rdpdesk")
	b := startBrowser(t, "rdp-browser.mjs", map[string]string{
		"base": tg.url, "password": testPassword, "user": "alice", "session": s.ID, "line": "typed-over-rdp",
	})
	m := b.wait("connected", 150*time.Second)
	if m["vncState"] != "" {
		t.Errorf("the VNC view connected too (%v); RDP is the default view", m["vncState"])
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
	b.wait("typed", 30*time.Second)
	if err := realtest.WaitFor(20*time.Second, func() error {
		got, err := os.ReadFile(typed)
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(got)) != "typed-over-rdp" {
			return fmt.Errorf("typed %q", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	b.proceed()
	if m := b.wait("resized", 30*time.Second); m["state"] != "connected" {
		t.Errorf("after the resize the RDP state is %v", m["state"])
	}
	b.proceed()
	if m := b.wait("done", 30*time.Second); m["errors"] != nil && len(m["errors"].([]any)) > 0 {
		t.Errorf("page errors: %v", m["errors"])
	}
	lb.waitLog(t, "rdp (browser): connected", "session="+s.ID)
}

// TestRDPWebRevokedToken: revoking the token a browser RDP connection came
// in by closes it at once (the RDP server here is a stand-in that never
// closes on its own, so only the gateway can end it).
func TestRDPWebRevokedToken(t *testing.T) {
	dial, base, secret := rdpWebBenchPath(t, tlsRDPEcho(t), nil)
	c := dial()
	defer c.Close()
	msg := frames(64)
	c.Write(msg)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, len(msg))); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("DELETE", base+"/api/v1/tokens/t-rdpweb", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}).Do(req)
	if err != nil || resp.StatusCode != 204 {
		t.Fatalf("revoke: %v %v", resp, err)
	}
	resp.Body.Close()
	// The read ends when the gateway closes the connection, or at the
	// deadline (which the WebSocket reports in words of its own).
	deadline := time.Now().Add(10 * time.Second)
	c.SetReadDeadline(deadline)
	_, err = io.Copy(io.Discard, c)
	if !time.Now().Before(deadline) {
		t.Fatalf("the connection outlived the revocation of its token (%v)", err)
	}
}
