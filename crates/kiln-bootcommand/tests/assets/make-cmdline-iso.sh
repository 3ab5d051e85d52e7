#!/bin/sh
# Builds a small bootable ISO for the boot_command tests, from Debian
# packages only (scripts/setup.sh installs them):
#   - isolinux (isolinux.bin) and syslinux-common (ldlinux.c32): a BIOS
#     boot loader whose `boot:` prompt waits for ever for a typed command
#     line (PROMPT 1, TIMEOUT 0) and mirrors itself on the serial port;
#   - debian-installer-12-netboot-amd64: a Debian 12 kernel;
#   - busybox-static: a tiny initramfs whose /init writes the kernel's
#     command line to the first serial port as
#         KILN-CMDLINE[<the command line>]
#     and powers the machine off.
# Usage: make-cmdline-iso.sh OUT.iso
set -eu
out=$1
kernel=/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64/linux
for f in /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 \
         "$kernel" /bin/busybox; do
  [ -e "$f" ] || { echo "make-cmdline-iso.sh: $f is missing (run scripts/setup.sh)" >&2; exit 1; }
done
command -v xorriso >/dev/null || { echo "make-cmdline-iso.sh: xorriso is missing (run scripts/setup.sh)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/bin" "$work/iso/isolinux" "$work/iso/k"

cp /bin/busybox "$work/root/bin/busybox"
cat > "$work/root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mkdir -p /proc /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev
echo "KILN-CMDLINE[$(/bin/busybox cat /proc/cmdline)]" > /dev/ttyS0
/bin/busybox sync
/bin/busybox poweroff -f
INIT
chmod 755 "$work/root/init"
(cd "$work/root" && find . | busybox cpio -o -H newc 2>/dev/null) | gzip -1 > "$work/iso/k/initrd.gz"

cp "$kernel" "$work/iso/k/linux"
cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$work/iso/isolinux/"
cat > "$work/iso/isolinux/isolinux.cfg" <<'CFG'
SERIAL 0 115200
PROMPT 1
TIMEOUT 0
DEFAULT k
LABEL k
  KERNEL /k/linux
  APPEND initrd=/k/initrd.gz
CFG

if ! xorriso -as mkisofs -quiet -o "$out.tmp" -V KILN_CMDLINE -J -R \
  -b isolinux/isolinux.bin -c isolinux/boot.cat \
  -no-emul-boot -boot-load-size 4 -boot-info-table "$work/iso" 2>"$work/xorriso.log"; then
  cat "$work/xorriso.log" >&2
  exit 1
fi
mv "$out.tmp" "$out"
