#!/usr/bin/env bash
# The test command: formatting, lints, unit tests and the root-only integration tests on the
# namespaced testbed. Needs root (sudo) and the packages .ci/run installs.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "scripts/test.sh: the integration tests build network namespaces and need root: run it with sudo" >&2
    exit 1
fi
# Installs what is missing (quiet when everything is there).
./scripts/deps.sh test

cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The integration tests run the binaries (weftd, weft-cni, weft) on the testbed: build them first.
cargo build --workspace --bins --locked
# The image tests run localhost/weft:dev: build it from those binaries (no release build).
./scripts/image.sh --debug
cargo test --workspace --locked
# The parsers' fuzz targets (fuzz/) for 20 s each: in CI, or locally with WEFT_FUZZ=1.
if [ "${CI:-}" = true ] || [ "${WEFT_FUZZ:-}" = 1 ]; then
    ./scripts/fuzz.sh 20
fi
