#!/usr/bin/env bash
# kiln's main job: on a fresh Debian 12 machine (as root), build the seed's
# example image locally and prove the seed's last step.
#
#   1. install what is needed (scripts/setup.sh: QEMU, mmdebstrap, ...),
#   2. build kiln,
#   3. build the base image (examples/seed/base.json: Debian 12 from
#      packages, kiln's debootstrap builder) unless it exists,
#   4. build the example image (examples/seed/local.json: the base image
#      under QEMU, provisioned by the seed's scripts),
#   5. boot the result (examples/seed/verify.json, on a throwaway overlay)
#      and check that gcc is installed (dpkg -l gcc) and that
#      /stash/placeholder.txt is there.
#
# Nothing is downloaded but Debian packages. The provisioning cache keeps
# the example's states in ~/.cache/kiln (KILN_CACHE_DIR; `kiln cache prune
# -all` empties it). Under software emulation (no
# usable KVM) this takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
step() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "example.sh: run as root (it installs Debian packages, and the base image needs mmdebstrap --mode=root and a loop mount)" >&2
  exit 1
fi

step "Installing what kiln needs (scripts/setup.sh)"
bash scripts/setup.sh

step "Building kiln"
cargo build --release -q -p kiln-cli
kiln="$root/target/release/kiln"

cd examples/seed
base=output-base/debian-12.qcow2
if [ -f "$base" ]; then
  step "Base image $base exists (delete it to rebuild it)"
else
  step "Building the base image (base.json)"
  rm -rf output-base
  "$kiln" build base.json
fi

step "Building the example image (local.json)"
# The provisioning cache is on: the first run saves the machine's state
# after each script; run this again after editing a script under
# examples/seed/scripts and kiln resumes after the last unchanged one.
"$kiln" build -force local.json

step "Checking the image: dpkg -l gcc and /stash/placeholder.txt inside it (verify.json)"
log=$(mktemp)
trap 'rm -f "$log"; rm -rf "$root/examples/seed/output-verify"' EXIT
"$kiln" build -force -no-cache -color=false verify.json | tee "$log"
grep -q 'ii  gcc ' "$log" || { echo "example.sh: gcc is not installed in the image" >&2; exit 1; }
grep -q '/stash/placeholder.txt' "$log" || { echo "example.sh: /stash/placeholder.txt is missing" >&2; exit 1; }

image="$root/examples/seed/output-seed/seed.qcow2"
cat <<MSG

==> Done. The seed's image: $image
    It has gcc (dpkg -l gcc) and /stash/placeholder.txt.
    Edit a script in examples/seed/scripts and run this again: kiln resumes
    from the provisioning cache after the last unchanged script
    (kiln cache list shows the saved states).

To boot it (cloud-init gives the user \`debian\` your SSH key):

  cd $root/examples/seed
  mkdir -p my-seed
  printf '#cloud-config\nssh_authorized_keys:\n  - %s\n' "\$(cat ~/.ssh/id_ed25519.pub)" > my-seed/user-data
  printf 'instance-id: my-vm\nlocal-hostname: my-vm\n' > my-seed/meta-data
  xorriso -as mkisofs -quiet -o my-seed.iso -V cidata -J -r my-seed
  qemu-img create -f qcow2 -b output-seed/seed.qcow2 -F qcow2 my-vm.qcow2
  qemu-system-x86_64 -accel tcg,thread=multi -cpu qemu64 -m 1024 -smp 2 -nographic \\
    -drive file=my-vm.qcow2,if=virtio -drive file=my-seed.iso,media=cdrom \\
    -netdev user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22 -device virtio-net,netdev=n0
  ssh -p 2222 debian@127.0.0.1 dpkg -l gcc

(Use -accel kvm -cpu host instead of -accel tcg,thread=multi -cpu qemu64 where KVM works;
the console is on the terminal, Ctrl-a x quits QEMU. On OpenStack, upload
it with: openstack image create --disk-format qcow2 --file $image seed)
MSG
