package gateway

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/recording"
)

// replayConn is a net.Conn that reads a recorded server stream and
// discards what the client writes: a replay for a client written apart
// from the recorder (realtest.RFB).
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *replayConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *replayConn) SetDeadline(time.Time) error      { return nil }
func (c *replayConn) SetReadDeadline(time.Time) error  { return nil }
func (c *replayConn) SetWriteDeadline(time.Time) error { return nil }
func (c *replayConn) Close() error                     { return nil }

// TestRecording: a desktop profile with record: true. Alice views her
// session through the gateway, types into the xterm and leaves; the
// gateway has recorded the connection. Replaying the recording to an RFB
// client gives exactly the screen Alice last saw, typed text included.
// Alice (no admin) can neither list nor fetch recordings; an admin can,
// and the fetch is audited. The session's own workload, which looks for
// the recordings where the gateway keeps them, finds nothing there.
func TestRecording(t *testing.T) {
	owner := realtest.Current(t)
	if os.Geteuid() == 0 {
		owner = realtest.TestUser(t)
	}
	dir := ownerDir(t, owner, "airlock-rec-")
	// Outside /tmp, where a real state directory is (the seal has a /tmp
	// of its own): what keeps the workload out is the hide list.
	stateDir := realtest.OutsideTmp(t, "airlock-rec-state-")
	// The recordings are kept apart from the state directory
	// (recordings.dir), as on a filesystem several gateways share.
	recDir := filepath.Join(realtest.OutsideTmp(t, "airlock-rec-shared-"), "recordings")
	t.Cleanup(func() { endSessions(t, stateDir) })
	tg := startGateway(t, stateDir, func(c *Config) {
		c.Recordings.Dir = recDir
		d := &c.Profiles[1]
		d.Record = true
		// The workload's attack: list and read the recordings directory,
		// every 0.2 s, with a counter.
		d.Programs = append(d.Programs, []string{"sh", "-c", "n=0; while :; do n=$((n+1)); { ls -R " + recDir +
			"; cat " + recDir + "/*/*; echo; echo $n; } > " + dir + "/peek.tmp 2>&1; mv " + dir + "/peek.tmp " + dir + "/peek.txt; sleep 0.2; done"})
	}, "alice", "admin")
	if !slices.Contains(tg.g.hidden(), recDir) {
		t.Fatalf("the seals do not hide the recordings directory %s: %v", recDir, tg.g.hidden())
	}
	s := tg.client().loginToken("alice").launch("desktop")
	alice := tg.client().loginCookie("alice")

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(tg.url, "https")+"/s/"+s.ID+"/console/",
		&websocket.DialOptions{HTTPClient: alice.http, HTTPHeader: http.Header{"Origin": {tg.url}}})
	if err != nil {
		t.Fatal(err)
	}
	live, err := realtest.NewRFB(websocket.NetConn(ctx, ws, websocket.MessageBinary))
	if err != nil {
		t.Fatal(err)
	}
	updates := 0
	update := func(inc bool) {
		t.Helper()
		if err := live.Update(inc); err != nil {
			t.Fatal(err)
		}
		updates++
	}
	// Keys typed before the xterm is mapped go to the root window and
	// are lost, and then no incremental update ever comes (the screen
	// does not change): wait for its white background first. Whole
	// updates from here on, which the server always answers.
	if err := realtest.WaitFor(60*time.Second, func() error {
		update(false)
		if n := whitePixels(live.Frame); n < 1000 {
			return fmt.Errorf("%d white pixels", n)
		}
		return nil
	}); err != nil {
		t.Fatalf("the xterm never showed: %v", err)
	}
	before := append([]byte(nil), live.Frame...)
	// Without a window manager the keyboard follows the pointer: put it
	// on the xterm (at +0+0) first.
	if err := live.Pointer(20, 20); err != nil {
		t.Fatal(err)
	}
	if err := live.Type("echo RECORDED-TEXT"); err != nil {
		t.Fatal(err)
	}
	if err := realtest.WaitFor(20*time.Second, func() error {
		update(false)
		if bytes.Equal(before, live.Frame) {
			return io.ErrNoProgress
		}
		return nil
	}); err != nil {
		t.Fatalf("the typing never showed: %v", err)
	}
	update(false) // a whole screen, after the typing
	live.Close()

	// The sidecar is written when the gateway's side of the relay ends.
	var rec recordingInfo
	admin := tg.client().loginToken("admin")
	if err := realtest.WaitFor(20*time.Second, func() error {
		var out struct{ Recordings []recordingInfo }
		if code, body := admin.do("GET", "/api/v1/admin/recordings", nil, &out); code != 200 {
			t.Fatalf("admin list: %d %s", code, body)
		}
		if len(out.Recordings) != 1 || !out.Recordings[0].Complete {
			return io.ErrNoProgress
		}
		rec = out.Recordings[0]
		return nil
	}); err != nil {
		t.Fatalf("no complete recording listed: %v", err)
	}
	if rec.Session != s.ID || rec.User != "alice" || rec.Connector != "console" || rec.End != "closed" || rec.RFBBytes == 0 {
		t.Fatalf("recording %+v", rec)
	}

	// Access: Alice may not list or fetch, even her own session's.
	path := "/api/v1/admin/recordings/" + s.ID + "/" + rec.Name
	aliceTok := tg.client().loginToken("alice")
	for _, p := range []string{"/api/v1/admin/recordings", path, path + "/pointer"} {
		if code, body := aliceTok.do("GET", p, nil, nil); code != 403 || strings.Contains(body, rec.Name) {
			t.Errorf("alice GET %s: %d %s, want 403", p, code, body)
		}
	}
	for _, p := range []string{"/api/v1/admin/recordings/" + s.ID + "/..%2f..%2fairlock.db", "/api/v1/admin/recordings/..%2f/" + rec.Name} {
		if code, _ := admin.do("GET", p, nil, nil); code != 404 {
			t.Errorf("admin GET %s: %d, want 404", p, code)
		}
	}

	// The pointer track has the viewer's move to the xterm, and the
	// sidecar counts it; no keystroke is anywhere in it.
	var track struct{ Events []recording.PointerEvent }
	if code, body := admin.do("GET", path+"/pointer", nil, &track); code != 200 {
		t.Fatalf("admin pointer track: %d %s", code, body)
	}
	if len(track.Events) == 0 || track.Events[0].X != 20 || track.Events[0].Y != 20 || rec.PointerEvents != int64(len(track.Events)) || rec.PointerEnd != "" {
		t.Fatalf("pointer track %+v; sidecar %d events, end %q", track.Events, rec.PointerEvents, rec.PointerEnd)
	}

	// The replay WebSocket: admins only, and only from the gateway's own
	// pages (a cookie rides along on a cross-origin handshake).
	adminCookie := tg.client().loginCookie("admin")
	wsURL := "wss" + strings.TrimPrefix(tg.url, "https") + path + "/replay?speed=8"
	for _, tc := range []struct {
		who    *client
		origin string
		want   int
	}{{alice, tg.url, 403}, {adminCookie, "https://evil.example", 403}, {adminCookie, tg.url, 101}} {
		ws, resp, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPClient: tc.who.http, HTTPHeader: http.Header{"Origin": {tc.origin}}})
		if err == nil {
			ws.CloseNow()
		}
		if resp == nil || resp.StatusCode != tc.want {
			t.Errorf("replay from %s: %v %v, want %d", tc.origin, resp, err, tc.want)
		}
	}

	// The admin's download, replayed.
	req, _ := http.NewRequest("GET", tg.url+path, nil)
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
	var stream bytes.Buffer
	for _, b := range blocks {
		stream.Write(b.Data)
	}
	replay, err := realtest.NewRFB(&replayConn{r: &stream})
	if err != nil {
		t.Fatalf("replay handshake: %v", err)
	}
	for range updates {
		if err := replay.Update(true); err != nil {
			t.Fatalf("replay: %v", err)
		}
	}
	if !bytes.Equal(replay.Frame, live.Frame) {
		t.Fatal("the replayed screen differs from the one the viewer saw")
	}
	if bytes.Equal(replay.Frame, before) {
		t.Fatal("the replayed screen lacks the typing")
	}

	evs, err := tg.cfg.Store.ListAudit(t.Context(), auditAll)
	if err != nil {
		t.Fatal(err)
	}
	var started, fetched bool
	for _, e := range evs {
		started = started || e.Action == "recording_started" && e.Actor == "alice" && e.Session == s.ID
		fetched = fetched || e.Action == "recording_fetched" && e.Actor == "admin" && e.Detail == rec.Name
	}
	if !started || !fetched {
		t.Errorf("audit: recording_started %v, recording_fetched %v", started, fetched)
	}
	// The workload, after the recording existed, still saw nothing.
	peekAfter := func() (string, int) {
		b, _ := os.ReadFile(filepath.Join(dir, "peek.txt"))
		s := strings.TrimRight(string(b), "\n")
		i := strings.LastIndexByte(s, '\n')
		var n int
		json.Unmarshal([]byte(s[i+1:]), &n)
		return s, n
	}
	_, n0 := peekAfter()
	if err := realtest.WaitFor(20*time.Second, func() error {
		if _, n := peekAfter(); n < n0+2 {
			return io.ErrNoProgress
		}
		return nil
	}); err != nil {
		t.Fatalf("the workload's peeking loop does not run: %v", err)
	}
	out, _ := peekAfter()
	t.Logf("recording %s: %d blocks, %d RFB bytes, %d file bytes, %d updates; the workload saw:\n%s", rec.Name, len(blocks), rec.RFBBytes, rec.FileBytes, updates, out)
	if strings.Contains(out, rec.Name) || strings.Contains(out, "FBS") || strings.Contains(out, `"sha256"`) {
		t.Fatalf("the session's workload sees the recordings:\n%s", out)
	}

	// Another gateway with a state directory of its own, sharing the
	// recordings directory, lists the recording and serves the same file
	// to its admins (and not to Alice).
	other := startGateway(t, realtest.OutsideTmp(t, "airlock-rec-other-"), func(c *Config) { c.Recordings.Dir = recDir }, "alice", "admin")
	otherAdmin := other.client().loginToken("admin")
	var listed struct{ Recordings []recordingInfo }
	if code, body := otherAdmin.do("GET", "/api/v1/admin/recordings", nil, &listed); code != 200 || len(listed.Recordings) != 1 || listed.Recordings[0].Name != rec.Name {
		t.Fatalf("the other gateway's list: %d %s", code, body)
	}
	req, _ = http.NewRequest("GET", other.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+otherAdmin.token)
	if resp, raw2 := otherAdmin.send(req); resp.StatusCode != 200 || raw2 != raw {
		t.Fatalf("the other gateway's fetch: %d, %d bytes (want the %d the first served)", resp.StatusCode, len(raw2), len(raw))
	}
	if code, _ := other.client().loginToken("alice").do("GET", path, nil, nil); code != 403 {
		t.Fatalf("alice at the other gateway: %d, want 403", code)
	}
}

