//! The checkpoint state record on /metadata/rewind.
//!
//! File format: a header line `rewind-state v1 sha256=<hex of body>` and a
//! JSON body. Written atomically: `state.tmp` is written and fsynced, the
//! current `state` is hard-linked to `state.prev` (so a good previous copy
//! always exists), `state.tmp` is renamed over `state`, and the directory is
//! fsynced. `state` therefore always names a complete record.
//!
//! A record failing its checksum or carrying an unknown version is never
//! guessed at: the previous copy is used and the problem is reported; the bad
//! file is kept as `state.bad` for inspection. If no copy is good, loading
//! fails and the engine refuses to act.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ext4map::Region;
use crate::fiemap::Extent;
use crate::types::{BackendKind, Budget, Event, FreeMapReport, Phase};

pub const VERSION: u32 = 1;
const MAGIC: &str = "rewind-state";
const CURRENT: &str = "state";
const PREVIOUS: &str = "state.prev";
const TEMP: &str = "state.tmp";
const PREV_TEMP: &str = "state.prev.tmp";
const BAD: &str = "state.bad";

/// The largest record accepted. A record holds the COW files' extents and
/// the last events: 50,000 extents are about 4 MiB of JSON. Anything far
/// larger is not a record rewindd wrote, however well its checksum matches,
/// and is refused before it is read into memory.
pub const MAX_RECORD_BYTES: u64 = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("Cannot {step} {path}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error("No good state record in {dir}: current: {current}; previous: {previous}")]
    NoGoodCopy { dir: PathBuf, current: String, previous: String },
    #[error("Cannot encode the state record")]
    Encode(#[source] serde_json::Error),
}

/// What commit or rollback was decided before it started, so that a power
/// cut in the middle finishes the same way at the next boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Intent {
    Commit {
        reason: String,
    },
    /// Discard the current attempt by merging. `final_` = no attempt left:
    /// end in RolledBack instead of arming again.
    Rollback {
        reason: String,
        #[serde(rename = "final")]
        final_: bool,
    },
}

/// One COW file and the extents backing it (bytes, relative to the device
/// the filesystem is on; the top dm device maps it 1:1 onto the raw one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CowFile {
    pub path: String,
    pub size_bytes: u64,
    pub extents: Vec<Extent>,
    /// ext4: sha256s of the raw device's bytes that hold this file's map
    /// (inode region first, then extent-tree blocks; `ext4map`), checked
    /// at boot without mounting. Empty in records from before it existed
    /// and on f2fs: the boot then re-reads the map through a mount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fingerprint: Vec<Region>,
    /// The file's inode number when the fingerprint was taken (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inode: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    pub name: String,
    pub mount_point: String,
    pub fs_type: String,
    pub backend: BackendKind,
    pub raw_device: String,
    /// Size of the raw device when the checkpoint started; a different
    /// size later means a different device.
    pub raw_size_bytes: u64,
    pub chunk_sectors: u32,
    pub cow_files: Vec<CowFile>,
    /// sha256 of the extent list ([`extents_hash`]), checked before each use.
    pub cow_sha256: String,
    /// How the last armed attempt mapped the chunks the baseline leaves
    /// free (`cow.free_map`). Absent before the first arm, on f2fs, and in
    /// records from before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_map: Option<FreeMap>,
    /// The baseline's free map as read through its crypt layer at the
    /// clean shutdown before the first attempt (metadata encryption: the
    /// raw partition is ciphertext when rewindd arms), with the ciphertext
    /// fingerprints that must still hold at each arm. Absent without a
    /// crypt layer and until such a shutdown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_map_seal: Option<FreeMapSeal>,
}

/// A free map sealed at shutdown ([`crate::ext4map::seal`]): the free
/// runs the bitmaps showed, and the sha256 of the raw ciphertext of every
/// byte they were computed from and of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreeMapSeal {
    pub chunk_bytes: u64,
    /// Chunks in the device.
    pub chunks: u64,
    /// Every free run the bitmaps showed, `(first chunk, chunks)`.
    pub free_runs: Vec<(u64, u64)>,
    /// sha256 of `free_runs` ([`runs_hash`]), checked when the record loads.
    pub runs_sha256: String,
    pub regions: Vec<crate::ext4map::Region>,
    /// Seconds since the epoch when it was taken.
    pub sealed_at_unix: u64,
    /// How long reading the map and the fingerprints took.
    pub read_ms: u64,
}

impl FreeMapSeal {
    /// Consistency of a loaded record, as for [`FreeMap::validate`].
    pub fn validate(&self, raw_size_bytes: u64, chunk_sectors: u32) -> Result<(), String> {
        if self.regions.is_empty() || self.regions.len() > crate::ext4map::seal::MAX_REGIONS {
            return Err(format!("sealed free map with {} fingerprinted regions", self.regions.len()));
        }
        // The same checks as a recorded map: runs in range, sorted, hashed.
        FreeMap::Mapped {
            chunk_bytes: self.chunk_bytes,
            chunks: self.chunks,
            free_chunks_found: self.free_runs.iter().try_fold(0u64, |a, r| a.checked_add(r.1)).unwrap_or(u64::MAX),
            runs: self.free_runs.clone(),
            runs_sha256: self.runs_sha256.clone(),
            taken_at_attempt: 0,
            read_ms: 0,
            sealed_at_unix: None,
        }
        .validate(raw_size_bytes, chunk_sectors)
        .map_err(|e| format!("sealed {e}"))
    }
}

