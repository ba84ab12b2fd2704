//! The CNI_* environment: which verb, for which container, and where the plugins live.

use std::path::PathBuf;

use weft_core::clip::clip;

use crate::Error;

/// The CNI verbs (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Add the container to the network.
    Add,
    /// Remove the container from the network.
    Del,
    /// Check that the container's networking is as expected.
    Check,
    /// Report the supported spec versions.
    Version,
    /// Report whether the plugin can serve ADD (spec 1.1.0).
    Status,
    /// Garbage-collect stale resources (spec 1.1.0).
    Gc,
}

impl Command {
    /// Parses a `CNI_COMMAND` value (exact, upper case, as the spec writes them).
    pub fn parse(value: &str) -> Option<Command> {
        Some(match value {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }

    /// The `CNI_COMMAND` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }
}

/// The CNI_* variables as found (unset and empty are both `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawEnv {
    /// `CNI_COMMAND`.
    pub command: Option<String>,
    /// `CNI_CONTAINERID`.
    pub container_id: Option<String>,
    /// `CNI_NETNS`.
    pub netns: Option<String>,
    /// `CNI_IFNAME`.
    pub ifname: Option<String>,
    /// `CNI_ARGS` (not interpreted; the delegate sees it through the inherited environment).
    pub args: Option<String>,
    /// `CNI_PATH`.
    pub path: Option<String>,
}

impl RawEnv {
    /// Reads the variables with `lookup` (the process environment in `main`).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> RawEnv {
        let get = |k: &str| lookup(k).filter(|v| !v.is_empty());
        RawEnv {
            command: get("CNI_COMMAND"),
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: get("CNI_ARGS"),
            path: get("CNI_PATH"),
        }
    }

    /// Reads the variables from the process environment (non-UTF-8 bytes are replaced, so
    /// such a value fails validation instead of looking unset).
    pub fn from_process() -> RawEnv {
        RawEnv::from_lookup(|k| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned()))
    }
}

/// A validated invocation. Fields a verb does not use are empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The verb.
    pub command: Command,
    /// Container ID; safe to use as a file name (see [`validate_container_id`]).
    pub container_id: String,
    /// Interface name inside the container.
    pub ifname: String,
    /// Network namespace path (`None` is allowed for DEL).
    pub netns: Option<String>,
    /// CNI_PATH directories, in search order.
    pub cni_path: Vec<PathBuf>,
}

impl Invocation {
    /// Validates `raw` for its verb: what the spec requires is present, the container ID is
    /// usable as a file name, the interface name is one the kernel accepts.
    pub fn from_env(raw: &RawEnv) -> Result<Invocation, Error> {
        let command = raw
            .command
            .as_deref()
            .and_then(Command::parse)
            .ok_or_else(|| Error::UnknownCommand {
                value: clip(raw.command.as_deref().unwrap_or_default()),
            })?;
        let cni_path: Vec<PathBuf> = raw
            .path
            .as_deref()
            .unwrap_or("")
            .split(':')
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .collect();
        // (container ID, netns, ifname, path) required per verb, as libcni's skel does.
        let (need_id, need_netns, need_ifname, need_path) = match command {
            Command::Add | Command::Check => (true, true, true, true),
            Command::Del => (true, false, true, true),
            Command::Version | Command::Status | Command::Gc => (false, false, false, false),
        };
        let mut missing = Vec::new();
        if need_id && raw.container_id.is_none() {
            missing.push("CNI_CONTAINERID");
        }
        if need_netns && raw.netns.is_none() {
            missing.push("CNI_NETNS");
        }
        if need_ifname && raw.ifname.is_none() {
            missing.push("CNI_IFNAME");
        }
        if need_path && cni_path.is_empty() {
            missing.push("CNI_PATH");
        }
        if !missing.is_empty() {
            return Err(Error::MissingEnv {
                vars: missing,
                verb: command.as_str(),
            });
        }
        let container_id = if need_id {
            let id = raw.container_id.clone().unwrap_or_default();
            validate_container_id(&id)?;
            id
        } else {
            String::new()
        };
        let ifname = if need_ifname {
            let name = raw.ifname.clone().unwrap_or_default();
            validate_ifname(&name)?;
            name
        } else {
            String::new()
        };
        Ok(Invocation {
            command,
            container_id,
            ifname,
            netns: raw.netns.clone(),
            cni_path,
        })
    }
}

