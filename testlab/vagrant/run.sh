#!/usr/bin/env bash
# testlab/vagrant: prove a box made by kiln boots the way a user boots it.
#
#   run.sh KILN WORKDIR
#
# 1. the base image (Debian 12, kiln's debootstrap builder,
#    examples/seed/base.json): $KILN_VAGRANT_BASE, else
#    examples/seed/output-base/debian-12.qcow2 if scripts/example.sh made
#    it, else built once into /var/tmp/kiln-vagrant-lab/ and kept there;
# 2. the box: `kiln build box.json` (the qemu builder boots the base image
#    under TCG, adds the user vagrant with Vagrant's insecure key and
#    passwordless sudo, and the vagrant post-processor writes a libvirt
#    box whose Vagrantfile says libvirt.driver = "qemu", and a virtualbox
#    box from the same disk, checked offline: xmllint on the OVF, qemu-img
#    info/check on the VMDK and compare against the libvirt box's box.img,
#    base_mac equal to the OVF's adapter 0, `vagrant box add` accepts it);
# 3. the user's steps with vagrant-libvirt (libvirt started without
#    systemd: virtlogd -d; libvirtd -d): vagrant box add, vagrant up
#    --provider=libvirt (the box's own driver line, no override), vagrant
#    ssh -c, vagrant destroy, vagrant box remove and the volume it leaves;
# 4. nothing left: no domain, no volume, no box, no network of ours.
#
# Prints "TIME <s>s: <step>" lines and ends with "VAGRANT LAB OK". Run as
# root. Everything is under WORKDIR (removed by the caller) but the base
# image cache.
set -euo pipefail
KILN=$(readlink -f "$1")
WORK=$(readlink -f "$2")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
NAME=kiln-lab-$$
t() { local s=$SECONDS; "$@"; echo "TIME $((SECONDS - s))s: $*" >&2; }
quiet() { "$@" 2>&1 | tr '\r' '\n' | grep -v -e 'Progress:' -e '^\s*$' || return "${PIPESTATUS[0]}"; }

pub=$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub 2>/dev/null | head -1)
[ -n "$pub" ] || { echo "run.sh: Vagrant's insecure key not found: apt-get install vagrant (scripts/setup.sh)" >&2; exit 1; }
for tool in vagrant virsh libvirtd virtlogd qemu-system-x86_64 qemu-img xmllint; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool missing: run scripts/setup.sh" >&2; exit 1; }
done
vagrant plugin list 2>/dev/null | grep -q vagrant-libvirt || { echo "run.sh: vagrant-libvirt missing: run scripts/setup.sh" >&2; exit 1; }

# 1. base image
base=${KILN_VAGRANT_BASE:-}
if [ -z "$base" ]; then
  if [ -f "$ROOT/examples/seed/output-base/debian-12.qcow2" ]; then
    base=$ROOT/examples/seed/output-base/debian-12.qcow2
  else
    cache=/var/tmp/kiln-vagrant-lab
    base=$cache/debian-12.qcow2
    if [ ! -f "$base" ]; then
      mkdir -p "$cache"
      (cd "$ROOT/examples/seed" && t "$KILN" build -color=false -var "output_directory=$cache/build" base.json)
      mv "$cache/build/debian-12.qcow2" "$base" && rm -rf "$cache/build"
    fi
  fi
fi
echo "base image: $base"

# 2. the box
mkdir -p "$WORK/build"
cd "$WORK/build"
t "$KILN" build -color=false -no-cache -var "base_image=$base" -var "vagrant_pub=$pub" \
  -var "output_directory=$WORK/build/output-box" -var "box=$WORK/kiln.box" -var "vbox=$WORK/kiln-vb.box" "$HERE/box.json"
[ -f "$WORK/kiln.box" ] && [ ! -e "$WORK/build/output-box/box.qcow2" ] || { echo "run.sh: no box, or the input artifact was kept" >&2; exit 1; }
tar -xOzf "$WORK/kiln.box" Vagrantfile | grep -q 'libvirt.driver = "qemu"' || { echo "run.sh: the box's driver is not qemu" >&2; exit 1; }

# The VirtualBox box from the same build, offline (no VirtualBox here): the
# OVF is well-formed XML, the VMDK is stream-optimized, sound and holds the
# same disk as the libvirt box's box.img, base_mac is the OVF's adapter 0.
mkdir -p "$WORK/vb" "$WORK/lv"
tar -xzf "$WORK/kiln-vb.box" -C "$WORK/vb"
tar -xzf "$WORK/kiln.box" -C "$WORK/lv" box.img
xmllint --noout "$WORK/vb/box.ovf"
qemu-img info "$WORK/vb/box-disk001.vmdk" | grep -q 'create type: streamOptimized'
qemu-img check "$WORK/vb/box-disk001.vmdk" >/dev/null
t qemu-img compare "$WORK/vb/box-disk001.vmdk" "$WORK/lv/box.img"
mac=$(grep -o '<Adapter slot="0"[^>]*MACAddress="[0-9A-F]*"' "$WORK/vb/box.ovf" | grep -o '[0-9A-F]\{12\}')
grep -q "config.vm.base_mac = \"$mac\"" "$WORK/vb/Vagrantfile" || { echo "run.sh: base_mac is not the OVF's ($mac)" >&2; exit 1; }
rm -rf "$WORK/vb" "$WORK/lv"
echo "virtualbox box: OVF, VMDK and base_mac $mac checked"

