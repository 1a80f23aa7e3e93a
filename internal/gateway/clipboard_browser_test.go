package gateway

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/portal"
	"github.com/airlock-hpc/airlock/internal/realtest"
)

// TestClipboardInBrowser is the clipboard policy on the whole path, in
// real headless Chromium: gateway, runner, seal, the session's vnc
// connector, Xvnc. In the session, a program keeps putting a known text on
// the desktop's selection (as a selection in the xterm does; Xvnc sends it
// to viewers) and another reads the desktop's clipboard into a file. With
// clipboard both the text shows in the page's clipboard panel and text
// sent from the panel reaches the desktop's clipboard (so the test can
// see both). With in, once the connector has dropped the desktop's cut
// text, no WebSocket frame the page got holds it and the panel is empty,
// but sending works. With none there is no panel, and no frame holds the
// text either. (With the connector's drops removed, the in and none cases
// fail: the frames hold the text.)
func TestClipboardInBrowser(t *testing.T) {
	needBrowser(t)
	for _, bin := range []string{"Xvnc", "xclip"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed", bin)
		}
	}
	owner := realtest.Current(t)
	if os.Geteuid() == 0 {
		owner = realtest.TestUser(t)
	}
	dir := ownerDir(t, owner, "airlock-clip-")
	const outText = "OUT-SECRET-4711"
	programs := [][]string{
		{"xterm", "-geometry", "60x15+0+0"},
		// A new owner of PRIMARY every second, so Xvnc announces the text
		// to whoever is connected by then.
		{"sh", "-c", "while :; do printf %s " + outText + " | timeout 1 xclip -quiet -selection primary -i; done"},
		// The desktop's CLIPBOARD (where Xvnc puts a viewer's text), then
		// a counter, every 0.2 s.
		{"sh", "-c", "n=0; while :; do n=$((n+1)); xclip -o -selection clipboard > " + dir + "/clip.tmp 2>/dev/null; echo >> " + dir + "/clip.tmp; echo $n >> " + dir + "/clip.tmp; mv " + dir + "/clip.tmp " + dir + "/clip.txt; sleep 0.2; done"},
	}
	policies := []contract.Clipboard{contract.ClipboardBoth, contract.ClipboardIn, contract.ClipboardNone}
	pt, err := portal.New()
	if err != nil {
		t.Fatal(err)
	}
	tg := startGateway(t, "", func(c *Config) {
		c.Portal = pt
		c.Profiles = nil
		for _, p := range policies {
			d := desktopProfile()
			d.Name, d.Clipboard, d.Programs = "clip-"+string(p), p, programs
			c.Profiles = append(c.Profiles, d)
		}
	}, "alice")

	// desktopClipboard is the desktop's CLIPBOARD text and the reader's
	// counter.
	desktopClipboard := func() (string, int) {
		b, _ := os.ReadFile(filepath.Join(dir, "clip.txt"))
		s := strings.TrimRight(string(b), "\n")
		i := strings.LastIndexByte(s, '\n')
		var n int
		fmt.Sscan(s[i+1:], &n)
		if i < 0 {
			return "", n
		}
		return strings.TrimRight(s[:i], "\n"), n
	}

	for _, policy := range policies {
		t.Run(string(policy), func(t *testing.T) {
			inText := "IN-SECRET-" + string(policy)
			b := startBrowser(t, "clipboard.mjs", map[string]string{
				"base": tg.url, "password": testPassword, "owner": "alice",
				"profile": "clip-" + string(policy), "outText": outText, "inText": inText,
			})
			wait := func(step string) map[string]any { t.Helper(); return b.wait(step, 120*time.Second) }
			id, _ := wait("connected")["id"].(string)
			runnerLog := filepath.Join(tg.stateDir, "sessions", id, "runner.log")
			report := func() map[string]any { t.Helper(); b.send("report"); return wait("report") }

			if policy.AllowsOut() {
				err := realtest.WaitFor(30*time.Second, func() error {
					if r := report(); r["text"] != outText {
						return fmt.Errorf("panel holds %q", r["text"])
					}
					return nil
				})
				if err != nil {
					t.Fatalf("the desktop's text never reached the page: %v", err)
				}
			} else {
				err := realtest.WaitFor(30*time.Second, func() error {
					b, _ := os.ReadFile(runnerLog)
					for l := range strings.SplitSeq(string(b), "\n") {
						if strings.Contains(l, `"msg":"clipboard refused"`) && strings.Contains(l, `"direction":"out"`) {
							return nil
						}
					}
					return fmt.Errorf("no clipboard refusal in %s", runnerLog)
				})
				if err != nil {
					t.Fatal(err)
				}
				r := report()
				if n, _ := r["framesWithText"].(float64); n > 0 {
					t.Fatalf("%v WebSocket frames the page got hold the desktop's text, with clipboard %s", n, policy)
				}
				if r["text"] != "" {
					t.Fatalf("panel holds %q with clipboard %s", r["text"], policy)
				}
				if (r["panel"] == true) != policy.AllowsIn() {
					t.Errorf("clipboard panel shown: %v, with clipboard %s", r["panel"], policy)
				}
			}

			if policy.AllowsIn() {
				b.send("paste")
				wait("pasted")
				err := realtest.WaitFor(30*time.Second, func() error {
					if got, n := desktopClipboard(); got != inText {
						return fmt.Errorf("desktop clipboard %q (reader's pass %d)", got, n)
					}
					return nil
				})
				if err != nil {
					t.Fatalf("the page's text never reached the desktop: %v", err)
				}
			} else if r := report(); r["sendEnabled"] == true {
				t.Errorf("the page offers sending with clipboard %s", policy)
			}
			b.send("stop")
			if m := wait("stopped"); len(m["errors"].([]any)) > 0 {
				t.Errorf("page errors: %v", m["errors"])
			}
		})
	}
}
