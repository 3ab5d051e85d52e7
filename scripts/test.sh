#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine, as root:
#   1. install what the tests need (scripts/setup.sh: Debian packages),
#   2. formatting and clippy,
#   3. every test, including the real-VM suite (QEMU under TCG) and the
#      OpenStack suite against real services started on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

step "Installing test dependencies"
bash scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

# The slow suites run only when asked; here they are asked, and when asked
# they never skip.
export KILN_VM_TESTS=1

step "cargo test"
cargo test --workspace --no-fail-fast 2>&1 | tee "${TMPDIR:-/tmp}/kiln-test.log"
status=${PIPESTATUS[0]}
# One closing line for the whole run.
passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "${TMPDIR:-/tmp}/kiln-test.log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "${TMPDIR:-/tmp}/kiln-test.log" | awk '{s+=$1} END {print s+0}')
echo
echo "${passed} passed, ${failed} failed"
exit "$status"
