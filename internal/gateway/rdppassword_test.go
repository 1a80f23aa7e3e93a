package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/portal"
	"github.com/airlock-hpc/airlock/internal/rdpclient"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/session"
)

// syncBuffer is a log sink tests read while the gateway writes.
type syncBuffer struct {
	mu chan struct{}
	b  bytes.Buffer
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{mu: make(chan struct{}, 1)} }

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.b.String()
}

// TestRDPVMPassword: a VM image with a generated one-time RDP password.
// The guest gets it (its port-3389 responder answers only a client that
// sends it first, through airlock rdp, the gateway and the tls
// connector); the owner sees it on the session page and gets it in the
// .airlock file. Attacks: another portal user, a control-share holder and
// a view-share holder get it from neither; it is in no log line, audit
// record, URL, spec or other file of the gateway's (but the two 0600 files
// that carry it), on no process's command line (QEMU's included) or in an
// environment another local user can read; and another local user
// (nobody) cannot read it even with the state directory opened to all.
func TestRDPVMPassword(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: another local user (nobody) attacks the files")
	}
	g := realtest.BuildGuest(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := newSyncBuffer()
	probe := fmt.Sprintf("airlock-rdp-pw-%d.txt", time.Now().UnixNano())
	tg := startGateway(t, "", func(c *Config) {
		c.RDPListen, c.RDPAddress = ln.Addr().String(), ln.Addr().String()
		p := vmProfile(g, probe)
		p.VM.RDPPassword = true
		c.Profiles = append(c.Profiles, p)
		pt, err := portal.New()
		if err != nil {
			t.Fatal(err)
		}
		c.Portal = pt
		c.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(logs, t.Output()), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}, "alice", "bob", "carol", "dave")
	// A state directory others may enter (as some installs make it): the
	// files' own modes and the session directory must still keep them out.
	if err := os.Chmod(tg.stateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	serveRDP(t, tg.g, ln)
	ctx := context.Background()
	alice := tg.client().loginToken("alice")
	id := alice.start(map[string]any{"profile": "vm"}).ID
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(tg.g.sessionDir(id), "runner.log"))
			t.Logf("runner.log:\n%s", b)

		}
	})
	s := alice.waitStateFor(id, "ready", 120*time.Second)

	f, _ := rdpFile(t, alice, s.ID)
	pw := f.Password
	if len(pw) != rdpPasswordLen {
		t.Fatalf("the owner's .airlock file has password %q, want %d characters", pw, rdpPasswordLen)
	}
	page := func(c *client) (int, string) { return c.do("GET", "/sessions/"+s.ID, nil, nil) }
	if code, body := page(tg.client().loginCookie("alice")); code != 200 || !strings.Contains(body, pw) {
		t.Fatalf("owner's session page: %d, password shown %v", code, strings.Contains(body, pw))
	}

	// The guest got it: its responder answers the right first line only.
	tun, err := rdpclient.New(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	answer := func(line string) (string, error) {
		c, err := tun.Dial(ctx)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, line+"\n"); err != nil {
			return "", err
		}
		b, _ := io.ReadAll(c)
		return string(b), nil
	}
	if err := realtest.WaitFor(180*time.Second, func() error {
		got, err := answer(pw)
		if err != nil {
			return err
		}
		if !strings.Contains(got, "RDP-PONG password-ok") {
			return fmt.Errorf("the guest's port answered %q to the password", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got, err := answer("Wrong" + pw[5:]); err != nil || !strings.Contains(got, "RDP-PASSWORD-WRONG") {
		t.Fatalf("a wrong password: %q %v; the guest must check the one it was given", got, err)
	}

	// Another portal user, a control-share holder, a view-share holder.
	bob := tg.client().loginCookie("bob")
	if code, body := page(bob); code == 200 || strings.Contains(body, pw) {
		t.Errorf("another user's view of the session page: %d, password shown %v", code, strings.Contains(body, pw))
	}
	if code, body := tg.client().loginToken("bob").do("POST", "/api/v1/sessions/"+s.ID+"/rdp", nil, nil); code == 201 || strings.Contains(body, pw) {
		t.Errorf("another user got an .airlock file: %d", code)
	}
	for user, mode := range map[string]string{"carol": "control", "dave": "view"} {
		var share struct{ URL string }
		if code, body := alice.do("POST", "/api/v1/sessions/"+s.ID+"/shares", map[string]string{"mode": mode}, &share); code != 201 {
			t.Fatalf("%s share: %d %s", mode, code, body)
		}
		c := tg.client().loginCookie(user)
		resp, err := c.http.Get(tg.url + strings.TrimPrefix(share.URL, "https://"+strings.TrimPrefix(tg.url, "https://")))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		code, body := page(c)
		if code != 200 {
			t.Fatalf("%s-share holder's session page: %d (the share should open it)", mode, code)
		}
		if strings.Contains(body, pw) {
			t.Errorf("the %s-share holder's session page shows the password", mode)
		}
		if code, body := c.do("POST", "/api/v1/sessions/"+s.ID+"/rdp", nil, nil); strings.Contains(body, pw) {
			t.Errorf("the %s-share holder got the password in an .airlock file (%d)", mode, code)
		}
	}

	// No log line, audit record or other file of the gateway's holds it:
	// only the runner's input and the guest's OEM-strings file, both 0600.
	if strings.Contains(logs.String(), pw) {
		t.Error("the gateway's log holds the password")
	}
	dir := tg.g.sessionDir(s.ID)
	allowed := []string{filepath.Join(dir, "rdp.password"), filepath.Join(dir, "scratch", "tmp", ".airlock-oem-strings")}
	var holders []string
	filepath.WalkDir(tg.stateDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(pw)) {
			holders = append(holders, p)
			if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
				t.Errorf("%s holds the password with mode %v, want 0600", p, st.Mode().Perm())
			}
		}
		return nil
	})
	for _, h := range holders {
		if !slices.Contains(allowed, h) {
			t.Errorf("%s holds the password (a log, the store, a spec?)", h)
		}
	}
	if len(holders) != len(allowed) {
		t.Errorf("the password is in %v, want exactly %v", holders, allowed)
	}
	// The serial log says the guest got it, never what it is.
	serial, _ := os.ReadFile(filepath.Join(dir, "scratch", "tmp", "serial.log"))
	if !strings.Contains(string(serial), "RDP-PASSWORD: received for alice, 20 characters") {
		t.Errorf("the guest did not report the password and its account on its serial port:\n%s", serial)
	}

	// Another local user: every file above, every process's command line
	// (QEMU's argv is world-readable) and every environment it can read.
	nobody := func(script string, args ...string) string {
		cmd := exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", script, "sh"}, args...)...)
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	for _, p := range allowed {
		if out := nobody(`cat "$1"`, p); strings.Contains(out, pw) {
			t.Errorf("nobody read the password from %s", p)
		}
	}
	if out := nobody(`for p in /proc/[0-9]*; do cat $p/cmdline $p/environ; echo; done 2>/dev/null`); strings.Contains(out, pw) {
		t.Error("nobody found the password in a process's command line or environment")
	}
	if out := nobody(`for p in /proc/[0-9]*; do cat $p/cmdline; echo; done 2>/dev/null`); !strings.Contains(out, "airlock-"+s.ID) {
		t.Error("the check cannot see QEMU's command line, so proves nothing")
	}
}

// TestRDPPasswordSpec: the password is the session's own (another
// session's differs), passes Windows' complexity rule, and reaches the
// runner as a 0600 file (local) or by the job's environment (remote):
// the spec, which a batch script carries, holds neither it nor a hint.
func TestRDPPasswordSpec(t *testing.T) {
	s := &session.Session{ID: "s-0123456789ab", Owner: "alice", Profile: "vm", CPUs: 1, MemoryMB: 256, Lifetime: time.Hour}
	p := Profile{Name: "vm", Kind: "vm", VM: &VMImage{Name: "w", Path: "/srv/w.qcow2", Format: "qcow2", OS: "windows", RDP: true, RDPPassword: true}}
	for _, remote := range []bool{false, true} {
		g := &Gateway{cfg: Config{StateDir: t.TempDir(), Backend: localStub{}, RDPListen: "127.0.0.1:8444", Profiles: []Profile{p}}, master: []byte("0123456789abcdef0123456789abcdef")}
		if remote {
			g.cfg.Backend, g.remote = remoteStub{}, remoteStub{}
		}
		if err := g.initRDP(); err != nil {
			t.Fatal(err)
		}
		pw := g.rdpPassword(s)
		other := *s
		other.ID = "s-0123456789ac"
		if len(pw) != rdpPasswordLen || pw == g.rdpPassword(&other) || !strings.ContainsAny(pw, rdpPasswordClasses[0]) ||
			!strings.ContainsAny(pw, rdpPasswordClasses[1]) || !strings.ContainsAny(pw, rdpPasswordClasses[2]) {
			t.Fatalf("password %q (another session's %q)", pw, g.rdpPassword(&other))
		}
		b, err := g.spec(s, p, LaunchRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(pw)) {
			t.Fatalf("remote=%v: the spec holds the password: %s", remote, b)
		}
		var spec contract.Spec
		if err := json.Unmarshal(b, &spec); err != nil {
			t.Fatal(err)
		}
		v := spec.VM
		if v.RDPUser != "alice" {
			t.Errorf("remote=%v: rdp_user %q", remote, v.RDPUser)
		}
		if remote {
			if v.RDPPasswordEnv != EnvRDPPassword || v.RDPPasswordFile != "" {
				t.Errorf("remote: %+v", v)
			}
			if env := g.remoteJobFor(s, p); env[EnvRDPPassword] != pw {
				t.Errorf("remote: the job's environment has %q, want the password", env[EnvRDPPassword])
			}
			continue
		}
		st, err := os.Stat(v.RDPPasswordFile)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("local: password file %q: %v %v", v.RDPPasswordFile, st, err)
		}
		if got, _ := os.ReadFile(v.RDPPasswordFile); string(got) != pw {
			t.Errorf("local: the file holds %q", got)
		}
	}
	// Without rdp_password, or without an RDP port, no password at all.
	g := &Gateway{cfg: Config{StateDir: t.TempDir(), Backend: localStub{}, Profiles: []Profile{p}}, master: make([]byte, 32)}
	if pw := g.rdpPassword(s); pw != "" {
		t.Errorf("no RDP port, yet password %q", pw)
	}
}

