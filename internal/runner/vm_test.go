package runner_test

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/vm"
)

// vmSession is a VM session's spec and where its files are.
type vmSession struct {
	spec    map[string]any
	vm      map[string]any
	marker  string
	scratch string
	sock    string
}

func newVMSession(t *testing.T, m mode, g *realtest.Guest, name string) *vmSession {
	marker := fmt.Sprintf("vm-%s-%d", name, time.Now().UnixNano())
	base := realtest.SharedDir(t, m.owner)
	key := filepath.Join(base, "key")
	realtest.WriteFile(t, m.owner, key, []byte("0123456789abcdef0123456789abcdef"), 0o600)
	s := &vmSession{marker: marker, scratch: filepath.Join(base, "scratch"), sock: filepath.Join(base, "sockets", "console.sock")}
	// The marker is the VM's name, so it is in QEMU's argv (-name).
	s.vm = map[string]any{
		"name": marker, "image": g.Master, "format": "qcow2", "os": "linux",
		"kernel": g.Kernel, "initrd": g.Initrd, "append": realtest.GuestAppend("none", false),
		"cpus": 1, "memory_mb": 256, "rdp": true,
	}
	s.spec = map[string]any{
		"id": marker, "owner": m.owner.Name, "vm": s.vm,
		"connectors":      []any{map[string]any{"name": "console", "kind": "vnc", "target": "unix:/tmp/vnc.sock", "listen": "unix:" + s.sock}},
		"ticket_key_file": key, "scratch_dir": s.scratch, "grace": "3s",
	}
	return s
}

func (s *vmSession) serial() string {
	b, _ := os.ReadFile(filepath.Join(s.scratch, "tmp", "serial.log"))
	return string(b)
}

// gone waits until nothing of the session is left: no process naming it
// (init, QEMU, the connector, the janitor), no scratch directory (with the
// overlay, the serial log and the monitor socket in it), no socket.
func (s *vmSession) gone(t *testing.T) {
	t.Helper()
	if err := realtest.WaitFor(30*time.Second, func() error {
		return realtest.Gone(s.marker, s.scratch, s.sock)
	}); err != nil {
		t.Fatal(err)
	}
}

func sha(t *testing.T, path string) string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return fmt.Sprintf("%x", h.Sum(nil))
}