/// The baseline's free space as the armed top device maps it. The baseline
/// is the same at every attempt of one checkpoint (each rollback restores
/// every chunk it uses, bitmaps included), so the map taken at the first
/// arm is recorded and every later arm must read back exactly the same
/// runs before it maps them linear; any difference protects every chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum FreeMap {
    /// `runs` (first chunk, chunks; sorted, disjoint) are mapped linear:
    /// written in place and never copied. Everything else is protected.
    Mapped {
        chunk_bytes: u64,
        /// Chunks in the device.
        chunks: u64,
        /// Free chunks the bitmaps showed (`runs` may hold fewer: past the
        /// table's line cap the smallest runs stay protected).
        free_chunks_found: u64,
        runs: Vec<(u64, u64)>,
        /// sha256 of `runs` ([`runs_hash`]), checked when the record loads.
        runs_sha256: String,
        /// The attempt whose arm first took this map.
        taken_at_attempt: u32,
        /// How long reading the bitmaps took at the last arm.
        read_ms: u64,
        /// Set when the map is the one sealed at a clean shutdown (read
        /// through the crypt layer, ext4map::seal): when it was sealed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sealed_at_unix: Option<u64>,
    },
    /// Every chunk is protected (the option is off, the filesystem could
    /// not be proven clean, the map changed, ...): why.
    NotUsed { reason: String },
}

impl FreeMap {
    /// Chunks mapped linear.
    pub fn linear_chunks(&self) -> u64 {
        match self {
            FreeMap::Mapped { runs, .. } => runs.iter().map(|r| r.1).sum(),
            FreeMap::NotUsed { .. } => 0,
        }
    }

    /// The runs mapped linear in sectors, (start, length), as the armed
    /// table has them.
    pub fn linear_sectors(&self) -> Vec<(u64, u64)> {
        match self {
            FreeMap::Mapped { chunk_bytes, runs, .. } => {
                let per = chunk_bytes / 512;
                runs.iter().map(|&(first, n)| (first.saturating_mul(per), n.saturating_mul(per))).collect()
            }
            FreeMap::NotUsed { .. } => Vec::new(),
        }
    }

    /// The runs whose writes are counted ([`crate::dm::stats::largest`]:
    /// the `k` longest), in sectors as the regions are made.
    pub fn counted_sectors(&self, k: u32) -> Vec<(u64, u64)> {
        crate::dm::stats::largest(&self.linear_sectors(), k as usize)
    }

    /// How many runs are counted of the `k` asked, and the chunks in them.
    pub fn counted(&self, k: u32) -> (u32, u64) {
        match self {
            FreeMap::Mapped { runs, .. } => {
                let c = crate::dm::stats::largest(runs, k as usize);
                (u32::try_from(c.len()).unwrap_or(u32::MAX), c.iter().map(|r| r.1).sum())
            }
            FreeMap::NotUsed { .. } => (0, 0),
        }
    }

    /// What status shows of it.
    pub fn report(&self) -> FreeMapReport {
        match self {
            FreeMap::Mapped { chunks, free_chunks_found, runs, taken_at_attempt, read_ms, sealed_at_unix, .. } => {
                let source = match sealed_at_unix {
                    Some(at) => format!(
                        "read through the crypt layer at the clean shutdown before the first attempt \
                         (sealed at unix time {at}), its seal checked on the raw partition at attempt {taken_at_attempt}"
                    ),
                    None => format!("taken from the ext4 block bitmaps at attempt {taken_at_attempt}"),
                };
                let left = free_chunks_found - self.linear_chunks().min(*free_chunks_found);
                FreeMapReport {
                    mapped: true,
                    chunks: *chunks,
                    linear_chunks: self.linear_chunks(),
                    segments: u32::try_from(runs.len()).unwrap_or(u32::MAX),
                    detail: format!(
                        "{source} (read in {read_ms} ms){}",
                        if left > 0 {
                            format!("; {left} free chunks in small runs stay protected")
                        } else {
                            String::new()
                        }
                    ),
                    free_written_bytes: None,
                    free_written_unknown: None,
                    free_written_segments: 0,
                    free_written_chunks: 0,
                }
            }
            FreeMap::NotUsed { reason } => FreeMapReport {
                mapped: false,
                chunks: 0,
                linear_chunks: 0,
                segments: 0,
                detail: reason.clone(),
                free_written_bytes: None,
                free_written_unknown: None,
                free_written_segments: 0,
                free_written_chunks: 0,
            },
        }
    }

