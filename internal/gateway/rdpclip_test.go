package gateway

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/rdcleanpath"
	"github.com/airlock-hpc/airlock/internal/rdpfilter"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/store"
)

// TestRDPWebClipboard is the clipboard policy of browser RDP on the whole
// path, in real headless Chromium (clipboard permissions granted, as a
// user who allowed them): IronRDP in the page, the gateway's relay and
// its channel filter, the session's tls connector, xrdp's clipboard, the
// seal's Xvnc. In the session one program keeps putting a known text on
// the desktop's selection (Xvnc hands it to xrdp, xrdp offers it over
// cliprdr) and another reads the desktop's clipboard into a file.
//
// both: the desktop's text reaches the page's clipboard and the page's
// reaches the desktop. none: the filter took cliprdr out of the client's
// Connect Initial (the relay's log says so), and neither text crosses.
// in / out: only the allowed way arrives; the refused way is stopped by
// the filter (its log line and audit event name the direction) while the
// channel stays open. The desktop reader's counter makes each "did not
// arrive" wait on passes of the desktop's programs, not on a sleep.
func TestRDPWebClipboard(t *testing.T) {
	needRDPTools(t)
	root := needBrowser(t)
	if _, err := os.Stat(filepath.Join(root, "internal", "portal", "static", "vendor", "ironrdp", "iron-remote-desktop-rdp.js")); err != nil {
		t.Skip("the IronRDP web client is not built (make web)")
	}
	if _, err := exec.LookPath("xclip"); err != nil {
		t.Skip("xclip not installed")
	}
	owner := realtest.Current(t)
	if os.Geteuid() == 0 {
		owner = realtest.TestUser(t)
	}
	const outText = "OUT-SECRET-RDP-4711"
	for _, policy := range []contract.Clipboard{contract.ClipboardBoth, contract.ClipboardNone, contract.ClipboardIn, contract.ClipboardOut} {
		t.Run(string(policy), func(t *testing.T) {
			dir := ownerDir(t, owner, "airlock-rdpclip-")
			inText := "IN-SECRET-RDP-" + string(policy)
			tg, lb := rdpWebGateway(t, filepath.Join(dir, "typed"), func(p *Profile) {
				p.Clipboard = policy
				p.Programs = [][]string{
					{"xterm", "-geometry", "60x15+0+0"},
					{"sh", "-c", "while :; do printf %s " + outText + " | timeout 1 xclip -quiet -selection primary -i; done"},
					{"sh", "-c", "n=0; while :; do n=$((n+1)); xclip -o -selection clipboard > " + dir + "/clip.tmp 2>/dev/null; echo >> " + dir + "/clip.tmp; echo $n >> " + dir + "/clip.tmp; mv " + dir + "/clip.tmp " + dir + "/clip.txt; sleep 0.2; done"},
				}
			})
			desktop := func() (string, int) {
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
			// passes waits until the desktop's reader went round k more
			// times (about 0.2 s each, with the selection owner renewed
			// every second).
			passes := func(k int) {
				t.Helper()
				_, n0 := desktop()
				if err := realtest.WaitFor(60*time.Second, func() error {
					if _, n := desktop(); n < n0+k {
						return fmt.Errorf("reader at pass %d", n)
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
			}
			alice := tg.client().loginToken("alice")
			s := alice.launch("rdpdesk")
			b := startBrowser(t, "rdp-clipboard.mjs", map[string]string{
				"base": tg.url, "password": testPassword, "user": "alice", "session": s.ID, "inText": inText, "verbose": os.Getenv("AIRLOCK_TEST_VERBOSE"),
			})
			wait := func(step string) map[string]any { t.Helper(); return b.wait(step, 150*time.Second) }
			wait("connected")
			// report is the page's clipboard text, once its RDP connection
			// is up (the page connects again after IronRDP's clipboard
			// start-up race; see rdp.js).
			report := func() string {
				t.Helper()
				var text string
				if err := realtest.WaitFor(60*time.Second, func() error {
					b.send("report")
					r := wait("report")
					if r["state"] != "connected" {
						return fmt.Errorf("the page's RDP connection: %v", r["state"])
					}
					text, _ = r["text"].(string)
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				return text
			}
			// Out: the desktop's text to the page.
			if policy.AllowsOut() {
				if err := realtest.WaitFor(45*time.Second, func() error {
					if got := report(); got != outText {
						return fmt.Errorf("page clipboard %q", got)
					}
					return nil
				}); err != nil {
					t.Fatalf("the desktop's text never reached the page: %v", err)
				}
			} else {
				passes(15) // three renewals of the desktop's selection
				if got := report(); got == outText {
					t.Fatalf("the desktop's text reached the page with clipboard %s", policy)
				}
				if policy == contract.ClipboardIn {
					lb.waitLog(t, "rdp (browser): clipboard refused", "session="+s.ID, "direction=out", `what="format list"`)
				}
			}

			// In: the page's text to the desktop.
			b.send("paste")
			wait("pasted")
			if policy.AllowsIn() {
				if err := realtest.WaitFor(45*time.Second, func() error {
					if got, n := desktop(); got != inText {
						return fmt.Errorf("desktop clipboard %q (reader's pass %d)", got, n)
					}
					return nil
				}); err != nil {
					t.Fatalf("the page's text never reached the desktop: %v", err)
				}
			} else {
				passes(10)
				if got, _ := desktop(); got == inText {
					t.Fatalf("the page's text reached the desktop with clipboard %s", policy)
				}
				if policy == contract.ClipboardOut {
					lb.waitLog(t, "rdp (browser): clipboard refused", "session="+s.ID, "direction=in", `what="format list"`)
				}
			}
			report() // the session is still up, whatever was refused
			b.send("stop")
			if m := wait("stopped"); len(m["errors"].([]any)) > 0 {
				t.Errorf("page errors: %v", m["errors"])
			}
			// The clipboard channel opened, except with none: there the page
			// does not ask for it, and had it asked the relay would have
			// taken it out (TestRDPWebXrdp: a client that asks).
			lb.waitLog(t, "rdp (browser): disconnected", "session="+s.ID)
			asked := regexp.MustCompile(`channels="?\[[^]]*cliprdr`)
			blocked := regexp.MustCompile(`channels_blocked="?\[[^]]*cliprdr`)
			for l := range strings.SplitSeq(lb.String(), "\n") {
				if !strings.Contains(l, "rdp (browser): disconnected") || !strings.Contains(l, "session="+s.ID) {
					continue
				}
				if opened := asked.MatchString(l) && !blocked.MatchString(l); opened != (policy != contract.ClipboardNone) {
					t.Errorf("with clipboard %s: %s", policy, l)
				}
			}
			if policy == contract.ClipboardIn || policy == contract.ClipboardOut {
				audits, err := tg.cfg.Store.ListAudit(context.Background(), store.AuditFilter{Session: s.ID})
				if err != nil {
					t.Fatal(err)
				}
				found := false
				for _, a := range audits {
					found = found || (a.Action == "clipboard_refused" && strings.Contains(a.Detail, "format list"))
				}
				if !found {
					t.Errorf("no clipboard_refused audit event for session %s", s.ID)
				}
			}
		})
	}
}

// TestRDPWebAttackerClient: a client of the attacker's own making (not
// IronRDP) speaks MCS through the real relay to the real xrdp of a
// desktop whose clipboard is none. Joining the channels the server
// assigned works; a join for a channel id it did not assign (one xrdp
// might still answer for), or a second Connect Initial (a fresh channel
// list, cliprdr in it), ends the connection with a logged and audited
// refusal, and nothing after it reaches xrdp.
func TestRDPWebAttackerClient(t *testing.T) {
	needRDPTools(t)
	owner := realtest.Current(t)
	if os.Geteuid() == 0 {
		owner = realtest.TestUser(t)
	}
	dir := ownerDir(t, owner, "airlock-rdpatk-")
	tg, lb := rdpWebGateway(t, filepath.Join(dir, "typed"), nil)
	alice := tg.client().loginToken("alice")
	s := alice.launch("rdpdesk")
	tpkt := func(mcs ...byte) []byte {
		return append([]byte{0x03, 0x00, 0x00, byte(7 + len(mcs)), 0x02, 0xF0, 0x80}, mcs...)
	}
	// open returns a relayed connection whose MCS domain is set up: the
	// Connect Initial (cliprdr, rdpsnd), the Erect Domain and Attach
	// User Requests; it returns the user's channel and the channel ids.
	open := func() (net.Conn, uint16, []uint16) {
		t.Helper()
		tk := rdpTicket(t, alice, s.ID)
		var conn net.Conn
		if err := realtest.WaitFor(60*time.Second, func() error {
			c, resp := rdpWebExchange(t, tg, alice, tk.Path, rdpRequest(t, s.ID, tk.Ticket, realtest.RDPConnectionRequest(1)))
			if resp.Kind() != rdcleanpath.KindResponse {
				tk = rdpTicket(t, alice, s.ID)
				return fmt.Errorf("answer %+v", resp.Error)
			}
			conn = c
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		conn.Write(realtest.RDPConnectInitial(800, 600, "cliprdr", "rdpsnd"))
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		cr, err := rdcleanpath.ReadTPKT(conn, 1<<16)
		if err != nil {
			t.Fatalf("Connect Response: %v", err)
		}
		ids, err := realtest.RDPServerChannelIDs(cr)
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(slices.Concat(tpkt(0x04, 0x01, 0x00, 0x01, 0x00), tpkt(0x28)))
		auc, err := rdcleanpath.ReadTPKT(conn, 1<<16)
		if err != nil || len(auc) < 11 || auc[7]>>2 != 11 {
			t.Fatalf("Attach User Confirm % x, %v", auc, err)
		}
		return conn, 1001 + binary.BigEndian.Uint16(auc[9:]), ids
	}
	join := func(user, ch uint16) []byte {
		return tpkt(0x38, byte((user-1001)>>8), byte(user-1001), byte(ch>>8), byte(ch))
	}
	refused := func(conn net.Conn, why string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		conn.SetReadDeadline(deadline)
		_, err := io.Copy(io.Discard, conn)
		if !time.Now().Before(deadline) || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the connection was not closed (%v)", err)
		}
		lb.waitLog(t, "rdp (browser): refused", "session="+s.ID, why)
	}

	conn, user, ids := open()
	// An honest join: the user's own channel; xrdp confirms it.
	conn.Write(join(user, user))
	jc, err := rdcleanpath.ReadTPKT(conn, 1<<16)
	if err != nil || jc[7]>>2 != 15 || jc[8] != 0 {
		t.Fatalf("Channel Join Confirm % x, %v", jc, err)
	}
	// An id past every one xrdp gave out (its user channel follows the
	// static channels').
	bogus := max(user, ids[len(ids)-1]) + 7
	conn.Write(join(user, bogus))
	refused(conn, fmt.Sprintf("channel %d, which the server did not assign", bogus))

	conn, _, _ = open()
	conn.Write(realtest.RDPConnectInitial(800, 600, "cliprdr"))
	refused(conn, "a second MCS Connect Initial")

	audits, err := tg.cfg.Store.ListAudit(context.Background(), store.AuditFilter{Session: s.ID})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range audits {
		if a.Action == "rdp_refused" {
			got = append(got, a.Detail)
		}
	}
	if len(got) != 2 || !strings.Contains(strings.Join(got, "|"), "did not assign") || !strings.Contains(strings.Join(got, "|"), "second MCS Connect Initial") {
		t.Errorf("rdp_refused audits: %q", got)
	}
}

// TestRDPClipAuditCapped: a connection that keeps having its clipboard
// blocked (a script copying in a loop) gets at most rdpClipAuditRate
// audit events a minute; the disconnect line's count has them all.
func TestRDPClipAuditCapped(t *testing.T) {
	tg := startGateway(t, "", nil, "alice")
	tag := viewerTag{Session: "s-clipcap", User: "alice"}
	a := &rdpClipAudit{g: tg.g, ctx: context.Background(), tag: tag, remote: "127.0.0.1:1"}
	for range 3 * rdpClipAuditRate {
		a.add(rdpfilter.Block{Direction: "out", What: "format list", Bytes: 26})
	}
	if a.total() != 3*rdpClipAuditRate {
		t.Errorf("counted %d", a.total())
	}
	count := func() int {
		audits, err := tg.cfg.Store.ListAudit(context.Background(), store.AuditFilter{Session: tag.Session})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range audits {
			if e.Action == "clipboard_refused" && strings.Contains(e.Detail, "clipboard out format list of 26 bytes blocked") {
				n++
			}
		}
		return n
	}
	if err := realtest.WaitFor(10*time.Second, func() error {
		if n := count(); n != rdpClipAuditRate {
			return fmt.Errorf("%d audit events", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
