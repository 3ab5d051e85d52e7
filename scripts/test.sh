#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine, as root:
#   1. install what the tests need (scripts/setup.sh: Debian packages),
#   2. formatting and clippy,
#   3. every test, including the slow ones `cargo test` ignores by default:
#      real images built with mmdebstrap, real QEMU guests under TCG, and
#      the OpenStack suite against real services that testlab/openstack
#      starts on loopback, and the AWS suite against the local EC2/S3 that
#      testlab/aws starts (moto, a fault-injection proxy, an sshd); both
#      labs are stopped afterwards, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "test.sh: run as root (it installs Debian packages, starts sshd and OpenStack services, loop-mounts images)" >&2
  exit 1
fi

step "Installing test dependencies (scripts/setup.sh)"
bash scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "Building the tests"
cargo test --workspace --no-run

# One Debian 12 base image (examples/seed/base.json, kiln's debootstrap
# builder, about a minute) for every test that boots it: the qemu builder's
# VM tests, the CM provisioners' guest test, the Vagrant lab. (The seed
# example's test builds its own: building base.json is part of what it
# checks.)
step "Base image for the guest tests"
base_dir=$PWD/target/tmp/kiln-base-shared
if [ ! -f "$base_dir/debian-12.qcow2" ]; then
  (cd examples/seed && ../../target/debug/kiln build -color=false -force \
    -var "output_directory=$base_dir" base.json)
fi
export KILN_TEST_BASE_IMAGE=$base_dir/debian-12.qcow2
export KILN_VAGRANT_BASE=$base_dir/debian-12.qcow2

lab=${KILN_LAB_ROOT:-/tmp/kiln-oslab}
awslab=${KILN_AWS_LAB_ROOT:-/tmp/kiln-awslab}
log=$(mktemp)
step "cargo test --workspace -- --include-ignored (OpenStack lab in $lab, AWS lab in $awslab)"
set +e
bash testlab/openstack/with-lab.sh "$lab" \
  bash testlab/aws/with-lab.sh "$awslab" \
  cargo test --workspace --no-fail-fast -- --include-ignored 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run.
passed=$(grep -Eo 'test result: [A-Za-z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ passed; [0-9]+ failed' "$log" | awk '{s+=$3} END {print s+0}')
rm -f "$log"
echo
echo "${passed} passed, ${failed} failed"
if [ "$status" = 0 ] && [ "$failed" != 0 ]; then status=1; fi
if [ "$passed" = 0 ]; then echo "test.sh: no test ran" >&2; status=1; fi
exit "$status"
