#!/usr/bin/env bash
# The benchmark command: builds the release binaries, runs every weft-bench scenario on the
# namespaced testbed and rewrites its tables in BENCHMARKS.md (between the
# `<!-- bench:<name>:begin/end -->` markers; the prose around them is kept). Needs root.
# About 13 minutes on 2 cores. Extra arguments go to every scenario, e.g.
#   sudo scripts/bench.sh --quick        # tiny sizes, to check the harness (~1 minute)
# A scenario whose measurement breaks still gets its section (saying so); the script then
# exits non-zero. A goal that is missed is only printed.
set -euo pipefail
cd "$(dirname "$0")/.."

. ./scripts/common.sh
require_root scripts/bench.sh "the benchmarks build network namespaces and need root"
for tool in etcd etcdctl ip bridge iptables-save iptables-restore iperf3 ping getconf; do
    command -v "$tool" >/dev/null || { echo "scripts/bench.sh: $tool is missing; install the packages listed in .ci/run (and iperf3)" >&2; exit 1; }
done
if ! command -v ethtool >/dev/null; then
    echo "scripts/bench.sh: ethtool is missing, so the dataplane tunings are skipped; install it with: apt-get install ethtool" >&2
fi

BUILD="cargo build --release --bins"
$BUILD
BIN=target/release/weft-bench
MD=BENCHMARKS.md

if [ ! -f "$MD" ]; then
    printf '# Benchmarks\n\nWritten by scripts/bench.sh.\n' > "$MD"
fi

# Replaces the lines between the markers of section $1 with the contents of file $2
# (appending the markers at the end when the file has none yet).
replace_section() {
    local begin="<!-- bench:$1:begin -->" end="<!-- bench:$1:end -->"
    if ! grep -qxF "$begin" "$MD"; then
        printf '\n%s\n%s\n' "$begin" "$end" >> "$MD"
    fi
    awk -v b="$begin" -v e="$end" -v f="$2" '
        $0 == b { print; while ((getline line < f) > 0) print line; close(f); skip = 1; next }
        $0 == e { skip = 0 }
        !skip { print }
    ' "$MD" > "$MD.tmp"
    mv "$MD.tmp" "$MD"
}

machine=$(mktemp)
trap 'rm -f "$machine" "$machine".*' EXIT
{
    echo "Run by \`sudo scripts/bench.sh${*:+ $*}\` (build: \`$BUILD\`) on $(date -u '+%Y-%m-%d %H:%M UTC')."
    echo
    echo "| machine | |"
    echo "|---|---|"
    echo "| nproc | $(nproc) |"
    echo "| kernel (uname -r) | $(uname -r) |"
    echo "| CPU (/proc/cpuinfo) | $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//') |"
    echo "| memory | $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) |"
    echo "| etcd | $(etcd --version 2>/dev/null | head -1 | awk '{print $3}') |"
    echo "| iperf3 | $(iperf3 --version 2>/dev/null | head -1 | awk '{print $2}') |"
    echo "| load average at start (1/5/15 min) | $(cut -d' ' -f1-3 /proc/loadavg) |"
    if command -v git >/dev/null && git rev-parse --git-dir >/dev/null 2>&1; then
        echo "| source | commit $(git rev-parse --short HEAD), $(git status --porcelain | wc -l) path(s) modified in the work tree |"
    fi
} > "$machine"
replace_section machine "$machine"

failed=0
started=$(date +%s)
for s in convergence bulk footprint startup etcd-load dataplane cni; do
    out="$machine.$s"
    if ! "$BIN" "$s" "$@" | tee "$out"; then
        failed=1
    fi
    replace_section "$s" "$out"
done
echo "scripts/bench.sh: all scenarios took $(( $(date +%s) - started )) s; tables written to $MD" >&2
exit "$failed"
