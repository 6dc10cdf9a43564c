//! The baseline's free space, in chunks, from ext4's own block bitmaps.
//!
//! Why: a chunk the baseline filesystem does not use need not be copied
//! before the new system writes it (after a rollback the baseline does not
//! read it, so what it holds does not matter). The map is therefore a
//! promise that must never be wrong in one direction: a used block taken
//! for free loses baseline data at the rollback. Everything here errs the
//! other way:
//! - only a filesystem the superblock says was cleanly unmounted (valid,
//!   no errors, no journal to replay, no orphans) with every feature known
//!   is read at all; anything else is refused with the reason;
//! - a group whose bitmap is not initialised (`BLOCK_UNINIT`: a group no
//!   allocation has reached yet, most of a young filesystem) has only
//!   metadata in it: its superblock and descriptor copies (sparse_super,
//!   sparse_super2 rules), reserved GDT blocks, and any group's bitmaps and
//!   inode table placed in it. Those are counted used, the rest free, but
//!   only when that count gives exactly the free count its descriptor
//!   records; otherwise the group counts as wholly used. The blocks before
//!   the first data block and every byte past the filesystem's end are
//!   used;
//! - a bitmap whose count of free blocks disagrees with its group
//!   descriptor refuses the whole map (a torn or corrupt bitmap);
//! - a chunk is free only when every block in it is free.
//!
//! ext4 marks its own metadata (superblock copies, descriptors, reserved
//! GDT blocks, bitmaps, inode tables, with flex_bg wherever they were
//! placed) and the journal's blocks in the bitmaps, so a bitmap bit clear
//! means no inode and no metadata owns that block.

use super::{le16, le32, read, MapError, INCOMPAT_RECOVER, SUPER_OFFSET};
use crate::sys::blockdev::ReadAt;

const STATE_VALID: u16 = 0x1;
const STATE_ERROR: u16 = 0x2;
const BG_BLOCK_UNINIT: u16 = 0x2;
/// More block groups than any phone's userdata has (8 TiB with 4 KiB
/// blocks and the standard 32,768 blocks per group; 512 GiB with 1 KiB
/// blocks): refused rather than read, so that a corrupt block count cannot
/// make arming read and hold millions of descriptors. Memory for the map is
/// about 100 bytes per group.
pub const MAX_GROUPS: u64 = 1 << 16;

// ro_compat features this reader understands. bigalloc (bitmaps of
// clusters), snapshots, replicas and shared blocks change what a bit means;
// an orphan file with entries is an unfinished delete: all refused.
const RO_COMPAT_KNOWN: u32 = 0x1 // sparse_super
    | 0x2 // large_file
    | 0x4 // btree_dir
    | 0x8 // huge_file
    | 0x10 // gdt_csum
    | 0x20 // dir_nlink
    | 0x40 // extra_isize
    | 0x100 // quota
    | 0x400 // metadata_csum
    | 0x1000 // readonly
    | 0x2000 // project
    | 0x8000; // verity

/// Refused maps say why, for status and the history.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FreeMapError {
    #[error("the filesystem was not cleanly unmounted ({0}); the whole device is protected")]
    NotClean(String),
    #[error(transparent)]
    Parse(#[from] MapError),
    #[error("block group {group}: {problem}; the whole device is protected")]
    Group { group: u64, problem: String },
    #[error("chunk size {chunk_bytes} bytes is not a power-of-two multiple of 512")]
    Chunk { chunk_bytes: u64 },
}

/// Which chunks of the device the baseline leaves free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreeMap {
    pub chunk_bytes: u64,
    /// Chunks in the device (the last one may be partial: never free).
    pub chunks: u64,
    /// Runs of free chunks, `(first, count)`, sorted, disjoint, not
    /// adjacent (adjacent runs are merged).
    pub free_runs: Vec<(u64, u64)>,
}

impl FreeMap {
    pub fn free_chunks(&self) -> u64 {
        self.free_runs.iter().map(|r| r.1).sum()
    }

    pub fn is_free(&self, chunk: u64) -> bool {
        let i = self.free_runs.partition_point(|r| r.0 + r.1 <= chunk);
        self.free_runs.get(i).is_some_and(|r| r.0 <= chunk)
    }
}

