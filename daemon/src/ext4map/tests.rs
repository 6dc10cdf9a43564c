//! The parser against real ext4 images (mkfs.ext4 -d), with debugfs as the
//! truth for inode locations and extent trees.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;
use std::fs::File;
use std::os::unix::fs::FileExt;

pub(crate) fn have_tools() -> bool {
    ["mkfs.ext4", "debugfs"].iter().all(|t| {
        Command::new(t).arg("-V").output().is_ok()
            || ["/sbin", "/usr/sbin"].iter().any(|d| Path::new(d).join(t).exists())
    })
}

pub(crate) fn tool(name: &str) -> PathBuf {
    for d in ["/usr/sbin", "/sbin"] {
        let p = Path::new(d).join(name);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(name)
}

pub(crate) fn mkfs(img: &Path, dir: &Path, extra: &[&str], size: &str) {
    let out = Command::new(tool("mkfs.ext4"))
        .args(["-F", "-q"])
        .args(extra)
        .arg("-d")
        .arg(dir)
        .arg(img)
        .arg(size)
        .output()
        .expect("run mkfs.ext4");
    assert!(out.status.success(), "mkfs.ext4: {}", String::from_utf8_lossy(&out.stderr));
}

pub(crate) fn debugfs(img: &Path, write: bool, req: &str) -> String {
    let mut c = Command::new(tool("debugfs"));
    if write {
        c.arg("-w");
    }
    let out = c.arg("-R").arg(req).arg(img).output().expect("run debugfs");
    assert!(out.status.success(), "debugfs {req}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The inode number debugfs reports for `path`.
fn ino_of(img: &Path, path: &str) -> u64 {
    let s = debugfs(img, false, &format!("stat {path}"));
    s.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no inode in {s}"))
}

/// debugfs imap: "located at block B, offset 0xO" as a byte offset.
fn imap_offset(img: &Path, path: &str, bs: u64) -> u64 {
    let s = debugfs(img, false, &format!("imap {path}"));
    let at = s.split("located at block ").nth(1).expect("imap output");
    let block: u64 = at.split(',').next().and_then(|b| b.trim().parse().ok()).expect("block");
    let off = at.split("offset 0x").nth(1).map(|o| o.trim()).expect("offset");
    block * bs + u64::from_str_radix(off, 16).expect("hex offset")
}

/// debugfs stat's EXTENTS: (tree blocks, merged byte extents).
fn debugfs_extents(img: &Path, path: &str, bs: u64) -> (Vec<u64>, Vec<Extent>) {
    let s = debugfs(img, false, &format!("stat {path}"));
    let body = s.split("EXTENTS:").nth(1).expect("an extent list").trim();
    let mut tree = Vec::new();
    let mut ext: Vec<Extent> = Vec::new();
    for item in body.split(", ") {
        let (l, p) = item.trim().split_once("):").expect("(logical):physical");
        let l = l.trim_start_matches('(');
        let p: Vec<u64> = p.split('-').map(|x| x.trim().parse().expect("block")).collect();
        if l.starts_with("ETB") {
            tree.push(p[0]);
            continue;
        }
        let l0: u64 = l.split('-').next().and_then(|x| x.parse().ok()).expect("logical");
        let n = p.last().expect("physical") - p[0] + 1;
        let (l0, p0, n) = (l0 * bs, p[0] * bs, n * bs);
        match ext.last_mut() {
            Some(e) if e.logical + e.length == l0 && e.physical + e.length == p0 => e.length += n,
            _ => ext.push(Extent { logical: l0, physical: p0, length: n }),
        }
    }
    (tree, ext)
}

fn poke(img: &Path, offset: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(img).expect("open image");
    f.write_all_at(bytes, offset).expect("write image");
}

fn open(img: &Path) -> File {
    File::open(img).expect("open image")
}

/// An image with one contiguous 1 MiB file `a` (depth 0) and a few small
/// neighbours (their inodes share `a`'s inode table block).
fn simple(dir: &Path, bs: &str) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("a"), vec![7u8; 1 << 20]).expect("write a");
    for i in 0..4 {
        std::fs::write(src.join(format!("n{i}")), b"neighbour").expect("write n");
    }
    let img = dir.join("img");
    mkfs(&img, &src, &["-b", bs], "16M");
    img
}

/// An image where `big` is written into the holes left by deleting every
/// other one of `files` 4 KiB files: one extent per hole, so an index tree.
/// 200 files and 2 MB: about a hundred extents (depth 1); 4000 files and
/// 8.4 MB: about two thousand (depth 2).
fn fragmented_with(dir: &Path, files: u32, big_len: usize, size: &str, inodes: &str) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    for i in 0..files {
        std::fs::write(src.join(format!("f{i}")), i.to_le_bytes().repeat(1024)).expect("write f");
    }
    let img = dir.join("img");
    mkfs(&img, &src, &["-b", "4096", "-N", inodes], size);
    let mut cmds = String::new();
    for i in (0..files).step_by(2) {
        cmds.push_str(&format!("rm f{i}\n"));
    }
    let big = dir.join("big");
    // Not zeroes: debugfs would leave holes.
    let data: Vec<u8> = (0..big_len).map(|i| (i % 251) as u8 | 1).collect();
    std::fs::write(&big, data).expect("write big");
    cmds.push_str(&format!("write {} big\n", big.display()));
    let script = dir.join("cmds");
    std::fs::write(&script, cmds).expect("write cmds");
    let out = Command::new(tool("debugfs")).arg("-w").arg("-f").arg(&script).arg(&img).output().expect("debugfs -f");
    assert!(out.status.success());
    img
}

