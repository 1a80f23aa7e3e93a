package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
)

// testAccounts is a run_as template of accounts made for this test only,
// removed at its end.
func testAccounts(t *testing.T) (template string, maker *AccountMaker) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes Unix accounts")
	}
	template = fmt.Sprintf("alt%04d-{user}", rand.IntN(10000))
	maker = &AccountMaker{Homes: realtest.OutsideTmp(t, "homes-")}
	t.Cleanup(func() {
		ents, _ := os.ReadDir(maker.Homes)
		for _, e := range ents {
			if out, err := exec.Command("userdel", e.Name()).CombinedOutput(); err != nil {
				t.Logf("userdel %s: %v %s", e.Name(), err, out)
			}
		}
	})
	return template, maker
}

// TestAccountPerPortalUser: a root gateway set up as the embedded demo
// (UseDemoAccounts, which `airlock serve` as root without a config uses)
// runs alice's and bob's sessions as different uids, accounts of their
// own, and a file alice's session writes in its home is not readable from
// bob's session.
func TestAccountPerPortalUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes Unix accounts")
	}
	removeDemoAccounts(t, "alice", "bob")
	script := fmt.Sprintf(`id -u > "$HOME/uid"
echo "secret of $USER" > "$HOME/secret"; chmod 644 "$HOME/secret"
cat %s/*/secret > "$HOME/seen" 2>/dev/null
touch "$HOME/done"
exec %s serve http:tcp:127.0.0.1:8888`, DemoHomes, realtest.Probe(t))
	tg := startGateway(t, "", func(c *Config) {
		UseDemoAccounts(c)
		c.Profiles = append(c.Profiles, Profile{Name: "spy", Kind: "app", Command: []string{"sh", "-c", script}, Port: 8888,
			CPUs: 1, MemoryMB: 512, Lifetime: time.Hour})
	}, "alice", "bob")

	home := map[string]string{}
	for _, who := range []string{"alice", "bob"} {
		c := tg.client().loginToken(who)
		s := c.launch("spy")
		if s.Owner != who {
			t.Fatalf("session owner %q", s.Owner)
		}
		acct := strings.ReplaceAll(DemoRunAs, "{user}", who)
		u, err := user.Lookup(acct)
		if err != nil {
			t.Fatalf("%s has no account of their own (%s): %v", who, acct, err)
		}
		home[who] = u.HomeDir
		if err := realtest.WaitFor(20*time.Second, func() error {
			_, err := os.Stat(filepath.Join(u.HomeDir, "done"))
			return err
		}); err != nil {
			t.Fatalf("%s's workload did not report: %v", who, err)
		}
		if uid, _ := os.ReadFile(filepath.Join(u.HomeDir, "uid")); strings.TrimSpace(string(uid)) != u.Uid {
			t.Errorf("%s's workload runs as uid %q, want %s (%s)", who, strings.TrimSpace(string(uid)), u.Uid, acct)
		}
		st, _ := os.Stat(u.HomeDir)
		if st == nil || st.Mode().Perm() != 0o700 {
			t.Errorf("%s's home %s: %v, want 0700", who, u.HomeDir, st)
		}
	}
	a, _ := os.ReadFile(filepath.Join(home["alice"], "uid"))
	b, _ := os.ReadFile(filepath.Join(home["bob"], "uid"))
	if string(a) == string(b) {
		t.Errorf("alice and bob run as the same uid %s", a)
	}
	if seen, _ := os.ReadFile(filepath.Join(home["bob"], "seen")); strings.Contains(string(seen), "alice") {
		t.Errorf("bob's session read alice's file: %q", seen)
	}
}

// removeDemoAccounts removes the demo's accounts of users (and their
// homes) before and after the test.
func removeDemoAccounts(t *testing.T, users ...string) {
	rm := func() {
		for _, u := range users {
			name := strings.ReplaceAll(DemoRunAs, "{user}", u)
			if _, err := user.Lookup(name); err == nil {
				if out, err := exec.Command("userdel", "--remove", name).CombinedOutput(); err != nil {
					t.Logf("userdel %s: %v %s", name, err, out)
				}
			}
		}
	}
	rm()
	t.Cleanup(rm)
}

// TestAccountNames: a portal user whose name cannot become an account
// under the template (here: too long for useradd) is refused with a 403 that says so, and nothing is
// made for them.
func TestAccountNames(t *testing.T) {
	template, maker := testAccounts(t)
	tg := startGateway(t, "", func(c *Config) { c.RunAs, c.MakeAccount = template, maker.Ensure },
		"x2345678901234567890123456789")
	for _, who := range []string{"x2345678901234567890123456789"} {
		c := tg.client().loginToken(who)
		code, body := c.do("POST", "/api/v1/sessions", map[string]any{"profile": "app"}, nil)
		if code != 403 || !strings.Contains(body, "cannot become a Unix account") {
			t.Errorf("%s: %d %s", who, code, body)
		}
	}
	if ents, _ := os.ReadDir(maker.Homes); len(ents) > 0 {
		t.Errorf("accounts made for refused users: %v", ents)
	}
}

// TestAccountMakerConcurrent: first launches of one new user at the same
// time make the account once, and every one of them succeeds.
func TestAccountMakerConcurrent(t *testing.T) {
	template, maker := testAccounts(t)
	name := strings.ReplaceAll(template, "{user}", "carol")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- maker.Ensure(context.Background(), name)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	// A second maker (another gateway process) finds it made.
	if err := (&AccountMaker{Homes: maker.Homes}).Ensure(context.Background(), name); err != nil {
		t.Error(err)
	}
	if _, err := user.Lookup(name); err != nil {
		t.Fatal(err)
	}
}

