package gateway

import (
	"encoding/json"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/session"
)

// profileUsedElsewhere are Profile fields read outside what
// profileReach builds, with the test that shows their effect.
var profileUsedElsewhere = map[string]string{
	"IdleTimeout": "the janitor (TestSingleShotAndIdle)",
	"StripPrefix": "the proxy (TestSingleShotAndIdle, TestRevoke* with the test app's /ws)",
	"Groups":      "who may list and launch it (TestOIDCLogin/groups_decide_profiles, TestOIDCBrowser)",
	"Terms":       "the launch's terms check (TestTerms)",
	"Record":      "the proxy records viewer connections (TestRecording)",
	"Drives":      "the browser RDP relay's channel filter (rdpfilter.TestConnectInitialRenamesBlocked, TestRDPWebXrdp)",
}

// TestEveryProfileFieldIsUsed is the second half of the configuration's
// key walk (cli.TestEveryConfigKeyIsUsed proves every key reaches a
// Profile): every field of a Profile, and of its VM image, changes the
// runner spec the gateway builds (with the local and a remote backend),
// what the launch form shows, or what a launch is granted.
func TestEveryProfileFieldIsUsed(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	s := &session.Session{ID: "s-0123456789ab", Owner: me.Username, CPUs: 2, MemoryMB: 1024, Lifetime: time.Hour}
	bases := []Profile{
		{Name: "desktop", Title: "Desktop", Description: "A desktop.", Kind: "desktop", Geometry: "1024x768", Depth: 24,
			Programs: [][]string{{"xterm"}}, Xvnc: "/opt/tigervnc/bin/Xvnc",
			CPUs: 1, MaxCPUs: 4, MemoryMB: 1024, MaxMemoryMB: 4096, Lifetime: time.Hour, MaxLifetime: 8 * time.Hour, IdleTimeout: time.Hour},
		{Name: "app", Title: "App", Kind: "app", Command: []string{"app", "--port", "{port}", "--prefix", "{prefix}"}, Port: 8888,
			CPUs: 1, MaxCPUs: 4, MemoryMB: 1024, MaxMemoryMB: 4096, Lifetime: time.Hour, MaxLifetime: 8 * time.Hour},
		// A desktop serving RDP, so that its server (rdp_server) matters.
		{Name: "rdpdesk", Title: "RDP desktop", Kind: "desktop", Geometry: "1024x768", Depth: 24, Xvnc: "Xvnc", RDP: true, RDPServer: RDPServerShadow},
		{Name: "sock", Title: "Socket app", Kind: "app", Command: []string{"app", "{socket}"}, Socket: "/tmp/app.sock"},
		{Name: "vm", Title: "VM", Kind: "vm", CPUs: 1, MaxCPUs: 4, MemoryMB: 1024, MaxMemoryMB: 4096,
			VM: &VMImage{Name: "img", Path: "/srv/img.qcow2", Format: "qcow2", OS: "linux", Firmware: "bios",
				Kernel: "/srv/vmlinuz", Initrd: "/srv/initrd", Append: "console=ttyS0", RDP: true, SharePath: "~/shared",
				Volumes: []VMVolume{{Path: "/srv/data", Tag: "data"}}, PersistentAllowed: true, GPUs: []string{"0000:01:00.0"}}},
	}
	caFile := filepath.Join(t.TempDir(), "hub-ca.pem")
	if err := os.WriteFile(caFile, []byte("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bases = append(bases, Profile{Name: "kiosk", Title: "Hub", Kind: "desktop", Geometry: "1024x768", Depth: 24, Xvnc: "Xvnc",
		Kiosk: &Kiosk{URL: "https://hub.example:8443/", Browser: "chromium", Allow: []string{"idp.example:443"}, CAFile: caFile}})
	for _, b := range bases {
		if !reflect.DeepEqual(profileReach(t, s, b), profileReach(t, s, b)) {
			t.Fatalf("%s: building twice differs; the walk would prove nothing", b.Name)
		}
	}
	noIsolation(t, "every base", bases, func(p *Profile) bool { return true }, s)
	for _, field := range profileFields(reflect.TypeFor[Profile](), "") {
		// No profile field, whatever its value, makes the spec of the
		// local or a remote backend ask for isolation "pod": only the
		// Kubernetes backend adds it (kubernetes.TestLaunchObjects), so no
		// configuration gets an unsealed session out of the others.
		noIsolation(t, field, bases, func(p *Profile) bool { return setField(reflect.ValueOf(p).Elem(), strings.Split(field, ".")) }, s)
		if _, ok := profileUsedElsewhere[field]; ok {
			continue
		}
		used := false
		for _, b := range bases {
			p := b
			if b.Kiosk != nil {
				k := *b.Kiosk
				k.Allow = append([]string(nil), b.Kiosk.Allow...)
				p.Kiosk = &k
			}
			if b.VM != nil {
				img := *b.VM
				img.Volumes = append([]VMVolume(nil), b.VM.Volumes...)
				p.VM = &img
			}
			if !setField(reflect.ValueOf(&p).Elem(), strings.Split(field, ".")) {
				continue
			}
			if !reflect.DeepEqual(profileReach(t, s, b), profileReach(t, s, p)) {
				used = true
				break
			}
		}
		if !used {
			t.Errorf("Profile.%s reaches neither the spec, the launch form nor a launch's grant", field)
		}
	}
}

