//! Reading the small files rewindd trusts (the state record, its config,
//! the fstab) without being led astray by what else a path can name.
//!
//! A path in /metadata or /vendor can be replaced by a symlink, a FIFO, a
//! device node or a directory by a bug, a bad OTA or a hostile process. A
//! plain `fs::read` follows the link, blocks forever on a FIFO (rewindd then
//! never serves, and the boot waits on it), or reads a device without end.
//! So: no symlinks are followed, only a regular file is read, opening
//! never blocks, and the size is capped before anything is allocated.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path} is a symbolic link{}; rewind does not follow links here: replace it with the file itself", target_text(.target))]
    Symlink { path: PathBuf, target: Option<PathBuf> },
    #[error("{path} is {kind}, not a regular file: move it away")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path} is {size} bytes, more than the {cap} bytes such a file can be: it is not one rewind wrote; move it away")]
    TooLarge { path: PathBuf, size: u64, cap: u64 },
    #[error("{path}:{line}: not UTF-8 text (byte {offset}): it is not a text file, or was damaged; restore it")]
    NotText { path: PathBuf, line: usize, offset: usize },
    #[error("Cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn target_text(target: &Option<PathBuf>) -> String {
    match target {
        Some(t) => format!(" (to {})", t.display()),
        None => String::new(),
    }
}

/// What a non-regular file is, in words for an error message.
pub fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() {
        "a block device node"
    } else if ft.is_char_device() {
        "a character device node"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_file() {
        "a regular file"
    } else {
        "an unknown kind of file"
    }
}

/// Whether the last component of a path may be a symlink. Inside
/// rewind's own metadata directory nothing is a link, so one is refused;
/// a config or fstab under /vendor may be a link to the real file, which
/// must then be a regular file itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    Refuse,
    Follow,
}

/// Reads `path` if it is a regular file of at most `cap` bytes; `Ok(None)`
/// when nothing is there. With `Links::Refuse` a dangling symlink is a
/// symlink, not "nothing": it is reported, never taken for a missing file.
pub fn read_regular(path: &Path, cap: u64) -> Result<Option<Vec<u8>>, FileError> {
    read_file(path, cap, Links::Refuse)
}

pub fn read_file(path: &Path, cap: u64, links: Links) -> Result<Option<Vec<u8>>, FileError> {
    let io = |source| FileError::Io { path: path.to_path_buf(), source };
    // stat before open, so that a device node is never even opened.
    let meta = match links {
        Links::Refuse => std::fs::symlink_metadata(path),
        Links::Follow => std::fs::metadata(path),
    };
    let meta = match meta {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    check_kind(path, &meta)?;
    // O_NONBLOCK closes the window between the stat and the open (and
    // O_NOFOLLOW, where links are refused): a path swapped for a FIFO opens
    // without waiting for a writer and fails the check below; one swapped
    // for a link fails with ELOOP.
    let nofollow = if links == Links::Refuse { libc::O_NOFOLLOW } else { 0 };
    let file =
        OpenOptions::new().read(true).custom_flags(nofollow | libc::O_NONBLOCK | libc::O_CLOEXEC).open(path).map_err(
            |e| match e.raw_os_error() {
                Some(libc::ELOOP) if links == Links::Refuse => {
                    FileError::Symlink { path: path.to_path_buf(), target: None }
                }
                _ => io(e),
            },
        )?;
    let meta = file.metadata().map_err(io)?;
    check_kind(path, &meta)?;
    if meta.size() > cap {
        return Err(FileError::TooLarge { path: path.to_path_buf(), size: meta.size(), cap });
    }
    read_capped(file, path, cap).map(Some)
}

/// [`read_text`] for a file that must exist: absent is an error
/// (NotFound), like every other reason it cannot be read.
pub fn read_text_required(path: &Path, cap: u64) -> Result<String, FileError> {
    read_text(path, cap)?.ok_or_else(|| FileError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })
}

/// A text file rewind is configured by (config, fstab): a regular file
/// (links followed), at most `cap` bytes, UTF-8. `Ok(None)` when absent.
pub fn read_text(path: &Path, cap: u64) -> Result<Option<String>, FileError> {
    let Some(bytes) = read_file(path, cap, Links::Follow)? else { return Ok(None) };
    String::from_utf8(bytes).map(Some).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|b| **b == b'\n').count() + 1;
        FileError::NotText { path: path.to_path_buf(), line, offset: at }
    })
}

fn check_kind(path: &Path, meta: &std::fs::Metadata) -> Result<(), FileError> {
    let ft = meta.file_type();
    if ft.is_symlink() {
        return Err(FileError::Symlink { path: path.to_path_buf(), target: std::fs::read_link(path).ok() });
    }
    if !ft.is_file() {
        return Err(FileError::NotRegular { path: path.to_path_buf(), kind: kind_of(ft) });
    }
    Ok(())
}

