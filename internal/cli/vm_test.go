package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/airlock-hpc/airlock/internal/config"
	"github.com/airlock-hpc/airlock/internal/realtest"
)

// TestImagesCommand runs `airlock images` on real files: a good image, one
// declared raw that is qcow2, a missing one and a qcow2 whose header opens
// but whose tables are cut off (only qemu-img check sees that). Each
// failure is named and the exit status is 1.
func TestImagesCommand(t *testing.T) {
	for _, p := range []string{"qemu-img", "qemu-system-x86_64"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s not installed", p)
		}
	}
	// Not under /tmp, which the config refuses for images.
	dir := realtest.OutsideTmp(t, "images-")
	good := filepath.Join(dir, "good.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", good, "1G").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	b, _ := os.ReadFile(good)
	os.WriteFile(filepath.Join(dir, "cut.qcow2"), b[:200], 0o644)
	cfg := filepath.Join(dir, "airlock.yaml")
	os.WriteFile(cfg, []byte(`
images:
  - {name: good, path: `+good+`}
  - {name: mislabelled, path: `+good+`, format: raw}
  - {name: missing, path: `+filepath.Join(dir, "missing.qcow2")+`}
  - {name: cut, path: `+filepath.Join(dir, "cut.qcow2")+`}
`), 0o644)
	code, stdout, stderr := runCLI(t, "", "images", "--config", cfg)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	for _, want := range []string{
		"image mislabelled: image " + good + ": declared raw, but qemu-img says it is qcow2",
		"image missing: image: stat " + dir + "/missing.qcow2: no such file",
		"image cut: qemu-img check",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "image good:") {
		t.Errorf("the good image failed:\n%s", stderr)
	}
	lines := strings.Split(stdout, "\n")
	if len(lines) < 5 || !strings.HasPrefix(lines[1], "good ") || !strings.HasSuffix(strings.TrimSpace(lines[1]), "ok") || !strings.Contains(lines[1], "1G") {
		t.Errorf("table:\n%s", stdout)
	}

	os.WriteFile(cfg, []byte("images: [{name: good, path: "+good+"}]\n"), 0o644)
	if code, stdout, stderr := runCLI(t, "", "images", "--config", cfg); code != 0 {
		t.Errorf("all good: exit %d\n%s%s", code, stdout, stderr)
	}
}

func TestVMCommandUsage(t *testing.T) {
	for _, args := range [][]string{{"vm"}, {"vm", "monitor"}, {"vm", "monitor", "s-1", "screendump"}, {"vm", "monitor", "s-1", "reset", "x.png"}} {
		if code, _, _ := runCLI(t, "", args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	t.Setenv("AIRLOCK_TOKEN", "")
	if code, _, stderr := runCLI(t, "", "vm", "monitor", "s-1", "reset"); code != 1 || !strings.Contains(stderr, "no token") {
		t.Errorf("without a token: %d %s", code, stderr)
	}
}

// TestWithImage: a vm profile gets its image, and the image's CPU and
// memory defaults and maximums become the session's limits.
func TestWithImage(t *testing.T) {
	c, err := config.Parse("t.yaml", []byte(`
images:
  - {name: w, path: /srv/w.qcow2, os: windows, cpus: {default: 2, max: 8}, memory: {default: 4G, max: 16G}, rdp: true,
     persistent_allowed: true, gpu: ["0000:01:00.0"]}
profiles:
  - {name: win, kind: vm, vm: {image: w}}
  - {name: desk, kind: desktop}
`))
	if err != nil {
		t.Fatal(err)
	}
	g := withImage(profileFromConfig(c.Profiles[0]), c.Profiles[0], c.Images)
	if g.VM == nil || g.VM.Path != "/srv/w.qcow2" || g.VM.OS != "windows" || !g.VM.RDP || !g.VM.PersistentAllowed || g.VM.SharePath != "~" ||
		g.CPUs != 2 || g.MaxCPUs != 8 || g.MemoryMB != 4096 || g.MaxMemoryMB != 16384 || len(g.VM.GPUs) != 1 {
		t.Errorf("got %+v %+v", g, g.VM)
	}
	if d := withImage(profileFromConfig(c.Profiles[1]), c.Profiles[1], c.Images); d.VM != nil {
		t.Errorf("a desktop got an image")
	}
}
