package cli

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
	"github.com/airlock-hpc/airlock/internal/store/sqlite"
	"github.com/airlock-hpc/airlock/internal/ticket"
)

func runCLI(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestUnknownCommand(t *testing.T) {
	code, _, stderr := runCLI(t, "", "frobnicate")
	if code != 2 || !strings.Contains(stderr, `unknown command "frobnicate"`) {
		t.Fatalf("code %d, stderr %q", code, stderr)
	}
}

// TestEveryFlagDocumented: each subcommand's -h lists every flag with help
// text, and no hidden role shows in the usage.
func TestEveryFlagDocumented(t *testing.T) {
	_, _, usage := runCLI(t, "", "help")
	for _, c := range commands() {
		if c.hidden {
			if strings.Contains(usage, c.name) {
				t.Errorf("hidden role %s shows in usage", c.name)
			}
			continue
		}
		if !strings.Contains(usage, c.name) {
			t.Errorf("command %s missing from usage", c.name)
		}
		args := []string{c.name, "-h"}
		if c.name == "connector" {
			args = []string{"connector", "vnc", "-h"}
		}
		code, _, help := runCLI(t, "", args...)
		if code != 0 {
			t.Errorf("%s -h: exit %d", c.name, code)
		}
		for _, line := range strings.Split(help, "\n") {
			// PrintDefaults puts a flag on a line starting "  -name" and
			// its help on the next; a flag with no help has an empty one.
			if strings.HasPrefix(line, "  -") && strings.HasSuffix(line, "\t") {
				t.Errorf("%s: flag without help: %q", c.name, line)
			}
		}
	}
}

func TestRunBadSpecNamesTheLine(t *testing.T) {
	code, _, stderr := runCLI(t, "{\n  \"id\": \"x\",\n  \"workload\": {\"argv\": [\"true\"]},\n  \"lifetme\": \"1h\"\n}", "run", "--spec", "-")
	if code != 1 || !strings.Contains(stderr, `unknown field "lifetme"`) || !strings.Contains(stderr, "line 4") {
		t.Fatalf("code %d, stderr %q", code, stderr)
	}
}

func TestTicketCommand(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "key")
	os.WriteFile(keyFile, []byte(strings.Repeat("ab", 32)+"\n"), 0o600)
	code, out, stderr := runCLI(t, "", "ticket", "--key-file", keyFile, "--session", "s-1", "--connector", "console", "--user", "alice", "--view", "--ttl", "90s")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	k, _ := ticket.LoadKey(keyFile)
	c, err := ticket.Check(k, strings.TrimSpace(out), "s-1", "console", time.Now())
	if err != nil {
		t.Fatalf("printed ticket does not verify: %v", err)
	}
	if c.User != "alice" || c.Mode != ticket.View || time.Until(c.Expires) > 90*time.Second {
		t.Fatalf("claims %+v", c)
	}
	if code, _, _ := runCLI(t, "", "ticket", "--key-file", keyFile, "--session", "s-1"); code != 2 {
		t.Fatalf("missing flags: exit %d, want 2", code)
	}
	if code, _, stderr := runCLI(t, "", "ticket", "--key-file", keyFile, "--session", "s", "--connector", "c", "--user", "u", "--ttl", "48h"); code != 1 || !strings.Contains(stderr, "--ttl") {
		t.Fatalf("ttl too long: exit %d %q", code, stderr)
	}
}

// TestConnectorListenerChecks: a connector refuses stdout as its
// listener, and a TCP listener without a certificate (TLS on every hop).
func TestConnectorListenerChecks(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "key")
	os.WriteFile(keyFile, bytes.Repeat([]byte{7}, 32), 0o600)
	code, _, stderr := runCLI(t, "", "connector", "vnc", "--fd", "1", "--target", "127.0.0.1:5901", "--name", "c", "--session", "s", "--key-file", keyFile)
	if code != 1 || !strings.Contains(stderr, "must be 3 or more") {
		t.Fatalf("fd 1: exit %d %q", code, stderr)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, _ := ln.(*net.TCPListener).File()
	code, _, stderr = runCLI(t, "", "connector", "vnc", "--fd", strconv.Itoa(int(f.Fd())), "--target", "127.0.0.1:5901", "--name", "c", "--session", "s", "--key-file", keyFile)
	if code != 1 || !strings.Contains(stderr, "needs a TLS certificate") {
		t.Fatalf("plain TCP: exit %d %q", code, stderr)
	}
}