    /// Consistency of a loaded record: a map that could mark a used chunk
    /// free is refused rather than acted on.
    pub fn validate(&self, raw_size_bytes: u64, chunk_sectors: u32) -> Result<(), String> {
        let FreeMap::Mapped { chunk_bytes, chunks, free_chunks_found, runs, runs_sha256, .. } = self else {
            return Ok(());
        };
        if *chunk_bytes != u64::from(chunk_sectors) * 512 {
            return Err(format!("free map in chunks of {chunk_bytes} bytes, the store uses {chunk_sectors} sectors"));
        }
        if chunks.checked_mul(*chunk_bytes).is_none_or(|b| b < raw_size_bytes || b - raw_size_bytes >= *chunk_bytes) {
            return Err(format!("free map of {chunks} chunks does not cover a {raw_size_bytes}-byte device"));
        }
        if runs_hash(runs) != *runs_sha256 {
            return Err("free map runs do not match their hash".into());
        }
        let mut prev_end = 0u64;
        for &(first, count) in runs {
            let end = first.checked_add(count).filter(|&e| count > 0 && first >= prev_end && e <= *chunks);
            match end {
                Some(e) => prev_end = e,
                None => return Err(format!("free map run {first}+{count} is empty, unsorted or out of range")),
            }
        }
        if self.linear_chunks() > *free_chunks_found {
            return Err("free map maps more chunks linear than it found free".into());
        }
        Ok(())
    }
}

/// Canonical hash of a free map's runs.
pub fn runs_hash(runs: &[(u64, u64)]) -> String {
    let mut h = Sha256::new();
    for (first, count) in runs {
        h.update(format!("{first} {count}\n"));
    }
    hex::encode(h.finalize())
}

impl PartitionState {
    pub fn cow_bytes(&self) -> u64 {
        self.cow_files.iter().map(|f| f.size_bytes).sum()
    }
}

/// Canonical hash of a COW file list: paths, sizes and every extent.
pub fn extents_hash(files: &[CowFile]) -> String {
    let mut h = Sha256::new();
    for f in files {
        h.update(format!("file {} {}\n", f.path, f.size_bytes));
        for e in &f.extents {
            h.update(format!("{} {} {}\n", e.logical, e.physical, e.length));
        }
    }
    hex::encode(h.finalize())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// Incremented by every save; shows which copy is newer.
    pub seq: u64,
    pub phase: Phase,
    /// Attempts prepared (counted) so far in this checkpoint.
    pub attempt: u32,
    /// Attempts allowed; 0 when `unlimited`.
    pub attempts: u32,
    /// Checkpoint every boot until a commit or an abort, never roll back by
    /// count (vold's `startCheckpoint(-1)`). Absent in older records
    /// (false) and not written when false, so a limited record reads the
    /// same to every version. A rewindd from before this field refuses an
    /// unlimited record (attempts 0 while active): it fails closed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unlimited: bool,
    /// /proc/sys/kernel/random/boot_id of the boot that armed the current
    /// attempt: a second prepare in the same boot does not count again.
    #[serde(default)]
    pub boot_id: String,
    /// ResetCheckpoint (a userspace reboot) in the boot with this boot_id:
    /// the next prepare in that same boot counts an attempt again instead
    /// of changing nothing. Cleared by the write that counts it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub recount_boot_id: String,
    /// AbortChanges without retry: the next prepare rolls back for good.
    pub no_retry: bool,
    pub reason: String,
    pub started_unix: u64,
    pub intent: Option<Intent>,
    /// Why rollback protection was lost (COW overflow, refused map).
    pub protection_lost: Option<String>,
    /// Why the pending rollback could not go on in the last boot that tried
    /// (the kernel's words and what to do); cleared when it finishes. Not
    /// written when None, so other versions read the record the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_failure: Option<String>,
    /// Space thresholds already reported in this attempt.
    pub thresholds_hit: Vec<u32>,
    pub partitions: Vec<PartitionState>,
    /// COW files to delete once their filesystem is mounted again (after a
    /// rollback or a commit finished at boot); immutable until then.
    pub pending_cleanup: Vec<CowFile>,
    /// A commit was finished at boot after a cut, and the configured commit
    /// command has not run to success since: the next commit call runs it.
    #[serde(default)]
    pub commit_command_pending: bool,
    pub history: Vec<Event>,
}

impl Default for State {
    fn default() -> Self {
        State {
            version: VERSION,
            seq: 0,
            phase: Phase::Idle,
            attempt: 0,
            attempts: 0,
            unlimited: false,
            boot_id: String::new(),
            recount_boot_id: String::new(),
            no_retry: false,
            reason: String::new(),
            started_unix: 0,
            intent: None,
            protection_lost: None,
            rollback_failure: None,
            thresholds_hit: Vec::new(),
            partitions: Vec::new(),
            pending_cleanup: Vec::new(),
            commit_command_pending: false,
            history: Vec::new(),
        }
    }
}

impl State {
    /// Appends to the bounded history, dropping the oldest entries.
    pub fn push_event(&mut self, event: Event, limit: usize) {
        self.history.push(event);
        let limit = limit.max(1);
        if self.history.len() > limit {
            let drop = self.history.len() - limit;
            self.history.drain(..drop);
        }
    }

