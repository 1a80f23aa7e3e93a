package debpkg

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
)

// installed is every path the package puts on the machine.
var installed = []string{
	"/usr/bin/airlock",
	"/lib/systemd/system/airlock.service",
	"/usr/lib/tmpfiles.d/airlock.conf",
	"/etc/airlock/airlock.yaml",
	"/usr/share/man/man1/airlock.1.gz",
	"/usr/share/man/man1/airlock-serve.1.gz",
	"/usr/share/bash-completion/completions/airlock",
}

// dpkg runs dpkg, waiting while another dpkg or apt holds its lock (other
// tests and helpers install packages on this machine too).
func dpkg(t *testing.T, args ...string) string {
	t.Helper()
	var out []byte
	err := realtest.WaitFor(3*time.Minute, func() error {
		var err error
		out, err = exec.Command("dpkg", args...).CombinedOutput()
		if err != nil && bytes.Contains(out, []byte("lock")) {
			return fmt.Errorf("dpkg locked: %s", out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Other failures show in what the caller checks next (dpkg -s, files).
	return string(out)
}

// TestDebInstall: make deb's package installs with dpkg -i, its
// configuration passes airlock config check, its unit is valid for
// systemd-analyze, the gateway started as the unit's ExecStartPre and
// ExecStart say serves a desktop to a user added with airlock users, and
// dpkg --purge leaves nothing behind.
func TestDebInstall(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("installs a package: root only (make test runs as root in CI)")
	}
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("no dpkg-deb: not a Debian machine")
	}
	if exec.Command("dpkg", "-s", "airlock").Run() == nil {
		t.Skip("an airlock package is installed on this machine already; not touching it")
	}
	acct := realtest.TestUser(t)
	if _, err := exec.LookPath("Xvnc"); err != nil {
		t.Skip("no Xvnc (scripts/install-deps.sh installs it)")
	}
	bin := realtest.Binary(t)
	out := t.TempDir()
	build := exec.Command("../../scripts/build-deb.sh", bin)
	build.Env = append(os.Environ(), "DEB_OUT="+out)
	b, err := build.CombinedOutput()
	if err != nil {
		t.Fatalf("build-deb: %v\n%s", err, b)
	}
	deb := strings.TrimSpace(string(b))
	if info, err := exec.Command("dpkg-deb", "--info", deb).CombinedOutput(); err != nil || !bytes.Contains(info, []byte("Package: airlock")) {
		t.Fatalf("dpkg-deb --info: %v\n%s", err, info)
	}

	// What other tests keep on this machine (the embedded demo's account
	// homes in /var/lib/airlock, root sessions' scratch in /run/airlock) is
	// not the package's to remove.
	var before []string
	for _, p := range []string{"/var/lib/airlock", "/run/airlock"} {
		if _, err := os.Stat(p); err == nil {
			before = append(before, p)
		}
	}
	if _, err := os.Stat("/var/lib/airlock/gateway"); err == nil {
		t.Skip("/var/lib/airlock/gateway exists already; not touching it")
	}
	purged := false
	purge := func() {
		if purged {
			return
		}
		purged = true
		dpkg(t, "--purge", "airlock")
		if exec.Command("dpkg", "-s", "airlock").Run() == nil {
			t.Error("dpkg -s airlock: still installed after --purge")
		}
		for _, p := range append(installed, "/etc/airlock", "/var/lib/airlock/gateway", "/var/lib/airlock", "/run/airlock") {
			if slices.Contains(before, p) {
				continue
			}
			if _, err := os.Lstat(p); err == nil {
				t.Errorf("%s is left after dpkg --purge", p)
			}
		}
	}
	t.Cleanup(purge)
	if o := dpkg(t, "-i", deb); exec.Command("dpkg", "-s", "airlock").Run() != nil {
		t.Fatalf("dpkg -i: not installed:\n%s", o)
	}
	for _, p := range installed {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("installed file: %v", err)
		}
	}
	if st, err := os.Stat("/var/lib/airlock/gateway"); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("/var/lib/airlock/gateway after postinst: %v %v, want 0700", err, st)
	}
	if o, err := exec.Command("/usr/bin/airlock", "config", "check", "/etc/airlock/airlock.yaml").CombinedOutput(); err != nil {
		t.Fatalf("airlock config check /etc/airlock/airlock.yaml: %v\n%s", err, o)
	}
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		o, _ := exec.Command("systemd-analyze", "verify", "/lib/systemd/system/airlock.service").CombinedOutput()
		for _, line := range strings.Split(strings.TrimSpace(string(o)), "\n") {
			// Without man-db, the Documentation= man page cannot be looked up.
			if line != "" && !strings.Contains(line, "man airlock(1)") {
				t.Errorf("systemd-analyze verify: %s", line)
			}
		}
	}
	unit, err := os.ReadFile("/lib/systemd/system/airlock.service")
	if err != nil {
		t.Fatal(err)
	}
	pre, start := unitCommand(t, unit, "ExecStartPre"), unitCommand(t, unit, "ExecStart")

	// The admin's one edit: this CI machine runs several test suites at
	// once, and the default max_load (2 per CPU) would refuse the launch
	// with 503 node_busy, as it should on a busy node.
	conf, err := os.ReadFile("/etc/airlock/airlock.yaml")
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(conf), "\n  max_load: 2.0 ", "\n  max_load: 0   ", 1)
	if edited == string(conf) {
		t.Fatal("no max_load: 2.0 in /etc/airlock/airlock.yaml")
	}
	if err := os.WriteFile("/etc/airlock/airlock.yaml", []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}

	// A site's users are Unix accounts (run_as ""): the test user.
	add := exec.Command("/usr/bin/airlock", "users", "add", acct.Name, "--password-stdin", "--config", "/etc/airlock/airlock.yaml", "--state-dir", "/var/lib/airlock/gateway")
	add.Stdin = strings.NewReader("deb-test-pw\n")
	if o, err := add.CombinedOutput(); err != nil {
		t.Fatalf("airlock users add: %v\n%s", err, o)
	}

	// As the unit: ExecStartPre, then ExecStart (with a free port instead
	// of the configured 8443, which a demo on this machine may hold).
	if o, err := exec.Command(pre[0], pre[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("ExecStartPre %v: %v\n%s", pre, err, o)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	serve := exec.Command(start[0], append(start[1:], "--listen", addr)...)
	var logs realtest.LockedBuffer
	serve.Stdout, serve.Stderr = &logs, &logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		serve.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- serve.Wait() }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			serve.Process.Kill()
			<-done
			t.Errorf("the gateway did not stop within 60s of SIGINT")
		}
	}
	t.Cleanup(stop)
	if err := realtest.WaitFor(30*time.Second, func() error {
		if !strings.Contains(logs.String(), "airlock gateway: https://") {
			return fmt.Errorf("not serving yet")
		}
		return nil
	}); err != nil {
		t.Fatalf("gateway: %v\n%s", err, logs.String())
	}

	// The self-signed certificate it made is in its state directory; any
	// will do for this test, which checks the package, not TLS.
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	base := "https://" + addr
	call := func(method, path, token string, body any) (int, map[string]any) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			j, _ := json.Marshal(body)
			rd = bytes.NewReader(j)
		}
		req, _ := http.NewRequest(method, base+path, rd)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		} else {
			req.SetBasicAuth(acct.Name, "deb-test-pw")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	code, tok := call("POST", "/api/v1/tokens", "", map[string]any{})
	token, _ := tok["token"].(string)
	if code != http.StatusCreated || token == "" {
		t.Fatalf("log in: %d %v\n%s", code, tok, logs.String())
	}
	code, s := call("POST", "/api/v1/sessions", token, map[string]any{"profile": "desktop"})
	id, _ := s["id"].(string)
	if code != http.StatusCreated || id == "" {
		t.Fatalf("launch: %d %v\n%s", code, s, logs.String())
	}
	if err := realtest.WaitFor(90*time.Second, func() error {
		_, s = call("GET", "/api/v1/sessions/"+id, token, nil)
		switch s["state"] {
		case "ready":
			return nil
		case "ended":
			t.Fatalf("session ended: %v\n%s", s["reason"], logs.String())
		}
		return fmt.Errorf("state %v", s["state"])
	}); err != nil {
		t.Fatalf("desktop: %v\n%s", err, logs.String())
	}
	code, _ = call("DELETE", "/api/v1/sessions/"+id, token, nil)
	if code != http.StatusAccepted {
		t.Errorf("stop: %d", code)
	}
	if err := realtest.WaitFor(60*time.Second, func() error {
		_, s = call("GET", "/api/v1/sessions/"+id, token, nil)
		if s["state"] != "ended" {
			return fmt.Errorf("state %v", s["state"])
		}
		return nil
	}); err != nil {
		t.Errorf("stop: %v", err)
	}
	stop()
	purge()
}

// unitCommand returns the argv of a unit's Exec line (the unit's lines
// are plain: no quoting, no prefixes).
func unitCommand(t *testing.T, unit []byte, key string) []string {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(unit))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key+"="); ok {
			argv := strings.Fields(v)
			if len(argv) == 0 || !filepath.IsAbs(argv[0]) || strings.ContainsAny(v, "\"'$%") {
				t.Fatalf("%s=%s: not a plain command", key, v)
			}
			return argv
		}
	}
	t.Fatalf("no %s= in the unit", key)
	return nil
}
