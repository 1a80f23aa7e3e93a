package gateway

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/portal"
	"github.com/airlock-hpc/airlock/internal/rdcleanpath"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/recording"
)

// rdpRecGateway is rdpWebGateway with record: true, clipboard clip, and
// "admin" among the users.
func rdpRecGateway(t *testing.T, typedFile string, clip contract.Clipboard) (*testGateway, *logBuffer) {
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
		p.Name, p.RDP, p.Geometry, p.Clipboard, p.Record = "rdpdesk", true, "800x600", clip, true
		p.Programs = [][]string{{"xterm", "-geometry", "60x15+0+0", "-e", "sh", "-c",
			`echo RDP-XTERM-READY; read l; echo "$l" > ` + typedFile + `; exec sleep 3600`}}
		c.Profiles = append(c.Profiles, p)
	}, "alice", "admin")
	return tg, lb
}

// rdpRecTap collects what the relay held in the clear, by stage (the
// rdpWebTap hook).
type rdpRecTap struct {
	mu     sync.Mutex
	client [][]byte // the client's reads, as they came
	server []byte   // the server's bytes, as they came
}

func (r *rdpRecTap) tap(stage string, b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch stage {
	case "client":
		r.client = append(r.client, slices.Clone(b))
	case "server":
		r.server = append(r.server, b...)
	}
}