    /// Consistency rules a loaded record must satisfy before it is acted
    /// on (a record can be well-formed JSON and still be nonsense).
    pub fn validate(&self) -> Result<(), String> {
        if self.version != VERSION {
            return Err(format!("version {} in body", self.version));
        }
        match (self.phase, &self.intent) {
            (Phase::Committing, Some(Intent::Commit { .. })) => {}
            (Phase::Committing, _) => return Err("phase committing without a commit intent".into()),
            (Phase::RollingBack, Some(Intent::Rollback { .. })) => {}
            (Phase::RollingBack, _) => return Err("phase rolling-back without a rollback intent".into()),
            (_, Some(_)) => return Err(format!("intent left in phase {:?}", self.phase)),
            _ => {}
        }
        let active = matches!(self.phase, Phase::Armed | Phase::Checkpointing | Phase::RollingBack | Phase::Committing);
        self.validate_budget(active)?;
        if active && self.partitions.is_empty() {
            return Err(format!("phase {:?} without partitions", self.phase));
        }
        for p in &self.partitions {
            if p.chunk_sectors < 8 || !p.chunk_sectors.is_power_of_two() {
                return Err(format!("{}: chunk size {} sectors", p.name, p.chunk_sectors));
            }
            if extents_hash(&p.cow_files) != p.cow_sha256 {
                return Err(format!("{}: COW extent list does not match its hash", p.name));
            }
            // The COW files live on the partition itself: together they are
            // smaller than it (and their sum, shown in every status, fits).
            let cow = p.cow_files.iter().try_fold(0u64, |sum, f| sum.checked_add(f.size_bytes));
            if cow.is_none_or(|bytes| bytes > p.raw_size_bytes) {
                return Err(format!("{}: COW files larger than the partition ({} bytes)", p.name, p.raw_size_bytes));
            }
            if let Some(map) = &p.free_map {
                map.validate(p.raw_size_bytes, p.chunk_sectors).map_err(|e| format!("{}: {e}", p.name))?;
            }
            if let Some(seal) = &p.free_map_seal {
                seal.validate(p.raw_size_bytes, p.chunk_sectors).map_err(|e| format!("{}: {e}", p.name))?;
            }
        }
        Ok(())
    }
}

impl State {
    /// The last rollback is decided and not yet finished (its merge may be
    /// running in the background while the old system runs).
    pub fn final_rollback_running(&self) -> bool {
        self.phase == Phase::RollingBack && matches!(self.intent, Some(Intent::Rollback { final_: true, .. }))
    }
}

/// The attempt budget: how many boots a checkpoint may use and what is
/// left of them (vold's retry counter, `-1` included).
impl State {
    pub fn budget(&self) -> Budget {
        if self.unlimited {
            Budget::Unlimited
        } else {
            Budget::Attempts(self.attempts)
        }
    }

    pub fn set_budget(&mut self, budget: Budget) {
        match budget {
            Budget::Attempts(n) => {
                self.attempts = n;
                self.unlimited = false;
            }
            Budget::Unlimited => {
                self.attempts = 0;
                self.unlimited = true;
            }
        }
    }

    /// Whether another attempt may be armed after the `attempt` counted so
    /// far. An unlimited checkpoint always has one: only a commit or an
    /// abort without retry ends it.
    pub fn attempts_left(&self) -> bool {
        self.unlimited || self.attempt < self.attempts
    }

    /// "attempt 2 of 3", "attempt 2 (unlimited)", for history details.
    pub fn attempt_text(&self) -> String {
        if self.unlimited {
            format!("attempt {} (unlimited)", self.attempt)
        } else {
            format!("attempt {} of {}", self.attempt, self.attempts)
        }
    }

    /// An active checkpoint has a budget: a count >= 1, or unlimited with
    /// no count. The counter never runs past the count by more than the
    /// one attempt being discarded.
    fn validate_budget(&self, active: bool) -> Result<(), String> {
        if self.unlimited {
            if self.attempts != 0 {
                return Err(format!("unlimited checkpoint with an attempt count ({})", self.attempts));
            }
            return Ok(());
        }
        if active && self.attempts == 0 {
            return Err(format!("phase {:?} without attempts", self.phase));
        }
        if self.attempt > self.attempts.saturating_add(1) {
            return Err(format!("attempt {} of {}", self.attempt, self.attempts));
        }
        Ok(())
    }
}

/// Encodes a record: header line + JSON body.
pub fn encode(state: &State) -> Result<Vec<u8>, StateError> {
    let body = serde_json::to_vec_pretty(state).map_err(StateError::Encode)?;
    let mut out = format!("{MAGIC} v{VERSION} sha256={}\n", hex::encode(Sha256::digest(&body))).into_bytes();
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes and checks a record; the error string says what is wrong.
pub fn decode(bytes: &[u8]) -> Result<State, String> {
    let nl = bytes.iter().position(|b| *b == b'\n').ok_or("no header line (torn or empty)")?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| "header is not text")?;
    let body = &bytes[nl + 1..];
    let mut words = header.split(' ');
    if words.next() != Some(MAGIC) {
        return Err("not a rewind state record".into());
    }
    let version = words.next().and_then(|v| v.strip_prefix('v')).ok_or("no version")?;
    if version != VERSION.to_string() {
        return Err(format!("unknown version '{version}' (this rewindd reads v{VERSION})"));
    }
    let sum = words.next().and_then(|s| s.strip_prefix("sha256=")).ok_or("no checksum")?;
    if words.next().is_some() {
        return Err("trailing words in header".into());
    }
    if hex::encode(Sha256::digest(body)) != sum.to_ascii_lowercase() {
        return Err("checksum mismatch (torn or corrupt)".into());
    }
    let state: State = serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?;
    state.validate()?;
    Ok(state)
}

