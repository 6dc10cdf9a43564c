//! The on-disk log of the kernel's dm-log-writes target
//! (drivers/md/dm-log-writes.c), read on the host, and the disk states it
//! allows (`Log::state`) rebuilt onto copies of the disks (`apply`).
//!
//! Layout: sector 0 holds the super (magic, version, nr_entries,
//! sectorsize, little-endian); entries follow from byte `sectorsize`, each
//! one header sector (sector, nr_sectors, flags, data_len) then, for a
//! write, its nr_sectors of data. A mark keeps its text in the header
//! sector after the 32 header bytes; a discard and a bare flush carry no
//! data. The target logs a write only once a flush covers it, so the
//! entries before a FLUSH entry are exactly the writes that flush made
//! durable; FUA writes are logged as they complete.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

pub const MAGIC: u64 = 0x006a_7366_7773_6872;
pub const VERSION: u64 = 1;
pub const FLUSH: u64 = 1 << 0;
pub const FUA: u64 = 1 << 1;
pub const DISCARD: u64 = 1 << 2;
pub const MARK: u64 = 1 << 3;

const HEADER: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("Reading the write log {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a dm-log-writes log (magic {magic:#x}, version {version})")]
    NotALog { path: PathBuf, magic: u64, version: u64 },
    #[error("{path}: sector size {0} is not a power of two of at least 512", .sectorsize)]
    SectorSize { path: PathBuf, sectorsize: u32 },
    #[error("{path}: entry {index} of {count} runs past the end of the log ({len} bytes)")]
    Truncated { path: PathBuf, index: u64, count: u64, len: u64 },
    #[error("Entry {index} writes sectors {sector}+{nr_sectors}, past the disks' {total} sectors")]
    OutOfRange { index: usize, sector: u64, nr_sectors: u64, total: u64 },
    #[error("Writing the replayed image {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One logged write, flush, discard or mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// First sector, in the log's sector size.
    pub sector: u64,
    pub nr_sectors: u64,
    pub flags: u64,
    /// Byte offset of the data in the log (writes only).
    pub data_at: u64,
    /// The text of a mark.
    pub mark: Option<String>,
}

impl Entry {
    pub fn is_flush_point(&self) -> bool {
        self.flags & (FLUSH | FUA) != 0
    }
    pub fn is_write(&self) -> bool {
        self.flags & (MARK | DISCARD) == 0 && self.nr_sectors > 0
    }
}

