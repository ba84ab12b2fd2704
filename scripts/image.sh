#!/usr/bin/env bash
# Builds the weft container image: localhost/weft:<version> and localhost/weft:dev.
#
# Usage: sudo scripts/image.sh [--debug] [--oci-archive FILE]
#   --debug             use debug builds of the binaries (what the tests use: no release build)
#   --oci-archive FILE  also write the image as an OCI archive, for `ctr -n k8s.io images import
#                       FILE` on a node or `skopeo copy oci-archive:FILE docker://REGISTRY/weft:TAG`
#
# What is in it, and why (see README.md, "The container image"):
#   /usr/local/bin/weftd, weft        the daemon and the CLI (glibc, dynamically linked against
#                                     the image's own Debian 12 libc)
#   /usr/local/bin/weft-cni           the CNI plugin, statically linked: install-cni copies it to
#                                     the host, which may have an older glibc (AL2: 2.26)
#   /usr/lib/weft/cni/{bridge,host-local,loopback,portmap}
#                                     the reference CNI plugins weft-cni delegates to, built from
#                                     Debian's containernetworking-plugins source package with
#                                     CGO_ENABLED=0 (static, as upstream releases them): Debian's
#                                     own binaries need glibc 2.34
#   iproute2, iptables (legacy and nft), nft
#                                     from Debian 12 packages, unpacked (not installed) by
#                                     mmdebstrap into a FROM-scratch image: no shell, no apt, no dpkg
# The entrypoint is weftd (no shell); the DaemonSet's init container runs `weft install-cni`.
# Caches (rootfs, plugins, Go build cache) live under target/image/.
set -euo pipefail
cd "$(dirname "$0")/.."
me="scripts/image.sh"

profile=release
archive=""
while [ $# -gt 0 ]; do
    case "$1" in
        --debug) profile=debug ;;
        --oci-archive)
            [ $# -ge 2 ] || { echo "$me: --oci-archive needs a file name, e.g. --oci-archive weft.tar" >&2; exit 2; }
            archive="$2"
            shift
            ;;
        --oci-archive=*) archive="${1#*=}" ;;
        -h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "$me: unknown argument '$1' (see $me --help)" >&2; exit 2 ;;
    esac
    shift
done
. ./scripts/common.sh
require_root "$me" "building the image uses rootful podman and mmdebstrap"
./scripts/deps.sh image

suite=bookworm
mirror="${WEFT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
version=$(cargo pkgid -p weftd | sed 's/.*[#@]//')
triple=$(rustc -vV | sed -n 's/^host: //p')
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
[ -z "$(git status --porcelain 2>/dev/null)" ] || revision="$revision-dirty"
cache=target/image
mkdir -p "$cache"

# --- 1. The binaries -----------------------------------------------------------------------
cargo_profile=()
[ "$profile" = release ] && cargo_profile=(--release)
cargo build "${cargo_profile[@]}" --locked -p weftd -p weft --bins
# crt-static through the target's RUSTFLAGS only: with --target, build scripts and proc macros
# are built for the host without it.
triple_var=$(echo "$triple" | tr 'a-z-' 'A-Z_')
env "CARGO_TARGET_${triple_var}_RUSTFLAGS=-C target-feature=+crt-static" \
    cargo build "${cargo_profile[@]}" --locked -p weft-cni --target "$triple"
bins=target/$profile
cni_bin=target/$triple/$profile/weft-cni
if readelf -l "$cni_bin" | grep -q 'Requesting program interpreter'; then
    echo "$me: $cni_bin still asks for a dynamic loader; the static build did not take" >&2
    exit 1
fi

# --- 2. The reference CNI plugins, static ---------------------------------------------------
plugins=(bridge host-local loopback portmap)
src_pkg=golang-github-containernetworking-plugins
apt_dir="$cache/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/sources"
cat >"$apt_dir/sources/deb-src.sources" <<EOF
Types: deb-src
URIs: $mirror
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
apt_opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$PWD/$apt_dir/sources"
    -o "Dir::State::Lists=$PWD/$apt_dir/lists" -o "Dir::Cache=$PWD/$apt_dir"
    -o "APT::Sandbox::User=root")