/// Where the record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// No record yet (first start): idle.
    Fresh,
    Current,
    /// The current copy was bad; the previous one is in use.
    Previous,
}

#[derive(Debug)]
pub struct Loaded {
    pub state: State,
    pub source: Source,
    /// What was wrong with the current copy, when `source` is Previous.
    pub problem: Option<String>,
}

/// Reads and writes the record in one directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// The current file is bad: move it aside instead of keeping it as the
    /// previous copy at the next save.
    current_bad: bool,
    /// Last phase published as `rewind.phase` (Android), so the property
    /// service is called on a change only, not on every record write.
    published_phase: Option<Phase>,
}

impl Store {
    pub fn new(dir: &Path) -> Store {
        Store { dir: dir.to_path_buf(), current_bad: false, published_phase: None }
    }

    /// Sets `rewind.phase` (Android; a no-op elsewhere) when `phase` differs
    /// from what was published last. Called after every save, and once
    /// after loading the record at start (properties do not survive a boot).
    pub fn publish_phase(&mut self, phase: Phase) {
        if self.published_phase != Some(phase) {
            self.published_phase = Some(phase);
            crate::sys::publish_phase(phase.as_str());
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// One copy, read only if it is a regular file of a sane size (never
    /// through a symlink, never blocking on a FIFO): see `sys::files`.
    fn read_one(&self, name: &str) -> Result<Option<State>, String> {
        match crate::sys::files::read_regular(&self.path(name), MAX_RECORD_BYTES) {
            Ok(Some(bytes)) => decode(&bytes).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(crate::types::error_chain(&e)),
        }
    }

    pub fn load(&mut self) -> Result<Loaded, StateError> {
        let current = self.read_one(CURRENT);
        match current {
            Ok(Some(state)) => {
                self.current_bad = false;
                Ok(Loaded { state, source: Source::Current, problem: None })
            }
            Ok(None) => match self.read_one(PREVIOUS) {
                // `state` is never absent once written (see module doc), but
                // a previous copy alone is still a good record.
                Ok(Some(state)) => {
                    Ok(Loaded { state, source: Source::Previous, problem: Some("current copy missing".into()) })
                }
                Ok(None) => Ok(Loaded { state: State::default(), source: Source::Fresh, problem: None }),
                Err(prev) => {
                    Err(StateError::NoGoodCopy { dir: self.dir.clone(), current: "missing".into(), previous: prev })
                }
            },
            Err(problem) => {
                self.current_bad = true;
                match self.read_one(PREVIOUS) {
                    Ok(Some(state)) => Ok(Loaded { state, source: Source::Previous, problem: Some(problem) }),
                    Ok(None) => Err(StateError::NoGoodCopy {
                        dir: self.dir.clone(),
                        current: problem,
                        previous: "missing".into(),
                    }),
                    Err(prev) => {
                        Err(StateError::NoGoodCopy { dir: self.dir.clone(), current: problem, previous: prev })
                    }
                }
            }
        }
    }

    /// Replaces the record atomically, keeping the previous copy.
    pub fn save(&mut self, state: &State) -> Result<(), StateError> {
        let io = |step: &'static str, path: PathBuf| move |source| StateError::Io { step, path, source };
        fs::create_dir_all(&self.dir).map_err(io("create", self.dir.clone()))?;
        let bytes = encode(state)?;
        let tmp = self.path(TEMP);
        {
            // A fresh file every time: whatever a crash or another process
            // left at `state.tmp` (a symlink to write through, a FIFO to
            // block on) is removed first, and O_NOFOLLOW + create_new make
            // sure the record lands in a regular file of ours.
            crate::sys::files::remove_non_dir(&tmp).map_err(io("remove", tmp.clone()))?;
            let mut f = OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)
                .map_err(io("create", tmp.clone()))?;
            f.write_all(&bytes).map_err(io("write", tmp.clone()))?;
            f.sync_all().map_err(io("fsync", tmp.clone()))?;
        }
        let cur = self.path(CURRENT);
        // symlink_metadata, not exists(): a dangling link at `state` is
        // still something to move aside, never something to keep as the
        // previous copy.
        if fs::symlink_metadata(&cur).is_ok() {
            if self.current_bad {
                fs::rename(&cur, self.path(BAD)).map_err(io("move aside", cur.clone()))?;
            } else {
                let prev_tmp = self.path(PREV_TEMP);
                crate::sys::files::remove_non_dir(&prev_tmp).map_err(io("remove", prev_tmp.clone()))?;
                fs::hard_link(&cur, &prev_tmp).map_err(io("link", prev_tmp.clone()))?;
                fs::rename(&prev_tmp, self.path(PREVIOUS)).map_err(io("rename", prev_tmp.clone()))?;
            }
        }
        fs::rename(&tmp, &cur).map_err(io("rename", tmp.clone()))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io("fsync directory", self.dir.clone()))?;
        self.current_bad = false;
        // After the record is durable: the property never runs ahead of it.
        self.publish_phase(state.phase);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{cow_file, snapshot_part};

    fn sample() -> State {
        let files = vec![cow_file("/data/rewind/cow.0000", &[(0, 1 << 30, 4 << 20), (4 << 20, 2 << 30, 4 << 20)])];
        let mut s = State {
            seq: 7,
            phase: Phase::Checkpointing,
            attempt: 2,
            attempts: 3,
            reason: "ota 2026-11".into(),
            started_unix: 1_795_000_000,
            partitions: vec![snapshot_part("/dev/block/by-name/userdata", 64 << 30, files)],
            ..State::default()
        };
        s.push_event(
            Event {
                time_unix: 1,
                kind: crate::types::EventKind::Started.as_str().into(),
                attempt: 0,
                attempts: 3,
                partition: String::new(),
                detail: "ota".into(),
                boot_reason: "reboot,ota".into(),
            },
            64,
        );
        s
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut st = Store::new(dir.path());
        st.save(&sample()).expect("save");
        let l = Store::new(dir.path()).load().expect("load");
        assert_eq!(l.source, Source::Current);
        assert_eq!(l.state, sample());
        let head = fs::read_to_string(dir.path().join("state")).expect("read");
        assert!(head.starts_with("rewind-state v1 sha256="));
    }

    /// Fingerprints round-trip; a record written before they existed (no
    /// `fingerprint`/`inode` keys) still loads, with none; one without a
    /// fingerprint is written without the keys (old readers are unaffected).
    #[test]
    fn fingerprints_round_trip_and_old_records_load() {
        let mut s = sample();
        s.partitions[0].cow_files[0].inode = 12;
        s.partitions[0].cow_files[0].fingerprint =
            vec![Region { offset: 4096 * 34 + 0xb10, len: 0x60, sha256: "ab".repeat(32) }];
        assert_eq!(decode(&encode(&s).expect("encode")).expect("decode"), s);
        let plain = encode(&sample()).expect("encode");
        let text = String::from_utf8(plain.clone()).expect("utf8");
        assert!(!text.contains("fingerprint") && !text.contains("\"inode\""), "{text}");
        let old = decode(&plain).expect("decode");
        assert!(old.partitions[0].cow_files[0].fingerprint.is_empty());
        assert_eq!(old.partitions[0].cow_files[0].inode, 0);
    }

    #[test]
    fn missing_record_is_fresh_idle() {
        let dir = tempfile::tempdir().expect("tmp");
        let l = Store::new(&dir.path().join("none")).load().expect("load");
        assert_eq!((l.source, l.state.phase), (Source::Fresh, Phase::Idle));
    }

    #[test]
    fn save_keeps_the_previous_copy() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut st = Store::new(dir.path());
        let mut a = sample();
        st.save(&a).expect("save");
        a.seq = 8;
        st.save(&a).expect("save");
        let prev = decode(&fs::read(dir.path().join("state.prev")).expect("prev")).expect("decode");
        assert_eq!(prev.seq, 7);
        assert!(!dir.path().join("state.tmp").exists());
    }