#[derive(Debug, Clone)]
pub struct Log {
    pub path: PathBuf,
    pub sectorsize: u32,
    pub entries: Vec<Entry>,
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl Log {
    pub fn open(path: &Path) -> Result<Log, LogError> {
        let io = |source| LogError::Io { path: path.to_path_buf(), source };
        let mut f = File::open(path).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        let mut sup = [0u8; 28];
        f.read_exact(&mut sup).map_err(io)?;
        let (magic, version) = (le64(&sup, 0), le64(&sup, 8));
        if magic != MAGIC || version != VERSION {
            return Err(LogError::NotALog { path: path.to_path_buf(), magic, version });
        }
        let count = le64(&sup, 16);
        let sectorsize = u32::from_le_bytes([sup[24], sup[25], sup[26], sup[27]]);
        if sectorsize < 512 || !sectorsize.is_power_of_two() {
            return Err(LogError::SectorSize { path: path.to_path_buf(), sectorsize });
        }
        let ss = u64::from(sectorsize);
        let mut head = vec![0u8; sectorsize as usize];
        let mut at = ss;
        let mut entries = Vec::new();
        for index in 0..count {
            let truncated = || LogError::Truncated { path: path.to_path_buf(), index, count, len };
            if at.checked_add(ss).is_none_or(|end| end > len) {
                return Err(truncated());
            }
            f.seek(SeekFrom::Start(at)).map_err(io)?;
            f.read_exact(&mut head).map_err(io)?;
            let (sector, nr_sectors, flags, data_len) =
                (le64(&head, 0), le64(&head, 8), le64(&head, 16), le64(&head, 24));
            at += ss;
            let mut e = Entry { sector, nr_sectors, flags, data_at: at, mark: None };
            if flags & MARK != 0 {
                let n = (data_len as usize).min(head.len() - HEADER);
                e.mark = Some(String::from_utf8_lossy(&head[HEADER..HEADER + n]).into_owned());
            } else if flags & DISCARD == 0 {
                let bytes = nr_sectors.checked_mul(ss).ok_or_else(truncated)?;
                at = at.checked_add(bytes).filter(|&end| end <= len).ok_or_else(truncated)?;
            }
            entries.push(e);
        }
        Ok(Log { path: path.to_path_buf(), sectorsize, entries })
    }

    /// The index of the first mark named `name` at or after `from`.
    pub fn mark(&self, name: &str, from: usize) -> Option<usize> {
        self.entries.iter().enumerate().skip(from).find(|(_, e)| e.mark.as_deref() == Some(name)).map(|(i, _)| i)
    }

    /// The marks in order (index, text), for reports and errors.
    pub fn marks(&self) -> Vec<(usize, String)> {
        self.entries.iter().enumerate().filter_map(|(i, e)| e.mark.clone().map(|m| (i, m))).collect()
    }

    /// The entries a disk may hold after a power cut at `point`: at a
    /// flush point, everything up to it; between flush points, everything
    /// up to the last FLUSH, the FUA writes after it, and a subset of the
    /// other writes after it (a volatile cache may have written back any
    /// of them), drawn from `seed`.
    pub fn state(&self, point: &Point) -> Vec<usize> {
        match *point {
            Point::Flush { entry } => (0..=entry.min(self.entries.len().saturating_sub(1))).collect(),
            Point::Between { entry, seed } => {
                let entry = entry.min(self.entries.len().saturating_sub(1));
                let last_flush = self.entries[..=entry].iter().rposition(|e| e.flags & FLUSH != 0);
                let durable = last_flush.map_or(0, |i| i + 1);
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let mut keep: Vec<usize> = (0..durable).collect();
                for i in durable..=entry {
                    let e = &self.entries[i];
                    // Drawn for every entry, so the subset of a seed does
                    // not shift when one entry's flags do.
                    let coin = rng.random_bool(0.5);
                    if e.flags & FUA != 0 || coin {
                        keep.push(i);
                    }
                }
                keep
            }
        }
    }

    /// Writes the entries `state` names, in log order, onto `disks`, which
    /// the logged device concatenated in this order (sizes in bytes).
    /// Discards zero their range (a disk may return zeros for them).
    pub fn apply(&self, state: &[usize], disks: &[(PathBuf, u64)]) -> Result<(), LogError> {
        let log = File::open(&self.path).map_err(|source| LogError::Io { path: self.path.clone(), source })?;
        let mut files = Vec::new();
        for (p, _) in disks {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .map_err(|source| LogError::Write { path: p.clone(), source })?;
            files.push(f);
        }
        let total: u64 = disks.iter().map(|(_, n)| n).sum();
        let ss = u64::from(self.sectorsize);
        let mut buf = vec![0u8; 1 << 20];
        for &i in state {
            let e = &self.entries[i];
            if e.flags & MARK != 0 || e.nr_sectors == 0 {
                continue;
            }
            let out_of_range =
                || LogError::OutOfRange { index: i, sector: e.sector, nr_sectors: e.nr_sectors, total: total / ss };
            let start = e.sector.checked_mul(ss).ok_or_else(out_of_range)?;
            let len = e.nr_sectors.checked_mul(ss).ok_or_else(out_of_range)?;
            if start.checked_add(len).is_none_or(|end| end > total) {
                return Err(out_of_range());
            }
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(buf.len() as u64) as usize;
                let chunk = &mut buf[..n];
                if e.flags & DISCARD != 0 {
                    chunk.fill(0);
                } else {
                    log.read_exact_at(chunk, e.data_at + done)
                        .map_err(|source| LogError::Io { path: self.path.clone(), source })?;
                }
                write_split(&files, disks, start + done, chunk)?;
                done += n as u64;
            }
        }
        for (f, (p, _)) in files.iter().zip(disks) {
            f.sync_all().map_err(|source| LogError::Write { path: p.clone(), source })?;
        }
        Ok(())
    }
}

/// Writes `data` at byte `at` of the concatenation of `disks`.
fn write_split(files: &[File], disks: &[(PathBuf, u64)], mut at: u64, mut data: &[u8]) -> Result<(), LogError> {
    let mut base = 0u64;
    for (f, (p, size)) in files.iter().zip(disks) {
        let end = base + size;
        if at < end && !data.is_empty() {
            let n = (end - at).min(data.len() as u64) as usize;
            f.write_all_at(&data[..n], at - base).map_err(|source| LogError::Write { path: p.clone(), source })?;
            data = &data[n..];
            at += n as u64;
        }
        base = end;
    }
    Ok(())
}

/// A moment to cut the power at, as the disk would then hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Point {
    /// Just after the flush or FUA write `entry`: all before it durable.
    Flush { entry: usize },
    /// Just after entry `entry`, a write between flush points: the cache
    /// kept a subset (drawn from `seed`) of the writes since the last flush.
    Between { entry: usize, seed: u64 },
}

