#!/usr/bin/env bash
# The demo: builds weft and runs `weft-lab demo` (a 3-node namespaced cluster with a real etcd,
# weftd on every node, pods pinging across nodes). Needs root; scripts/deps.sh installs what is
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "scripts/demo.sh: the demo builds network namespaces and needs root: run it with sudo" >&2
    exit 1
fi
./scripts/deps.sh demo
cargo build --release --locked --bins
exec ./target/release/weft-lab demo "$@"