/// Reads the free map of the ext4 filesystem on `src`, a device of
/// `device_bytes`, in chunks of `chunk_bytes`.
pub fn take(src: &dyn ReadAt, device_bytes: u64, chunk_bytes: u64) -> Result<FreeMap, FreeMapError> {
    if chunk_bytes < 512 || !chunk_bytes.is_power_of_two() {
        return Err(FreeMapError::Chunk { chunk_bytes });
    }
    let Geometry { sb, raw, blocks_per_group, groups } = Geometry::read(src, device_bytes)?;
    let fs_bytes = sb.blocks_count * sb.block_size;
    // Free block numbers as runs, built group by group.
    let mut free_blocks: Vec<(u64, u64)> = Vec::new();
    let descs = read_descs(src, &sb, groups)?;
    let layout = Layout::read(&raw, &sb, groups)?;
    let metadata = layout.metadata_ranges(&descs);
    for (g, desc) in descs.iter().enumerate() {
        let g = g as u64;
        let recorded_free = desc.free;
        if desc.flags & BG_BLOCK_UNINIT != 0 {
            let first = sb.first_data_block + g * blocks_per_group;
            let in_group = blocks_per_group.min(sb.blocks_count - first);
            let used = layout.uninit_group_used(g, first, in_group, &metadata);
            let used_count: u64 = used.iter().map(|r| r.1 - r.0).sum();
            if in_group.checked_sub(used_count) != Some(recorded_free) {
                // The layout rules do not explain this group: protect it.
                continue;
            }
            let mut at = first;
            for (a, b) in used {
                if a > at {
                    push_run(&mut free_blocks, at, a - at);
                }
                at = at.max(b);
            }
            if first + in_group > at {
                push_run(&mut free_blocks, at, first + in_group - at);
            }
            continue;
        }
        let bitmap_block = desc.block_bitmap;
        if bitmap_block < sb.first_data_block || bitmap_block >= sb.blocks_count {
            return Err(FreeMapError::Group { group: g, problem: format!("block bitmap at block {bitmap_block}") });
        }
        let bitmap = read(src, bitmap_block * sb.block_size, sb.block_size as usize)?;
        let first = sb.first_data_block + g * blocks_per_group;
        let in_group = blocks_per_group.min(sb.blocks_count - first);
        let mut counted = 0u64;
        for i in 0..in_group {
            if bitmap[(i / 8) as usize] & (1 << (i % 8)) == 0 {
                counted += 1;
                push_run(&mut free_blocks, first + i, 1);
            }
        }
        if counted != recorded_free {
            return Err(FreeMapError::Group {
                group: g,
                problem: format!("bitmap has {counted} free blocks, its descriptor says {recorded_free}"),
            });
        }
    }
    // Blocks -> chunks: a chunk is free only if it lies wholly inside the
    // filesystem and inside free blocks.
    let chunks = device_bytes.div_ceil(chunk_bytes);
    let mut free_runs = Vec::new();
    for (start, len) in free_blocks {
        let from = (start * sb.block_size).div_ceil(chunk_bytes);
        let to = ((start + len) * sb.block_size).min(fs_bytes).min(device_bytes) / chunk_bytes;
        if to > from {
            push_run(&mut free_runs, from, to - from);
        }
    }
    Ok(FreeMap { chunk_bytes, chunks, free_runs })
}

/// The superblock and the group count, checked as far as the map needs
/// before anything else is read.
struct Geometry {
    sb: super::Super,
    /// The superblock's 1024 bytes.
    raw: Vec<u8>,
    blocks_per_group: u64,
    groups: u64,
}

impl Geometry {
    fn read(src: &dyn ReadAt, device_bytes: u64) -> Result<Geometry, FreeMapError> {
        let sb = super::read_super(src)?;
        let raw = read(src, SUPER_OFFSET, 1024)?;
        check_clean(&raw)?;
        let blocks_per_group = u64::from(le32(&raw, 0x20));
        if blocks_per_group == 0 || blocks_per_group > 8 * sb.block_size {
            return Err(MapError::Layout(format!("{blocks_per_group} blocks per group")).into());
        }
        let fs_bytes = sb.blocks_count * sb.block_size;
        if fs_bytes > device_bytes {
            // A filesystem cannot be larger than its device: the superblock is
            // corrupt or belongs to something else.
            return Err(MapError::Layout(format!(
                "the filesystem ({fs_bytes} bytes) is larger than its device ({device_bytes} bytes)"
            ))
            .into());
        }
        let Some(data_blocks) = sb.blocks_count.checked_sub(sb.first_data_block).filter(|n| *n > 0) else {
            return Err(MapError::Layout(format!("{} blocks, none after the first data block", sb.blocks_count)).into());
        };
        let groups = data_blocks.div_ceil(blocks_per_group);
        if groups > MAX_GROUPS {
            return Err(MapError::Layout(format!("{groups} block groups (more than {MAX_GROUPS})")).into());
        }
        Ok(Geometry { sb, raw, blocks_per_group, groups })
    }
}