impl Point {
    pub fn entry(&self) -> usize {
        match *self {
            Point::Flush { entry } | Point::Between { entry, .. } => entry,
        }
    }
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Point::Flush { entry } => write!(f, "flush@{entry}"),
            Point::Between { entry, seed } => write!(f, "between@{entry}:{seed}"),
        }
    }
}

impl std::str::FromStr for Point {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("point {s:?}: expected flush@ENTRY or between@ENTRY:SEED");
        if let Some(n) = s.strip_prefix("flush@") {
            return Ok(Point::Flush { entry: n.parse().map_err(|_| bad())? });
        }
        let rest = s.strip_prefix("between@").ok_or_else(bad)?;
        let (e, seed) = rest.split_once(':').ok_or_else(bad)?;
        Ok(Point::Between { entry: e.parse().map_err(|_| bad())?, seed: seed.parse().map_err(|_| bad())? })
    }
}

/// The points of the window `(from, to)` of entries: how many flush points
/// it has, and the ones to replay: all when at most `flushes`, else a
/// sample drawn from `seed`; plus `between` writes that are not flush
/// points, each with its own subset seed.
pub fn choose(log: &Log, from: usize, to: usize, flushes: usize, between: usize, seed: u64) -> (usize, Vec<Point>) {
    let window = (from + 1)..to.min(log.entries.len());
    let flush: Vec<usize> = window.clone().filter(|&i| log.entries[i].is_flush_point()).collect();
    let plain: Vec<usize> = window.filter(|&i| log.entries[i].is_write() && !log.entries[i].is_flush_point()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let found = flush.len();
    let mut picked = sample(&mut rng, &flush, flushes);
    let mut points: Vec<Point> = picked.drain(..).map(|entry| Point::Flush { entry }).collect();
    for entry in sample(&mut rng, &plain, between) {
        points.push(Point::Between { entry, seed: rng.random_range(0..1_000_000u64) });
    }
    points.sort_by_key(|p| p.entry());
    (found, points)
}

/// `n` of `items` (all when there are no more), in order.
fn sample(rng: &mut ChaCha8Rng, items: &[usize], n: usize) -> Vec<usize> {
    if items.len() <= n {
        return items.to_vec();
    }
    let mut pool = items.to_vec();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(pool.swap_remove(rng.random_range(0..pool.len())));
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A log as the kernel writes it, from (sector, nr_sectors, flags,
    /// data byte or mark text).
    pub(crate) fn write_log(path: &Path, ss: u32, entries: &[(u64, u64, u64, &str)]) {
        let ss64 = u64::from(ss);
        let mut out = vec![0u8; ss as usize];
        out[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        out[8..16].copy_from_slice(&VERSION.to_le_bytes());
        out[16..24].copy_from_slice(&(entries.len() as u64).to_le_bytes());
        out[24..28].copy_from_slice(&ss.to_le_bytes());
        for &(sector, n, flags, data) in entries {
            let mut head = vec![0u8; ss as usize];
            head[0..8].copy_from_slice(&sector.to_le_bytes());
            head[8..16].copy_from_slice(&n.to_le_bytes());
            head[16..24].copy_from_slice(&flags.to_le_bytes());
            let dl = if flags & MARK != 0 { data.len() as u64 } else { 0 };
            head[24..32].copy_from_slice(&dl.to_le_bytes());
            if flags & MARK != 0 {
                head[32..32 + data.len()].copy_from_slice(data.as_bytes());
            }
            out.extend_from_slice(&head);
            if flags & (MARK | DISCARD) == 0 {
                let byte = data.as_bytes().first().copied().unwrap_or(0);
                out.extend(std::iter::repeat_n(byte, (n * ss64) as usize));
            }
        }
        std::fs::write(path, out).expect("write log");
    }

    fn sample_log(dir: &Path) -> Log {
        let p = dir.join("log");
        write_log(
            &p,
            512,
            &[
                (0, 2, 0, "a"),        // 0
                (0, 0, MARK, "begin"), // 1
                (4, 1, 0, "b"),        // 2
                (0, 0, FLUSH, ""),     // 3
                (5, 1, FUA, "c"),      // 4
                (6, 2, 0, "d"),        // 5 crosses into the second disk
                (1, 1, DISCARD, ""),   // 6
                (9, 1, 0, "e"),        // 7
                (0, 0, MARK, "end"),   // 8
            ],
        );
        Log::open(&p).expect("parse")
    }

    #[test]
    fn a_hand_made_log_parses_with_its_marks_and_data() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = sample_log(dir.path());
        assert_eq!(log.sectorsize, 512);
        assert_eq!(log.entries.len(), 9);
        assert_eq!(log.marks(), vec![(1, "begin".to_string()), (8, "end".to_string())]);
        assert_eq!(log.mark("end", 0), Some(8));
        assert_eq!(log.mark("begin", 2), None);
        // Entry 0's data right after its header; entry 2's after the mark's header.
        assert_eq!(log.entries[0].data_at, 1024);
        assert_eq!(log.entries[2].data_at, 512 + 512 + 1024 + 512 + 512);
        assert!(log.entries[3].is_flush_point() && log.entries[4].is_flush_point());
        assert!(!log.entries[6].is_write() && log.entries[7].is_write());
    }

    #[test]
    fn damaged_logs_are_refused_by_name() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("log");
        write_log(&p, 512, &[(0, 4, 0, "a")]);
        let full = std::fs::read(&p).expect("read");
        std::fs::write(&p, &full[..full.len() - 512]).expect("cut");
        assert!(matches!(Log::open(&p), Err(LogError::Truncated { index: 0, .. })), "data cut short");
        std::fs::write(&p, vec![0u8; 4096]).expect("zeros");
        assert!(matches!(Log::open(&p), Err(LogError::NotALog { .. })));
        let mut bad = full.clone();
        bad[24..28].copy_from_slice(&1000u32.to_le_bytes());
        std::fs::write(&p, bad).expect("write");
        assert!(matches!(Log::open(&p), Err(LogError::SectorSize { .. })));
    }

    #[test]
    fn states_keep_what_a_flush_made_durable_and_any_subset_after() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = sample_log(dir.path());
        assert_eq!(log.state(&Point::Flush { entry: 4 }), vec![0, 1, 2, 3, 4]);
        let mut subsets = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let s = log.state(&Point::Between { entry: 7, seed });
            assert_eq!(&s[..4], &[0, 1, 2, 3], "all up to the flush, seed {seed}");
            assert!(s.contains(&4), "the FUA write is durable, seed {seed}");
            assert!(s.iter().all(|&i| i <= 7));
            assert_eq!(s, log.state(&Point::Between { entry: 7, seed }), "a function of the seed");
            subsets.insert(s);
        }
        assert!(subsets.len() > 4, "seeds draw different subsets: {subsets:?}");
    }

    #[test]
    fn apply_splits_writes_across_the_concatenated_disks() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = sample_log(dir.path());
        let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
        std::fs::write(&a, vec![b'.'; 7 * 512]).expect("a");
        std::fs::write(&b, vec![b'.'; 4 * 512]).expect("b");
        let disks = [(a.clone(), 7 * 512), (b.clone(), 4 * 512)];
        log.apply(&log.state(&Point::Flush { entry: 8 }), &disks).expect("apply");
        let (da, db) = (std::fs::read(&a).expect("a"), std::fs::read(&b).expect("b"));
        assert_eq!(&da[..512], &[b'a'; 512][..], "sector 0: a, then sector 1 discarded");
        assert_eq!(&da[512..1024], &[0u8; 512][..]);
        assert_eq!(&da[1024..2048], &[b'.'; 1024][..], "never written");
        assert_eq!(&da[2048..2560], &[b'b'; 512][..]);
        assert_eq!(&da[2560..3072], &[b'c'; 512][..]);
        assert_eq!(&da[3072..], &[b'd'; 512][..], "first half of d");
        assert_eq!(&db[..512], &[b'd'; 512][..], "second half of d on the next disk");
        assert_eq!(&db[1024..1536], &[b'e'; 512][..], "sector 9 is the second disk's third");
        let short = [(a, 7 * 512), (b, 512)];
        assert!(matches!(
            log.apply(&log.state(&Point::Flush { entry: 8 }), &short),
            Err(LogError::OutOfRange { index: 7, .. })
        ));
    }

    #[test]
    fn choose_takes_all_flush_points_when_few_and_samples_when_many() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = sample_log(dir.path());
        let (found, pts) = choose(&log, 1, 8, 10, 1, 3);
        assert_eq!(found, 2);
        assert_eq!(pts.iter().filter(|p| matches!(p, Point::Flush { .. })).count(), 2);
        assert_eq!(pts.len(), 3, "{pts:?}");
        assert_eq!(choose(&log, 1, 8, 10, 1, 3), (found, pts.clone()), "a function of the seed");
        let (found, pts) = choose(&log, 1, 8, 1, 0, 3);
        assert_eq!((found, pts.len()), (2, 1));
        for p in ["flush@4", "between@7:99"] {
            assert_eq!(p.parse::<Point>().expect("parse").to_string(), p);
        }
        assert!("flush".parse::<Point>().is_err() && "between@3".parse::<Point>().is_err());
    }
}
