#!/usr/bin/env bash
# The test command: formatting, lints, unit tests and the root-only integration tests on the
# namespaced testbed. Needs root (sudo) and the packages .ci/run installs.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "scripts/test.sh: the integration tests build network namespaces and need root: run it with sudo" >&2
    exit 1
fi
for tool in etcd etcdctl ip bridge iptables-save iptables-restore nft ping protoc iperf3 kubernetes-validate; do
    command -v "$tool" >/dev/null || { echo "scripts/test.sh: $tool is missing; install what .ci/run installs (apt packages, and pip install kubernetes-validate)" >&2; exit 1; }
done

cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The integration tests run the binaries (weftd, weft-cni, weft) on the testbed: build them first.
cargo build --workspace --bins --locked
cargo test --workspace --locked
# The parsers' fuzz targets (fuzz/) for 20 s each: in CI, or locally with WEFT_FUZZ=1.
if [ "${CI:-}" = true ] || [ "${WEFT_FUZZ:-}" = 1 ]; then
    ./scripts/fuzz.sh 20
fi
