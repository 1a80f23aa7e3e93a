package gateway

import (
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"os"
	"path/filepath"
	rtmetrics "runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/airlock-hpc/airlock/internal/recording"
)

// TestAdminAPIRefusesOtherSites: a page on a user's app host is same-site
// with the gateway, so the admin's login cookie (SameSite=Lax) goes with
// every GET it makes the admin's browser send (an <img>, a no-cors fetch),
// and CORS only stops it reading the answer. Such GETs made the gateway
// write "recording_fetched" audit records in the admin's name that the
// admin never asked for, stream whole recordings and build the largest
// pointer tracks in memory, as often as the page liked. The admin API
// answers a browser's cookie only from the gateway's own pages, or a
// URL typed (Sec-Fetch-Site none); scripts with a token are unaffected.
func TestAdminAPIRefusesOtherSites(t *testing.T) {
	tg := startGateway(t, "", nil, "admin")
	w, name, err := tg.g.startRecording("s-0123456789ab", "console", "alice", recording.KindVNC)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("RFB 003.008\n"))
	w.Pointer(1, 2, 0)
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	admin := tg.client().loginCookie("admin")
	token := tg.client().loginToken("admin")
	for _, path := range []string{
		"/api/v1/admin/recordings",
		"/api/v1/admin/recordings/s-0123456789ab/" + name,
		"/api/v1/admin/recordings/s-0123456789ab/" + name + "/pointer",
		"/api/v1/admin/sessions",
	} {
		for site, want := range map[string]int{"same-site": 403, "cross-site": 403, "same-origin": 200, "none": 200} {
			req, _ := http.NewRequest("GET", tg.url+path, nil)
			req.Header.Set("Sec-Fetch-Site", site)
			resp, err := admin.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("GET %s with the admin's cookie, Sec-Fetch-Site %s: %d, want %d", path, site, resp.StatusCode, want)
			}
		}
		if code, body := token.do("GET", path, nil, nil); code != 200 {
			t.Errorf("GET %s with the admin's token: %d %s", path, code, body)
		}
	}
}

// TestReplayMemoryBounded: the recorded screen is the session's, so its
// workload decides how large a recording grows (up to recordings.max_size,
// 1 GiB by default), and zeros cost next to nothing on disk. A replay read
// the whole recording into memory before sending its first block: each
// admin's replay of such a recording held all of it in the gateway. It is
// streamed: a replay of 128 MiB allocates a small part of that.
func TestReplayMemoryBounded(t *testing.T) {
	tg := startGateway(t, "", nil, "admin")
	w, name, err := tg.g.startRecording("s-0123456789ab", "console", "alice", recording.KindVNC)
	if err != nil {
		t.Fatal(err)
	}
	const size = 128 << 20
	block := make([]byte, 1<<20)
	for range size / len(block) {
		w.Write(block)
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	admin := tg.client().loginCookie("admin")
	wsURL := "wss" + strings.TrimPrefix(tg.url, "https") + "/api/v1/admin/recordings/s-0123456789ab/" + name + "/replay?speed=8"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	before := heapAllocs()
	ws, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPClient: admin.http, HTTPHeader: http.Header{"Origin": {tg.url}}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(-1)
	got := 0
	for {
		_, rd, err := ws.Reader(ctx)
		if err != nil {
			if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
				t.Fatalf("replay ended: %v", err)
			}
			break
		}
		n, _ := io.Copy(io.Discard, rd)
		got += int(n)
	}
	allocated := heapAllocs() - before
	if got != size {
		t.Fatalf("replayed %d bytes, want %d", got, size)
	}
	t.Logf("a replay of %d MiB allocated %d MiB", size>>20, allocated>>20)
	if allocated > size/4 {
		t.Fatalf("a replay of %d MiB allocated %d MiB: it holds the recording in memory", size>>20, allocated>>20)
	}
}

// heapAllocs is how many bytes this process has allocated so far.
func heapAllocs() uint64 {
	s := []rtmetrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	rtmetrics.Read(s)
	return s[0].Value.Uint64()
}

// TestPointerTrackMemoryBounded: any viewer's pointer events are recorded
// (a view-only share's too), and a viewer that flips a button with each
// event is not thinned out, so a track may reach its cap of 4.32 M
// events (39 MB). The pointer endpoint built all of it as a slice and
// then as one JSON text in memory (over 200 MB) per request. It streams.
func TestPointerTrackMemoryBounded(t *testing.T) {
	tg := startGateway(t, "", nil, "admin")
	const sid, name = "s-0123456789ab", "1796676033143-3ab80b631a4afcf6"
	dir := filepath.Join(tg.g.recordingsDir(), sid)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// The track as the recorder writes it: 9-byte records, at the cap.
	const events = 50 * 86400
	track := make([]byte, 9*events)
	for i := range events {
		binary.BigEndian.PutUint32(track[9*i:], uint32(i))
		binary.BigEndian.PutUint16(track[9*i+4:], uint16(i))
		binary.BigEndian.PutUint16(track[9*i+6:], uint16(i>>16))
		track[9*i+8] = byte(i & 1)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".pointer"), track, 0o600); err != nil {
		t.Fatal(err)
	}
	track = nil
	admin := tg.client().loginToken("admin")
	req, _ := http.NewRequest("GET", tg.url+"/api/v1/admin/recordings/"+sid+"/"+name+"/pointer", nil)
	req.Header.Set("Authorization", "Bearer "+admin.token)
	before := heapAllocs()
	resp, err := admin.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var cw braceCounter
	if _, err := io.Copy(&cw, resp.Body); err != nil || resp.StatusCode != 200 {
		t.Fatalf("pointer track: %d %v", resp.StatusCode, err)
	}
	allocated := heapAllocs() - before
	if cw.open != events+1 || cw.last != '\n' && cw.last != '}' {
		t.Fatalf("the answer has %d objects (want %d events in one), ends %q", cw.open-1, events, cw.last)
	}
	t.Logf("a pointer track of %d events (%d MB as JSON) allocated %d MiB", events, cw.n>>20, allocated>>20)
	// Holding the answer would cost at least its size; streaming costs
	// buffers, which this process-wide count (other tests, the race
	// detector) blurs: half the JSON's size tells the two apart.
	if allocated > uint64(cw.n)/2 {
		t.Fatalf("a pointer track of %d events allocated %d MiB: it is held in memory", events, allocated>>20)
	}
}

// braceCounter counts the bytes and JSON objects written to it.
type braceCounter struct {
	n, open int
	last    byte
}

func (c *braceCounter) Write(p []byte) (int, error) {
	for _, b := range p {
		if b == '{' {
			c.open++
		}
	}
	c.n += len(p)
	if len(p) > 0 {
		c.last = p[len(p)-1]
	}
	return len(p), nil
}
