package runner_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
)

// TestHideSecrets: the paths a spec hides (a gateway's state directory, a
// password file) and the ticket key file the runner read are empty inside
// the seal, cannot be written, and stay so when the workload makes a user
// and mount namespace of its own and unmounts what covers them, or binds
// the directory above elsewhere to look under the cover.
func TestHideSecrets(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			state := resultsDir(t, m.owner) // a gateway's state dir, the owner's
			out := resultsDir(t, m.owner)   // where the workload reports
			master := []byte("MASTER-KEY-0123456789abcdef-0123")
			key := []byte("0123456789abcdef0123456789abcdef")
			pwSecret := []byte("alice:admin:$argon2id$SECRET-HASH")
			os.MkdirAll(filepath.Join(state, "sessions", "s1"), 0o700)
			realtest.WriteFile(t, m.owner, filepath.Join(state, "master.key"), master, 0o600)
			keyFile := filepath.Join(state, "sessions", "s1", "ticket.key")
			realtest.WriteFile(t, m.owner, keyFile, key, 0o600)
			pwDir := resultsDir(t, m.owner)
			pw := filepath.Join(pwDir, "users")
			realtest.WriteFile(t, m.owner, pw, pwSecret, 0o600)
			if os.Geteuid() == 0 {
				os.Chown(filepath.Join(state, "sessions"), m.owner.UID, m.owner.GID)
				os.Chown(filepath.Join(state, "sessions", "s1"), m.owner.UID, m.owner.GID)
			}

			script := fmt.Sprintf(`
cat %[1]s/master.key %[2]s %[3]s > %[4]s/read 2>/dev/null
ls -A %[1]s %[1]s/sessions > %[4]s/ls 2>&1
echo x > %[1]s/new 2>/dev/null && echo WROTE >> %[4]s/read
echo x > %[3]s 2>/dev/null && echo WROTE >> %[4]s/read
unshare -Urm sh -c 'echo unshared; umount %[1]s; umount -l %[1]s; umount %[3]s; umount -l %[3]s; cat %[1]s/master.key %[2]s %[3]s
  mkdir -p /tmp/peek && mount --bind %[5]s /tmp/peek && cat /tmp/peek/%[6]s/master.key' > %[4]s/unshare 2>&1
touch %[4]s/done
exec sleep 1000`, state, keyFile, pw, out, filepath.Dir(state), filepath.Base(state))
			spec := map[string]any{
				"id": fmt.Sprintf("hide-%d", time.Now().UnixNano()), "owner": m.owner.Name,
				"workload": map[string]any{"argv": []string{"sh", "-c", script}},
				"connectors": []any{map[string]any{
					"name": "web", "kind": "http", "target": "127.0.0.1:9", "listen": "tcp:127.0.0.1:0", "wait": false,
				}},
				"ticket_key_file": keyFile,
				"hide":            []string{state, pw},
				"grace":           "2s",
			}
			realtest.StartRunner(t, spec, realtest.RunOptions{As: m.as})
			if err := realtest.WaitFor(20*time.Second, func() error {
				_, err := os.Stat(filepath.Join(out, "done"))
				return err
			}); err != nil {
				t.Fatalf("workload did not finish: %v", err)
			}
			read, _ := os.ReadFile(filepath.Join(out, "read"))
			ls, _ := os.ReadFile(filepath.Join(out, "ls"))
			un, _ := os.ReadFile(filepath.Join(out, "unshare"))
			for name, got := range map[string][]byte{"read": read, "ls": ls, "unshare": un} {
				for _, secret := range [][]byte{master, key, pwSecret} {
					if strings.Contains(string(got), string(secret)) {
						t.Errorf("%s: the workload saw %q:\n%s", name, secret, got)
					}
				}
			}
			// Error messages name the files; only the listing must not.
			if strings.Contains(string(ls), "master.key") || strings.Contains(string(ls), "s1") {
				t.Errorf("the workload listed the hidden directory:\n%s", ls)
			}
			if strings.Contains(string(read), "WROTE") {
				t.Errorf("the workload wrote through a mask: %s", read)
			}
			t.Logf("the workload's attack from its own namespaces:\n%s", un)
			if !strings.Contains(string(un), "unshared") {
				// The control: where the owner can make the namespaces
				// outside, the attack must have been made inside.
				cmd := exec.Command("unshare", "-Urm", "true")
				if os.Geteuid() == 0 {
					cmd.SysProcAttr = credential(&m.owner)
				}
				if err := cmd.Run(); err == nil {
					t.Errorf("unshare -Urm works for %s outside the seal but did not run inside: the attack was not made", m.owner.Name)
				} else {
					t.Logf("unshare -Urm fails outside the seal too (%v): no attack to defend", err)
				}
			}
			if got, _ := os.ReadFile(filepath.Join(state, "master.key")); string(got) != string(master) {
				t.Errorf("master.key changed on the host: %q", got)
			}
		})
	}
}
