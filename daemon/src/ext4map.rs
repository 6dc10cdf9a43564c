//! The COW files' map fingerprint on ext4: where a file's inode and
//! extent-tree blocks are on the device, found by parsing the filesystem
//! itself, and hashes of those bytes as the raw device holds them.
//!
//! Why: at boot rewindd must know the COW map is still the recorded one
//! before it arms or merges, and it cannot mount anything there (Android's
//! sepolicy forbids it, and with metadata encryption the raw partition
//! holds ciphertext until vold stacks dm-default-key later in
//! `mount_all`). The map of a file is entirely described by its inode's
//! `i_block` and the extent-tree blocks below it: if those bytes on the
//! device are unchanged, so is the map. So `start` (filesystem mounted)
//! finds them here, checks the parse against FIEMAP, and records sha256s
//! of the raw bytes; the boot re-reads the same raw bytes and compares.
//!
//! The inode region is bytes `[0x10, 0x70)` of the inode: mtime, dtime,
//! gid, links, i_blocks, i_flags, osd1, i_block, i_generation, file_acl,
//! size_high. atime/ctime (0x08-0x0F) change benignly and the checksums
//! live after 0x70. Under AES-XTS (dm-default-key, dm-crypt
//! aes-xts-plain64, inline crypto) each 16-byte block's ciphertext depends
//! only on its plaintext, the key and the sector, and these 96 bytes are
//! six whole 16-byte blocks (inodes are at least 128-byte aligned), so
//! neighbouring inodes in the same block may change without changing the
//! hash. With a wide-block cipher (Adiantum) any change in the sector
//! changes every byte: rewindd then refuses the map (safe, not silent).
//!
//! Parsing is pure over [`ReadAt`] so host tests run on image files. Only
//! the layouts understood here are accepted; anything else is refused, and
//! a parse that disagrees with FIEMAP refuses `start`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::fiemap::Extent;
use crate::sys::blockdev::ReadAt;

const SUPER_OFFSET: u64 = 1024;
const EXT4_MAGIC: u16 = 0xEF53;
const EXTENT_MAGIC: u16 = 0xF30A;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_MMP: u32 = 0x100;
const INCOMPAT_FLEX_BG: u32 = 0x200;
const INCOMPAT_EA_INODE: u32 = 0x400;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const INCOMPAT_LARGEDIR: u32 = 0x4000;
const INCOMPAT_INLINE_DATA: u32 = 0x8000;
const INCOMPAT_ENCRYPT: u32 = 0x10000;
const INCOMPAT_CASEFOLD: u32 = 0x20000;
/// Features whose layout this parser handles (the group descriptor table
/// right after the superblock, extents). META_BG moves descriptors,
/// COMPRESSION/JOURNAL_DEV/DIRDATA are not ext4 data filesystems we know.
const INCOMPAT_KNOWN: u32 = INCOMPAT_FILETYPE
    | INCOMPAT_RECOVER
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | INCOMPAT_MMP
    | INCOMPAT_FLEX_BG
    | INCOMPAT_EA_INODE
    | INCOMPAT_CSUM_SEED
    | INCOMPAT_LARGEDIR
    | INCOMPAT_INLINE_DATA
    | INCOMPAT_ENCRYPT
    | INCOMPAT_CASEFOLD;
const EXTENTS_FL: u32 = 0x80000;
const INLINE_DATA_FL: u32 = 0x1000_0000;
const S_IFMT: u16 = 0xF000;
const S_IFREG: u16 = 0x8000;
/// ext4's own bound on the tree depth.
const MAX_DEPTH: u16 = 5;
/// Longest initialised extent; longer lengths encode UNINIT extents.
const MAX_INIT_LEN: u16 = 32768;
/// Bound on tree blocks read for one file (a loop or a corrupt tree must
/// not run away); a COW file of 1 GiB has a handful.
const MAX_TREE_BLOCKS: usize = 4096;
/// Inode bytes fingerprinted: [0x10, 0x70).
pub const INODE_REGION_START: u64 = 0x10;
pub const INODE_REGION_LEN: u32 = 0x60;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MapError {
    #[error("cannot read {len} bytes at byte {offset}: {error}")]
    Read { offset: u64, len: usize, error: String },
    #[error("not an ext4 filesystem (superblock magic {0:#06x})")]
    Magic(u16),
    #[error("unsupported ext4 layout: {0}")]
    Layout(String),
    #[error("inode {ino}: {problem}")]
    Inode { ino: u64, problem: String },
    #[error("inode {ino}: extent tree at {place}: {problem}")]
    Tree { ino: u64, place: String, problem: String },
}

