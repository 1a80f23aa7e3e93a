package vm

// GuestScript is a bash script that builds, in its working directory, a
// small Linux guest from Debian packages only: vmlinuz, the kernel that
// linux-image-amd64 depends on (fetched once with apt-get download from
// the configured Debian mirror, ~70 MB; a .deb already in the directory
// is reused), and initrd.gz, a busybox-static initramfs with the kernel's
// modules for virtio, 9p, SMB, ATA, CD-ROM and the power button (depmod
// from kmod), whose /init is init. Nothing comes from anywhere else. The
// test guest (realtest) and the demo guest of `airlock serve` are built
// by it with inits of their own.
func GuestScript(init string) string {
	return `set -euo pipefail
pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$pkg" ] || { echo "apt-cache knows no kernel behind linux-image-amd64" >&2; exit 1; }
kv=${pkg#linux-image-}
deb=$(ls ${pkg}_*.deb 2>/dev/null | head -1 || true)
if [ -z "$deb" ]; then apt-get download "$pkg" >&2; deb=$(ls ${pkg}_*.deb | head -1); fi
rm -rf kx initrd; mkdir kx
dpkg-deb -x "$deb" kx
M=kx/lib/modules/$kv/kernel
mkdir -p initrd/bin initrd/sbin initrd/proc initrd/sys initrd/dev initrd/mnt initrd/tmp initrd/lib/modules/$kv/kernel
for d in drivers/virtio drivers/block/virtio_blk.ko drivers/net/virtio_net.ko drivers/net/net_failover.ko \
         net/core/failover.ko net/9p fs/9p fs/netfs fs/fscache \
         drivers/ata/ata_piix.ko drivers/ata/libata.ko drivers/scsi/sd_mod.ko drivers/scsi/scsi_mod.ko drivers/scsi/scsi_common.ko \
         block/t10-pi.ko lib/crc-t10dif.ko lib/crc64-rocksoft.ko lib/crc64.ko drivers/net/ethernet/intel/e1000 \
         fs/smb/client fs/smb/common net/dns_resolver crypto lib/crypto drivers/acpi/button.ko drivers/input/evdev.ko \
         drivers/scsi/sr_mod.ko drivers/cdrom/cdrom.ko; do
  [ -e $M/$d ] || continue
  mkdir -p initrd/lib/modules/$kv/kernel/$(dirname $d)
  cp -a $M/$d initrd/lib/modules/$kv/kernel/$(dirname $d)/
done
cp kx/lib/modules/$kv/modules.order kx/lib/modules/$kv/modules.builtin kx/lib/modules/$kv/modules.builtin.modinfo initrd/lib/modules/$kv/
depmod -b "$PWD/initrd" "$kv"
cp /bin/busybox initrd/bin/
for a in sh mount insmod modprobe ip dd cat echo ls sleep mkdir sed grep uname nc sync poweroff tr head printf chmod; do ln -sf busybox initrd/bin/$a; done
ln -sf ../bin/busybox initrd/sbin/modprobe
cat > initrd/init <<'INIT'
` + init + `INIT
chmod 755 initrd/init
(cd initrd && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > initrd.gz
cp kx/boot/vmlinuz-$kv vmlinuz
rm -rf kx initrd
`
}
