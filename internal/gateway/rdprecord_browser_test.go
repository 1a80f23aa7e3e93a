package gateway

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/rdcleanpath"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/recording"
)

// TestRDPRecordingReplayInBrowser: the owner's browser RDP session
// (IronRDP in headless Chromium, xrdp in the seal) of a recorded desktop
// types a line into the xterm; the recording is the end of what the
// server sent (so no keystroke of the client's is in it); an admin
// replays the recording at 8x on
// the recordings page, where IronRDP runs against the gateway's replay
// WebSocket, and the replayed screen has the pixels the typing changed
// as the owner saw them.
func TestRDPRecordingReplayInBrowser(t *testing.T) {
	needRDPTools(t)
	root := needBrowser(t)
	if _, err := os.Stat(filepath.Join(root, "internal", "portal", "static", "vendor", "ironrdp", "iron-remote-desktop-rdp.js")); err != nil {
		t.Skip("the IronRDP web client is not built (make web)")
	}
	owner := realtest.Current(t)
	if os.Geteuid() == 0 {
		owner = realtest.TestUser(t)
	}
	dir := ownerDir(t, owner, "airlock-rdprec-")
	typed := filepath.Join(dir, "typed")
	tg, lb := rdpRecGateway(t, typed, contract.ClipboardBoth)
	capture := &relayCapture{}
	rdpWebTap = capture.tap
	t.Cleanup(func() { rdpWebTap = nil })
	alice := tg.client().loginToken("alice")
	s := alice.launch("rdpdesk")
	b := startBrowser(t, "rdp-replay.mjs", map[string]string{
		"base": tg.url, "password": testPassword, "owner": "alice", "admin": "admin", "session": s.ID,
		"text": "echo rdp replayed", "verbose": os.Getenv("AIRLOCK_TEST_VERBOSE"),
	})
	if n, _ := b.wait("typed", 180*time.Second)["changed"].(float64); n < 200 {
		t.Fatalf("the typing changed %v pixels", n)
	}
	if err := realtest.WaitFor(20*time.Second, func() error {
		got, err := os.ReadFile(typed)
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(got)) != "echo rdp replayed" {
			return fmt.Errorf("typed %q", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The recording is the server's stream from some point on: every
	// byte of it came from the server, none from the client (its keys).
	lb.waitLog(t, "recording ended", "session="+s.ID)
	list, err := tg.g.listRecordings()
	if err != nil || len(list) == 0 {
		t.Fatalf("recordings %v, %v", list, err)
	}
	f, err := os.Open(filepath.Join(tg.stateDir, "recordings", s.ID, list[0].Name+".fbs.gz"))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	blocks, _, err := recording.Read(zr)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	_, data, err := recording.SplitRDP(blocks)
	if err != nil {
		t.Fatal(err)
	}
	var rec []byte
	for _, bl := range data {
		rec = append(rec, bl.Data...)
	}
	if server := capture.bytes("server"); len(rec) < 10000 || !bytes.HasSuffix(server, rec) {
		t.Fatalf("the recording's %d bytes are not the end of the %d the server sent", len(rec), len(server))
	}
	if len(capture.bytes("client")) == 0 {
		t.Fatal("the tap saw no client bytes")
	}
	m := b.wait("compared", 150*time.Second)
	changed, _ := m["changed"].(float64)
	same, _ := m["same"].(float64)
	t.Logf("replay: %v of %v changed pixels as the owner saw them (sizes %v, live %v), kind %v", same, changed, m["size"], m["live"], m["kind"])
	if m["kind"] != "rdp" {
		t.Errorf("the recordings page lists kind %v", m["kind"])
	}
	if same < 0.98*changed {
		t.Fatalf("the replayed screen has %v of the %v pixels the typing changed", same, changed)
	}
	if errs, _ := m["errors"].([]any); len(errs) > 0 {
		t.Errorf("page errors: %v", errs)
	}
}

// TestRDPRecordingNLA: a recorded desktop whose RDP server runs NLA
// (FreeRDP's shadow server, CredSSP with the session's generated
// password), opened by IronRDP in headless Chromium, then once more with
// a wrong password. The good connection's recording begins after CredSSP,
// at the server's Connect Response, with the server's Confirm (CredSSP
// chosen) in its header; the password is nowhere in it, as text or as
// RDP's UTF-16. The refused one, which ended inside CredSSP, recorded
// nothing. Its replay answers the client's request with TLS chosen, so
// the replaying client runs no CredSSP.
func TestRDPRecordingNLA(t *testing.T) {
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
	dir := ownerDir(t, owner, "airlock-rdprecnla-")
	tg, lb := rdpWebGateway(t, filepath.Join(dir, "typed"), func(p *Profile) {
		p.RDPServer, p.Clipboard, p.Record = RDPServerShadow, contract.ClipboardBoth, true
	})
	alice := tg.client().loginToken("alice")
	s := alice.launch("rdpdesk")
	sess, err := tg.cfg.Store.GetSession(t.Context(), s.ID)
	if err != nil {
		t.Fatal(err)
	}
	pw := tg.g.rdpPassword(sess)
	b := startBrowser(t, "rdp-nla.mjs", map[string]string{"base": tg.url, "password": testPassword, "user": "alice", "session": s.ID})
	b.wait("connected", 150*time.Second)
	deadline := time.Now().Add(60 * time.Second)
	for {
		m := b.wait("shot", 30*time.Second)
		white, dark, total, err := countPixels(m["path"].(string))
		if err == nil && white > 3000 && dark > total/3 {
			b.send("drawn")
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the desktop was not drawn: %d white, %d dark of %d pixels, %v", white, dark, total, err)
		}
		b.send("again")
	}
	b.wait("refused", 120*time.Second)
	b.proceed()
	b.wait("done", 30*time.Second)
	lb.waitLog(t, "rdp (browser): disconnected", "session="+s.ID, `nla_logon="ended inside CredSSP`)

	// Both connections' recordings, once both ended.
	var recs []recordingInfo
	if err := realtest.WaitFor(30*time.Second, func() error {
		list, err := tg.g.listRecordings()
		if err != nil {
			return err
		}
		recs = recs[:0]
		for _, r := range list {
			if r.Session == s.ID {
				if !r.Complete {
					return fmt.Errorf("recording %s not complete", r.Name)
				}
				recs = append(recs, r)
			}
		}
		if len(recs) < 2 {
			return fmt.Errorf("%d recordings", len(recs))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var good, empty int
	for _, r := range recs {
		f, err := os.Open(filepath.Join(tg.stateDir, "recordings", s.ID, r.Name+".fbs.gz"))
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		blocks, ended, err := recording.Read(zr)
		f.Close()
		if err != nil || !ended || r.Kind != recording.KindRDP {
			t.Fatalf("recording %s: %v, ended %v, kind %q", r.Name, err, ended, r.Kind)
		}
		var all []byte
		for _, bl := range blocks {
			all = append(all, bl.Data...)
		}
		for _, form := range [][]byte{[]byte(pw), utf16le(pw)} {
			if bytes.Contains(all, form) {
				t.Fatalf("recording %s holds the password", r.Name)
			}
		}
		if len(blocks) == 0 {
			empty++ // the refused logon: nothing after CredSSP
			continue
		}
		hdr, data, err := recording.SplitRDP(blocks)
		if err != nil {
			t.Fatal(err)
		}
		cc, err := rdcleanpath.ParseConfirm(hdr.Confirm)
		if err != nil || cc.Protocol&(protocolHybrid|protocolHybridEx) == 0 {
			t.Fatalf("recorded Confirm %+v, %v: want CredSSP", cc, err)
		}
		if len(data) == 0 || len(data[0].Data) < 9 || data[0].Data[0] != 0x03 || data[0].Data[7] != 0x7F || data[0].Data[8] != 0x66 {
			t.Fatalf("the recording does not begin with the Connect Response: %x", data[0].Data[:min(len(data[0].Data), 16)])
		}
		good++
		if r.RFBBytes < 10000 {
			t.Errorf("recording %s: only %d bytes of a drawn desktop", r.Name, r.RFBBytes)
		}
	}
	if good < 1 || empty < 1 {
		t.Fatalf("%d recordings with data, %d empty; want the good logon's and the refused one's", good, empty)
	}
}

// TestRDPRecordingBusyDesktopReport measures what recording a busy
// browser RDP session takes: headless Chromium shows a recorded desktop
// whose xterm lists /usr without pause, for 30 s; it logs the RDP bytes
// recorded and the file's size per minute, and the gateway's CPU. A
// report, not a check: it runs only with AIRLOCK_BENCH_REPORT=1.
func TestRDPRecordingBusyDesktopReport(t *testing.T) {
	if os.Getenv("AIRLOCK_BENCH_REPORT") == "" {
		t.Skip("a measurement: set AIRLOCK_BENCH_REPORT=1")
	}
	needRDPTools(t)
	needBrowser(t)
	owner := realtest.Current(t)
	if os.Geteuid() == 0 {
		owner = realtest.TestUser(t)
	}
	dir := ownerDir(t, owner, "airlock-rdprec-")
	tg, lb := rdpWebGateway(t, filepath.Join(dir, "typed"), func(p *Profile) {
		p.Record = true
		p.Programs = [][]string{{"xterm", "-geometry", "100x40+0+0", "-e", "sh", "-c", "while :; do ls -lR /usr; done"}}
	})
	alice := tg.client().loginToken("alice")
	s := alice.launch("rdpdesk")
	br := startBrowser(t, "rdp-browser.mjs", map[string]string{
		"base": tg.url, "password": testPassword, "user": "alice", "session": s.ID, "hold": "1",
	})
	br.wait("connected", 150*time.Second)
	const window = 30 * time.Second
	self0, t0 := selfCPU(), time.Now()
	time.Sleep(window) // the measurement's window, not a wait for a condition
	self1, wall := selfCPU(), time.Since(t0).Minutes()
	br.proceed()
	br.wait("done", 30*time.Second)
	lb.waitLog(t, "recording ended", "session="+s.ID)
	list, err := tg.g.listRecordings()
	if err != nil || len(list) == 0 {
		t.Fatalf("recordings %v, %v", list, err)
	}
	r := list[0]
	mins := float64(r.DurationMS) / 60000
	t.Logf("busy desktop over browser RDP, recorded: %.2f min, %d RDP bytes (%.1f MB/min), file %d bytes (%.2f MB/min); gateway %.3f CPU-s per minute of the window",
		mins, r.RFBBytes, float64(r.RFBBytes)/1e6/mins, r.FileBytes, float64(r.FileBytes)/1e6/mins, (self1-self0).Seconds()/wall)
	fmt.Printf("RDPREC-BUSY rdp_mb_per_min=%.2f file_mb_per_min=%.2f\n", float64(r.RFBBytes)/1e6/mins, float64(r.FileBytes)/1e6/mins)
}