# 3. the user's steps
export VAGRANT_HOME=$WORK/vagrant.d VAGRANT_DEFAULT_PROVIDER=libvirt VAGRANT_NO_COLOR=1
STARTED=()
cleanup() {
  set +e
  (cd "$WORK/proj" 2>/dev/null && vagrant destroy -f >/dev/null 2>&1)
  vagrant box remove -f "$NAME" >/dev/null 2>&1
  vagrant box remove -f "$NAME-vb" >/dev/null 2>&1
  for v in $(virsh -q vol-list default 2>/dev/null | awk -v n="${NAME}_vagrant_box_image_" 'index($1,n)==1{print $1}'); do
    virsh -q vol-delete --pool default "$v" >/dev/null
  done
  if [ -n "${nets_known:-}" ]; then
    for n in $(comm -13 <(echo "$nets_before") <(virsh -q net-list --all --name 2>/dev/null | sort)); do
      virsh -q net-destroy "$n" >/dev/null 2>&1; virsh -q net-undefine "$n" >/dev/null 2>&1
    done
  fi
  for p in "${STARTED[@]}"; do kill "$p" 2>/dev/null; done
}
trap cleanup EXIT
if ! pgrep -x virtlogd >/dev/null; then virtlogd -d; STARTED+=("$(pgrep -nx virtlogd)"); fi
if ! pgrep -x libvirtd >/dev/null; then libvirtd -d; sleep 2; STARTED+=("$(pgrep -nx libvirtd)"); fi
nets_before=$(virsh -q net-list --all --name | sort); nets_known=1

t quiet vagrant box add --name "$NAME-vb" "$WORK/kiln-vb.box"   # reads metadata.json only
vagrant box list | grep -q "^$NAME-vb .*virtualbox" && vagrant box remove -f "$NAME-vb" >/dev/null
t quiet vagrant box add --name "$NAME" "$WORK/kiln.box"
mkdir -p "$WORK/proj" && cd "$WORK/proj"
cat > Vagrantfile <<VF
Vagrant.configure("2") do |config|
  config.vm.box = "$NAME"
  config.vm.synced_folder ".", "/vagrant", disabled: true
  config.vm.boot_timeout = 900
  config.vm.provider :libvirt do |lv|
    # no lv.driver: the box's Vagrantfile says "qemu"
    lv.memory = 1024
    lv.cpus = 2
    lv.default_prefix = "$NAME"
  end
end
VF
t timeout 1200 bash -c "$(declare -f quiet); quiet vagrant up --provider=libvirt" | grep -E 'Domain type|SSH|ready|rror' || true
OUT=$(t vagrant ssh -c 'id -un; sudo -n true && echo sudo-ok; cat /stash/placeholder.txt; systemd-detect-virt || true' 2>/dev/null)
echo "$OUT"
grep -qx 'vagrant' <<<"$OUT" && grep -qx 'sudo-ok' <<<"$OUT" && grep -qx 'kiln' <<<"$OUT" \
  || { echo "run.sh: vagrant ssh did not show user vagrant, sudo and /stash" >&2; exit 1; }
dom=$(virsh -q list --all --name | grep "^$NAME" || true)
xml=$(virsh dumpxml "$dom" 2>&1 || true)   # not piped into grep -q: pipefail and SIGPIPE
grep -q "<domain type=.qemu." <<<"$xml" \
  || { echo "run.sh: the domain ($dom) is not a TCG (type qemu) one: $(head -1 <<<"$xml")" >&2; exit 1; }
t quiet vagrant destroy -f
t quiet vagrant box remove -f "$NAME"
for v in $(virsh -q vol-list default | awk -v n="${NAME}_vagrant_box_image_" 'index($1,n)==1{print $1}'); do
  virsh -q vol-delete --pool default "$v" >/dev/null
done

# 4. nothing left
left=""
virsh -q list --all --name | grep -q "^$NAME" && left+=" domain"
virsh -q vol-list default | grep -q "$NAME" && left+=" volume"
vagrant box list 2>/dev/null | grep -q "^$NAME " && left+=" box"
# vagrant destroy removes the management network it made (vagrant-libvirt)
[ "$(virsh -q net-list --all --name | sort)" = "$nets_before" ] || left+=" network"
[ -z "$left" ] || { echo "run.sh: left behind:$left" >&2; exit 1; }
echo "VAGRANT LAB OK"
