package kioskwm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
)

// TestRunEndsBrowserWithoutWindow: a real Xvnc, the WM, and a "browser"
// (a shell) whose window (an xterm) goes while the browser process stays,
// as a browser does that kept a window it was asked to close. With its
// kiosk window gone and none back within closeGrace, the WM ends the
// browser, so the session ends; while the window is there, it does not.
func TestRunEndsBrowserWithoutWindow(t *testing.T) {
	for _, bin := range []string{"Xvnc", "xterm"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed", bin)
		}
	}
	display := startX(t)
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "xterm.pid")
	argv := []string{"sh", "-c", "xterm & echo $! > " + pidFile + "; exec sleep 600"}
	var logs realtest.LockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := Run(ctx, display, argv, append(os.Environ(), "DISPLAY="+display), log)
		done <- result{code, err}
	}()
	if err := realtest.WaitFor(30*time.Second, func() error {
		if !strings.Contains(logs.String(), "window mapped") {
			return errors.New("the xterm is not mapped")
		}
		return nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	// Past the grace with the window there: the browser runs on.
	select {
	case r := <-done:
		t.Fatalf("the browser ended with its window on the screen: %d %v\n%s", r.code, r.err, logs.String())
	case <-time.After(closeGrace + 2*time.Second):
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if !strings.Contains(logs.String(), "did not exit; ending it") {
			t.Fatalf("the browser ended (%d) without the WM saying why:\n%s", r.code, logs.String())
		}
	case <-time.After(closeGrace + 30*time.Second):
		t.Fatalf("the browser still runs with its window gone:\n%s", logs.String())
	}
}

// startX starts Xvnc on a free display, without TCP, until the test ends.
func startX(t *testing.T) string {
	t.Helper()
	for n := 180; n < 240; n++ {
		sock := fmt.Sprintf("/tmp/.X11-unix/X%d", n)
		if _, err := os.Stat(sock); err == nil {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/tmp/.X%d-lock", n)); err == nil {
			continue
		}
		var out realtest.LockedBuffer
		cmd := exec.Command("Xvnc", fmt.Sprintf(":%d", n), "-rfbport", "-1", "-nolisten", "tcp", "-geometry", "320x240", "-depth", "24")
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		t.Cleanup(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			<-exited
		})
		err := realtest.WaitFor(15*time.Second, func() error {
			select {
			case <-exited:
				return nil
			default:
			}
			_, err := os.Stat(sock)
			return err
		})
		select {
		case <-exited:
			continue // the display was taken meanwhile
		default:
		}
		if err != nil {
			t.Fatalf("Xvnc :%d: %v\n%s", n, err, out.String())
		}
		return fmt.Sprintf(":%d", n)
	}
	t.Fatal("no free X display in :180-:239")
	return ""
}