/// Reads exactly `buf.len()` bytes at `offset`.
fn read(src: &dyn ReadAt, offset: u64, len: usize) -> Result<Vec<u8>, MapError> {
    let mut buf = vec![0u8; len];
    src.read_at_exact(&mut buf, offset).map_err(|e| MapError::Read { offset, len, error: e.to_string() })?;
    Ok(buf)
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The superblock fields the map needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Super {
    pub block_size: u64,
    pub first_data_block: u64,
    pub blocks_count: u64,
    pub inodes_count: u32,
    pub inodes_per_group: u32,
    pub inode_size: u64,
    pub desc_size: u64,
    pub is_64bit: bool,
}

pub fn read_super(src: &dyn ReadAt) -> Result<Super, MapError> {
    let b = read(src, SUPER_OFFSET, 1024)?;
    let magic = le16(&b, 0x38);
    if magic != EXT4_MAGIC {
        return Err(MapError::Magic(magic));
    }
    let log = le32(&b, 0x18);
    if log > 6 {
        return Err(MapError::Layout(format!("s_log_block_size {log}")));
    }
    let block_size = 1024u64 << log;
    let incompat = le32(&b, 0x60);
    if incompat & INCOMPAT_META_BG != 0 {
        return Err(MapError::Layout("meta_bg (group descriptors not after the superblock)".into()));
    }
    if incompat & !INCOMPAT_KNOWN != 0 {
        return Err(MapError::Layout(format!("unknown incompatible features {:#x}", incompat & !INCOMPAT_KNOWN)));
    }
    if incompat & INCOMPAT_EXTENTS == 0 {
        return Err(MapError::Layout("no extents feature".into()));
    }
    let is_64bit = incompat & INCOMPAT_64BIT != 0;
    let rev = le32(&b, 0x4C);
    let inode_size = if rev == 0 { 128 } else { u64::from(le16(&b, 0x58)) };
    if inode_size < 128 || !inode_size.is_power_of_two() || inode_size > block_size {
        return Err(MapError::Layout(format!("inode size {inode_size}")));
    }
    let desc_size = if is_64bit { u64::from(le16(&b, 0xFE)) } else { 32 };
    if desc_size < 32 || !desc_size.is_power_of_two() || desc_size > 1024 || (is_64bit && desc_size < 64) {
        return Err(MapError::Layout(format!("group descriptor size {desc_size}")));
    }
    let first_data_block = u64::from(le32(&b, 0x14));
    // 1 KiB blocks put the superblock in block 1; larger ones in block 0.
    if first_data_block != u64::from(block_size == 1024) {
        return Err(MapError::Layout(format!("s_first_data_block {first_data_block} with {block_size}-byte blocks")));
    }
    let blocks_hi = if is_64bit { u64::from(le32(&b, 0x150)) } else { 0 };
    let blocks_count = u64::from(le32(&b, 0x04)) | (blocks_hi << 32);
    // Every byte offset below is a block number times the block size: a
    // filesystem whose size does not fit in 64 bits is corrupt, and would
    // make those offsets wrap.
    if blocks_count.checked_mul(block_size).is_none() {
        return Err(MapError::Layout(format!("{blocks_count} blocks of {block_size} bytes overflow 64 bits")));
    }
    let inodes_per_group = le32(&b, 0x28);
    if inodes_per_group == 0 {
        return Err(MapError::Layout("zero inodes per group".into()));
    }
    Ok(Super {
        block_size,
        first_data_block,
        blocks_count,
        inodes_count: le32(&b, 0x00),
        inodes_per_group,
        inode_size,
        desc_size,
        is_64bit,
    })
}

/// Byte offset of inode `ino` on the device.
pub fn inode_offset(src: &dyn ReadAt, sb: &Super, ino: u64) -> Result<u64, MapError> {
    if ino == 0 || ino > u64::from(sb.inodes_count) {
        return Err(MapError::Inode {
            ino,
            problem: format!("out of range (the filesystem has {} inodes)", sb.inodes_count),
        });
    }
    let group = (ino - 1) / u64::from(sb.inodes_per_group);
    let index = (ino - 1) % u64::from(sb.inodes_per_group);
    let gdt = (sb.first_data_block + 1) * sb.block_size;
    let d = read(src, gdt + group * sb.desc_size, sb.desc_size as usize)?;
    let hi = if sb.is_64bit { u64::from(le32(&d, 0x28)) } else { 0 };
    let table = u64::from(le32(&d, 0x08)) | (hi << 32);
    if table == 0 || table >= sb.blocks_count {
        return Err(MapError::Inode {
            ino,
            problem: format!("group {group}'s inode table at block {table} is outside the filesystem"),
        });
    }
    // table < blocks_count, and blocks_count * block_size fits (read_super);
    // the inode itself must lie inside the filesystem too.
    let fs_bytes = sb.blocks_count.saturating_mul(sb.block_size);
    table
        .checked_mul(sb.block_size)
        .and_then(|t| t.checked_add(index.checked_mul(sb.inode_size)?))
        .filter(|off| off.checked_add(sb.inode_size).is_some_and(|end| end <= fs_bytes))
        .ok_or_else(|| MapError::Inode {
            ino,
            problem: format!(
                "lies outside the filesystem (group {group}'s inode table at block {table}, index {index})"
            ),
        })
}

/// Where one file's map lives, and the map itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InodeMap {
    pub ino: u64,
    pub inode_offset: u64,
    pub generation: u32,
    pub size: u64,
    pub block_size: u64,
    /// Block numbers of the index/leaf blocks below the root (depth 0:
    /// none), in the order they were visited.
    pub tree_blocks: Vec<u64>,
    /// Leaf extents in bytes, merged like FIEMAP's.
    pub extents: Vec<Extent>,
}

