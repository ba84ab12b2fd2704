#!/usr/bin/env bash
# The demo: builds weft and runs `weft-lab demo` (a 3-node namespaced cluster with a real etcd,
# weftd on every node, pods pinging across nodes). Needs root; scripts/deps.sh installs what is
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. ./scripts/common.sh
require_root scripts/demo.sh "the demo builds network namespaces and needs root"
./scripts/deps.sh demo
cargo build --release --locked --bins
exec ./target/release/weft-lab demo "$@"
