#!/bin/sh
# Builds a bootable Debian 12 installer ISO from Debian's own packages, for
# vagrant.json (no ISO can be downloaded here):
#   - debian-installer-12-netboot-amd64: the installer's kernel, initrd and
#     boot menus (the "netboot" installer: it fetches everything else from
#     a Debian mirror over the network);
#   - isolinux and syslinux-common: the BIOS boot loader of an ISO;
#   - xorriso: writes the ISO (hybrid: it also boots written to a disk).
# The menu is the installer's own: Escape leaves it for the `boot:` prompt,
# where `auto preseed/url=...` starts an automated install, as on Debian's
# netinst ISO (see README-vagrant.md to use that one instead).
#
# Usage (scripts/setup.sh installs the packages):
#   ./make-installer-iso.sh [OUT.iso]   (default: output-installer/debian-12-installer.iso)
set -eu
out=${1:-output-installer/debian-12-installer.iso}
di=/usr/lib/debian-installer/images/12/amd64/text
for f in "$di/debian-installer/amd64/linux" "$di/debian-installer/amd64/initrd.gz" \
         /usr/lib/ISOLINUX/isolinux.bin /usr/lib/ISOLINUX/isohdpfx.bin \
         /usr/lib/syslinux/modules/bios/ldlinux.c32; do
  if [ ! -e "$f" ]; then
    echo "make-installer-iso.sh: $f is missing: apt-get install debian-installer-12-netboot-amd64 isolinux syslinux-common (or run scripts/setup.sh)" >&2
    exit 1
  fi
done
if ! command -v xorriso >/dev/null; then
  echo "make-installer-iso.sh: xorriso is missing: apt-get install xorriso" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/iso/debian-installer/amd64"
# The BIOS parts of the netboot tree: kernel, initrd, menus and their
# syslinux modules (the same syslinux build as isolinux's).
cp "$di/version.info" "$work/iso/"
cp "$di/debian-installer/amd64/linux" "$di/debian-installer/amd64/initrd.gz" \
   "$work/iso/debian-installer/amd64/"
cp -r "$di/debian-installer/amd64/boot-screens" "$work/iso/debian-installer/amd64/"
# The installer's menus name their files relative to the root (as on a
# PXE server): ISOLINUX goes in the root too, so that the root is its
# working directory, and reads /isolinux.cfg.
cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$work/iso/"
cat > "$work/iso/isolinux.cfg" <<'CFG'
include debian-installer/amd64/boot-screens/syslinux.cfg
CFG

mkdir -p "$(dirname "$out")"
if ! xorriso -as mkisofs -o "$out.tmp" -V "Debian 12 netboot" -J -R \
     -b isolinux.bin -c boot.cat \
     -no-emul-boot -boot-load-size 4 -boot-info-table \
     -isohybrid-mbr /usr/lib/ISOLINUX/isohdpfx.bin \
     "$work/iso" 2>"$work/xorriso.log"; then
  cat "$work/xorriso.log" >&2
  exit 1
fi
mv "$out.tmp" "$out"
echo "$out: Debian 12 installer ($(sed -n 's/^Installer build: *//p' "$di/version.info")), $(du -h "$out" | cut -f1)"
