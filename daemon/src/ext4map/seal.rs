//! The free map of a filesystem under a crypt layer, taken when its
//! plaintext is readable and final, and sealed so that a later arm can
//! prove it is still current without the key.
//!
//! Why: under metadata encryption the raw partition holds ciphertext when
//! rewindd arms (before vold stacks its key), so the block bitmaps cannot
//! be read then. They can be read at the clean shutdown before the first
//! attempt, through the crypt device /data was mounted from, once /data is
//! unmounted. The map is then sealed with the sha256 of the raw ciphertext
//! of every byte the map was computed from (the superblock, the group
//! descriptors, the initialised groups' block bitmaps) and of the journal
//! (an allocation can sit in the journal before it reaches a bitmap).
//!
//! Why a ciphertext fingerprint proves the plaintext: the crypt layer maps
//! sector S of the plaintext to sector S of the raw device (checked by the
//! caller: one line, offset 0) and its cipher is a deterministic function
//! of key, sector and plaintext that is a bijection for a fixed key and
//! sector (AES-XTS, Adiantum, CBC-ESSIV alike). Equal ciphertext at the same
//! sectors therefore means equal plaintext there, and [`free::take`] reads
//! nothing else, so it would compute the same map. A change anywhere in
//! those bytes (any mount writes the superblock; any allocation writes a
//! bitmap, a descriptor or the journal) breaks the seal, and the device is
//! then armed protecting every chunk, never the other way round.

use super::free::{self, FreeMap, FreeMapError};
use super::{fingerprint, first_change, le32, map_inode, read, read_super, MapError, Region, SUPER_OFFSET};
use crate::sys::blockdev::ReadAt;

/// Fingerprinted pieces are at most this long, so a journal is hashed (and
/// read) a MiB at a time.
const PIECE: u64 = 1 << 20;
const COMPAT_HAS_JOURNAL: u32 = 0x4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("{0}")]
    Map(#[from] FreeMapError),
    #[error("the journal: {0}")]
    Journal(String),
    #[error("the allocation blocks changed while they were read (is the filesystem still mounted?)")]
    Changing,
    #[error("the seal has {0} regions, more than {MAX_REGIONS}")]
    TooMany(usize),
}

impl From<MapError> for SealError {
    fn from(e: MapError) -> Self {
        SealError::Map(FreeMapError::Parse(e))
    }
}

/// At most this many fingerprinted regions (merged ranges cut into MiB
/// pieces): a 65,536-group filesystem without flex_bg has that many
/// bitmaps; with flex_bg (every Android userdata) they lie in runs.
pub const MAX_REGIONS: usize = 1 << 17;

/// A sealed map: the map, and the ciphertext fingerprints it stands on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub map: FreeMap,
    pub regions: Vec<Region>,
}

/// Takes the map from `plain` (the crypt device, a device of
/// `device_bytes`) and fingerprints the same bytes on `raw` (the
/// ciphertext below it, sector for sector). The fingerprint is taken before
/// and after the map: a difference means something still writes.
pub fn seal(plain: &dyn ReadAt, raw: &dyn ReadAt, device_bytes: u64, chunk_bytes: u64) -> Result<Sealed, SealError> {
    let sealed = ranges(plain, device_bytes)?;
    let before = fingerprint(raw, &sealed)?;
    let map = free::take(plain, device_bytes, chunk_bytes)?;
    if ranges(plain, device_bytes)? != sealed || fingerprint(raw, &sealed)? != before {
        return Err(SealError::Changing);
    }
    Ok(Sealed { map, regions: before })
}

/// The first region of `regions` that `raw` no longer holds, as "byte
/// range A+N (what)" for the refusal; None: the seal holds.
pub fn broken(raw: &dyn ReadAt, regions: &[Region]) -> Result<Option<String>, SealError> {
    Ok(first_change(raw, regions)?.map(|(i, _)| {
        let r = &regions[i];
        format!("region {} of {} (bytes {}+{}) changed", i + 1, regions.len(), r.offset, r.len)
    }))
}

/// What the seal fingerprints, as `(offset, len)` pieces of at most
/// [`PIECE`] bytes: the allocation ranges and the journal, merged.
fn ranges(plain: &dyn ReadAt, device_bytes: u64) -> Result<Vec<(u64, u32)>, SealError> {
    let mut ranges = free::allocation_ranges(plain, device_bytes)?;
    ranges.extend(journal_ranges(plain)?);
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (a, n) in ranges {
        match merged.last_mut() {
            Some(last) if a <= last.0 + last.1 => last.1 = last.1.max(a + n - last.0),
            _ => merged.push((a, n)),
        }
    }
    let mut pieces = Vec::new();
    for (a, n) in merged {
        let mut at = a;
        while at < a + n {
            let len = PIECE.min(a + n - at);
            pieces.push((at, len as u32));
            at += len;
        }
        if pieces.len() > MAX_REGIONS {
            return Err(SealError::TooMany(pieces.len()));
        }
    }
    Ok(pieces)
}

/// The internal journal's inode, tree blocks and data, in bytes. An
/// external journal is refused: its device is not under rewind.
fn journal_ranges(plain: &dyn ReadAt) -> Result<Vec<(u64, u64)>, SealError> {
    let sb = read_super(plain)?;
    let raw = read(plain, SUPER_OFFSET, 1024)?;
    if le32(&raw, 0x5C) & COMPAT_HAS_JOURNAL == 0 {
        return Ok(Vec::new());
    }
    if le32(&raw, 0xE4) != 0 {
        return Err(SealError::Journal("the journal is on another device".into()));
    }
    let ino = u64::from(le32(&raw, 0xE0));
    if ino == 0 {
        return Err(SealError::Journal("has_journal is set but no journal inode is named".into()));
    }
    let at = super::inode_offset(plain, &sb, ino)?;
    let inode = read(plain, at, 128)?;
    let size = u64::from(le32(&inode, 0x04)) | (u64::from(le32(&inode, 0x6C)) << 32);
    let map = map_inode(plain, ino, size).map_err(|e| SealError::Journal(e.to_string()))?;
    let mut ranges: Vec<(u64, u64)> = map.regions().into_iter().map(|(a, n)| (a, u64::from(n))).collect();
    ranges.extend(map.extents.iter().map(|e| (e.physical, e.length)));
    Ok(ranges)
}

#[cfg(test)]
pub(crate) mod tests;
