#!/bin/bash -eux
# The seed's update.sh on Debian 12: bring every package up to date, then
# reboot into the updated system.
export DEBIAN_FRONTEND=noninteractive

apt-get update
apt-get -y upgrade
apt-get -y dist-upgrade
apt-get -y autoclean
apt-get -y clean

# Reboot, so later scripts run on the upgraded kernel and libraries.
reboot

# Wait for the reboot to take the connection down, otherwise the next
# script races it.
sleep 600