# The version Debian's binary package has is the one whose source we build.
src_version=$(dpkg-query -W -f='${source:Version}' containernetworking-plugins)
upstream="v${src_version%%+*}"
upstream="${upstream%%-*}"
plugin_dir="$cache/cni-plugins-$src_version"
have_plugins() {
    local p
    for p in "${plugins[@]}"; do [ -x "$plugin_dir/$p" ] || return 1; done
}
if ! have_plugins; then
    echo "$me: building the CNI plugins $upstream from Debian's $src_pkg $src_version (static)" >&2
    work="$cache/cni-src"
    rm -rf "$work" "$plugin_dir.tmp"
    mkdir -p "$work" "$plugin_dir.tmp"
    apt-get "${apt_opts[@]}" -qq update
    (cd "$work" && apt-get "${apt_opts[@]}" -qq source --download-only "$src_pkg=$src_version" >/dev/null)
    # apt-get source checked the files against the signed Sources index already.
    (cd "$work" && dpkg-source --no-check -x ./*.dsc src >/dev/null)
    gopath="$PWD/$work/gopath"
    gocache="$PWD/$cache/go-cache"
    out="$PWD/$plugin_dir.tmp"
    mkdir -p "$gopath/src/github.com/containernetworking"
    mv "$work/src" "$gopath/src/github.com/containernetworking/plugins"
    for p in "${plugins[@]}"; do
        dir=$(cd "$gopath/src/github.com/containernetworking/plugins" && ls -d plugins/*/"$p")
        (cd "$gopath/src/github.com/containernetworking/plugins" &&
            GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" CGO_ENABLED=0 GOCACHE="$gocache" \
                go build -trimpath \
                -ldflags "-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$upstream" \
                -o "$out/$p" "./$dir")
    done
    rm -rf "$plugin_dir" && mv "$plugin_dir.tmp" "$plugin_dir"
    rm -rf "$work"
fi

# --- 3. The Debian userland (iproute2, iptables, nft) ---------------------------------------
packages=(libc6 iproute2 iptables nftables)
rootfs="$cache/rootfs-$suite-$(printf '%s\n' "${packages[@]}" | sha256sum | cut -c1-12)"
if [ ! -x "$rootfs/usr/sbin/xtables-nft-multi" ]; then
    echo "$me: unpacking ${packages[*]} from Debian $suite with mmdebstrap" >&2
    rm -rf "$rootfs" "$rootfs.tmp"
    # extract: unpack the packages and their dependencies, run no maintainer script.
    mmdebstrap --quiet --variant=extract --include="$(IFS=,; echo "${packages[*]}")" \
        "$suite" "$rootfs.tmp" "$mirror"
    r="$rootfs.tmp"
    # Not needed at run time: documentation, locales, character set converters, debconf's Perl,
    # the package database (the image is never updated in place).
    rm -rf "$r"/usr/share/{doc,man,info,locale,lintian,perl5,bash-completion,zsh} \
        "$r"/usr/lib/x86_64-linux-gnu/gconv "$r"/usr/lib/*/gconv "$r"/var/cache/* "$r"/var/lib/apt "$r"/var/lib/dpkg \
        "$r"/usr/sbin/dpkg-* "$r"/usr/bin/debconf* "$r"/usr/share/debconf
    # What update-alternatives would have set up: the plain names use nft like Debian 12 does.
    # weftd itself picks the backend the host uses (README: the host's iptables backend).
    for t in iptables ip6tables; do
        for s in "" -save -restore; do
            ln -sf "$t-nft$s" "$r/usr/sbin/$t$s"
        done
    done
    mkdir -p "$r/run" "$r/var/lib/weft" "$r/etc/cni/net.d" "$r/opt/cni/bin"
    mv "$r" "$rootfs"
fi
# libc.so.6 run as a program prints its version.
image_glibc=$("$(find "$rootfs" -name libc.so.6 | head -1)" | sed -n '1s/.*release version \([0-9.]*[0-9]\).*/\1/p')
host_glibc=$(getconf GNU_LIBC_VERSION | awk '{print $2}')
if [ "$(printf '%s\n%s\n' "$host_glibc" "$image_glibc" | sort -V | tail -1)" != "$image_glibc" ]; then
    echo "$me: this machine's glibc $host_glibc is newer than the image's ($image_glibc, Debian $suite): weftd and weft built here would not start in the image; build on Debian 12" >&2
    exit 1
fi

# --- 4. The image ---------------------------------------------------------------------------
ctx=$(mktemp -d "$PWD/$cache/context.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
cp -a "$rootfs" "$ctx/rootfs"
mkdir -p "$ctx/bin" "$ctx/cni"
cp "$bins/weftd" "$bins/weft" "$ctx/bin/"
cp "$cni_bin" "$ctx/bin/weft-cni"
cp "${plugins[@]/#/$plugin_dir/}" "$ctx/cni/"
# Symbols are most of a debug binary and 1.4 MB of each release one; nothing in the image needs
# them (the unstripped binaries stay in target/).
strip "$ctx"/bin/*
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
cat >"$ctx/Containerfile" <<EOF
FROM scratch
COPY rootfs/ /
COPY cni/ /usr/lib/weft/cni/
COPY bin/ /usr/local/bin/
ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL org.opencontainers.image.title="weft" \\
      org.opencontainers.image.description="weftd (a flanneld drop-in with etcd v3 leases), weft-cni (CNI type flannel), weft (operator CLI), the reference CNI plugins, iproute2, iptables (legacy and nft), nft" \\
      org.opencontainers.image.version="$version" \\
      org.opencontainers.image.revision="$revision" \\
      org.opencontainers.image.created="$created" \\
      org.opencontainers.image.licenses="Apache-2.0" \\
      org.opencontainers.image.base.name="scratch" \\
      io.weft.cni-plugins.version="$upstream" \\
      io.weft.debian.suite="$suite" \\
      io.weft.build.profile="$profile"
ENTRYPOINT ["/usr/local/bin/weftd"]
EOF
podman build --quiet --network none -t "localhost/weft:$version" -t localhost/weft:dev "$ctx" >/dev/null
size=$(podman image inspect --format '{{.Size}}' "localhost/weft:$version")
echo "$me: built localhost/weft:$version and localhost/weft:dev ($profile binaries, $((size / 1024 / 1024)) MiB uncompressed, CNI plugins $upstream)"
if [ -n "$archive" ]; then
    rm -f "$archive"
    podman save --quiet --format oci-archive -o "$archive" "localhost/weft:$version"
    echo "$me: wrote $archive ($(($(stat -c %s "$archive") / 1024 / 1024)) MiB); load it on a node with: ctr -n k8s.io images import $archive"
fi
