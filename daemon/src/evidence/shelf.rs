//! The kept files of every attempt and their indexes, and the one rule for
//! adding a file: make room under the caps and above the free-space floor
//! by dropping the oldest kept files, or do not keep it, and say so.
//!
//! Each attempt directory holds an `index.json` naming every kept file
//! (stored name, where it came from, size, when). Files are written to a
//! temporary name, fsynced and renamed, then the index is replaced the same
//! way, so a power cut or a panic leaves either the old or the new file and
//! an index that names only files that exist (a file written but not yet
//! indexed is overwritten or ignored; it is never listed half-written).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{EvidenceError, FreeFn};
use crate::config::EvidenceConfig;
use crate::sys;
use crate::types::{AttemptEvidence, EvidenceFile};

pub(super) const INDEX: &str = "index.json";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Index {
    pub attempt: u32,
    pub files: Vec<Entry>,
    #[serde(default)]
    pub boot_reason: String,
    #[serde(default)]
    pub dropped: Vec<String>,
    /// Source files dropped or refused (by name, size and mtime), so the
    /// copier does not copy them again and again while /metadata is full.
    #[serde(default)]
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Skipped {
    pub name: String,
    pub src_size: u64,
    pub src_mtime_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Entry {
    pub name: String,
    pub source: String,
    pub bytes: u64,
    pub truncated: bool,
    pub copied_unix: u64,
    /// Copy order over all attempts: the lowest is dropped first.
    pub seq: u64,
    /// The source's size and mtime (ns) when copied: a change copies again.
    #[serde(default)]
    pub src_size: u64,
    #[serde(default)]
    pub src_mtime_ns: i64,
    /// Kept in place for its own attempt (kmsg.tail, boot-reason): never
    /// dropped to make room while that attempt is the one written.
    #[serde(default)]
    pub pinned: bool,
}

/// Notes kept per attempt about what was not kept.
const MAX_DROPPED_NOTES: usize = 64;
/// Source files remembered as not to be copied again, per attempt.
const MAX_SKIPPED: usize = 1024;

/// A file to keep.
pub(super) struct Item<'a> {
    pub name: &'a str,
    pub source: String,
    pub data: &'a [u8],
    pub truncated: bool,
    pub src_size: u64,
    pub src_mtime_ns: i64,
    pub pinned: bool,
}

/// What became of an [`Item`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Put {
    Kept,
    /// Not kept; why (for the attempt's notes and the log).
    NotKept(String),
}

pub(super) struct Shelf<'a> {
    root: &'a Path,
    cfg: &'a EvidenceConfig,
    free: &'a FreeFn,
    pub indexes: BTreeMap<u32, Index>,
    next_seq: u64,
}

fn io(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> EvidenceError {
    let path = path.to_path_buf();
    move |source| EvidenceError::Io { step, path, source }
}

/// Writes `data` to `path` durably: temporary file, fsync, rename, fsync
/// of the directory.
pub(super) fn write_durably(path: &Path, data: &[u8]) -> Result<(), EvidenceError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(io("create", dir))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f =
            OpenOptions::new().create(true).write(true).truncate(true).open(&tmp).map_err(io("create", &tmp))?;
        f.write_all(data).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
    }
    fs::rename(&tmp, path).map_err(io("rename", &tmp))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync directory", dir))
}

