package vm

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeQMP listens on path and answers like QEMU's monitor: a greeting,
// then {"return": {}} to every command. It counts the connections it took.
func fakeQMP(t *testing.T, path string) *atomic.Int32 {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			go func() {
				defer c.Close()
				c.Write([]byte(`{"QMP": {"version": {}, "capabilities": []}}` + "\n"))
				dec := json.NewDecoder(c)
				for {
					var cmd map[string]any
					if dec.Decode(&cmd) != nil {
						return
					}
					c.Write([]byte(`{"return": {}}` + "\n"))
				}
			}()
		}
	}()
	return &n
}

// TestDialQMPRefusesPlantedPaths: the monitor socket lives in a session's
// /tmp, which the workload controls, and the gateway dials it as root. A
// symbolic link planted there must not lead it to another session's
// monitor, and a FIFO or a file must not hang or fool it.
func TestDialQMPRefusesPlantedPaths(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	own := filepath.Join(dir, "own.sock")
	fakeQMP(t, own)
	q, err := DialQMP(ctx, own)
	if err != nil {
		t.Fatalf("the session's own monitor: %v", err)
	}
	q.Close()

	other := filepath.Join(dir, "other.sock")
	otherConns := fakeQMP(t, other)
	link := filepath.Join(dir, "link.sock")
	if err := os.Symlink(other, link); err != nil {
		t.Fatal(err)
	}
	if q, err := DialQMP(ctx, link); err == nil {
		q.Close()
		t.Error("a symbolic link to another monitor was followed")
	}
	fifo := filepath.Join(dir, "fifo.sock")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "file.sock")
	os.WriteFile(file, []byte("x"), 0o600)
	for _, p := range []string{fifo, file} {
		if _, err := DialQMP(ctx, p); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Errorf("%s: %v, want not a socket", filepath.Base(p), err)
		}
	}
	if ctx.Err() != nil {
		t.Error("a planted path made the dial wait")
	}
	if n := otherConns.Load(); n != 0 {
		t.Errorf("the other monitor got %d connection(s)", n)
	}
}