    fn two_copies() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tmp");
        let mut st = Store::new(dir.path());
        let mut a = sample();
        st.save(&a).expect("save");
        a.seq = 8;
        a.attempt = 3;
        st.save(&a).expect("save");
        (dir, st)
    }

    #[test]
    fn torn_write_falls_back_to_previous() {
        let (dir, _) = two_copies();
        let cur = dir.path().join("state");
        let bytes = fs::read(&cur).expect("read");
        fs::write(&cur, &bytes[..bytes.len() / 2]).expect("tear");
        let l = Store::new(dir.path()).load().expect("load");
        assert_eq!(l.source, Source::Previous);
        assert_eq!(l.state.seq, 7);
        assert!(l.problem.expect("reported").contains("checksum"));
    }

    #[test]
    fn flipped_byte_fails_the_checksum() {
        let (dir, _) = two_copies();
        let cur = dir.path().join("state");
        let mut bytes = fs::read(&cur).expect("read");
        let i = bytes.len() - 10;
        bytes[i] ^= 0x01;
        fs::write(&cur, &bytes).expect("flip");
        let l = Store::new(dir.path()).load().expect("load");
        assert_eq!(l.source, Source::Previous);
    }

    #[test]
    fn unknown_version_is_not_read() {
        let (dir, _) = two_copies();
        let cur = dir.path().join("state");
        let text = fs::read_to_string(&cur).expect("read").replacen(" v1 ", " v2 ", 1);
        fs::write(&cur, text).expect("write");
        let l = Store::new(dir.path()).load().expect("load");
        assert_eq!(l.source, Source::Previous);
        assert!(l.problem.expect("reported").contains("unknown version"));
        assert!(decode(b"rewind-state v9 sha256=00\n{}").unwrap_err().contains("unknown version"));
    }

    #[test]
    fn empty_and_foreign_files_are_rejected() {
        assert!(decode(b"").is_err());
        assert!(decode(b"1\n").is_err());
        assert!(decode(b"rewind-state v1\n{}").is_err());
    }

    #[test]
    fn both_copies_bad_is_an_error_never_a_guess() {
        let (dir, _) = two_copies();
        fs::write(dir.path().join("state"), b"garbage").expect("w");
        fs::write(dir.path().join("state.prev"), b"garbage").expect("w");
        assert!(matches!(Store::new(dir.path()).load(), Err(StateError::NoGoodCopy { .. })));
    }

    #[test]
    fn bad_current_is_moved_aside_at_next_save() {
        let (dir, _) = two_copies();
        fs::write(dir.path().join("state"), b"garbage").expect("w");
        let mut st = Store::new(dir.path());
        let l = st.load().expect("load");
        st.save(&l.state).expect("save");
        assert_eq!(fs::read(dir.path().join("state.bad")).expect("kept"), b"garbage");
        // The good previous copy is still the previous copy.
        let prev = decode(&fs::read(dir.path().join("state.prev")).expect("prev")).expect("decode");
        assert_eq!(prev.seq, 7);
        assert_eq!(Store::new(dir.path()).load().expect("load").source, Source::Current);
    }

    /// What can stand at `state` instead of a record, each with a good
    /// previous copy beside it: the previous copy is used, the problem is
    /// named, loading never blocks, and the next save moves the thing aside
    /// without writing through it.
    fn replace_current(dir: &Path, what: &str) -> Option<PathBuf> {
        let cur = dir.join("state");
        fs::remove_file(&cur).expect("rm");
        match what {
            "zero-filled" => fs::write(&cur, vec![0u8; 4096]).expect("w"),
            "emptied" => fs::write(&cur, b"").expect("w"),
            "directory" => fs::create_dir(&cur).expect("mkdir"),
            "fifo" => nix::unistd::mkfifo(&cur, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo"),
            "symlink" | "dangling symlink" => {
                let target = dir.join(if what == "symlink" { "elsewhere" } else { "nowhere" });
                if what == "symlink" {
                    // A valid record elsewhere: following the link would
                    // read it as if it were ours.
                    fs::copy(dir.join("state.prev"), &target).expect("copy");
                }
                std::os::unix::fs::symlink(&target, &cur).expect("ln");
                return Some(target);
            }
            other => panic!("unknown case {other}"),
        }
        None
    }

    #[test]
    fn anything_but_a_regular_record_at_state_falls_back_and_is_moved_aside() {
        for (what, says) in [
            ("zero-filled", "no header line"),
            ("emptied", "no header line"),
            ("directory", "a directory"),
            ("fifo", "a FIFO"),
            ("symlink", "symbolic link"),
            ("dangling symlink", "symbolic link"),
        ] {
            let (dir, _) = two_copies();
            let target = replace_current(dir.path(), what);
            let target_before = target.as_ref().and_then(|t| fs::read(t).ok());
            let mut st = Store::new(dir.path());
            let l = st.load().unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(l.source, Source::Previous, "{what}");
            assert_eq!(l.state.seq, 7, "{what}");
            let problem = l.problem.expect("reported");
            assert!(problem.contains(says), "{what}: {problem}");
            let mut next = l.state.clone();
            next.seq = 9;
            st.save(&next).unwrap_or_else(|e| panic!("{what}: save: {e}"));
            assert!(fs::symlink_metadata(dir.path().join("state")).expect("state").is_file(), "{what}");
            assert!(fs::symlink_metadata(dir.path().join("state.bad")).is_ok(), "{what}: kept aside");
            if let Some(t) = target {
                assert_eq!(fs::read(&t).ok(), target_before, "{what}: the link's target is untouched");
            }
            let l = Store::new(dir.path()).load().expect("load");
            assert_eq!((l.source, l.state.seq), (Source::Current, 9), "{what}");
        }
    }

    #[test]
    fn a_fifo_or_directory_as_both_copies_is_an_error_not_a_hang() {
        let (dir, _) = two_copies();
        for name in ["state", "state.prev"] {
            fs::remove_file(dir.path().join(name)).expect("rm");
            nix::unistd::mkfifo(&dir.path().join(name), nix::sys::stat::Mode::from_bits_truncate(0o600))
                .expect("mkfifo");
        }
        match Store::new(dir.path()).load() {
            Err(StateError::NoGoodCopy { current, previous, .. }) => {
                assert!(current.contains("FIFO") && previous.contains("FIFO"), "{current} / {previous}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_checksummed_record_of_absurd_size_is_refused_unread() {
        let (dir, _) = two_copies();
        let mut huge = sample();
        huge.reason = "x".repeat(MAX_RECORD_BYTES as usize);
        fs::write(dir.path().join("state"), encode(&huge).expect("encode")).expect("w");
        let l = Store::new(dir.path()).load().expect("load");
        assert_eq!(l.source, Source::Previous);
        assert!(l.problem.expect("reported").contains("more than"), "too large");
    }

    #[test]
    fn a_planted_temp_file_is_never_written_through() {
        for plant in ["symlink", "fifo"] {
            let (dir, mut st) = two_copies();
            let tmp = dir.path().join("state.tmp");
            let victim = dir.path().join("victim");
            fs::write(&victim, b"not yours").expect("w");
            match plant {
                "symlink" => std::os::unix::fs::symlink(&victim, &tmp).expect("ln"),
                _ => nix::unistd::mkfifo(&tmp, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo"),
            }
            let mut next = sample();
            next.seq = 10;
            st.save(&next).unwrap_or_else(|e| panic!("{plant}: {e}"));
            assert_eq!(fs::read(&victim).expect("victim"), b"not yours", "{plant}");
            assert_eq!(Store::new(dir.path()).load().expect("load").state.seq, 10, "{plant}");
        }
    }

    #[test]
    fn a_directory_at_the_temp_path_fails_the_save_and_changes_nothing() {
        let (dir, mut st) = two_copies();
        fs::create_dir(dir.path().join("state.tmp")).expect("mkdir");
        let before = fs::read(dir.path().join("state")).expect("r");
        let mut next = sample();
        next.seq = 11;
        let e = st.save(&next).expect_err("a directory cannot be replaced");
        assert!(crate::types::error_chain(&e).contains("state.tmp"), "{e}");
        assert_eq!(fs::read(dir.path().join("state")).expect("r"), before, "the record is as it was");
    }

    #[test]
    fn well_formed_but_inconsistent_records_are_refused() {
        let mut s = sample();
        s.partitions[0].cow_files[0].extents[0].physical += 4096;
        assert!(s.validate().unwrap_err().contains("hash"));
        let mut s = sample();
        s.phase = Phase::Committing;
        assert!(s.validate().is_err());
        s.intent = Some(Intent::Commit { reason: "boot ok".into() });
        assert!(s.validate().is_ok());
        let mut s = sample();
        s.partitions[0].chunk_sectors = 12;
        s.partitions[0].cow_sha256 = extents_hash(&s.partitions[0].cow_files);
        assert!(s.validate().is_err());
        // A correct checksum over an inconsistent body is still refused.
        let bytes = encode(&{
            let mut s = sample();
            s.intent = Some(Intent::Commit { reason: String::new() });
            s
        })
        .expect("encode");
        assert!(decode(&bytes).is_err());
    }

    /// Seen while writing the state_record fuzz target and confirmed with
    /// it (its mode that makes the COW hashes right, on a hand-written
    /// body): two COW files of 2^63 bytes each passed validation, and the
    /// status report's `cow_bytes` then overflowed (a panic in debug
    /// builds). COW files larger than their partition are refused at load.
    #[test]
    fn cow_files_larger_than_the_partition_are_refused() {
        let mut s = sample();
        let mut second = s.partitions[0].cow_files[0].clone();
        second.path = "/data/rewind/cow.0001".into();
        s.partitions[0].cow_files.push(second);
        for f in &mut s.partitions[0].cow_files {
            f.size_bytes = 1 << 63;
        }
        s.partitions[0].cow_sha256 = extents_hash(&s.partitions[0].cow_files);
        let bytes = encode(&s).expect("encode");
        assert!(decode(&bytes).unwrap_err().contains("larger than the partition"));
        // One file as large as the partition is already impossible.
        let mut s = sample();
        s.partitions[0].cow_files[0].size_bytes = s.partitions[0].raw_size_bytes + 1;
        s.partitions[0].cow_sha256 = extents_hash(&s.partitions[0].cow_files);
        assert!(s.validate().unwrap_err().contains("larger than the partition"));
        sample().validate().expect("the sample is sane");
    }

    #[test]
    fn history_is_bounded() {
        let mut s = State::default();
        for i in 0..10 {
            s.push_event(
                Event {
                    time_unix: i,
                    kind: crate::types::EventKind::Attempt.as_str().into(),
                    attempt: 0,
                    attempts: 0,
                    partition: String::new(),
                    detail: String::new(),
                    boot_reason: String::new(),
                },
                4,
            );
        }
        assert_eq!(s.history.len(), 4);
        assert_eq!(s.history[0].time_unix, 6);
    }

    /// An unlimited record round-trips and validates; a limited one is
    /// written without the new keys (older rewindd reads it unchanged); a
    /// record from before them loads as limited; nonsense budgets are
    /// refused.
    #[test]
    fn unlimited_budget_round_trips_and_old_records_stay_limited() {
        let mut s = sample();
        s.set_budget(Budget::Unlimited);
        s.attempt = 250;
        s.recount_boot_id = "b-1".into();
        assert!(s.validate().is_ok());
        assert!(s.attempts_left());
        assert_eq!(s.attempt_text(), "attempt 250 (unlimited)");
        let back = decode(&encode(&s).expect("enc")).expect("dec");
        assert_eq!(back, s);
        assert_eq!(back.budget(), Budget::Unlimited);

        let plain = String::from_utf8(encode(&sample()).expect("enc")).expect("utf8");
        assert!(!plain.contains("unlimited") && !plain.contains("recount_boot_id"), "{plain}");
        let old = decode(plain.as_bytes()).expect("dec");
        assert_eq!((old.budget(), old.attempts_left()), (Budget::Attempts(3), true));

        let mut bad = sample();
        bad.unlimited = true;
        assert!(bad.validate().unwrap_err().contains("unlimited"), "a count beside unlimited");
        let mut bad = sample();
        bad.attempts = 0;
        assert!(bad.validate().is_err(), "an active limited checkpoint needs attempts");
        let mut done = sample();
        done.attempt = 3;
        assert!(!done.attempts_left());
    }

    #[test]
    fn intents_round_trip() {
        let mut s = sample();
        s.phase = Phase::RollingBack;
        s.intent = Some(Intent::Rollback { reason: "attempt 3 not committed".into(), final_: true });
        let back = decode(&encode(&s).expect("enc")).expect("dec");
        assert_eq!(back, s);
    }
}
