#!/usr/bin/env bash
# Installs the Debian packages kiln's builds and tests need. Idempotent; run
# as root on Debian 12, no stdin needed. Keep this a simple list: engineers
# add the packages their crates need.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

packages=(
  # qemu builder: QEMU itself and qemu-img. Install both together: on its
  # own, qemu-system-x86 (7.2) removes a newer qemu-utils from backports.
  qemu-system-x86
  qemu-utils
  # cd_files / the cloud-init NoCloud seed as an ISO
  xorriso
  # debootstrap builder: root file system, partition table, bootloader
  mmdebstrap
  fdisk
  e2fsprogs
  extlinux
  syslinux-common
  # SSH: a real sshd for communicator tests, ssh-keygen
  openssh-server
  openssh-client
  # the test user's passwordless sudo (kiln-testkit), GNU tar on the target
  sudo
  tar
  # the OpenStack lab (testlab/openstack): MariaDB, RabbitMQ, a Python venv
  # for the services, and a compiler for their C extensions
  mariadb-server
  rabbitmq-server
  python3-venv
  build-essential
  curl
  # (the AWS lab, testlab/aws, needs nothing more: python3-venv for its
  # pinned venv of moto and the AWS CLI, openssh-server, sudo, curl, and
  # qemu-utils' qemu-img and qemu-io for the test disks)
  # HashiCorp Packer 1.6.6: the oracle for template behaviour and speed
  packer
  # boot_command (kiln-bootcommand's guest tests) and the seed's installer
  # ISO (examples/seed/make-installer-iso.sh): a BIOS boot loader for ISOs,
  # Debian 12's installer kernel and initrd, a static busybox for a tiny
  # initramfs (xorriso and syslinux-common are listed above)
  isolinux
  debian-installer-12-netboot-amd64
  busybox-static
  # floppy_files: kiln writes the FAT image itself; mtools reads it back in
  # kiln-commonsteps' tests (an independent FAT implementation)
  mtools
  # configuration-management provisioners (kiln-provisioners-cm): Ansible
  # (ansible-core: ansible-playbook without the 500 MB of collections) and
  # Puppet 7 (`puppet apply`); Salt is not in Debian 12: its tests install
  # it from PyPI into a venv of their own
  ansible-core
  puppet-agent
  # salt-masterless `formulas` are cloned with git
  git
  # --- vagrant (kiln-vagrant's tests, testlab/vagrant) ---
  # `vagrant up --provider=libvirt` of boxes kiln makes: Vagrant 2.3.4 and
  # vagrant-libvirt 0.11.2, libvirt (started without systemd by
  # testlab/vagrant/run.sh), its NAT network's dnsmasq and iptables
  # (qemu-system-x86 and qemu-utils, listed above, are installed with
  # them); xmllint checks the VirtualBox box's OVF
  vagrant
  vagrant-libvirt
  libvirt-daemon-system
  dnsmasq-base
  iptables
  libxml2-utils
  # --- end vagrant ---
)

if [ "$(id -u)" != 0 ]; then
  echo "setup.sh: run as root (it installs Debian packages)" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -q
  # All at once, so apt resolves them together. qemu-utils comes from
  # bookworm like qemu-system-x86: a newer qemu-utils (backports, as on
  # these machines) Breaks bookworm's qemu-system-common, so it is
  # downgraded to match.
  apt-get install -y -q --no-install-recommends --allow-downgrades \
    "${packages[@]/#qemu-utils/qemu-utils/bookworm}" </dev/null
fi
echo "setup.sh: all ${#packages[@]} packages installed"
