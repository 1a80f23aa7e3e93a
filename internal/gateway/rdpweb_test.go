package gateway

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/airlock-hpc/airlock/internal/rdcleanpath"
	"github.com/airlock-hpc/airlock/internal/realtest"
)

// rdpWebGateway is rdpGatewayWith for browser RDP: the desktop profile
// "rdpdesk" with clipboard none and no drives, and the log captured.
func rdpWebGateway(t *testing.T, typedFile string, mod func(*Profile)) (*testGateway, *logBuffer) {
	t.Helper()
	var lb *logBuffer
	tg := startGateway(t, "", func(c *Config) {
		lb = captureLog(t, c)
		p := desktopProfile()
		p.Name, p.RDP, p.Geometry, p.Clipboard = "rdpdesk", true, "800x600", ClipboardNone
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
// channel id per channel asked for; and the profile's clipboard: none took
// cliprdr (and rdpdr, drives off) out on the way, as the relay's log says.
func TestRDPWebXrdp(t *testing.T) {
	needRDPTools(t)
	owner := realtest.Current(t)
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
