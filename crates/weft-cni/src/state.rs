//! The per-container state: the exact delegate config saved at ADD, replayed at DEL and CHECK.
//!
//! One file per container, `<dataDir>/<containerID>` (dir 0700, file 0600), written
//! atomically: a unique temp file in the same directory, then `rename` over the final name.
//! Concurrent ADDs for different containers never see each other's bytes, and a DEL or
//! CHECK racing an ADD, or an ADD killed half-way, sees the old file or the new one, never
//! a torn one (a killed ADD leaves at most a temp file, which GC removes).
//!
//! The file is **not fsynced** (nor its directory): what that could lose, and why it is
//! safe.
//!
//! - Only a power loss or kernel crash within the kernel's writeback delay (about 30 s)
//!   after an ADD can lose the file or leave it empty. A process crash cannot: the page
//!   cache survives it.
//! - After such a crash the container and its network namespace are gone too; the runtime
//!   then sends DEL for the dead sandbox. DEL without a state file succeeds without running
//!   the delegate ([`crate::plugin`]'s `del`), and so does DEL with an empty or unreadable one
//!   (it is kept for inspection), as the CNI spec asks: a DEL must succeed when the
//!   resources are already gone. The veth died with the namespace.
//! - What the replayed DEL would still have done is release the pod's IP in host-local.
//!   host-local itself (containernetworking-plugins 1.1.1, Debian 12, checked with strace)
//!   writes its reservation file and `last_reserved_ip` without any fsync, so in that same
//!   window its own record of the IP is just as volatile: an fsync here did not make the
//!   chain durable, it only made every ADD wait for the disk (1 ms on an idle disk, 97 ms
//!   measured under a concurrent build).
//! - flannel's own plugin writes this file with a plain `WriteFile`: no fsync, no rename.
//!
//! So an ADD costs a write and a rename, flannel's price, while keeping the atomic replace
//! flannel lacks.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::Error;

/// The marker in temp file names; [`StateStore::remove_stale_temp_files`] looks for it.
const TEMP_MARKER: &str = ".weft-tmp-";

/// The directory holding the saved delegate configs.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    /// A store in `dir` (created on the first save).
    pub fn new(dir: impl Into<PathBuf>) -> StateStore {
        StateStore { dir: dir.into() }
    }

    /// The state file of `container_id` (already validated as one path component).
    pub fn path(&self, container_id: &str) -> PathBuf {
        self.dir.join(container_id)
    }

    /// Saves `bytes` as the state of `container_id`, replacing any previous state.
    pub fn save(&self, container_id: &str, bytes: &[u8]) -> Result<(), Error> {
        let path = self.path(container_id);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| Error::State {
                action: "create the network state directory",
                path: self.dir.clone(),
                source,
            })?;
        let tmp = self.dir.join(temp_name(container_id));
        let written = (|| -> io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(bytes)?;
            // No fsync of the file or the directory: see the module docs.
            fs::rename(&tmp, &path)
        })();
        written.map_err(|source| {
            let _ = fs::remove_file(&tmp);
            Error::State {
                action: "save network state to",
                path,
                source,
            }
        })
    }

    /// The saved state of `container_id`, `None` if there is none.
    pub fn load(&self, container_id: &str) -> Result<Option<Vec<u8>>, Error> {
        let path = self.path(container_id);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::State {
                action: "read network state from",
                path,
                source,
            }),
        }
    }

    /// Removes the state of `container_id`; already gone is fine.
    pub fn remove(&self, container_id: &str) -> Result<(), Error> {
        let path = self.path(container_id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::State {
                action: "remove network state",
                path,
                source,
            }),
        }
    }

    /// Removes temp files older than `min_age` that a killed ADD left behind; returns how
    /// many. A missing directory is not an error.
    pub fn remove_stale_temp_files(&self, min_age: std::time::Duration) -> Result<usize, Error> {
        let io_err = |source| Error::State {
            action: "list network state directory",
            path: self.dir.clone(),
            source,
        };
        let entries = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err(e)),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(io_err)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !(name.starts_with('.') && name.contains(TEMP_MARKER)) {
                continue;
            }
            let old_enough = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= min_age);
            if old_enough && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A temp name unique across processes (pid), threads (counter) and time (nanos).
fn temp_name(container_id: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        ".{container_id}{TEMP_MARKER}{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn save_load_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path().join("a/b/flannel"));
        assert_eq!(store.load("c1").unwrap(), None);
        store.save("c1", b"{\"type\":\"bridge\"}").unwrap();
        assert_eq!(mode(store.dir()), 0o700);
        assert_eq!(mode(&store.path("c1")), 0o600);
        assert_eq!(store.load("c1").unwrap().unwrap(), b"{\"type\":\"bridge\"}");
        store.save("c1", b"second").unwrap();
        assert_eq!(store.load("c1").unwrap().unwrap(), b"second");
        store.remove("c1").unwrap();
        store.remove("c1").unwrap();
        assert_eq!(store.load("c1").unwrap(), None);
        // No temp files left behind.
        assert_eq!(fs::read_dir(store.dir()).unwrap().count(), 0);
    }

    #[test]
    fn concurrent_saves_for_different_containers_do_not_mix() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path().join("flannel"));
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for round in 0..20 {
                        let body = format!("container {i} round {round} ").repeat(200);
                        store.save(&format!("c{i}"), body.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for i in 0..16 {
            let body = format!("container {i} round 19 ").repeat(200);
            assert_eq!(
                store.load(&format!("c{i}")).unwrap().unwrap(),
                body.as_bytes()
            );
        }
        assert_eq!(fs::read_dir(store.dir()).unwrap().count(), 16);
    }

    #[test]
    fn concurrent_saves_for_one_container_leave_a_whole_file() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path());
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let body = vec![b'a' + i as u8; 64 * 1024];
                    store.save("same", &body).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let got = store.load("same").unwrap().unwrap();
        assert_eq!(got.len(), 64 * 1024);
        assert!(got.iter().all(|b| *b == got[0]));
    }

    #[test]
    fn save_into_unwritable_place_is_io_failure() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("plain-file");
        fs::write(&file, "x").unwrap();
        let store = StateStore::new(&file);
        let err = store.save("c1", b"x").unwrap_err();
        assert_eq!(err.code(), 5);
        assert!(err.to_string().contains("network state directory"), "{err}");
    }

    #[test]
    fn stale_temp_files_are_removed_and_state_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path());
        store.save("keep", b"x").unwrap();
        fs::write(tmp.path().join(temp_name("gone")), "partial").unwrap();
        assert_eq!(
            store
                .remove_stale_temp_files(std::time::Duration::from_secs(3600))
                .unwrap(),
            0
        );
        assert_eq!(
            store
                .remove_stale_temp_files(std::time::Duration::ZERO)
                .unwrap(),
            1
        );
        assert_eq!(store.load("keep").unwrap().unwrap(), b"x");
        let missing = StateStore::new(tmp.path().join("nope"));
        assert_eq!(
            missing
                .remove_stale_temp_files(std::time::Duration::ZERO)
                .unwrap(),
            0
        );
    }
}
