package runner_test

import (
	"errors"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/config"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/ticket"
)

// TestDemoDesktopHasAPanel runs the embedded demo's desktop profile's
// programs (config.Default) in a seal on a real Xvnc and checks that the
// screen shows more than a terminal on a black root window: IceWM's panel
// along the bottom edge. Without a window manager those rows stay one
// colour.
func TestDemoDesktopHasAPanel(t *testing.T) {
	for _, p := range []string{"Xvnc", "icewm-session", "xterm"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s not installed (make deps installs it)", p)
		}
	}
	var progs [][]string
	for _, p := range config.Default().Profiles {
		if p.Name == "desktop" && p.Desktop != nil {
			progs = p.Desktop.Programs
		}
	}
	if len(progs) == 0 {
		t.Fatal("the demo has no desktop profile with programs")
	}
	m := modes(t)[0]
	key := realtest.SharedDir(t, m.owner) + "/key"
	realtest.WriteFile(t, m.owner, key, testKey, 0o600)
	var procs []any
	for _, argv := range progs {
		procs = append(procs, map[string]any{"argv": argv, "env": map[string]string{"DISPLAY": ":1"}})
	}
	id := fmt.Sprintf("demo-desk-%d", time.Now().UnixNano()%1e6)
	r := realtest.StartRunner(t, map[string]any{
		"id": id, "owner": m.owner.Name,
		"workload": map[string]any{"argv": []string{"Xvnc", ":1", "-rfbport", "5901", "-localhost",
			"-SecurityTypes", "None", "-geometry", "640x480", "-depth", "24", "-AlwaysShared", "-BlacklistTimeout", "0"}},
		"processes": procs,
		"connectors": []any{map[string]any{
			"name": "console", "kind": "vnc", "target": "127.0.0.1:5901", "listen": "tcp:127.0.0.1:0",
		}},
		"ticket_key_file": key,
	}, realtest.RunOptions{As: m.as})
	rfb := dialRFB(t.Context(), t, r.Ready.Endpoints["console"], r.Ready.TLSSHA256,
		sign(t, ticket.Claims{Session: id, Connector: "console", User: m.owner.Name, Mode: ticket.Control}))
	if err := realtest.WaitFor(30*time.Second, func() error {
		if err := rfb.Update(false); err != nil {
			return err
		}
		// The bottom 16 rows: IceWM's panel (buttons, clock, tray).
		seen := map[[3]byte]bool{}
		for y := rfb.H - 16; y < rfb.H; y++ {
			for x := 0; x < rfb.W; x++ {
				i := (y*rfb.W + x) * 4
				seen[[3]byte{rfb.Frame[i], rfb.Frame[i+1], rfb.Frame[i+2]}] = true
			}
		}
		if len(seen) < 3 {
			return errors.New("no panel along the bottom of the screen")
		}
		return nil
	}); err != nil {
		t.Fatalf("demo desktop: %v\n%s", err, r.Stderr.String())
	}
}
