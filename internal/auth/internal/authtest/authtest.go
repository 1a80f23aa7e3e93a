// Package authtest holds what the tests of internal/auth and its
// subpackages share: a real OpenLDAP slapd started per test, a leak check
// for TestMain, and a test logger. Only _test.go files may import it; it
// imports testing. (The slapd harness would belong in internal/realtest
// beside the other real-server harnesses; it lives here until that
// package's owners take it.)
package authtest

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Main runs the tests, then fails the run if any goroutine whose stack
// mentions marker (a package path such as "airlock/internal/auth/ldap")
// is still running five seconds later.
func Main(m *testing.M, marker string) {
	code := m.Run()
	if code == 0 {
		if err := checkNoLeakedGoroutines(marker, 5*time.Second); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

func checkNoLeakedGoroutines(marker string, d time.Duration) error {
	var leaked []string
	err := WaitFor(d, func() error {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		leaked = leaked[:0]
		// The first stanza is the caller itself.
		for _, g := range strings.Split(string(buf), "\n\n")[1:] {
			if strings.Contains(g, marker) {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) > 0 {
			return fmt.Errorf("%d goroutines leaked", len(leaked))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w:\n%s", err, strings.Join(leaked, "\n\n"))
	}
	return nil
}

// WaitFor calls try until it returns nil or d passes, and returns its last
// error then.
func WaitFor(d time.Duration, try func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := try()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Logger returns a logger writing to the test's output, at debug level.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}
