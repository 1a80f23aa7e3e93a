package gateway

import (
	"bytes"
	"fmt"
	"image/png"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/portal"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/vm"
)

func vmProfile(g *realtest.Guest, probe string) Profile {
	return Profile{Name: "vm", Title: "Tiny VM", Kind: "vm", CPUs: 1, MaxCPUs: 2, MemoryMB: 256, MaxMemoryMB: 512,
		Lifetime: time.Hour, MaxLifetime: 2 * time.Hour,
		VM: &VMImage{Name: "tiny", Path: g.Master, Format: "qcow2", OS: "linux", Firmware: "bios",
			Kernel: g.Kernel, Initrd: g.Initrd, Append: realtest.GuestAppend(probe, false), RDP: true, SharePath: "~"}}
}

// TestVMInBrowser is a VM session through the whole gateway: the launch
// limits, the guest's console in headless Chromium through the vnc
// connector, the serial log, the owner's home shared into the guest, the
// admin monitor (screen dump, reset, power button; refused to a
// non-admin), the session saying it runs under emulation, and nothing left
// once the guest has powered off.
func TestVMInBrowser(t *testing.T) {
	needBrowser(t)
	g := realtest.BuildGuest(t)
	owner := realtest.Current(t)
	if os.Geteuid() == 0 {
		owner = realtest.TestUser(t)
	}
	// A file in the owner's home, which the guest mounts over 9p and prints.
	probe := fmt.Sprintf("airlock-vm-e2e-%d.txt", time.Now().UnixNano())
	realtest.WriteFile(t, owner, filepath.Join(owner.Home, probe), []byte("HOME-FILE-FOR-THE-GUEST\n"), 0o644)
	t.Cleanup(func() {
		os.Remove(filepath.Join(owner.Home, probe))
		os.Remove(filepath.Join(owner.Home, probe+".guest"))
	})
	p, err := portal.New()
	if err != nil {
		t.Fatal(err)
	}
	tg := startGateway(t, "", func(c *Config) {
		c.Portal = p
		c.Profiles = append(c.Profiles, vmProfile(g, probe))
	}, "alice", "admin")
	alice := tg.client().loginToken("alice")
	admin := tg.client().loginToken("admin")

	for _, req := range []map[string]any{{"profile": "vm", "cpus": 3}, {"profile": "vm", "memory_mb": 1024}} {
		if code, body := alice.do("POST", "/api/v1/sessions", req, nil); code != 400 || !strings.Contains(body, "over_limit") {
			t.Errorf("launch %v: %d %s, want 400 over_limit", req, code, body)
		}
	}
	if code, body := alice.do("POST", "/api/v1/sessions", map[string]any{"profile": "vm", "keep_disk": true}, nil); code != 400 || !strings.Contains(body, "not_allowed") {
		t.Errorf("keep_disk on an image that does not allow it: %d %s", code, body)
	}

	br := startBrowser(t, "e2e.mjs", map[string]string{"mode": "vm", "profile": "vm", "base": tg.url, "password": testPassword, "owner": "alice"})
	wait := func(step string) map[string]any { t.Helper(); return br.wait(step, 180*time.Second) }
	drawn := wait("vm-drawn")
	id, _ := drawn["id"].(string)
	if drawn["accel"] != "tcg" && drawn["accel"] != "kvm" {
		t.Errorf("the session page shows accel %v", drawn["accel"])
	}
	var s struct {
		State, Accel string
	}
	alice.do("GET", "/api/v1/sessions/"+id, nil, &s)
	if want := map[bool]string{true: "kvm", false: "tcg"}[vm.KVMUsable(owner.UID, nil)]; s.Accel != want || s.State != "ready" {
		t.Errorf("session %s: state %s, accel %q; want ready, %q", id, s.State, s.Accel, want)
	}

	scratch := filepath.Join(tg.stateDir, "sessions", id, "scratch")
	serial := func() string {
		b, _ := os.ReadFile(filepath.Join(scratch, "tmp", "serial.log"))
		return string(b)
	}
	if err := realtest.WaitFor(120*time.Second, func() error {
		if !strings.Contains(serial(), realtest.GuestDone) {
			return fmt.Errorf("guest not done; serial log:\n%s", serial())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	br.send("banner")
	wait("vm-banner")
	log := serial()
	for _, want := range []string{realtest.GuestBanner, "SHARE-FILE: HOME-FILE-FOR-THE-GUEST", "SHARE-WRITE: ok", "NET 10.0.2.2:3389: closed", "NET 1.1.1.1:80: closed"} {
		if !strings.Contains(log, want) {
			t.Errorf("serial log lacks %q:\n%s", want, log)
		}
	}

	// The monitor: admins only, and not for sessions that are not VMs.
	if code, body := alice.do("POST", "/api/v1/admin/sessions/"+id+"/vm/screendump", nil, nil); code != 403 {
		t.Errorf("a non-admin's screendump: %d %s", code, body)
	}
	if code, _ := admin.do("POST", "/api/v1/admin/sessions/"+id+"/vm/eject", nil, nil); code != 404 {
		t.Errorf("an unknown action: %d", code)
	}
	code, body := admin.do("POST", "/api/v1/admin/sessions/"+id+"/vm/screendump", nil, nil)
	if code != 200 {
		t.Fatalf("screendump: %d %s", code, body)
	}
	img, err := png.Decode(bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatalf("screendump is not a PNG: %v", err)
	}
	// Lit pixels in the middle of the screen, where the guest's lines are
	// and the firmware's are not.
	lit := 0
	b := img.Bounds()
	for y := b.Min.Y + b.Dy()*45/100; y < b.Min.Y+b.Dy()*75/100; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if r, g, bl, _ := img.At(x, y).RGBA(); r+g+bl > 3*0x6000 {
				lit++
			}
		}
	}
	t.Logf("screendump %dx%d, %d lit pixels where the guest writes", b.Dx(), b.Dy(), lit)
	if lit < 1000 {
		t.Errorf("the screen dump shows nothing of the guest (%d lit pixels)", lit)
	}
	os.WriteFile(filepath.Join(screenshots(t), "vm-screendump.png"), []byte(body), 0o644)
	if entries, _ := os.ReadDir(filepath.Join(scratch, "tmp")); len(entries) > 0 {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "screendump-") {
				t.Errorf("screen dump %s left in the scratch dir", e.Name())
			}
		}
	}
	// The same through `airlock vm monitor`, as an admin would: a screen
	// dump, a non-admin refused, and a reset, seen as a second boot.
	monitor := func(token string, args ...string) (string, error) {
		tf := filepath.Join(t.TempDir(), "token")
		os.WriteFile(tf, []byte(token+"\n"), 0o600)
		argv := append([]string{"vm", "monitor", "--url", tg.url, "--ca", filepath.Join(tg.stateDir, "tls.crt"), "--token-file", tf}, args...)
		out, err := exec.Command(realtest.Binary(t), argv...).CombinedOutput()
		return string(out), err
	}
	shot := filepath.Join(t.TempDir(), "screen.png")
	if out, err := monitor(admin.token, id, "screendump", shot); err != nil {
		t.Errorf("airlock vm monitor screendump: %v: %s", err, out)
	} else if f, err := os.Open(shot); err != nil {
		t.Error(err)
	} else if _, err := png.Decode(f); err != nil {
		t.Errorf("the CLI's screen dump is not a PNG: %v", err)
	}
	if out, err := monitor(alice.token, id, "reset"); err == nil || !strings.Contains(out, "admins only") {
		t.Errorf("a non-admin's reset through the CLI: %v: %s", err, out)
	}
	if out, err := monitor(admin.token, id, "reset"); err != nil {
		t.Fatalf("airlock vm monitor reset: %v: %s", err, out)
	}
	if err := realtest.WaitFor(120*time.Second, func() error {
		if n := strings.Count(serial(), realtest.GuestBanner); n < 2 {
			return fmt.Errorf("%d boots in the serial log", n)
		}
		return nil
	}); err != nil {
		t.Errorf("reset: %v\n%s", err, serial())
	}

	// The power button: the guest powers off, QEMU exits, the session ends.
	if err := realtest.WaitFor(120*time.Second, func() error {
		if n := strings.Count(serial(), realtest.GuestDone); n < 2 {
			return fmt.Errorf("the rebooted guest is not done (%d)", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The guest's watcher opens the button's device in the background just
	// as the guest says it is done, so a press can come before anyone
	// reads it (a loaded TCG guest is slow): press until the session ends,
	// within a deadline. QEMU exits with 0 only when the guest powers off.
	var ended sessionOut
	if err := realtest.WaitFor(120*time.Second, func() error {
		// A press can also find QEMU already gone (409, or no monitor):
		// what counts is the session's end.
		pressErr := ""
		if out, err := monitor(admin.token, id, "powerdown"); err != nil {
			pressErr = fmt.Sprintf(" (last press: %v: %s)", err, out)
		}
		return realtest.WaitFor(5*time.Second, func() error {
			ended = sessionOut{}
			if code, body := alice.do("GET", "/api/v1/sessions/"+id, nil, &ended); code != 200 {
				return fmt.Errorf("get: %d %s", code, body)
			}
			if ended.State != "ended" {
				return fmt.Errorf("session %s is %s after the power button%s", id, ended.State, pressErr)
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ended.Reason, "exited with code 0") {
		t.Errorf("after the power button: reason %q", ended.Reason)
	}
	br.send("ended")
	m := wait("stopped")
	if errs, _ := m["errors"].([]any); len(errs) > 0 {
		t.Errorf("page errors: %v", errs)
	}
	// Nothing left: no QEMU (its argv names the session), no overlay or
	// scratch directory, no session directory.
	if err := realtest.WaitFor(30*time.Second, func() error {
		return realtest.Gone("airlock-"+id, scratch, filepath.Join(tg.stateDir, "sessions", id))
	}); err != nil {
		t.Error(err)
	}
	if code, _ := admin.do("POST", "/api/v1/admin/sessions/"+id+"/vm/reset", nil, nil); code != 409 {
		t.Errorf("reset of an ended session: %d, want 409", code)
	}
}

// TestVMRefusedAtLaunch: a profile whose image is missing gives a session
// that ends at once with the reason, not one that hangs in starting.
func TestVMRefusedAtLaunch(t *testing.T) {
	g := realtest.BuildGuest(t)
	tg := startGateway(t, "", func(c *Config) {
		p := vmProfile(g, "none")
		p.VM.Path = "/nonexistent/image.qcow2"
		c.Profiles = append(c.Profiles, p)
	}, "alice")
	alice := tg.client().loginToken("alice")
	var created sessionOut
	if code, body := alice.do("POST", "/api/v1/sessions", map[string]any{"profile": "vm"}, &created); code != 201 {
		t.Fatalf("launch: %d %s", code, body)
	}
	s := alice.waitState(created.ID, "ended")
	if !strings.Contains(s.Reason, "/nonexistent/image.qcow2") || !strings.Contains(s.Reason, "no such file") {
		t.Errorf("reason %q does not say the image is missing", s.Reason)
	}
	if code, _ := alice.do("GET", "/api/v1/profiles", nil, nil); code != http.StatusOK {
		t.Errorf("profiles: %d", code)
	}
}

// TestVMKeepDisk: a launch that asks to keep its disk, on an image that
// allows it, gets its overlay in the owner's home, where it stays after
// the session; the scratch directory goes as always.
func TestVMKeepDisk(t *testing.T) {
	g := realtest.BuildGuest(t)
	owner := realtest.Current(t)
	if os.Geteuid() == 0 {
		owner = realtest.TestUser(t)
	}
	p := vmProfile(g, "none")
	p.VM.Name = fmt.Sprintf("keep-%d", time.Now().UnixNano())
	p.VM.PersistentAllowed = true
	kept := filepath.Join(owner.Home, persistentSubdir, p.VM.Name+".qcow2")
	t.Cleanup(func() { os.Remove(kept) })
	tg := startGateway(t, "", func(c *Config) { c.Profiles = append(c.Profiles, p) }, "alice")
	alice := tg.client().loginToken("alice")
	var created sessionOut
	if code, body := alice.do("POST", "/api/v1/sessions", map[string]any{"profile": "vm", "keep_disk": true}, &created); code != 201 {
		t.Fatalf("launch: %d %s", code, body)
	}
	alice.waitState(created.ID, "ready")
	if _, err := os.Stat(kept); err != nil {
		t.Fatalf("no kept disk: %v", err)
	}
	scratch := filepath.Join(tg.stateDir, "sessions", created.ID, "scratch")
	if _, err := os.Stat(filepath.Join(scratch, "tmp", "disk.qcow2")); err == nil {
		t.Error("a throwaway overlay beside the kept one")
	}
	if code, body := alice.do("DELETE", "/api/v1/sessions/"+created.ID, nil, nil); code != 202 {
		t.Fatalf("stop: %d %s", code, body)
	}
	alice.waitState(created.ID, "ended")
	if err := realtest.WaitFor(30*time.Second, func() error { return realtest.Gone("airlock-"+created.ID, scratch) }); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(kept); err != nil {
		t.Errorf("the kept disk went with the session: %v", err)
	}
}
