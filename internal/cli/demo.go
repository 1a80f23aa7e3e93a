package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"

	"github.com/airlock-hpc/airlock/internal/config"
	"github.com/airlock-hpc/airlock/internal/vm"
)

// demoJupyter is the demo's app profile: Debian's Jupyter notebook on the
// session's loopback port. It needs no token of its own: only the
// gateway's connector reaches the port, and the gateway lets in only the
// owner and those they share with. The Host and Origin a browser sends
// are the app's own host on the gateway, which the notebook would refuse
// as remote without allow_remote_access.
var demoJupyter = []string{"jupyter-notebook", "--no-browser", "--ip=127.0.0.1", "--port={port}",
	"--NotebookApp.base_url={prefix}", "--NotebookApp.token=", "--NotebookApp.password=",
	"--NotebookApp.allow_remote_access=True", "--NotebookApp.open_browser=False"}

// demoGuestInit is the demo VM's /init: busybox as the whole userland, the
// owner's folder mounted over 9p, a shell on the console, and the power
// button (the portal's Stop) powering off.
const demoGuestInit = `#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in virtio_pci virtio_blk virtio_net 9pnet_virtio 9p evdev button; do modprobe $m 2>/dev/null; done
hostname airlock-demo
ip link set lo up
mkdir -p /home/you /tmp /root
if mount -t 9p -o trans=virtio,version=9p2000.L home /home/you 2>/dev/null; then
  share="your folder (the files of your home on the node) is /home/you"
else
  share="there is no shared folder"
fi
for e in /sys/class/input/event*; do
  if grep -q "Power Button" $e/device/name 2>/dev/null; then
    (dd if=/dev/input/${e##*/} bs=24 count=1 of=/dev/null 2>/dev/null; sync; poweroff -f) &
    break
  fi
done
cat > /etc/motd <<MOTD

  airlock demo VM: Debian's kernel and busybox, booted by QEMU in a seal.
  It has a network card but no route anywhere; ${share}.
  'poweroff -f' (or Stop in the portal) ends the session.

MOTD
echo "airlock demo VM: ready; ${share}" >/dev/ttyS0
export HOME=/root PS1='airlock-demo:\w# '
while :; do
  clear >/dev/tty1 2>&1
  cat /etc/motd >/dev/tty1
  setsid sh -c 'exec sh -l </dev/tty1 >/dev/tty1 2>&1'
done
`

// demoGuestScript builds the demo guest: the kernel and initramfs, and a
// small empty disk the image's master is (sessions write to overlays).
var demoGuestScript = vm.GuestScript(demoGuestInit) + `rm -f disk.qcow2
qemu-img create -q -f qcow2 disk.qcow2 64M
chmod 644 vmlinuz initrd.gz disk.qcow2
`

// demoCacheDir is where the demo guest is built once: readable by the
// accounts sessions run as, and not under /tmp (the seal has its own).
// AIRLOCK_DEMO_CACHE, when set, is the place instead.
func demoCacheDir(getenv func(string) string) (string, error) {
	if d := getenv("AIRLOCK_DEMO_CACHE"); d != "" {
		if !filepath.IsAbs(d) {
			return "", fmt.Errorf("AIRLOCK_DEMO_CACHE=%s: not an absolute path", d)
		}
		return d, nil
	}
	if os.Geteuid() == 0 {
		return "/var/cache/airlock/demo-vm", nil
	}
	if d := getenv("XDG_CACHE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "airlock", "demo-vm"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("demo VM cache: %w", err)
	}
	return filepath.Join(home, ".cache", "airlock", "demo-vm"), nil
}