// TestVMSession boots the test guest in a seal under TCG and checks what
// the guest saw: the master's marker through the overlay, the owner's
// file through the 9p share (read-only here: the guest's write fails),
// and its network probes: its own loopback answers (so the probe works)
// but the seal's loopback behind 10.0.2.2, QEMU's DNS and the outside do
// not (restrict=on). As root it also checks, from inside the seal's
// network namespace, that the guest's RDP port is forwarded to the seal's
// 127.0.0.1:3389 and nowhere else. The master is unchanged afterwards,
// and nothing is left once the session is stopped.
func TestVMSession(t *testing.T) {
	g := realtest.BuildGuest(t)
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			before := sha(t, g.Master)
			s := newVMSession(t, m, g, "boot")
			share := resultsDir(t, m.owner)
			realtest.WriteFile(t, m.owner, filepath.Join(share, "hello.txt"), []byte("HOST-FILE-"+s.marker+"\n"), 0o644)
			s.vm["share"] = map[string]any{"path": share, "tag": "home", "read_only": true}
			vol := resultsDir(t, m.owner)
			realtest.WriteFile(t, m.owner, filepath.Join(vol, "hello.txt"), []byte("VOLUME-FILE-"+s.marker+"\n"), 0o644)
			s.vm["volumes"] = []any{map[string]any{"path": vol, "tag": "data", "read_only": true}}
			s.vm["append"] = realtest.GuestAppend("hello.txt", false)
			start := time.Now()
			r := realtest.StartRunner(t, s.spec, realtest.RunOptions{As: m.as})
			t.Logf("ready (checks, overlay, QEMU's VNC display up) in %s", time.Since(start).Round(time.Millisecond))
			if r.Ready.Accel != "tcg" && r.Ready.Accel != "kvm" {
				t.Errorf("ready event says accel %q", r.Ready.Accel)
			}
			if _, err := os.Stat(filepath.Join(s.scratch, "tmp", "disk.qcow2")); err != nil {
				t.Errorf("no overlay in the scratch dir: %v", err)
			}
			if err := realtest.WaitFor(120*time.Second, func() error {
				if !strings.Contains(s.serial(), realtest.GuestDone) {
					return fmt.Errorf("guest not done; serial log:\n%s", s.serial())
				}
				return nil
			}); err != nil {
				t.Fatalf("%v\nrunner stderr:\n%s", err, r.Stderr.String())
			}
			t.Logf("guest booted and probed in %s (accel %s)", time.Since(start).Round(100*time.Millisecond), r.Ready.Accel)
			log := s.serial()
			for _, want := range []string{
				realtest.GuestBanner,
				"DISK: " + realtest.GuestDiskMarker,
				"DISK-WRITE: ok",
				"SHARE-FILE: HOST-FILE-" + s.marker,
				"SHARE-WRITE: refused",
				"VOLUME-FILE: VOLUME-FILE-" + s.marker,
				"NET 127.0.0.1:3389: RDP-PONG",
				"NET 10.0.2.2:3389: closed",
				"NET 10.0.2.2:22: closed",
				"NET 10.0.2.3:53: closed",
				"NET 1.1.1.1:80: closed",
			} {
				if !strings.Contains(log, want) {
					t.Errorf("serial log lacks %q", want)
				}
			}
			t.Logf("serial log:\n%s", log)
			if _, err := os.Stat(filepath.Join(share, "hello.txt.guest")); err == nil {
				t.Error("the guest wrote to a read-only share")
			}
			if os.Geteuid() == 0 {
				checkRDPForward(t, s.marker)
			}
			r.Signal(syscall.SIGTERM)
			if ev := r.WaitExit(t, 30*time.Second); ev.Reason != "stopped by SIGTERM" {
				t.Errorf("exit reason %q", ev.Reason)
			}
			s.gone(t)
			if after := sha(t, g.Master); after != before {
				t.Errorf("the master changed: sha256 %s before, %s after", before, after)
			}
		})
	}
}

// TestVMWindowsShare boots the guest as a windows machine: IDE disk, e1000
// network and the owner's folder over QEMU's SMB share (smbd started by
// QEMU inside the seal, reached at 10.0.2.4 even with restrict=on). The
// guest reads a host file and writes one back.
func TestVMWindowsShare(t *testing.T) {
	g := realtest.BuildGuest(t)
	if _, err := exec.LookPath("smbd"); err != nil {
		if _, err := os.Stat("/usr/sbin/smbd"); err != nil {
			t.Skip("smbd not installed (Debian: samba)")
		}
	}
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			s := newVMSession(t, m, g, "smb")
			share := resultsDir(t, m.owner)
			realtest.WriteFile(t, m.owner, filepath.Join(share, "hello.txt"), []byte("SMB-FILE-"+s.marker+"\n"), 0o644)
			s.vm["os"] = "windows"
			s.vm["share"] = map[string]any{"path": share}
			s.vm["append"] = realtest.GuestAppend("hello.txt", true)
			r := realtest.StartRunner(t, s.spec, realtest.RunOptions{As: m.as})
			if err := realtest.WaitFor(120*time.Second, func() error {
				if !strings.Contains(s.serial(), realtest.GuestDone) {
					return fmt.Errorf("guest not done; serial log:\n%s", s.serial())
				}
				return nil
			}); err != nil {
				t.Fatalf("%v\nrunner stderr:\n%s", err, r.Stderr.String())
			}
			log := s.serial()
			t.Logf("serial log:\n%s", log)
			for _, want := range []string{"DISK: " + realtest.GuestDiskMarker, "SHARE-FILE: SMB-FILE-" + s.marker, "SHARE-WRITE: ok", "NET 10.0.2.2:3389: closed"} {
				if !strings.Contains(log, want) {
					t.Errorf("serial log lacks %q", want)
				}
			}
			if b, err := os.ReadFile(filepath.Join(share, "hello.txt.guest")); err != nil || strings.TrimSpace(string(b)) != "from-guest" {
				t.Errorf("the guest's file on the host: %q, %v", b, err)
			}
			// smbd needs UNIX datagram sockets, which the unix guard lets
			// this session (alone) make; ready must say what that costs.
			if !slices.ContainsFunc(r.Ready.Warnings, func(w string) bool { return strings.Contains(w, "datagram") }) {
				t.Errorf("ready of a Windows share session has no datagram warning: %q", r.Ready.Warnings)
			}
			r.Signal(syscall.SIGTERM)
			r.WaitExit(t, 30*time.Second)
			s.gone(t)
		})
	}
}

