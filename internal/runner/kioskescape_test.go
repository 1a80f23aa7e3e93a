package runner_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
)

// kioskBlockedURLs are what a kiosk's user types in the address bar
// (Ctrl+L still focuses it in kiosk mode) to get out of the site: local
// files, their source, a page of their own making, the browser's own
// configuration and profile pages.
var kioskBlockedURLs = []string{
	"file:///etc/passwd",
	"view-source:file:///etc/passwd",
	"view-source:https://filtered.invalid/",
	"https://filtered.invalid/",
	"data:text/html,<title>escaped</title>",
	"about:config",
	"about:profiles",
	"about:addons",
	"about:support",
	"about:debugging",
}

// TestKioskFirefoxAddressBar: the kiosk's user types each of
// kioskBlockedURLs in the address bar, starting each from the site; the
// window's title says what Firefox shows, and it must be its block or
// error page. (jar:file: URLs are not blocked: SECURITY.md.)
func TestKioskFirefoxAddressBar(t *testing.T) {
	needKioskTools(t, "firefox-esr")
	m := modes(t)[0]
	ca := newCA(t, "airlock kiosk test CA")
	other := echoListen(t, "tcp", "127.0.0.1:0").Addr().String()
	hub, _, _ := hubServer(t, ca, other, "")
	dir := resultsDir(t, m.owner)
	out := filepath.Join(dir, "titles.txt")
	key := filepath.Join(realtest.SharedDir(t, m.owner), "key")
	realtest.WriteFile(t, m.owner, key, testKey, 0o600)
	id := fmt.Sprintf("kiosk-%d", time.Now().UnixNano()%1e6)
	// For each URL: back to the site (title "hub"), then the URL, then
	// wait (up to 15 s) for a block or error page's title. Ctrl+L is
	// pressed again until the address bar takes the typing.
	script := `title() { xdotool getwindowname "$W" 2>/dev/null; }
until_title() { i=0; while [ $i -lt 60 ]; do t=$(title); for p in "$@"; do case "$t" in $p) return 0;; esac; done; sleep 0.25; i=$((i+1)); done; return 1; }
go() { xdotool key ctrl+l; xdotool type --delay 20 "$1"; xdotool key Return; }
W=""
while [ -z "$W" ]; do W=$(xdotool search --onlyvisible --name '^hub' 2>/dev/null | head -1); sleep 0.2; done
for u in $URLS; do
	try=0; until [ "$(title)" = "hub — Mozilla Firefox" ] || [ $try -ge 4 ]; do go "$SITE"; until_title 'hub —*'; try=$((try+1)); done
	try=0; until [ $try -ge 3 ]; do go "$u"; until_title 'Blocked Page*' 'Problem loading page*' && break; try=$((try+1)); done
	echo "$u => $(title)"
done > "$OUT.tmp" 2>&1; mv "$OUT.tmp" "$OUT"`
	realtest.StartRunner(t, map[string]any{
		"id": id, "owner": m.owner.Name,
		"workload": map[string]any{"argv": []string{"Xvnc", ":1", "-rfbport", "5901", "-localhost",
			"-SecurityTypes", "None", "-geometry", "480x320", "-depth", "24", "-AlwaysShared"}},
		"processes": []any{map[string]any{"argv": []string{"sh", "-c", script},
			"env": map[string]string{"URLS": strings.Join(kioskBlockedURLs, " "), "SITE": "https://" + hub + "/",
				"OUT": out, "DISPLAY": ":1"}, "dir": "/"}},
		"connectors": []any{map[string]any{
			"name": "console", "kind": "vnc", "target": "127.0.0.1:5901", "listen": "tcp:127.0.0.1:0",
		}},
		"ticket_key_file": key,
		"kiosk": map[string]any{"url": "https://" + hub + "/?" + id, "browser": "firefox",
			"ca_pem": string(ca.pem), "geometry": "480x320"},
	}, realtest.RunOptions{As: m.as})
	var b []byte
	if err := realtest.WaitFor(300*time.Second, func() error {
		var err error
		b, err = os.ReadFile(out)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != len(kioskBlockedURLs) {
		t.Fatalf("typed %d URLs, %d results:\n%s", len(kioskBlockedURLs), len(lines), b)
	}
	for _, l := range lines {
		u, title, _ := strings.Cut(l, " => ")
		if !strings.HasPrefix(title, "Blocked Page") && !strings.HasPrefix(title, "Problem loading page") {
			t.Errorf("%s typed in the kiosk's address bar shows %q, want the block page", u, title)
		}
	}
	t.Logf("typed in the address bar:\n%s", b)
}
