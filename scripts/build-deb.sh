#!/bin/sh
# build-deb.sh: builds the sf2520 Debian package with cargo-deb, from the
# [package.metadata.deb] table of Cargo.toml.
#
#   scripts/build-deb.sh [--profile PROFILE] [--no-build] [--out DIR] [--fast]
#
# Builds the binary (`cargo build --locked`, profile release unless --profile;
# --no-build packages the one already built), writes the manual pages and shell
# completions with that binary (`sf2520 generate`) into
# <target-dir>/<profile>/generated/, then runs `cargo deb --no-build --strip`,
# which strips the binary, computes Depends, writes md5sums, copyright and the
# changelog, and adds DEBIAN/md5sums. The target directory is cargo's (CARGO_TARGET_DIR is respected).
# Prints the path of the .deb it wrote (default DIR: <target-dir>/debian).
# --fast compresses with gzip at a low level (for tests).
#
# Needs cargo-deb (scripts/install-test-deps.sh installs the pinned version),
# dpkg-dev (dpkg-shlibdeps, for Depends) and binutils (strip, ar).
set -eu
cd "$(dirname "$0")/.."

profile="release"
build=yes
out=""
fast=""
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile="$2"; shift 2 ;;
        --no-build) build=no; shift ;;
        --out) out="$2"; shift 2 ;;
        --fast) fast=yes; shift ;;
        *) echo "build-deb: unknown argument $1 (expected --profile PROFILE, --no-build, --out DIR, --fast)" >&2; exit 2 ;;
    esac
done
cargo deb --version >/dev/null 2>&1 || {
    echo "build-deb: cargo-deb not found (scripts/install-test-deps.sh installs it)" >&2
    exit 1
}

# cargo's own idea of the target directory: CARGO_TARGET_DIR, .cargo/config, or target/.
target_dir=$(cargo metadata --format-version 1 --no-deps --locked \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target_dir" ] || { echo "build-deb: cannot find cargo's target directory" >&2; exit 1; }
case "$profile" in
    dev) profile_dir="debug" ;;
    *) profile_dir="$profile" ;;
esac
[ -n "$out" ] || out="$target_dir/debian"

if [ "$build" = yes ]; then
    cargo build --locked --profile "$profile" --bin sf2520 >&2
fi
binary="$target_dir/$profile_dir/sf2520"
[ -x "$binary" ] || { echo "build-deb: $binary is not an executable (build it, or drop --no-build)" >&2; exit 1; }

# The manual pages and completions come from the binary being packaged.
generated="$target_dir/$profile_dir/generated"
rm -rf "$generated"
"$binary" generate --out "$generated" >&2
# Debian's policy: manual pages gzipped (cargo-deb compresses only files of its own).
gzip -9n "$generated"/man/*.1

mkdir -p "$out"
if [ -n "$fast" ]; then
    set -- --fast --compress-type gz --compress-system
else
    set --
fi
cargo deb --no-build --locked --strip --profile "$profile" --output "$out" "$@" >&2
# cargo-deb names the file <name>_<version>-<revision>_<arch>.deb; the newest is ours.
deb=$(ls -t "$out"/sf2520_*.deb | head -n 1)
deb=$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")

# cargo-deb (3.x) writes no DEBIAN/md5sums, which `dpkg --verify` and debsums
# check installed files against: add it to the control archive, leaving the
# data archive's bytes as cargo-deb compressed them.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/control" "$work/data"
(cd "$work" && ar x "$deb")
tar -xf "$work"/control.tar.* -C "$work/control"
tar -xf "$work"/data.tar.* -C "$work/data"
(cd "$work/data" && find . -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$work/control/md5sums"
chmod 0644 "$work/control/md5sums"
rm "$work"/control.tar.*
tar --owner=0 --group=0 --numeric-owner --sort=name -czf "$work/control.tar.gz" -C "$work/control" .
rm "$deb"
(cd "$work" && ar rcD "$deb" debian-binary control.tar.gz data.tar.*)
echo "$deb"
