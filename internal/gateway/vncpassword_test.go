package gateway

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/airlock-hpc/airlock/internal/realtest"
)

// TestDesktopVNCPassword: a desktop profile with vnc_password and its own
// xvnc runs that X server demanding a per-session password (with the
// -BlacklistTimeout 0 the gateway adds), and its owner, through the
// gateway, gets the desktop without being asked for one.
func TestDesktopVNCPassword(t *testing.T) {
	xvnc, err := exec.LookPath("Xvnc")
	if err != nil {
		t.Skip("Xvnc not installed")
	}
	xvnc, _ = filepath.EvalSymlinks(xvnc)
	title := "pw-desktop-" + newID()
	tg := startGateway(t, "", func(c *Config) {
		p := desktopProfile()
		p.Name, p.Title, p.VNCPassword, p.Xvnc = "desktop-pw", title, true, xvnc
		c.Profiles = append(c.Profiles, p)
	}, "alice")
	alice := tg.client().loginToken("alice")
	s := alice.launch("desktop-pw")
	alice.waitState(s.ID, "ready")

	// The X server the profile names, with the session password's file.
	var argv []string
	if err := realtest.WaitFor(10*time.Second, func() error {
		for _, pid := range realtest.ProcessesOf(title) {
			b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
			if a := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"); a[0] == xvnc {
				argv = a
				return nil
			}
		}
		return errNotYet
	}); err != nil {
		t.Fatalf("no %s runs with the session's title: %v", xvnc, err)
	}
	cmd := strings.Join(argv, " ")
	for _, want := range []string{"-SecurityTypes VncAuth", "-PasswordFile " + sessionVNCPasswordFile, "-BlacklistTimeout 0"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("Xvnc runs as %q: no %q", cmd, want)
		}
	}
	if strings.Contains(cmd, "-SecurityTypes None") {
		t.Errorf("Xvnc runs as %q: without a password", cmd)
	}

	// The owner through the gateway: offered None by the connector, which
	// logged in to Xvnc with the password itself.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(tg.url, "https")+s.Connect["console"], &websocket.DialOptions{
		HTTPClient: alice.http, HTTPHeader: http.Header{"Authorization": {"Bearer " + alice.token}}, Subprotocols: []string{"binary"}})
	if err != nil {
		if resp != nil {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("dial: %v: %d %s", err, resp.StatusCode, b)
		}
		t.Fatal(err)
	}
	conn := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	if w, err := rfbLogin(conn); err != nil || w != 640 {
		t.Fatalf("desktop through the gateway: width %d, %v", w, err)
	}
}

// rfbLogin speaks RFB 3.8 with security None up to ServerInit and returns
// the framebuffer's width.
func rfbLogin(c net.Conn) (int, error) {
	buf := make([]byte, 12)
	if _, err := io.ReadFull(c, buf); err != nil {
		return 0, err
	}
	c.Write([]byte("RFB 003.008\n"))
	n := make([]byte, 1)
	if _, err := io.ReadFull(c, n); err != nil || n[0] == 0 {
		return 0, errRefused
	}
	types := make([]byte, n[0])
	io.ReadFull(c, types)
	if !strings.Contains(string(types), "\x01") {
		return 0, errRefused
	}
	c.Write([]byte{1})
	res := make([]byte, 4)
	if _, err := io.ReadFull(c, res); err != nil || binary.BigEndian.Uint32(res) != 0 {
		return 0, errRefused
	}
	c.Write([]byte{1}) // shared
	init := make([]byte, 4)
	if _, err := io.ReadFull(c, init); err != nil {
		return 0, err
	}
	return int(binary.BigEndian.Uint16(init)), nil
}

type testErr string

func (e testErr) Error() string { return string(e) }

const (
	errNotYet  = testErr("not yet")
	errRefused = testErr("refused")
)
