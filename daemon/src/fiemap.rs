//! FS_IOC_FIEMAP: the physical extents of a file, checked and merged.
//!
//! There is no maintained crate for FIEMAP, so the ioctl is bound here with
//! `nix`. Only extents whose blocks are plainly, exclusively and already
//! written on the device may back a dm-linear map: anything flagged
//! UNKNOWN/UNWRITTEN/DELALLOC/NOT_ALIGNED/DATA_INLINE/DATA_TAIL/SHARED/ENCODED
//! is refused (writing through a map of such blocks would land on data that
//! is not the file's).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// libfiemap's bound: more extents than this means a badly fragmented file
/// and a dm table too large to load quickly.
pub const MAX_EXTENTS: usize = 50_000;
/// Extents fetched per ioctl call.
const BATCH: usize = 512;

pub const FIEMAP_FLAG_SYNC: u32 = 0x0000_0001;
pub const FIEMAP_EXTENT_LAST: u32 = 0x0000_0001;
pub const FIEMAP_EXTENT_UNKNOWN: u32 = 0x0000_0002;
pub const FIEMAP_EXTENT_DELALLOC: u32 = 0x0000_0004;
pub const FIEMAP_EXTENT_ENCODED: u32 = 0x0000_0008;
pub const FIEMAP_EXTENT_DATA_ENCRYPTED: u32 = 0x0000_0080;
pub const FIEMAP_EXTENT_NOT_ALIGNED: u32 = 0x0000_0100;
pub const FIEMAP_EXTENT_DATA_INLINE: u32 = 0x0000_0200;
pub const FIEMAP_EXTENT_DATA_TAIL: u32 = 0x0000_0400;
pub const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x0000_0800;
pub const FIEMAP_EXTENT_MERGED: u32 = 0x0000_1000;
pub const FIEMAP_EXTENT_SHARED: u32 = 0x0000_2000;

/// Flags that make an extent unusable for a block map.
const REFUSED: &[(u32, &str)] = &[
    (FIEMAP_EXTENT_UNKNOWN, "UNKNOWN"),
    (FIEMAP_EXTENT_DELALLOC, "DELALLOC"),
    (FIEMAP_EXTENT_ENCODED, "ENCODED"),
    (FIEMAP_EXTENT_NOT_ALIGNED, "NOT_ALIGNED"),
    (FIEMAP_EXTENT_DATA_INLINE, "DATA_INLINE"),
    (FIEMAP_EXTENT_DATA_TAIL, "DATA_TAIL"),
    (FIEMAP_EXTENT_UNWRITTEN, "UNWRITTEN"),
    (FIEMAP_EXTENT_SHARED, "SHARED"),
];

#[derive(Debug, thiserror::Error)]
pub enum FiemapError {
    #[error("FIEMAP failed on {path}")]
    Ioctl {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("{path}: extent at logical byte {logical} has flags {flags} (refused: {names})")]
    RefusedFlags { path: PathBuf, logical: u64, flags: u32, names: String },
    #[error("{path}: extent at logical byte {logical} is not 512-byte aligned or is empty")]
    Misaligned { path: PathBuf, logical: u64 },
    #[error("{path}: extents overlap or are out of order at logical byte {logical}")]
    Disorder { path: PathBuf, logical: u64 },
    #[error("{path}: {count} extents, more than {MAX_EXTENTS}")]
    TooMany { path: PathBuf, count: usize },
    #[error("{path}: extents cover {covered} of {size} bytes (hole at logical byte {hole})")]
    Hole { path: PathBuf, covered: u64, size: u64, hole: u64 },
    #[error("{path}: the kernel's FIEMAP answer is malformed ({what})")]
    Malformed { path: PathBuf, what: String },
}

/// One extent as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawExtent {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
    pub flags: u32,
}

/// A checked, merged extent (bytes). `physical` is relative to the start of
/// the block device the filesystem lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct FiemapExtentC {
    fe_logical: u64,
    fe_physical: u64,
    fe_length: u64,
    fe_reserved64: [u64; 2],
    fe_flags: u32,
    fe_reserved: [u32; 3],
}

/// `struct fiemap` without its flexible array; the ioctl number is computed
/// from this size, as the kernel's `_IOWR('f', 11, struct fiemap)` does.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct FiemapHeaderC {
    fm_start: u64,
    fm_length: u64,
    fm_flags: u32,
    fm_mapped_extents: u32,
    fm_extent_count: u32,
    fm_reserved: u32,
}

