package runner_test

import (
	"bytes"
	"cmp"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/ticket"
)

// kioskGreen is the stand-in site's background: rgb(0,200,83).
var kioskGreen = [3]byte{0, 200, 83}

// hubServer is an HTTPS server on loopback standing in for JupyterHub,
// with a certificate from ca; it counts requests and serves a page that
// is all one colour and, once loaded, tries to fetch from other, and whose
// whole area is a link to link (HOST:PORT; "" is other).
// badCert counts the handshakes the client broke off (as a client that
// refuses the server's certificate does).
func hubServer(t testing.TB, ca *testCA, other, link string) (addr string, hits, badCert *atomic.Int64) {
	t.Helper()
	link = cmp.Or(link, other)
	certPEM, keyPEM := ca.issue(t, "127.0.0.1", true)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	hits, badCert = &atomic.Int64{}, &atomic.Int64{}
	page := fmt.Sprintf(`<!doctype html><html><head><title>hub</title>
<style>html,body{margin:0;height:100%%;background:rgb(%d,%d,%d)}</style></head>
<body><a href="https://%s/navigated" style="display:block;height:100%%"></a>
<script>fetch("https://%s/exfiltrate").catch(function(){});</script></body></html>`,
		kioskGreen[0], kioskGreen[1], kioskGreen[2], link, other)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, page)
	}), ErrorLog: log.New(alertCounter{badCert}, "", 0)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), hits, badCert
}

// alertCounter counts the server's log lines about a failed handshake.
type alertCounter struct{ n *atomic.Int64 }

func (a alertCounter) Write(p []byte) (int, error) {
	// Chromium closes the connection without an alert when it refuses a
	// certificate: the server sees the handshake end early.
	if strings.Contains(string(p), "TLS handshake error") {
		a.n.Add(1)
	}
	return len(p), nil
}

// TestKioskBrowser runs a kiosk session for real: Xvnc, Chromium in the
// seal with the per-session policy, the runner's egress proxy, and an
// HTTPS site on loopback whose CA only the kiosk's policy trusts. It
// checks that the screen shows the site (pixels through the vnc
// connector); that the page's fetch to another host never arrives; that
// the session's own processes cannot get anywhere but the site through
// the proxy, nor around it, and that every refusal is reported for the
// audit; and that closing the browser window (Ctrl+W) ends the session.
func TestKioskBrowser(t *testing.T) {
	needKioskTools(t, "chromium")
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) { testKiosk(t, m, m.as == nil, chromiumKiosk) })
	}
}

// TestKioskFirefox is TestKioskBrowser with firefox-esr: its policies.json
// bind-mounted over /etc/firefox-esr, its WebsiteFilter and the same
// egress proxy.
func TestKioskFirefox(t *testing.T) {
	needKioskTools(t, "firefox-esr")
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) { testKiosk(t, m, m.as == nil, firefoxKiosk) })
	}
}

// kioskBrowser is what testKiosk needs to know of a browser.
type kioskBrowser struct {
	name      string // kiosk.browser
	etc       string // the directory bound over in the seal
	policy    string // the session's policy file
	shortcuts [][]uint32
}

// The shortcuts for a new window, tab or incognito window, devtools,
// printing, saving, opening a file and the page's source: none may open
// anything (a second window is counted). Firefox's Ctrl+T and Ctrl+U open
// a tab in the kiosk's own window (a blank one, and the source, which
// WebsiteFilter lets through as the site's), which would hide the link
// the test clicks next: left out for it.
var (
	chromiumKiosk = kioskBrowser{name: "chromium", etc: "/etc/chromium",
		policy: "/etc/chromium/policies/managed/airlock-kiosk.json",
		shortcuts: [][]uint32{
			{0xffe3, 'n'}, {0xffe3, 't'}, {0xffe3, 0xffe1, 'N'}, {0xffc9}, {0xffe3, 0xffe1, 'I'},
			{0xffe3, 0xffe1, 'J'}, {0xffe3, 'p'}, {0xffe3, 's'}, {0xffe3, 'o'}, {0xffe3, 'u'},
		}}
	firefoxKiosk = kioskBrowser{name: "firefox", etc: "/usr/lib/firefox-esr/distribution",
		policy: "/usr/lib/firefox-esr/distribution/policies.json",
		shortcuts: [][]uint32{
			{0xffe3, 'n'}, {0xffe3, 0xffe1, 'P'}, {0xffc9}, {0xffe3, 0xffe1, 'I'},
			{0xffe3, 0xffe1, 'J'}, {0xffe3, 'p'}, {0xffe3, 's'}, {0xffe3, 'o'},
		}}
)

