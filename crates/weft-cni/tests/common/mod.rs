//! Shared helpers of weft-cni's integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Child, Command, Stdio};

/// Spawns `cmd` with stdin, stdout and stderr piped; `what` names it if it cannot start.
pub fn spawn_piped(cmd: &mut Command, what: &str) -> Child {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"))
}

/// [`spawn_piped`], with all of `stdin` written to the child and its stdin closed.
pub fn spawn_with_stdin(cmd: &mut Command, what: &str, stdin: &[u8]) -> Child {
    let mut child = spawn_piped(cmd, what);
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin)
        .unwrap_or_else(|e| panic!("write the stdin of {what}: {e}"));
    child
}
