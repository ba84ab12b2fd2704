//! The testbed's error type.
//!
//! Every variant says what was attempted, what the system answered and, where
//! there is a sensible next step, what to do about it.

use std::time::Duration;

use nix::unistd::Pid;

/// Everything that can go wrong while building, using or tearing down a [`crate::Testbed`].
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// The process is not running as root.
    #[error(
        "integration tests need root: run them with sudo (e.g. `sudo -E env PATH=\"$PATH\" cargo test -p weft-testbed`) \
         or as root; CI runs as root. They create network namespaces, veth pairs and bridges \
         (only inside their own namespaces) and start a real etcd"
    )]
    NotRoot,

    /// A command could not be started at all (binary missing, fork failed, ...).
    #[error("could not run `{cmd}`: {source}; {hint}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
        hint: String,
    },

    /// A command ran and exited unsuccessfully.
    #[error("`{cmd}` failed ({status}): {stderr}{stdin_note}; {hint}", stderr = show_stderr(.stderr), stdin_note = show_stdin(.stdin))]
    Command {
        cmd: String,
        status: String,
        stderr: String,
        /// What was fed on stdin (e.g. the `ip -batch` script), if anything.
        stdin: String,
        hint: String,
    },

    /// A file system operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// etcd did not become healthy in time.
    #[error(
        "etcd in netns {ns} did not become healthy within {waited:?} (last check: {last_error}); \
         is /usr/bin/etcd 3.4+ installed and runnable? log {log} ends with:\n{log_tail}"
    )]
    EtcdUnhealthy {
        ns: String,
        waited: Duration,
        last_error: String,
        log: String,
        log_tail: String,
    },

    /// etcd exited on its own during start-up.
    #[error(
        "etcd in netns {ns} exited during start-up ({status}); is etcd installed (set WEFT_TESTBED_ETCD \
         to its path otherwise)? log {log} ends with:\n{log_tail}"
    )]
    EtcdExited {
        ns: String,
        status: String,
        log: String,
        log_tail: String,
    },

    /// An etcd operation was requested but this testbed has no running etcd.
    #[error("{0}")]
    EtcdUnavailable(String),

    /// `signal`/`wait_exit` on a pid this testbed did not start (or already reaped).
    #[error(
        "pid {pid} is not a process this testbed started{extra}; only pids returned by \
         Testbed::spawn / start_pinger (or etcd's) can be signalled"
    )]
    UnknownProcess { pid: Pid, extra: String },

    /// A namespace name that does not belong to this testbed.
    #[error(
        "netns {ns:?} does not belong to testbed {id}; the testbed only runs commands in the \
         namespaces it created (see Testbed::namespaces())"
    )]
    ForeignNamespace { ns: String, id: String },

    /// Entering a network namespace failed.
    #[error(
        "cannot enter netns {ns:?} ({path}): {what}: {detail}; does the namespace still exist (`ip netns list`)?"
    )]
    Netns {
        ns: String,
        path: String,
        what: String,
        detail: String,
    },

    /// `ping` output did not contain the expected summary.
    #[error("could not parse the summary of `{cmd}`; its output was:\n{output}")]
    PingParse { cmd: String, output: String },

    /// A process did not exit in time.
    #[error("{what} (pid {pid}) did not exit within {timeout:?}; it was killed")]
    Timeout {
        what: String,
        pid: Pid,
        timeout: Duration,
    },

    /// Invalid arguments or configuration.
    #[error("invalid testbed request: {0}")]
    Invalid(String),

    /// A program the testbed needs is not installed.
    #[error("`{program}` is not in PATH; it is needed {needed_for}; install it ({install})")]
    MissingProgram {
        program: String,
        needed_for: String,
        install: String,
    },

    /// containerd did not come up, stopped, or refused a request.
    #[error("containerd in netns {ns}: {what}; its log {log} ends with:\n{log_tail}")]
    Containerd {
        ns: String,
        what: String,
        log: String,
        log_tail: String,
    },

    /// A CNI plugin failed (see [`CniFailure`]; boxed to keep results small).
    #[error("{0}")]
    Cni(Box<CniFailure>),

    /// One or more teardown steps failed (all steps were still attempted).
    #[error("testbed {id} teardown had {} error(s):\n  {}", errors.len(), errors.join("\n  "))]
    Teardown { id: String, errors: Vec<String> },
}

impl TestbedError {
    /// The CNI failure, when this is one.
    pub fn cni_failure(&self) -> Option<&CniFailure> {
        match self {
            TestbedError::Cni(f) => Some(f),
            _ => None,
        }
    }

    /// The CNI error code a plugin reported, when this is a CNI failure with an error JSON.
    pub fn cni_code(&self) -> Option<u64> {
        self.cni_failure().and_then(CniFailure::code)
    }
}

/// A CNI plugin invocation that failed, with everything needed to see why.
#[derive(Debug, Clone, PartialEq)]
pub struct CniFailure {
    /// `ADD` or `DEL`.
    pub verb: &'static str,
    /// The plugin's type (`flannel`, `portmap`, ...).
    pub plugin: String,
    /// Its position in the conflist.
    pub index: usize,
    /// The network's name.
    pub network: String,
    /// The pod namespace.
    pub pod_ns: String,
    /// The node namespace the plugin ran in.
    pub node_ns: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// Exit status (or why there is none).
    pub status: String,
    /// The plugin's CNI error JSON (`{"cniVersion","code","msg","details"}`), if it printed one.
    pub error: Option<serde_json::Value>,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// The config it got on stdin.
    pub config: String,
    /// Problems met while undoing the failed ADD (or further failed DELs).
    pub cleanup: Vec<String>,
}

impl CniFailure {
    /// The CNI error code, if the plugin printed an error JSON.
    pub fn code(&self) -> Option<u64> {
        self.error.as_ref()?.get("code")?.as_u64()
    }

    /// The CNI error message, if the plugin printed an error JSON.
    pub fn msg(&self) -> Option<&str> {
        self.error.as_ref()?.get("msg")?.as_str()
    }
}

impl std::fmt::Display for CniFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CNI {} by plugin {:?} (plugin {} of network {:?}) for pod {} (container id {}, run in netns {}) failed ({})",
            self.verb,
            self.plugin,
            self.index,
            self.network,
            self.pod_ns,
            self.container_id,
            self.node_ns,
            self.status
        )?;
        match (self.code(), &self.error) {
            (Some(code), Some(err)) => {
                write!(
                    f,
                    " with CNI error code {code}: {}",
                    self.msg().unwrap_or("")
                )?;
                if let Some(d) = err
                    .get("details")
                    .and_then(|d| d.as_str())
                    .filter(|d| !d.is_empty())
                {
                    write!(f, " ({d})")?;
                }
            }
            _ => write!(
                f,
                " without a CNI error on stdout: {:?}",
                self.stdout.trim()
            )?,
        }
        if !self.stderr.trim().is_empty() {
            write!(
                f,
                "\n  stderr: {}",
                self.stderr.trim().replace('\n', "\n    ")
            )?;
        }
        write!(f, "\n  config was: {}", self.config)?;
        for c in &self.cleanup {
            write!(f, "\n  rollback: {c}")?;
        }
        Ok(())
    }
}

fn show_stderr(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        "(no stderr)".to_string()
    } else {
        s.to_string()
    }
}

fn show_stdin(stdin: &str) -> String {
    if stdin.trim().is_empty() {
        String::new()
    } else {
        format!(
            "\n  input was:\n    {}",
            stdin.trim_end().replace('\n', "\n    ")
        )
    }
}
