//! What a command hands back to `main`: its stdout, its stderr notes and its exit code.
//! Commands never print themselves, so a closed pipe cannot make them panic.

pub use weft_deploy::output::{Outcome, json};

/// A command's result as an exit code: the outcome's own, or the error as a failed outcome
/// (its message on stderr, exit 1). Shared by `weft` and `weft-lab`.
pub fn finish(result: anyhow::Result<Outcome>) -> std::process::ExitCode {
    match result {
        Ok(outcome) => outcome.emit(),
        Err(e) => {
            let mut o = Outcome {
                failed: true,
                ..Outcome::default()
            };
            o.note(format!("{e:#}"));
            o.emit()
        }
    }
}

/// Logs on stderr with `RUST_LOG` (default `warn`), in colour only on a terminal: logs
/// collected from a file or a pod stay plain text. Shared by `weft` and `weft-lab`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
