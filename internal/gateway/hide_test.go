package gateway

import (
	"context"
	"fmt"
	"net"
	"net/http"
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

// TestNonRootGatewaySecrets: a gateway run by an ordinary account runs its
// sessions as that account. A session's workload tries to read the
// gateway's master key, the sessions' ticket keys and specs, the password
// file and the config file, and lists the state directory: it gets
// nothing, and an admin cookie forged from what it read is refused (one
// forged from the real key is accepted: the forgery is the real thing).
func TestNonRootGatewaySecrets(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start the gateway as the unprivileged test account")
	}
	u := realtest.TestUser(t)
	bin := realtest.Binary(t)
	base := ownerDir(t, u, "nonroot-gw-")
	state := filepath.Join(base, "state")
	out := filepath.Join(base, "out")
	// The password file lives outside the state directory: the config
	// file names it, and it must be hidden as well.
	pwDir := filepath.Join(base, "pw")
	pw := filepath.Join(pwDir, "passwd")
	for _, d := range []string{state, out, pwDir} {
		os.Mkdir(d, 0o700)
		os.Chown(d, u.UID, u.GID)
	}
	cfgFile := filepath.Join(base, "airlock.yaml")
	script := fmt.Sprintf(`cat %[1]s/master.key > %[2]s/master 2>/dev/null
cat %[1]s/sessions/*/ticket.key > %[2]s/ticket 2>/dev/null
cat %[1]s/sessions/*/spec.json > %[2]s/spec 2>/dev/null
cat %[5]s > %[2]s/users 2>/dev/null
cat %[3]s > %[2]s/config 2>/dev/null
ls -A %[1]s > %[2]s/ls 2>&1
touch %[2]s/done
exec %[4]s serve http:tcp:127.0.0.1:8888`, state, out, cfgFile, realtest.Probe(t), pw)
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
state_dir: %s
profiles:
  - name: spy
    kind: app
    app:
      command: [sh, -c, %q]
      port: 8888
limits: {max_load: 0, min_free_memory: 0}
auth:
  methods:
    - kind: local
      file: %s
`, state, script, pw)
	realtest.WriteFile(t, u, cfgFile, []byte(cfg), 0o600)

	asUser := func(args ...string) *exec.Cmd {
		cmd := exec.Command(bin, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(u.UID), Gid: uint32(u.GID)}}
		cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + u.Home, "USER=" + u.Name, "TMPDIR=/tmp"}
		return cmd
	}
	add := asUser("users", "add", "eve", "--password-stdin", "--config", cfgFile)
	add.Stdin = strings.NewReader(testPassword + "\n")
	if b, err := add.CombinedOutput(); err != nil {
		t.Fatalf("users add: %v\n%s", err, b)
	}

	serve := asUser("serve", "--config", cfgFile)
	stdout, _ := serve.StdoutPipe()
	logs := &lockedWriter{w: &strings.Builder{}}
	serve.Stderr = logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		serve.Process.Signal(syscall.SIGTERM)
		serve.Wait()
		endSessions(t, state)
		if t.Failed() {
			t.Logf("gateway log:\n%s", logs.String())
		}
	})
	url := gatewayURL(t, stdout, logs)

	tg := &testGateway{t: t, url: url, stateDir: state}
	eve := tg.client().loginToken("eve")
	s := eve.launch("spy")
	if err := realtest.WaitFor(20*time.Second, func() error {
		_, err := os.Stat(filepath.Join(out, "done"))
		return err
	}); err != nil {
		t.Fatalf("the workload did not report: %v", err)
	}

	master, err := os.ReadFile(filepath.Join(state, "master.key"))
	if err != nil || len(master) != 32 {
		t.Fatalf("the gateway's real master key: %v (%d bytes)", err, len(master))
	}
	for _, name := range []string{"master", "ticket", "spec", "users", "config"} {
		if b, _ := os.ReadFile(filepath.Join(out, name)); len(b) > 0 {
			t.Errorf("the workload read %d bytes of the gateway's %s: %.80q", len(b), name, b)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(out, "ls")); strings.Contains(string(b), "master.key") || strings.Contains(string(b), "airlock.db") {
		t.Errorf("the workload listed the state directory:\n%s", b)
	}

	// Logins are random secrets kept hashed in the store, so a cookie
	// cannot be forged from any key; what the master key still signs is
	// every session's connector tickets. Forge one for this very session
	// from whatever the workload read, as it would, and present it to the
	// connector's socket; and from the real key, to show the forgery works.
	stolen, _ := os.ReadFile(filepath.Join(out, "master"))
	socks, _ := filepath.Glob(filepath.Join(state, "sessions", s.ID, "*", "*.sock"))
	if more, _ := filepath.Glob(filepath.Join(state, "sessions", s.ID, "*.sock")); len(more) > 0 {
		socks = append(socks, more...)
	}
	if len(socks) != 1 {
		t.Fatalf("the session's connector sockets: %q, want one", socks)
	}
	forge := func(key []byte) int {
		tok, err := ticket.Sign(ticket.Key(derive(key, "airlock session ticket key", s.ID)),
			ticket.Claims{Session: s.ID, Connector: "app", User: "mallory", Mode: ticket.Control, Expires: time.Now().Add(time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socks[0])
		}}}
		req, _ := http.NewRequest("GET", "http://session/", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := forge(stolen); code != 403 {
		t.Errorf("connector ticket forged from what the session read: status %d, want 403", code)
	}
	if code := forge(master); code == 401 || code == 403 {
		t.Errorf("connector ticket forged from the real key: status %d (the test's forgery is wrong)", code)
	}
	eve.do("DELETE", "/api/v1/sessions/"+s.ID, nil, nil)
}

// String is what was written so far.
func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}