impl InodeMap {
    /// (offset, len) of every fingerprinted region: the inode's first,
    /// then each tree block.
    pub fn regions(&self) -> Vec<(u64, u32)> {
        let mut v = vec![(self.inode_offset + INODE_REGION_START, INODE_REGION_LEN)];
        v.extend(self.tree_blocks.iter().map(|b| (b * self.block_size, self.block_size as u32)));
        v
    }
}

struct Walk<'a> {
    src: &'a dyn ReadAt,
    sb: &'a Super,
    ino: u64,
    blocks: Vec<u64>,
    /// (logical block, physical block, blocks), in tree order.
    leaves: Vec<(u64, u64, u64)>,
}

impl Walk<'_> {
    fn bad(&self, place: &str, problem: String) -> MapError {
        MapError::Tree { ino: self.ino, place: place.to_string(), problem }
    }

    /// One node: a 12-byte header and its entries (`node` holds the whole
    /// node: i_block's 60 bytes or a block).
    fn node(&mut self, node: &[u8], place: &str, want_depth: Option<u16>) -> Result<(), MapError> {
        let magic = le16(node, 0);
        if magic != EXTENT_MAGIC {
            return Err(self.bad(place, format!("header magic {magic:#06x}")));
        }
        let (entries, max, depth) = (le16(node, 2), le16(node, 4), le16(node, 6));
        let fits = ((node.len() - 12) / 12) as u16;
        if max == 0 || max > fits || entries > max {
            return Err(self.bad(place, format!("{entries} entries, max {max} (room for {fits})")));
        }
        if depth > MAX_DEPTH || want_depth.is_some_and(|d| d != depth) {
            return Err(self.bad(place, format!("depth {depth}, expected {want_depth:?} (at most {MAX_DEPTH})")));
        }
        for i in 0..usize::from(entries) {
            let e = &node[12 + i * 12..24 + i * 12];
            if depth == 0 {
                let len = le16(e, 4);
                if len > MAX_INIT_LEN {
                    return Err(self.bad(place, format!("entry {i} is an uninitialised extent (ee_len {len})")));
                }
                if len == 0 {
                    return Err(self.bad(place, format!("entry {i} is empty")));
                }
                let phys = u64::from(le32(e, 8)) | (u64::from(le16(e, 6)) << 32);
                if phys == 0 || phys + u64::from(len) > self.sb.blocks_count {
                    return Err(self.bad(place, format!("entry {i} maps blocks {phys}+{len} outside the filesystem")));
                }
                self.leaves.push((u64::from(le32(e, 0)), phys, u64::from(len)));
            } else {
                let child = u64::from(le32(e, 4)) | (u64::from(le16(e, 8)) << 32);
                if child == 0 || child >= self.sb.blocks_count {
                    return Err(self.bad(place, format!("entry {i} points at block {child}, outside the filesystem")));
                }
                if self.blocks.contains(&child) || self.blocks.len() >= MAX_TREE_BLOCKS {
                    return Err(self.bad(place, format!("entry {i}: block {child} repeats or the tree is too large")));
                }
                self.blocks.push(child);
                let b = read(self.src, child * self.sb.block_size, self.sb.block_size as usize)?;
                self.node(&b, &format!("block {child}"), Some(depth - 1))?;
            }
        }
        Ok(())
    }
}

