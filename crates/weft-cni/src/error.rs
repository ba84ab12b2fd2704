//! Typed errors, each carrying its CNI error code, and their rendering as the CNI error JSON.

use std::path::PathBuf;

use serde::Serialize;

use crate::version::{DEFAULT_VERSION, SUPPORTED_VERSIONS};

/// CNI error codes (spec "Error" section). 1 to 99 are reserved by the spec; 999 is what
/// libcni uses for "internal" failures that have no better code.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODE_FAILURE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADD requests.
    pub const NOT_AVAILABLE: u32 = 50;
    /// A failure that fits no spec code (libcni's `ErrInternal`).
    pub const INTERNAL: u32 = 999;
}

/// Everything that can make weft-cni fail. The message names the problem and, where there
/// is one, the fix; [`Error::code`] gives the CNI code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config's `cniVersion` is not one weft-cni speaks.
    #[error(
        "cniVersion {version:?} in the network config is not supported by weft-cni; supported versions: {}; set \"cniVersion\" in the CNI config file (e.g. /etc/cni/net.d/10-flannel.conflist) to one of them",
        SUPPORTED_VERSIONS.join(", ")
    )]
    UnsupportedVersion {
        /// The version as written in the config (cut if long).
        version: String,
    },

    /// A verb that the config's `cniVersion` does not define (STATUS and GC need 1.1.0).
    #[error(
        "CNI_COMMAND={verb} is defined from CNI spec {since} on, but the network config says cniVersion {version:?}; raise \"cniVersion\" in the CNI config to {since} or later"
    )]
    VerbNeedsNewerVersion {
        /// The verb.
        verb: &'static str,
        /// The first spec version defining it.
        since: &'static str,
        /// The config's version.
        version: String,
    },

    /// CNI_COMMAND is missing or not a verb.
    #[error(
        "{}; expected one of ADD, DEL, CHECK, VERSION, STATUS, GC (weft-cni is meant to be run by a container runtime, not by hand)",
        if value.is_empty() { "CNI_COMMAND is not set".to_string() } else { format!("CNI_COMMAND={value:?} is not a CNI verb") }
    )]
    UnknownCommand {
        /// The value found (empty when unset, cut if long).
        value: String,
    },

    /// Required CNI_* environment variables are unset or empty.
    #[error(
        "{} not set but CNI_COMMAND={verb} requires {}; the container runtime must set {} (weft-cni is meant to be run by a container runtime, not by hand)",
        vars.join(", "),
        if vars.len() == 1 { "it" } else { "them" },
        if vars.len() == 1 { "it" } else { "them" }
    )]
    MissingEnv {
        /// The variables, in the spec's order.
        vars: Vec<&'static str>,
        /// The verb that needs them.
        verb: &'static str,
    },

    /// A CNI_* environment variable has a value that cannot be used.
    #[error("{var}={value:?} is invalid: {reason}")]
    InvalidEnv {
        /// The variable.
        var: &'static str,
        /// Its value (cut if long).
        value: String,
        /// What is wrong and what is expected.
        reason: String,
    },

    /// Stdin could not be read.
    #[error("failed to read the network config from stdin: {source}")]
    ReadStdin {
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// Stdin holds more than [`crate::MAX_STDIN`] bytes.
    #[error(
        "the network config on stdin is larger than {limit} bytes (1 MiB), weft-cni's limit; a flannel network config (with prevResult and runtimeConfig) is a few KiB, so check what the container runtime passes and the CNI config file (e.g. /etc/cni/net.d/10-flannel.conflist)"
    )]
    StdinTooLarge {
        /// The limit in bytes.
        limit: usize,
    },

    /// Stdin is not a network config in JSON.
    #[error(
        "failed to decode the network config on stdin: {source}; it must be a JSON object such as {{\"cniVersion\":\"0.3.1\",\"name\":\"cbr0\",\"type\":\"flannel\",\"delegate\":{{\"hairpinMode\":true,\"isDefaultGateway\":true}}}}"
    )]
    Decode {
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },

    /// The network config decodes but breaks a rule.
    #[error("invalid network config: {0}")]
    InvalidConfig(String),

    /// subnet.env does not exist (yet).
    #[error(
        "failed to load flannel 'subnet.env' file: {} does not exist; weftd (or flanneld) is probably not running or not ready on this node yet. Check the weftd (or flannel) pod log for this node; the runtime retries the pod sandbox on its own",
        path.display()
    )]
    SubnetEnvMissing {
        /// The file looked for (`subnetFile`).
        path: PathBuf,
    },

    /// subnet.env exists but cannot be read.
    #[error(
        "failed to load flannel 'subnet.env' file: cannot read {}: {source}; check its permissions (weftd writes it 0644)",
        path.display()
    )]
    SubnetEnvRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// subnet.env is malformed or incomplete.
    #[error(
        "failed to load flannel 'subnet.env' file: {}: {reason}. Check the weftd (or flannel) pod log for this node; weftd rewrites the file when it starts",
        path.display()
    )]
    SubnetEnvInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        reason: String,
    },

    /// weftd withdrew this node's subnet (lost to another node, expired, deleted) and has not
    /// programmed a new lease yet.
    #[error(
        "{} says this node has no subnet to give pods: {detail}. weftd rewrites the file as soon as it holds and has programmed a new lease; until then no pod gets an address (it could belong to another node). The runtime retries the pod sandbox on its own; check the weftd pod log for this node",
        path.display()
    )]
    SubnetLost {
        /// The file.
        path: PathBuf,
        /// What weftd wrote: the lost subnet and why.
        detail: String,
    },

    /// The delegate (or cleanup) plugin binary is not in any CNI_PATH directory.
    #[error(
        "failed to find plugin {plugin:?} in CNI_PATH; searched {}; run `weft install-cni --plugins-dir /usr/lib/weft/cni` from the weft image (the DaemonSet's install-cni init container does; an EKS node has no bridge once aws-node is gone), or install the CNI reference plugins (Debian/Ubuntu: apt-get install containernetworking-plugins, which puts them in /usr/lib/cni) and copy them to /opt/cni/bin, and make sure the runtime's CNI bin dir list contains that directory",
        if dirs.is_empty() { "no directories (CNI_PATH is empty)".to_string() } else { dirs.join(", ") }
    )]
    PluginNotFound {
        /// The plugin (`type`, cut if long).
        plugin: String,
        /// The directories searched, in order.
        dirs: Vec<String>,
    },

    /// The delegate could not be started.
    #[error("failed to run plugin {}: {source}", path.display())]
    Spawn {
        /// The plugin binary.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The delegate reported a CNI error. Its stdout is passed through unchanged.
    #[error("delegate plugin {plugin:?} failed {verb} with code {code}: {msg}")]
    Delegate {
        /// The plugin.
        plugin: String,
        /// The verb it ran.
        verb: &'static str,
        /// Its CNI error code.
        code: u32,
        /// Its message (and details).
        msg: String,
        /// Its stdout, byte for byte.
        stdout: Vec<u8>,
        /// Its exit status.
        exit_code: i32,
    },

    /// The delegate failed without a CNI error on stdout (crash, signal, garbage).
    #[error(
        "delegate plugin {plugin:?} failed {verb} ({status}) without printing a CNI error; its stderr above says why; stdout was {stdout:?}"
    )]
    DelegateCrashed {
        /// The plugin.
        plugin: String,
        /// The verb it ran.
        verb: &'static str,
        /// Exit status, as text.
        status: String,
        /// The start of its stdout.
        stdout: String,
    },

    /// CHECK found no saved delegate config for the container.
    #[error(
        "no network state for container {container_id:?}: {} does not exist; the container was not set up by this plugin (or was already deleted), so there is nothing to check",
        path.display()
    )]
    StateMissing {
        /// The container.
        container_id: String,
        /// The state file looked for.
        path: PathBuf,
    },

    /// The saved delegate config cannot be used for CHECK.
    #[error(
        "saved network state {} is not a JSON object with a string \"type\": {reason}; delete the pod to recreate its network",
        path.display()
    )]
    StateCorrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A state file operation failed.
    #[error("failed to {action} {}: {source}; check that the dataDir is on a writable local filesystem", path.display())]
    State {
        /// What was being done ("save network state to", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// Another ADD, DEL or CHECK for the same container held its lock for too long.
    #[error(
        "another ADD, DEL or CHECK for container {container_id:?} has held its lock {} for {} s; try again later (if no weft-cni process for this container is running, nothing holds it any more: the kernel releases the lock of a process that ended)",
        lock.display(),
        waited.as_secs()
    )]
    ContainerBusy {
        /// The container.
        container_id: String,
        /// The lock file.
        lock: PathBuf,
        /// How long this invocation waited.
        waited: std::time::Duration,
    },

    /// STATUS: the plugin cannot serve ADD right now.
    #[error("weft-cni cannot add pods right now: {0}")]
    NotAvailable(String),
}