// checkRDPForward connects to 127.0.0.1:3389 in QEMU's network namespace
// (the seal's), where the guest's port 3389 must answer, and to the same
// address in the host's, where it must not.
func checkRDPForward(t *testing.T, marker string) {
	t.Helper()
	pid := qemuPid(marker)
	if pid == 0 {
		t.Fatal("qemu not found")
	}
	out, err := exec.Command("nsenter", "--net=/proc/"+fmt.Sprint(pid)+"/ns/net", "busybox", "nc", "-w", "5", "127.0.0.1", "3389").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "RDP-PONG") {
		t.Errorf("the guest's port 3389 is not on the seal's loopback: %v %s", err, out)
	}
	if out, err := exec.Command("busybox", "nc", "-w", "2", "127.0.0.1", "3389").CombinedOutput(); strings.Contains(string(out), "RDP-PONG") {
		t.Errorf("the guest's port 3389 answers on the host: %v", err)
	}
}

func qemuPid(marker string) int {
	for _, p := range realtest.ProcessesOf(marker) {
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
		if strings.HasPrefix(filepath.Base(strings.SplitN(string(cmd), "\x00", 2)[0]), "qemu-system") {
			return p
		}
	}
	return 0
}

// TestVMTeardown: when QEMU crashes or the runner is killed, the session
// ends and leaves nothing: no QEMU, no overlay, no scratch directory.
func TestVMTeardown(t *testing.T) {
	g := realtest.BuildGuest(t)
	m := modes(t)[0]
	for _, tc := range []struct {
		name   string
		end    func(t *testing.T, r *realtest.Runner, s *vmSession)
		reason string
	}{
		{"qemu-crash", func(t *testing.T, r *realtest.Runner, s *vmSession) {
			pid := qemuPid(s.marker)
			if pid == 0 {
				t.Fatal("qemu not found")
			}
			syscall.Kill(pid, syscall.SIGKILL)
		}, "workload workload exited with code 137"},
		{"qemu-fails", nil, "vfio-pci,host=0000:00:1f.7: vfio /sys/bus/pci/devices/0000:00:1f.7: no such host device"},
		{"runner-sigkill", func(t *testing.T, r *realtest.Runner, s *vmSession) {
			r.Signal(syscall.SIGKILL)
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newVMSession(t, m, g, tc.name)
			if tc.end == nil {
				// A GPU that is not there: QEMU itself fails, and the
				// session ends with QEMU's words.
				s.vm["gpus"] = []string{"0000:00:1f.7"}
				r := realtest.StartRunner(t, s.spec, realtest.RunOptions{As: m.as, NoWaitReady: true})
				if ev := r.WaitExit(t, 30*time.Second); ev.Code == nil || *ev.Code == 0 || !strings.Contains(ev.Reason, tc.reason) {
					t.Errorf("exit %+v, want a reason with %q", ev, tc.reason)
				} else {
					t.Logf("reason: %s", ev.Reason)
				}
				s.gone(t)
				return
			}
			r := realtest.StartRunner(t, s.spec, realtest.RunOptions{As: m.as})
			if _, err := os.Stat(filepath.Join(s.scratch, "tmp", "disk.qcow2")); err != nil {
				t.Fatalf("no overlay: %v", err)
			}
			tc.end(t, r, s)
			if tc.reason != "" {
				if ev := r.WaitExit(t, 30*time.Second); !strings.HasPrefix(ev.Reason, tc.reason) {
					t.Errorf("exit reason %q, want %q", ev.Reason, tc.reason)
				}
			}
			s.gone(t)
		})
	}
}