// TestRecordingRetention: the sweep removes recordings (complete or cut
// short) older than the retention, keeps newer ones, and removes the
// empty session directory.
func TestRecordingRetention(t *testing.T) {
	now := time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC)
	g := &Gateway{cfg: Config{StateDir: t.TempDir(), Recordings: Recordings{Retention: 24 * time.Hour}},
		log: slog.New(slog.DiscardHandler), now: func() time.Time { return now }}
	g.ctx = t.Context()
	mk := func(sid string, ended time.Time, sidecar bool) string {
		t.Helper()
		clock := ended
		g.now = func() time.Time { return clock }
		w, name, err := g.startRecording(sid, "console", "alice", recording.KindVNC)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("RFB 003.008\n"))
		base := filepath.Join(g.recordingsDir(), sid, name)
		if sidecar {
			w.Close()
		} else {
			os.Chtimes(base+".fbs.gz", ended, ended)
			// As a crash leaves it; the writer's goroutine ends with the test.
			t.Cleanup(func() { w.Close() })
		}
		g.now = func() time.Time { return now }
		return base
	}
	oldDone := mk("s-old", now.Add(-48*time.Hour), true)
	oldCut := mk("s-old", now.Add(-30*time.Hour), false)
	fresh := mk("s-new", now.Add(-time.Hour), true)
	if err := g.sweepRecordings(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{oldDone + ".fbs.gz", oldDone + ".json", oldDone + ".pointer", oldCut + ".fbs.gz", oldCut + ".pointer", filepath.Dir(oldDone)} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s kept past the retention", p)
		}
	}
	for _, p := range []string{fresh + ".fbs.gz", fresh + ".json"} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s removed before its time: %v", p, err)
		}
	}
}