// testKiosk runs the kiosk as m says in browser b; close ends it with
// Ctrl+W in the window, else by killing the browser.
func testKiosk(t *testing.T, m mode, close bool, b kioskBrowser) {
	ca := newCA(t, "airlock kiosk test CA")
	other := echoListen(t, "tcp", "127.0.0.1:0").Addr().String()
	otherHub, otherHits, _ := hubServer(t, ca, other, "")
	// The site's link goes to a host nothing else names: if the browser's
	// own policy let it through, the proxy would be asked for it (and
	// refuse, and report it). The page's fetch goes to the same host as
	// the site on another port, which Firefox's host-only filter lets
	// through: the proxy must refuse it.
	filtered := "filtered.invalid:" + portOf(otherHub)
	hub, hits, _ := hubServer(t, ca, otherHub, filtered)
	dir := resultsDir(t, m.owner)
	probeOut := filepath.Join(dir, "proxy.json")
	attackOut := filepath.Join(dir, "attack.txt")
	windowsGo, windowsOut := filepath.Join(dir, "windows.go"), filepath.Join(dir, "windows.txt")
	key := filepath.Join(realtest.SharedDir(t, m.owner), "key")
	realtest.WriteFile(t, m.owner, key, testKey, 0o600)
	id := fmt.Sprintf("kiosk-%d", time.Now().UnixNano()%1e6)
	proxy := "127.0.0.1:3128"
	r := realtest.StartRunner(t, map[string]any{
		"id": id, "owner": m.owner.Name,
		"workload": map[string]any{"argv": []string{"Xvnc", ":1", "-rfbport", "5901", "-localhost",
			"-SecurityTypes", "None", "-geometry", "480x320", "-depth", "24", "-AlwaysShared"}},
		// The session's own process, beside the browser: what can it
		// reach through the proxy, and around it?
		"processes": []any{map[string]any{"argv": []string{realtest.Probe(t), "dial", probeOut,
			"connect:" + proxy + "=" + other, "connect:" + proxy + "=" + otherHub,
			"connect:" + proxy + "=localhost:" + portOf(hub), "tcp:" + other, "tcp:" + hub}},
			// And can it loosen the browser's policy?
			map[string]any{"argv": []string{"sh", "-c", `{
				grep -q "$MARK" "$POL" && echo "policy is the session's"
				echo '{}' > "$POL" && echo "rewrote the policy"
				touch "$(dirname "$POL")/more.json" && echo "added a policy file"
				umount "$ETC" && echo "unmounted the policy"
				umount -l "$ETC" && echo "lazily unmounted the policy"
				mount -o remount,rw "$ETC" && echo "remounted the policy writable"
				unshare -Urm sh -c 'umount "$ETC" && echo "unmounted the policy in a namespace of its own"
					mount -o remount,rw "$ETC" && echo "remounted the policy writable in a namespace of its own"
					echo "{}" > "$POL" && echo "rewrote the policy in a namespace of its own"
					echo nested-done'
				echo done
				} > "$OUT" 2>&1`},
				"env": map[string]string{"OUT": attackOut, "ETC": b.etc, "POL": b.policy, "MARK": hub}, "dir": "/"},
			// Which windows are on the screen once the test says so.
			map[string]any{"argv": []string{"sh", "-c", `while [ ! -e "$GO" ]; do sleep 0.1; done
				for w in $(xdotool search --onlyvisible --name .); do
					echo "$w $(xdotool getwindowname $w | tr ' ' _) $(xwininfo -id $w | grep -o 'geometry.*' | tr ' ' _)"
				done > "$OUT.tmp" 2>&1; mv "$OUT.tmp" "$OUT"`},
				"env": map[string]string{"GO": windowsGo, "OUT": windowsOut, "DISPLAY": ":1"}, "dir": "/"},
		},
		"connectors": []any{map[string]any{
			"name": "console", "kind": "vnc", "target": "127.0.0.1:5901", "listen": "tcp:127.0.0.1:0",
		}},
		"ticket_key_file": key,
		"kiosk": map[string]any{"url": "https://" + hub + "/?" + id, "browser": b.name,
			"ca_pem": string(ca.pem), "geometry": "480x320"},
	}, realtest.RunOptions{As: m.as})

	// The site is on the screen.
	ep, sha := r.Ready.Endpoints["console"], r.Ready.TLSSHA256
	ctx := t.Context()
	view := dialRFB(ctx, t, ep, sha, sign(t, ticket.Claims{Session: id, Connector: "console", User: m.owner.Name, Mode: ticket.Control}))
	err := realtest.WaitFor(60*time.Second, func() error {
		if err := view.Update(false); err != nil {
			return err
		}
		if f := greenShare(view); f < 0.97 {
			return fmt.Errorf("%.0f%% of the screen is the site's colour (site requests: %d)", f*100, hits.Load())
		}
		return nil
	})
	writePNG(t, view, "kiosk.png")
	if err != nil {
		t.Fatalf("the kiosk does not show the site: %v\nevents: %+v", err, r.Others())
	}

	// Another local user or the network: the proxy listens nowhere (each
	// connection comes on a socket pair through the egress relay), so the
	// runner holds no listening socket at all.
	if ports := listeningPorts(t, r.Cmd.Process.Pid); len(ports) > 0 {
		t.Errorf("the runner listens on %v", ports)
	}
	if len(listeningPorts(t, os.Getpid())) == 0 {
		t.Fatal("listeningPorts finds not even this test's own HTTPS servers: the check is broken")
	}

	// The session's process: refused by the proxy for anything but the
	// site, and nothing reached directly.
	var res map[string]probeResult
	if err := realtest.WaitFor(30*time.Second, func() error {
		var err error
		res, err = tryResults(probeOut)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for addr, pr := range res {
		if pr.Reached {
			t.Errorf("the session's process reached %s", addr)
		} else if strings.HasPrefix(addr, "connect:") && !strings.Contains(pr.Error, "403") {
			t.Errorf("%s: %s, want the proxy's 403", addr, pr.Error)
		}
	}

	if err := realtest.WaitFor(30*time.Second, func() error {
		b, err := os.ReadFile(attackOut)
		if err != nil || !strings.Contains(string(b), "\ndone") {
			return fmt.Errorf("attack output so far: %q %v", b, err)
		}
		t.Logf("the session's process tried to loosen the policy:\n%s", b)
		if !strings.Contains(string(b), "nested-done") {
			t.Errorf("the attack in a user namespace of its own did not run:\n%s", b)
		}
		// The file the browser reads is this session's (it names the
		// site, on a port of this test's own).
		if !strings.Contains(string(b), "policy is the session's") {
			t.Errorf("the policy file in the seal is not the session's:\n%s", b)
		}
		for _, bad := range []string{"rewrote", "added", "unmounted", "remounted"} {
			if strings.Contains(string(b), bad) {
				t.Errorf("the session's process %s:\n%s", bad, b)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// The browser's shortcuts (b.shortcuts): a second window is counted
	// below.
	for _, keys := range b.shortcuts {
		view.Chord(keys...)
	}

	// The page is one link to another host: clicking it is refused by
	// the policy (the browser's block page replaces the site), and the
	// browser never asks the proxy for it.
	view.Click(view.W/2, view.H/2)
	if err := realtest.WaitFor(30*time.Second, func() error {
		if err := view.Update(false); err != nil {
			return err
		}
		if f := greenShare(view); f > 0.1 {
			return fmt.Errorf("%.0f%% of the screen still the site's", f*100)
		}
		// The block page has an icon and a message, not only white
		// (the pointer, in the middle, is less than 200 dark pixels).
		if view.Distinct() < 4 || darkPixels(view, 32) < 200 {
			return errors.New("no block page drawn yet")
		}
		return nil
	}); err != nil {
		writePNG(t, view, "kiosk-navigated.png")
		t.Fatalf("clicking the link did not show %s's block page: %v", b.name, err)
	}
	writePNG(t, view, "kiosk-navigated.png")

	// One window on the screen: the kiosk's. (The shortcuts came before
	// the click on the same connection, so the browser had them first.)
	if err := os.WriteFile(windowsGo, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var windows []string
	if err := realtest.WaitFor(30*time.Second, func() error {
		b, err := os.ReadFile(windowsOut)
		windows = strings.Split(strings.TrimSpace(string(b)), "\n")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(windows) != 1 {
		t.Errorf("visible windows after the shortcuts: %q, want the kiosk's alone", windows)
	}

	if b.name == "firefox" {
		checkFirefoxSandbox(t, id)
	}

	// Ctrl+N's window was asked for and refused (Firefox may open it
	// after the block page is drawn).
	if err := realtest.WaitFor(30*time.Second, func() error {
		if !strings.Contains(r.Stderr.String(), "a second window refused") {
			return errors.New("the window manager has not reported refusing a second window")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	if close {
		// Closing the window ends the session. Under load a chord sent
		// while the browser is busy (a page drawn after the shortcuts) can
		// be lost; a user would press again, and so does the test, a few
		// times.
		for try := 0; try < 4; try++ {
			view.Chord(0xffe3, 'w') // Control_L + w
			select {
			case <-r.Exited():
			case <-time.After(15 * time.Second):
				t.Logf("Ctrl+W %d: the session still runs", try+1)
				continue
			}
			break
		}
	} else {
		// So does the browser's end by a signal.
		killBrowser(t, id)
	}
	ev := r.WaitExit(t, 60*time.Second)
	if !strings.Contains(ev.Reason, "kiosk-browser") {
		t.Errorf("session ended with %q, want the browser's exit", ev.Reason)
	}

	if n := otherHits.Load(); n != 0 {
		t.Errorf("the page's fetch to another host arrived (%d requests)", n)
	}
	verdicts := map[string]string{}
	for _, e := range r.Others() {
		if e.Event == "egress" {
			if v, seen := verdicts[e.Target]; !seen || v == "allow" {
				verdicts[e.Target] = e.Verdict
			}
		}
	}
	if verdicts[hub] != "allow" {
		t.Errorf("no audited allow for the site %s: %v", hub, verdicts)
	}
	for _, target := range []string{other, otherHub, "localhost:" + portOf(hub)} {
		if verdicts[target] != "refuse" {
			t.Errorf("egress to %s: audited %q, want refuse (all: %v)", target, verdicts[target], verdicts)
		}
	}
	if v, ok := verdicts[filtered]; ok {
		t.Errorf("the browser asked the proxy for %s (%s) after the click: its policy let the link through", filtered, v)
	}
}

// killBrowser kills the kiosk's main browser process: the one whose
// command line has the session's URL and --kiosk, and neither --type
// (Chromium's zygote, renderers and GPU process) nor -contentproc
// (Firefox's children), not the window manager that started it.
func killBrowser(t *testing.T, id string) {
	t.Helper()
	for _, pid := range realtest.ProcessesOf("?" + id) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !strings.Contains(string(b), "--kiosk") || strings.Contains(string(b), "--type=") ||
			strings.Contains(string(b), "-contentproc") || strings.Contains(string(b), "kiosk-wm") {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill the browser (pid %d): %v", pid, err)
		}
		return
	}
	t.Fatal("the kiosk's browser process not found")
}

// checkFirefoxSandbox: the kiosk's Firefox web content processes run in
// Firefox's sandbox inside the seal as they do outside it: a seccomp
// filter, user, network and IPC namespaces of their own, and a chroot to
// an empty directory. (Firefox leaves them in the browser's PID
// namespace outside the seal too.)
func checkFirefoxSandbox(t *testing.T, id string) {
	t.Helper()
	main := 0
	for _, pid := range realtest.ProcessesOf("?" + id) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && strings.Contains(string(b), "--kiosk") && !strings.Contains(string(b), "kiosk-wm") {
			main = pid
		}
	}
	if main == 0 {
		t.Fatal("the kiosk's firefox not found")
	}
	nsOf := func(pid int, ns string) string {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
		return l
	}
	// A content process names itself before it has finished its own
	// sandbox set-up (the chroot comes a moment later): each one found
	// must be sandboxed within the deadline.
	var content int
	var problems []string
	check := func() error {
		content, problems = 0, nil
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			// Firefox's web content processes are its fork server's children.
			if !strings.Contains(string(cmdline), "-contentproc") || !descends(pid, main) {
				continue
			}
			// The processes that render a site (preallocated ones and the
			// fork server's fresh children are still setting up theirs).
			if !strings.HasPrefix(string(status), "Name:\tIsolated Web Co") {
				continue
			}
			content++
			if !strings.Contains(string(status), "\nSeccomp:\t2\n") {
				problems = append(problems, fmt.Sprintf("content process %d has no seccomp filter", pid))
			}
			if root, _ := os.Readlink(fmt.Sprintf("/proc/%d/root", pid)); root == "/" || root == "" {
				problems = append(problems, fmt.Sprintf("content process %d is not chrooted (root %q)", pid, root))
			}
			for _, ns := range []string{"user", "net", "ipc"} {
				if a, b := nsOf(pid, ns), nsOf(main, ns); a == "" || a == b {
					problems = append(problems, fmt.Sprintf("content process %d shares the browser's %s namespace (%s)", pid, ns, a))
				}
			}
		}
		if content == 0 {
			return errors.New("no firefox web content process (Isolated Web Content) found")
		}
		if len(problems) > 0 {
			return errors.New(strings.Join(problems, "; "))
		}
		return nil
	}
	if err := realtest.WaitFor(15*time.Second, check); err != nil {
		t.Error(err)
	}
	t.Logf("%d firefox web content processes checked: seccomp, chroot, own user, network and IPC namespaces", content)
}

// descends: process pid is a descendant of ancestor.
func descends(pid, ancestor int) bool {
	for range 64 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return false
		}
		// pid (comm) state ppid ...: comm may hold spaces.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 2 {
			return false
		}
		if pid, _ = strconv.Atoi(f[1]); pid == ancestor {
			return true
		} else if pid <= 1 {
			return false
		}
	}
	return false
}

// listeningPorts are the TCP ports of the listening sockets process pid
// holds, from its descriptors and the kernel's socket tables.
func listeningPorts(t *testing.T, pid int) []string {
	t.Helper()
	inodes := map[string]bool{}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if ino, ok := strings.CutPrefix(l, "socket:["); ok && err == nil {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	var out []string
	for _, table := range []string{"tcp", "tcp6"} {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			// local_address st ... inode: state 0A is LISTEN.
			if len(f) > 9 && f[3] == "0A" && inodes[f[9]] {
				out = append(out, f[1])
			}
		}
	}
	return out
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// darkPixels counts pixels darker than mid-grey, leaving out strips of
// margin at the right and the bottom (where a test parks the pointer, and
// where a window one pixel short of the screen leaves the root's black).
func darkPixels(r *realtest.RFB, margin int) int {
	n := 0
	for i := 0; i+4 <= len(r.Frame); i += 4 {
		p := i / 4
		if p%r.W >= r.W-margin || p/r.W >= r.H-margin {
			continue
		}
		if int(r.Frame[i])+int(r.Frame[i+1])+int(r.Frame[i+2]) < 3*128 {
			n++
		}
	}
	return n
}

// greenShare is the share of the frame in the stand-in site's colour.
func greenShare(r *realtest.RFB) float64 {
	n, match := 0, 0
	for i := 0; i+4 <= len(r.Frame); i += 4 {
		n++
		// Little-endian 32 bpp with red at bit 16: B, G, R, 0.
		if r.Frame[i+2] == kioskGreen[0] && r.Frame[i+1] == kioskGreen[1] && r.Frame[i] == kioskGreen[2] {
			match++
		}
	}
	if n == 0 {
		return 0
	}
	return float64(match) / float64(n)
}

// tryResults reads the probe's results once it has written them whole.
func tryResults(path string) (map[string]probeResult, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rs []probeResult
	if err := json.Unmarshal(b, &rs); err != nil {
		return nil, err
	}
	out := map[string]probeResult{}
	for _, r := range rs {
		out[r.Addr] = r
	}
	return out, nil
}

// TestKioskUntrustedSite: without the site's CA in the kiosk's policy the
// browser refuses the site's certificate (its handshakes with the site
// break off, no request arrives, the screen does not show it): the CA the other
// kiosk tests trust is trusted through the policy, not by accident.
func TestKioskUntrustedSite(t *testing.T) {
	for _, b := range []kioskBrowser{chromiumKiosk, firefoxKiosk} {
		t.Run(b.name, func(t *testing.T) { testKioskUntrusted(t, b) })
	}
}

func testKioskUntrusted(t *testing.T, b kioskBrowser) {
	exe := map[string]string{"chromium": "chromium", "firefox": "firefox-esr"}[b.name]
	needKioskTools(t, exe)
	m := modes(t)[0]
	ca := newCA(t, "airlock kiosk untrusted CA")
	other := echoListen(t, "tcp", "127.0.0.1:0").Addr().String()
	hub, hits, badCert := hubServer(t, ca, other, "")
	key := filepath.Join(realtest.SharedDir(t, m.owner), "key")
	realtest.WriteFile(t, m.owner, key, testKey, 0o600)
	id := fmt.Sprintf("kiosk-u-%d", time.Now().UnixNano()%1e6)
	r := realtest.StartRunner(t, map[string]any{
		"id": id, "owner": m.owner.Name,
		"workload": map[string]any{"argv": []string{"Xvnc", ":1", "-rfbport", "5901", "-localhost",
			"-SecurityTypes", "None", "-geometry", "480x320", "-depth", "24", "-AlwaysShared"}},
		"connectors": []any{map[string]any{
			"name": "console", "kind": "vnc", "target": "127.0.0.1:5901", "listen": "tcp:127.0.0.1:0",
		}},
		"ticket_key_file": key,
		"kiosk":           map[string]any{"url": "https://" + hub + "/", "browser": b.name, "geometry": "480x320"},
	}, realtest.RunOptions{As: m.as})
	view := dialRFB(t.Context(), t, r.Ready.Endpoints["console"], r.Ready.TLSSHA256,
		sign(t, ticket.Claims{Session: id, Connector: "console", User: m.owner.Name, Mode: ticket.Control}))
	view.Pointer(view.W-1, view.H-1)
	err := realtest.WaitFor(60*time.Second, func() error {
		allowed := false
		for _, e := range r.Others() {
			allowed = allowed || e.Event == "egress" && e.Target == hub && e.Verdict == "allow"
		}
		if !allowed {
			return errors.New("the browser has not tried the site yet")
		}
		if badCert.Load() == 0 {
			return errors.New("no handshake with the site has failed yet")
		}
		if err := view.Update(false); err != nil {
			return err
		}
		// The browser's certificate warning: text, not a blank page (the
		// pointer, parked in the corner, does not count).
		if n := darkPixels(view, 32); n < 200 || greenShare(view) > 0.1 {
			return fmt.Errorf("screen: %d dark pixels, %.0f%% the site's", n, greenShare(view)*100)
		}
		return nil
	})
	writePNG(t, view, "kiosk-untrusted.png")
	if err != nil {
		t.Fatal(err)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the site got %d requests over a certificate the kiosk should not trust", n)
	}
}

// needKioskTools skips tb without Xvnc and browser.
func needKioskTools(tb testing.TB, browser string) {
	tb.Helper()
	for _, bin := range []string{"Xvnc", browser} {
		if _, err := exec.LookPath(bin); err != nil {
			tb.Skipf("%s not installed (scripts/install-deps.sh installs it)", bin)
		}
	}
}
