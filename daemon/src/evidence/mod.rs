//! The evidence of a failed attempt, kept across its rollback.
//!
//! Rolling an attempt back erases exactly what an engineer needs to learn
//! why the update failed: its tombstones, ANR traces, dropbox entries and
//! kernel log live on the userdata that is merged away. While an attempt
//! runs, rewindd copies what appears there into
//! `<metadata_dir>/attempts/<n>/` (on /metadata, which no rollback
//! touches), and at the next boot adds how that boot ended (its boot
//! reason) and the pstore console of a crash:
//!
//! ```text
//! /metadata/rewind/attempts/2/
//!   index.json                      what is kept, from where, how large
//!   data/tombstones/tombstone_00    copies under the source's own path
//!   data/anr/anr_2026-11-23-...
//!   kmsg.tail                       the kernel log's last kmsg_tail_bytes
//!   boot-reason                     the next boot's reason ("kernel_panic")
//!   pstore/console-ramoops-0        the crashed boot's console (devices)
//! ```
//!
//! /metadata is small (16 MiB on many phones) and holds the state record:
//! every copy stays under `evidence.max_file_bytes` (a file's tail),
//! `max_attempt_bytes` and `max_total_bytes`, and leaves `min_free_bytes`
//! free; room is made by dropping the oldest kept files first, and what
//! could not be kept is noted in the index. Evidence is never worth the
//! state record: every failure here is logged and reported, never fatal to
//! a boot step. A new checkpoint moves the last one's evidence to
//! `attempts.previous/` (one generation is kept).

mod copier;
pub mod kmsg;
pub mod names;
mod shelf;

use std::fs::{self, File};
use std::path::{Path, PathBuf};

pub use copier::{Copier, Polled};
use shelf::{Item, Put, Shelf};

use crate::config::EvidenceConfig;
use crate::types::AttemptEvidence;

/// The kernel log's tail inside an attempt's directory.
pub const KMSG_TAIL: &str = "kmsg.tail";
/// How the attempt's boot ended, written at the next boot.
pub const BOOT_REASON: &str = "boot-reason";
/// Directory names under the metadata dir.
pub const DIR: &str = "attempts";
pub const PREVIOUS_DIR: &str = "attempts.previous";

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("Cannot {step} {path}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot encode an evidence index")]
    Encode(#[source] serde_json::Error),
    #[error("No evidence is kept of attempt {attempt} in {dir}")]
    NoAttempt { attempt: u32, dir: PathBuf },
    #[error("Attempt {attempt} kept no file named {name:?} (`rewindctl evidence {attempt}` lists them)")]
    NoFile { attempt: u32, name: String },
}

/// Free bytes of the filesystem holding a path (statvfs; a test swaps it).
pub type FreeFn = dyn Fn(&Path) -> std::io::Result<u64> + Send + Sync;

fn statvfs_free(path: &Path) -> std::io::Result<u64> {
    crate::sys::free_bytes(path).map_err(std::io::Error::other)
}

/// The evidence directories of one metadata dir, with their caps.
pub struct Evidence {
    root: PathBuf,
    previous: PathBuf,
    cfg: EvidenceConfig,
    free: Box<FreeFn>,
}

impl Evidence {
    pub fn new(metadata_dir: &Path, cfg: &EvidenceConfig) -> Evidence {
        Evidence {
            root: metadata_dir.join(DIR),
            previous: metadata_dir.join(PREVIOUS_DIR),
            cfg: cfg.clone(),
            free: Box::new(statvfs_free),
        }
    }

    /// The same with another free-space reading (host tests of a full
    /// /metadata).
    pub fn with_free(mut self, free: Box<FreeFn>) -> Evidence {
        self.free = free;
        self
    }

    pub fn enabled(&self) -> bool {
        self.cfg.enabled
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn shelf(&self) -> Result<Shelf<'_>, EvidenceError> {
        Shelf::load(&self.root, &self.cfg, &*self.free)
    }

    /// A new checkpoint starts: the last one's evidence becomes
    /// `attempts.previous` (replacing an older one), so attempt numbers
    /// name this checkpoint's boots.
    pub fn rotate(&self) -> Result<(), EvidenceError> {
        if !self.root.exists() {
            return Ok(());
        }
        if self.previous.exists() {
            fs::remove_dir_all(&self.previous).map_err(|source| EvidenceError::Io {
                step: "remove",
                path: self.previous.clone(),
                source,
            })?;
        }
        fs::rename(&self.root, &self.previous).map_err(|source| EvidenceError::Io {
            step: "rename",
            path: self.root.clone(),
            source,
        })
    }

