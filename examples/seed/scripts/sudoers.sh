#!/bin/bash -eux
# The seed's sudoers.sh on Debian 12: members of the sudo group use sudo
# without a password. (The seed also set `exempt_group=sudo`, which skips
# sudo's secure_path; on Debian a user's PATH has no sbin directories, so
# that would make `sudo shutdown` "command not found": not done here.)
cat > /etc/sudoers.d/90-sudo-group <<'SUDOERS'
%sudo ALL=(ALL:ALL) NOPASSWD:ALL
SUDOERS
chmod 0440 /etc/sudoers.d/90-sudo-group
visudo -c