/// Where the filesystem on `src` records which blocks are allocated, as
/// `(byte offset, bytes)`: the superblock, the group descriptor table
/// (free counts, `BLOCK_UNINIT` flags, where each bitmap is) and the block
/// bitmap of every initialised group. What [`take`] reads is a function of
/// these bytes alone, so while they are unchanged the map is too (the
/// journal, which can hold allocation not yet written here, is the
/// caller's to add: a clean filesystem has nothing in it to replay).
pub fn allocation_ranges(src: &dyn ReadAt, device_bytes: u64) -> Result<Vec<(u64, u64)>, FreeMapError> {
    let Geometry { sb, groups, .. } = Geometry::read(src, device_bytes)?;
    let gdt_blocks = (groups * sb.desc_size).div_ceil(sb.block_size);
    let mut ranges =
        vec![(SUPER_OFFSET, 1024), ((sb.first_data_block + 1) * sb.block_size, gdt_blocks * sb.block_size)];
    for (g, desc) in read_descs(src, &sb, groups)?.iter().enumerate() {
        if desc.flags & BG_BLOCK_UNINIT != 0 {
            continue;
        }
        if desc.block_bitmap < sb.first_data_block || desc.block_bitmap >= sb.blocks_count {
            return Err(FreeMapError::Group {
                group: g as u64,
                problem: format!("block bitmap at block {}", desc.block_bitmap),
            });
        }
        ranges.push((desc.block_bitmap * sb.block_size, sb.block_size));
    }
    Ok(ranges)
}

fn check_clean(raw: &[u8]) -> Result<(), FreeMapError> {
    let state = le16(raw, 0x3A);
    if state & STATE_VALID == 0 {
        return Err(FreeMapError::NotClean("state not clean: mounted, or cut off while mounted".into()));
    }
    if state & STATE_ERROR != 0 {
        return Err(FreeMapError::NotClean("errors recorded; run e2fsck".into()));
    }
    if le32(raw, 0x60) & INCOMPAT_RECOVER != 0 {
        return Err(FreeMapError::NotClean("the journal needs recovery".into()));
    }
    // s_error_count: errors seen since the last e2fsck, even where the
    // state word was rewritten clean afterwards.
    if le32(raw, 0x194) != 0 {
        return Err(FreeMapError::NotClean("errors were recorded since the last fsck; run e2fsck".into()));
    }
    if le32(raw, 0xE8) != 0 {
        return Err(FreeMapError::NotClean("orphan inodes are pending".into()));
    }
    let ro = le32(raw, 0x64);
    if ro & !RO_COMPAT_KNOWN != 0 {
        return Err(MapError::Layout(format!(
            "read-only-compatible features {:#x} not understood",
            ro & !RO_COMPAT_KNOWN
        ))
        .into());
    }
    Ok(())
}

/// One group descriptor's fields the map needs.
struct Desc {
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
    flags: u16,
    free: u64,
}

impl Desc {
    fn parse(d: &[u8], desc_size: u64) -> Desc {
        let hi = |at: usize| if desc_size >= 64 { u64::from(le32(d, at)) << 32 } else { 0 };
        let hi16 = |at: usize| if desc_size >= 64 { u64::from(le16(d, at)) << 16 } else { 0 };
        Desc {
            block_bitmap: u64::from(le32(d, 0x00)) | hi(0x20),
            inode_bitmap: u64::from(le32(d, 0x04)) | hi(0x24),
            inode_table: u64::from(le32(d, 0x08)) | hi(0x28),
            flags: le16(d, 0x12),
            free: u64::from(le16(d, 0x0C)) | hi16(0x2C),
        }
    }
}