// noIsolation fails the test if a spec built from any of bases, changed
// by set (when it applies), names an isolation.
func noIsolation(t *testing.T, what string, bases []Profile, set func(*Profile) bool, s *session.Session) {
	t.Helper()
	for _, b := range bases {
		p := b
		if b.VM != nil {
			img := *b.VM
			p.VM = &img
		}
		if b.Kiosk != nil {
			k := *b.Kiosk
			p.Kiosk = &k
		}
		if !set(&p) {
			continue
		}
		for _, v := range profileReach(t, s, p) {
			if str, ok := v.(string); ok && strings.Contains(str, `"isolation"`) {
				t.Errorf("%s of profile %s puts an isolation in the runner spec: %s", what, b.Name, str)
			}
		}
	}
}

// profileReach is what a profile becomes: the runner's spec with the
// local and with a remote backend, the launch form's entry, and the
// grants of a few launch requests.
func profileReach(t *testing.T, s *session.Session, p Profile) []any {
	t.Helper()
	var out []any
	for _, remote := range []bool{false, true} {
		dir := "/nonexistent-state"
		g := &Gateway{cfg: Config{StateDir: t.TempDir(), Backend: localStub{}, RDPListen: "127.0.0.1:8444"}, master: make([]byte, 32)}
		// With an RDP port, so that desktop.rdp and an image's rdp reach
		// the spec (a tls connector).
		if err := g.initRDP(); err != nil {
			t.Fatal(err)
		}
		if remote {
			g.cfg.Backend = remoteStub{}
			g.remote = remoteStub{}
		}
		b, err := g.spec(s, p, LaunchRequest{KeepDisk: p.VM != nil && p.VM.PersistentAllowed})
		// The state directory and the hop CA differ each time; they are
		// not the profile's.
		hop, _ := json.Marshal(string(g.rdp.hop.pem))
		got := strings.ReplaceAll(string(b), strings.Trim(string(hop), `"`), "HOP-CA")
		out = append(out, strings.ReplaceAll(got, g.cfg.StateDir, dir), errText(err))
	}
	out = append(out, portalProfile(p))
	for _, req := range []LaunchRequest{{}, {CPUs: 3}, {MemoryMB: 3000}, {Lifetime: "7h"}, {KeepDisk: true}} {
		gr, err := checkLaunch(p, req)
		out = append(out, gr, errText(err))
	}
	return out
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// profileFields lists Profile's fields and, as "VM.X", its image's.
func profileFields(t reflect.Type, prefix string) []string {
	var out []string
	for f := range t.Fields() {
		ft := f.Type
		if ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct {
			out = append(out, profileFields(ft.Elem(), prefix+f.Name+".")...)
			continue
		}
		if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
			out = append(out, profileFields(ft.Elem(), prefix+f.Name+"[].")...)
			continue
		}
		out = append(out, prefix+f.Name)
	}
	return out
}

// setField changes the field at path to another value of its type, and
// reports false when the path is absent (a nil image, an empty list).
func setField(v reflect.Value, path []string) bool {
	name, list := strings.CutSuffix(path[0], "[]")
	f := v.FieldByName(name)
	if list {
		if f.Len() == 0 {
			return false
		}
		f = f.Index(0)
	}
	if len(path) > 1 {
		if f.Kind() == reflect.Pointer {
			if f.IsNil() {
				return false
			}
			f = f.Elem()
		}
		return setField(f, path[1:])
	}
	switch {
	case f.Type() == reflect.TypeFor[time.Duration]():
		f.SetInt(f.Int() + int64(time.Hour))
	case f.Kind() == reflect.String:
		f.SetString(f.String() + "-changed")
	case f.Kind() == reflect.Bool:
		f.SetBool(!f.Bool())
	case f.CanInt():
		f.SetInt(f.Int() + 1)
	case f.Kind() == reflect.Slice:
		f.Set(reflect.Append(f, reflect.New(f.Type().Elem()).Elem()))
	default:
		return false
	}
	return true
}