fn fragmented(dir: &Path) -> PathBuf {
    fragmented_with(dir, 200, 2_000_000, "8M", "2048")
}

macro_rules! need_tools {
    () => {
        if !have_tools() {
            eprintln!("mkfs.ext4/debugfs not installed; skipped");
            return;
        }
    };
}

#[test]
fn depth_zero_file_matches_debugfs() {
    need_tools!();
    for bs in ["4096", "1024"] {
        let dir = tempfile::tempdir().expect("tmp");
        let img = simple(dir.path(), bs);
        let bsz: u64 = bs.parse().expect("bs");
        let ino = ino_of(&img, "a");
        let m = map_inode(&open(&img), ino, 1 << 20).expect("map");
        assert_eq!(m.inode_offset, imap_offset(&img, "a", bsz), "block size {bs}");
        let (tree, ext) = debugfs_extents(&img, "a", bsz);
        assert!(tree.is_empty());
        assert!(m.tree_blocks.is_empty());
        assert_eq!(m.extents, ext, "block size {bs}");
        assert_eq!(m.regions(), vec![(m.inode_offset + 0x10, 0x60)]);
        // The inode region is whole 16-byte (AES) blocks.
        assert_eq!((m.inode_offset + 0x10) % 16, 0);
    }
}

#[test]
fn depth_one_tree_matches_debugfs() {
    need_tools!();
    let dir = tempfile::tempdir().expect("tmp");
    let img = fragmented(dir.path());
    let ino = ino_of(&img, "big");
    let m = map_inode(&open(&img), ino, 2_000_000).expect("map");
    let (tree, ext) = debugfs_extents(&img, "big", 4096);
    assert!(!tree.is_empty(), "the fixture must have an index tree");
    assert_eq!(m.tree_blocks, tree);
    assert!(m.extents.len() > 4, "more extents than i_block holds: {}", m.extents.len());
    // The last block is partly past the end of the file: clipped, as
    // FIEMAP's list is (fiemap::cover).
    let ext = crate::fiemap::cover(&ext, 2_000_000, Path::new("big")).expect("debugfs covers the file");
    assert_eq!(m.extents, ext);
    assert_eq!(m.inode_offset, imap_offset(&img, "big", 4096));
    let regions = m.regions();
    assert_eq!(regions.len(), 1 + tree.len());
    assert_eq!(regions[1], (tree[0] * 4096, 4096));
}