/// Where ext4 puts its metadata, for groups whose bitmaps were never
/// written (the same rules the kernel applies when it first initialises
/// such a bitmap, ext4_init_block_bitmap).
struct Layout {
    /// Superblock + descriptor blocks + reserved GDT blocks of a backup.
    backup_blocks: u64,
    sparse_super: bool,
    /// sparse_super2: backups only in these two groups (0: none).
    backup_bgs: Option<[u64; 2]>,
    inode_table_blocks: u64,
}

impl Layout {
    fn read(raw: &[u8], sb: &super::Super, groups: u64) -> Result<Layout, MapError> {
        const COMPAT_SPARSE_SUPER2: u32 = 0x200;
        const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
        let gdt_blocks = (groups * sb.desc_size).div_ceil(sb.block_size);
        let reserved_gdt = u64::from(le16(raw, 0xCE));
        let compat = le32(raw, 0x5C);
        let itable = (u64::from(sb.inodes_per_group) * sb.inode_size).div_ceil(sb.block_size);
        if itable == 0 {
            return Err(MapError::Layout("inode tables of zero blocks".into()));
        }
        Ok(Layout {
            backup_blocks: 1 + gdt_blocks + reserved_gdt,
            sparse_super: le32(raw, 0x64) & RO_COMPAT_SPARSE_SUPER != 0,
            backup_bgs: (compat & COMPAT_SPARSE_SUPER2 != 0)
                .then(|| [u64::from(le32(raw, 0x24C)), u64::from(le32(raw, 0x250))]),
            inode_table_blocks: itable,
        })
    }

    fn has_backup(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if let Some(bgs) = self.backup_bgs {
            return bgs.contains(&g);
        }
        if !self.sparse_super || g == 1 {
            return true;
        }
        [3u64, 5, 7].iter().any(|&base| {
            let mut p = base;
            while p < g {
                p *= base;
            }
            p == g
        })
    }

    /// Every group's bitmaps and inode table, as sorted, merged `[a, b)`
    /// block ranges: built once, so that each uninitialised group looks up
    /// what lies in it instead of scanning every descriptor (a filesystem
    /// of many uninitialised groups would otherwise cost groups squared).
    fn metadata_ranges(&self, descs: &[Desc]) -> Vec<(u64, u64)> {
        let mut ranges: Vec<(u64, u64)> = descs
            .iter()
            .flat_map(|d| [(d.block_bitmap, 1), (d.inode_bitmap, 1), (d.inode_table, self.inode_table_blocks)])
            .map(|(a, n)| (a, a.saturating_add(n)))
            .collect();
        merge_ranges(&mut ranges);
        ranges
    }

    /// The blocks of group `g` (`first`, `in_group` blocks) that hold
    /// metadata (its backup copies by the layout rules, and whatever part
    /// of `metadata`, from [`Layout::metadata_ranges`], lies in it), as
    /// sorted, merged `[a, b)` ranges.
    fn uninit_group_used(&self, g: u64, first: u64, in_group: u64, metadata: &[(u64, u64)]) -> Vec<(u64, u64)> {
        let end = first + in_group;
        let mut used = Vec::new();
        if self.has_backup(g) {
            used.push((first, (first + self.backup_blocks).min(end)));
        }
        // `metadata` is disjoint and sorted, so its ends are sorted too.
        let from = metadata.partition_point(|r| r.1 <= first);
        used.extend(metadata[from..].iter().take_while(|r| r.0 < end).map(|&(a, b)| (a.max(first), b.min(end))));
        merge_ranges(&mut used);
        used
    }
}

