package runner_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/ticket"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

func sign(t *testing.T, c ticket.Claims) string {
	t.Helper()
	k, err := ticket.ParseKey(testKey)
	if err != nil {
		t.Fatal(err)
	}
	if c.Expires.IsZero() {
		c.Expires = time.Now().Add(time.Minute)
	}
	tok, err := ticket.Sign(k, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestDesktopThroughVNCConnector runs a real TigerVNC Xvnc and an xterm in
// a seal and uses them through the vnc connector, as a browser would:
// the RFB greeting and framebuffer updates arrive with a valid ticket, bad
// tickets are refused before any RFB byte, and a view-only viewer's typing
// never reaches the xterm while the controlling viewer's does.
func TestDesktopThroughVNCConnector(t *testing.T) {
	if _, err := exec.LookPath("Xvnc"); err != nil {
		t.Skip("Xvnc not installed (make deps installs tigervnc-standalone-server)")
	}
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			dir := resultsDir(t, m.owner)
			typed := filepath.Join(dir, "typed.txt")
			key := filepath.Join(realtest.SharedDir(t, m.owner), "key")
			realtest.WriteFile(t, m.owner, key, testKey, 0o600)
			id := fmt.Sprintf("desk-%s-%d", m.name, time.Now().UnixNano()%1e6)
			// Fixed display and port numbers are safe: the seal has its own
			// network namespace and its own /tmp/.X11-unix.
			r := realtest.StartRunner(t, map[string]any{
				"id": id, "owner": m.owner.Name,
				"workload": map[string]any{"argv": []string{"Xvnc", ":1", "-rfbport", "5901", "-localhost",
					"-SecurityTypes", "None", "-geometry", "320x240", "-depth", "24", "-AlwaysShared"}},
				"processes": []any{map[string]any{
					"argv": []string{"xterm", "-geometry", "40x12+0+0", "-e", "sh", "-c", "cat > " + typed},
					"env":  map[string]string{"DISPLAY": ":1"},
				}},
				"connectors": []any{map[string]any{
					"name": "console", "kind": "vnc", "target": "127.0.0.1:5901", "listen": "tcp:127.0.0.1:0",
				}},
				"ticket_key_file": key,
			}, realtest.RunOptions{As: m.as})
			ep, sha := r.Ready.Endpoints["console"], r.Ready.TLSSHA256
			ctx := t.Context()

			// Refusals: each before the WebSocket upgrade, with a reason.
			refusals := []struct {
				name   string
				ticket string
				status int
				reason string
			}{
				{"missing", "", 401, "missing"},
				{"expired", sign(t, ticket.Claims{Session: id, Connector: "console", User: "alice", Mode: ticket.Control, Expires: time.Now().Add(-time.Second)}), 403, "expired"},
				{"forged", forge(sign(t, ticket.Claims{Session: id, Connector: "console", User: "alice", Mode: ticket.Control})), 403, ""},
				{"other session", sign(t, ticket.Claims{Session: "someone-else", Connector: "console", User: "alice", Mode: ticket.Control}), 403, "session"},
				{"other connector", sign(t, ticket.Claims{Session: id, Connector: "web", User: "alice", Mode: ticket.Control}), 403, "connector"},
			}
			for _, c := range refusals {
				_, resp, err := realtest.DialWS(ctx, ep, sha, c.ticket)
				if err == nil {
					t.Fatalf("%s ticket: connection accepted", c.name)
				}
				if resp == nil || resp.StatusCode != c.status {
					t.Fatalf("%s ticket: got %v (response %v), want HTTP %d", c.name, err, resp, c.status)
				}
				body := realtest.ReadAllString(resp.Body)
				if !strings.Contains(strings.ToLower(body), c.reason) {
					t.Errorf("%s ticket: refusal body %q does not say %q", c.name, body, c.reason)
				}
			}

			// A valid control ticket: greeting, then a drawn framebuffer.
			ctl := dialRFB(ctx, t, ep, sha, sign(t, ticket.Claims{Session: id, Connector: "console", User: m.owner.Name, Mode: ticket.Control}))
			if ctl.Greet != "RFB 003.008\n" {
				t.Fatalf("greeting %q", ctl.Greet)
			}
			if err := realtest.WaitFor(20*time.Second, func() error {
				if err := ctl.Update(false); err != nil {
					return err
				}
				if ctl.Distinct() < 2 {
					return errors.New("framebuffer still blank: xterm not drawn")
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			before := bytes.Clone(ctl.Frame)
			writePNG(t, ctl, "desktop-before.png")

			// View-only viewer types; the connector drops it.
			view := dialRFB(ctx, t, ep, sha, sign(t, ticket.Claims{Session: id, Connector: "console", User: "bob", Mode: ticket.View}))
			view.Pointer(20, 20)
			view.Type("viewer-typed\n")
			// A round trip on the same connection: Xvnc has handled every
			// message the viewer sent before it answers this one.
			if err := view.Update(false); err != nil {
				t.Fatalf("view-only viewer gets no frames: %v", err)
			}

			ctl.Pointer(20, 20)
			ctl.Type("owner-typed\n")
			if err := realtest.WaitFor(20*time.Second, func() error {
				b, _ := os.ReadFile(typed)
				if !strings.Contains(string(b), "owner-typed") {
					return fmt.Errorf("xterm got %q so far", b)
				}
				return nil
			}); err != nil {
				t.Fatalf("controlling viewer's typing never reached the xterm: %v", err)
			}
			b, _ := os.ReadFile(typed)
			if strings.Contains(string(b), "viewer") {
				t.Fatalf("view-only viewer's keystrokes reached the xterm: %q", b)
			}
			// And the owner's typing changed the screen.
			if err := realtest.WaitFor(10*time.Second, func() error {
				if err := ctl.Update(false); err != nil {
					return err
				}
				if bytes.Equal(before, ctl.Frame) {
					return errors.New("screen unchanged")
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			writePNG(t, ctl, "desktop-after.png")

			// A ticket is good for one connection only.
			tok := sign(t, ticket.Claims{Session: id, Connector: "console", User: "alice", Mode: ticket.Control})
			dialRFB(ctx, t, ep, sha, tok)
			if _, resp, err := realtest.DialWS(ctx, ep, sha, tok); err == nil || resp == nil || resp.StatusCode != 403 {
				t.Fatalf("replayed ticket: err %v, response %v; want 403", err, resp)
			}
		})
	}
}

func dialRFB(ctx context.Context, t *testing.T, ep, sha, tok string) *realtest.RFB {
	t.Helper()
	c, resp, err := realtest.DialWS(ctx, ep, sha, tok)
	if err != nil {
		body := ""
		if resp != nil {
			body = realtest.ReadAllString(resp.Body)
		}
		t.Fatalf("dial vnc connector: %v %s", err, body)
	}
	rfb, err := realtest.NewRFB(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rfb.Close() })
	return rfb
}

// forge flips one character of the MAC: the same claims, a signature the
// key never made.
func forge(tok string) string {
	b := []byte(tok)
	i := len(b) - 2
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}
