package runner_test

import (
	"crypto/des"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/ticket"
)

// TestSessionVNCPassword runs a real Xvnc that demands a VNC password
// (-SecurityTypes VncAuth) with the runner making a fresh one for the
// session: viewers through the connector get the desktop without ever
// being asked, while a program in the seal that dials Xvnc itself is
// offered VncAuth only; the password is on no command line and in no
// environment on the host, and its file is the owner's alone.
func TestSessionVNCPassword(t *testing.T) {
	if _, err := exec.LookPath("Xvnc"); err != nil {
		t.Skip("Xvnc not installed (make deps installs tigervnc-standalone-server)")
	}
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			dir := resultsDir(t, m.owner)
			offered := filepath.Join(dir, "offered.txt")
			shared := realtest.SharedDir(t, m.owner)
			key := filepath.Join(shared, "key")
			realtest.WriteFile(t, m.owner, key, testKey, 0o600)
			scratch := filepath.Join(shared, "scratch")
			id := fmt.Sprintf("vncpw-%s-%d", m.name, time.Now().UnixNano()%1e6)
			// The workload's own attempt: dial Xvnc on the seal's loopback
			// and record the security types it offers (count, then types).
			dialer := `for i in $(seq 200); do exec 3<>/dev/tcp/127.0.0.1/5901 && break; sleep 0.05; done; ` +
				`head -c 12 <&3 >/dev/null; printf 'RFB 003.008\n' >&3; od -An -tu1 -N2 <&3 > ` + offered
			r := realtest.StartRunner(t, map[string]any{
				"id": id, "owner": m.owner.Name, "scratch_dir": scratch,
				"workload": map[string]any{"argv": []string{"Xvnc", ":1", "-rfbport", "5901", "-localhost",
					"-SecurityTypes", "VncAuth", "-PasswordFile", "/tmp/.airlock-vncpasswd",
					"-geometry", "320x240", "-depth", "24", "-AlwaysShared", "-BlacklistTimeout", "0"}},
				"processes": []any{
					map[string]any{"argv": []string{"xterm", "-geometry", "40x12+0+0"}, "env": map[string]string{"DISPLAY": ":1"}},
					map[string]any{"argv": []string{"bash", "-c", dialer}},
				},
				"connectors": []any{map[string]any{
					"name": "console", "kind": "vnc", "target": "127.0.0.1:5901", "listen": "tcp:127.0.0.1:0",
					"session_vnc_password_file": "/tmp/.airlock-vncpasswd",
				}},
				"ticket_key_file": key,
			}, realtest.RunOptions{As: m.as})
			ep, sha := r.Ready.Endpoints["console"], r.Ready.TLSSHA256
			ctx := t.Context()

			// Viewers never see a password: the connector answers Xvnc.
			for _, mode := range []ticket.Mode{ticket.Control, ticket.View} {
				v := dialRFB(ctx, t, ep, sha, sign(t, ticket.Claims{Session: id, Connector: "console", User: m.owner.Name, Mode: mode}))
				if err := realtest.WaitFor(20*time.Second, func() error {
					if err := v.Update(false); err != nil {
						return err
					}
					if v.Distinct() < 2 {
						return errors.New("framebuffer still blank")
					}
					return nil
				}); err != nil {
					t.Fatalf("%s viewer: %v", mode, err)
				}
			}

			// A program in the seal that goes to Xvnc directly must log in.
			if err := realtest.WaitFor(20*time.Second, func() error {
				b, err := os.ReadFile(offered)
				if err != nil || len(strings.Fields(string(b))) < 2 {
					return fmt.Errorf("nothing recorded yet (%q, %v)", b, err)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(offered); strings.Join(strings.Fields(string(b)), " ") != "1 2" {
				t.Fatalf("Xvnc offered a direct client security types %q (count, types); want only VncAuth (1 2)", b)
			}

			// The file: the owner's only, in the seal's /tmp, holding a
			// password found on no command line and in no environment.
			file := filepath.Join(scratch, "tmp", ".airlock-vncpasswd")
			st, err := os.Lstat(file)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o400 || int(st.Sys().(*syscall.Stat_t).Uid) != m.owner.UID {
				t.Errorf("password file mode %v uid %d; want 0400 and the owner's (%d)", st.Mode(), st.Sys().(*syscall.Stat_t).Uid, m.owner.UID)
			}
			obf, _ := os.ReadFile(file)
			pw := unobfuscate(t, obf)
			if len(pw) != 8 {
				t.Fatalf("password %q: want 8 characters", pw)
			}
			procs, _ := filepath.Glob("/proc/[0-9]*")
			for _, p := range procs {
				for _, f := range []string{"cmdline", "environ"} {
					if b, err := os.ReadFile(filepath.Join(p, f)); err == nil && strings.Contains(string(b), pw) {
						t.Errorf("the session's VNC password is in %s/%s", p, f)
					}
				}
			}
		})
	}
}

// unobfuscate reverses vncpasswd's fixed-key DES.
func unobfuscate(t *testing.T, b []byte) string {
	t.Helper()
	if len(b) != 8 {
		t.Fatalf("password file holds %d bytes, want 8", len(b))
	}
	k := []byte{23, 82, 107, 6, 35, 78, 88, 7}
	for i := range k {
		k[i] = bits.Reverse8(k[i])
	}
	c, _ := des.NewCipher(k)
	out := make([]byte, 8)
	c.Decrypt(out, b)
	return strings.TrimRight(string(out), "\x00")
}
