#!/usr/bin/env bash
# The test command: formatting, lints, cargo deny, then the two test tiers: every unprivileged test (unit tests
# and the integration tests that need no root: what a plain `cargo test` runs as any user), then
# the root tier (the integration tests on the namespaced testbed, marked
# `#[ignore = "root tier: ..."]`, run here with `-- --ignored`). Needs root (sudo) for the root
# tier and the packages .ci/run installs; it never passes by skipping that tier.
set -euo pipefail
cd "$(dirname "$0")/.."

. ./scripts/common.sh
require_root scripts/test.sh "the integration tests build network namespaces and need root"
# Installs what is missing (quiet when everything is there).
./scripts/deps.sh test

cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Licenses, duplicate versions, sources (and advisories where their database is reachable).
./scripts/deny.sh
# The integration tests run the binaries (weftd, weft-cni, weft) on the testbed: build them first.
cargo build --workspace --bins --locked
# The image tests run localhost/weft:dev: build it from those binaries (no release build).
./scripts/image.sh --debug
# Tier 1: every unprivileged test (the root tier shows as "ignored" here).
cargo test --workspace --locked
# Tier 2: the root tier, only the tests marked ignored (each needs root and fails without it).
cargo test --workspace --locked -- --ignored
# The parsers' fuzz targets (fuzz/) for 20 s each: in CI, or locally with WEFT_FUZZ=1.
if [ "${CI:-}" = true ] || [ "${WEFT_FUZZ:-}" = 1 ]; then
    ./scripts/fuzz.sh 20
fi