// TestVMRefusals: a bad image path, a corrupt image, an image that is not
// the format declared and a missing QEMU each end the session at once
// with a reason that says so, and leave nothing behind.
func TestVMRefusals(t *testing.T) {
	g := realtest.BuildGuest(t)
	m := modes(t)[0]
	dir := resultsDir(t, m.owner)
	corrupt := filepath.Join(dir, "corrupt.qcow2")
	b, _ := os.ReadFile(g.Master)
	// A qcow2 header cut short: qemu-img cannot open it. (Damage deeper in
	// an image is for `qemu-img check`, which `airlock images` runs.)
	realtest.WriteFile(t, m.owner, corrupt, b[:100], 0o644)
	realtest.Binary(t) // built before the clock starts
	for _, tc := range []struct {
		name string
		edit func(v map[string]any)
		want string
	}{
		{"missing image", func(v map[string]any) { v["image"] = filepath.Join(dir, "nope.qcow2") }, "no such file"},
		{"corrupt image", func(v map[string]any) { v["image"] = corrupt }, "unreadable or corrupt"},
		{"wrong format", func(v map[string]any) { v["image"] = g.MasterRaw }, "declared qcow2, but qemu-img says it is raw"},
		{"missing qemu", func(v map[string]any) { v["qemu"] = "qemu-system-nonexistent" }, "qemu-system-nonexistent not found"},
		{"uefi without OVMF", func(v map[string]any) { v["firmware"] = "uefi" }, "OVMF is not installed"},
		{"missing share", func(v map[string]any) { v["share"] = map[string]any{"path": filepath.Join(dir, "nope")} }, "shared folder"},
	} {
		if tc.name == "uefi without OVMF" {
			if _, _, err := vm.FindOVMF(); err == nil {
				continue
			}
		}
		t.Run(strings.ReplaceAll(tc.name, " ", "-"), func(t *testing.T) {
			s := newVMSession(t, m, g, "refuse")
			tc.edit(s.vm)
			start := time.Now()
			r := realtest.StartRunner(t, s.spec, realtest.RunOptions{As: m.as, NoWaitReady: true})
			ev := r.WaitExit(t, 20*time.Second)
			if ev.Event != "exit" || !strings.Contains(ev.Reason, tc.want) || ev.Code == nil || *ev.Code != 1 {
				t.Errorf("got %+v, want an exit with code 1 and a reason containing %q", ev, tc.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("refusal took %s", d)
			}
			t.Logf("reason: %s", ev.Reason)
			s.gone(t)
		})
	}
}

// TestVMPersistent: with a persistent directory the overlay outlives the
// session and the next session of the same image uses it again; an
// overlay of another master is refused, not replaced.
func TestVMPersistent(t *testing.T) {
	g := realtest.BuildGuest(t)
	m := modes(t)[0]
	keep := filepath.Join(resultsDir(t, m.owner), "keep")
	s := newVMSession(t, m, g, "persist")
	s.vm["persistent_dir"] = keep
	overlay := filepath.Join(keep, s.marker+".qcow2")
	for i := range 2 {
		r := realtest.StartRunner(t, s.spec, realtest.RunOptions{As: m.as})
		if _, err := os.Stat(filepath.Join(s.scratch, "tmp", "disk.qcow2")); err == nil {
			t.Error("a throwaway overlay beside the persistent one")
		}
		st, err := os.Stat(overlay)
		if err != nil {
			t.Fatalf("session %d: no persistent overlay: %v", i, err)
		}
		if os.Geteuid() == 0 && int(st.Sys().(*syscall.Stat_t).Uid) != m.owner.UID {
			t.Errorf("the overlay is not the owner's")
		}
		r.Signal(syscall.SIGTERM)
		r.WaitExit(t, 30*time.Second)
		s.gone(t)
		if _, err := os.Stat(overlay); err != nil {
			t.Fatalf("session %d: the persistent overlay went with the session: %v", i, err)
		}
	}
	s.vm["image"], s.vm["format"] = g.MasterRaw, "raw"
	r := realtest.StartRunner(t, s.spec, realtest.RunOptions{As: m.as, NoWaitReady: true})
	if ev := r.WaitExit(t, 20*time.Second); !strings.Contains(ev.Reason, "is not an overlay of") {
		t.Errorf("an overlay of another master: %+v", ev)
	}
	s.gone(t)
}

// TestVMFormats: raw, vmdk and vdi masters (converted from the test disk)
// each get a qcow2 overlay that names them with their format, and QEMU
// starts on it.
func TestVMFormats(t *testing.T) {
	g := realtest.BuildGuest(t)
	m := modes(t)[0]
	dir := resultsDir(t, m.owner)
	for _, format := range []string{"raw", "vmdk", "vdi"} {
		t.Run(format, func(t *testing.T) {
			master := filepath.Join(dir, "master."+format)
			if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", format, g.MasterRaw, master).CombinedOutput(); err != nil {
				t.Fatalf("%v %s", err, out)
			}
			os.Chmod(master, 0o644)
			s := newVMSession(t, m, g, format)
			s.vm["image"], s.vm["format"] = master, format
			r := realtest.StartRunner(t, s.spec, realtest.RunOptions{As: m.as})
			in, err := (vm.Tools{}).Inspect(t.Context(), filepath.Join(s.scratch, "tmp", "disk.qcow2"))
			if err != nil || in.Format != "qcow2" || in.BackingFile != master || in.BackingFormat != format {
				t.Errorf("overlay %+v, %v", in, err)
			}
			r.Signal(syscall.SIGTERM)
			r.WaitExit(t, 30*time.Second)
			s.gone(t)
		})
	}
}

