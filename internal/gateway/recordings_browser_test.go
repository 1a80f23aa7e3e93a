package gateway

import (
	"os/exec"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/portal"
)

// TestRecordingReplayInBrowser: the owner's noVNC session of a recorded
// desktop, in headless Chromium, types a text; an admin replays the
// recording at 8x on the recordings page (noVNC driven by the replay
// WebSocket), and the replayed screen has the typed text's pixels as the
// owner saw them.
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
	if errs, _ := m["errors"].([]any); len(errs) > 0 {
		t.Errorf("page errors: %v", errs)
	}
}
