#!/bin/sh
# build-deb.sh: builds the sf2520 Debian package with dpkg-deb, from the
# [package.metadata.deb] table of Cargo.toml (cargo-deb's format, so
# `cargo deb` builds the same package where cargo-deb is installed).
#
#   scripts/build-deb.sh [--binary PATH] [--out DIR] [--fast]
#
# Without --binary it runs `cargo build --release --locked` and packages
# target/release/sf2520. Prints the path of the .deb it wrote (default DIR:
# target/debian). --fast compresses at gzip level 1 (for tests, which package
# the large debug binary). Needs dpkg-deb and python3 (3.11+, for tomllib).
set -eu
cd "$(dirname "$0")/.."

binary=""
out="target/debian"
level=9
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --fast) level=1; shift ;;
        *) echo "build-deb: unknown argument $1 (expected --binary PATH, --out DIR, --fast)" >&2; exit 2 ;;
    esac
done
if [ -z "$binary" ]; then
    cargo build --release --locked >&2
    binary="target/release/sf2520"
fi
[ -x "$binary" ] || { echo "build-deb: $binary is not an executable" >&2; exit 1; }
command -v dpkg-deb >/dev/null 2>&1 || { echo "build-deb: dpkg-deb not found (apt-get install dpkg)" >&2; exit 1; }

stage=$(mktemp -d)
chmod 0755 "$stage"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$out"

# Lays out the package tree in $stage and writes DEBIAN/control and conffiles.
BINARY="$binary" STAGE="$stage" ARCH="$(dpkg --print-architecture)" python3 - <<'PY'
import os, shutil, stat, tomllib

with open("Cargo.toml", "rb") as handle:
    cargo = tomllib.load(handle)
package = cargo["package"]
deb = package["metadata"]["deb"]
stage = os.environ["STAGE"]
installed_bytes = 0
for source, destination, mode in deb["assets"]:
    if source == "target/release/sf2520":
        source = os.environ["BINARY"]
    target = os.path.join(stage, destination)
    if destination.endswith("/"):
        target = os.path.join(target, os.path.basename(source))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(source, target)
    os.chmod(target, int(mode, 8))
    installed_bytes += os.path.getsize(target)
debian = os.path.join(stage, "DEBIAN")
os.makedirs(debian)
scripts = deb["maintainer-scripts"]
for name in ("postinst", "prerm", "postrm"):
    path = os.path.join(scripts, name)
    if os.path.exists(path):
        shutil.copyfile(path, os.path.join(debian, name))
        os.chmod(os.path.join(debian, name), 0o755)
with open(os.path.join(debian, "conffiles"), "w") as handle:
    handle.writelines(f"{path}\n" for path in deb["conf-files"])
description = deb["extended-description"].split()
lines = []
line = ""
for word in description:
    if len(line) + len(word) + 1 > 78:
        lines.append(line)
        line = word
    else:
        line = f"{line} {word}".strip()
lines.append(line)
control = {
    "Package": package["name"],
    "Version": package["version"],
    "Architecture": os.environ["ARCH"],
    "Maintainer": deb["maintainer"],
    "Installed-Size": str((installed_bytes + 1023) // 1024),
    "Depends": deb["depends"],
    "Recommends": deb["recommends"],
    "Section": deb["section"],
    "Priority": deb["priority"],
    "Description": package["description"] + "".join(f"\n {l}" for l in lines),
}
with open(os.path.join(debian, "control"), "w") as handle:
    handle.writelines(f"{key}: {value}\n" for key, value in control.items())
PY

version=$(sed -n 's/^Version: //p' "$stage/DEBIAN/control")
arch=$(sed -n 's/^Architecture: //p' "$stage/DEBIAN/control")
deb="$out/sf2520_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zgzip -z"$level" --build "$stage" "$deb" >&2
echo "$deb"
