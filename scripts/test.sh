#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the system packages the tests
# need (OpenSSH's sshd for the SFTP tests), then runs every test and ends with one
# line counting all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x scripts/install-test-deps.sh ]; then
    scripts/install-test-deps.sh
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
