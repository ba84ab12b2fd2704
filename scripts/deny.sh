#!/usr/bin/env bash
# cargo deny on the workspace (deny.toml): licenses, bans (duplicate versions, wildcards) and
# sources always; the RustSec advisories when their database (a git repository on github.com)
# can be fetched, and otherwise a loud notice that they were not checked. Installs the pinned
# cargo-deny from crates.io (about 2 minutes of build) when it is missing or another version.
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.20.2
if ! command -v cargo-deny >/dev/null 2>&1 || [ "$(cargo-deny --version 2>/dev/null)" != "cargo-deny $version" ]; then
    echo "scripts/deny.sh: installing cargo-deny $version (cargo install --locked)" >&2
    cargo install --quiet --locked --no-default-features --version "$version" cargo-deny
fi
cargo deny --locked check bans licenses sources
if git ls-remote --quiet https://github.com/RustSec/advisory-db HEAD >/dev/null 2>&1; then
    cargo deny --locked check advisories
else
    echo "scripts/deny.sh: NOTICE: the RustSec advisory database (github.com/RustSec/advisory-db) cannot be fetched from this machine: advisories were NOT checked" >&2
fi
