#!/bin/bash
# The seed's minimize.sh on Debian 12: only for Vagrant boxes (a `vagrant`
# user exists); everywhere else it does nothing.
id vagrant >/dev/null 2>&1 || exit 0
set -eux
export DEBIAN_FRONTEND=noninteractive

# Packages a box does not need.
apt-get -y autoremove --purge
apt-get -y clean
apt-get -y autoclean

# No shell history, empty logs.
unset HISTFILE
rm -f /root/.bash_history /home/vagrant/.bash_history
find /var/log -type f -exec truncate -s 0 {} +

# Zero the free space so the image compresses well.
dd if=/dev/zero of=/EMPTY bs=1M || true
rm -f /EMPTY
sync

# Zero the swap partition, if there is one.
swappart=$(awk 'NR > 1 && $2 == "partition" {print $1; exit}' /proc/swaps)
if [ -n "${swappart}" ]; then
  swapoff "${swappart}"
  dd if=/dev/zero of="${swappart}" bs=1M || true
  mkswap "${swappart}"
  swapon "${swappart}"
fi
