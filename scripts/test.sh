#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the system packages the tests
# need (OpenSSH's sshd for the SFTP tests, PostgreSQL's server), checks the
# formatting and clippy (warnings are errors; either failing stops here), then
# runs every test, then the conformance suites a second time against a real
# PostgreSQL server (SF2520_TEST_BACKEND=postgres, see tests/support/backend.rs),
# and ends with one line counting the tests of both runs. Fails if either run
# fails.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x scripts/install-test-deps.sh ]; then
    scripts/install-test-deps.sh
fi
# The house rules first (docs/ARCHITECTURE.md, "House rules"): formatting and
# clippy with warnings as errors, the lints of Cargo.toml included. CI has only
# the toolchain, so the two components are added when missing.
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        echo "== installing the $component component ==" >&2
        rustup component add "$component"
    fi
done
echo "== cargo fmt --check =="
cargo fmt --all --check
echo "== cargo clippy --all-targets -- -D warnings =="
cargo clippy --locked --all-targets -- -D warnings
# The suites that run on both backends (docs/reliability.md, "The same promises
# on PostgreSQL").
conformance=(--test ledger --test ledger_model --test export --test crash --test verifier --test export_crash)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked "$@" 2>&1 | tee "$log" || status=$?
echo "== the conformance suites again, on PostgreSQL (SF2520_TEST_BACKEND=postgres) =="
SF2520_TEST_BACKEND=postgres cargo test --locked "${conformance[@]}" "$@" 2>&1 | tee -a "$log" || status=$?
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
