package realtest

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/airlock-hpc/airlock/internal/vm"
)

// Guest is the tiny bootable test VM: a Debian kernel, a busybox
// initramfs whose init reports on its serial port and VGA console, and a
// small disk with a marker as the master image.
type Guest struct {
	Kernel, Initrd string
	// Master is a 16 MiB qcow2 image whose first bytes are GuestDiskMarker.
	Master string
	// MasterRaw is the same disk in raw format.
	MasterRaw string
	// ISO is a 1 MiB stand-in CD image: GuestISOMarker at its start and
	// the ISO 9660 signature; the guest reads it from /dev/sr0 when its
	// command line asks (GuestAppendCD).
	ISO string
}

// What the guest's init prints, for tests to look for (in the serial log,
// one per line; the banner also on the VGA console).
const (
	GuestBanner     = "AIRLOCK-GUEST-BANNER"
	GuestDone       = "AIRLOCK-GUEST-DONE"
	GuestDiskMarker = "BASE-DISK-MARKER"
	GuestISOMarker  = "ISO-IMAGE-MARKER"
)

// GuestAppendCD is GuestAppend for a guest that reads its CD-ROM drive.
func GuestAppendCD(probe string) string { return GuestAppend(probe, false) + " airlock.cdrom" }

// GuestAppend is the kernel command line the guest expects; probe names a
// file in the shared folder (9p tag "home", or QEMU's SMB share when smb)
// and in the 9p volume tagged "data", which the guest prints.
func GuestAppend(probe string, smb bool) string {
	a := "console=tty0 console=ttyS0 quiet panic=-1 airlock.probe=" + probe
	if smb {
		a += " airlock.smb"
	}
	return a
}

// guestInit is the initramfs's /init. It prints everything a test checks:
// the banner, the disk's marker, the shared file, and network probes. The
// guest listens on 3389 (standing in for RDP) and probes its own loopback
// (the control: nc works), then the seal's loopback through the host
// address 10.0.2.2 (which user networking would reach without
// restrict=on), QEMU's DNS address and an outside address.
const guestInit = `#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
say() { echo "$*" > /dev/ttyS0; echo "$*" > /dev/tty0; }
for m in virtio_pci virtio_blk virtio_net 9pnet_virtio 9p; do modprobe $m 2>/dev/null; done
# A windows-like machine (IDE disk, e1000 NIC, SMB share) or a linux one.
if grep -q airlock.smb /proc/cmdline; then
  for m in ata_piix sd_mod e1000 cifs; do modprobe $m 2>/dev/null; done
fi
say "AIRLOCK-GUEST-BANNER: booted $(uname -r)"
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
disk=/dev/vda
[ -b $disk ] || disk=/dev/sda
if [ -b $disk ]; then
  say "DISK: $(dd if=$disk bs=16 count=1 2>/dev/null)"
  echo GUEST-WROTE-THIS | dd of=$disk bs=512 seek=100 conv=notrunc,fsync 2>/dev/null && say "DISK-WRITE: ok"
else
  say "DISK: none"
fi
if grep -q airlock.cdrom /proc/cmdline; then
  modprobe ata_piix 2>/dev/null; modprobe sr_mod 2>/dev/null
  say "CDROM: $(dd if=/dev/sr0 bs=16 count=1 2>/dev/null)"
fi
probe=$(sed -n 's/.*airlock\.probe=\([^ ]*\).*/\1/p' /proc/cmdline)
if grep -q airlock.smb /proc/cmdline; then
  mount -t cifs //10.0.2.4/qemu /mnt -o ip=10.0.2.4,username=guest,password=,sec=none,vers=3.0,noserverino 2>/dev/null
else
  mount -t 9p -o trans=virtio,version=9p2000.L home /mnt 2>/dev/null
fi
if [ $? -eq 0 ]; then
  say "SHARE: mounted"
  say "SHARE-FILE: $(cat /mnt/$probe 2>&1)"
  if echo from-guest > /mnt/$probe.guest 2>/dev/null; then say "SHARE-WRITE: ok"; else say "SHARE-WRITE: refused"; fi
else
  say "SHARE: none"
fi
mkdir -p /data
if mount -t 9p -o trans=virtio,version=9p2000.L data /data 2>/dev/null; then say "VOLUME-FILE: $(cat /data/$probe 2>&1)"; fi
# A one-time RDP password comes as an SMBIOS OEM string, as a Windows
# guest's startup script would read it; the responder then answers only a
# client whose first line is that password (never printed: its length is).
# Each string of a type 11 structure follows a NUL, but the first follows
# the structure's count byte: hence no ^ before the prefix.
oem() { tr '\000' '\n' < /sys/firmware/dmi/tables/DMI 2>/dev/null | sed -n "s/.*airlock\.$1=//p" | head -1; }
pw=$(oem rdp_password)
if [ -n "$pw" ]; then
  printf '%s' "$pw" > /tmp/rdp-password
  say "RDP-PASSWORD: received for $(oem rdp_user), ${#pw} characters"
fi
cat > /tmp/rdp-responder <<'RESP'
#!/bin/sh
[ -s /tmp/rdp-password ] || { echo RDP-PONG; exit 0; }
read -r line
if [ "$line" = "$(cat /tmp/rdp-password)" ]; then echo RDP-PONG password-ok; else echo RDP-PASSWORD-WRONG; fi
RESP
chmod 755 /tmp/rdp-responder
nc -ll -p 3389 -e /tmp/rdp-responder &
sleep 1
say "NET 127.0.0.1:3389: $(nc -w 3 127.0.0.1 3389 </dev/null 2>&1 || echo closed)"
for t in 10.0.2.2:3389 10.0.2.2:22 10.0.2.3:53 1.1.1.1:80; do
  out=$(nc -w 3 ${t%:*} ${t#*:} </dev/null 2>/dev/null) && say "NET $t: open $out" || say "NET $t: closed"
done
# The power button (ACPI, as QEMU's system_powerdown presses it) powers
# the guest off, so QEMU exits: the first event on its input device will do
# (evdev reads whole 24-byte events, nothing less).
modprobe evdev 2>/dev/null; modprobe button 2>/dev/null
for e in /sys/class/input/event*; do
  if grep -q "Power Button" $e/device/name 2>/dev/null; then
    (dd if=/dev/input/${e##*/} bs=24 count=1 of=/dev/null 2>/tmp/dd.err && say "POWER-BUTTON: pressed" && sync && poweroff -f; say "POWER-BUTTON: $(cat /tmp/dd.err)") &
    break
  fi
done
say "AIRLOCK-GUEST-DONE"
while true; do sleep 3600; done
`

