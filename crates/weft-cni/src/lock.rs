//! One lock per container: ADD, DEL and CHECK for the same container run one at a time.
//!
//! A runtime can send DEL while an ADD for the same container still runs (a sandbox that
//! timed out, kubelet restarting), and the two would interleave: ADD saves its state and its
//! delegate allocates an IP while DEL replays the state, releases nothing yet and removes the
//! state, so the IP leaks. The lock is `flock(2)` on `<dataDir>/.locks/<containerID>`: the
//! kernel releases it when the process ends however it ends, so a crashed plugin leaves no
//! stale lock (only an empty file, reused by the next invocation). Container IDs start with an
//! alphanumeric character ([`crate::env::validate_container_id`]), so `.locks` is never a
//! container's state file.
//!
//! The file is removed when the container is gone (DEL done, failed ADD undone). Removing a
//! file others may be waiting on is safe because a waiter that gets the lock checks that the
//! path still names the file it locked, and starts over if not.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Error;

/// The directory under dataDir that holds the lock files.
pub const LOCK_DIR: &str = ".locks";
/// How long an invocation waits for another one on the same container before it gives up
/// with "try again later" (CNI code 11). A delegate ADD takes milliseconds; kubelet's own
/// runtime request timeout is 2 minutes.
pub const LOCK_WAIT: Duration = Duration::from_secs(60);

/// A held container lock; released when dropped (and by the kernel if the process dies).
#[derive(Debug)]
pub struct ContainerLock {
    file: File,
    path: PathBuf,
}

impl ContainerLock {
    /// Takes the lock of `container_id` under `data_dir`, waiting at most `wait` for another
    /// invocation holding it.
    pub fn acquire(
        data_dir: &Path,
        container_id: &str,
        wait: Duration,
    ) -> Result<ContainerLock, Error> {
        let dir = data_dir.join(LOCK_DIR);
        let path = dir.join(container_id);
        let io_err = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::State {
                action,
                path,
                source,
            }
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err("create the lock directory", &dir))?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(io_err("open the container lock", &path))?;
            loop {
                match file.try_lock() {
                    Ok(()) => break,
                    Err(TryLockError::WouldBlock) => {
                        if started.elapsed() >= wait {
                            return Err(Error::ContainerBusy {
                                container_id: container_id.to_string(),
                                lock: path,
                                waited: started.elapsed(),
                            });
                        }
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_millis(20));
                    }
                    Err(TryLockError::Error(e)) => {
                        return Err(io_err("lock", &path)(e));
                    }
                }
            }
            // The holder we waited for may have removed the file (the container is gone) and
            // someone may have made a new one: then our lock guards nothing; start over.
            if same_file(&file, &path).map_err(io_err("check the container lock", &path))? {
                return Ok(ContainerLock { file, path });
            }
        }
    }

    /// Removes the lock file (the container is gone), then releases the lock.
    pub fn remove(self) -> Result<(), Error> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::State {
                action: "remove the container lock",
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ContainerLock {
    fn drop(&mut self) {
        // Closing the file releases the lock; unlocking first makes it explicit.
        let _ = self.file.unlock();
    }
}

/// Whether `path` still names the open `file` (false if it was removed or replaced).
fn same_file(file: &File, path: &Path) -> io::Result<bool> {
    let open = file.metadata()?;
    match fs::metadata(path) {
        Ok(now) => Ok(now.dev() == open.dev() && now.ino() == open.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier, Mutex};

    #[test]
    fn one_holder_at_a_time_per_container() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let inside = Arc::new(Mutex::new(0u32));
        let max_inside = Arc::new(Mutex::new(0u32));
        let start = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (dir, inside, max_inside, start) = (
                    dir.clone(),
                    inside.clone(),
                    max_inside.clone(),
                    start.clone(),
                );
                std::thread::spawn(move || {
                    start.wait();
                    for _ in 0..10 {
                        let lock = ContainerLock::acquire(&dir, "c1", LOCK_WAIT).unwrap();
                        {
                            let mut n = inside.lock().unwrap();
                            *n += 1;
                            let mut m = max_inside.lock().unwrap();
                            *m = (*m).max(*n);
                        }
                        std::thread::sleep(Duration::from_millis(1));
                        *inside.lock().unwrap() -= 1;
                        // Half of the holders remove the file, as DEL does.
                        if rand_bit() {
                            lock.remove().unwrap();
                        } else {
                            drop(lock);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*max_inside.lock().unwrap(), 1, "two holders at once");
    }

    fn rand_bit() -> bool {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            & 1
            == 1
    }

    #[test]
    fn other_containers_do_not_wait() {
        let tmp = tempfile::tempdir().unwrap();
        let _a = ContainerLock::acquire(tmp.path(), "a", LOCK_WAIT).unwrap();
        let t0 = Instant::now();
        let _b = ContainerLock::acquire(tmp.path(), "b", Duration::ZERO).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_busy_container_is_try_again_later_after_the_wait() {
        let tmp = tempfile::tempdir().unwrap();
        let held = ContainerLock::acquire(tmp.path(), "c1", LOCK_WAIT).unwrap();
        let t0 = Instant::now();
        let err = ContainerLock::acquire(tmp.path(), "c1", Duration::from_millis(100)).unwrap_err();
        assert!(t0.elapsed() >= Duration::from_millis(100));
        assert_eq!(err.code(), 11, "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("\"c1\"") && msg.contains(&held.path().display().to_string()),
            "{msg}"
        );
        drop(held);
        ContainerLock::acquire(tmp.path(), "c1", Duration::ZERO).unwrap();
    }

    #[test]
    fn remove_deletes_the_file_and_a_new_lock_makes_it_again() {
        let tmp = tempfile::tempdir().unwrap();
        let lock = ContainerLock::acquire(tmp.path(), "c1", LOCK_WAIT).unwrap();
        let path = lock.path().to_path_buf();
        assert!(path.is_file());
        lock.remove().unwrap();
        assert!(!path.exists());
        let again = ContainerLock::acquire(tmp.path(), "c1", LOCK_WAIT).unwrap();
        assert!(path.is_file());
        drop(again);
        assert!(path.is_file(), "a plain release keeps the file");
    }
}
