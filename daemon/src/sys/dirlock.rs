//! One rewindd per metadata directory.
//!
//! Two daemons on one state record would each act on their own copy in
//! memory: one arms while the other commits, and each save undoes the
//! other's. The socket check only catches a second daemon on the same
//! socket path; on Android init hands each service its own socket, so the
//! directory itself is locked. flock(2) is released by the kernel when the
//! holder dies, SIGKILL included, so a crash never leaves a stale lock.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The lock file's name inside the metadata directory.
pub const LOCK_FILE: &str = "rewindd.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "Another rewindd{} holds {path}: two daemons on one state record would undo each other's work; stop the other one first",
        holder_text(.holder)
    )]
    Held { path: PathBuf, holder: Option<u32> },
    #[error("Cannot lock {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn holder_text(holder: &Option<u32>) -> String {
    holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

impl LockError {
    /// Only `Held` means another daemon is there; an I/O error (a
    /// read-only or missing /metadata) is for the caller to weigh.
    pub fn is_held(&self) -> bool {
        matches!(self, LockError::Held { .. })
    }
}

/// Held for as long as it lives; the lock file keeps the holder's pid for
/// the message a second daemon prints.
#[derive(Debug)]
pub struct DirLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&path)
            .map_err(io)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held { path, holder: text.trim().parse().ok() });
            }
            Err((_, errno)) => return Err(io(errno.into())),
        };
        // The pid is for people and for the second daemon's message only;
        // the lock itself is the flock.
        lock.set_len(0).map_err(io)?;
        lock.rewind().map_err(io)?;
        writeln!(lock, "{}", std::process::id()).map_err(io)?;
        Ok(DirLock { _lock: lock, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join("rewind");
        let first = DirLock::acquire(&meta).expect("first");
        assert_eq!(std::fs::read_to_string(first.path()).unwrap().trim(), std::process::id().to_string());
        // flock locks belong to the open file description, so a second
        // open in the same process conflicts as a second daemon would.
        let e = DirLock::acquire(&meta).unwrap_err();
        assert!(e.is_held(), "{e}");
        assert!(e.to_string().contains(&format!("pid {}", std::process::id())), "{e}");
        drop(first);
        let again = DirLock::acquire(&meta).expect("free once the holder is gone");
        drop(again);
    }

    #[test]
    fn a_symlink_at_the_lock_path_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(LOCK_FILE)).unwrap();
        let e = DirLock::acquire(dir.path()).unwrap_err();
        assert!(!e.is_held(), "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }
}
