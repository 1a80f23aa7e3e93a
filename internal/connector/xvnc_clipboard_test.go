package connector

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/ticket"
)

// clipClient is a minimal RFB client, written apart from the filter, that
// asks for Raw only and keeps every ServerCutText payload it sees.
type clipClient struct {
	t    *testing.T
	c    net.Conn
	w, h uint16
	cuts []string
}

func newClipClient(t *testing.T, c net.Conn, extended bool) *clipClient {
	t.Helper()
	w, h, _ := rfbClientLogin(t, c, 1)
	mustWrite(t, c, setPixelFmt)
	enc := []byte{msgSetEncodings, 0, 0, 1, 0, 0, 0, encRaw}
	if extended {
		enc = []byte{msgSetEncodings, 0, 0, 2, 0, 0, 0, encRaw, 0xc0, 0xa1, 0xe5, 0xce}
	}
	mustWrite(t, c, enc)
	return &clipClient{t: t, c: c, w: w, h: h}
}

// roundTrip asks for the whole screen and reads until the update: the
// server has then handled everything the client sent before, and every
// message the server sent before is in cuts.
func (cc *clipClient) roundTrip() {
	cc.t.Helper()
	req := []byte{msgFramebufferUpdateRequest, 0, 0, 0, 0, 0}
	req = binary.BigEndian.AppendUint16(req, cc.w)
	req = binary.BigEndian.AppendUint16(req, cc.h)
	mustWrite(cc.t, cc.c, req)
	cc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer cc.c.SetReadDeadline(time.Time{})
	for {
		t := readN(cc.t, cc.c, 1)[0]
		switch t {
		case 0:
			n := int(binary.BigEndian.Uint16(readN(cc.t, cc.c, 3)[1:]))
			for i := 0; i < n; i++ {
				r := readN(cc.t, cc.c, 12)
				w, h := int(binary.BigEndian.Uint16(r[4:])), int(binary.BigEndian.Uint16(r[6:]))
				u32 := func() int { return int(binary.BigEndian.Uint32(readN(cc.t, cc.c, 4))) }
				var skip int
				switch enc := int32(binary.BigEndian.Uint32(r[8:])); enc {
				case encRaw:
					skip = w * h * 4
				case encCopyRect:
					skip = 4
				case encRRE:
					skip = u32()*12 + 4
				case encZlib, encZRLE, encDesktopName:
					skip = u32()
				case encCursor:
					skip = w*h*4 + (w+7)/8*h
				case encExtendedDesktopSize:
					skip = 16 * int(readN(cc.t, cc.c, 4)[0])
				case encLastRect:
					n = 0
				case encDesktopSize, encQEMUExtendedKey, encXvp, encFence, encContinuousUpdates:
				default:
					cc.t.Fatalf("rectangle encoding %d, which the client did not ask for or the filter should have removed", enc)
				}
				if _, err := io.CopyN(io.Discard, cc.c, int64(skip)); err != nil {
					cc.t.Fatal(err)
				}
			}
			return
		case 2: // Bell
		case 3:
			l := int32(binary.BigEndian.Uint32(readN(cc.t, cc.c, 7)[3:]))
			cc.cuts = append(cc.cuts, string(readN(cc.t, cc.c, int(max(l, -l)))))
		default:
			cc.t.Fatalf("server message type %d", t)
		}
	}
}

func (cc *clipClient) sawCut(s string) bool {
	for _, c := range cc.cuts {
		if strings.Contains(c, s) {
			return true
		}
	}
	return false
}

