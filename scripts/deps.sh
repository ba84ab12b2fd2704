#!/usr/bin/env bash
# Installs what weft's commands need on a Debian-like machine, and nothing when it is all there.
# Shared by scripts/demo.sh, scripts/test.sh, scripts/image.sh, scripts/fresh-check.sh and .ci/run.
#
# Usage: scripts/deps.sh [--check] GROUP...
#   build   compile the workspace (C compiler, protoc and the protobuf well-known types that
#           etcd-client's build script needs) and a Rust toolchain (checked, never downloaded)
#   demo    build + what the demo runs (etcd, iproute2, iptables, nft, the reference CNI plugins)
#   image   build + what scripts/image.sh uses (podman, mmdebstrap, Go and the Go libraries that
#           Debian's containernetworking-plugins source package builds with)
#   test    demo + image + what the tests drive (containerd, runc, iperf3, ethtool, g++ for the
#           fuzzers, kubernetes-validate from PyPI)
#   fresh   what scripts/fresh-check.sh needs on the host (mmdebstrap)
# --check only reports what is missing (exit 1 if anything is), installs nothing.
#
# Quiet when everything is present; otherwise it says what it installs. Needs root to install.
set -euo pipefail

me="scripts/deps.sh"
check_only=0
groups=()
for arg in "$@"; do
    case "$arg" in
        --check) check_only=1 ;;
        build | demo | image | test | fresh) groups+=("$arg") ;;
        -h | --help)
            sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "$me: unknown group '$arg'; use build, demo, image, test or fresh (see $me --help)" >&2
            exit 2
            ;;
    esac
done
[ "${#groups[@]}" -gt 0 ] || groups=(build)

# Debian package names per group. libprotobuf-dev carries google/protobuf/*.proto, which
# protobuf-compiler only recommends: with --no-install-recommends it has to be named.
pkgs_build=(ca-certificates gcc libc6-dev protobuf-compiler libprotobuf-dev git)
pkgs_demo=(etcd-server etcd-client iproute2 iptables nftables iputils-ping procps containernetworking-plugins)
pkgs_image=(podman runc mmdebstrap dpkg-dev xz-utils golang-go
    golang-github-vishvananda-netlink-dev golang-github-coreos-go-iptables-dev
    golang-github-appc-cni-dev golang-github-alexflint-go-filemutex-dev
    golang-github-networkplumbing-go-nft-dev golang-github-safchain-ethtool-dev
    golang-github-coreos-go-systemd-dev golang-github-mattn-go-shellwords-dev
    golang-github-d2g-dhcp4-dev golang-github-d2g-dhcp4client-dev golang-dbus-dev
    golang-golang-x-sys-dev)
pkgs_test=(containerd runc iperf3 ethtool g++ python3 python3-pip)
pkgs_fresh=(mmdebstrap)

want=()
need_rust=0
need_validate=0
for g in "${groups[@]}"; do
    case "$g" in
        build) want+=("${pkgs_build[@]}"); need_rust=1 ;;
        demo) want+=("${pkgs_build[@]}" "${pkgs_demo[@]}"); need_rust=1 ;;
        image) want+=("${pkgs_build[@]}" "${pkgs_image[@]}"); need_rust=1 ;;
        test)
            want+=("${pkgs_build[@]}" "${pkgs_demo[@]}" "${pkgs_image[@]}" "${pkgs_test[@]}")
            need_rust=1
            need_validate=1
            ;;
        fresh) want+=("${pkgs_fresh[@]}") ;;
    esac
done
mapfile -t want < <(printf '%s\n' "${want[@]}" | sort -u)

debian_like() {
    [ -r /etc/os-release ] || return 1
    # shellcheck disable=SC1091
    . /etc/os-release
    case " ${ID:-} ${ID_LIKE:-} " in *" debian "* | *" ubuntu "*) ;; *) return 1 ;; esac
    command -v apt-get >/dev/null && command -v dpkg-query >/dev/null
}

missing=()
if debian_like; then
    # One dpkg-query for all; "ii" in the status column means installed. Packages dpkg has never
    # heard of print nothing (and a complaint on stderr) and so count as missing.
    installed=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${want[@]}" 2>/dev/null |
        awk '$2 == "ii" { print $1 }') || true
    for p in "${want[@]}"; do
        grep -qxF "$p" <<<"$installed" || missing+=("$p")
    done
else
    for p in "${want[@]}"; do missing+=("$p"); done
    if [ "$check_only" = 1 ]; then
        echo "$me: this is not a Debian-like system (no apt-get/dpkg, or /etc/os-release says otherwise); install the equivalents of: ${want[*]}" >&2
        exit 1
    fi
    echo "$me: this is not a Debian-like system (no apt-get/dpkg, or /etc/os-release says otherwise)." >&2
    echo "$me: install the equivalents of these Debian packages yourself, then run the command again: ${want[*]}" >&2
    exit 1
fi

validate_missing=0
if [ "$need_validate" = 1 ] && ! command -v kubernetes-validate >/dev/null; then
    validate_missing=1
fi

if [ "${#missing[@]}" -gt 0 ] || [ "$validate_missing" = 1 ]; then
    what="${missing[*]}"
    [ "$validate_missing" = 1 ] && what="${what:+$what }kubernetes-validate (PyPI)"
    if [ "$check_only" = 1 ]; then
        echo "$me: missing: $what" >&2
        exit 1
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "$me: missing: $what" >&2
        echo "$me: installing them needs root: run 'sudo $me ${groups[*]}' (or the command you ran, with sudo)" >&2
        exit 1
    fi
fi

if [ "${#missing[@]}" -gt 0 ]; then
    echo "$me: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$validate_missing" = 1 ]; then
    # kubernetes-validate checks the rendered manifests against the Kubernetes schemas offline.
    echo "$me: installing kubernetes-validate from PyPI" >&2
    pip_install() { python3 -m pip install -q --disable-pip-version-check "$@" kubernetes-validate==1.37.0; }
    # Debian's own python3 is "externally managed" (PEP 668) and refuses a plain pip install.
    pip_install 2>/dev/null || pip_install --break-system-packages
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
    if ! command -v kubernetes-validate >/dev/null; then
        ln -sf "$scripts/kubernetes-validate" /usr/local/bin/kubernetes-validate
    fi
fi

if [ "$need_rust" = 1 ] && ! command -v cargo >/dev/null; then
    for d in "${CARGO_HOME:-$HOME/.cargo}/bin" /root/.cargo/bin; do
        if [ -x "$d/cargo" ]; then
            echo "$me: cargo is in $d but not on PATH: run 'export PATH=$d:\$PATH' first" >&2
            exit 1
        fi
    done
    echo "$me: no Rust toolchain (cargo) found. Install rustup (https://rustup.rs, or Debian's 'rustup' package on trixie and later); rust-toolchain.toml then selects the pinned toolchain." >&2
    exit 1
fi
exit 0