/// Sorts `[a, b)` ranges and merges the ones that overlap or touch.
fn merge_ranges(ranges: &mut Vec<(u64, u64)>) {
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for &(a, b) in ranges.iter() {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    *ranges = merged;
}

/// The group descriptor table (right after the superblock's block), read a
/// block at a time rather than a descriptor at a time.
fn read_descs(src: &dyn ReadAt, sb: &super::Super, groups: u64) -> Result<Vec<Desc>, MapError> {
    let table = (sb.first_data_block + 1) * sb.block_size;
    let per_block = sb.block_size / sb.desc_size;
    let mut descs = Vec::with_capacity(groups as usize);
    let mut block = 0u64;
    while (descs.len() as u64) < groups {
        let n = per_block.min(groups - descs.len() as u64);
        let bytes = read(src, table + block * sb.block_size, (n * sb.desc_size) as usize)?;
        descs.extend(bytes.chunks_exact(sb.desc_size as usize).map(|d| Desc::parse(d, sb.desc_size)));
        block += 1;
    }
    Ok(descs)
}

/// Appends `(start, len)`, merging it into the last run when they touch.
fn push_run(runs: &mut Vec<(u64, u64)>, start: u64, len: u64) {
    if let Some(last) = runs.last_mut() {
        if last.0 + last.1 == start {
            last.1 += len;
            return;
        }
    }
    runs.push((start, len));
}

#[cfg(test)]
mod tests {
    use super::super::tests::{debugfs, have_tools, mkfs, tool};
    use super::*;
    use std::collections::BTreeSet;
    use std::fs::File;
    use std::path::Path;
    use std::process::Command;

    fn tools_or_skip() -> bool {
        let ok = have_tools() && tool("dumpe2fs").exists();
        assert!(ok || std::env::var_os("CI").is_none(), "CI: mkfs.ext4, debugfs and dumpe2fs are needed");
        ok
    }

    /// Every block dumpe2fs lists as free, and the groups it marks
    /// BLOCK_UNINIT.
    fn dumpe2fs_free(img: &Path) -> (BTreeSet<u64>, usize) {
        let out = Command::new(tool("dumpe2fs")).arg(img).output().expect("dumpe2fs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        let mut free = BTreeSet::new();
        let mut uninit = 0;
        for line in text.lines() {
            if line.starts_with("Group ") && line.contains("BLOCK_UNINIT") {
                uninit += 1;
            }
            // Per group ("  Free blocks: a-b, c"), not the superblock's count.
            let Some(list) = line.strip_prefix("  Free blocks: ") else { continue };
            for part in list.split(", ").filter(|p| !p.is_empty()) {
                let (a, b) = part.split_once('-').unwrap_or((part, part));
                let (a, b): (u64, u64) = (a.parse().expect("block"), b.parse().expect("block"));
                free.extend(a..=b);
            }
        }
        (free, uninit)
    }

    fn blocks_free_in(map: &FreeMap, bs: u64) -> BTreeSet<u64> {
        assert_eq!(map.chunk_bytes, bs, "block-sized chunks in these checks");
        map.free_runs.iter().flat_map(|&(s, n)| s..s + n).collect()
    }

    fn tree(dir: &Path, files: usize, size: usize) -> std::path::PathBuf {
        let src = dir.join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        for i in 0..files {
            let sub = if i % 3 == 0 { src.join("sub") } else { src.clone() };
            std::fs::write(sub.join(format!("f{i}")), vec![(i % 251) as u8 + 1; size + i * 517]).unwrap();
        }
        src
    }

    /// The map against dumpe2fs: never a block free that dumpe2fs calls
    /// used; and outside BLOCK_UNINIT groups (counted used on purpose)
    /// exactly its free blocks.
    fn check_against_dumpe2fs(img: &Path, bs: u64) -> FreeMap {
        let f = File::open(img).unwrap();
        let len = f.metadata().unwrap().len();
        let map = take(&f, len, bs).unwrap_or_else(|e| panic!("{}: {e}", img.display()));
        let ours = blocks_free_in(&map, bs);
        let (truth, uninit) = dumpe2fs_free(img);
        let wrong: Vec<_> = ours.difference(&truth).take(5).collect();
        assert!(wrong.is_empty(), "blocks taken for free that dumpe2fs says are used: {wrong:?}");
        // libext2fs computes a BLOCK_UNINIT group's bitmap itself (its
        // metadata used, the rest free): the map must match it exactly,
        // uninitialised groups included.
        let missed: Vec<_> = truth.difference(&ours).take(5).collect();
        assert!(
            missed.is_empty(),
            "{}: free blocks the map protects ({uninit} uninit groups): {missed:?}",
            img.display()
        );
        EXACT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        UNINIT.fetch_add(uninit, std::sync::atomic::Ordering::Relaxed);
        map
    }

    #[test]
    fn the_free_map_matches_dumpe2fs_across_layouts() {
        if !tools_or_skip() {
            return;
        }
        for (bs, extra) in [
            ("4096", vec![]),
            ("1024", vec![]),
            ("4096", vec!["-O", "^flex_bg"]),
            ("1024", vec!["-O", "^flex_bg"]),
            ("4096", vec!["-E", "lazy_itable_init=1", "-O", "^metadata_csum,uninit_bg"]),
            ("2048", vec!["-O", "^resize_inode"]),
            ("1024", vec!["-O", "sparse_super2"]),
            ("1024", vec!["-O", "^sparse_super,^resize_inode"]),
            ("4096", vec!["-G", "4"]),
            // No group checksums: no BLOCK_UNINIT.
            ("4096", vec!["-O", "^metadata_csum,^uninit_bg"]),
            ("1024", vec!["-O", "^metadata_csum,^uninit_bg,^flex_bg"]),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let src = tree(dir.path(), 40, 9000);
            let img = dir.path().join("fs.img");
            let mut args = vec!["-b", bs];
            args.extend(extra.iter().copied());
            // Several groups at every block size (4 KiB: 128 MiB each).
            mkfs(&img, &src, &args, if bs == "4096" { "600M" } else { "64M" });
            let bsz: u64 = bs.parse().unwrap();
            let before = check_against_dumpe2fs(&img, bsz);
            // Deletes free blocks in the bitmaps: the map follows.
            for i in (1..40).step_by(4) {
                let path = if i % 3 == 0 { format!("/sub/f{i}") } else { format!("/f{i}") };
                debugfs(&img, true, &format!("rm {path}"));
            }
            let after = check_against_dumpe2fs(&img, bsz);
            assert!(after.free_chunks() > before.free_chunks(), "{bs} {extra:?}: deletes freed blocks");
        }
        assert!(EXACT.load(std::sync::atomic::Ordering::Relaxed) >= 22, "the exact comparison ran");
        assert!(UNINIT.load(std::sync::atomic::Ordering::Relaxed) > 10, "uninitialised groups were compared");
    }

    static EXACT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static UNINIT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    #[test]
    fn larger_chunks_are_free_only_when_every_block_in_them_is() {
        if !tools_or_skip() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let src = tree(dir.path(), 30, 5000);
        let img = dir.path().join("fs.img");
        mkfs(&img, &src, &["-b", "1024"], "32M");
        let f = File::open(&img).unwrap();
        let len = f.metadata().unwrap().len();
        let blocks = take(&f, len, 1024).unwrap();
        for chunk in [4096u64, 16384, 65536] {
            let map = take(&f, len, chunk).unwrap();
            let per = chunk / 1024;
            for c in 0..map.chunks {
                let all_free = (c * per..(c + 1) * per).all(|b| blocks.is_free(b));
                assert_eq!(map.is_free(c), all_free, "chunk {c} of {chunk} bytes");
            }
            assert!(map.free_chunks() > 0);
        }
        // A device larger than the filesystem: the tail is never free.
        let map = take(&f, len + (1 << 20), 4096).unwrap();
        assert!(!map.is_free(len / 4096) && !map.is_free(map.chunks - 1));
    }

    #[test]
    fn an_unclean_or_unknown_filesystem_gives_no_map_and_says_why() {
        if !tools_or_skip() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let src = tree(dir.path(), 3, 100);
        for (req, says) in [
            ("ssv state 0", "not cleanly unmounted"),
            ("ssv state 3", "errors recorded"),
            ("feature needs_recovery", "journal needs recovery"),
            ("ssv last_orphan 12", "orphan inodes"),
            ("ssv error_count 1", "errors were recorded"),
        ] {
            let img = dir.path().join("u.img");
            mkfs(&img, &src, &["-b", "4096"], "16M");
            debugfs(&img, true, req);
            let f = File::open(&img).unwrap();
            let e = take(&f, f.metadata().unwrap().len(), 4096).unwrap_err();
            assert!(matches!(e, FreeMapError::NotClean(_)) && e.to_string().contains(says), "{req}: {e}");
        }
        let img = dir.path().join("big.img");
        mkfs(&img, &src, &["-b", "4096", "-O", "bigalloc", "-C", "16384"], "32M");
        let f = File::open(&img).unwrap();
        let e = take(&f, f.metadata().unwrap().len(), 4096).unwrap_err();
        assert!(e.to_string().contains("not understood"), "bigalloc: {e}");
    }

    #[test]
    fn a_bitmap_that_disagrees_with_its_descriptor_refuses_the_map() {
        if !tools_or_skip() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let src = tree(dir.path(), 10, 3000);
        let img = dir.path().join("fs.img");
        mkfs(&img, &src, &["-b", "4096", "-O", "^metadata_csum,^uninit_bg"], "16M");
        // Clear a used bit in group 0's bitmap behind ext4's back: the
        // descriptor's free count no longer matches.
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&img).unwrap();
        let d = read(&f, 4096, 32).unwrap();
        let bitmap = u64::from(le32(&d, 0));
        use std::os::unix::fs::FileExt;
        let mut byte = [0u8; 1];
        f.read_exact_at(&mut byte, bitmap * 4096).unwrap();
        assert_ne!(byte[0], 0, "the first blocks are used");
        f.write_all_at(&[0u8], bitmap * 4096).unwrap();
        let e = take(&f, f.metadata().unwrap().len(), 4096).unwrap_err();
        assert!(matches!(e, FreeMapError::Group { group: 0, .. }), "{e}");
    }

    /// An uninitialised group whose descriptor's free count the layout
    /// rules do not explain (metadata where they do not expect it) is
    /// protected whole, not guessed at; the other groups keep their map.
    #[test]
    fn an_uninit_group_the_layout_does_not_explain_stays_protected() {
        if !tools_or_skip() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let src = tree(dir.path(), 10, 3000);
        let img = dir.path().join("fs.img");
        mkfs(&img, &src, &["-b", "1024"], "64M");
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&img).unwrap();
        let len = f.metadata().unwrap().len();
        let sb = super::super::read_super(&f).unwrap();
        let before = take(&f, len, 1024).unwrap();
        // The last group that is BLOCK_UNINIT: one block fewer free in its
        // descriptor than the rules give.
        let desc_at = |g: u64| 2048 + g * sb.desc_size;
        let groups = (sb.blocks_count - sb.first_data_block).div_ceil(8192);
        let g = (1..groups)
            .rev()
            .find(|&g| le16(&read(&f, desc_at(g), 32).unwrap(), 0x12) & BG_BLOCK_UNINIT != 0)
            .expect("an uninitialised group");
        let d = read(&f, desc_at(g), 32).unwrap();
        let free = le16(&d, 0x0C);
        use std::os::unix::fs::FileExt;
        f.write_all_at(&(free - 1).to_le_bytes(), desc_at(g) + 0x0C).unwrap();
        let after = take(&f, len, 1024).expect("still a map");
        let first = sb.first_data_block + g * 8192;
        let end = (first + 8192).min(sb.blocks_count);
        assert!((first..end).any(|b| before.is_free(b)), "group {g} was mapped free before");
        assert!((first..end).all(|b| !after.is_free(b)), "group {g} is protected whole");
        assert_eq!(after.free_chunks() + u64::from(free), before.free_chunks(), "only group {g} changed");
    }

    /// A superblock that claims more than its device holds, or so many
    /// groups that reading them would be the work of a corrupt count, is
    /// refused before a descriptor is read (a fuzzed image of this kind
    /// once made arming read 30 million descriptors).
    #[test]
    fn a_filesystem_larger_than_its_device_or_with_too_many_groups_is_refused() {
        if !tools_or_skip() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let src = tree(dir.path(), 4, 3000);
        let img = dir.path().join("fs.img");
        mkfs(&img, &src, &["-b", "4096"], "16M");
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&img).unwrap();
        let len = f.metadata().unwrap().len();
        take(&f, len, 4096).expect("the image as it is maps");
        let e = take(&f, len - 4096, 4096).unwrap_err();
        assert!(e.to_string().contains("larger than its device"), "{e}");
        // 2^32 - 1 blocks: 131,072 groups of 32,768 blocks.
        use std::os::unix::fs::FileExt;
        f.write_all_at(&u32::MAX.to_le_bytes(), SUPER_OFFSET + 0x04).unwrap();
        let e = take(&f, u64::MAX / 2, 4096).unwrap_err();
        assert!(e.to_string().contains(&format!("more than {MAX_GROUPS}")), "{e}");
    }

    #[test]
    fn chunk_sizes_must_be_powers_of_two() {
        let empty: &[u8] = &[];
        struct Nothing<'a>(&'a [u8]);
        impl ReadAt for Nothing<'_> {
            fn read_at_exact(&self, _buf: &mut [u8], _offset: u64) -> std::io::Result<()> {
                Err(std::io::Error::other(format!("no data ({})", self.0.len())))
            }
        }
        assert!(matches!(take(&Nothing(empty), 1 << 20, 3000), Err(FreeMapError::Chunk { .. })));
        assert!(matches!(take(&Nothing(empty), 1 << 20, 256), Err(FreeMapError::Chunk { .. })));
    }
}
