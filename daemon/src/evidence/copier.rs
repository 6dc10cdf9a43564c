//! The copier of a running attempt: at every poll, the new or changed files
//! of the configured sources and the kernel log's tail go into the
//! attempt's directory, under the shelf's caps.
//!
//! "New" is read from the files themselves, not from a list kept in
//! memory: a regular file modified since this kernel boot started (minus a
//! little slack for clock steps) and not already kept with the same size
//! and mtime. Files from earlier boots are part of the baseline and stay
//! out; a rewindd restarted mid-attempt picks up where it was.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::kmsg::KmsgTail;
use super::shelf::{Item, Put, Shelf};
use super::{names, Evidence, EvidenceError, KMSG_TAIL};

/// Directory levels walked below a source (dropbox and tombstones are flat;
/// a little depth for vendors' subdirectories).
const MAX_DEPTH: usize = 3;
/// Entries looked at per directory, so a huge directory cannot stall a poll.
const MAX_ENTRIES: usize = 4096;
/// Files copied per poll; the rest are copied at the next polls.
const MAX_COPIES: usize = 32;
/// Files modified this long before the boot started still count as this
/// boot's (the clock may be stepped early in boot).
const SLACK_SECS: u64 = 2;

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Polled {
    /// Stored names copied.
    pub copied: Vec<String>,
    /// Stored names not kept, with why.
    pub not_kept: Vec<String>,
}

pub struct Copier {
    attempt: u32,
    since_unix: u64,
    kmsg: Option<KmsgTail>,
    kmsg_dirty: bool,
    last_flush: Option<Instant>,
    /// Problems already logged once (a missing source, an unreadable kmsg).
    told: BTreeSet<String>,
}

struct Candidate {
    path: PathBuf,
    name: String,
    size: u64,
    mtime_ns: i64,
}

