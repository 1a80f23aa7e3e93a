package runner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/airlock-hpc/airlock/internal/seal"
	"github.com/airlock-hpc/airlock/internal/vm"
)

// qemuLog is where QEMU's standard error goes, inside the seal.
const qemuLog = "/tmp/qemu.log"

// vmExitReason adds QEMU's last message to the reason a VM session ended
// with, when QEMU failed; the whole log goes to the runner's log.
//
// The seal's /tmp is the session's to change, and a root runner reads
// this as root: only a regular file with no other name, never through a
// symlink or a hard link (either could name /etc/shadow; the kernel's
// protected_hardlinks, which stops the latter, is a sysctl) and never a
// FIFO (nobody would write to it).
func (r *run) vmExitReason(reason string, code int, scratch string) string {
	f, err := os.OpenFile(filepath.Join(scratch, "tmp", filepath.Base(qemuLog)), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return reason
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() || st.Sys().(*syscall.Stat_t).Nlink != 1 {
		return reason
	}
	b, _ := io.ReadAll(io.LimitReader(f, 64<<10))
	text := strings.TrimSpace(string(b))
	if text == "" {
		return reason
	}
	r.log.Warn("qemu said", "output", text)
	if code == 0 {
		return reason
	}
	last := text[strings.LastIndexByte(text, '\n')+1:]
	if len(last) > 300 {
		last = last[:300] + "..."
	}
	return reason + ": " + last
}

// vmCheckTimeout bounds qemu-img's checks and the overlay's creation; both
// take milliseconds, unless the image is on a hung file system.
const vmCheckTimeout = time.Minute

// prepareVM does, before the seal exists, everything a VM session needs
// that can fail: find QEMU, check the master image, make the overlay (in
// the scratch directory, so the janitor removes it whatever happens, or
// in the persistent directory), and turn the spec's vm block into QEMU's
// command line as the workload. Every error here ends the session at once
// with the reason. It returns the accelerator chosen.
func (r *run) prepareVM(ctx context.Context, owner seal.Owner, scratch string) (string, error) {
	v := r.spec.VM
	// First, so that nothing started below inherits the variable.
	rdpPassword, err := readRDPPassword(v)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, vmCheckTimeout)
	defer cancel()
	qemu := cmp.Or(v.QEMU, "qemu-system-x86_64")
	qemuPath, err := exec.LookPath(qemu)
	if err != nil {
		return "", fmt.Errorf("vm: %s not found: install QEMU on this node (Debian: qemu-system-x86): %w", qemu, err)
	}
	tools := vm.Tools{QEMUImg: v.QEMUImg}
	if _, err := tools.Check(ctx, v.Image, v.Format); err != nil {
		return "", fmt.Errorf("vm: %w", err)
	}
	root := os.Geteuid() == 0 && owner.UID != 0
	// QEMU runs as the owner: what it must open, the owner must be able
	// to read (root would pass any check made as root).
	for _, p := range []string{v.Image, v.Kernel, v.Initrd} {
		if p == "" {
			continue
		}
		if err := readable(p, owner, root); err != nil {
			return "", fmt.Errorf("vm: %w", err)
		}
	}
	shares := v.Volumes
	if v.Share != nil {
		shares = append([]VMShare{*v.Share}, shares...)
	}
	for _, s := range shares {
		if st, err := os.Stat(s.Path); err != nil || !st.IsDir() {
			return "", fmt.Errorf("vm: shared folder %s: not a directory: %v", s.Path, err)
		}
	}

	accel := v.Accel
	if accel == "" || accel == "auto" {
		accel = "tcg"
		if vm.KVMUsable(owner.UID, owner.Groups) {
			accel = "kvm"
		}
	} else if accel == "kvm" && !vm.KVMUsable(owner.UID, owner.Groups) {
		return "", errors.New("vm: accel kvm: /dev/kvm is missing or not usable by the session's owner")
	}

	tmp := filepath.Join(scratch, "tmp")
	chown := func(p string) error {
		if !root {
			return nil
		}
		if err := os.Chown(p, owner.UID, owner.GID); err != nil {
			return fmt.Errorf("vm: %w", err)
		}
		return nil
	}
	var fw vm.Firmware
	if v.Firmware == "uefi" {
		code, vars, err := vm.FindOVMF()
		if err != nil {
			return "", fmt.Errorf("vm: %w", err)
		}
		dst := filepath.Join(tmp, "OVMF_VARS.fd")
		if err := copyFile(vars, dst); err != nil {
			return "", fmt.Errorf("vm: firmware variables: %w", err)
		}
		if err := chown(dst); err != nil {
			return "", err
		}
		fw = vm.Firmware{Code: code, Vars: "/tmp/OVMF_VARS.fd"}
	}

	disk := ""
	if v.Format != "iso" {
		if v.PersistentDir != "" {
			disk, err = r.persistentOverlay(ctx, tools, owner, root)
			if err != nil {
				return "", err
			}
		} else {
			host := filepath.Join(tmp, filepath.Base(vm.Overlay))
			if err := tools.CreateOverlay(ctx, v.Image, v.Format, host); err != nil {
				return "", fmt.Errorf("vm: %w", err)
			}
			if err := chown(host); err != nil {
				return "", err
			}
			disk = vm.Overlay
		}
	}
	m := machine(v, accel, disk, fw)
	if rdpPassword != "" {
		host := filepath.Join(tmp, filepath.Base(vm.OEMStringsFile))
		if err := writeSecretFile(host, []byte(vm.OEMRDPPassword+rdpPassword)); err != nil {
			return "", fmt.Errorf("vm: the RDP password for the guest: %w", err)
		}
		if err := chown(host); err != nil {
			return "", err
		}
		m.OEMStrings = vm.OEMStringsFile
	}
	// The session's id in QEMU's argv: admins see which session a qemu
	// process belongs to.
	m.Name = "airlock-" + r.spec.ID
	args, err := vm.Args(m)
	if err != nil {
		return "", err
	}
	// QEMU's messages also go to a file in the seal's /tmp, so that when
	// it fails (a device it cannot open, a GPU that is not there) the
	// session's end can say why. exec keeps QEMU the workload's process.
	r.spec.Workload = Command{Argv: append([]string{"/bin/sh", "-c", `exec "$0" "$@" 2>>` + qemuLog, qemuPath}, args...)}
	r.log.InfoContext(ctx, "vm prepared", "image", v.Image, "accel", accel, "overlay", cmp.Or(disk, "none"))
	return accel, nil
}