#[repr(C)]
struct FiemapBuf {
    hdr: FiemapHeaderC,
    extents: [FiemapExtentC; BATCH],
}

nix::ioctl_readwrite!(fs_ioc_fiemap, b'f', 11, FiemapHeaderC);

/// Reads every extent of `file` (FIEMAP_FLAG_SYNC: dirty data is flushed
/// first so nothing is DELALLOC), looping until FIEMAP_EXTENT_LAST.
pub fn read_raw(file: &File, path: &Path) -> Result<Vec<RawExtent>, FiemapError> {
    let mut out = Vec::new();
    let mut start = 0u64;
    let mut buf = Box::new(FiemapBuf { hdr: FiemapHeaderC::default(), extents: [FiemapExtentC::default(); BATCH] });
    loop {
        buf.hdr = FiemapHeaderC {
            fm_start: start,
            fm_length: u64::MAX - start,
            fm_flags: FIEMAP_FLAG_SYNC,
            fm_mapped_extents: 0,
            fm_extent_count: BATCH as u32,
            fm_reserved: 0,
        };
        // SAFETY: buf is a live, properly aligned struct fiemap followed by
        // room for fm_extent_count extents, as the ioctl requires.
        unsafe { fs_ioc_fiemap(file.as_raw_fd(), &mut buf.hdr as *mut FiemapHeaderC) }
            .map_err(|source| FiemapError::Ioctl { path: path.to_path_buf(), source })?;
        let mapped = buf.hdr.fm_mapped_extents as usize;
        if mapped > BATCH {
            return Err(FiemapError::Malformed { path: path.to_path_buf(), what: format!("{mapped} extents mapped") });
        }
        if mapped == 0 {
            return Ok(out);
        }
        let mut last = false;
        for e in &buf.extents[..mapped] {
            out.push(RawExtent {
                logical: e.fe_logical,
                physical: e.fe_physical,
                length: e.fe_length,
                flags: e.fe_flags,
            });
            last |= e.fe_flags & FIEMAP_EXTENT_LAST != 0;
        }
        if last {
            return Ok(out);
        }
        // A runaway loop would grow without bound; the limit is checked
        // again after merging.
        if out.len() > 4 * MAX_EXTENTS {
            return Err(FiemapError::TooMany { path: path.to_path_buf(), count: out.len() });
        }
        let tail = buf.extents[mapped - 1];
        let next = tail.fe_logical.saturating_add(tail.fe_length);
        if next <= start {
            return Err(FiemapError::Malformed { path: path.to_path_buf(), what: "no progress".into() });
        }
        start = next;
    }
}

/// Refuses unusable extents and merges physically and logically contiguous
/// neighbours.
pub fn check_and_merge(raw: &[RawExtent], path: &Path) -> Result<Vec<Extent>, FiemapError> {
    let mut out: Vec<Extent> = Vec::with_capacity(raw.len());
    let mut next_logical = 0u64;
    for r in raw {
        let bad: Vec<&str> = REFUSED.iter().filter(|(f, _)| r.flags & f != 0).map(|(_, n)| *n).collect();
        if !bad.is_empty() {
            return Err(FiemapError::RefusedFlags {
                path: path.to_path_buf(),
                logical: r.logical,
                flags: r.flags,
                names: bad.join("|"),
            });
        }
        if r.length == 0 || r.length % 512 != 0 || r.physical % 512 != 0 || r.logical % 512 != 0 {
            return Err(FiemapError::Misaligned { path: path.to_path_buf(), logical: r.logical });
        }
        if r.logical < next_logical || r.physical.checked_add(r.length).is_none() {
            return Err(FiemapError::Disorder { path: path.to_path_buf(), logical: r.logical });
        }
        next_logical = r
            .logical
            .checked_add(r.length)
            .ok_or_else(|| FiemapError::Disorder { path: path.to_path_buf(), logical: r.logical })?;
        match out.last_mut() {
            Some(p) if p.logical + p.length == r.logical && p.physical + p.length == r.physical => {
                p.length += r.length;
            }
            _ => out.push(Extent { logical: r.logical, physical: r.physical, length: r.length }),
        }
    }
    if out.len() > MAX_EXTENTS {
        return Err(FiemapError::TooMany { path: path.to_path_buf(), count: out.len() });
    }
    Ok(out)
}