// xclip runs xclip on display with args, returning its output.
func xclip(display int, stdin string, args ...string) (string, error) {
	cmd := exec.Command("xclip", args...)
	cmd.Env = append(os.Environ(), "DISPLAY=:"+strconv.Itoa(display))
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestXvncClipboard: the clipboard policy against a real TigerVNC server
// whose own clipboard controls the workload holds. The site starts Xvnc
// with SendCutText and AcceptCutText off, the session's workload turns
// them back on with vncconfig (which any X client in the session may do),
// and only the connector stands between the desktop's clipboard and the
// viewer. For each policy: a text copied in the desktop (xclip, as an
// xterm selection would be) reaches the viewer only when "out" is
// allowed, and a text the viewer sends reaches the desktop's clipboard
// only when "in" is. Clients that announce the Extended Clipboard get
// nothing more. (With the connector's drops removed the refused cases
// fail: the text arrives.)
func TestXvncClipboard(t *testing.T) {
	if _, err := exec.LookPath("xclip"); err != nil {
		t.Skip("xclip not installed (scripts/install-deps.sh installs it)")
	}
	if _, err := exec.LookPath("vncconfig"); err != nil {
		t.Skip("vncconfig not installed (Debian: tigervnc-tools)")
	}
	addr, display := startXvncDisplay(t, "-SecurityTypes", "None", "-SendCutText=0", "-AcceptCutText=0")
	// The workload's attack: switch the server's clipboard back on.
	for _, p := range []string{"SendCutText=1", "AcceptCutText=1"} {
		cmd := exec.Command("vncconfig", "-display", ":"+strconv.Itoa(display), "-set", p)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("vncconfig -set %s: %v\n%s", p, err, out)
		}
	}

	for i, tc := range []struct {
		policy   contract.Clipboard
		extended bool
	}{
		{contract.ClipboardBoth, false},
		{contract.ClipboardIn, false},
		{contract.ClipboardOut, false},
		{contract.ClipboardNone, false},
		{contract.ClipboardNone, true},
		{contract.ClipboardIn, true},
	} {
		t.Run(fmt.Sprintf("%s/extended=%v", tc.policy, tc.extended), func(t *testing.T) {
			k := newKey(t)
			logs, logger := newLogSink(t)
			conn, _ := startConnector(t, Config{Kind: KindVNC, Target: addr, Key: k, Logger: logger, Clipboard: tc.policy})
			c := wsDial{subprotocols: []string{"binary"}}.mustDial(t, conn, mint(t, k, ticket.Control))
			defer c.Close()
			cc := newClipClient(t, c, tc.extended)
			cc.roundTrip()

			// Out: the desktop's clipboard changes.
			secretOut := fmt.Sprintf("out-secret-%d-%d", i, time.Now().UnixNano())
			owner := exec.Command("xclip", "-quiet", "-selection", "clipboard", "-i")
			owner.Env = append(os.Environ(), "DISPLAY=:"+strconv.Itoa(display))
			owner.Stdin = strings.NewReader(secretOut)
			if err := owner.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { owner.Process.Kill(); owner.Wait() }()
			if tc.policy.AllowsOut() {
				err := waitFor(10*time.Second, func() error {
					cc.roundTrip()
					if !cc.sawCut(secretOut) {
						return fmt.Errorf("desktop's clipboard text not at the viewer; saw %q", cc.cuts)
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			} else {
				// The filter has seen the server's cut text and dropped it;
				// everything the server sent before the next update is read.
				logs.waitLine(t, `msg="clipboard refused"`, "direction=out")
				cc.roundTrip()
				if len(cc.cuts) > 0 {
					t.Fatalf("viewer got cut text %q with clipboard %s", cc.cuts, tc.policy)
				}
			}

			// In: the viewer sends text.
			secretIn := fmt.Sprintf("in-secret-%d-%d", i, time.Now().UnixNano())
			msg := binary.BigEndian.AppendUint32([]byte{msgClientCutText, 0, 0, 0}, uint32(len(secretIn)))
			mustWrite(t, c, append(msg, secretIn...))
			cc.roundTrip() // the server has handled the cut text, if it came
			if tc.policy.AllowsIn() {
				err := waitFor(10*time.Second, func() error {
					got, err := xclip(display, "", "-o", "-selection", "clipboard")
					if got != secretIn {
						return fmt.Errorf("desktop clipboard %q (%v), want the viewer's text", got, err)
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			} else {
				logs.waitLine(t, `msg="clipboard refused"`, "direction=in")
				for _, sel := range []string{"clipboard", "primary"} {
					if got, _ := xclip(display, "", "-o", "-selection", sel); strings.Contains(got, secretIn) {
						t.Fatalf("viewer's text reached the desktop's %s selection with clipboard %s", sel, tc.policy)
					}
				}
			}
			if !bytes.Contains([]byte(logs.String()), []byte("clipboard="+string(tc.policy))) && tc.policy != contract.ClipboardBoth {
				t.Errorf("connection log does not name the policy")
			}
		})
	}
}

// TestXvncClipboardViewMode: a view-only viewer of a desktop whose
// clipboard is none goes through both filters at once: it sees the
// screen, its cut text and input are dropped, and the desktop's cut text
// never reaches it.
func TestXvncClipboardViewMode(t *testing.T) {
	if _, err := exec.LookPath("xclip"); err != nil {
		t.Skip("xclip not installed (scripts/install-deps.sh installs it)")
	}
	addr, display := startXvncDisplay(t, "-SecurityTypes", "None")
	k := newKey(t)
	logs, logger := newLogSink(t)
	conn, _ := startConnector(t, Config{Kind: KindVNC, Target: addr, Key: k, Logger: logger, Clipboard: contract.ClipboardNone})
	c := wsDial{subprotocols: []string{"binary"}}.mustDial(t, conn, mint(t, k, ticket.View))
	cc := newClipClient(t, c, true)
	cc.roundTrip()

	owner := exec.Command("xclip", "-quiet", "-selection", "clipboard", "-i")
	owner.Env = append(os.Environ(), "DISPLAY=:"+strconv.Itoa(display))
	owner.Stdin = strings.NewReader("view-out-secret")
	if err := owner.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { owner.Process.Kill(); owner.Wait() }()
	logs.waitLine(t, `msg="clipboard refused"`, "direction=out")
	msg := binary.BigEndian.AppendUint32([]byte{msgClientCutText, 0, 0, 0}, 14)
	mustWrite(t, c, append(append(msg, "view-in-secret"...), keyEvent...))
	cc.roundTrip()
	if len(cc.cuts) > 0 {
		t.Fatalf("view-only viewer got cut text %q", cc.cuts)
	}
	logs.waitLine(t, `msg="clipboard refused"`, "direction=in")
	if got, _ := xclip(display, "", "-o", "-selection", "clipboard"); strings.Contains(got, "view-in-secret") {
		t.Fatal("a view-only viewer's cut text reached the desktop")
	}
	c.Close()
	logs.waitLine(t, "msg=disconnected", "mode=view", "clipboard_in_dropped=1", "input_dropped=2")
}
