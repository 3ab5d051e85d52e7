#!/bin/bash -eux
# The seed's compiler_tools.sh on Debian 12: a C compiler and what it
# needs to build programs.
echo scripts/compiler_tools.sh
export DEBIAN_FRONTEND=noninteractive

apt-get update
apt-get -y install --no-install-recommends gcc make libc6-dev
apt-get -y clean
