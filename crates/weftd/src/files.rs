//! Files weftd writes: subnet.env (for the CNI plugin) and the persisted VTEP MAC.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use std::net::Ipv4Addr;

use weft_core::mac::MacAddr;
use weft_core::vtep::{MacFile, NodeIdentity};

/// A file that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot write {path}: {source}; check that its directory is writable")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `path`'s directory, created 0755 like flanneld's if missing, and its file name.
fn parent_dir(path: &Path) -> std::io::Result<(PathBuf, String)> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((dir.to_path_buf(), name))
}

/// Writes `contents` to `path` atomically: a temporary file in the same directory, fsync,
/// rename over the target, fsync the directory. A reader sees the old file or the new one,
/// never a torn one. The directory is created 0755 like flanneld's.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), FileError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| FileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let (dir, name) = parent_dir(path).map_err(err)?;
    let dir = dir.as_path();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// The file holding the VTEP MACs of `device` under `state_dir`.
pub fn mac_file(state_dir: &Path, device: &str) -> PathBuf {
    state_dir.join(format!("{device}.mac"))
}

/// This node's identity for owning a VTEP MAC (see [`NodeIdentity`] for why these fields).
pub fn node_identity(public_ip: Ipv4Addr, vni: u32) -> NodeIdentity {
    let first_line = |paths: &[&str]| {
        paths
            .iter()
            .filter_map(|p| fs::read_to_string(p).ok())
            .map(|t| t.trim().to_string())
            .find(|t| !t.is_empty())
            .unwrap_or_default()
    };
    NodeIdentity {
        public_ip,
        vni,
        machine_id: first_line(&["/etc/machine-id", "/var/lib/dbus/machine-id"]),
        host_uuid: first_line(&["/sys/class/dmi/id/product_uuid"]),
        netns: netns_name(),
    }
}

/// The network namespace weftd runs in, by a name that outlives weftd: `host` when it is PID
/// 1's (the host's, also in a hostNetwork pod), `name:<n>` when it is bound under /run/netns
/// (as `ip netns add` does), else `inode:<n>`.
fn netns_name() -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(me) = fs::metadata("/proc/self/ns/net") else {
        return "unknown".into();
    };
    let same = |m: &fs::Metadata| m.dev() == me.dev() && m.ino() == me.ino();
    if fs::metadata("/proc/1/ns/net").is_ok_and(|m| same(&m)) {
        return "host".into();
    }
    if let Ok(dir) = fs::read_dir("/run/netns") {
        let mut names: Vec<String> = dir
            .filter_map(Result::ok)
            .filter(|e| fs::metadata(e.path()).is_ok_and(|m| same(&m)))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        if let Some(n) = names.into_iter().next() {
            return format!("name:{n}");
        }
    }
    format!("inode:{}", me.ino())
}

/// Reads the MAC file (a missing file is an empty one).
pub fn read_macs(path: &Path) -> Result<MacFile, String> {
    match fs::read(path) {
        Ok(bytes) => Ok(MacFile::parse(&String::from_utf8_lossy(&bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(MacFile::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Records `mac` as `me`'s in the MAC file, keeping the other nodes' lines. Several weftd may
/// share the directory, so the read-modify-write holds an exclusive lock on a lock file beside
/// it (the file itself is replaced by rename, so it cannot carry the lock).
pub fn remember_mac(
    path: &Path,
    device: &str,
    me: &NodeIdentity,
    mac: MacAddr,
) -> Result<(), FileError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| FileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let (dir, name) = parent_dir(path).map_err(err)?;
    let dir = dir.as_path();
    let lock = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(dir.join(format!(".{name}.lock")))
        .map_err(err)?;
    lock.lock().map_err(err)?;
    // Unreadable or damaged content is replaced: it is of no use to anyone.
    let mut file = read_macs(path).unwrap_or_default();
    if file.own(me) == Some(mac) && file.problems.is_empty() {
        return Ok(());
    }
    file.remember(me, mac);
    write_atomic(path, file.render(device).as_bytes(), 0o644)
    // The lock is released when `lock` is closed.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_creates_dirs_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run/flannel/subnet.env");
        write_atomic(&p, b"A=1\n", 0o644).unwrap();
        write_atomic(&p, b"A=2\n", 0o644).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "A=2\n");
        let leftovers: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }

    #[test]
    fn macs_of_several_nodes_share_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = mac_file(dir.path(), "flannel.1");
        assert_eq!(read_macs(&p).unwrap(), MacFile::default());
        let a = node_identity("10.0.0.1".parse().unwrap(), 1);
        let b = NodeIdentity {
            public_ip: "10.0.0.2".parse().unwrap(),
            ..a.clone()
        };
        let ma: MacAddr = "02:aa:bb:cc:dd:01".parse().unwrap();
        let mb: MacAddr = "02:aa:bb:cc:dd:02".parse().unwrap();
        remember_mac(&p, "flannel.1", &a, ma).unwrap();
        remember_mac(&p, "flannel.1", &b, mb).unwrap();
        let f = read_macs(&p).unwrap();
        assert_eq!((f.own(&a), f.own(&b)), (Some(ma), Some(mb)));
        // Damaged content is replaced on the next write.
        fs::write(&p, "garbage").unwrap();
        remember_mac(&p, "flannel.1", &a, ma).unwrap();
        let f = read_macs(&p).unwrap();
        assert_eq!(f.own(&a), Some(ma));
        assert!(f.problems.is_empty());
    }

    #[test]
    fn this_process_has_a_stable_identity() {
        let a = node_identity("10.0.0.1".parse().unwrap(), 1);
        let b = node_identity("10.0.0.1".parse().unwrap(), 1);
        assert_eq!(a, b);
        assert!(!a.netns.is_empty());
    }
}