/// The CNI spec's rule for `CNI_CONTAINERID` (SPEC.md, "Parameters"): not empty, starting
/// with an alphanumeric character, followed by alphanumerics, `_`, `.` or `-` (libcni checks
/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`). The ID also names the state file `<dataDir>/<id>`, so it
/// must fit a file name: at most 255 bytes. Such an ID is one path component and never `.`,
/// `..` or a hidden file.
pub fn validate_container_id(id: &str) -> Result<(), Error> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    let reason = if id.is_empty() {
        Some("it is empty".to_string())
    } else if id.len() > 255 {
        Some(format!("it is {} bytes long, the limit is 255", id.len()))
    } else if let Some(c) = id.chars().next().filter(|c| !c.is_ascii_alphanumeric()) {
        Some(format!("it starts with {c:?}"))
    } else {
        id.chars()
            .find(|c| !allowed(*c))
            .map(|c| format!("it contains {c:?}"))
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidEnv {
            var: "CNI_CONTAINERID",
            value: clip(id),
            reason: format!(
                "{reason}; the CNI spec requires a container ID that starts with a letter or digit followed by letters, digits, '_', '.' or '-' (1 to 255 bytes here, as it names the state file under dataDir); the container runtime must pass one"
            ),
        }),
    }
}

/// The kernel's rules for an interface name: 1 to 15 bytes (IFNAMSIZ - 1), no `/`, `:` or
/// whitespace, not `.` or `..`.
pub fn validate_ifname(name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        Some("it is empty".to_string())
    } else if name.len() > 15 {
        Some(format!("it is {} bytes long, the limit is 15", name.len()))
    } else if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | ':' | '\0') || c.is_whitespace())
    {
        Some(format!("it contains {c:?}"))
    } else if name == "." || name == ".." {
        Some(format!("{name:?} is reserved"))
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidEnv {
            var: "CNI_IFNAME",
            value: clip(name),
            reason: format!(
                "{reason}; an interface name must be 1 to 15 bytes without '/', ':' or whitespace, such as \"eth0\""
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(command: &str) -> RawEnv {
        RawEnv {
            command: Some(command.to_string()),
            container_id: Some("abc123".to_string()),
            netns: Some("/var/run/netns/pod".to_string()),
            ifname: Some("eth0".to_string()),
            args: None,
            path: Some("/opt/cni/bin:/usr/lib/cni".to_string()),
        }
    }

    #[test]
    fn lookup_treats_empty_as_unset() {
        let env = RawEnv::from_lookup(|k| match k {
            "CNI_COMMAND" => Some("ADD".to_string()),
            "CNI_NETNS" => Some(String::new()),
            _ => None,
        });
        assert_eq!(env.command.as_deref(), Some("ADD"));
        assert_eq!(env.netns, None);
    }

    #[test]
    fn add_with_everything_is_valid() {
        let inv = Invocation::from_env(&raw("ADD")).unwrap();
        assert_eq!(inv.command, Command::Add);
        assert_eq!(inv.container_id, "abc123");
        assert_eq!(inv.ifname, "eth0");
        assert_eq!(
            inv.cni_path,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
    }

    #[test]
    fn unknown_or_missing_command_is_code_4() {
        for cmd in [Some("add"), Some("FOO"), None] {
            let mut r = raw("ADD");
            r.command = cmd.map(str::to_string);
            let err = Invocation::from_env(&r).unwrap_err();
            assert_eq!(err.code(), 4);
            assert!(
                err.to_string().contains("ADD, DEL, CHECK, VERSION"),
                "{err}"
            );
        }
    }

    #[test]
    fn missing_vars_are_code_4_and_named() {
        type Edit = fn(&mut RawEnv);
        let cases: &[(&str, Edit, &str)] = &[
            ("ADD", |r| r.container_id = None, "CNI_CONTAINERID"),
            ("ADD", |r| r.netns = None, "CNI_NETNS"),
            ("ADD", |r| r.ifname = None, "CNI_IFNAME"),
            ("ADD", |r| r.path = None, "CNI_PATH"),
            ("ADD", |r| r.path = Some("::".to_string()), "CNI_PATH"),
            ("CHECK", |r| r.netns = None, "CNI_NETNS"),
            ("DEL", |r| r.container_id = None, "CNI_CONTAINERID"),
            ("DEL", |r| r.ifname = None, "CNI_IFNAME"),
        ];
        for (cmd, edit, var) in cases {
            let mut r = raw(cmd);
            edit(&mut r);
            let err = Invocation::from_env(&r).unwrap_err();
            assert_eq!(err.code(), 4, "{cmd} {var}");
            let msg = err.to_string();
            assert!(msg.starts_with(var), "{msg}");
            assert!(msg.contains(&format!("CNI_COMMAND={cmd}")), "{msg}");
        }
    }

    #[test]
    fn several_missing_vars_are_all_named() {
        let r = RawEnv {
            command: Some("ADD".to_string()),
            ..RawEnv::default()
        };
        let msg = Invocation::from_env(&r).unwrap_err().to_string();
        assert!(
            msg.starts_with("CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH not set"),
            "{msg}"
        );
    }

    #[test]
    fn del_does_not_need_netns_and_version_needs_nothing() {
        let mut r = raw("DEL");
        r.netns = None;
        assert!(Invocation::from_env(&r).is_ok());
        let r = RawEnv {
            command: Some("VERSION".to_string()),
            ..RawEnv::default()
        };
        let inv = Invocation::from_env(&r).unwrap();
        assert_eq!(inv.command, Command::Version);
        for cmd in ["STATUS", "GC"] {
            let r = RawEnv {
                command: Some(cmd.to_string()),
                ..RawEnv::default()
            };
            assert!(Invocation::from_env(&r).is_ok(), "{cmd}");
        }
    }

    #[test]
    fn container_id_rules() {
        // The spec's rule: ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$ (containerd passes 64 hex digits).
        for ok in [
            "abc",
            "0123456789abcdef",
            "a.b_c-d",
            "ABC123",
            "x..y",
            "9",
            &"f".repeat(64),
            &"x".repeat(255),
        ] {
            assert!(validate_container_id(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("", "it is empty"),
            (".", "it starts with '.'"),
            ("..", "it starts with '.'"),
            (".hidden", "it starts with '.'"),
            ("_a", "it starts with '_'"),
            ("-a", "it starts with '-'"),
            ("a/b", "it contains '/'"),
            ("/etc/passwd", "it starts with '/'"),
            ("a\\b", "it contains '\\\\'"),
            ("a\0b", "it contains '\\0'"),
            ("a b", "it contains ' '"),
            ("a:b", "it contains ':'"),
            ("pod\n", "it contains '\\n'"),
            ("caf\u{e9}", "it contains '\u{e9}'"),
            ("../../etc", "it starts with '.'"),
            (&"x".repeat(256), "it is 256 bytes long"),
        ] {
            let err = validate_container_id(bad).unwrap_err();
            assert_eq!(err.code(), 4, "{bad:?}");
            let msg = err.to_string();
            assert!(msg.starts_with("CNI_CONTAINERID="), "{msg}");
            assert!(msg.contains(why), "{bad:?}: {msg}");
            assert!(msg.contains("letter or digit"), "{msg}");
        }
    }

    #[test]
    fn ifname_rules() {
        for ok in ["eth0", "a", "net1", "abcdefghijklmno"] {
            assert!(validate_ifname(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "abcdefghijklmnop",
            "eth/0",
            "eth:0",
            "eth 0",
            "eth\t0",
            "eth\n",
            ".",
            "..",
        ] {
            let err = validate_ifname(bad).unwrap_err();
            assert_eq!(err.code(), 4, "{bad:?}");
            assert!(err.to_string().starts_with("CNI_IFNAME="), "{err}");
        }
    }

    #[test]
    fn invalid_values_fail_from_env() {
        let mut r = raw("ADD");
        r.container_id = Some("../x".to_string());
        assert_eq!(Invocation::from_env(&r).unwrap_err().code(), 4);
        let mut r = raw("DEL");
        r.ifname = Some("way-too-long-ifname".to_string());
        assert_eq!(Invocation::from_env(&r).unwrap_err().code(), 4);
    }
}