// fetchRecording downloads the one recording of session sid as admin and
// returns its listing and blocks.
func fetchRecording(t *testing.T, tg *testGateway, admin *client, sid string) (recordingInfo, []recording.Block) {
	t.Helper()
	var rec recordingInfo
	if err := realtest.WaitFor(30*time.Second, func() error {
		var out struct{ Recordings []recordingInfo }
		if code, body := admin.do("GET", "/api/v1/admin/recordings", nil, &out); code != 200 {
			return fmt.Errorf("admin list: %d %s", code, body)
		}
		for _, r := range out.Recordings {
			if r.Session == sid && r.Complete {
				rec = r
				return nil
			}
		}
		return fmt.Errorf("no complete recording of %s in %+v", sid, out.Recordings)
	}); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", tg.url+"/api/v1/admin/recordings/"+sid+"/"+rec.Name, nil)
	req.Header.Set("Authorization", "Bearer "+admin.token)
	resp, raw := admin.send(req)
	if resp.StatusCode != 200 {
		t.Fatalf("admin fetch: %d", resp.StatusCode)
	}
	zr, err := gzip.NewReader(strings.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	blocks, ended, err := recording.Read(zr)
	if err != nil || !ended {
		t.Fatalf("recording: %v, ended %v", err, ended)
	}
	return rec, blocks
}

// TestRDPRecording: a browser RDP connection (RDCleanPath, as IronRDP
// speaks it) to xrdp in a recorded desktop's seal. The gateway records
// the server's side from its MCS Connect Response on: the recording is
// of kind rdp, its header holds xrdp's Connection Confirm and
// certificate and the client's channel list, its data is exactly what
// the server sent from the Connect Response on, and none of the
// client's bytes is in it. Alice, the owner, cannot list, fetch or
// replay it; an admin's replay WebSocket from another origin is refused;
// from the gateway's page it answers an RDCleanPath request as xrdp's
// relay did (TLS chosen) and plays the Connect Response. When no
// recording can be made, the viewer is refused (503).
func TestRDPRecording(t *testing.T) {
	needRDPTools(t)
	owner := realtest.Current(t)
	if os.Geteuid() == 0 {
		owner = realtest.TestUser(t)
	}
	dir := ownerDir(t, owner, "airlock-rdprec-")
	tg, lb := rdpRecGateway(t, filepath.Join(dir, "typed"), contract.ClipboardBoth)
	tap := &rdpRecTap{}
	rdpWebTap = tap.tap
	t.Cleanup(func() { rdpWebTap = nil })
	alice := tg.client().loginToken("alice")
	s := alice.launch("rdpdesk")
	var conn net.Conn
	var resp *rdcleanpath.PDU
	if err := realtest.WaitFor(60*time.Second, func() error {
		tk := rdpTicket(t, alice, s.ID)
		conn, resp = rdpWebExchange(t, tg, alice, tk.Path, rdpRequest(t, s.ID, tk.Ticket, realtest.RDPConnectionRequest(1)))
		if resp.Kind() != rdcleanpath.KindResponse {
			return fmt.Errorf("answer %+v", resp.Error)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ci := realtest.RDPConnectInitial(800, 600, "cliprdr", "rdpsnd")
	if _, err := conn.Write(ci); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	cr, err := rdcleanpath.ReadTPKT(conn, 1<<16)
	if err != nil {
		t.Fatalf("xrdp's Connect Response: %v", err)
	}
	conn.Close()
	lb.waitLog(t, "recording ended", "session="+s.ID, "kind=rdp")

	admin := tg.client().loginToken("admin")
	rec, blocks := fetchRecording(t, tg, admin, s.ID)
	if rec.Kind != recording.KindRDP || rec.Connector != ConnRDP || rec.User != "alice" || rec.RDP == nil {
		t.Fatalf("listing %+v", rec)
	}
	hdr, data, err := recording.SplitRDP(blocks)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(hdr.Confirm, resp.X224) || len(hdr.Certificates) != len(resp.ServerCertChain) || !bytes.Equal(hdr.Certificates[0], resp.ServerCertChain[0]) {
		t.Fatalf("header %+v, the client was answered %+v", hdr, resp)
	}
	if !slices.Equal(hdr.Channels, []string{"cliprdr", "rdpsnd"}) || !slices.Equal(rec.RDP.Channels, hdr.Channels) {
		t.Fatalf("channels %v (sidecar %v)", hdr.Channels, rec.RDP.Channels)
	}
	var got []byte
	for _, b := range data {
		got = append(got, b.Data...)
	}
	tap.mu.Lock()
	server, clientBytes := tap.server, tap.client
	tap.mu.Unlock()
	if !bytes.HasPrefix(got, cr) || !bytes.HasSuffix(server, got) {
		t.Fatalf("recorded %d bytes (starting %x); the server sent %d, its Connect Response %x", len(got), got[:min(len(got), 16)], len(server), cr)
	}
	for _, c := range clientBytes {
		if len(c) >= 8 && bytes.Contains(got, c) {
			t.Fatalf("the client's bytes %x are in the recording", c)
		}
	}
	if !slices.ContainsFunc(clientBytes, func(c []byte) bool { return bytes.Contains(c, ci[7:]) }) {
		t.Fatal("the tap did not see the client's Connect Initial: the check above proves nothing")
	}

	// Access: the owner may not list, fetch or replay it.
	path := "/api/v1/admin/recordings/" + s.ID + "/" + rec.Name
	for _, p := range []string{"/api/v1/admin/recordings", path} {
		if code, body := alice.do("GET", p, nil, nil); code != 403 || strings.Contains(body, rec.Name) {
			t.Errorf("alice GET %s: %d %s, want 403", p, code, body)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	aliceCookie := tg.client().loginCookie("alice")
	adminCookie := tg.client().loginCookie("admin")
	wsURL := "wss" + strings.TrimPrefix(tg.url, "https") + path + "/replay?speed=8"
	for _, tc := range []struct {
		who    *client
		name   string
		origin string
		want   int
	}{{aliceCookie, "alice", tg.url, 403}, {adminCookie, "admin", "https://evil.example", 403}} {
		ws, resp, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPClient: tc.who.http, HTTPHeader: http.Header{"Origin": {tc.origin}}})
		if err == nil {
			ws.CloseNow()
		}
		if resp == nil || resp.StatusCode != tc.want {
			t.Errorf("replay as %s from %s: %v %v, want %d", tc.name, tc.origin, resp, err, tc.want)
		}
	}

	// The admin's replay, as IronRDP sees it.
	ws, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPClient: adminCookie.http, HTTPHeader: http.Header{"Origin": {tg.url}}})
	if err != nil {
		t.Fatal(err)
	}
	rc := websocket.NetConn(ctx, ws, websocket.MessageBinary)
	defer rc.Close()
	if _, err := rc.Write(rdpRequest(t, "replay", "replay", realtest.RDPConnectionRequest(3))); err != nil {
		t.Fatal(err)
	}
	raw, err := rdcleanpath.Read(rc, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	answer, err := rdcleanpath.Parse(raw)
	if err != nil || answer.Kind() != rdcleanpath.KindResponse {
		t.Fatalf("replay answer %+v, %v", answer, err)
	}
	if cc, err := rdcleanpath.ParseConfirm(answer.X224); err != nil || cc.Protocol != rdcleanpath.ProtocolSSL || !bytes.Equal(answer.ServerCertChain[0], hdr.Certificates[0]) {
		t.Fatalf("replay confirm %+v, %v", cc, err)
	}
	if _, err := rc.Write(ci); err != nil {
		t.Fatal(err)
	}
	replayed, err := rdcleanpath.ReadTPKT(rc, 1<<16)
	if err != nil || !bytes.Equal(replayed, cr) {
		t.Fatalf("replayed %x, %v; want the Connect Response %x", replayed, err, cr)
	}
	rc.Close()

	// A recording that cannot be made refuses the viewer: the profile's
	// desktop is not shown unrecorded.
	recDir := filepath.Join(tg.stateDir, "recordings")
	if err := os.Rename(recDir, recDir+".aside"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(recDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tk := rdpTicket(t, alice, s.ID)
	_, resp = rdpWebExchange(t, tg, alice, tk.Path, rdpRequest(t, s.ID, tk.Ticket, realtest.RDPConnectionRequest(1)))
	if resp.Kind() != rdcleanpath.KindGeneralError || resp.Error.HTTPStatus != 503 {
		t.Fatalf("with no recording possible: %+v", resp)
	}
	lb.waitLog(t, "rdp (browser): refused", "session="+s.ID, `reason="recording unavailable"`)
	os.Remove(recDir)
	os.Rename(recDir+".aside", recDir)

	evs, err := tg.cfg.Store.ListAudit(t.Context(), auditAll)
	if err != nil {
		t.Fatal(err)
	}
	var started, viewed bool
	for _, e := range evs {
		started = started || e.Action == "recording_started" && e.Actor == "alice" && e.Session == s.ID
		viewed = viewed || e.Action == "recording_viewed" && e.Actor == "admin" && e.Detail == rec.Name
	}
	if !started || !viewed {
		t.Errorf("audit: recording_started %v, recording_viewed %v", started, viewed)
	}
}

// BenchmarkRDPWebRecording is browser RDP's relay (BenchmarkRDPWebPath's
// rdcleanpath path: WebSocket, channel filter, tls connector, an echoing
// RDP server stand-in) with the recording off and on, in one run. The
// server's frames carry random bytes, as a desktop's compressed bitmaps
// are, so the recorder's compressor gets no easy ride. "throughput" is
// MB/s of 64 KiB echoed per op.
func BenchmarkRDPWebRecording(b *testing.B) {
	chunk := randomFrames(64 << 10)
	for _, rec := range []bool{false, true} {
		name := "off"
		if rec {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			dial, _, _ := rdpWebBenchPath(b, tlsRDPEcho(b), func(p *Profile) { p.Record = rec })
			b.Run("throughput", func(b *testing.B) { benchConnThroughput(b, dial(), chunk) })
		})
	}
}

// randomFrames is frames with random payloads.
func randomFrames(n int) []byte {
	out := frames(n)
	r := mrand.New(mrand.NewPCG(1, 2))
	for i := 0; i < len(out); {
		l := int(binary.BigEndian.Uint16(out[i+2:]))
		for k := i + 7; k < i+l; k++ {
			out[k] = byte(r.Uint32())
		}
		i += l
	}
	return out
}

// TestRDPReplayRefusals: the replay of an RDP recording (one made here,
// with blocks at 0 s, 0.1 s and 10 min) refuses, with an RDCleanPath
// error and a log line naming the reason, a client whose first message
// is not an RDCleanPath request, a recording without its header, and a
// client that sends more than a replay needs; a seek to 10 min sends
// every block at once; a replay starts at the header's time (the server's
// first MCS PDU), not at the recording's; a client asking for other channels than the
// recorded one is logged; the gateway goes on serving.
func TestRDPReplayRefusals(t *testing.T) {
	var lb *logBuffer
	tg := startGateway(t, "", func(c *Config) { lb = captureLog(t, c) }, "alice", "admin")
	dir := filepath.Join(tg.stateDir, "recordings", "s-rdprec")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	mk := func(name string, hdr bool, at ...time.Duration) {
		start := clock
		w, err := recording.Create(filepath.Join(dir, name+".fbs.gz"), recording.Meta{Session: "s-rdprec", Kind: recording.KindRDP}, 0, func() time.Time { return clock })
		if err != nil {
			t.Fatal(err)
		}
		if hdr {
			if len(at) > 0 {
				clock = start.Add(at[0]) // the header comes with the first block
			}
			cert := selfSigned(t)
			if err := w.BeginRDP(recording.RDPHeader{Confirm: []byte{0x03, 0x00, 0x00, 0x13, 0x0E, 0xD0, 0, 0, 0x12, 0x34, 0, 0x02, 0x00, 0x08, 0x00, 0x02, 0, 0, 0},
				Certificates: cert.Certificate}); err != nil {
				t.Fatal(err)
			}
		}
		for i, d := range at {
			clock = start.Add(d)
			w.Write(realtest.RDPConnectResponse(1003, uint16(1004+i)))
		}
		if _, err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	const good, headless, late = "1796000000000-00000000000000a1", "1796000000000-00000000000000a2", "1796000000000-00000000000000a3"
	mk(good, true, 0, 100*time.Millisecond, 10*time.Minute)
	mk(headless, false)
	mk(late, true, 10*time.Minute, 10*time.Minute+50*time.Millisecond)

	adminCookie := tg.client().loginCookie("admin")
	dial := func(name, query string) net.Conn {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		t.Cleanup(cancel)
		ws, _, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(tg.url, "https")+"/api/v1/admin/recordings/s-rdprec/"+name+"/replay"+query,
			&websocket.DialOptions{HTTPClient: adminCookie.http, HTTPHeader: http.Header{"Origin": {tg.url}}})
		if err != nil {
			t.Fatal(err)
		}
		ws.SetReadLimit(1 << 20)
		c := websocket.NetConn(ctx, ws, websocket.MessageBinary)
		t.Cleanup(func() { c.Close() })
		return c
	}
	refused := func(c net.Conn, reason string) {
		t.Helper()
		raw, err := rdcleanpath.Read(c, 1<<20)
		if err != nil {
			t.Fatalf("%s: %v", reason, err)
		}
		p, err := rdcleanpath.Parse(raw)
		if err != nil || p.Kind() != rdcleanpath.KindGeneralError || p.Error.HTTPStatus != 400 {
			t.Fatalf("%s: answer %+v, %v", reason, p, err)
		}
		lb.waitLog(t, "recording replay (rdp): refused", "reason=\""+reason)
	}
	request := rdpRequest(t, "replay", "replay", realtest.RDPConnectionRequest(3))

	c := dial(good, "")
	c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	refused(c, "unreadable RDCleanPath request")

	c = dial(headless, "")
	c.Write(request)
	refused(c, "recording has no usable RDP header")

	// A seek past the last block: all three at once.
	c = dial(good, "?from=600000&speed=1")
	c.Write(request)
	raw, err := rdcleanpath.Read(c, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	p, err := rdcleanpath.Parse(raw)
	if err != nil || p.Kind() != rdcleanpath.KindResponse {
		t.Fatalf("answer %+v, %v", p, err)
	}
	// The recorded Confirm chose CredSSP; the replay's says TLS.
	if cc, err := rdcleanpath.ParseConfirm(p.X224); err != nil || cc.Protocol != rdcleanpath.ProtocolSSL {
		t.Fatalf("replay's Confirm %+v, %v", cc, err)
	}
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for i := range 3 {
		b, err := rdcleanpath.ReadTPKT(c, 1<<16)
		if err != nil || !bytes.Equal(b, realtest.RDPConnectResponse(1003, uint16(1004+i))) {
			t.Fatalf("block %d: %x, %v", i, b, err)
		}
	}

	// A recording whose server began MCS 10 min in (a logon form before):
	// the replay starts there.
	c = dial(late, "")
	c.Write(request)
	if _, err := rdcleanpath.Read(c, 1<<20); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for i := range 2 {
		if b, err := rdcleanpath.ReadTPKT(c, 1<<16); err != nil || !bytes.Equal(b, realtest.RDPConnectResponse(1003, uint16(1004+i))) {
			t.Fatalf("late block %d: %x, %v", i, b, err)
		}
	}

	// A client asking for a channel the recorded one did not: logged
	// (while the replay plays: its last block is 10 min in).
	c = dial(good, "")
	c.Write(request)
	if _, err := rdcleanpath.Read(c, 1<<20); err != nil {
		t.Fatal(err)
	}
	c.Write(realtest.RDPConnectInitial(800, 600, "cliprdr"))
	lb.waitLog(t, "recording replay (rdp): the client asked for other channels", "recording="+good, "replaying=[cliprdr]")
	c.Close()

	// A client that floods the replay is cut off.
	c = dial(good, "")
	c.Write(request)
	if _, err := rdcleanpath.Read(c, 1<<20); err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, 1<<20)
	for range maxReplayDiscard/len(junk) + 2 {
		if _, err := c.Write(junk); err != nil {
			break
		}
	}
	lb.waitLog(t, "recording replay (rdp): refused", `reason="the client sent more than a replay needs"`)

	var out struct{ Recordings []recordingInfo }
	admin := tg.client().loginToken("admin")
	if code, body := admin.do("GET", "/api/v1/admin/recordings", nil, &out); code != 200 || len(out.Recordings) != 3 || out.Recordings[0].Kind != recording.KindRDP {
		t.Fatalf("after the refusals, the list: %d %s", code, body)
	}
}
