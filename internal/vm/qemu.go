package vm

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Machine is one VM as QEMU is to run it. Paths are as QEMU sees them,
// inside the seal: the session's files live in its private /tmp.
type Machine struct {
	// Name shows in QEMU's window title and process list.
	Name string
	// Accel is "kvm" or "tcg" (plain emulation).
	Accel string
	// CPUs and MemoryMB size the guest.
	CPUs     int
	MemoryMB int
	// OS is windows, linux or other: linux gets virtio disk and network
	// and 9p shares; the others get IDE and e1000, which every OS drives
	// without extra drivers, and windows gets its share over SMB.
	OS string
	// Disk is the qcow2 overlay the guest boots from and writes to; empty
	// for an ISO booted without a disk.
	Disk string
	// CDROM is an ISO to boot from (read-only).
	CDROM string
	// Firmware is UEFI's pflash pair; zero means SeaBIOS.
	Firmware Firmware
	// Kernel, Initrd and Append boot a Linux kernel directly, without a
	// boot loader in the image.
	Kernel, Initrd, Append string
	// VNC is QEMU's VNC display: "unix:/path" or "127.0.0.1:5900"-style
	// HOST:PORT (display = port-5900).
	VNC string
	// Serial is the file the first serial port writes to.
	Serial string
	// QMP is the path of the QMP monitor's UNIX socket.
	QMP string
	// RDP forwards the guest's port 3389 to 127.0.0.1:3389 in the seal's
	// network namespace (the only place that address exists).
	RDP bool
	// OEMStrings is a file whose content QEMU gives the guest as one
	// SMBIOS OEM string (type 11): how a secret reaches the guest without
	// appearing in QEMU's argv, which every local user can read in /proc.
	OEMStrings string
	// OEMValues are more SMBIOS OEM strings, on QEMU's command line: no
	// secrets.
	OEMValues []string
	// Share is the owner's folder in the guest: over SMB (windows; the
	// guest sees \\10.0.2.4\qemu) or 9p with mount tag Share.Tag.
	Share *Share
	// Volumes are more host folders, over 9p (linux and other guests).
	Volumes []Share
	// GPUs are PCI addresses (0000:01:00.0) of devices bound to vfio-pci
	// to pass through.
	GPUs []string
}

// Share is a host folder shown to the guest.
type Share struct {
	Path     string
	Tag      string
	ReadOnly bool
}

// Firmware names UEFI firmware files: Code is read-only, Vars is the
// session's own writable copy of the variable store.
type Firmware struct {
	Code, Vars string
}