// TestVMISO boots from an ISO master: no overlay is made (the CD-ROM is
// read-only), the guest reads the image from its CD-ROM drive, and the
// image is unchanged.
func TestVMISO(t *testing.T) {
	g := realtest.BuildGuest(t)
	m := modes(t)[0]
	before := sha(t, g.ISO)
	s := newVMSession(t, m, g, "iso")
	s.vm["image"], s.vm["format"], s.vm["append"] = g.ISO, "iso", realtest.GuestAppendCD("none")
	r := realtest.StartRunner(t, s.spec, realtest.RunOptions{As: m.as})
	if _, err := os.Stat(filepath.Join(s.scratch, "tmp", "disk.qcow2")); err == nil {
		t.Error("an overlay for an ISO")
	}
	if err := realtest.WaitFor(120*time.Second, func() error {
		if !strings.Contains(s.serial(), realtest.GuestDone) {
			return fmt.Errorf("guest not done; serial log:\n%s", s.serial())
		}
		return nil
	}); err != nil {
		t.Fatalf("%v\nrunner stderr:\n%s", err, r.Stderr.String())
	}
	log := s.serial()
	for _, want := range []string{"CDROM: " + realtest.GuestISOMarker, "DISK: none"} {
		if !strings.Contains(log, want) {
			t.Errorf("serial log lacks %q:\n%s", want, log)
		}
	}
	r.Signal(syscall.SIGTERM)
	r.WaitExit(t, 30*time.Second)
	s.gone(t)
	if sha(t, g.ISO) != before {
		t.Error("the ISO changed")
	}
}
