#!/bin/sh
# install-test-deps.sh: installs what the integration tests need, when missing.
#
# tests/sftp.rs starts a real OpenSSH server (/usr/sbin/sshd) and generates
# throwaway keys with ssh-keygen (openssh-server, openssh-client); the triggers it
# writes are validated against KOMBIT's SFTPTypes.xsd with xmllint (libxml2-utils).
# tests/packaging.rs builds the Debian package with cargo-deb (installed from
# crates.io at the pinned version below), dpkg-shlibdeps (dpkg-dev) and strip and
# ar (binutils) through scripts/build-deb.sh, checks its units with
# systemd-analyze (systemd) and its sudo rule with visudo (sudo);
# tests/operations.rs runs sf2520 on a pseudo-terminal with script (bsdutils);
# tests/exactly_once.rs and the simulation step the clock with faketime;
# tests/verifier.rs runs the auditors' reference verifier with python3, and
# tests/report.rs renders the HTML report in a headless chromium;
# tests/pg_harness.rs and the PostgreSQL tests start a real server with Debian's
# postgresql (/usr/lib/postgresql/<version>/bin/initdb, and the postgres user the
# server runs as when the tests run as root; /usr/local/bin/pg_ctl does not count).
# Does nothing when everything is already present, so it is safe to run before
# every test run.
set -eu

missing=""
[ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
command -v ssh-keygen >/dev/null 2>&1 || missing="$missing openssh-client"
command -v xmllint >/dev/null 2>&1 || missing="$missing libxml2-utils"
command -v dpkg-deb >/dev/null 2>&1 || missing="$missing dpkg"
command -v dpkg-shlibdeps >/dev/null 2>&1 || missing="$missing dpkg-dev"
command -v readelf >/dev/null 2>&1 || missing="$missing binutils"
command -v visudo >/dev/null 2>&1 || missing="$missing sudo"
command -v python3 >/dev/null 2>&1 || missing="$missing python3"
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
command -v script >/dev/null 2>&1 || missing="$missing bsdutils"
command -v faketime >/dev/null 2>&1 || missing="$missing faketime"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
# Without recommends chromium brings no font: the report's text would not render.
[ -d /usr/share/fonts/truetype/dejavu ] || missing="$missing fonts-dejavu-core"
# The server itself, not a client or a pg_ctl elsewhere on the PATH.
have_pg_server() {
    for initdb in /usr/lib/postgresql/*/bin/initdb; do
        [ -x "$initdb" ] && return 0
    done
    return 1
}
have_pg_server || missing="$missing postgresql"

# cargo-deb builds the package (scripts/build-deb.sh); pinned, so that the
# package and the checks of tests/packaging.rs do not change under us. No
# RustSec advisory names cargo-deb (checked for 3.8.0).
CARGO_DEB_VERSION=3.8.0
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
    echo "install-test-deps: installing cargo-deb $CARGO_DEB_VERSION from crates.io" >&2
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi

if [ -z "$missing" ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=""
elif command -v sudo >/dev/null 2>&1; then
    as_root="sudo"
else
    echo "install-test-deps: need root or sudo to install:$missing" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: apt-get not found; install$missing by hand" >&2
    exit 1
fi

echo "install-test-deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# apt-get talks a lot even with -qq (debconf notes); keep its output for failures only.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# shellcheck disable=SC2086 # $missing is a list of package names on purpose.
if ! { $as_root apt-get update -qq && $as_root apt-get install -y -qq --no-install-recommends $missing; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install-test-deps: apt-get failed installing$missing" >&2
    exit 1
fi

[ -x /usr/sbin/sshd ] || { echo "install-test-deps: /usr/sbin/sshd still missing" >&2; exit 1; }
command -v ssh-keygen >/dev/null 2>&1 || { echo "install-test-deps: ssh-keygen still missing" >&2; exit 1; }
for tool in xmllint dpkg-deb dpkg-shlibdeps readelf visudo python3 systemd-analyze script faketime chromium; do
    command -v "$tool" >/dev/null 2>&1 || { echo "install-test-deps: $tool still missing" >&2; exit 1; }
done
have_pg_server || { echo "install-test-deps: /usr/lib/postgresql/*/bin/initdb still missing" >&2; exit 1; }
