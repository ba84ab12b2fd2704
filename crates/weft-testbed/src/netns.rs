//! Free helpers around named network namespaces (`/var/run/netns/<name>`).

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use nix::sched::{CloneFlags, setns};

use crate::TestbedError;

/// Where `ip netns add` bind-mounts named namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";

/// The bind-mount file of the named namespace `ns`.
pub fn netns_path(ns: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(ns)
}

/// Fails with [`TestbedError::NotRoot`] unless the effective uid is 0.
pub fn require_root() -> Result<(), TestbedError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(TestbedError::NotRoot)
    }
}

/// Runs `f` on a fresh thread that first joined the network namespace `ns`
/// (`setns(CLONE_NEWNET)`), and returns its result.
///
/// Only that thread changes namespace; the caller's thread is untouched. Sockets
/// created inside `f` belong to `ns` and keep working after the thread ends, so a
/// test can, for instance, build a current-thread tokio runtime or open a TCP
/// connection from inside a pod. A panic in `f` is propagated to the caller.
pub fn in_netns<R: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, TestbedError> {
    let path = netns_path(ns);
    let netns_err = |what: &str, detail: String| TestbedError::Netns {
        ns: ns.to_string(),
        path: path.display().to_string(),
        what: what.to_string(),
        detail,
    };
    let file = File::open(&path).map_err(|e| netns_err("open", e.to_string()))?;
    let handle = std::thread::Builder::new()
        .name(format!("netns:{ns}"))
        .spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET)?;
            drop(file);
            Ok::<R, nix::errno::Errno>(f())
        })
        .map_err(|e| netns_err("spawn thread", e.to_string()))?;
    match handle.join() {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(errno)) => Err(netns_err("setns(CLONE_NEWNET)", errno.to_string())),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Names of all named network namespaces starting with `prefix`, sorted.
///
/// Reads `/var/run/netns` directly (no subprocess). Meant for tooling such as a
/// `demo down` that wants to find beds left behind by a killed process
/// (testbed ids start with `wt`).
pub fn list_namespaces_with_prefix(prefix: &str) -> Result<Vec<String>, TestbedError> {
    let rd = match std::fs::read_dir(NETNS_DIR) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(TestbedError::Io {
                what: format!("listing {NETNS_DIR}"),
                source: e,
            });
        }
    };
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| TestbedError::Io {
            what: format!("listing {NETNS_DIR}"),
            source: e,
        })?;
        if let Some(name) = entry.file_name().to_str()
            && name.starts_with(prefix)
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// (device, inode) identity of a namespace file, comparable with `/proc/<pid>/ns/net`.
pub(crate) fn ns_identity(path: &std::path::Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}
