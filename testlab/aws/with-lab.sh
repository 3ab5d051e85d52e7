#!/bin/bash
# usage: with-lab.sh ROOT COMMAND [ARGS...]
# Start the AWS lab under ROOT (up.sh), run COMMAND with KILN_AWS_LAB=ROOT,
# stop the lab (down.sh) whatever happens, exit with COMMAND's status.
set -uo pipefail
R=${1:?usage: with-lab.sh ROOT COMMAND...}; shift
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$R"
trap 'bash "$HERE/down.sh" "$R" >/dev/null 2>&1' EXIT
trap 'exit 130' INT TERM
if ! bash "$HERE/up.sh" "$R" > "$R.up.log" 2>&1; then
  echo "aws lab failed to start; last lines of $R.up.log:" >&2
  tail -30 "$R.up.log" >&2
  exit 1
fi
KILN_AWS_LAB="$R" "$@"