var (
	tagRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,31}$`)
	pciRE = regexp.MustCompile(`^([0-9a-f]{4}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$`)
	// hostRE: what may follow "unix:" or precede ":PORT" in Machine.VNC.
	vncTCPRE = regexp.MustCompile(`^127\.0\.0\.1:(59[0-9][0-9])$`)
)

// RDPPort is the guest port forwarded, and the port it appears on at
// 127.0.0.1 inside the seal.
const RDPPort = 3389

// opt escapes a value for QEMU's KEY=VALUE,... option syntax, where a
// comma is written twice.
func opt(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// Args returns QEMU's arguments (without the program name) for m. It is a
// pure function: the same Machine gives the same argv, and it checks only
// what it can see (no file is opened).
func Args(m Machine) ([]string, error) {
	if m.Accel != "kvm" && m.Accel != "tcg" {
		return nil, fmt.Errorf("vm: accel %q: want kvm or tcg", m.Accel)
	}
	if m.CPUs < 1 || m.CPUs > 1024 {
		return nil, fmt.Errorf("vm: cpus %d: want 1 to 1024", m.CPUs)
	}
	if m.MemoryMB < 16 {
		return nil, fmt.Errorf("vm: memory %d MB: want at least 16", m.MemoryMB)
	}
	if !slices.Contains(OSes, m.OS) {
		return nil, fmt.Errorf("vm: os %q: want %s", m.OS, strings.Join(OSes, ", "))
	}
	if m.Disk == "" && m.CDROM == "" && m.Kernel == "" {
		return nil, errors.New("vm: nothing to boot: no disk, CD-ROM or kernel")
	}
	if (m.Initrd != "" || m.Append != "") && m.Kernel == "" {
		return nil, errors.New("vm: initrd and append need a kernel")
	}
	if m.Serial == "" || m.QMP == "" || m.VNC == "" {
		return nil, errors.New("vm: the VNC display, serial log and QMP socket are required")
	}
	a := []string{
		// Nothing QEMU would add by itself (a default NIC with full
		// user networking, a parallel port, a floppy): only what is below.
		"-nodefaults", "-no-user-config",
		"-name", opt(m.Name),
		"-machine", "pc,accel=" + m.Accel,
	}
	if m.Accel == "kvm" {
		a = append(a, "-cpu", "host")
	}
	a = append(a,
		"-smp", strconv.Itoa(m.CPUs),
		"-m", strconv.Itoa(m.MemoryMB),
		"-device", "virtio-balloon-pci",
		"-vga", "std",
		"-display", "none",
	)
	switch vnc := m.VNC; {
	case strings.HasPrefix(vnc, "unix:/"):
		a = append(a, "-vnc", "unix:"+opt(strings.TrimPrefix(vnc, "unix:")))
	case vncTCPRE.MatchString(vnc):
		port, _ := strconv.Atoi(vncTCPRE.FindStringSubmatch(vnc)[1])
		a = append(a, "-vnc", "127.0.0.1:"+strconv.Itoa(port-5900))
	default:
		return nil, fmt.Errorf("vm: vnc %q: want unix:/path or 127.0.0.1:5900-5999", vnc)
	}
	if m.OEMStrings != "" {
		if !strings.HasPrefix(m.OEMStrings, "/") {
			return nil, fmt.Errorf("vm: OEM strings file %q: want an absolute path", m.OEMStrings)
		}
		a = append(a, "-smbios", "type=11,path="+opt(m.OEMStrings))
	}
	for _, v := range m.OEMValues {
		a = append(a, "-smbios", "type=11,value="+opt(v))
	}
	a = append(a,
		"-serial", "file:"+m.Serial,
		"-qmp", "unix:"+opt(m.QMP)+",server=on,wait=off",
	)
	if (m.Firmware.Code == "") != (m.Firmware.Vars == "") {
		return nil, errors.New("vm: UEFI firmware needs both its code and its variable store")
	}
	if m.Firmware.Code != "" {
		a = append(a,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+opt(m.Firmware.Code),
			"-drive", "if=pflash,format=raw,unit=1,file="+opt(m.Firmware.Vars))
	}
	diskIf, nicModel := "ide", "e1000"
	if m.OS == "linux" {
		diskIf, nicModel = "virtio", "virtio-net-pci"
	}
	if m.Disk != "" {
		a = append(a, "-drive", "file="+opt(m.Disk)+",format=qcow2,if="+diskIf+",cache=writeback")
	}
	if m.CDROM != "" {
		a = append(a, "-drive", "file="+opt(m.CDROM)+",format=raw,media=cdrom,readonly=on,if=ide,index=2")
		if m.Disk == "" || m.Kernel == "" {
			a = append(a, "-boot", "order=dc")
		}
	}
	if m.Kernel != "" {
		a = append(a, "-kernel", m.Kernel)
		if m.Initrd != "" {
			a = append(a, "-initrd", m.Initrd)
		}
		if m.Append != "" {
			a = append(a, "-append", m.Append)
		}
	}
	// User networking, restricted: the guest reaches neither the seal's
	// loopback (10.0.2.2) nor anything else. hostfwd still works, so the
	// guest's RDP port appears on the seal's loopback for the connectors.
	nic := "user,restrict=on,model=" + nicModel
	if m.RDP {
		nic += ",hostfwd=tcp:127.0.0.1:" + strconv.Itoa(RDPPort) + "-:" + strconv.Itoa(RDPPort)
	}
	if m.OS == "windows" {
		if m.Share != nil {
			if m.Share.ReadOnly {
				return nil, errors.New("vm: QEMU's SMB share (windows guests) cannot be read-only")
			}
			nic += ",smb=" + opt(m.Share.Path)
		}
		if len(m.Volumes) > 0 {
			return nil, errors.New("vm: windows guests get one folder (QEMU's SMB share); extra volumes need 9p, which Windows lacks")
		}
	}
	a = append(a, "-nic", nic)
	if m.OS != "windows" {
		shares := m.Volumes
		if m.Share != nil {
			shares = append([]Share{*m.Share}, shares...)
		}
		tags := map[string]bool{}
		for _, s := range shares {
			if !tagRE.MatchString(s.Tag) {
				return nil, fmt.Errorf("vm: share tag %q: want 1-31 of A-Z a-z 0-9 _ -", s.Tag)
			}
			if tags[s.Tag] {
				return nil, fmt.Errorf("vm: share tag %q used twice", s.Tag)
			}
			tags[s.Tag] = true
			if !strings.HasPrefix(s.Path, "/") {
				return nil, fmt.Errorf("vm: share %s: path %q must be absolute", s.Tag, s.Path)
			}
			// security_model=none: files are created as the session's
			// owner, which QEMU runs as; nothing is stored in xattrs.
			v := "local,path=" + opt(s.Path) + ",mount_tag=" + s.Tag + ",security_model=none"
			if s.ReadOnly {
				v += ",readonly=on"
			}
			a = append(a, "-virtfs", v)
		}
	}
	for _, g := range m.GPUs {
		if !pciRE.MatchString(g) {
			return nil, fmt.Errorf("vm: gpu %q: want a PCI address such as 0000:01:00.0", g)
		}
		a = append(a, "-device", "vfio-pci,host="+g)
	}
	return a, nil
}

// KVMUsable says whether /dev/kvm can be opened for reading and writing by
// this process, and, when uid is not ours (root starting a session as its
// owner), by uid with groups gids as far as the device's mode shows.
func KVMUsable(uid int, gids []int) bool {
	return kvmUsable("/dev/kvm", uid, gids)
}

func kvmUsable(dev string, uid int, gids []int) bool {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return false
	}
	if uid == os.Geteuid() {
		return true
	}
	const rw = 6
	switch {
	case int(st.Uid) == uid:
		return st.Mode>>6&rw == rw
	case slices.Contains(gids, int(st.Gid)):
		return st.Mode>>3&rw == rw
	}
	return st.Mode&rw == rw
}

// OVMF is where Debian's ovmf package puts UEFI firmware, newest layout
// first: code and variable-store template.
var OVMF = [][2]string{
	{"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"},
	{"/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"},
}

// FindOVMF returns the first OVMF code and variable-store template that
// exist, or an error that says how to get them.
func FindOVMF() (code, vars string, err error) {
	for _, p := range OVMF {
		if fileExists(p[0]) && fileExists(p[1]) {
			return p[0], p[1], nil
		}
	}
	return "", "", errors.New("firmware uefi: OVMF is not installed on this node (Debian: apt install ovmf); use firmware bios or install it")
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// Where QEMU's files are inside the seal: the session's private /tmp,
// which is its scratch directory's tmp on the host.
const (
	VNCSocket = "/tmp/vnc.sock"
	QMPSocket = "/tmp/qmp.sock"
	SerialLog = "/tmp/serial.log"
	// Overlay is the throwaway overlay's path.
	Overlay = "/tmp/disk.qcow2"
	// OEMStringsFile holds the SMBIOS OEM string with the session's RDP
	// password (0600, the owner's).
	OEMStringsFile = "/tmp/.airlock-oem-strings"
)

// OEMRDPPassword starts the SMBIOS OEM string (type 11) that carries a
// session's one-time RDP password to the guest: the guest's startup
// script finds the string with this prefix and sets the rest as the RDP
// account's password (see the README).
const OEMRDPPassword = "airlock.rdp_password="

// OEMRDPUser starts the OEM string naming the account the password is for.
const OEMRDPUser = "airlock.rdp_user="
