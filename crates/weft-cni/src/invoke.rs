//! Finding and running the delegate plugin.
//!
//! The delegate gets weft-cni's own environment (CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME,
//! CNI_ARGS, CNI_PATH as the runtime set them), with CNI_COMMAND set to the verb it must run,
//! and the delegate config on stdin. Its stderr goes straight to weft-cni's stderr.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::Error;
use crate::env::Command;

/// What a plugin run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Its stdout, byte for byte.
    pub stdout: Vec<u8>,
    /// Its exit status; `None` when it was killed by a signal.
    pub exit_code: Option<i32>,
}

/// Runs a plugin binary. The seam between the orchestration and real processes.
pub trait Exec {
    /// Runs `plugin` with CNI_COMMAND=`command` and `stdin`.
    fn exec(&self, plugin: &Path, command: Command, stdin: &[u8]) -> io::Result<ExecOutput>;
}

/// Runs plugins as child processes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessExec;

/// Bytes a new pipe always holds: Linux gives a pipe at least one page, even when the
/// user's pipe quota is spent (a delegate config is a few hundred bytes).
const PIPE_MIN: usize = 4096;

/// ETXTBSY: the binary is still open for writing somewhere (a plugin being installed or
/// copied, or a just-written file whose descriptor a concurrently forked child still holds).
const ETXTBSY: i32 = 26;

impl Exec for ProcessExec {
    fn exec(&self, plugin: &Path, command: Command, stdin: &[u8]) -> io::Result<ExecOutput> {
        let mut attempt = 0u32;
        let mut child = loop {
            let spawned = std::process::Command::new(plugin)
                .env("CNI_COMMAND", command.as_str())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn();
            match spawned {
                Err(e) if e.raw_os_error() == Some(ETXTBSY) && attempt < 20 => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(10 * u64::from(attempt)));
                }
                other => break other?,
            }
        };
        let mut input = child.stdin.take();
        if stdin.len() <= PIPE_MIN {
            // Fits in the empty pipe, so the write cannot block: no thread needed.
            if let Some(mut pipe) = input.take() {
                // A plugin that exits without reading stdin closes the pipe: not our error.
                let _ = pipe.write_all(stdin);
            }
            let output = child.wait_with_output()?;
            return Ok(ExecOutput {
                stdout: output.stdout,
                exit_code: output.status.code(),
            });
        }
        // Feed a larger stdin from a second thread so a plugin that writes a lot before
        // reading cannot deadlock against us.
        let output = std::thread::scope(|scope| {
            let writer = scope.spawn(move || {
                if let Some(pipe) = input.as_mut() {
                    // A plugin that exits without reading stdin closes the pipe: not our error.
                    let _ = pipe.write_all(stdin);
                }
                drop(input);
            });
            let output = child.wait_with_output();
            let _ = writer.join();
            output
        })?;
        Ok(ExecOutput {
            stdout: output.stdout,
            exit_code: output.status.code(),
        })
    }
}

/// Finds the plugin `name` in `dirs`, in order (a regular file, symlinks followed).
pub fn find_plugin(name: &str, dirs: &[PathBuf]) -> Result<PathBuf, Error> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(Error::InvalidConfig(format!(
            "plugin type {:?} is not a plugin name; it must be the file name of a plugin in CNI_PATH, such as \"bridge\"",
            weft_core::clip::clip(name)
        )));
    }
    dirs.iter()
        .map(|dir| dir.join(name))
        .find(|candidate| std::fs::metadata(candidate).is_ok_and(|m| m.is_file()))
        .ok_or_else(|| Error::PluginNotFound {
            plugin: weft_core::clip::clip(name),
            dirs: dirs.iter().map(|d| d.display().to_string()).collect(),
        })
}