/// Parses inode `ino`: it must be a regular file of `size` bytes with an
/// extent tree. Leaf extents are merged and clipped to `size` as
/// `fiemap::file_extents` does, so the result compares with FIEMAP's.
pub fn map_inode(src: &dyn ReadAt, ino: u64, size: u64) -> Result<InodeMap, MapError> {
    let sb = read_super(src)?;
    let off = inode_offset(src, &sb, ino)?;
    let raw = read(src, off, 128)?;
    let bad = |problem: String| MapError::Inode { ino, problem };
    let mode = le16(&raw, 0x00);
    if mode & S_IFMT != S_IFREG {
        return Err(bad(format!("not a regular file (mode {mode:#o})")));
    }
    let flags = le32(&raw, 0x20);
    if flags & EXTENTS_FL == 0 {
        return Err(bad(format!("does not use extents (i_flags {flags:#x})")));
    }
    if flags & INLINE_DATA_FL != 0 {
        return Err(bad("has inline data".into()));
    }
    let isize = u64::from(le32(&raw, 0x04)) | (u64::from(le32(&raw, 0x6C)) << 32);
    if isize != size {
        return Err(bad(format!("size {isize}, the file has {size}")));
    }
    let mut walk = Walk { src, sb: &sb, ino, blocks: Vec::new(), leaves: Vec::new() };
    walk.node(&raw[0x28..0x28 + 60], "i_block", None)?;
    let Walk { blocks, mut leaves, .. } = walk;
    leaves.sort_unstable();
    let bs = sb.block_size;
    let mut merged: Vec<Extent> = Vec::new();
    for (l, p, n) in leaves {
        let (l, p, n) = (l * bs, p * bs, n * bs);
        match merged.last_mut() {
            Some(m) if l < m.logical + m.length => {
                return Err(bad(format!("extents overlap at logical byte {l}")));
            }
            Some(m) if m.logical + m.length == l && m.physical + m.length == p => m.length += n,
            _ => merged.push(Extent { logical: l, physical: p, length: n }),
        }
    }
    let extents = crate::fiemap::cover(&merged, size, std::path::Path::new(&format!("inode {ino}")))
        .map_err(|e| bad(format!("extents do not cover the file: {e}")))?;
    Ok(InodeMap {
        ino,
        inode_offset: off,
        generation: le32(&raw, 0x64),
        size,
        block_size: bs,
        tree_blocks: blocks,
        extents,
    })
}

/// One fingerprinted byte range of the raw device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub offset: u64,
    pub len: u32,
    pub sha256: String,
}

pub fn hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hashes `regions` as `src` holds them.
pub fn fingerprint(src: &dyn ReadAt, regions: &[(u64, u32)]) -> Result<Vec<Region>, MapError> {
    regions
        .iter()
        .map(|&(offset, len)| Ok(Region { offset, len, sha256: hash(&read(src, offset, len as usize)?) }))
        .collect()
}

/// The first recorded region that `src` no longer holds: (index, what it
/// hashes to now).
pub fn first_change(src: &dyn ReadAt, recorded: &[Region]) -> Result<Option<(usize, String)>, MapError> {
    for (i, r) in recorded.iter().enumerate() {
        let now = hash(&read(src, r.offset, r.len as usize)?);
        if now != r.sha256 {
            return Ok(Some((i, now)));
        }
    }
    Ok(None)
}

// The baseline's free chunks, from the block bitmaps (free-space-aware
// checkpoints).
pub mod free;

// The free map taken through a crypt layer at shutdown, sealed with the
// ciphertext fingerprints that prove it current at arm time.
pub mod seal;

#[cfg(test)]
pub(crate) mod tests;