/// Checks that the extents cover `[0, size)` with no hole; the file's last
/// extent may extend past `size` (block rounding) and is then clipped, so the
/// map never reaches blocks beyond the file's.
pub fn cover(extents: &[Extent], size: u64, path: &Path) -> Result<Vec<Extent>, FiemapError> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    for e in extents {
        if pos >= size {
            break;
        }
        if e.logical != pos {
            return Err(FiemapError::Hole { path: path.to_path_buf(), covered: pos, size, hole: pos });
        }
        let len = e.length.min(size - pos);
        out.push(Extent { logical: e.logical, physical: e.physical, length: len });
        pos += len;
    }
    if pos < size {
        return Err(FiemapError::Hole { path: path.to_path_buf(), covered: pos, size, hole: pos });
    }
    Ok(out)
}

/// FIEMAP + checks + merge + coverage of the file's `size` bytes.
pub fn file_extents(file: &File, path: &Path, size: u64) -> Result<Vec<Extent>, FiemapError> {
    let raw = read_raw(file, path)?;
    let merged = check_and_merge(&raw, path)?;
    cover(&merged, size, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    fn p() -> PathBuf {
        PathBuf::from("/data/rewind/cow.0000")
    }
    fn raw(logical: u64, physical: u64, length: u64, flags: u32) -> RawExtent {
        RawExtent { logical, physical, length, flags }
    }

    #[test]
    fn contiguous_extents_merge() {
        let r = [raw(0, 4096, 4096, 0), raw(4096, 8192, 8192, 0), raw(12288, 65536, 4096, FIEMAP_EXTENT_LAST)];
        let m = check_and_merge(&r, &p()).expect("ok");
        assert_eq!(
            m,
            vec![
                Extent { logical: 0, physical: 4096, length: 12288 },
                Extent { logical: 12288, physical: 65536, length: 4096 }
            ]
        );
    }

    #[test]
    fn logically_adjacent_but_physically_apart_do_not_merge() {
        let r = [raw(0, 0, 4096, 0), raw(4096, 8192, 4096, 0)];
        assert_eq!(check_and_merge(&r, &p()).expect("ok").len(), 2);
    }

    #[test]
    fn every_refused_flag_is_refused() {
        for (flag, name) in REFUSED {
            let r = [raw(0, 4096, 4096, *flag | FIEMAP_EXTENT_LAST)];
            match check_and_merge(&r, &p()) {
                Err(FiemapError::RefusedFlags { names, .. }) => assert_eq!(&names, name),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn harmless_flags_are_accepted() {
        let r = [raw(0, 4096, 4096, FIEMAP_EXTENT_MERGED | FIEMAP_EXTENT_DATA_ENCRYPTED | FIEMAP_EXTENT_LAST)];
        assert!(check_and_merge(&r, &p()).is_ok());
    }

    #[test]
    fn misaligned_empty_overlapping_extents_are_refused() {
        assert!(matches!(check_and_merge(&[raw(0, 100, 4096, 0)], &p()), Err(FiemapError::Misaligned { .. })));
        assert!(matches!(check_and_merge(&[raw(0, 0, 0, 0)], &p()), Err(FiemapError::Misaligned { .. })));
        let r = [raw(0, 0, 8192, 0), raw(4096, 65536, 4096, 0)];
        assert!(matches!(check_and_merge(&r, &p()), Err(FiemapError::Disorder { .. })));
        assert!(matches!(check_and_merge(&[raw(0, u64::MAX - 511, 4096, 0)], &p()), Err(FiemapError::Disorder { .. })));
    }

    #[test]
    fn more_than_the_limit_is_refused() {
        let r: Vec<RawExtent> = (0..(MAX_EXTENTS as u64 + 1)).map(|i| raw(i * 4096, i * 8192, 4096, 0)).collect();
        assert!(matches!(check_and_merge(&r, &p()), Err(FiemapError::TooMany { .. })));
    }

    #[test]
    fn coverage_finds_holes_and_clips_the_tail() {
        let e = [Extent { logical: 0, physical: 0, length: 4096 }, Extent { logical: 8192, physical: 0, length: 4096 }];
        assert!(matches!(cover(&e, 12288, &p()), Err(FiemapError::Hole { hole: 4096, .. })));
        let e = [Extent { logical: 0, physical: 4096, length: 8192 }];
        assert_eq!(cover(&e, 4096, &p()).expect("ok")[0].length, 4096);
        assert!(matches!(cover(&e, 16384, &p()), Err(FiemapError::Hole { covered: 8192, .. })));
        assert!(cover(&[], 0, &p()).expect("empty").is_empty());
    }

    fn written_file(dir: &Path, size: usize) -> (File, PathBuf) {
        let path = dir.join("data");
        let mut f =
            std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).expect("create");
        let block: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        let mut left = size;
        while left > 0 {
            let n = left.min(block.len());
            f.write_all(&block[..n]).expect("write");
            left -= n;
        }
        f.sync_all().expect("fsync");
        (f, path)
    }

    /// Real FIEMAP on the host's filesystem (ext4 here): a written file is
    /// fully covered by plain extents.
    #[test]
    fn real_file_extents_cover_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (f, path) = written_file(dir.path(), 3 << 20);
        let e = file_extents(&f, &path, 3 << 20).expect("fiemap");
        assert!(!e.is_empty());
        assert_eq!(e.iter().map(|x| x.length).sum::<u64>(), 3 << 20);
    }

    #[test]
    fn real_unwritten_preallocation_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("prealloc");
        let f = File::create(&path).expect("create");
        nix::fcntl::fallocate(&f, nix::fcntl::FallocateFlags::empty(), 0, 1 << 20).expect("fallocate");
        match file_extents(&f, &path, 1 << 20) {
            Err(FiemapError::RefusedFlags { names, .. }) => assert!(names.contains("UNWRITTEN")),
            // tmpfs and some other filesystems have no FIEMAP at all.
            Err(FiemapError::Ioctl { .. }) => {}
            other => panic!("unwritten extents accepted: {other:?}"),
        }
    }

    #[test]
    fn real_sparse_file_has_a_hole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sparse");
        let f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(&path).expect("create");
        f.write_all_at(&[1u8; 4096], 0).expect("w");
        f.write_all_at(&[1u8; 4096], 1 << 20).expect("w");
        f.sync_all().expect("fsync");
        assert!(matches!(file_extents(&f, &path, (1 << 20) + 4096), Err(FiemapError::Hole { .. })));
    }

    /// Our map against `filefrag -v` (e2fsprogs), when it is installed.
    #[test]
    fn real_extents_match_filefrag() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (f, path) = written_file(dir.path(), 2 << 20);
        let ours = file_extents(&f, &path, 2 << 20).expect("fiemap");
        let Ok(out) = std::process::Command::new("filefrag").arg("-v").arg("-b4096").arg(&path).output() else {
            eprintln!("filefrag not installed; skipped");
            return;
        };
        let theirs = parse_filefrag(&String::from_utf8_lossy(&out.stdout));
        let ours_blocks: Vec<(u64, u64, u64)> =
            ours.iter().map(|e| (e.logical / 4096, e.physical / 4096, e.length / 4096)).collect();
        assert_eq!(merge_blocks(&theirs), ours_blocks);
    }

    /// `filefrag -v` rows: "ext: logical_offset: physical_offset: length: ...",
    /// e.g. "   0:        0..     511:   34816..  35327:    512:   last,eof".
    pub(crate) fn parse_filefrag(text: &str) -> Vec<(u64, u64, u64)> {
        let mut v = Vec::new();
        for line in text.lines() {
            let cols: Vec<&str> = line.split(':').map(str::trim).collect();
            if cols.len() < 4 || cols[0].parse::<u64>().is_err() {
                continue;
            }
            let l = cols[1].split("..").next().and_then(|s| s.trim().parse::<u64>().ok());
            let ph = cols[2].split("..").next().and_then(|s| s.trim().parse::<u64>().ok());
            let n = cols[3].parse::<u64>().ok();
            if let (Some(l), Some(ph), Some(n)) = (l, ph, n) {
                v.push((l, ph, n));
            }
        }
        v
    }

    fn merge_blocks(v: &[(u64, u64, u64)]) -> Vec<(u64, u64, u64)> {
        let mut out: Vec<(u64, u64, u64)> = Vec::new();
        for &(l, p, n) in v {
            match out.last_mut() {
                Some(x) if x.0 + x.2 == l && x.1 + x.2 == p => x.2 += n,
                _ => out.push((l, p, n)),
            }
        }
        out
    }
}
