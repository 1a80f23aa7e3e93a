package anchorbench

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain raises the descriptor limit before anything runs, tears the
// shared env down after everything has, and fails the package if any of
// its goroutines or the WebSocket library's outlive that.
func TestMain(m *testing.M) {
	if err := raiseFileLimit(); err != nil {
		fmt.Fprintln(os.Stderr, "anchorbench:", err)
	}
	code := m.Run()
	closeEnv()
	if code == 0 {
		if err := waitNoLeaks(5 * time.Second); err != nil {
			fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// waitNoLeaks polls until no goroutine of this package or of
// coder/websocket is left, and returns the last stacks otherwise.
func waitNoLeaks(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := leakedGoroutines()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func leakedGoroutines() error {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var leaks []string
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 { // this goroutine
			continue
		}
		if strings.Contains(g, "airlock/internal/anchorbench.") && !strings.Contains(g, "anchorbench.TestMain") ||
			strings.Contains(g, "coder/websocket.") {
			leaks = append(leaks, g)
		}
	}
	if len(leaks) > 0 {
		return fmt.Errorf("%d goroutines:\n%s", len(leaks), strings.Join(leaks, "\n\n"))
	}
	return nil
}
