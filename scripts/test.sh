#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the system packages the tests
# need (OpenSSH's sshd for the SFTP tests), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x scripts/install-test-deps.sh ]; then
    scripts/install-test-deps.sh
fi
cargo test --locked "$@"