// addDemoProfiles adds the embedded demo's other kinds beside its desktop:
// a Jupyter notebook (an app, on its own origin) when Debian's
// jupyter-notebook is installed, and a small Linux VM when QEMU is, its
// guest built from Debian packages at the first start (about ten seconds
// and a 70 MB kernel package, then cached). What cannot be offered is logged with the reason: the
// desktop alone is a working demo, so none of this stops the gateway.
func addDemoProfiles(ctx context.Context, cfg *config.Config, getenv func(string) string, log *slog.Logger) {
	var doc struct {
		Profiles []map[string]any `json:"profiles"`
		Images   []map[string]any `json:"images,omitempty"`
	}
	if _, err := exec.LookPath(demoJupyter[0]); err == nil {
		doc.Profiles = append(doc.Profiles, map[string]any{
			"name": "jupyter", "title": "Jupyter notebook", "kind": "app",
			"description": "Debian's Jupyter notebook server, on a web origin of its own; only you (and those you share it with) can open it.",
			"app":         map[string]any{"command": demoJupyter, "port": 8888},
		})
	} else {
		log.InfoContext(ctx, "demo: no Jupyter profile", "reason", "jupyter-notebook is not installed (Debian: jupyter-notebook)")
	}
	if img, err := demoGuest(ctx, getenv, log); err == nil {
		doc.Images = append(doc.Images, img)
		doc.Profiles = append(doc.Profiles, map[string]any{
			"name": "vm", "title": "Linux VM", "kind": "vm", "vm": map[string]any{"image": "demo-linux"},
			"description": fmt.Sprintf("A small Linux virtual machine (Debian's kernel and busybox, %s, booting in seconds with KVM, under a minute without), its console in your browser.", img["size"]),
		})
		delete(img, "size")
	} else {
		log.WarnContext(ctx, "demo: no VM profile", "reason", err)
	}
	if len(doc.Profiles) == 0 {
		return
	}
	// Through the config's own parser, so the demo's profiles get every
	// default and check a file's profiles get.
	b, err := json.Marshal(doc)
	if err != nil {
		log.ErrorContext(ctx, "demo profiles", "error", err)
		return
	}
	extra, err := config.Parse("the demo's profiles", b)
	if err != nil {
		log.ErrorContext(ctx, "demo profiles", "error", err)
		return
	}
	// A file's own profile or image of the same name (serve --demo) wins.
	for _, p := range extra.Profiles {
		if slices.ContainsFunc(cfg.Profiles, func(q config.Profile) bool { return q.Name == p.Name }) {
			log.WarnContext(ctx, "demo: profile left out", "profile", p.Name, "reason", "the configuration has a profile of that name")
			continue
		}
		if p.VM != nil && slices.ContainsFunc(cfg.Images, func(i config.Image) bool { return i.Name == p.VM.Image }) {
			log.WarnContext(ctx, "demo: profile left out", "profile", p.Name, "reason", "the configuration has an image named "+p.VM.Image)
			continue
		}
		cfg.Profiles = append(cfg.Profiles, p)
		if p.VM != nil {
			cfg.Images = append(cfg.Images, extra.Images...)
		}
	}
}

// demoGuest builds (once) the demo VM's guest and returns its image entry,
// with "size" for the profile's description.
func demoGuest(ctx context.Context, getenv func(string) string, log *slog.Logger) (map[string]any, error) {
	for _, p := range []string{"qemu-system-x86_64", "qemu-img", "apt-cache", "apt-get", "dpkg-deb", "depmod", "busybox"} {
		if _, err := exec.LookPath(p); err != nil {
			return nil, fmt.Errorf("%s is not installed (make run installs it)", p)
		}
	}
	dir, err := demoCacheDir(getenv)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, "disk.qcow2")); err != nil {
		log.InfoContext(ctx, "demo: building the VM profile's guest from Debian packages (once)", "dir", dir)
	}
	if err := vm.BuildCached(ctx, dir, demoGuestScript); err != nil {
		return nil, err
	}
	var size int64
	for _, f := range []string{"vmlinuz", "initrd.gz"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			return nil, fmt.Errorf("demo guest: %w", err)
		}
		size += fi.Size()
	}
	return map[string]any{
		"name": "demo-linux", "path": filepath.Join(dir, "disk.qcow2"), "format": "qcow2", "os": "linux",
		"kernel": filepath.Join(dir, "vmlinuz"), "initrd": filepath.Join(dir, "initrd.gz"),
		"append": "console=tty1 quiet", "memory": map[string]any{"default": "256M", "max": "1G"},
		"share": map[string]any{"path": "~"},
		"size":  fmt.Sprintf("%.0f MB", float64(size)/1e6),
	}, nil
}