impl<'a> Shelf<'a> {
    /// Reads every attempt's index under `root`. An index that does not
    /// parse is set aside (`index.json.bad`) and its attempt starts a new
    /// one, with a note: the files it named stay on disk, uncounted.
    pub fn load(root: &'a Path, cfg: &'a EvidenceConfig, free: &'a FreeFn) -> Result<Shelf<'a>, EvidenceError> {
        let mut indexes = BTreeMap::new();
        match fs::read_dir(root) {
            Ok(dir) => {
                for e in dir.flatten() {
                    let Some(n) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
                    let path = e.path().join(INDEX);
                    let index = match fs::read(&path) {
                        Ok(bytes) => match serde_json::from_slice::<Index>(&bytes) {
                            Ok(i) if i.attempt == n => i,
                            other => {
                                let why = match other {
                                    Ok(i) => format!("names attempt {}", i.attempt),
                                    Err(e) => e.to_string(),
                                };
                                tracing::warn!(path = %path.display(), %why, "evidence index set aside");
                                let _ = fs::rename(&path, e.path().join("index.json.bad"));
                                Index {
                                    attempt: n,
                                    dropped: vec![format!("index.json was unreadable ({why}); kept as index.json.bad")],
                                    ..Index::default()
                                }
                            }
                        },
                        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                            Index { attempt: n, ..Index::default() }
                        }
                        Err(err) => return Err(EvidenceError::Io { step: "read", path, source: err }),
                    };
                    indexes.insert(n, index);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(EvidenceError::Io { step: "list", path: root.to_path_buf(), source: e }),
        }
        let next_seq = indexes.values().flat_map(|i| i.files.iter().map(|f| f.seq + 1)).max().unwrap_or(0);
        Ok(Shelf { root, cfg, free, indexes, next_seq })
    }

    pub fn dir(&self, attempt: u32) -> PathBuf {
        self.root.join(attempt.to_string())
    }

    pub fn entry(&self, attempt: u32, name: &str) -> Option<&Entry> {
        self.indexes.get(&attempt).and_then(|i| i.files.iter().find(|f| f.name == name))
    }

    /// Whether this version of a source file is already kept, or was
    /// dropped or refused before (then it is not copied again).
    pub fn has_seen(&self, attempt: u32, name: &str, src_size: u64, src_mtime_ns: i64) -> bool {
        let Some(i) = self.indexes.get(&attempt) else { return false };
        i.files.iter().any(|f| f.name == name && f.src_size == src_size && f.src_mtime_ns == src_mtime_ns)
            || i.skipped.iter().any(|s| s.name == name && s.src_size == src_size && s.src_mtime_ns == src_mtime_ns)
    }

    fn skip(&mut self, attempt: u32, name: &str, src_size: u64, src_mtime_ns: i64) {
        if src_size == 0 && src_mtime_ns == 0 {
            return; // not a copied source file (kmsg.tail, boot-reason)
        }
        let index = self.indexes.entry(attempt).or_insert_with(|| Index { attempt, ..Index::default() });
        index.skipped.push(Skipped { name: name.to_string(), src_size, src_mtime_ns });
        if index.skipped.len() > MAX_SKIPPED {
            let extra = index.skipped.len() - MAX_SKIPPED;
            index.skipped.drain(..extra);
        }
    }

    fn attempt_bytes(&self, attempt: u32) -> u64 {
        self.indexes.get(&attempt).map(|i| i.files.iter().map(|f| f.bytes).sum()).unwrap_or(0)
    }

    fn total_bytes(&self) -> u64 {
        self.indexes.values().flat_map(|i| i.files.iter()).map(|f| f.bytes).sum()
    }

    /// Free bytes of the filesystem the evidence lives on (the nearest
    /// directory that exists).
    fn free_bytes(&self) -> Result<u64, EvidenceError> {
        let mut at = self.root;
        while !at.exists() {
            match at.parent() {
                Some(p) => at = p,
                None => break,
            }
        }
        (self.free)(at).map_err(io("statvfs", at))
    }

    pub fn save(&self, attempt: u32) -> Result<(), EvidenceError> {
        let Some(index) = self.indexes.get(&attempt) else { return Ok(()) };
        let bytes = serde_json::to_vec_pretty(index).map_err(EvidenceError::Encode)?;
        write_durably(&self.dir(attempt).join(INDEX), &bytes)
    }

    pub fn note(&mut self, attempt: u32, text: String) {
        let index = self.indexes.entry(attempt).or_insert_with(|| Index { attempt, ..Index::default() });
        index.dropped.push(text);
        if index.dropped.len() > MAX_DROPPED_NOTES {
            let extra = index.dropped.len() - MAX_DROPPED_NOTES;
            index.dropped.drain(..extra);
        }
    }

    /// Removes one kept file and its index entry; returns its bytes.
    fn remove(&mut self, attempt: u32, name: &str) -> Result<u64, EvidenceError> {
        let Some(index) = self.indexes.get_mut(&attempt) else { return Ok(0) };
        let Some(pos) = index.files.iter().position(|f| f.name == name) else { return Ok(0) };
        let entry = index.files.remove(pos);
        let path = self.dir(attempt).join(&entry.name);
        self.skip(attempt, &entry.name, entry.src_size, entry.src_mtime_ns);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(EvidenceError::Io { step: "remove", path, source: e }),
        }
        Ok(entry.bytes)
    }

    /// Drops the oldest kept file (in `scope`, or of any attempt), except
    /// the pinned files of attempt `protect`; false when none is left.
    fn drop_oldest(&mut self, scope: Option<u32>, protect: u32, why: &str) -> Result<bool, EvidenceError> {
        let oldest = self
            .indexes
            .iter()
            .filter(|(a, _)| scope.is_none_or(|s| s == **a))
            .flat_map(|(a, i)| i.files.iter().map(move |f| (*a, f)))
            .filter(|(a, f)| !(f.pinned && *a == protect))
            .min_by_key(|(a, f)| (f.seq, *a))
            .map(|(a, f)| (a, f.name.clone()));
        let Some((attempt, name)) = oldest else { return Ok(false) };
        let bytes = self.remove(attempt, &name)?;
        tracing::info!(attempt, name, bytes, why, "older evidence dropped");
        self.note(attempt, format!("{name} ({bytes} bytes) dropped: {why}"));
        self.save(attempt)?;
        Ok(true)
    }

    /// Keeps `item` in `attempt`'s directory: replaces a file of the same
    /// name, drops the oldest files until the caps and the free-space floor
    /// allow it, or does not keep it (recorded in the attempt's notes).
    pub fn put(&mut self, attempt: u32, item: Item<'_>) -> Result<Put, EvidenceError> {
        let need = item.data.len() as u64;
        // A newer version of a kept file replaces it (not a skip).
        if let Some(index) = self.indexes.get_mut(&attempt) {
            if let Some(pos) = index.files.iter().position(|f| f.name == item.name) {
                let old = index.files.remove(pos);
                let path = self.dir(attempt).join(&old.name);
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(EvidenceError::Io { step: "remove", path, source: e }),
                }
            }
        }
        let cfg = self.cfg;
        let refuse = |shelf: &mut Shelf<'_>, why: String| -> Result<Put, EvidenceError> {
            shelf.skip(attempt, item.name, item.src_size, item.src_mtime_ns);
            shelf.note(attempt, format!("{} ({need} bytes) not kept: {why}", item.name));
            shelf.save(attempt)?;
            Ok(Put::NotKept(why))
        };
        if need > cfg.max_attempt_bytes {
            return refuse(self, format!("larger than evidence.max_attempt_bytes ({})", cfg.max_attempt_bytes));
        }
        while self.attempt_bytes(attempt) + need > cfg.max_attempt_bytes {
            let why = format!("attempt {attempt} over evidence.max_attempt_bytes ({})", cfg.max_attempt_bytes);
            if !self.drop_oldest(Some(attempt), attempt, &why)? {
                return refuse(self, why);
            }
        }
        while self.total_bytes() + need > cfg.max_total_bytes {
            let why = format!("over evidence.max_total_bytes ({})", cfg.max_total_bytes);
            if !self.drop_oldest(None, attempt, &why)? {
                return refuse(self, why);
            }
        }
        loop {
            let free = self.free_bytes()?;
            if free >= need.saturating_add(cfg.min_free_bytes) {
                break;
            }
            let why =
                format!("/metadata has {free} bytes free and keeps evidence.min_free_bytes ({})", cfg.min_free_bytes);
            if !self.drop_oldest(None, attempt, &why)? {
                return refuse(self, why);
            }
        }
        write_durably(&self.dir(attempt).join(item.name), item.data)?;
        let seq = self.next_seq;
        self.next_seq += 1;
        let index = self.indexes.entry(attempt).or_insert_with(|| Index { attempt, ..Index::default() });
        index.files.push(Entry {
            name: item.name.to_string(),
            source: item.source,
            bytes: need,
            truncated: item.truncated,
            copied_unix: sys::now_unix(),
            seq,
            src_size: item.src_size,
            src_mtime_ns: item.src_mtime_ns,
            pinned: item.pinned,
        });
        self.save(attempt)?;
        Ok(Put::Kept)
    }

    pub fn summary(&self, attempt: u32) -> AttemptEvidence {
        let index = self.indexes.get(&attempt).cloned().unwrap_or(Index { attempt, ..Index::default() });
        AttemptEvidence {
            attempt,
            dir: self.dir(attempt).display().to_string(),
            files: index
                .files
                .iter()
                .map(|f| EvidenceFile {
                    name: f.name.clone(),
                    source: f.source.clone(),
                    bytes: f.bytes,
                    truncated: f.truncated,
                    copied_unix: f.copied_unix,
                })
                .collect(),
            boot_reason: index.boot_reason,
            dropped: index.dropped,
        }
    }
}