// TestEmbeddedDemoAccounts: `airlock serve` as root with no config (the
// embedded demo, `make run`) runs each portal user's desktop as a Unix
// account of their own, made on first launch with a private home: not
// one account shared by everyone. The demo refuses launches on a busy
// machine (its max_load); then this skips, and TestAccountPerPortalUser
// still checks the same set-up through the harness.
func TestEmbeddedDemoAccounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the demo makes Unix accounts")
	}
	bin := realtest.Binary(t)
	state := t.TempDir()
	users := []string{"alice", "bob"}
	removeDemoAccounts(t, users...)
	t.Cleanup(func() { endSessions(t, state) })
	for _, u := range users {
		add := exec.Command(bin, "users", "add", u, "--password-stdin", "--state-dir", state)
		add.Stdin = strings.NewReader(testPassword + "\n")
		if b, err := add.CombinedOutput(); err != nil {
			t.Fatalf("users add %s: %v\n%s", u, err, b)
		}
	}
	serve := exec.Command(bin, "serve", "--state-dir", state, "--listen", "127.0.0.1:0")
	stdout, _ := serve.StdoutPipe()
	logs := &lockedWriter{w: &strings.Builder{}}
	serve.Stderr = logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		serve.Process.Signal(syscall.SIGTERM)
		serve.Wait()
		if t.Failed() {
			t.Logf("gateway log:\n%s", logs.String())
		}
	})
	url := gatewayURL(t, stdout, logs)
	tg := &testGateway{t: t, url: url, stateDir: state}

	uids := map[string]string{}
	for _, who := range users {
		c := tg.client().loginToken(who)
		// The demo refuses launches while the machine is busy (its
		// max_load): other tests may be running; wait for a quieter
		// moment, and skip rather than fail if none comes.
		var s sessionOut
		deadline := time.Now().Add(90 * time.Second)
		for {
			code, body := c.do("POST", "/api/v1/sessions", map[string]any{"profile": "desktop"}, &s)
			if code == 201 || code == 200 {
				break
			}
			if code != 503 || !strings.Contains(body, "node_busy") {
				t.Fatalf("launch for %s: %d %s", who, code, body)
			}
			if time.Now().After(deadline) {
				t.Skipf("the machine stayed too busy for the embedded demo's max_load: %s", body)
			}
			time.Sleep(time.Second)
		}
		c.waitStateFor(s.ID, "ready", time.Minute)
		u, err := user.Lookup("airlock-u-" + who)
		if err != nil {
			t.Fatalf("%s has no account of their own: %v", who, err)
		}
		uids[who] = u.Uid
		if st, err := os.Stat(u.HomeDir); err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("%s's home %s: %v %v, want mode 0700", who, u.HomeDir, st, err)
		}
		if !strings.HasPrefix(u.HomeDir, "/var/lib/airlock/home/") {
			t.Errorf("%s's home is %s", who, u.HomeDir)
		}
		if xvnc := processesOfUID("Xvnc", u.Uid); len(xvnc) == 0 {
			t.Errorf("no Xvnc runs as %s (uid %s)", u.Username, u.Uid)
		}
	}
	if uids["alice"] == uids["bob"] {
		t.Fatalf("alice and bob share uid %s", uids["alice"])
	}
	// A file alice's desktop leaves in her home is out of bob's reach.
	a, _ := user.Lookup("airlock-u-alice")
	b, _ := user.Lookup("airlock-u-bob")
	secret := filepath.Join(a.HomeDir, "notes.txt")
	cmd := exec.Command("sh", "-c", "echo alice-private > "+secret+" && chmod 644 "+secret)
	cmd.SysProcAttr = credentialOf(t, a)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("write as alice: %v %s", err, out)
	}
	cmd = exec.Command("cat", secret)
	cmd.SysProcAttr = credentialOf(t, b)
	if out, err := cmd.CombinedOutput(); err == nil || strings.Contains(string(out), "alice-private") {
		t.Errorf("bob's account read alice's file: %q", out)
	}
}

// gatewayURL reads the "airlock gateway: https://ADDR/" line of serve.
func gatewayURL(t *testing.T, stdout io.Reader, logs *lockedWriter) string {
	t.Helper()
	urlCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		re := regexp.MustCompile(`https://[0-9.:]+`)
		for sc.Scan() {
			if m := re.FindString(sc.Text()); m != "" {
				urlCh <- m
			}
		}
	}()
	select {
	case u := <-urlCh:
		return u
	case <-time.After(30 * time.Second):
		t.Fatalf("gateway did not start:\n%s", logs.String())
	}
	return ""
}

// processesOfUID lists the pids of processes named comm whose real uid is uid.
func processesOfUID(comm, uid string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		var name, realUID string
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Name:"); ok {
				name = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(line, "Uid:"); ok {
				if f := strings.Fields(v); len(f) > 0 {
					realUID = f[0]
				}
			}
		}
		if name == comm && realUID == uid {
			out = append(out, pid)
		}
	}
	return out
}

func credentialOf(t *testing.T, u *user.User) *syscall.SysProcAttr {
	t.Helper()
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
}