impl Error {
    /// The CNI error code.
    pub fn code(&self) -> u32 {
        use code::*;
        match self {
            Error::UnsupportedVersion { .. } | Error::VerbNeedsNewerVersion { .. } => {
                INCOMPATIBLE_VERSION
            }
            Error::UnknownCommand { .. } | Error::MissingEnv { .. } | Error::InvalidEnv { .. } => {
                INVALID_ENV
            }
            Error::ReadStdin { .. }
            | Error::SubnetEnvRead { .. }
            | Error::Spawn { .. }
            | Error::State { .. } => IO_FAILURE,
            Error::Decode { .. } => DECODE_FAILURE,
            Error::InvalidConfig(_)
            | Error::StdinTooLarge { .. }
            | Error::SubnetEnvInvalid { .. }
            | Error::PluginNotFound { .. } => INVALID_NETWORK_CONFIG,
            Error::SubnetEnvMissing { .. }
            | Error::SubnetLost { .. }
            | Error::ContainerBusy { .. } => TRY_AGAIN_LATER,
            Error::StateMissing { .. } => UNKNOWN_CONTAINER,
            Error::StateCorrupt { .. } | Error::DelegateCrashed { .. } => INTERNAL,
            Error::Delegate { code, .. } => *code,
            Error::NotAvailable(_) => NOT_AVAILABLE,
        }
    }

