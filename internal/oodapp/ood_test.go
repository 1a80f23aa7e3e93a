package oodapp

import (
	"context"
	"crypto/tls"
	"fmt"
	"image/color"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"encoding/json"

	"github.com/coder/websocket"
	"go.yaml.in/yaml/v3"

	"github.com/airlock-hpc/airlock/internal/realtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	realtest.StopSlurm()
	os.Exit(code)
}

// appDir is contrib/ood/airlock in the module.
func appDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../../contrib/ood/airlock")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func need(t *testing.T, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("no %s (scripts/install-deps.sh installs it): %v", c, err)
		}
	}
}

// render renders the ERB file src to dst with ruby (testdata/render.rb)
// and the names of vars; yamlCheck also has Psych's safe_load read it.
func render(t *testing.T, src, dst string, vars map[string]any, yamlCheck bool) string {
	t.Helper()
	vf := filepath.Join(t.TempDir(), "vars.json")
	b, _ := json.Marshal(vars)
	if err := os.WriteFile(vf, b, 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"testdata/render.rb", src, dst, vf}
	if yamlCheck {
		args = append(args, "--yaml")
	}
	if out, err := exec.Command("ruby", args...).CombinedOutput(); err != nil {
		t.Fatalf("render %s: %v\n%s", filepath.Base(src), err, out)
	}
	out, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// oodContext is what OnDemand passes the job's templates and
// submit.yml.erb: `context`, the form's attributes (form.yml) with the
// user's values, and `session`, the dashboard's batch_connect session (its
// UUID and staged directory).
func oodContext(staged string) map[string]any {
	return map[string]any{
		"context": map[string]any{"cluster": "cluster", "profile": "desktop", "geometry": "1280x800", "bc_num_hours": "1"},
		"session": map[string]any{"id": "3f1c0c9e-7b2a-4a61-9d0e-2b7c1d5e8a11", "staged_root": staged},
	}
}

type submitYML struct {
	BatchConnect struct {
		Template   string   `yaml:"template"`
		ConnParams []string `yaml:"conn_params"`
	} `yaml:"batch_connect"`
	Script struct {
		Native []string `yaml:"native"`
	} `yaml:"script"`
}

// stage does what OnDemand does before it submits: copies template/ to
// the session's directory and renders every *.erb in it, and renders
// submit.yml.erb. It checks the YAML files and the scripts' syntax.
func stage(t *testing.T, staged string) submitYML {
	t.Helper()
	return stageWith(t, staged, oodContext(staged))
}

// stageWith is stage with the form's values of vars.
func stageWith(t *testing.T, staged string, vars map[string]any) submitYML {
	t.Helper()
	app := appDir(t)
	if out, err := exec.Command("ruby", "-ryaml", "-e", "YAML.safe_load(File.read(ARGV[0]))", filepath.Join(app, "manifest.yml")).CombinedOutput(); err != nil {
		t.Fatalf("manifest.yml: %v\n%s", err, out)
	}
	render(t, filepath.Join(app, "form.yml.erb"), filepath.Join(t.TempDir(), "form.yml"), map[string]any{}, true)
	var sub submitYML
	text := render(t, filepath.Join(app, "submit.yml.erb"), filepath.Join(t.TempDir(), "submit.yml"), vars, true)
	if err := yaml.Unmarshal([]byte(text), &sub); err != nil {
		t.Fatalf("submit.yml: %v\n%s", err, text)
	}
	if sub.BatchConnect.Template != "basic" || len(sub.BatchConnect.ConnParams) == 0 {
		t.Fatalf("submit.yml: %+v", sub)
	}
	if err := os.MkdirAll(staged, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(filepath.Join(app, "template"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".erb")
		if !ok {
			t.Fatalf("template/%s: not ERB", e.Name())
		}
		dst := filepath.Join(staged, name)
		render(t, filepath.Join(app, "template", e.Name()), dst, vars, false)
		if out, err := exec.Command("bash", "-n", dst).CombinedOutput(); err != nil {
			t.Fatalf("bash -n %s: %v\n%s", name, err, out)
		}
	}
	if err := os.Chmod(filepath.Join(staged, "script.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	return sub
}

// TestOODAppRender: every ERB file renders with OnDemand's context, the
// YAML parses, the scripts are bash, and a form value that is not a
// geometry does not reach the job's script.
func TestOODAppRender(t *testing.T) {
	need(t, "ruby", "bash")
	staged := filepath.Join(t.TempDir(), "staged")
	sub := stage(t, staged)
	if want := []string{"airlock_secret", "airlock_session", "airlock_url", "airlock_console", "airlock_rdp", "airlock_app"}; strings.Join(sub.BatchConnect.ConnParams, ",") != strings.Join(want, ",") {
		t.Errorf("conn_params %v, want %v", sub.BatchConnect.ConnParams, want)
	}
	script, _ := os.ReadFile(filepath.Join(staged, "script.sh"))
	if !strings.Contains(string(script), `geometry="1280x800"`) || !strings.Contains(string(script), `"lifetime": "1h"`) {
		t.Errorf("script.sh lacks the form's values:\n%s", script)
	}
	// Hostile form values: the form's select is only a suggestion to the
	// browser, so the templates must not trust what comes back.
	vars := oodContext(staged)
	vars["context"].(map[string]any)["geometry"] = `1x1"; touch /tmp/pwned; "`
	vars["context"].(map[string]any)["bc_num_hours"] = "99999"
	out := render(t, filepath.Join(appDir(t), "template", "script.sh.erb"), filepath.Join(t.TempDir(), "s.sh"), vars, false)
	if strings.Contains(out, "pwned") || !strings.Contains(out, `"lifetime": "168h"`) {
		t.Errorf("hostile form values reached the script:\n%s", out)
	}
	// The gateway route's values: the route, the site's URL and the
	// profile name go into before.sh only when they are what they claim.
	for _, gw := range []string{`https://x"; touch /tmp/pwned; "`, "https://x/$(touch /tmp/pwned)", "http://plain.example.org"} {
		vars := oodContext(staged)
		vars["context"].(map[string]any)["route"] = "gateway"
		vars["context"].(map[string]any)["airlock_gateway"] = gw
		vars["context"].(map[string]any)["profile"] = `desktop"; touch /tmp/pwned; "`
		out := render(t, filepath.Join(appDir(t), "template", "before.sh.erb"), filepath.Join(t.TempDir(), "b.sh"), vars, false)
		if strings.Contains(out, "pwned") || !strings.Contains(out, `airlock_gateway=""`) || !strings.Contains(out, `airlock_profile="desktop"`) {
			t.Errorf("hostile gateway form values reached before.sh:\n%s", out)
		}
	}
	vars = oodContext(staged)
	vars["context"].(map[string]any)["route"] = "gateway"
	vars["context"].(map[string]any)["airlock_gateway"] = "https://airlock.example.org:8443/"
	if out := render(t, filepath.Join(appDir(t), "template", "before.sh.erb"), filepath.Join(t.TempDir(), "b.sh"), vars, false); !strings.Contains(out, `airlock_gateway="https://airlock.example.org:8443"`) || !strings.Contains(out, `airlock_route="gateway"`) {
		t.Errorf("the site's gateway did not reach before.sh:\n%s", out)
	}
	if out := render(t, filepath.Join(appDir(t), "view.html.erb"), filepath.Join(t.TempDir(), "view.html"),
		map[string]any{"host": "n1", "port": 0, "airlock_secret": "", "airlock_session": "ood-x", "airlock_url": `https://gw/sessions/s-1"><script>`}, false); strings.Contains(out, "<script>") || !strings.Contains(out, "/rnode/") {
		t.Errorf("a card's URL that is not one became a link:\n%s", out)
	}
	// The other ways in must be places on the session's page: one
	// elsewhere (another origin, a page beside it, markup) is no link.
	for _, bad := range []string{"https://evil.example/#rdp", "https://gw/sessions/s-10#rdp", `https://gw/sessions/s-1#"><script>`} {
		out := render(t, filepath.Join(appDir(t), "view.html.erb"), filepath.Join(t.TempDir(), "view.html"),
			map[string]any{"host": "n1", "port": 0, "airlock_secret": "", "airlock_session": "ood-x", "airlock_url": "https://gw/sessions/s-1",
				"airlock_rdp": bad, "airlock_console": bad, "airlock_app": bad}, false)
		if strings.Contains(out, `id="airlock-rdp"`) || strings.Contains(out, `id="airlock-console"`) || strings.Contains(out, "<script>") || strings.Contains(out, "Open the app") {
			t.Errorf("a way in at %q became a link:\n%s", bad, out)
		}
	}
	view := render(t, filepath.Join(appDir(t), "view.html.erb"), filepath.Join(t.TempDir(), "view.html"),
		map[string]any{"host": "n1", "port": 4000, "airlock_secret": "S3CRET", "airlock_session": "ood-x"}, false)
	if !strings.Contains(view, `action="/rnode/n1/4000/airlock-login" method="post"`) || strings.Contains(view, "?secret") {
		t.Errorf("view:\n%s", view)
	}
}

// nginxConf is nginx set up as Open OnDemand's proxy: every user it has
// logged in (here HTTP basic authentication stands for OnDemand's login)
// reaches /rnode/HOST/PORT/PATH, which goes in plain HTTP to HOST:PORT/PATH
// (the prefix stripped, WebSockets upgraded) when HOST matches the
// cluster's host_regex (here: the one node, mapped to its address).
const nginxConf = `
worker_processes 1;
daemon off;
user root;
pid {{dir}}/nginx.pid;
error_log {{dir}}/error.log info;
events { worker_connections 256; }
http {
  access_log {{dir}}/access.log;
  client_body_temp_path {{dir}}/body;
  proxy_temp_path {{dir}}/proxy;
  fastcgi_temp_path {{dir}}/fastcgi;
  uwsgi_temp_path {{dir}}/uwsgi;
  scgi_temp_path {{dir}}/scgi;
  map $http_upgrade $connection_upgrade { default upgrade; '' close; }
  server {
    listen 127.0.0.1:{{port}};
    auth_basic "Open OnDemand";
    auth_basic_user_file {{dir}}/htpasswd;
{{server}}
  }
}
`

// rnodeLocation is OnDemand's /rnode/HOST/PORT/PATH: to HOST:PORT/PATH in
// plain HTTP (the prefix stripped, WebSockets upgraded) when HOST matches
// the cluster's host_regex (here: the one node, mapped to its address).
const rnodeLocation = `
    set $rnode_addr "";
    location ~ ^/rnode/(?<rnode_host>[^/]+)/(?<rnode_port>[0-9]+)(?<rnode_path>/.*)$ {
      if ($rnode_host = "{{node}}") { set $rnode_addr 127.0.0.1; }
      if ($rnode_addr = "") { return 404; }
      proxy_pass http://$rnode_addr:$rnode_port$rnode_path$is_args$args;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_read_timeout 1h;
    }
`

// cardLocation serves the rendered session card where OnDemand's
// dashboard would, on the same origin as /rnode.
const cardLocation = `
    location /pun/sys/dashboard/ {
      alias {{card}}/;
    }
`

// openCardInChromium opens the card in headless Chromium as alice, presses
// its button and checks that noVNC shows the desktop, with no secret in the
// tab's address.
func openCardInChromium(t *testing.T, cardURL, secret string) {
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
	// Kept for a look, like the portal's browser test's screenshots.
	shots, err := filepath.Abs("../../.artifacts/screenshots")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(shots, "ood-rnode-desktop.png")
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "testdata/card.mjs", cardURL, "alice", "alice-pw", shot)
	// Chromium runs in node's process group; a deadline ends all of it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("card.mjs: %v\n%s\n%s", err, out, stderr.String())
	}
	var res struct {
		Error         string
		URL           string
		Connected     bool
		Width, Height int
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("card.mjs said %q: %v", out, err)
	}
	if res.Error != "" || !res.Connected {
		t.Fatalf("Chromium: %+v", res)
	}
	if strings.Contains(res.URL, secret) || res.Width < 100 || res.Height < 100 {
		t.Errorf("Chromium's tab: %+v", res)
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	colours := map[color.Color]bool{}
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y += 7 {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x += 7 {
			colours[img.At(x, y)] = true
		}
	}
	if len(colours) < 2 {
		t.Errorf("the desktop in Chromium is one colour")
	}
}

// startNginx starts nginx as OnDemand's front end with the users alice
// and bob (HTTP basic authentication stands for OnDemand's login: every
// user it lets in reaches every location) and the locations of server,
// and returns its address and directory (access.log).
func startNginx(t *testing.T, server string, vars ...string) (addr, dir string) {
	t.Helper()
	dir = t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	conf := strings.Replace(nginxConf, "{{server}}", server, 1)
	conf = strings.NewReplacer(append(vars, "{{dir}}", dir, "{{port}}", strconv.Itoa(port))...).Replace(conf)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "htpasswd"), []byte("alice:{PLAIN}alice-pw\nbob:{PLAIN}bob-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nginx", "-p", dir, "-c", filepath.Join(dir, "nginx.conf"))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	})
	addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := realtest.WaitFor(10*time.Second, func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		t.Fatalf("nginx did not start: %v\n%s", err, b)
	}
	return addr, dir
}

