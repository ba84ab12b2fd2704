//! Containers run with podman inside testbed nodes, the way kubelet runs a DaemonSet's pod on
//! a node: `hostNetwork: true` is the node's namespace (`--network ns:/run/netns/<node>`), a
//! hostPath volume is a directory under the node's own "host root", and the capabilities are
//! the pod's `securityContext`.
//!
//! Every container gets a name unique to its testbed and is removed by its guard
//! ([`Container`]'s drop), also when a test fails.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::TestbedError;

/// The image `scripts/image.sh` tags for the tests (`--debug` builds it from the debug binaries).
pub const DEV_IMAGE: &str = "localhost/weft:dev";

/// The options every `podman run` of the tests gets, for this kind of machine:
/// - `--runtime runc`: crun 1.8 refuses cgroup v1 "hybrid" hierarchies, which this sandbox has;
///   runc with cgroupfs works. Nothing in weft depends on the runtime.
/// - `--ulimit`: podman raises RLIMIT_NOFILE and RLIMIT_NPROC for a container by default, which
///   needs CAP_SYS_RESOURCE that a sandboxed root may lack. The container keeps the limits it
///   would inherit here instead, as containerd's CRI does (it sets no rlimits of its own).
pub fn run_options() -> Vec<String> {
    let nofile = hard_limit("Max open files").unwrap_or(1024);
    vec![
        "--runtime".into(),
        "runc".into(),
        "--ulimit".into(),
        format!("nofile={nofile}:{nofile}"),
        "--ulimit".into(),
        // Above about 50,000 runc's setrlimit fails in this sandbox; weftd needs a handful.
        "nproc=4096:4096".into(),
    ]
}

/// The hard limit named `what` in /proc/self/limits.
fn hard_limit(what: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with(what))?;
    line[what.len()..].split_whitespace().nth(1)?.parse().ok()
}

/// Runs `podman <args>` to the end (stdin closed) and returns its output; an error when podman
/// cannot be started.
pub fn podman(args: &[String]) -> Result<Output, TestbedError> {
    Command::new("podman")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            TestbedError::Invalid(format!(
                "cannot run podman {}: {e}; install it with scripts/deps.sh test",
                args.first().map(String::as_str).unwrap_or("")
            ))
        })
}

/// Like [`podman`], but a non-zero exit is an error carrying its stderr.
pub fn podman_ok(args: &[String]) -> Result<String, TestbedError> {
    let out = podman(args)?;
    if !out.status.success() {
        return Err(TestbedError::Invalid(format!(
            "podman {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Checks that `image` is in podman's local store, saying how to build it when not.
pub fn require_image(image: &str) -> Result<(), TestbedError> {
    let out = podman(&["image".into(), "exists".into(), image.into()])?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TestbedError::Invalid(format!(
            "image {image} is not in podman's store: build it with `sudo scripts/image.sh --debug` (scripts/test.sh does before the tests)"
        )))
    }
}

/// A detached container, removed (`podman rm -f`) when dropped.
#[derive(Debug)]
pub struct Container {
    name: String,
}

impl Container {
    /// Starts `podman run -d --name <name> <run_options> <args>`; `args` holds the rest of
    /// the run command (options, image, command).
    pub fn start(name: &str, args: &[String]) -> Result<Container, TestbedError> {
        // A container of that name left by a crashed run of the same testbed id goes first.
        let _ = podman(&[
            "rm".into(),
            "-f".into(),
            "-t".into(),
            "0".into(),
            name.into(),
        ]);
        let mut all: Vec<String> = vec!["run".into(), "-d".into(), "--name".into(), name.into()];
        all.extend(run_options());
        all.extend(args.iter().cloned());
        podman_ok(&all)?;
        Ok(Container {
            name: name.to_string(),
        })
    }

    /// The container's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host PID of the container's first process (0 when it is not running).
    pub fn pid(&self) -> Result<u32, TestbedError> {
        let out = podman_ok(&[
            "inspect".into(),
            "--format".into(),
            "{{.State.Pid}}".into(),
            self.name.clone(),
        ])?;
        out.trim()
            .parse()
            .map_err(|e| TestbedError::Invalid(format!("podman inspect pid {out:?}: {e}")))
    }

    /// Whether the container is running.
    pub fn running(&self) -> bool {
        podman_ok(&[
            "inspect".into(),
            "--format".into(),
            "{{.State.Running}}".into(),
            self.name.clone(),
        ])
        .is_ok_and(|s| s.trim() == "true")
    }

    /// Its logs (stdout and stderr), for failure messages.
    pub fn logs(&self) -> String {
        match podman(&["logs".into(), self.name.clone()]) {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => e.to_string(),
        }
    }

    /// Stops it (SIGTERM, then SIGKILL after `grace`) and waits for the exit.
    pub fn stop(&self, grace: Duration) -> Result<(), TestbedError> {
        podman_ok(&[
            "stop".into(),
            "-t".into(),
            grace.as_secs().to_string(),
            self.name.clone(),
        ])
        .map(|_| ())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&[
            "rm".into(),
            "-f".into(),
            "-t".into(),
            "0".into(),
            self.name.clone(),
        ]);
    }
}

/// `-v <host>:<container>[:ro]`.
pub fn volume(host: &Path, container: &str, read_only: bool) -> [String; 2] {
    let ro = if read_only { ":ro" } else { "" };
    ["-v".into(), format!("{}:{container}{ro}", host.display())]
}
