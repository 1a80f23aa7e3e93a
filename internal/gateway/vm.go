package gateway

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
	"github.com/airlock-hpc/airlock/internal/vm"
)

// VMImage is what a vm profile boots: one of the config's images.
type VMImage struct {
	Name   string
	Path   string // master image, only ever read
	Format string // qcow2, raw, vmdk, vdi or iso
	OS     string // windows, linux or other
	// Firmware is bios or uefi.
	Firmware               string
	Kernel, Initrd, Append string
	// RDP: the guest serves RDP on port 3389, forwarded to the seal's
	// loopback.
	RDP bool
	// RDPPassword: each session gets a one-time password for the guest
	// (rdpPassword), handed to it as an SMBIOS OEM string.
	RDPPassword bool
	// SharePath is the owner's folder shown in the guest: "~" is their
	// home, "~/x" a folder in it, "" none.
	SharePath     string
	ShareReadOnly bool
	Volumes       []VMVolume
	// PersistentAllowed lets a launch ask to keep its disk (keep_disk).
	PersistentAllowed bool
	// GPUs are PCI addresses to pass through (vfio-pci).
	GPUs []string
}

// VMVolume is an extra host folder for the guest (9p).
type VMVolume struct {
	Path, Tag string
	ReadOnly  bool
}

// persistentSubdir is where, in the owner's home, kept disks live: one
// NAME.qcow2 overlay per image.
const persistentSubdir = ".local/share/airlock/vm"