impl Copier {
    /// The copier of `attempt`, whose boot started at `boot_started_unix`.
    pub fn new(ev: &Evidence, attempt: u32, boot_started_unix: u64) -> Copier {
        let mut told = BTreeSet::new();
        let kmsg = if ev.cfg.kmsg.as_os_str().is_empty() {
            None
        } else {
            match KmsgTail::open(&ev.cfg.kmsg, ev.cfg.kmsg_tail_bytes) {
                Ok(k) => Some(k),
                Err(e) => {
                    tracing::warn!(path = %ev.cfg.kmsg.display(), error = %e, "kernel log not kept (cannot open)");
                    told.insert("kmsg".to_string());
                    None
                }
            }
        };
        Copier {
            attempt,
            since_unix: boot_started_unix.saturating_sub(SLACK_SECS),
            kmsg,
            kmsg_dirty: false,
            last_flush: None,
            told,
        }
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    fn tell_once(&mut self, key: String, what: impl FnOnce() -> String) {
        if self.told.insert(key) {
            tracing::info!("evidence: {}", what());
        }
    }

    /// One pass: new source files, then the kernel log tail when due.
    pub fn poll(&mut self, ev: &Evidence) -> Result<Polled, EvidenceError> {
        let mut shelf = ev.shelf()?;
        let mut polled = Polled::default();
        let mut found = Vec::new();
        for src in &ev.cfg.sources {
            match fs::symlink_metadata(src) {
                Ok(m) if m.is_dir() => {
                    let base = names::stored(src.strip_prefix("/").unwrap_or(src));
                    self.walk(src, &base, 0, &mut found);
                }
                Ok(_) => self.tell_once(format!("src {}", src.display()), || {
                    format!("{} is not a directory; not copied", src.display())
                }),
                // Not there yet (/data not mounted, the directory not made).
                Err(_) => {}
            }
        }
        for c in found {
            if polled.copied.len() + polled.not_kept.len() >= MAX_COPIES {
                break;
            }
            if shelf.has_seen(self.attempt, &c.name, c.size, c.mtime_ns) {
                continue;
            }
            match copy_one(&mut shelf, self.attempt, &c, ev.cfg.max_file_bytes) {
                Ok(Put::Kept) => polled.copied.push(c.name),
                Ok(Put::NotKept(why)) => polled.not_kept.push(format!("{}: {why}", c.name)),
                // Gone or unreadable between the listing and the copy: try
                // again at the next poll, say it once.
                Err(e) => {
                    let msg = crate::types::error_chain(&e);
                    self.tell_once(format!("copy {}", c.name), || format!("{} not copied yet: {msg}", c.name));
                }
            }
        }
        self.poll_kmsg(&mut shelf, ev, &mut polled)?;
        Ok(polled)
    }

    fn walk(&mut self, dir: &Path, base: &str, depth: usize, out: &mut Vec<Candidate>) {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                let msg = e.to_string();
                self.tell_once(format!("list {}", dir.display()), || format!("cannot list {}: {msg}", dir.display()));
                return;
            }
        };
        for e in entries.flatten().take(MAX_ENTRIES) {
            let path = e.path();
            let Ok(meta) = fs::symlink_metadata(&path) else { continue };
            let name = format!("{base}/{}", names::component(&e.file_name()));
            if meta.is_dir() && depth < MAX_DEPTH {
                self.walk(&path, &name, depth + 1, out);
            } else if meta.is_file() {
                let mtime = u64::try_from(meta.mtime()).unwrap_or(0);
                if mtime >= self.since_unix {
                    let mtime_ns = meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec());
                    out.push(Candidate { path, name, size: meta.len(), mtime_ns });
                }
            }
        }
    }

    fn poll_kmsg(&mut self, shelf: &mut Shelf<'_>, ev: &Evidence, polled: &mut Polled) -> Result<(), EvidenceError> {
        let Some(kmsg) = self.kmsg.as_mut() else { return Ok(()) };
        let read = kmsg.read_new();
        match read {
            Ok(true) => self.kmsg_dirty = true,
            Ok(false) => {}
            Err(e) => {
                let msg = e.to_string();
                self.tell_once("kmsg read".into(), || format!("kernel log read failed: {msg}"));
            }
        }
        let due = self.last_flush.is_none_or(|t| t.elapsed().as_millis() >= u128::from(ev.cfg.kmsg_flush_ms));
        if !(self.kmsg_dirty && due) {
            return Ok(());
        }
        let Some(kmsg) = self.kmsg.as_ref() else { return Ok(()) };
        let data = kmsg.contents();
        let item = Item {
            name: KMSG_TAIL,
            source: ev.cfg.kmsg.display().to_string(),
            data: &data,
            truncated: false,
            src_size: 0,
            src_mtime_ns: 0,
            pinned: true,
        };
        match shelf.put(self.attempt, item)? {
            Put::Kept => {}
            Put::NotKept(why) => polled.not_kept.push(format!("{KMSG_TAIL}: {why}")),
        }
        self.kmsg_dirty = false;
        self.last_flush = Some(Instant::now());
        Ok(())
    }
}

/// Reads a file's last `max` bytes without following a symlink that
/// replaced it since the listing; the second value says whether it was cut.
pub(super) fn read_tail(path: &Path, max: u64) -> std::io::Result<(Vec<u8>, bool, u64)> {
    let mut f: File = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let size = meta.len();
    let keep = size.min(max);
    if keep < size {
        f.seek(SeekFrom::Start(size - keep))?;
    }
    let mut data = Vec::with_capacity(keep as usize);
    f.take(keep).read_to_end(&mut data)?;
    Ok((data, keep < size, size))
}

fn copy_one(shelf: &mut Shelf<'_>, attempt: u32, c: &Candidate, max_file: u64) -> Result<Put, EvidenceError> {
    let (data, truncated, _) = read_tail(&c.path, max_file).map_err(|source| EvidenceError::Io {
        step: "read",
        path: c.path.clone(),
        source,
    })?;
    shelf.put(
        attempt,
        Item {
            name: &c.name,
            source: names::shown(&c.path),
            data: &data,
            truncated,
            src_size: c.size,
            src_mtime_ns: c.mtime_ns,
            pinned: false,
        },
    )
}
