package gateway

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/portal"
	"github.com/airlock-hpc/airlock/internal/realtest"
)

// TestDesktopInBrowser is the whole path a person takes, in real headless
// Chromium: log in, launch the desktop, see the xterm drawn in the noVNC
// canvas, type a command and see its effect in the session, share the
// session view-only with a second user whose typing does nothing, and stop
// it. Screenshots go to .artifacts/screenshots/.
func TestDesktopInBrowser(t *testing.T) {
	needBrowser(t)
	if _, err := exec.LookPath("Xvnc"); err != nil {
		t.Skip("Xvnc not installed")
	}
	owner := realtest.Current(t)
	if os.Geteuid() == 0 {
		owner = realtest.TestUser(t)
	}
	// Where the session's shell writes what was typed: the owner's home
	// (the seal hides the host's /tmp).
	dir := ownerDir(t, owner, "airlock-e2e-")

	p, err := portal.New()
	if err != nil {
		t.Fatal(err)
	}
	tg := startGateway(t, "", func(c *Config) {
		c.Portal = p
		c.Profiles[1].Programs = [][]string{{"xterm", "-geometry", "80x20+0+0", "-e", "bash", "--norc"}}
	}, "alice", "bob")

	b := startBrowser(t, "e2e.mjs", map[string]string{
		"base": tg.url, "password": testPassword, "owner": "alice", "viewer": "bob",
		"aliceCommand":  "echo E2E-$((6*7)) > " + dir + "/owner.txt",
		"viewerCommand": "echo VIEWER > " + dir + "/viewer.txt",
		"afterCommand":  "echo AFTER > " + dir + "/after.txt",
	})
	wait := func(step string) map[string]any { t.Helper(); return b.wait(step, 120*time.Second) }
	fileIs := func(name, want string) error {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(b)) != want {
			return fmt.Errorf("%s holds %q", name, b)
		}
		return nil
	}

	wait("drawn")
	// The desktop was resized to the page twice (the profile says
	// 1280x800): each time to the page's screen area, smaller than that.
	sized := wait("sized")
	first, _ := sized["first"].([]any)
	second, _ := sized["second"].([]any)
	if len(first) != 2 || len(second) != 2 || first[0].(float64) >= 1280 || second[0].(float64) >= first[0].(float64) {
		t.Errorf("the desktop did not take the window's size: %v", sized)
	}
	wait("owner-typed")
	if err := realtest.WaitFor(20*time.Second, func() error { return fileIs("owner.txt", "E2E-42") }); err != nil {
		t.Fatalf("the owner's command did not run in the session: %v", err)
	}
	v := wait("viewer-typed")
	if v["viewOnly"] != true {
		t.Errorf("the viewer's page does not say view only")
	}
	wait("owner-typed-after")
	if err := realtest.WaitFor(20*time.Second, func() error { return fileIs("after.txt", "AFTER") }); err != nil {
		t.Fatalf("the owner's second command did not run: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "viewer.txt")); err == nil {
		t.Fatal("the view-only viewer's typing ran a command in the session")
	}
	b.proceed()
	m := wait("stopped")
	if errs, _ := m["errors"].([]any); len(errs) > 0 {
		t.Errorf("page errors: %v", errs)
	}
}