#[test]
fn depth_two_tree_matches_debugfs() {
    need_tools!();
    let dir = tempfile::tempdir().expect("tmp");
    let img = fragmented_with(dir.path(), 4000, 8_400_000, "40M", "8192");
    let ino = ino_of(&img, "big");
    let m = map_inode(&open(&img), ino, 8_400_000).expect("map");
    let (tree, ext) = debugfs_extents(&img, "big", 4096);
    let s = debugfs(&img, false, "stat big");
    assert!(s.contains("(ETB1)"), "the fixture must have a depth-2 tree");
    assert_eq!(m.tree_blocks, tree);
    let ext = crate::fiemap::cover(&ext, 8_400_000, Path::new("big")).expect("debugfs covers the file");
    assert!(ext.len() > 340 * 4, "{} extents", ext.len());
    assert_eq!(m.extents, ext);
}

#[test]
fn refuses_what_it_does_not_understand() {
    need_tools!();
    let dir = tempfile::tempdir().expect("tmp");
    let img = simple(dir.path(), "4096");
    let ino = ino_of(&img, "a");
    let size = 1 << 20;
    let m = map_inode(&open(&img), ino, size).expect("map");
    // Wrong size, a directory, inode 0 and past the end.
    assert!(matches!(map_inode(&open(&img), ino, size + 4096), Err(MapError::Inode { .. })));
    assert!(matches!(map_inode(&open(&img), 2, 4096), Err(MapError::Inode { .. })));
    assert!(matches!(map_inode(&open(&img), 0, size), Err(MapError::Inode { .. })));
    assert!(matches!(map_inode(&open(&img), 1 << 31, size), Err(MapError::Inode { .. })));

    // An uninitialised extent (ee_len + 32768 in the first leaf entry).
    let first = m.inode_offset + 0x28 + 12;
    let mut e = [0u8; 2];
    open(&img).read_exact_at(&mut e, first + 4).expect("read ee_len");
    poke(&img, first + 4, &(u16::from_le_bytes(e) + 32768).to_le_bytes());
    assert!(matches!(map_inode(&open(&img), ino, size), Err(MapError::Tree { .. })));
    poke(&img, first + 4, &e);
    map_inode(&open(&img), ino, size).expect("restored");

    // A corrupted extent header (magic; then entries > max).
    poke(&img, m.inode_offset + 0x28, &[0, 0]);
    assert!(matches!(map_inode(&open(&img), ino, size), Err(MapError::Tree { .. })));
    poke(&img, m.inode_offset + 0x28, &EXTENT_MAGIC.to_le_bytes());
    poke(&img, m.inode_offset + 0x28 + 2, &9u16.to_le_bytes());
    assert!(matches!(map_inode(&open(&img), ino, size), Err(MapError::Tree { .. })));
    poke(&img, m.inode_offset + 0x28 + 2, &1u16.to_le_bytes());
    map_inode(&open(&img), ino, size).expect("restored");

    // Not an extent inode.
    let mut fl = [0u8; 4];
    open(&img).read_exact_at(&mut fl, m.inode_offset + 0x20).expect("flags");
    poke(&img, m.inode_offset + 0x20, &(u32::from_le_bytes(fl) & !EXTENTS_FL).to_le_bytes());
    assert!(matches!(map_inode(&open(&img), ino, size), Err(MapError::Inode { .. })));
    poke(&img, m.inode_offset + 0x20, &fl);

    // Bad superblock magic.
    poke(&img, 1024 + 0x38, &[0, 0]);
    assert_eq!(map_inode(&open(&img), ino, size), Err(MapError::Magic(0)));
    poke(&img, 1024 + 0x38, &EXT4_MAGIC.to_le_bytes());
    map_inode(&open(&img), ino, size).expect("restored");

    // A short device.
    let short = dir.path().join("short");
    std::fs::write(&short, vec![0u8; 1500]).expect("short");
    assert!(matches!(map_inode(&open(&short), ino, size), Err(MapError::Read { .. })));
}