// whitePixels counts the pure white pixels of a 32-bit frame.
func whitePixels(frame []byte) int {
	n := 0
	for i := 0; i+3 < len(frame); i += 4 {
		if frame[i] == 255 && frame[i+1] == 255 && frame[i+2] == 255 {
			n++
		}
	}
	return n
}

// TestRecordingCapEndsViewer: a viewer of a recorded desktop whose screen
// goes past the recording's size cap (a user filling it on purpose, to go
// on unrecorded) is disconnected at the cap rather than watched
// unrecorded; the recording says why, and a new connection is recorded
// afresh.
func TestRecordingCapEndsViewer(t *testing.T) {
	stateDir := realtest.OutsideTmp(t, "airlock-reccap-")
	t.Cleanup(func() { endSessions(t, stateDir) })
	tg := startGateway(t, stateDir, func(c *Config) {
		c.Profiles[1].Record = true
		c.Recordings.MaxBytes = 256 << 10 // a whole raw screen is megabytes
	}, "alice", "admin")
	s := tg.client().loginToken("alice").launch("desktop")
	alice := tg.client().loginCookie("alice")
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	view := func() error {
		ws, _, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(tg.url, "https")+"/s/"+s.ID+"/console/",
			&websocket.DialOptions{HTTPClient: alice.http, HTTPHeader: http.Header{"Origin": {tg.url}}})
		if err != nil {
			t.Fatal(err)
		}
		ws.SetReadLimit(64 << 20)
		rfb, err := realtest.NewRFB(websocket.NetConn(ctx, ws, websocket.MessageBinary))
		if err != nil {
			t.Fatal(err)
		}
		defer rfb.Close()
		for range 3 {
			if err := rfb.Update(false); err != nil {
				return err
			}
		}
		return nil
	}
	if err := view(); err == nil {
		t.Fatal("three whole raw screens went through a 256 KiB recording")
	}
	admin := tg.client().loginToken("admin")
	var ended []recordingInfo
	if err := realtest.WaitFor(20*time.Second, func() error {
		var out struct{ Recordings []recordingInfo }
		if code, body := admin.do("GET", "/api/v1/admin/recordings", nil, &out); code != 200 {
			t.Fatalf("admin list: %d %s", code, body)
		}
		if len(out.Recordings) != 1 || !out.Recordings[0].Complete {
			return io.ErrNoProgress
		}
		ended = out.Recordings
		return nil
	}); err != nil {
		t.Fatalf("no complete recording: %v", err)
	}
	if ended[0].End != "size cap" {
		t.Fatalf("recording ended %q, want size cap", ended[0].End)
	}
	// Connecting again is recorded again.
	view()
	if err := realtest.WaitFor(20*time.Second, func() error {
		var out struct{ Recordings []recordingInfo }
		admin.do("GET", "/api/v1/admin/recordings", nil, &out)
		if len(out.Recordings) != 2 {
			return io.ErrNoProgress
		}
		return nil
	}); err != nil {
		t.Fatalf("the second connection was not recorded: %v", err)
	}
}
