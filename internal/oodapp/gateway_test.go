package oodapp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.yaml.in/yaml/v3"

	"github.com/airlock-hpc/airlock/internal/realtest"
)

// gatewayConfig is a gateway whose sessions are jobs on the Slurm test
// cluster, with users named by a trusted front end (the header method), so
// a portal user is the Unix account of the same name. The job prefix is the
// default one, "airlock": OnDemand's own jobs must not look like the
// gateway's (it cancels those it has no session for, every second here).
const gatewayConfig = `listen: 0.0.0.0:%d
state_dir: %s
backend:
  kind: slurm
  slurm:
    airlock: %s
    gateway_url: https://%s:%d
    poll: 300ms
    reconcile: 1s
limits:
  max_load: 1000
rdp:
  listen: 127.0.0.1:%d
profiles:
  - name: desktop
    kind: desktop
    desktop:
      geometry: 1024x768
      programs: [[xterm]]
  - name: rdpdesk
    kind: desktop
    desktop:
      geometry: 1024x768
      programs: [[xterm]]
      rdp: true
auth:
  methods:
    - kind: header
      header: X-Forwarded-User
      trusted_proxies: [127.0.0.1]
    - kind: local
      file: passwd
audit_log: audit.log
`

// gw is a running `airlock serve`.
type gw struct {
	url, state string
	logs       *realtest.LockedBuffer
}

// gwPassword is the test user's password in the gateway's own login form
// (the local method), for the browser.
const gwPassword = "ood-gateway-pw"

func startGateway(t *testing.T, cl *realtest.Slurm, bin string) *gw {
	t.Helper()
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	rln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rdpPort := rln.Addr().(*net.TCPAddr).Port
	rln.Close()
	host, _ := os.Hostname()
	conf := filepath.Join(dir, "airlock.yaml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, gatewayConfig, port, state, bin, host, port, rdpPort), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "config", "check", conf).CombinedOutput(); err != nil {
		t.Fatalf("airlock config check: %v\n%s", err, out)
	}
	add := exec.Command(bin, "users", "add", realtest.TestUser(t).Name, "--password-stdin", "--config", conf, "--state-dir", state)
	add.Stdin = strings.NewReader(gwPassword + "\n")
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("airlock users add: %v\n%s", err, out)
	}
	serve := exec.Command(bin, "serve", "--config", conf)
	serve.Env = append(os.Environ(), cl.Env()...)
	logs := &realtest.LockedBuffer{}
	serve.Stdout, serve.Stderr = logs, logs
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
	return &gw{url: fmt.Sprintf("https://127.0.0.1:%d", port), state: state, logs: logs}
}

// pin is the SHA-256 of the gateway's self-signed certificate, as
// `airlock login --pin` keeps it.
func (g *gw) pin(t *testing.T) string {
	b, err := os.ReadFile(filepath.Join(g.state, "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("tls.crt: no PEM")
	}
	sum := sha256.Sum256(blk.Bytes)
	return hex.EncodeToString(sum[:])
}

// call makes an API call with token and decodes the answer into out.
func (g *gw) call(t *testing.T, token, method, path string, body any, out any) (int, string) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, g.url+path, r)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: insecureTLS()}}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		json.Unmarshal(b, out)
	}
	return resp.StatusCode, string(b)
}

// page gets a page of the gateway as user's browser behind the trusted
// front end (the header method) would.
func (g *gw) page(t *testing.T, user, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", g.url+path, nil)
	req.Header.Set("X-Forwarded-User", user)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: insecureTLS()}}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// token makes an API token for user, as the front end's login would.