#[test]
fn refuses_a_corrupt_index_block() {
    need_tools!();
    let dir = tempfile::tempdir().expect("tmp");
    let img = fragmented(dir.path());
    let ino = ino_of(&img, "big");
    let m = map_inode(&open(&img), ino, 2_000_000).expect("map");
    let leaf = m.tree_blocks[0] * 4096;
    // The leaf claims to be an index node (depth 1 below a depth-1 root).
    poke(&img, leaf + 6, &1u16.to_le_bytes());
    assert!(matches!(map_inode(&open(&img), ino, 2_000_000), Err(MapError::Tree { .. })));
    poke(&img, leaf + 6, &0u16.to_le_bytes());
    poke(&img, leaf, &[0x0A, 0xF4]);
    assert!(matches!(map_inode(&open(&img), ino, 2_000_000), Err(MapError::Tree { .. })));
    poke(&img, leaf, &EXTENT_MAGIC.to_le_bytes());
    map_inode(&open(&img), ino, 2_000_000).expect("restored");
    // The root's index entry points past the filesystem, then at block 0.
    let ei_leaf = m.inode_offset + 0x28 + 12 + 4;
    poke(&img, ei_leaf, &0x00FF_FFFFu32.to_le_bytes());
    assert!(matches!(map_inode(&open(&img), ino, 2_000_000), Err(MapError::Tree { .. })));
    poke(&img, ei_leaf, &0u32.to_le_bytes());
    assert!(matches!(map_inode(&open(&img), ino, 2_000_000), Err(MapError::Tree { .. })));
}

#[test]
fn refuses_meta_bg_and_non_extent_filesystems() {
    need_tools!();
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("a"), b"x").expect("write");
    let img = dir.path().join("meta");
    mkfs(&img, &src, &["-b", "4096", "-O", "meta_bg,^resize_inode"], "16M");
    assert!(matches!(read_super(&open(&img)), Err(MapError::Layout(m)) if m.contains("meta_bg")));
    let img = dir.path().join("noext");
    mkfs(&img, &src, &["-b", "4096", "-O", "^extent,^64bit,^flex_bg"], "16M");
    assert!(matches!(read_super(&open(&img)), Err(MapError::Layout(_))));
}

#[test]
fn fingerprint_sees_the_map_and_not_its_neighbours() {
    need_tools!();
    let dir = tempfile::tempdir().expect("tmp");
    let img = fragmented(dir.path());
    let ino = ino_of(&img, "big");
    let m = map_inode(&open(&img), ino, 2_000_000).expect("map");
    let rec = fingerprint(&open(&img), &m.regions()).expect("fingerprint");
    assert_eq!(first_change(&open(&img), &rec), Ok(None));

    let sb = read_super(&open(&img)).expect("super");
    let inode_size = sb.inode_size;
    // Benign: every other inode of the same block (the image's neighbours
    // are files f1, f3...), and our own atime/ctime and checksum fields.
    let block = m.inode_offset / 4096 * 4096;
    for off in (block..block + 4096).step_by(inode_size as usize) {
        if off != m.inode_offset {
            poke(&img, off, &vec![0xA5; inode_size as usize]);
        }
    }
    poke(&img, m.inode_offset + 0x08, &[1, 2, 3, 4, 5, 6, 7, 8]);
    poke(&img, m.inode_offset + 0x7C, &[9, 9]);
    assert_eq!(first_change(&open(&img), &rec), Ok(None), "neighbours and atime/ctime are not the map");

    // The inode's map fields: mtime (first byte of the region), i_block,
    // size_high (last bytes).
    for at in [0x10u64, 0x2C, 0x6C] {
        let mut b = [0u8; 1];
        open(&img).read_exact_at(&mut b, m.inode_offset + at).expect("read");
        poke(&img, m.inode_offset + at, &[b[0] ^ 1]);
        assert!(matches!(first_change(&open(&img), &rec), Ok(Some((0, _)))), "inode byte {at:#x}");
        poke(&img, m.inode_offset + at, &b);
    }
    // One byte anywhere in the index block.
    let leaf = m.tree_blocks[0] * 4096 + 4000;
    poke(&img, leaf, &[0xFF]);
    assert!(matches!(first_change(&open(&img), &rec), Ok(Some((1, _)))));
}

