package rdpclient

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair: the side a terminal emulator
// holds, and the side a program reads as its terminal.
func openPTY(t *testing.T) (term, prog *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// TestLoginPasswordNotEchoed: `airlock login` on a terminal echoes the
// user name typed but not the password, and leaves echo on afterwards.
func TestLoginPasswordNotEchoed(t *testing.T) {
	term, prog := openPTY(t)
	echoes := func() bool {
		tio, err := unix.IoctlGetTermios(int(prog.Fd()), unix.TCGETS)
		return err == nil && tio.Lflag&unix.ECHO != 0
	}
	if !echoes() {
		t.Fatal("a fresh terminal does not echo: the test proves nothing")
	}
	// What the user types: the name, then the password once the prompt
	// for it is up (a terminal echoes as keys are typed, so a password
	// typed before that would show whatever the command does).
	go func() {
		io.WriteString(term, "alice\n")
		for deadline := time.Now().Add(10 * time.Second); echoes() && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		io.WriteString(term, "hunter2-secret\n")
	}()
	var out bytes.Buffer
	// Port 1 on loopback refuses: the command stops after reading both.
	code := CmdLogin(context.Background(), []string{"https://127.0.0.1:1"}, prog, &out, &out)
	if code != 1 || !strings.Contains(out.String(), "cannot reach") {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	if !echoes() {
		t.Error("echo is still off after the login")
	}
	prog.Close()
	shown, _ := io.ReadAll(term) // what the terminal displayed: its echo
	if !strings.Contains(string(shown), "alice") {
		t.Fatalf("the terminal shows %q: the user name was not echoed, so the check below proves nothing", shown)
	}
	if strings.Contains(string(shown), "hunter2") {
		t.Errorf("the password was echoed: %q", shown)
	}
}