// TestShadowLogonSpec: a desktop with rdp_server: shadow runs FreeRDP's
// shadow server (no xrdp) and hands its runner the session's password
// for the SAM file as a 0600 file (local) or the job's environment
// (remote); the spec and the server's command line hold neither it nor
// a hint. An xrdp desktop has no password at all.
func TestShadowLogonSpec(t *testing.T) {
	s := &session.Session{ID: "s-0123456789ab", Owner: "alice", Profile: "shadow", CPUs: 1, MemoryMB: 256, Lifetime: time.Hour}
	p := Profile{Name: "shadow", Kind: "desktop", RDP: true, RDPServer: RDPServerShadow}
	for _, remote := range []bool{false, true} {
		g := &Gateway{cfg: Config{StateDir: t.TempDir(), Backend: localStub{}, Profiles: []Profile{p}}, master: []byte("0123456789abcdef0123456789abcdef")}
		if remote {
			g.cfg.Backend, g.remote = remoteStub{}, remoteStub{}
		}
		if err := g.initRDP(); err != nil {
			t.Fatal(err)
		}
		pw := g.rdpPassword(s)
		if len(pw) != rdpPasswordLen {
			t.Fatalf("password %q", pw)
		}
		b, err := g.spec(s, p, LaunchRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(pw)) {
			t.Fatalf("remote=%v: the spec holds the password: %s", remote, b)
		}
		var spec contract.Spec
		if err := json.Unmarshal(b, &spec); err != nil {
			t.Fatal(err)
		}
		l := spec.RDPLogon
		if l == nil || l.User != "alice" || l.SAMFile != shadowSAMFile {
			t.Fatalf("remote=%v: rdp_logon %+v", remote, l)
		}
		servers := ""
		for _, c := range spec.Processes {
			servers += strings.Join(c.Argv, " ")
		}
		if !strings.Contains(servers, "freerdp-shadow-cli") || strings.Contains(servers, "xrdp --nodaemon") {
			t.Errorf("remote=%v: processes %s", remote, servers)
		}
		if remote {
			if l.PasswordEnv != EnvRDPPassword || l.PasswordFile != "" || g.remoteJobFor(s, p)[EnvRDPPassword] != pw {
				t.Errorf("remote: %+v", l)
			}
			continue
		}
		st, err := os.Stat(l.PasswordFile)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("local: password file %q: %v %v", l.PasswordFile, st, err)
		}
		if got, _ := os.ReadFile(l.PasswordFile); string(got) != pw {
			t.Errorf("local: the file holds %q", got)
		}
	}
	x := p
	x.RDPServer = RDPServerXrdp
	g := &Gateway{cfg: Config{StateDir: t.TempDir(), Backend: localStub{}, Profiles: []Profile{x}}, master: make([]byte, 32)}
	if err := g.initRDP(); err != nil {
		t.Fatal(err)
	}
	if pw := g.rdpPassword(s); pw != "" {
		t.Errorf("an xrdp desktop has password %q", pw)
	}
}