// guestBuild builds the test guest in the current directory: the kernel
// and initramfs (vm.GuestScript) with guestInit, and the disks and CD
// image the tests boot.
var guestBuild = vm.GuestScript(guestInit) + `# A stand-in ISO: a marker where a real one has its boot area, and the
# ISO 9660 signature where airlock looks for it.
rm -f master.iso; printf 'ISO-IMAGE-MARKER' > master.iso; truncate -s 1M master.iso
printf '\001CD001\001' | dd of=master.iso bs=1 seek=32768 conv=notrunc 2>/dev/null
printf 'BASE-DISK-MARKER' > master.raw
truncate -s 16M master.raw
rm -f master.qcow2
qemu-img convert -f raw -O qcow2 master.raw master.qcow2
chmod 644 vmlinuz initrd.gz master.raw master.qcow2 master.iso
`

var (
	guestOnce sync.Once
	guest     *Guest
	guestErr  error
)

// NeedQEMU skips the test when QEMU is not installed.
func NeedQEMU(t testing.TB) {
	t.Helper()
	for _, p := range []string{"qemu-system-x86_64", "qemu-img"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s not installed (Debian: qemu-system-x86 qemu-utils; scripts/install-deps.sh installs them)", p)
		}
	}
}

// BuildGuest builds the test guest once per test process and caches it
// across runs and packages (under /var/lib/airlock-test as root, else
// .artifacts), keyed by the build script, so only the first run pays for
// the kernel download. Test packages running at once wait for each other
// on a lock file. It skips when QEMU is missing.
func BuildGuest(t testing.TB) *Guest {
	t.Helper()
	NeedQEMU(t)
	for _, p := range []string{"apt-cache", "dpkg-deb", "depmod", "busybox"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s not installed: the test guest is built from Debian packages", p)
		}
	}
	guestOnce.Do(func() { guest, guestErr = buildGuest() })
	if guestErr != nil {
		t.Fatal(guestErr)
	}
	return guest
}

func buildGuest() (*Guest, error) {
	// Not under /tmp: the seal has its own /tmp, where QEMU would not find
	// the files.
	dir := filepath.Join(StateBase(), "vmguest")
	if err := vm.BuildCached(context.Background(), dir, guestBuild); err != nil {
		return nil, fmt.Errorf("build the test guest: %w", err)
	}
	return &Guest{Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd.gz"),
		Master: filepath.Join(dir, "master.qcow2"), MasterRaw: filepath.Join(dir, "master.raw"), ISO: filepath.Join(dir, "master.iso")}, nil
}