/// Runs the plugin `name` from `dirs` for `command`. Success gives its stdout; a CNI error
/// printed by the plugin becomes [`Error::Delegate`] (passed through unchanged), anything
/// else [`Error::DelegateCrashed`].
pub fn delegate(
    exec: &dyn Exec,
    dirs: &[PathBuf],
    name: &str,
    command: Command,
    stdin: &[u8],
) -> Result<Vec<u8>, Error> {
    let path = find_plugin(name, dirs)?;
    let out = exec
        .exec(&path, command, stdin)
        .map_err(|source| Error::Spawn {
            path: path.clone(),
            source,
        })?;
    if out.exit_code == Some(0) {
        return Ok(out.stdout);
    }
    let cni_error = serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| {
            let code = u32::try_from(v.get("code")?.as_u64()?).ok()?;
            let msg = v.get("msg").and_then(|m| m.as_str()).unwrap_or("");
            let details = v.get("details").and_then(|m| m.as_str()).unwrap_or("");
            let msg = if details.is_empty() {
                msg.to_string()
            } else {
                format!("{msg}; {details}")
            };
            Some((code, msg))
        });
    match (cni_error, out.exit_code) {
        (Some((code, msg)), Some(exit_code)) => Err(Error::Delegate {
            plugin: name.to_string(),
            verb: command.as_str(),
            code,
            msg,
            stdout: out.stdout,
            exit_code,
        }),
        _ => {
            let mut shown = String::from_utf8_lossy(&out.stdout).into_owned();
            if shown.len() > 512 {
                let mut cut = 512;
                while !shown.is_char_boundary(cut) {
                    cut -= 1;
                }
                shown.truncate(cut);
                shown.push_str("...");
            }
            Err(Error::DelegateCrashed {
                plugin: name.to_string(),
                verb: command.as_str(),
                status: match out.exit_code {
                    Some(c) => format!("exit status {c}"),
                    None => "killed by a signal".to_string(),
                },
                stdout: shown,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn finds_first_match_in_path_order() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        script(b.path(), "bridge", "exit 0");
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(
            find_plugin("bridge", &dirs).unwrap(),
            b.path().join("bridge")
        );
        script(a.path(), "bridge", "exit 0");
        assert_eq!(
            find_plugin("bridge", &dirs).unwrap(),
            a.path().join("bridge")
        );
        // A directory with the plugin's name is not a plugin.
        std::fs::create_dir(a.path().join("ptp")).unwrap();
        assert!(find_plugin("ptp", &dirs).is_err());
    }

    #[test]
    fn not_found_names_dirs_and_the_fix() {
        let dirs = vec![
            PathBuf::from("/nonexistent/a"),
            PathBuf::from("/nonexistent/b"),
        ];
        let err = find_plugin("bridge", &dirs).unwrap_err();
        assert_eq!(err.code(), 7);
        let msg = err.to_string();
        assert!(msg.contains("\"bridge\""), "{msg}");
        assert!(msg.contains("/nonexistent/a, /nonexistent/b"), "{msg}");
        assert!(
            msg.contains("apt-get install containernetworking-plugins"),
            "{msg}"
        );
        assert!(msg.contains("/opt/cni/bin"), "{msg}");
        let msg = find_plugin("bridge", &[]).unwrap_err().to_string();
        assert!(msg.contains("CNI_PATH is empty"), "{msg}");
    }

    #[test]
    fn plugin_names_cannot_be_paths() {
        for bad in ["", ".", "..", "../bin/sh", "/bin/sh", "a\0b"] {
            let err = find_plugin(bad, &[PathBuf::from("/usr/bin")]).unwrap_err();
            assert_eq!(err.code(), 7, "{bad:?}");
        }
    }

    #[test]
    fn runs_plugin_with_command_and_stdin() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "echoer", "printf '%s:' \"$CNI_COMMAND\"; cat");
        let out = delegate(
            &ProcessExec,
            &[dir.path().to_path_buf()],
            "echoer",
            Command::Check,
            b"{\"x\":1}",
        )
        .unwrap();
        assert_eq!(out, b"CHECK:{\"x\":1}");
    }

    #[test]
    fn large_stdin_and_stdout_do_not_deadlock() {
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "big",
            "head -c 300000 /dev/zero; cat >/dev/null",
        );
        let input = vec![b' '; 300_000];
        let out = delegate(
            &ProcessExec,
            &[dir.path().to_path_buf()],
            "big",
            Command::Add,
            &input,
        )
        .unwrap();
        assert_eq!(out.len(), 300_000);
    }

    #[test]
    fn small_stdin_is_written_without_a_thread_and_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        // The plugin writes more than a pipe holds before it reads stdin.
        script(
            dir.path(),
            "late-reader",
            "head -c 300000 /dev/zero; wc -c | tr -d ' '",
        );
        for len in [0, 1, PIPE_MIN] {
            let out = delegate(
                &ProcessExec,
                &[dir.path().to_path_buf()],
                "late-reader",
                Command::Add,
                &vec![b'x'; len],
            )
            .unwrap();
            assert_eq!(out.len(), 300_000 + len.to_string().len() + 1, "{len}");
            assert!(out.ends_with(format!("{len}\n").as_bytes()), "{len}");
        }
    }

    #[test]
    fn cni_error_is_passed_through_with_exit_status() {
        let dir = tempfile::tempdir().unwrap();
        let body = r#"{"cniVersion":"0.3.1","code":11,"msg":"busy","details":"later"}"#;
        script(dir.path(), "failer", &format!("echo '{body}'; exit 3"));
        let err = delegate(
            &ProcessExec,
            &[dir.path().to_path_buf()],
            "failer",
            Command::Add,
            b"{}",
        )
        .unwrap_err();
        assert_eq!(err.code(), 11);
        assert_eq!(
            err.to_string(),
            "delegate plugin \"failer\" failed ADD with code 11: busy; later"
        );
        let resp = err.to_response("0.3.1");
        assert_eq!(resp.exit_code, 3);
        assert_eq!(resp.stdout, format!("{body}\n").as_bytes());
    }

    #[test]
    fn crash_without_cni_error_is_code_999() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "crasher", "echo 'panic: oops'; exit 2");
        script(dir.path(), "killed", "kill -9 $$");
        let dirs = [dir.path().to_path_buf()];
        let err = delegate(&ProcessExec, &dirs, "crasher", Command::Add, b"{}").unwrap_err();
        assert_eq!(err.code(), 999);
        let msg = err.to_string();
        assert!(msg.contains("exit status 2"), "{msg}");
        assert!(msg.contains("panic: oops"), "{msg}");
        let resp = err.to_response("1.0.0");
        assert_eq!(resp.exit_code, 1);
        let v: serde_json::Value = serde_json::from_slice(&resp.stdout).unwrap();
        assert_eq!(v["code"], 999);
        let err = delegate(&ProcessExec, &dirs, "killed", Command::Del, b"{}").unwrap_err();
        assert!(err.to_string().contains("killed by a signal"), "{err}");
    }

    #[test]
    fn non_executable_plugin_is_io_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(dir.path(), "noexec", "exit 0");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = delegate(
            &ProcessExec,
            &[dir.path().to_path_buf()],
            "noexec",
            Command::Add,
            b"{}",
        )
        .unwrap_err();
        // Root may still be refused: no execute bit at all means EACCES even for root.
        assert_eq!(err.code(), 5, "{err}");
        assert!(err.to_string().contains("noexec"), "{err}");
    }
}
