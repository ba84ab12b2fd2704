//! Bad-input corpora: a real binary run on inputs it must refuse, each refusal checked as a
//! user meets it (the exit status, an error that names the input and the fix, no panic, no
//! flood), and every failing case reported at once.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The longest acceptable error text: a few lines of error and hint, not a flood.
pub const MAX_ERROR_BYTES: usize = 2048;

/// Runs `cmd` with stdin closed and its output captured, killing it at `deadline`: a command
/// still running then did not refuse its input (it went on to etcd or the kernel).
pub fn output_within(cmd: &mut Command, deadline: Duration) -> Result<Output, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("spawn {:?}: {e}", cmd.get_program()))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().map_err(|e| e.to_string()),
            Ok(None) if start.elapsed() > deadline => {
                let _ = child.kill();
                let out = child.wait_with_output().map_err(|e| e.to_string())?;
                return Err(format!(
                    "still running after {deadline:?}, so the input was not refused; stderr:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("wait: {e}")),
        }
    }
}

/// What is wrong with `text`, the error a refusal showed (stderr, or a CNI error's `msg`):
/// it must not be a panic nor longer than [`MAX_ERROR_BYTES`], must contain every one of
/// `needles` and none of `absent`.
pub fn error_problems<N: AsRef<str>>(
    text: &str,
    needles: impl IntoIterator<Item = N>,
    absent: &[&str],
) -> Vec<String> {
    let mut problems = Vec::new();
    if text.contains("panicked") {
        problems.push("panicked".to_string());
    }
    if text.len() > MAX_ERROR_BYTES {
        let start: String = text.chars().take(300).collect();
        problems.push(format!("the error is {} bytes: {start}...", text.len()));
        return problems;
    }
    for needle in needles {
        if !text.contains(needle.as_ref()) {
            problems.push(format!("missing: {}", needle.as_ref()));
        }
    }
    for word in absent {
        if text.contains(word) {
            problems.push(format!("should not say: {word}"));
        }
    }
    problems
}

/// The exit status check: `code` expected.
pub fn exit_problem(out: &Output, code: i32) -> Option<String> {
    (out.status.code() != Some(code))
        .then(|| format!("exit {:?} instead of {code}", out.status.code()))
}

/// Runs `check` on every case and fails with every case's problems at once (`what`: the
/// binary, for the summary).
pub fn assert_corpus<C>(
    what: &str,
    cases: &[C],
    label: impl Fn(&C) -> String,
    mut check: impl FnMut(&C) -> Vec<String>,
) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            let problems = check(c);
            (!problems.is_empty())
                .then(|| format!("{}:\n    {}", label(c), problems.join("\n    ")))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{what}: {} of {} cases failed:\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  ")
    );
}
