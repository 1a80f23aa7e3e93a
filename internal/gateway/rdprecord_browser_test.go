package gateway

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/realtest"
)

// TestRDPRecordingReplayInBrowser: the owner's browser RDP session
// (IronRDP in headless Chromium, xrdp in the seal) of a recorded desktop
// types a line into the xterm; an admin replays the recording at 8x on
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
	tg, _ := rdpRecGateway(t, typed, contract.ClipboardNone)
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
