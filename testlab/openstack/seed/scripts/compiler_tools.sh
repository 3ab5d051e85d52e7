#!/bin/bash
# Harmless stand-in for the seed's scripts/compiler_tools.sh: the lab's "instance" is
# this machine, so it only reports who runs it.
set -e
echo "compiler_tools.sh: running as $(id -un)"
