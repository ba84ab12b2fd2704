//! Files weftd writes: subnet.env (for the CNI plugin) and the persisted VTEP MAC.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use weft_core::mac::MacAddr;

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

/// Writes `contents` to `path` atomically: a temporary file in the same directory, fsync,
/// rename over the target, fsync the directory. A reader sees the old file or the new one,
/// never a torn one. The directory is created 0755 like flanneld's.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), FileError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let err = |source| FileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(err)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
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

/// The file holding the VTEP MAC of `device` under `state_dir`.
pub fn mac_file(state_dir: &Path, device: &str) -> PathBuf {
    state_dir.join(format!("{device}.mac"))
}

/// The persisted MAC, if there is a readable, valid one. A corrupt file is reported and
/// ignored (a new MAC is better than no network).
pub fn load_mac(path: &Path) -> Result<Option<MacAddr>, String> {
    match fs::read_to_string(path) {
        Ok(text) => text.trim().parse::<MacAddr>().map(Some).map_err(|e| {
            format!(
                "{}: {e}; delete the file to let weftd pick a new MAC",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

pub fn save_mac(path: &Path, mac: MacAddr) -> Result<(), FileError> {
    write_atomic(path, format!("{mac}\n").as_bytes(), 0o644)
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
    fn mac_round_trip_and_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = mac_file(dir.path(), "flannel.1");
        assert_eq!(load_mac(&p).unwrap(), None);
        let mac: MacAddr = "02:aa:bb:cc:dd:ee".parse().unwrap();
        save_mac(&p, mac).unwrap();
        assert_eq!(load_mac(&p).unwrap(), Some(mac));
        fs::write(&p, "garbage").unwrap();
        let err = load_mac(&p).unwrap_err();
        assert!(err.contains("flannel.1.mac"), "{err}");
    }
}
