//! What a command hands back to `main`: its stdout, its stderr notes and its exit code.
//! Commands never print themselves, so a closed pipe cannot make them panic. Shared by every
//! command of the `weft` CLI (which re-exports it) and the renderers here.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

/// The result of a command that ran to the end.
#[derive(Debug, Default)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    /// True when the command found problems (exit 1) without failing itself.
    pub failed: bool,
}

impl Outcome {
    /// Appends a line to stdout.
    pub fn say(&mut self, line: impl AsRef<str>) {
        let _ = writeln!(self.stdout, "{}", line.as_ref());
    }

    /// Appends a line to stderr (warnings and notes that must not pollute data on stdout).
    pub fn note(&mut self, line: impl AsRef<str>) {
        let _ = writeln!(self.stderr, "weft: {}", line.as_ref());
    }

    /// Writes both streams; a broken pipe is ignored.
    pub fn emit(&self) -> ExitCode {
        let _ = std::io::stderr().write_all(self.stderr.as_bytes());
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(self.stdout.as_bytes());
        let _ = out.flush();
        if self.failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// Pretty JSON (serialization of our own types cannot fail; fall back to an error object).
pub fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value)
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot serialize the output: {e}\"}}"))
}