func (g *gw) token(t *testing.T, user string) string {
	t.Helper()
	req, _ := http.NewRequest("POST", g.url+"/api/v1/tokens", strings.NewReader(`{"name":"ood"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Forwarded-User", user)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: insecureTLS()}}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		Token string `json:"token"`
	}
	b, _ := io.ReadAll(resp.Body)
	if json.Unmarshal(b, &tok); resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK || tok.Token == "" {
		t.Fatalf("token for %s: %s %s", user, resp.Status, b)
	}
	return tok.Token
}

// console opens the session's console through the gateway with token and
// returns the remote screen.
func (g *gw) console(ctx context.Context, token, id string) (*realtest.RFB, *http.Response, error) {
	ws, resp, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(g.url, "https")+"/s/"+id+"/console/", &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: insecureTLS()}},
		HTTPHeader: http.Header{"Authorization": {"Bearer " + token}},
	})
	if err != nil {
		return nil, resp, err
	}
	rfb, err := realtest.NewRFB(websocket.NetConn(context.Background(), ws, websocket.MessageBinary))
	return rfb, resp, err
}

// TestOODAppSlurmGateway runs the app's gateway route for real: OnDemand's
// staging with route "gateway", its basic template's job submitted with
// sbatch as the test user to the Slurm test cluster, the job's `airlock
// attach` (token and pin from the user's `airlock login` file) having a
// real `airlock serve` with the Slurm backend adopt the job, the runner
// registering, and the desktop reached through the gateway's console. The
// card links to the session on the gateway and carries no secret. Another
// Unix user's token cannot adopt the job (403, audited) nor open the
// session; the job cannot be adopted twice (409); an unknown job is a
// 404; stopping the session on the gateway
// ends the job.
func TestOODAppSlurmGateway(t *testing.T) {
	need(t, "ruby", "Xvnc", "xterm")
	cl := realtest.SlurmCluster(t)
	acct := realtest.TestUser(t)
	bin := realtest.Binary(t)
	g := startGateway(t, cl, bin)
	aliceTok, bobTok := g.token(t, acct.Name), g.token(t, "nobody")

	jobID, conn, cfgDir, dump := submitGatewayJob(t, cl, g, bin, aliceTok, "desktop", "5b2d7c1a")
	id := strings.TrimPrefix(conn.URL, g.url+"/sessions/")

	// The card: a link to the session on the gateway, and no rnode form;
	// a desktop without RDP has no console beside it and no RDP file.
	view := conn.card(t)
	if !strings.Contains(view, `href="`+conn.URL+`"`) || strings.Contains(view, "/rnode/") ||
		strings.Contains(view, `id="airlock-rdp"`) || strings.Contains(view, `id="airlock-console"`) || conn.RDP != "" {
		t.Errorf("the card for the gateway route:\n%s", view)
	}

	// The session is the user's, ready, on the job's node; the job now has
	// the session's name.
	var s struct {
		State, Owner, Node string
		Ends               time.Time
	}
	if err := realtest.WaitFor(60*time.Second, func() error {
		if code, body := g.call(t, aliceTok, "GET", "/api/v1/sessions/"+id, nil, &s); code != 200 || s.State != "ready" {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	}); err != nil {
		t.Fatalf("session: %v\n%s", err, dump())
	}
	// It ends when Slurm ends the job (--time=10), not at the profile's 8h.
	if s.Ends.IsZero() || s.Ends.After(time.Now().Add(11*time.Minute)) {
		t.Errorf("the adopted session ends at %v, want within the job's 10 minutes", s.Ends)
	}
	if name, _ := cl.Command("squeue", "-h", "-j", jobID, "-o", "%j|%u"); strings.TrimSpace(name) != "airlock-"+id+"|"+acct.Name {
		t.Errorf("the adopted job: %q, want the session's name and the user's", name)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rfb, _, err := g.console(ctx, aliceTok, id)
	if err != nil {
		t.Fatalf("the desktop through the gateway: %v\n%s", err, dump())
	}
	if rfb.W != 1024 || rfb.H != 768 {
		t.Errorf("desktop %dx%d, want the profile's 1024x768", rfb.W, rfb.H)
	}
	if err := realtest.WaitFor(30*time.Second, func() error {
		if err := rfb.Update(false); err != nil {
			return err
		}
		if rfb.Distinct() < 2 {
			return fmt.Errorf("a blank screen")
		}
		return nil
	}); err != nil {
		t.Errorf("desktop: %v", err)
	}
	rfb.Close()

	t.Run("chromium", func(t *testing.T) { openGatewayCardInChromium(t, view, acct.Name) })

	// The session's own workload (the user's xterm) reads the user's
	// login file where the job's attach read it: empty, in the seal.
	xterms := 0
	for _, pid := range descendants(realtest.ProcessesOf(id), "xterm") {
		xterms++
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root%s/login.json", pid, cfgDir)); strings.Contains(string(b), aliceTok) {
			t.Errorf("the session's xterm reads the user's token: %v", err)
		}
	}
	if xterms == 0 {
		t.Errorf("no xterm of session %s found", id)
	}

	// The attacks, by another Unix user with a token of their own: adopt
	// the job (it is not theirs), open the session, its console. An
	// unknown job and a job id that is not one.
	if code, body := g.call(t, bobTok, "POST", "/api/v1/sessions", map[string]string{"profile": "desktop", "slurm_job": jobID}, nil); code != 403 || strings.Contains(body, "REGISTER") {
		t.Errorf("nobody adopting the user's job: %d %s, want 403", code, body)
	}
	if code, body := g.call(t, bobTok, "GET", "/api/v1/sessions/"+id, nil, nil); code != 404 && code != 403 {
		t.Errorf("nobody reading the session: %d %s", code, body)
	}
	if _, resp, err := g.console(ctx, bobTok, id); err == nil {
		t.Error("nobody opened the session's console")
	} else if resp == nil || resp.StatusCode < 400 {
		t.Errorf("nobody's console: %v", err)
	}
	if code, body := g.call(t, aliceTok, "POST", "/api/v1/sessions", map[string]string{"profile": "desktop", "slurm_job": jobID}, nil); code != 409 {
		t.Errorf("the user adopting their job a second time: %d %s, want 409", code, body)
	}
	if code, body := g.call(t, aliceTok, "POST", "/api/v1/sessions", map[string]string{"profile": "desktop", "slurm_job": "99999999"}, nil); code != 404 {
		t.Errorf("an unknown job: %d %s, want 404", code, body)
	}
	if code, body := g.call(t, aliceTok, "POST", "/api/v1/sessions", map[string]string{"profile": "desktop", "slurm_job": "1;id"}, nil); code != 400 {
		t.Errorf("a job id that is not one: %d %s, want 400", code, body)
	}
	if err := realtest.WaitFor(10*time.Second, func() error {
		if b, _ := os.ReadFile(filepath.Join(g.state, "audit.log")); !strings.Contains(string(b), "adopt_refused") {
			return fmt.Errorf("no adopt_refused in the audit log")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	// An RDP desktop's card: beside the desktop, its VNC console and the
	// native RDP client's file, each a place on the session's own page,
	// where the owner gets the file; another user following the card's
	// RDP link gets neither the page nor a file.
	rjob, rconn, _, rdump := submitGatewayJob(t, cl, g, bin, aliceTok, "rdpdesk", "7c3e9f20")
	rid := strings.TrimPrefix(rconn.URL, g.url+"/sessions/")
	rview := rconn.card(t)
	if rconn.RDP != rconn.URL+"#rdp" || !strings.Contains(rview, `href="`+rconn.URL+`#rdp"`) || !strings.Contains(rview, `href="`+rconn.URL+`#console"`) {
		t.Errorf("the card for an RDP desktop:\n%s\n%s", rview, rdump())
	}
	if code, body := g.call(t, aliceTok, "POST", "/api/v1/sessions/"+rid+"/rdp", nil, nil); code != 201 || !strings.Contains(body, `"pin_sha256"`) {
		t.Errorf("the owner's RDP file: %d %.300s\n%s", code, body, rdump())
	}
	if code, body := g.call(t, bobTok, "POST", "/api/v1/sessions/"+rid+"/rdp", nil, nil); code != 404 {
		t.Errorf("nobody asking for the user's RDP file: %d %s, want 404", code, body)
	}
	if code, body := g.page(t, "nobody", strings.TrimPrefix(rconn.RDP, g.url)); code < 400 || strings.Contains(body, "rdp-download") || strings.Contains(body, rid) {
		t.Errorf("nobody following the card's RDP link: %d %.300s", code, body)
	}
	t.Run("chromium-ways", func(t *testing.T) {
		var res struct {
			Error   string
			Console bool
			Panel   bool
			File    string
		}
		runCard(t, "testdata/card-ways.mjs", rview, acct.Name, "ood-gateway-console.png", &res)
		if res.Error != "" || !res.Console || !res.Panel || res.File != rid+".airlock" {
			t.Fatalf("Chromium following the card's ways in: %+v", res)
		}
	})
	if code, body := g.call(t, aliceTok, "DELETE", "/api/v1/sessions/"+rid, nil, nil); code != 202 {
		t.Errorf("stop the RDP desktop: %d %s", code, body)
	}
	t.Logf("RDP desktop: job %s, session %s", rjob, rid)

	// The user's API token is in no log of the gateway or the job, nor
	// the secrets the answer carried (by name: their values the test
	// never sees).
	if d := dump(); strings.Contains(d, aliceTok) || strings.Contains(d, "AIRLOCK_REGISTER_TOKEN") || strings.Contains(d, "AIRLOCK_TICKET_KEY") {
		t.Errorf("a secret is in a log:\n%s", d)
	}

	// Stop on the gateway: the job ends, and its seal with it.
	if code, body := g.call(t, aliceTok, "DELETE", "/api/v1/sessions/"+id, nil, nil); code != 202 {
		t.Fatalf("stop: %d %s", code, body)
	}
	if err := realtest.WaitFor(60*time.Second, func() error {
		if q, _ := cl.Command("squeue", "-h", "-j", jobID, "-o", "%T"); strings.TrimSpace(q) != "" && !strings.HasPrefix(strings.TrimSpace(q), "CANCELLED") {
			return fmt.Errorf("job %s is %s", jobID, q)
		}
		return realtest.Gone(id)
	}); err != nil {
		t.Errorf("after stop: %v\n%s", err, dump())
	}
}

// gatewayConn is connection.yml as a gateway-route job writes it.
type gatewayConn struct {
	Host    string `yaml:"host"`
	Secret  string `yaml:"airlock_secret"`
	URL     string `yaml:"airlock_url"`
	Console string `yaml:"airlock_console"`
	RDP     string `yaml:"airlock_rdp"`
	App     string `yaml:"airlock_app"`
}

// card renders the card's view from connection.yml's values.
func (c gatewayConn) card(t *testing.T) string {
	return render(t, filepath.Join(appDir(t), "view.html.erb"), filepath.Join(t.TempDir(), "view.html"),
		map[string]any{"host": c.Host, "port": 0, "airlock_secret": "", "airlock_session": "ood-x", "airlock_url": c.URL,
			"airlock_console": c.Console, "airlock_rdp": c.RDP, "airlock_app": c.App}, false)
}

// submitGatewayJob stages the app for the gateway route with profile (in
// the session directory dir), submits its basic template's job with
// sbatch as the test user, whose `airlock login` holds token, and waits
// for connection.yml. It returns the job, connection.yml, the user's
// login directory and a dump of the logs for failures.
func submitGatewayJob(t *testing.T, cl *realtest.Slurm, g *gw, bin, aliceTok, profile, dir string) (string, gatewayConn, string, func() string) {
	t.Helper()
	acct := realtest.TestUser(t)
	work := realtest.SharedDir(t, acct)
	staged := filepath.Join(work, "output", dir)
	// The form as the user filled it in: the gateway route, the site's
	// gateway URL.
	vars := oodContext(staged)
	vars["context"].(map[string]any)["route"] = "gateway"
	vars["context"].(map[string]any)["airlock_gateway"] = g.url + "/"
	vars["context"].(map[string]any)["profile"] = profile
	sub := stageWith(t, staged, vars)
	for _, d := range []string{filepath.Join(work, "output"), staged} {
		os.Chown(d, acct.UID, acct.GID)
	}
	ents, _ := os.ReadDir(staged)
	for _, e := range ents {
		os.Chown(filepath.Join(staged, e.Name()), acct.UID, acct.GID)
	}
	binDir := filepath.Join(work, "bin")
	os.Mkdir(binDir, 0o755)
	if err := os.Symlink(bin, filepath.Join(binDir, "airlock")); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
	// The user's `airlock login` on a login node: the gateway, a token
	// and the certificate's pin, 0600 in a 0700 directory.
	// Outside /tmp, which the seal replaces anyway: like a home directory.
	cfgDir := filepath.Join(realtest.OutsideTmp(t, "ood-login-"), "config")
	os.Mkdir(cfgDir, 0o700)
	os.Chown(cfgDir, acct.UID, acct.GID)
	login, _ := json.Marshal(map[string]string{"gateway": g.url, "token": aliceTok, "pin_sha256": g.pin(t)})
	realtest.WriteFile(t, acct, filepath.Join(cfgDir, "login.json"), login, 0o600)
	wrapper, err := os.ReadFile("testdata/basic.sh")
	if err != nil {
		t.Fatal(err)
	}
	job := filepath.Join(work, dir+".sh")
	realtest.WriteFile(t, acct, job, wrapper, 0o755)
	jobOut := filepath.Join(work, dir+".out")

	args := []string{"-u", acct.Name, "--", "sbatch", "--parsable", "--output=" + jobOut, "--chdir=" + staged, "--time=10"}
	args = append(args, sub.Script.Native...)
	args = append(args, job, staged)
	args = append(args, sub.BatchConnect.ConnParams...)
	cmd := exec.Command("runuser", args...)
	cmd.Env = append([]string{"PATH=" + binDir + ":/usr/local/bin:/usr/bin:/bin", "HOME=" + acct.Home, "AIRLOCK_CONFIG_DIR=" + cfgDir}, cl.Env()...)
	submitted := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sbatch: %v\n%s", err, out)
	}
	jobID := strings.TrimSpace(strings.Split(string(out), ";")[0])
	t.Cleanup(func() { cl.Command("scancel", jobID) })
	dump := func() string {
		jo, _ := os.ReadFile(jobOut)
		ev, _ := os.ReadFile(filepath.Join(staged, "events.jsonl"))
		return fmt.Sprintf("job output:\n%s\nevents:\n%s\ngateway:\n%s", jo, ev, g.logs.String())
	}

	connFile := filepath.Join(staged, "connection.yml")
	// (Seen failing, the job cancelled by the gateway's reconcile, with
	// the app's old job name "airlock-ood-desktop".)
	deadline := time.Now().Add(150 * time.Second)
	for {
		if _, err := os.Stat(connFile); err == nil {
			break
		}
		// A job that ended without connection.yml will never write it.
		if q, err := cl.Command("squeue", "-h", "-j", jobID, "-o", "%T"); err == nil && strings.TrimSpace(q) == "" {
			t.Fatalf("the job ended without connection.yml\n%s", dump())
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection.yml after 150s\n%s", dump())
		}
		time.Sleep(200 * time.Millisecond)
	}
	var conn gatewayConn
	b, _ := os.ReadFile(connFile)
	if err := yaml.Unmarshal(b, &conn); err != nil || conn.Host != cl.Node || conn.Secret != "" || !strings.HasPrefix(conn.URL, g.url+"/sessions/s-") {
		t.Fatalf("connection.yml %q: %v %+v\n%s", b, err, conn, dump())
	}
	t.Logf("job %s (%s) is %s; connection.yml %.1fs after sbatch", jobID, profile, conn.URL, time.Since(submitted).Seconds())
	return jobID, conn, cfgDir, dump
}

// descendants lists the processes named comm below any of roots.
func descendants(roots []int, comm string) []int {
	under := map[int]bool{}
	for _, r := range roots {
		under[r] = true
	}
	parent := func(pid int) int {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		// "pid (comm) state ppid ...": comm may hold spaces, not ")".
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			return 0
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			return 0
		}
		pp, _ := strconv.Atoi(f[1])
		return pp
	}
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(c)) != comm {
			continue
		}
		for p := parent(pid); p > 1; p = parent(p) {
			if under[p] {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// openGatewayCardInChromium opens the card in headless Chromium, follows
// its link to the gateway, logs in there as user and waits for the
// desktop on the session page.
func openGatewayCardInChromium(t *testing.T, view, user string) {
	var res struct {
		Error string
		URL   string
		Drawn bool
	}
	runCard(t, "testdata/card-gateway.mjs", view, user, "ood-gateway-desktop.png", &res)
	if res.Error != "" || !res.Drawn {
		t.Fatalf("Chromium: %+v", res)
	}
}

// runCard runs a Chromium script on the card (view, as OnDemand's
// dashboard shows it) as user with the gateway's password, its screenshot
// under .artifacts/screenshots, and decodes the JSON it prints into res.
func runCard(t *testing.T, script, view, user, shot string, res any) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("no node in PATH")
	}
	if _, err := os.Stat("/usr/bin/chromium"); err != nil {
		t.Skip("no /usr/bin/chromium (scripts/install-deps.sh installs it)")
	}
	if _, err := os.Stat("../../node_modules/playwright-core/package.json"); err != nil {
		t.Skip("no node_modules/playwright-core (make web)")
	}
	if _, err := os.Stat("../portal/static/vendor/novnc"); err != nil {
		t.Skip("no noVNC in the portal (make web)")
	}
	shots, err := filepath.Abs("../../.artifacts/screenshots")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	// The card as OnDemand's dashboard shows it (any origin: the links
	// leave it for the gateway's).
	card := filepath.Join(t.TempDir(), "card.html")
	if err := os.WriteFile(card, []byte("<!DOCTYPE html>\n<html><body>\n"+view+"</body></html>\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script, "file://"+card, user, gwPassword, filepath.Join(shots, shot))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s\n%s", script, err, out, stderr.String())
	}
	if err := json.Unmarshal(out, res); err != nil {
		t.Fatalf("%s said %q: %v", script, out, err)
	}
}