/// Reads at most `cap` bytes; a file that grew past the cap since its
/// fstat is refused as too large rather than cut short.
fn read_capped(file: File, path: &Path, cap: u64) -> Result<Vec<u8>, FileError> {
    let mut bytes = Vec::new();
    file.take(cap + 1).read_to_end(&mut bytes).map_err(|source| FileError::Io { path: path.to_path_buf(), source })?;
    if bytes.len() as u64 > cap {
        return Err(FileError::TooLarge { path: path.to_path_buf(), size: bytes.len() as u64, cap });
    }
    Ok(bytes)
}

/// Removes whatever `path` names unless it is a directory, so that a
/// following `create_new` makes a fresh regular file instead of writing
/// through a planted symlink or into a FIFO. Nothing there is fine.
pub fn remove_non_dir(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.file_type().is_dir() => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} is a directory: move it away", path.display()),
        )),
        Ok(_) => std::fs::remove_file(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: u64 = 1024;

    #[test]
    fn a_regular_file_is_read_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        assert!(read_regular(&p, CAP).unwrap().is_none());
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(read_regular(&p, CAP).unwrap().unwrap(), b"hello");
        std::fs::write(&p, b"").unwrap();
        assert_eq!(read_regular(&p, CAP).unwrap().unwrap(), b"", "an empty file is read as empty");
    }

    #[test]
    fn symlinks_are_refused_dangling_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::write(&real, b"x").unwrap();
        for (name, target) in [("live", real.clone()), ("dangling", dir.path().join("nowhere"))] {
            let link = dir.path().join(name);
            std::os::unix::fs::symlink(&target, &link).unwrap();
            let e = read_regular(&link, CAP).unwrap_err();
            assert!(matches!(e, FileError::Symlink { .. }), "{name}: {e}");
            assert!(e.to_string().contains(&target.display().to_string()), "names the target: {e}");
        }
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fifo");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read_regular(&p, CAP).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
    }

    #[test]
    fn directories_sockets_and_device_nodes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let sock = dir.path().join("sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        for (p, kind) in
            [(sub, "a directory"), (sock, "a socket"), (PathBuf::from("/dev/null"), "a character device node")]
        {
            let e = read_regular(&p, CAP).unwrap_err();
            assert!(matches!(e, FileError::NotRegular { .. }) && e.to_string().contains(kind), "{e}");
        }
    }

    #[test]
    fn a_file_over_the_cap_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        std::fs::write(&p, vec![b'x'; CAP as usize + 1]).unwrap();
        let e = read_regular(&p, CAP).unwrap_err();
        assert!(matches!(e, FileError::TooLarge { size, .. } if size == CAP + 1), "{e}");
        // A sparse file of a terabyte costs nothing to refuse.
        let f = File::create(&p).unwrap();
        f.set_len(1 << 40).unwrap();
        assert!(matches!(read_regular(&p, CAP).unwrap_err(), FileError::TooLarge { .. }));
        std::fs::write(&p, vec![b'x'; CAP as usize]).unwrap();
        assert_eq!(read_regular(&p, CAP).unwrap().unwrap().len() as u64, CAP, "exactly the cap is fine");
    }

    #[test]
    fn text_files_follow_links_but_must_be_regular_utf8_and_small() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("fstab.real");
        std::fs::write(&real, "a b\n").unwrap();
        let link = dir.path().join("fstab");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(read_text(&link, CAP).unwrap().unwrap(), "a b\n");
        assert!(read_text(&dir.path().join("none"), CAP).unwrap().is_none());
        std::fs::write(&real, b"line one\nline \xff two\n").unwrap();
        let e = read_text(&link, CAP).unwrap_err();
        assert!(matches!(e, FileError::NotText { line: 2, offset: 14, .. }), "{e}");
        assert!(e.to_string().contains(":2: not UTF-8"), "{e}");
        std::fs::write(&real, vec![b'#'; CAP as usize + 1]).unwrap();
        assert!(matches!(read_text(&link, CAP).unwrap_err(), FileError::TooLarge { .. }));
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::remove_file(&real).unwrap();
        std::os::unix::fs::symlink(&fifo, &real).unwrap();
        assert!(read_text(&link, CAP).unwrap_err().to_string().contains("a FIFO"), "a link to a FIFO");
    }

    #[test]
    fn remove_non_dir_clears_links_and_fifos_but_not_directories() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        remove_non_dir(&link).unwrap();
        assert!(std::fs::symlink_metadata(&link).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep", "the link's target is untouched");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        remove_non_dir(&fifo).unwrap();
        remove_non_dir(&dir.path().join("absent")).unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert!(remove_non_dir(&sub).is_err());
        assert!(sub.is_dir());
    }
}
