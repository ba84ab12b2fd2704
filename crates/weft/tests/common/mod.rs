//! What the integration tests of the `weft` binary share: one run's exit code and output, and
//! the required flags of a small `weft eks plan`. Each test file adds the assertions it needs
//! in its own `impl Run`.

// Each test file is its own crate and uses only part of this module.
#![allow(dead_code)]

use std::process::Output;

use serde_json::Value;

/// What one weft run gave.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The required flags of `weft eks plan` but the inputs (`--instance-types` and the like).
pub const EKS_REQUIRED: &[&str] = &[
    "--cluster-name",
    "prod",
    "--region",
    "us-east-1",
    "--ami-family",
    "al2023",
    "--vpc-cidr",
    "10.0.0.0/16",
];

/// `EKS_REQUIRED` and `--instance-types m5.large`, with `flag`'s value set to `value`, or
/// without `flag` and its value (None).
pub fn eks_m5_args_with(flag: &str, value: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = EKS_REQUIRED
        .iter()
        .chain(&["--instance-types", "m5.large"])
        .map(ToString::to_string)
        .collect();
    let at = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag} is not in {args:?}"));
    match value {
        Some(v) => args[at + 1] = v.to_string(),
        None => {
            args.drain(at..at + 2);
        }
    }
    args
}