/// A device in memory (the fuzz target's view of a raw partition).
pub(crate) struct Mem(pub(crate) Vec<u8>);

impl ReadAt for Mem {
    fn read_at_exact(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        let src =
            self.0.get(start..start + buf.len()).ok_or(std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A 64bit, 1 KiB-block superblock (at byte 1024) with `blocks` blocks and
/// 32 inodes in one group, whose descriptor (block 2) puts the inode table
/// at block `table`.
fn tiny_64bit_image(blocks: u64, table: u64) -> Mem {
    let mut img = vec![0u8; 4096];
    let sb = 1024;
    let put32 = |img: &mut Vec<u8>, at: usize, v: u32| img[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put32(&mut img, sb, 32); // s_inodes_count
    put32(&mut img, sb + 0x04, blocks as u32);
    put32(&mut img, sb + 0x14, 1); // s_first_data_block (1 KiB blocks)
    put32(&mut img, sb + 0x28, 32); // s_inodes_per_group
    img[sb + 0x38..sb + 0x3A].copy_from_slice(&EXT4_MAGIC.to_le_bytes());
    put32(&mut img, sb + 0x4C, 1); // s_rev_level
    img[sb + 0x58..sb + 0x5A].copy_from_slice(&256u16.to_le_bytes());
    put32(&mut img, sb + 0x60, INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG);
    img[sb + 0xFE..sb + 0x100].copy_from_slice(&64u16.to_le_bytes());
    put32(&mut img, sb + 0x150, (blocks >> 32) as u32);
    put32(&mut img, 2048 + 0x08, table as u32);
    put32(&mut img, 2048 + 0x28, (table >> 32) as u32);
    Mem(img)
}

/// Found by the ext4_map fuzzer: a superblock claiming ~2^63 blocks and an
/// inode table near the end made the inode's byte offset overflow (a panic
/// in debug builds, a wrapped offset, read as the inode, in release). Such
/// a filesystem is refused whole.
#[test]
fn filesystem_larger_than_64_bits_of_bytes_is_refused() {
    let img = tiny_64bit_image(0xcaca_caca_0000_1000, 0xcaca_caca_0000_0fff);
    match read_super(&img) {
        Err(MapError::Layout(p)) => assert!(p.contains("overflow"), "{p}"),
        other => panic!("expected a layout refusal, got {other:?}"),
    }
    assert!(matches!(map_inode(&img, 12, 0), Err(MapError::Layout(_))));
    // The largest size that fits still parses.
    let ok = tiny_64bit_image(u64::MAX / 1024, 3);
    assert_eq!(read_super(&ok).expect("fits").blocks_count, u64::MAX / 1024);
}

/// An inode table so close to the end that the inode itself would lie
/// past the filesystem is refused with the inode's number.
#[test]
fn inode_past_the_end_of_the_filesystem_is_refused() {
    let img = tiny_64bit_image(100, 99);
    let sb = read_super(&img).expect("super");
    // Inode 4 ends at the last byte of block 99; inode 5 would start past it.
    assert_eq!(inode_offset(&img, &sb, 4), Ok(99 * 1024 + 3 * 256));
    match inode_offset(&img, &sb, 5) {
        Err(MapError::Inode { ino: 5, problem }) => assert!(problem.contains("outside the filesystem"), "{problem}"),
        other => panic!("expected an inode refusal, got {other:?}"),
    }
}