// TestUsersAndConfigCommands: the contract scripts rely on.
func TestUsersAndConfigCommands(t *testing.T) {
	dir := t.TempDir()
	code, _, stderr := runCLI(t, "s3cret-password\n", "users", "add", "alice", "--password-stdin", "--admin", "--state-dir", dir)
	if code != 0 {
		t.Fatalf("users add: %d %s", code, stderr)
	}
	if code, _, stderr := runCLI(t, "other-password\n", "users", "add", "alice", "--password-stdin", "--state-dir", dir); code != 1 || !strings.Contains(stderr, "exists") {
		t.Fatalf("adding alice twice: %d %q", code, stderr)
	}
	if code, _, _ := runCLI(t, "", "users", "add", "bob", "--state-dir", dir); code != 2 {
		t.Fatalf("users add without --password-stdin: %d, want 2", code)
	}
	code, out, _ := runCLI(t, "", "users", "list", "--state-dir", dir)
	if code != 0 || !strings.Contains(out, "alice\tadmin") {
		t.Fatalf("users list: %d %q", code, out)
	}
	if code, _, stderr := runCLI(t, "", "users", "role", "alice", "user", "--state-dir", dir); code != 0 {
		t.Fatalf("users role alice user: %d %s", code, stderr)
	}
	if code, out, _ := runCLI(t, "", "users", "list", "--state-dir", dir); code != 0 || !strings.Contains(out, "alice\tuser") {
		t.Fatalf("users list after demotion: %d %q", code, out)
	}
	if code, _, _ := runCLI(t, "", "users", "role", "alice", "boss", "--state-dir", dir); code != 2 {
		t.Fatalf("users role alice boss: %d, want 2", code)
	}
	if code, _, stderr := runCLI(t, "", "users", "role", "nobody", "admin", "--state-dir", dir); code != 1 || !strings.Contains(stderr, "no such user") {
		t.Fatalf("users role of a missing user: %d %q", code, stderr)
	}

	bad := filepath.Join(dir, "airlock.yaml")
	os.WriteFile(bad, []byte("listen: 127.0.0.1:9443\nlimits:\n  max_sesions: 3\n"), 0o600)
	code, _, stderr = runCLI(t, "", "config", "check", bad)
	if code != 1 || !strings.Contains(stderr, "airlock.yaml:3: limits.max_sesions: unknown key") {
		t.Fatalf("config check: %d %q", code, stderr)
	}
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("listen: 127.0.0.1:9443\n"), 0o600)
	if code, out, _ := runCLI(t, "", "config", "check", good); code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("config check good: %d %q", code, out)
	}
	if code, out, _ := runCLI(t, "", "config", "defaults"); code != 0 || !strings.Contains(out, "listen:") {
		t.Fatalf("config defaults: %d", code)
	}
}

// TestSlurmBackendFromConfig: the slurm block becomes the backend, and
// runners register at gateway_url, or else this host at the listen port.
func TestSlurmBackendFromConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(extra string) string {
		p := filepath.Join(dir, "airlock.yaml")
		os.WriteFile(p, []byte("listen: 127.0.0.1:9443\nstate_dir: "+dir+"\nbackend:\n  kind: slurm\n  slurm:\n    partition: batch\n"+extra+
			"profiles:\n  - name: desktop\n    kind: desktop\n    slurm: {partition: viz}\n"), 0o600)
		return p
	}
	host, _ := os.Hostname()
	for _, c := range []struct{ extra, want string }{
		{"", "https://" + net.JoinHostPort(host, "9443")},
		{"    gateway_url: https://gw.example.org:8443\n", "https://gw.example.org:8443"},
	} {
		cfg, err := loadConfig(write(c.extra), "", "")
		if err != nil {
			t.Fatal(err)
		}
		be, url, err := backendFromConfig(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		if be.Name() != "slurm" || url != c.want {
			t.Errorf("%q: backend %s registering at %s, want slurm at %s", c.extra, be.Name(), url, c.want)
		}
	}
}

// TestUsersTOTPReset: the host's administrator removes a second factor
// from the store (audited); a wrong state directory makes no store.
func TestUsersTOTPReset(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := runCLI(t, "", "users", "totp-reset", "alice", "--state-dir", dir); code != 1 || !strings.Contains(stderr, "no store") {
		t.Fatalf("no store: %d %q", code, stderr)
	}
	db, err := sqlite.Open(t.Context(), sqlite.Config{Path: filepath.Join(dir, "airlock.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.CreateUser(t.Context(), session.User{Name: "alice", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := db.EnrolTOTP(t.Context(), session.TOTP{User: "alice", Secret: []byte("sealed"), Created: time.Now()}, nil); err != nil {
		t.Fatal(err)
	}
	if code, out, stderr := runCLI(t, "", "users", "totp-reset", "alice", "--state-dir", dir); code != 0 || !strings.Contains(out, "removed") {
		t.Fatalf("totp-reset: %d %q %q", code, out, stderr)
	}
	if _, err := db.GetTOTP(t.Context(), "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second factor after reset: %v", err)
	}
	evs, _ := db.ListAudit(t.Context(), store.AuditFilter{Limit: 5})
	if len(evs) == 0 || evs[0].Action != "totp_remove" || !strings.Contains(evs[0].Detail, "alice") {
		t.Fatalf("not audited: %+v", evs)
	}
	if code, out, _ := runCLI(t, "", "users", "totp-reset", "alice", "--state-dir", dir); code != 0 || !strings.Contains(out, "no second factor") {
		t.Fatalf("second reset: %d %q", code, out)
	}
}
