//! What the end-to-end tests of `weft-lab` share: the binary and the ones it needs beside it.

// Each test file is its own crate and uses only part of this module.
#![allow(dead_code)]

use std::process::Command;

pub fn weft_lab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weft-lab"))
}

/// Asserts that weftd and weft-cni are built beside weft-lab (the cluster runs them).
pub fn require_siblings() {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_weft-lab"));
    for sibling in ["weftd", "weft-cni"] {
        assert!(
            bin.with_file_name(sibling).exists(),
            "{sibling} must be built beside weft-lab (cargo build --workspace --bins)"
        );
    }
}
