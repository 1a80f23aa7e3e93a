package connector

import (
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/ticket"
)

// TestQEMUClipboardFilter: a vm session's console is QEMU's own VNC
// server, which speaks other extensions than Xvnc (its audio and LED
// pseudo-encodings, its pointer-type change). Under a clipboard policy a
// viewer that asks for all of them, as noVNC does, still gets a working
// screen: the filter removes what it cannot measure and QEMU sends only
// what the filter parses.
func TestQEMUClipboardFilter(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	sock := filepath.Join(t.TempDir(), "vnc.sock")
	// Paused before the first instruction (-S): the VGA device's blank
	// screen is all a viewer needs here.
	cmd := exec.Command(qemu, "-nodefaults", "-S", "-machine", "pc", "-vga", "std", "-display", "none", "-vnc", "unix:"+sock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	if err := waitFor(20*time.Second, func() error { return exec.Command("test", "-S", sock).Run() }); err != nil {
		t.Fatalf("QEMU's VNC socket never appeared: %v", err)
	}
	k := newKey(t)
	logs, logger := newLogSink(t)
	conn, _ := startConnector(t, Config{Kind: KindVNC, Target: "unix:" + sock, Key: k, Logger: logger, Clipboard: contract.ClipboardNone})
	c := wsDial{subprotocols: []string{"binary"}}.mustDial(t, conn, mint(t, k, ticket.Control))
	cc := newClipClient(t, c, true)
	// Everything noVNC 1.7 announces, Raw first so the test client can
	// read the answer.
	enc := []byte{msgSetEncodings, 0, 0, 0}
	for _, e := range []int32{encRaw, 7, -260, encZRLE, 21, 5, encRRE, encCopyRect, -32 + 6, -256 + 2,
		encDesktopSize, encLastRect, -261, -262, -257, encQEMUExtendedKey, -259, encExtendedDesktopSize,
		encXvp, encFence, encContinuousUpdates, encCursor, -314, -307, 0x574d5664, int32(-0x3f5e1a32)} {
		enc = append(enc, byte(e>>24), byte(e>>16), byte(e>>8), byte(e))
	}
	enc[3] = byte((len(enc) - 4) / 4)
	mustWrite(t, c, enc)
	for range 3 {
		cc.roundTrip()
	}
	c.Close()
	logs.waitLine(t, "msg=disconnected", "clipboard=none")
	if l := logs.String(); strings.Contains(l, "clipboard filter closed") {
		t.Fatalf("the filter closed QEMU's connection:\n%s", l)
	}
}
