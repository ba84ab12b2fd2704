#!/usr/bin/env bash
# Proves that the two commands work from a clean machine: makes a fresh Debian 12 root file
# system with mmdebstrap (minbase: apt, bash, coreutils, nothing else), copies this work tree into
# it, and runs there, as root in a chroot (private mount namespace):
#   scripts/deps.sh test                 the dependency step of the demo, the tests and CI
#   cargo build --release --locked --bins  the demo's build
#   target/release/weftd --version, weft --version, weft-cni (VERSION)
# The Rust toolchain is this machine's, mounted read-only (rustup cannot fetch one here); cargo's
# registry starts empty inside, so every crate comes from crates.io as on a new machine.
#
# Usage: sudo scripts/fresh-check.sh [--keep]   (--keep leaves the rootfs in target/fresh-check)
# Takes about 10 minutes on 2 cores (most of it the release build).
set -euo pipefail
cd "$(dirname "$0")/.."
me="scripts/fresh-check.sh"
keep=0
[ "${1:-}" = --keep ] && keep=1
. ./scripts/common.sh
require_root "$me" "mmdebstrap and chroot need root"
./scripts/deps.sh fresh

rustup_home="${RUSTUP_HOME:-$HOME/.rustup}"
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
[ -x "$cargo_bin/cargo" ] || { echo "$me: no cargo in $cargo_bin; set CARGO_HOME" >&2; exit 1; }
[ -d "$rustup_home/toolchains" ] || { echo "$me: no rustup toolchains in $rustup_home; set RUSTUP_HOME" >&2; exit 1; }

root="$PWD/target/fresh-check/rootfs"
started=$(date +%s)
cleanup() {
    # The mounts live in the unshared namespace and die with it; only the files remain.
    [ "$keep" = 1 ] || rm -rf "$root"
}
trap cleanup EXIT
rm -rf "$root"
mkdir -p "$(dirname "$root")"
echo "$me: making a Debian 12 minbase rootfs" >&2
mmdebstrap --quiet --variant=minbase bookworm "$root" http://deb.debian.org/debian

echo "$me: copying the work tree (tracked and new files, as they are now)" >&2
mkdir -p "$root/src"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$root/src"
mkdir -p "$root/root/.rustup" "$root/root/.cargo/bin"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# Local CAs this machine trusts (a TLS-inspecting proxy's, say) go along, or crates.io and PyPI
# would be unreachable from the rootfs; ca-certificates, installed by the dependency step, adds
# them to the system store as it does on any machine. A machine without such a proxy has none.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$root/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
fi

unshare --mount --fork bash -euo pipefail -c '
    root="$1"; rustup_home="$2"; cargo_bin="$3"
    mount --make-rprivate /
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount -t sysfs sys "$root/sys"
    mount -t tmpfs tmpfs "$root/tmp"
    mount --bind "$rustup_home" "$root/root/.rustup"
    mount -o remount,bind,ro "$root/root/.rustup"
    mount --bind "$cargo_bin" "$root/root/.cargo/bin"
    mount -o remount,bind,ro "$root/root/.cargo/bin"
    exec chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb \
        PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        RUSTUP_HOME=/root/.rustup CARGO_HOME=/root/.cargo \
        bash -euo pipefail -c "
            cd /src
            echo \"fresh-check: \$(. /etc/os-release; echo \$PRETTY_NAME), \$(dpkg-query -W -f=. | wc -c) packages before\"
            t0=\$(date +%s)
            ./scripts/deps.sh test
            echo \"fresh-check: dependency step took \$((\$(date +%s) - t0)) s, \$(dpkg-query -W -f=. | wc -c) packages after\"
            ./scripts/deps.sh test
            echo \"fresh-check: second dependency step (nothing to do) done\"
            t0=\$(date +%s)
            cargo build --release --locked --bins
            echo \"fresh-check: release build took \$((\$(date +%s) - t0)) s\"
            target/release/weftd --version
            target/release/weft --version
            CNI_COMMAND=VERSION target/release/weft-cni </dev/null; echo
            command -v etcd protoc kubernetes-validate containerd podman
        "
' fresh-check "$root" "$rustup_home" "$cargo_bin"
echo "$me: passed in $(($(date +%s) - started)) s" >&2
