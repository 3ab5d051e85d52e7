#!/bin/bash -eux
# The seed's prepare_data.sh: a directory anyone may write, for the data
# the file provisioner uploads next.
mkdir -p /stash
chmod 777 /stash