// vmAccel is what the gateway tells a session's runner, and shows, about
// KVM: kvm when /dev/kvm is usable by the account the session runs as,
// else tcg. With the local backend runners run here, so /dev/kvm here
// decides; elsewhere ("" shown) each runner decides on its node.
func (g *Gateway) vmAccel(s *session.Session) string {
	if g.cfg.Backend.Name() != "local" {
		return ""
	}
	uid, gids := os.Geteuid(), []int(nil)
	if name := g.account(s); name != "" {
		u, err := user.Lookup(name)
		if err != nil {
			return "tcg"
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		gids = append(gids, gid)
		ids, _ := u.GroupIds()
		for _, id := range ids {
			if n, err := strconv.Atoi(id); err == nil {
				gids = append(gids, n)
			}
		}
	}
	if vm.KVMUsable(uid, gids) {
		return "kvm"
	}
	return "tcg"
}

// sessionJSON adds what the session's profile says to toJSON: for a VM,
// whether it runs under KVM or emulation.
func (g *Gateway) sessionJSON(s *session.Session) sessionJSON {
	j := toJSON(s)
	if p, ok := g.profile(s.Profile); ok && p.Kind == "vm" {
		j.Accel = g.vmAccel(s)
	}
	return j
}

// homeOf is the home directory of the account a session runs as, as this
// machine knows it (for a remote backend, home directories are shared with
// the nodes, or the admin sets share paths that are the same everywhere).
func (g *Gateway) homeOf(s *session.Session) (string, error) {
	var u *user.User
	var err error
	if name := g.account(s); name != "" {
		u, err = user.Lookup(name)
	} else {
		u, err = user.Current()
	}
	if err != nil {
		return "", fmt.Errorf("vm: look up the session's account: %w", err)
	}
	return u.HomeDir, nil
}

// vmSpec fills the runner spec of a vm session: the runner checks the
// image and starts QEMU itself. With the local backend its scratch
// directory is in the session's directory, so the monitor socket is where
// the gateway can reach it; on a remote node the runner picks its own.
// listen gives a connector's listen address by its name.
func (g *Gateway) vmSpec(spec *contract.Spec, s *session.Session, p Profile, dir string, listen func(name string) string, keepDisk bool) error {
	img := p.VM
	if img == nil {
		return fmt.Errorf("profile %s: no image", p.Name)
	}
	v := &contract.VMSpec{
		Name: img.Name, Image: img.Path, Format: img.Format, OS: img.OS, Firmware: img.Firmware,
		Kernel: img.Kernel, Initrd: img.Initrd, Append: img.Append,
		CPUs: s.CPUs, MemoryMB: s.MemoryMB, RDP: img.RDP, GPUs: img.GPUs,
		Accel: cmp.Or(g.vmAccel(s), "auto"),
	}
	home := ""
	if img.SharePath != "" || keepDisk {
		h, err := g.homeOf(s)
		if err != nil {
			return err
		}
		home = h
	}
	if sp := img.SharePath; sp != "" {
		if sp == "~" || strings.HasPrefix(sp, "~/") {
			sp = filepath.Join(home, strings.TrimPrefix(sp, "~"))
		}
		v.Share = &contract.VMShare{Path: sp, Tag: "home", ReadOnly: img.ShareReadOnly}
	}
	for _, vo := range img.Volumes {
		v.Volumes = append(v.Volumes, contract.VMShare{Path: vo.Path, Tag: vo.Tag, ReadOnly: vo.ReadOnly})
	}
	if keepDisk {
		v.PersistentDir = filepath.Join(home, persistentSubdir)
	}
	if err := g.rdpPasswordSpec(v, img, s, dir); err != nil {
		return fmt.Errorf("vm: the session's RDP password: %w", err)
	}
	spec.VM = v
	if g.remote == nil {
		spec.ScratchDir = filepath.Join(dir, "scratch")
	}
	// The console is QEMU's own VNC display. The guest's RDP port stays on
	// the seal's loopback; a tls connector reaches it for native RDP
	// clients through the gateway's RDP port (rdp.go), when it has one.
	console := profileConnectors(p.Kind)[0]
	console.Target, console.Listen = "unix:"+vm.VNCSocket, listen(console.Name)
	console.Clipboard = p.Clipboard
	spec.Connectors = []contract.ConnectorSpec{console}
	if img.RDP && g.rdp != nil {
		return g.rdpConnector(spec, dir, listen(ConnRDP))
	}
	return nil
}

// vmActions are what an admin may do through the monitor.
var vmActions = map[string]string{"powerdown": "system_powerdown", "reset": "system_reset", "screendump": "screendump"}

// maxScreendump bounds a screen dump read back (a 4K screen as PNG is a
// few MB).
const maxScreendump = 64 << 20

// vmMonitor is POST /api/v1/admin/sessions/{id}/vm/{action}: it sends a
// power button press or a reset to the VM, or returns a PNG of its screen,
// through QEMU's QMP socket in the session's scratch directory.
func (g *Gateway) vmMonitor(w http.ResponseWriter, r *http.Request, id identity) error {
	if err := noBody(w, r); err != nil {
		return err
	}
	action := r.PathValue("action")
	cmd, ok := vmActions[action]
	if !ok {
		return apiErr(404, "no_action", "want powerdown, reset or screendump")
	}
	s, err := g.cfg.Store.GetSession(r.Context(), r.PathValue("id"))
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return apiErr(404, "no_session", "no such session")
		}
		return err
	}
	if p, ok := g.profile(s.Profile); !ok || p.Kind != "vm" {
		return apiErr(409, "not_vm", "the session is not a virtual machine")
	}
	if s.State != session.Ready {
		return apiErr(409, "not_running", "the session is "+string(s.State))
	}
	if g.cfg.Backend.Name() != "local" {
		return apiErr(501, "not_supported", "the monitor is reachable only for sessions of the local backend")
	}
	tmp := filepath.Join(g.sessionDir(s.ID), "scratch", "tmp")
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	q, err := vm.DialQMP(ctx, filepath.Join(tmp, filepath.Base(vm.QMPSocket)))
	if err != nil {
		return apiErr(502, "monitor_unreachable", "the VM's monitor does not answer: "+err.Error())
	}
	defer q.Close()
	g.audit(r.Context(), id.user, "vm_"+action, s.ID, r.RemoteAddr, "")
	if action != "screendump" {
		if _, err := q.Execute(ctx, cmd, nil); err != nil {
			return apiErr(502, "monitor_error", err.Error())
		}
		writeJSON(w, 202, map[string]any{"id": s.ID, "action": action})
		return nil
	}
	b := make([]byte, 8)
	rand.Read(b)
	name := "screendump-" + hex.EncodeToString(b) + ".png"
	host := filepath.Join(tmp, name)
	defer os.Remove(host)
	if _, err := q.Execute(ctx, cmd, map[string]any{"filename": filepath.Join(filepath.Dir(vm.QMPSocket), name), "format": "png"}); err != nil {
		return apiErr(502, "monitor_error", err.Error())
	}
	png, err := readOwnedFile(host, maxScreendump)
	if err != nil {
		return fmt.Errorf("screendump: %w", err)
	}
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Write(png)
	return nil
}

// readOwnedFile reads a file QEMU wrote in a directory the session's owner
// controls: never through a symbolic link, only a regular file, at most
// limit bytes.
func readOwnedFile(path string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return b, nil
}