// persistentOverlay returns the owner's kept overlay for the image,
// making it (and its directory) the first time. An overlay made on another
// master is refused rather than silently replaced: it holds the user's work.
func (r *run) persistentOverlay(ctx context.Context, tools vm.Tools, owner seal.Owner, root bool) (string, error) {
	v := r.spec.VM
	dir := v.PersistentDir
	// The directory is in the owner's home: as root, everything there is
	// done as the owner (mkdir and qemu-img run with the owner's ids), so
	// a symbolic link the owner planted cannot make root write elsewhere.
	mkdir := exec.CommandContext(ctx, "mkdir", "-p", "-m", "0700", dir)
	if root {
		cred := &syscall.Credential{Uid: uint32(owner.UID), Gid: uint32(owner.GID)}
		for _, g := range owner.Groups {
			cred.Groups = append(cred.Groups, uint32(g))
		}
		mkdir.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		tools.As = cred
	}
	if out, err := mkdir.CombinedOutput(); err != nil {
		return "", fmt.Errorf("vm: persistent overlay directory %s: %v: %s", dir, err, strings.TrimSpace(string(out)))
	}
	p := filepath.Join(dir, v.Name+".qcow2")
	if _, err := os.Lstat(p); err == nil {
		in, err := tools.Inspect(ctx, p)
		if err != nil {
			return "", fmt.Errorf("vm: persistent overlay: %w", err)
		}
		if in.Format != "qcow2" || in.BackingFile != v.Image {
			return "", fmt.Errorf("vm: persistent overlay %s is not an overlay of %s (backing file %q); move it away to start afresh", p, v.Image, in.BackingFile)
		}
		return p, nil
	}
	if err := tools.CreateOverlay(ctx, v.Image, v.Format, p); err != nil {
		return "", fmt.Errorf("vm: %w", err)
	}
	return p, nil
}

// readable says whether the owner may read p, going by its mode bits when
// we are root (an owner check made as root would always pass).
func readable(p string, o seal.Owner, root bool) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if !root {
		return nil
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	sys, _ := st.Sys().(*syscall.Stat_t)
	if sys == nil {
		return nil
	}
	uid, gid, mode := int(sys.Uid), int(sys.Gid), st.Mode().Perm()
	ok := false
	switch {
	case uid == o.UID:
		ok = mode&0o400 != 0
	case gid == o.GID || slices.Contains(o.Groups, gid):
		ok = mode&0o040 != 0
	default:
		ok = mode&0o004 != 0
	}
	if !ok {
		return fmt.Errorf("%s: not readable by %s, whom QEMU runs as", p, o.Name)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