// user is a browser logged in to "OnDemand" as name.
type user struct {
	name, pw string
	c        *http.Client
	jar      *cookiejar.Jar
}

func newUser(name string) *user {
	jar, _ := cookiejar.New(nil)
	return &user{name: name, pw: name + "-pw", jar: jar, c: &http.Client{
		Jar:           jar,
		Timeout:       15 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

func (u *user) do(t *testing.T, method, rawURL string, body io.Reader, hdr http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, rawURL, body)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(u.name, u.pw)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := u.c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// websocket opens noVNC's WebSocket through the proxy as u would.
func (u *user) websocket(ctx context.Context, rawURL string) (net.Conn, *http.Response, error) {
	wsURL, _ := url.Parse(rawURL)
	hdr := http.Header{}
	var cookies []string
	for _, c := range u.jar.Cookies(wsURL) {
		cookies = append(cookies, c.Name+"="+c.Value)
	}
	if len(cookies) > 0 {
		hdr.Set("Cookie", strings.Join(cookies, "; "))
	}
	req, _ := http.NewRequest("GET", rawURL, nil)
	req.SetBasicAuth(u.name, u.pw)
	hdr.Set("Authorization", req.Header.Get("Authorization"))
	wsURL.Scheme = "ws"
	c, resp, err := websocket.Dial(ctx, wsURL.String(), &websocket.DialOptions{HTTPHeader: hdr, Subprotocols: []string{"binary"}})
	if err != nil {
		return nil, resp, err
	}
	return websocket.NetConn(context.Background(), c, websocket.MessageBinary), resp, nil
}

var (
	formAction = regexp.MustCompile(`<form action="([^"]+)" method="post"`)
	formInput  = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)
)

// TestOODAppSlurmRNode runs the app for real: OnDemand's staging (ERB by
// ruby), its basic template's job (testdata/basic.sh) submitted with sbatch
// as the test user to the Slurm test cluster, airlock run sealing the
// desktop on the node, and the view's form posted through nginx as
// OnDemand's /rnode proxy. The desktop answers over noVNC's WebSocket; a
// second OnDemand user who knows the host and port is refused without the
// secret and with a wrong one; the secret is in no URL, no proxy or job
// log, and no process of the session but the runner's own start.
func TestOODAppSlurmRNode(t *testing.T) {
	need(t, "ruby", "nginx", "websockify", "Xvnc", "xterm")
	if _, err := os.Stat("/usr/share/novnc/vnc.html"); err != nil {
		t.Skipf("no noVNC in /usr/share/novnc (apt-get install novnc): %v", err)
	}
	cl := realtest.SlurmCluster(t)
	acct := realtest.TestUser(t)
	bin := realtest.Binary(t)
	work := realtest.SharedDir(t, acct)
	staged := filepath.Join(work, "output", "3f1c0c9e")
	sub := stage(t, staged)
	for _, d := range []string{filepath.Join(work, "output"), staged} {
		os.Chown(d, acct.UID, acct.GID)
	}
	ents, _ := os.ReadDir(staged)
	for _, e := range ents {
		os.Chown(filepath.Join(staged, e.Name()), acct.UID, acct.GID)
	}
	binDir := filepath.Join(work, "bin")
	os.Mkdir(binDir, 0o755)
	if err := os.Symlink(bin, filepath.Join(binDir, "airlock")); err != nil {
		t.Fatal(err)
	}
	wrapper, err := os.ReadFile("testdata/basic.sh")
	if err != nil {
		t.Fatal(err)
	}
	job := filepath.Join(work, "job.sh")
	realtest.WriteFile(t, acct, job, wrapper, 0o755)
	jobOut := filepath.Join(work, "job.out")

	args := []string{"-u", acct.Name, "--", "sbatch", "--parsable", "--output=" + jobOut, "--chdir=" + staged, "--time=10"}
	args = append(args, sub.Script.Native...)
	args = append(args, job, staged)
	args = append(args, sub.BatchConnect.ConnParams...)
	cmd := exec.Command("runuser", args...)
	cmd.Env = append([]string{"PATH=" + binDir + ":/usr/local/bin:/usr/bin:/bin", "HOME=" + acct.Home}, cl.Env()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sbatch: %v\n%s", err, out)
	}
	jobID := strings.TrimSpace(strings.Split(string(out), ";")[0])
	t.Cleanup(func() {
		cl.Command("scancel", jobID)
		// The session ends with the job: its runner and seal are gone.
		if err := realtest.WaitFor(30*time.Second, func() error { return realtest.Gone(staged) }); err != nil {
			t.Errorf("after scancel: %v", err)
		}
	})
	dump := func() string {
		jo, _ := os.ReadFile(jobOut)
		ev, _ := os.ReadFile(filepath.Join(staged, "events.jsonl"))
		return fmt.Sprintf("job output:\n%s\nevents:\n%s", jo, ev)
	}

	connFile := filepath.Join(staged, "connection.yml")
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
	if st, err := os.Stat(connFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("connection.yml: %v mode %v, want 0600", err, st.Mode())
	}
	var conn struct {
		Host    string `yaml:"host"`
		Port    int    `yaml:"port"`
		Secret  string `yaml:"airlock_secret"`
		Session string `yaml:"airlock_session"`
	}
	b, _ := os.ReadFile(connFile)
	if err := yaml.Unmarshal(b, &conn); err != nil || conn.Host != cl.Node || conn.Port == 0 || len(conn.Secret) < 32 {
		t.Fatalf("connection.yml %q: %v %+v", b, err, conn)
	}

	// The card: OnDemand renders view.html.erb with connection.yml.
	view := render(t, filepath.Join(appDir(t), "view.html.erb"), filepath.Join(t.TempDir(), "view.html"),
		map[string]any{"host": conn.Host, "port": conn.Port, "airlock_secret": conn.Secret, "airlock_session": conn.Session}, false)
	m := formAction.FindStringSubmatch(view)
	if m == nil {
		t.Fatalf("no form in the view:\n%s", view)
	}
	// No gateway, so no native RDP file: the card says where it is.
	if !strings.Contains(view, `id="airlock-no-rdp"`) || !strings.Contains(view, "needs the airlock gateway route") || strings.Contains(view, `id="airlock-rdp"`) {
		t.Errorf("the rnode card on native RDP:\n%s", view)
	}
	form := url.Values{}
	for _, in := range formInput.FindAllStringSubmatch(view, -1) {
		form.Set(in[1], strings.ReplaceAll(in[2], "&amp;", "&"))
	}
	// The card as OnDemand's dashboard shows it, on OnDemand's origin.
	cardDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(cardDir, "card.html"), []byte("<!DOCTYPE html>\n<html><body>\n"+view+"</body></html>\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	proxy, logDir := startNginx(t, rnodeLocation+cardLocation, "{{node}}", cl.Node, "{{card}}", cardDir)
	base := "http://" + proxy
	rnode := fmt.Sprintf("%s/rnode/%s/%d/", base, conn.Host, conn.Port)

	// bob is logged in to OnDemand too and knows the host and port.
	bob := newUser("bob")
	if resp, body := bob.do(t, "GET", rnode+"vnc.html", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("bob without the secret: %s %.200q, want 401", resp.Status, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if c, resp, err := bob.websocket(ctx, rnode+"websockify"); err == nil {
		c.Close()
		t.Error("bob opened the desktop's WebSocket without the secret")
	} else if resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("bob's WebSocket: %v, want 401", err)
	}
	wrong := url.Values{"secret": {strings.Repeat("x", len(conn.Secret))}}
	if resp, body := bob.do(t, "POST", base+m[1], strings.NewReader(wrong.Encode()),
		http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}); resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) > 0 {
		t.Errorf("bob with a wrong secret: %s %q, want 403 and no cookie", resp.Status, body)
	}

	// alice presses the card's button.
	alice := newUser("alice")
	resp, body := alice.do(t, "POST", base+m[1], strings.NewReader(form.Encode()),
		http.Header{"Content-Type": {"application/x-www-form-urlencoded"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("alice's login: %s %q\n%s", resp.Status, body, dump())
	}
	loc, err := resp.Location()
	if err != nil || strings.Contains(loc.String(), conn.Secret) || !strings.HasPrefix(loc.String(), rnode+"vnc.html?") {
		t.Fatalf("login redirect %v %v", loc, err)
	}
	for _, c := range resp.Cookies() {
		if c.Path != fmt.Sprintf("/rnode/%s/%d/", conn.Host, conn.Port) || !c.HttpOnly {
			t.Errorf("cookie %s: want HttpOnly and the session's path", c)
		}
	}
	// noVNC (websockify) starts beside the desktop once the session is
	// ready; the card may be quicker.
	if err := realtest.WaitFor(30*time.Second, func() error {
		if resp, body := alice.do(t, "GET", loc.String(), nil, nil); resp.StatusCode != http.StatusOK || !strings.Contains(body, "noVNC") {
			return fmt.Errorf("%s %.200q", resp.Status, body)
		}
		return nil
	}); err != nil {
		t.Fatalf("alice's noVNC page: %v", err)
	}
	nc, _, err := alice.websocket(ctx, rnode+"websockify")
	if err != nil {
		t.Fatalf("alice's WebSocket: %v\n%s", err, dump())
	}
	defer nc.Close()
	rfb, err := realtest.NewRFB(nc)
	if err != nil {
		t.Fatalf("RFB through the proxy: %v", err)
	}
	if rfb.W != 1280 || rfb.H != 800 {
		t.Errorf("desktop %dx%d, want the form's 1280x800", rfb.W, rfb.H)
	}
	// The xterm draws: more than one colour on the screen.
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

	t.Run("chromium", func(t *testing.T) { openCardInChromium(t, base+"/pun/sys/dashboard/card.html", conn.Secret) })

	// The secret after first use: in no URL the proxy saw, no job log,
	// and no process but the runner's start (its initial environment,
	// which it unset; readable by the owner and root only).
	if b, _ := os.ReadFile(filepath.Join(logDir, "access.log")); strings.Contains(string(b), conn.Secret) || !strings.Contains(string(b), "/airlock-login") {
		t.Errorf("the proxy's access log holds the secret or misses the login:\n%s", b)
	}
	if strings.Contains(dump(), conn.Secret) {
		t.Errorf("the job's log holds the secret:\n%s", dump())
	}
	for _, pid := range realtest.ProcessesOf(conn.Secret) {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		args := strings.Split(string(cmdline), "\x00")
		if len(args) < 2 || filepath.Base(args[0]) != "airlock" || args[1] != "run" {
			t.Errorf("process %d (%q) holds the secret", pid, cmdline)
		}
	}
}

// insecureTLS is for a client whose test is not about the certificate.
func insecureTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }

// oodSiteConfig is a site's airlock.yaml with every kind of profile, and
// one the gateway would not adopt (a kiosk).
const oodSiteConfig = `profiles:
  - name: desktop
    title: Linux desktop
    kind: desktop
  - name: rdpdesk
    title: Desktop with RDP
    kind: desktop
    desktop: {rdp: true}
  - name: jupyter
    title: Jupyter
    kind: app
    app: {command: [jupyter-notebook, --no-browser, --port=8888], port: 8888}
  - name: win11
    kind: vm
    vm: {image: win11}
  - name: hub
    kind: desktop
    desktop: {kiosk: {url: "https://hub.example.org/"}}
images:
  - name: win11
    path: /srv/images/win11.qcow2
    format: qcow2
    os: windows
    rdp: true
`

// TestOODFormListsSiteProfiles: the form's Session select lists the
// profiles of the site's configuration that a job can run, every kind
// (desktops, an app, a VM image), from the file `airlock config ood-form`
// makes, rendered as OnDemand renders form.yml.erb; not the kiosk the
// gateway would refuse to adopt. Without the file, the desktop alone.
func TestOODFormListsSiteProfiles(t *testing.T) {
	need(t, "ruby")
	bin := realtest.Binary(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "airlock.yaml")
	if err := os.WriteFile(conf, []byte(oodSiteConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "config", "ood-form", conf).Output()
	if err != nil {
		t.Fatalf("airlock config ood-form: %v", err)
	}
	profiles := filepath.Join(dir, "profiles.yml")
	if err := os.WriteFile(profiles, out, 0o644); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "# hub: not offered: a kiosk") {
		t.Errorf("ood-form does not say why the kiosk is left out:\n%s", out)
	}
	options := func() [][]string {
		t.Helper()
		text := render(t, filepath.Join(appDir(t), "form.yml.erb"), filepath.Join(t.TempDir(), "form.yml"), map[string]any{}, true)
		var form struct {
			Attributes struct {
				Profile struct {
					Options [][]string `yaml:"options"`
				} `yaml:"profile"`
			} `yaml:"attributes"`
		}
		if err := yaml.Unmarshal([]byte(text), &form); err != nil {
			t.Fatalf("form.yml: %v\n%s", err, text)
		}
		return form.Attributes.Profile.Options
	}
	t.Setenv("AIRLOCK_OOD_PROFILES", profiles)
	want := [][]string{
		{"Linux desktop (desktop)", "desktop"},
		{"Desktop with RDP (desktop)", "rdpdesk"},
		{"Jupyter (app)", "jupyter"},
		{"win11 (virtual machine)", "win11"},
	}
	if got := options(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("the form's sessions: %q, want %q\nood-form:\n%s", got, want, out)
	}
	t.Setenv("AIRLOCK_OOD_PROFILES", filepath.Join(dir, "missing.yml"))
	if got := options(); fmt.Sprint(got) != fmt.Sprint([][]string{{"Linux desktop (desktop)", "desktop"}}) {
		t.Errorf("the form's sessions without the file: %q", got)
	}
}

// TestOODCardEscapesConnectionValues attacks the card as the session's
// workload: it runs as the user, whose home holds the job's
// connection.yml, which OnDemand reads again each time it draws the card
// with Ruby's ERB (no escaping of its own). Markup in host, port,
// airlock_secret or airlock_session must reach the dashboard as text,
// never as a script in the user's OnDemand origin (from where it could
// submit jobs outside the seal).
func TestOODCardEscapesConnectionValues(t *testing.T) {
	const evil = `n1"><script>alert(1)</script>`
	for _, vars := range []map[string]any{
		{"host": evil, "port": evil, "airlock_secret": evil, "airlock_session": evil},
		{"host": evil, "port": 0, "airlock_secret": "", "airlock_session": "ood-x", "airlock_url": "https://gw/sessions/s-1"},
	} {
		out := render(t, filepath.Join(appDir(t), "view.html.erb"), filepath.Join(t.TempDir(), "view.html"), vars, false)
		if strings.Contains(out, "<script>") || strings.Contains(out, `n1">`) {
			t.Errorf("markup in connection.yml reached the card as markup:\n%s", out)
		}
	}
}