    /// The underlying cause, for the `details` field (empty when the message says it all).
    pub fn details(&self) -> String {
        match self {
            Error::ReadStdin { source }
            | Error::SubnetEnvRead { source, .. }
            | Error::Spawn { source, .. }
            | Error::State { source, .. } => source.to_string(),
            Error::Decode { source } => source.to_string(),
            _ => String::new(),
        }
    }

    /// What the plugin prints and how it exits for this error: the delegate's own bytes and
    /// exit status for [`Error::Delegate`], the CNI error JSON and exit status 1 otherwise.
    pub fn to_response(&self, cni_version: &str) -> Response {
        if let Error::Delegate {
            stdout, exit_code, ..
        } = self
        {
            return Response {
                stdout: stdout.clone(),
                exit_code: *exit_code,
            };
        }
        Response {
            stdout: self.to_json(cni_version),
            exit_code: 1,
        }
    }

    /// The CNI error JSON, `{"cniVersion":..,"code":..,"msg":..,"details":..}`, with a
    /// trailing newline. `cni_version` is the config's version as written; it is replaced by
    /// [`DEFAULT_VERSION`] when empty or when it is the unsupported version being reported.
    pub fn to_json(&self, cni_version: &str) -> Vec<u8> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct CniErrorJson<'a> {
            cni_version: &'a str,
            code: u32,
            msg: String,
            details: String,
        }
        let body = CniErrorJson {
            cni_version: if cni_version.is_empty()
                || matches!(self, Error::UnsupportedVersion { .. })
            {
                DEFAULT_VERSION
            } else {
                cni_version
            },
            code: self.code(),
            msg: self.to_string(),
            details: self.details(),
        };
        let mut out = crate::json::to_vec_go(&body);
        out.push(b'\n');
        out
    }
}

/// What the process prints on stdout and its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Bytes for stdout.
    pub stdout: Vec<u8>,
    /// Process exit status.
    pub exit_code: i32,
}

impl Response {
    /// Success with `stdout`.
    pub fn ok(stdout: Vec<u8>) -> Response {
        Response {
            stdout,
            exit_code: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_the_spec_shape() {
        let err = Error::SubnetEnvMissing {
            path: PathBuf::from("/run/flannel/subnet.env"),
        };
        let bytes = err.to_json("0.3.1");
        crate::test_support::assert_golden("error-subnet-env-missing.json", &bytes);
        let json = String::from_utf8(bytes).unwrap();
        assert!(json.ends_with(",\"details\":\"\"}\n"), "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 4);
        for k in ["cniVersion", "code", "msg", "details"] {
            assert!(v.get(k).is_some(), "{k}");
        }
    }

    #[test]
    fn error_json_defaults_version_and_carries_details() {
        let source = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let err = Error::Decode { source };
        let v: serde_json::Value = serde_json::from_slice(&err.to_json("")).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["code"], 6);
        assert!(v["details"].as_str().unwrap().contains("EOF"), "{v}");
    }

    #[test]
    fn unsupported_version_error_speaks_a_supported_version() {
        let err = Error::UnsupportedVersion {
            version: "7.0.0".into(),
        };
        let v: serde_json::Value = serde_json::from_slice(&err.to_json("7.0.0")).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["code"], 1);
        assert!(v["msg"].as_str().unwrap().contains("\"7.0.0\""));
    }

    #[test]
    fn codes_match_the_spec() {
        let io = || std::io::Error::other("x");
        let cases: Vec<(Error, u32)> = vec![
            (
                Error::UnsupportedVersion {
                    version: "9".into(),
                },
                1,
            ),
            (Error::UnknownCommand { value: "X".into() }, 4),
            (
                Error::MissingEnv {
                    vars: vec!["CNI_NETNS"],
                    verb: "ADD",
                },
                4,
            ),
            (Error::ReadStdin { source: io() }, 5),
            (Error::InvalidConfig("x".into()), 7),
            (Error::SubnetEnvMissing { path: "/x".into() }, 11),
            (
                Error::SubnetEnvRead {
                    path: "/x".into(),
                    source: io(),
                },
                5,
            ),
            (
                Error::SubnetEnvInvalid {
                    path: "/x".into(),
                    reason: "r".into(),
                },
                7,
            ),
            (
                Error::PluginNotFound {
                    plugin: "bridge".into(),
                    dirs: vec![],
                },
                7,
            ),
            (
                Error::StateMissing {
                    container_id: "c".into(),
                    path: "/x".into(),
                },
                3,
            ),
            (Error::NotAvailable("x".into()), 50),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err}");
            assert_eq!(err.to_response("1.0.0").exit_code, 1);
        }
    }
}
