package oodapp

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
)

// gatewayLocation is the README's "airlock serve behind Open OnDemand"
// front end, in nginx terms (OnDemand's Apache does the same with
// custom_vhost_directives): after the front end's own login, every path
// goes to the gateway over TLS checked against the gateway's certificate,
// with X-Forwarded-User set to the user it logged in, replacing whatever a
// client sent in that header, and the front end's own credentials
// (Authorization) not passed on.
const gatewayLocation = `
    location / {
      proxy_pass https://127.0.0.1:{{gw}};
      proxy_ssl_trusted_certificate {{cert}};
      proxy_ssl_verify on;
      proxy_ssl_name localhost;
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-User $remote_user;
      proxy_set_header Authorization "";
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 1h;
    }
`

// serveBehindConfig is the gateway's side: the header method, believed
// from the front end's address only.
const serveBehindConfig = `listen: 127.0.0.1:%d
state_dir: %s
auth:
  methods:
    - kind: header
      header: X-Forwarded-User
      trusted_proxies: [127.0.0.1]
      admin_users: [alice]
`

// TestServeBehindOnDemand: airlock serve with the trusted-header method
// behind a front end that logs users in and sets the header, as the
// README configures it. A user is who the front end says, whatever header
// they send themselves; the header sent straight to the gateway from
// another address is refused (the attack test: seen failing with the
// gateway trusting 127.0.0.0/8, which takes in the attacker's 127.0.0.2).
func TestServeBehindOnDemand(t *testing.T) {
	need(t, "nginx")
	bin := realtest.Binary(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gw := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	conf := filepath.Join(dir, "airlock.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(serveBehindConfig, gw, state)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "config", "check", conf).CombinedOutput(); err != nil {
		t.Fatalf("airlock config check: %v\n%s", err, out)
	}
	serve := exec.Command(bin, "serve", "--config", conf)
	var logs realtest.LockedBuffer
	serve.Stdout, serve.Stderr = &logs, &logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		serve.Process.Signal(os.Interrupt)
		serve.Wait()
	})
	if err := realtest.WaitFor(30*time.Second, func() error {
		if !strings.Contains(logs.String(), "airlock gateway: https://") {
			return fmt.Errorf("not serving yet")
		}
		return nil
	}); err != nil {
		t.Fatalf("gateway: %v\n%s", err, logs.String())
	}
	front, frontDir := startNginx(t, gatewayLocation, "{{gw}}", strconv.Itoa(gw), "{{cert}}", filepath.Join(state, "tls.crt"))

	me := func(u *user, base string, hdr http.Header) (int, string, bool) {
		t.Helper()
		resp, body := u.do(t, "GET", base+"/api/v1/me", nil, hdr)
		var m struct {
			User  string `json:"user"`
			Admin bool   `json:"admin"`
		}
		json.Unmarshal([]byte(body), &m)
		return resp.StatusCode, m.User, m.Admin
	}
	alice, bob := newUser("alice"), newUser("bob")
	if code, who, admin := me(alice, "http://"+front, nil); code != 200 || who != "alice" || !admin {
		el, _ := os.ReadFile(filepath.Join(frontDir, "error.log"))
		t.Fatalf("alice through the front end: %d %q admin=%v\n%s\n%s", code, who, admin, logs.String(), el)
	}
	// bob claims to be alice: the front end's header replaces his.
	if code, who, admin := me(bob, "http://"+front, http.Header{"X-Forwarded-User": {"alice"}}); code != 200 || who != "bob" || admin {
		t.Errorf("bob claiming alice through the front end: %d %q admin=%v, want bob", code, who, admin)
	}
	// Nobody logged in at the front end gets nothing from it.
	anon := &http.Client{Timeout: 10 * time.Second}
	if resp, err := anon.Get("http://" + front + "/api/v1/me"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no login at the front end: %v %v, want 401", err, resp)
	} else {
		resp.Body.Close()
	}
	// Around the front end: the header straight to the gateway from
	// another local address (another user on the front end's host would
	// come from 127.0.0.1 itself: the README says to run the front end on
	// its own host or give it a client certificate).
	direct := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext:     (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext,
		TLSClientConfig: insecureTLS(),
	}}
	req, _ := http.NewRequest("GET", fmt.Sprintf("https://127.0.0.1:%d/api/v1/me", gw), nil)
	req.Header.Set("X-Forwarded-User", "alice")
	resp, err := direct.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Errorf("the header straight to the gateway from 127.0.0.2 was believed")
	}
	// The log line may follow the answer.
	if err := realtest.WaitFor(10*time.Second, func() error {
		if !strings.Contains(logs.String(), "untrusted") {
			return fmt.Errorf("no log line")
		}
		return nil
	}); err != nil {
		t.Errorf("the refusal is not logged: %v\n%s", err, logs.String())
	}
}