    /// The boot after attempt `attempt`: records how its boot ended and
    /// keeps the pstore files of a crash. Returns what is kept of it.
    pub fn finish(&self, attempt: u32, boot_reason: &str) -> Result<AttemptEvidence, EvidenceError> {
        let mut shelf = self.shelf()?;
        let reason = if boot_reason.is_empty() { "unknown (no boot reason was given)" } else { boot_reason };
        let text = format!("{reason}\n");
        shelf.put(
            attempt,
            Item {
                name: BOOT_REASON,
                source: "the next boot's reason".into(),
                data: text.as_bytes(),
                truncated: false,
                src_size: 0,
                src_mtime_ns: 0,
                pinned: true,
            },
        )?;
        if let Some(i) = shelf.indexes.get_mut(&attempt) {
            i.boot_reason = boot_reason.to_string();
        }
        shelf.save(attempt)?;
        if !self.cfg.pstore_dir.as_os_str().is_empty() {
            self.keep_pstore(&mut shelf, attempt)?;
        }
        Ok(shelf.summary(attempt))
    }

    fn keep_pstore(&self, shelf: &mut Shelf<'_>, attempt: u32) -> Result<(), EvidenceError> {
        let dir = &self.cfg.pstore_dir;
        let Ok(entries) = fs::read_dir(dir) else { return Ok(()) };
        let mut files: Vec<_> = entries.flatten().collect();
        files.sort_by_key(|e| e.file_name());
        for e in files {
            let path = e.path();
            if !fs::symlink_metadata(&path).map(|m| m.is_file()).unwrap_or(false) {
                continue;
            }
            let name = format!("pstore/{}", names::component(&e.file_name()));
            match copier::read_tail(&path, self.cfg.max_file_bytes) {
                Ok((data, truncated, size)) => {
                    let item = Item {
                        name: &name,
                        source: names::shown(&path),
                        data: &data,
                        truncated,
                        src_size: size,
                        src_mtime_ns: 0,
                        pinned: false,
                    };
                    if let Put::NotKept(why) = shelf.put(attempt, item)? {
                        tracing::warn!(name, why, "pstore file not kept");
                    }
                }
                Err(err) => tracing::warn!(path = %path.display(), error = %err, "pstore file not readable"),
            }
        }
        Ok(())
    }

    fn root_of(&self, previous: bool) -> &Path {
        if previous {
            &self.previous
        } else {
            &self.root
        }
    }

    /// Everything kept, attempt by attempt (of this checkpoint, or of the
    /// previous one).
    pub fn list(&self, previous: bool) -> Result<Vec<AttemptEvidence>, EvidenceError> {
        let shelf = Shelf::load(self.root_of(previous), &self.cfg, &*self.free)?;
        Ok(shelf.indexes.keys().map(|a| shelf.summary(*a)).collect())
    }

    pub fn attempt(&self, attempt: u32, previous: bool) -> Result<AttemptEvidence, EvidenceError> {
        let root = self.root_of(previous);
        let shelf = Shelf::load(root, &self.cfg, &*self.free)?;
        if !shelf.indexes.contains_key(&attempt) {
            return Err(EvidenceError::NoAttempt { attempt, dir: root.to_path_buf() });
        }
        Ok(shelf.summary(attempt))
    }

    /// Opens one kept file, by the name its index gives it (nothing else
    /// under /metadata can be read this way).
    pub fn open(&self, attempt: u32, name: &str, previous: bool) -> Result<File, EvidenceError> {
        let root = self.root_of(previous);
        let shelf = Shelf::load(root, &self.cfg, &*self.free)?;
        if !shelf.indexes.contains_key(&attempt) {
            return Err(EvidenceError::NoAttempt { attempt, dir: root.to_path_buf() });
        }
        if !names::is_stored_name(name) || shelf.entry(attempt, name).is_none() {
            return Err(EvidenceError::NoFile { attempt, name: name.to_string() });
        }
        let path = shelf.dir(attempt).join(name);
        File::open(&path).map_err(|source| EvidenceError::Io { step: "open", path, source })
    }
}

#[cfg(test)]
mod tests;
