//! flock(2)-based locks: the kit builder's lock and the machine-wide guest
//! slots. The kernel drops a flock when its holder dies, so a crashed test
//! never leaves a slot taken.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("Cannot open lock file {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("No free guest slot in {dir} after {waited:?} ({slots} slots)")]
    NoSlot { dir: PathBuf, slots: usize, waited: Duration },
}

/// An exclusive flock held until drop.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
    pub path: PathBuf,
}

fn open(path: &Path) -> Result<File, LockError> {
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| LockError::Open { path: path.to_path_buf(), source })
}

fn flock(file: &File, op: libc::c_int) -> std::io::Result<bool> {
    // SAFETY: flock on a valid fd owned by `file`.
    let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

impl FileLock {
    /// Blocks until the lock is ours.
    pub fn exclusive(path: &Path) -> Result<FileLock, LockError> {
        let file = open(path)?;
        loop {
            match flock(&file, libc::LOCK_EX) {
                Ok(true) => break,
                Ok(false) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(LockError::Lock { path: path.to_path_buf(), source }),
            }
        }
        Ok(FileLock { _file: file, path: path.to_path_buf() })
    }

    pub fn try_exclusive(path: &Path) -> Result<Option<FileLock>, LockError> {
        let file = open(path)?;
        match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(true) => Ok(Some(FileLock { _file: file, path: path.to_path_buf() })),
            Ok(false) => Ok(None),
            Err(source) => Err(LockError::Lock { path: path.to_path_buf(), source }),
        }
    }
}

/// Guests allowed at once on this machine (TCG guests take a core each).
pub fn max_guests() -> usize {
    std::env::var("REWIND_MAX_GUESTS").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(2)
}

/// Takes one of the machine-wide guest slots (`<dir>/{0,1,..}`), waiting up
/// to `timeout` for one to free up.
pub fn acquire_slot(dir: &Path, timeout: Duration) -> Result<FileLock, LockError> {
    let slots = max_guests();
    let started = Instant::now();
    let mut announced = false;
    loop {
        for i in 0..slots {
            if let Some(lock) = FileLock::try_exclusive(&dir.join(i.to_string()))? {
                return Ok(lock);
            }
        }
        if started.elapsed() > timeout {
            return Err(LockError::NoSlot { dir: dir.to_path_buf(), slots, waited: started.elapsed() });
        }
        if !announced {
            crate::progress::log(&format!("rewind-harness: all {slots} guest slots busy, waiting"));
            announced = true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileLock::try_exclusive(&dir.path().join("0")).unwrap();
        assert!(a.is_some());
        // flock is per open file description: a second open conflicts.
        assert!(FileLock::try_exclusive(&dir.path().join("0")).unwrap().is_none());
        drop(a);
        assert!(FileLock::try_exclusive(&dir.path().join("0")).unwrap().is_some());
    }

    #[test]
    fn slots_run_out_then_time_out() {
        let dir = tempfile::tempdir().unwrap();
        let n = max_guests();
        let held: Vec<_> = (0..n).map(|_| acquire_slot(dir.path(), Duration::ZERO).unwrap()).collect();
        assert!(matches!(acquire_slot(dir.path(), Duration::from_millis(10)), Err(LockError::NoSlot { .. })));
        drop(held);
        assert!(acquire_slot(dir.path(), Duration::ZERO).is_ok());
    }
}
