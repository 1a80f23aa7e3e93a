package gateway

import (
	"os/exec"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/portal"
	"github.com/airlock-hpc/airlock/internal/recording"
)

// TestRecordingReplayInBrowser: the owner's noVNC session of a recorded
// desktop, in headless Chromium, types a text; an admin replays the
// recording at 8x on the recordings page (noVNC driven by the replay
// WebSocket), and the replayed screen has the typed text's pixels as the
// owner saw them; the owner's click is in the pointer track, and the
// page draws the pointer where the track ends.
func TestRecordingReplayInBrowser(t *testing.T) {
	needBrowser(t)
	if _, err := exec.LookPath("Xvnc"); err != nil {
		t.Skip("Xvnc not installed")
	}
	pt, err := portal.New()
	if err != nil {
		t.Fatal(err)
	}
	tg := startGateway(t, "", func(c *Config) {
		c.Portal = pt
		c.Profiles[1].Record = true
	}, "alice", "admin")
	b := startBrowser(t, "replay.mjs", map[string]string{
		"base": tg.url, "password": testPassword, "owner": "alice", "admin": "admin",
		"profile": "desktop", "text": "echo REPLAYED-$((6*7))",
	})
	if n, _ := b.wait("typed", 120*time.Second)["changed"].(float64); n < 200 {
		t.Fatalf("the typing changed %v pixels", n)
	}
	m := b.wait("compared", 120*time.Second)
	changed, _ := m["changed"].(float64)
	same, _ := m["same"].(float64)
	if same < 0.98*changed {
		t.Fatalf("the replayed screen has %v of the %v pixels the typing changed (sizes %v, live %v)", same, changed, m["size"], m["live"])
	}
	// The owner's click into the xterm is in the pointer track, and the
	// replay page draws the pointer where the track ends.
	admin := tg.client().loginToken("admin")
	var list struct{ Recordings []recordingInfo }
	if code, body := admin.do("GET", "/api/v1/admin/recordings", nil, &list); code != 200 || len(list.Recordings) == 0 {
		t.Fatalf("admin list: %d %s", code, body)
	}
	rec := list.Recordings[0]
	var track struct{ Events []recording.PointerEvent }
	if code, body := admin.do("GET", "/api/v1/admin/recordings/"+rec.Session+"/"+rec.Name+"/pointer", nil, &track); code != 200 {
		t.Fatalf("pointer track: %d %s", code, body)
	}
	pressed := false
	for _, e := range track.Events {
		pressed = pressed || e.Buttons&1 != 0
	}
	if !pressed {
		t.Fatalf("the owner's click is not in the pointer track: %+v", track.Events)
	}
	last := track.Events[len(track.Events)-1]
	p, _ := m["pointer"].(map[string]any)
	at, _ := p["at"].(map[string]any)
	if shown, _ := p["shown"].(bool); !shown || at == nil || at["x"] != float64(last.X) || at["y"] != float64(last.Y) || at["buttons"] != float64(last.Buttons) {
		t.Fatalf("the replay page's pointer %v, want shown at the track's last event %+v", p, last)
	}
	if errs, _ := m["errors"].([]any); len(errs) > 0 {
		t.Errorf("page errors: %v", errs)
	}
}
