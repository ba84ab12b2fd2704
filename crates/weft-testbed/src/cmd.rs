//! Small helpers around `std::process::Command`: uniform error reporting and
//! `ip -batch` scripts that run concurrently.

use std::ffi::OsStr;
use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::thread::JoinHandle;

use crate::TestbedError;

/// A readable rendering of a command line for error messages and logs.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&quote(a));
    }
    s
}

/// A word of a logged command line, quoted for a POSIX shell (shlex) so it can be pasted.
fn quote(a: &OsStr) -> String {
    let s = a.to_string_lossy();
    shlex::try_quote(&s).map_or_else(|_| s.replace('\0', ""), |q| q.into_owned())
}

pub(crate) fn spawn_error(cmd: &Command, source: std::io::Error, hint: &str) -> TestbedError {
    TestbedError::Spawn {
        cmd: describe(cmd),
        source,
        hint: hint.to_string(),
    }
}

pub(crate) fn status_error(desc: String, out: &Output, stdin: &str, hint: &str) -> TestbedError {
    TestbedError::Command {
        cmd: desc,
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        stdin: stdin.to_string(),
        hint: hint.to_string(),
    }
}

/// A started command whose stdin is being fed by a helper thread.
pub(crate) struct Pending {
    child: Child,
    writer: Option<JoinHandle<()>>,
    desc: String,
    stdin: String,
    hint: String,
}

/// Starts `cmd` with `stdin` fed to it (empty: stdin is /dev/null); stdout and
/// stderr are captured.
pub(crate) fn start_with_stdin(
    mut cmd: Command,
    stdin: String,
    hint: &str,
) -> Result<Pending, TestbedError> {
    let stdin_cfg = if stdin.is_empty() {
        Stdio::null()
    } else {
        Stdio::piped()
    };
    cmd.stdin(stdin_cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let desc = describe(&cmd);
    let mut child = cmd.spawn().map_err(|e| spawn_error(&cmd, e, hint))?;
    let writer = child.stdin.take().map(|mut pipe| {
        let data = stdin.clone();
        std::thread::spawn(move || {
            // A write error means the child exited early; its status tells why.
            let _ = pipe.write_all(data.as_bytes());
        })
    });
    Ok(Pending {
        child,
        writer,
        desc,
        stdin,
        hint: hint.to_string(),
    })
}

impl Pending {
    /// Waits for the command; returns its output whatever the exit status,
    /// together with its description, stdin and hint (for error messages).
    pub(crate) fn output(self) -> Result<(Output, String, String, String), TestbedError> {
        let Pending {
            child,
            writer,
            desc,
            stdin,
            hint,
        } = self;
        let out = child.wait_with_output().map_err(|e| TestbedError::Io {
            what: format!("waiting for `{desc}`"),
            source: e,
        })?;
        if let Some(w) = writer {
            let _ = w.join();
        }
        Ok((out, desc, stdin, hint))
    }

    /// Waits for the command and turns a non-zero exit into an error.
    pub(crate) fn finish(self) -> Result<Output, TestbedError> {
        let (out, desc, stdin, hint) = self.output()?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(status_error(desc, &out, &stdin, &hint))
        }
    }
}

/// Waits for every command that started (also after a failure, so none is left unreaped)
/// and returns the first error: a start's, else the first failed command's.
pub(crate) fn finish_all(started: Vec<Result<Pending, TestbedError>>) -> Result<(), TestbedError> {
    let mut first_err = None;
    let mut pending = Vec::with_capacity(started.len());
    for s in started {
        match s {
            Ok(p) => pending.push(p),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    for p in pending {
        if let Err(e) = p.finish() {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// `ip [-n <ns>] -batch -` with the given lines, started in the background.
pub(crate) fn start_ip_batch(
    ns: Option<&str>,
    lines: &[String],
    hint: &str,
) -> Result<Pending, TestbedError> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    cmd.args(["-batch", "-"]);
    let mut script = lines.join("\n");
    script.push('\n');
    start_with_stdin(cmd, script, hint)
}

/// Runs `cmd` to completion with captured output; never fails on a non-zero exit.
pub(crate) fn output(cmd: &mut Command, hint: &str) -> Result<Output, TestbedError> {
    cmd.stdin(Stdio::null());
    cmd.output().map_err(|e| spawn_error(cmd, e, hint))
}

/// Runs `cmd` to completion; a non-zero exit is an error. Returns stdout.
pub(crate) fn checked(cmd: &mut Command, hint: &str) -> Result<String, TestbedError> {
    let out = output(cmd, hint)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(status_error(describe(cmd), &out, "", hint))
    }
}
