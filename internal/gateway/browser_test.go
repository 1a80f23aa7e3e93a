package gateway

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// browserRun is a node script driving headless Chromium (testdata/*.mjs),
// which prints one JSON line per step.
type browserRun struct {
	t     *testing.T
	steps chan map[string]any
	stdin io.WriteCloser
}

// needBrowser skips unless Chromium, playwright-core and the built noVNC
// are there (make deps web installs them), and returns the repository root.
func needBrowser(t *testing.T) string {
	t.Helper()
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	for _, need := range []string{"/usr/bin/chromium", filepath.Join(root, "node_modules", "playwright-core"), filepath.Join(root, "internal", "portal", "static", "vendor", "novnc", "core", "rfb.js")} {
		if _, err := os.Stat(need); err != nil {
			t.Skipf("%s missing (make deps web installs it)", need)
		}
	}
	return root
}

// screenshots is where browser tests put their pictures.
func screenshots(t *testing.T) string {
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	dir := filepath.Join(root, ".artifacts", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startBrowser runs script with cfg (JSON) as its argument; the shots
// directory is added to cfg as "shots".
func startBrowser(t *testing.T, script string, cfg map[string]string) *browserRun {
	t.Helper()
	root := needBrowser(t)
	cfg["shots"] = screenshots(t)
	arg, _ := json.Marshal(cfg)
	cmd := exec.Command("node", filepath.Join("internal", "gateway", "testdata", script), string(arg))
	cmd.Dir = root
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	b := &browserRun{t: t, steps: make(chan map[string]any, 16), stdin: stdin}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				b.steps <- m
			}
		}
		close(b.steps)
	}()
	return b
}

// wait returns the step's line, failing on an error line, the script's
// end, or d without it.
func (b *browserRun) wait(step string, d time.Duration) map[string]any {
	b.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case m, ok := <-b.steps:
			if !ok {
				b.t.Fatalf("browser ended before %q", step)
			}
			b.t.Logf("browser: %v", m)
			if m["step"] == "error" {
				b.t.Fatalf("browser: %v", m)
			}
			if m["step"] == step {
				return m
			}
		case <-deadline:
			b.t.Fatalf("no %q from the browser in %s", step, d)
		}
	}
}

// send writes a line to the script's standard input, where it waits for
// the Go side between steps.
func (b *browserRun) send(line string) { io.WriteString(b.stdin, line+"\n") }

// proceed lets a script waiting on its standard input go on.
func (b *browserRun) proceed() { b.send("go") }
