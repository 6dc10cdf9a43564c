//! Block-level witnesses of the COW store: filefrag's view of a file's
//! extents, and the host's hash of every block of the userdata image that
//! the baseline filesystem uses, the store's own blocks excepted (a
//! rollback must restore each of them; blocks the baseline leaves free may
//! keep a failed attempt's bytes, as deleted data does).

use std::io::Read;
use std::path::{Path, PathBuf};

use rewind_daemon::state::CowFile;
use sha2::{Digest, Sha256};

use crate::target::io_err;

use super::super::{Ctx, ScenarioError};

/// `filefrag -v -b4096` rows as (logical, physical, length) in blocks,
/// contiguous rows merged.
pub fn parse_filefrag(text: &str) -> Vec<(u64, u64, u64)> {
    let mut out: Vec<(u64, u64, u64)> = Vec::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split(':').map(str::trim).collect();
        if cols.len() < 4 || cols[0].parse::<u64>().is_err() {
            continue;
        }
        let l = cols[1].split("..").next().and_then(|s| s.trim().parse::<u64>().ok());
        let p = cols[2].split("..").next().and_then(|s| s.trim().parse::<u64>().ok());
        let n = cols[3].parse::<u64>().ok();
        if let (Some(l), Some(p), Some(n)) = (l, p, n) {
            match out.last_mut() {
                Some(x) if x.0 + x.2 == l && x.1 + x.2 == p => x.2 += n,
                _ => out.push((l, p, n)),
            }
        }
    }
    out
}

/// The userdata disk image of a QEMU guest (read while it is stopped).
pub fn userdata_image(cx: &Ctx) -> PathBuf {
    cx.target.artifacts_dir().join("userdata.img")
}

/// Byte ranges the ext4 filesystem in `image` leaves free, as the host's
/// dumpe2fs lists them: e2fsprogs, not rewind's own bitmap reader, which
/// decides what is mapped linear and so must not also be the judge.
pub fn ext4_free_ranges(image: &Path) -> Result<Vec<(u64, u64)>, ScenarioError> {
    let tool = e2fs_tool("dumpe2fs");
    let out = std::process::Command::new(&tool)
        .arg(image)
        .output()
        .map_err(|e| ScenarioError::other(format!("{}: {e} (install e2fsprogs)", tool.display())))?;
    if !out.status.success() {
        return Err(ScenarioError::other(format!(
            "dumpe2fs {}: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    parse_dumpe2fs_free(&String::from_utf8_lossy(&out.stdout))
}

/// An e2fsprogs tool: in /usr/sbin or /sbin (often not on a user's PATH),
/// else by name.
fn e2fs_tool(name: &str) -> PathBuf {
    ["/usr/sbin", "/sbin"].iter().map(|d| Path::new(d).join(name)).find(|p| p.exists()).unwrap_or_else(|| name.into())
}

/// The per-group "Free blocks:" lists of dumpe2fs, as byte ranges.
pub fn parse_dumpe2fs_free(text: &str) -> Result<Vec<(u64, u64)>, ScenarioError> {
    let bs: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| ScenarioError::other("dumpe2fs printed no block size"))?;
    let mut out = Vec::new();
    for list in text.lines().filter_map(|l| l.strip_prefix("  Free blocks: ")) {
        for part in list.split(", ").map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b): (u64, u64) = match (a.parse(), b.parse()) {
                (Ok(a), Ok(b)) if a <= b => (a, b),
                _ => return Err(ScenarioError::other(format!("dumpe2fs free range {part:?}"))),
            };
            out.push((a * bs, (b + 1) * bs));
        }
    }
    Ok(out)
}

/// What a rollback must restore, fixed from the baseline image: every
/// block its filesystem uses except the COW files' (they hold the store's
/// own data, which is not userdata).
pub struct BaselineBlocks {
    skip: Vec<(u64, u64)>,
    pub skipped_free_bytes: u64,
}

impl BaselineBlocks {
    pub fn of(image: &Path, cow: &[CowFile]) -> Result<BaselineBlocks, ScenarioError> {
        let free = ext4_free_ranges(image)?;
        let skipped_free_bytes = free.iter().map(|(a, b)| b - a).sum();
        let mut skip: Vec<(u64, u64)> =
            cow.iter().flat_map(|f| f.extents.iter().map(|e| (e.physical, e.physical + e.length))).collect();
        skip.extend(free);
        Ok(BaselineBlocks { skip, skipped_free_bytes })
    }

    /// One digest per 4 KiB block of `image`, the skipped ranges zeroed:
    /// equal digests are equal images here, and unequal ones say which
    /// blocks differ, so a failed rollback names what it left behind.
    pub fn digest(&self, image: &Path) -> Result<BlockDigest, ScenarioError> {
        let mut sums = Vec::new();
        read_skipping(image, &self.skip, &mut |buf| {
            for block in buf.chunks(DIGEST_BLOCK as usize) {
                let d = Sha256::digest(block);
                let mut x = [0u8; 16];
                x.copy_from_slice(&d[..16]);
                sums.push(u128::from_le_bytes(x));
            }
        })?;
        Ok(BlockDigest { sums })
    }

    /// `image` against the digests taken `before`: `None` when every block
    /// is back, else which blocks differ and what owns them.
    pub fn compare(&self, before: &BlockDigest, image: &Path) -> Result<Option<String>, ScenarioError> {
        let runs = before.differing(&self.digest(image)?);
        Ok((!runs.is_empty()).then(|| describe_differing(image, &runs)))
    }
}

/// Checks (as `name`) that the stopped guest's userdata image has every
/// block of `before` back, naming the blocks that differ if not.
pub fn check_blocks_restored(
    cx: &mut Ctx,
    name: &str,
    used: &BaselineBlocks,
    before: &BlockDigest,
) -> Result<(), ScenarioError> {
    let diff = used.compare(before, &userdata_image(cx))?;
    cx.check(name, diff.is_none(), diff.map_or_else(|| "equal".to_string(), |d| format!("differ: {d}")));
    Ok(())
}

/// The block size of [`BlockDigest`]: ext4's on these images.
pub const DIGEST_BLOCK: u64 = 4096;

/// Per-block digests of an image (see [`BaselineBlocks::digest`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDigest {
    sums: Vec<u128>,
}

impl BlockDigest {
    /// The runs of blocks (first, count) whose digests differ; a block
    /// only one side has counts as differing.
    pub fn differing(&self, other: &BlockDigest) -> Vec<(u64, u64)> {
        let n = self.sums.len().max(other.sums.len());
        let mut out: Vec<(u64, u64)> = Vec::new();
        for i in 0..n {
            if self.sums.get(i) == other.sums.get(i) {
                continue;
            }
            match out.last_mut() {
                Some((first, count)) if *first + *count == i as u64 => *count += 1,
                _ => out.push((i as u64, 1)),
            }
        }
        out
    }
}

/// `runs` (from [`BlockDigest::differing`]) for a report: the first few
/// runs, how many blocks in all, and what e2fsprogs says owns the first
/// blocks (`debugfs icheck`: an inode, or none for the filesystem's own
/// metadata such as bitmaps, inode tables and the journal's superblock).
fn describe_differing(image: &Path, runs: &[(u64, u64)]) -> String {
    let total: u64 = runs.iter().map(|r| r.1).sum();
    let shown: Vec<String> =
        runs.iter().take(12).map(|(a, n)| if *n == 1 { a.to_string() } else { format!("{a}-{}", a + n - 1) }).collect();
    let more = if runs.len() > 12 { format!(" and {} more runs", runs.len() - 12) } else { String::new() };
    let firsts: Vec<String> = runs.iter().take(12).map(|r| r.0.to_string()).collect();
    let owners = std::process::Command::new(e2fs_tool("debugfs"))
        .arg("-R")
        .arg(format!("icheck {}", firsts.join(" ")))
        .arg(image)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .skip(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|e| format!("debugfs: {e}"));
    format!(
        "{total} block(s) of {DIGEST_BLOCK} bytes differ in {} run(s): {}{more}; owners (block inode): {owners}",
        runs.len(),
        shown.join(", ")
    )
}

/// sha256 of the userdata image with the COW files' blocks zeroed.
pub fn image_hash_outside(image: &Path, cow: &[CowFile]) -> Result<String, ScenarioError> {
    let ranges: Vec<(u64, u64)> =
        cow.iter().flat_map(|f| f.extents.iter().map(|e| (e.physical, e.physical + e.length))).collect();
    image_hash_skipping(image, &ranges)
}

/// sha256 of `image` with the byte ranges `skip` zeroed.
fn image_hash_skipping(image: &Path, skip: &[(u64, u64)]) -> Result<String, ScenarioError> {
    let mut h = Sha256::new();
    read_skipping(image, skip, &mut |buf| h.update(buf))?;
    Ok(hex::encode(h.finalize()))
}

/// Feeds `image` to `eat` in whole 4 KiB blocks (the tail as it is), the
/// byte ranges `skip` zeroed.
fn read_skipping(image: &Path, skip: &[(u64, u64)], eat: &mut dyn FnMut(&[u8])) -> Result<(), ScenarioError> {
    let mut ranges = skip.to_vec();
    ranges.sort_unstable();
    let mut f = std::fs::File::open(image).map_err(io_err(image))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    loop {
        // Fill the buffer (short reads happen), so blocks never straddle.
        let mut n = 0;
        while n < buf.len() {
            let got = f.read(&mut buf[n..]).map_err(io_err(image))?;
            if got == 0 {
                break;
            }
            n += got;
        }
        if n == 0 {
            break;
        }
        for (a, b) in &ranges {
            let (s, e) = ((*a).max(pos), (*b).min(pos + n as u64));
            if s < e {
                buf[(s - pos) as usize..(e - pos) as usize].fill(0);
            }
        }
        eat(&buf[..n]);
        pos += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_daemon::fiemap::Extent;

    #[test]
    fn filefrag_rows_merge_where_contiguous() {
        let text = "Filesystem type is: ef53\nFile size of f is 16384 (4 blocks of 4096 bytes)\n \
                    ext:     logical_offset:        physical_offset: length:   expected: flags:\n   \
                    0:        0..       1:      34816..     34817:      2:            \n   \
                    1:        2..       3:      34818..     34819:      2:             last,eof\n   \
                    2:        4..       4:      40000..     40000:      1:      34820: last,eof\n";
        assert_eq!(parse_filefrag(text), vec![(0, 34816, 4), (4, 40000, 1)]);
    }

    #[test]
    fn image_hash_ignores_exactly_the_cow_blocks() {
        let dir = tempfile::tempdir().expect("tmp");
        let img = dir.path().join("userdata.img");
        std::fs::write(&img, vec![7u8; 3 << 20]).expect("write");
        let cow = |physical, length| CowFile {
            path: "/data/rewind/cow.0000".into(),
            size_bytes: length,
            extents: vec![Extent { logical: 0, physical, length }],
            fingerprint: Vec::new(),
            inode: 0,
        };
        let store = [cow(1 << 20, 4096)];
        let before = image_hash_outside(&img, &store).expect("hash");
        // A write inside the store's blocks: same hash; outside: another.
        let mut bytes = std::fs::read(&img).expect("read");
        bytes[(1 << 20) + 10] = 0;
        std::fs::write(&img, &bytes).expect("write");
        assert_eq!(image_hash_outside(&img, &store).expect("hash"), before);
        bytes[(1 << 20) + 4096] = 0;
        std::fs::write(&img, &bytes).expect("write");
        assert_ne!(image_hash_outside(&img, &store).expect("hash"), before);
        assert!(image_hash_outside(&dir.path().join("missing.img"), &store).is_err());
    }

    #[test]
    fn dumpe2fs_free_lists_become_byte_ranges() {
        let text = "Block size:               1024\nGroup 0: (Blocks 1-8192)\n  Free blocks: 10-12, 20\n\
                    Group 1: (Blocks 8193-16384)\n  Free blocks: \n";
        assert_eq!(parse_dumpe2fs_free(text).expect("parse"), vec![(10240, 13312), (20480, 21504)]);
        assert!(parse_dumpe2fs_free("  Free blocks: 1-2\n").is_err(), "no block size");
        assert!(parse_dumpe2fs_free("Block size: 4096\n  Free blocks: 5-2\n").is_err());
    }

    /// A real image: writes into a block dumpe2fs lists as free leave the
    /// hash alone; a write into a used block (the superblock) changes it.
    #[test]
    fn baseline_blocks_hash_skips_exactly_the_free_blocks() {
        let mkfs = ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"].into_iter().find(|p| Path::new(p).exists());
        let Some(mkfs) = mkfs else {
            assert!(std::env::var_os("CI").is_none(), "CI: e2fsprogs is needed");
            return;
        };
        let dir = tempfile::tempdir().expect("tmp");
        let img = dir.path().join("fs.img");
        let ok = std::process::Command::new(mkfs)
            .args(["-F", "-q", "-b", "4096"])
            .arg(&img)
            .arg("8M")
            .status()
            .expect("mkfs");
        assert!(ok.success());
        let blocks = BaselineBlocks::of(&img, &[]).expect("baseline");
        assert!(blocks.skipped_free_bytes > 2 << 20, "{}", blocks.skipped_free_bytes);
        let before = blocks.digest(&img).expect("digest");
        let mut bytes = std::fs::read(&img).expect("read");
        let (free_start, _) = ext4_free_ranges(&img).expect("free")[0];
        bytes[free_start as usize + 5] ^= 0xFF;
        std::fs::write(&img, &bytes).expect("write");
        assert_eq!(blocks.digest(&img).expect("digest"), before, "a free block does not count");
        bytes[1024 + 0x78] ^= 0xFF; // superblock: volume name
        std::fs::write(&img, &bytes).expect("write");
        assert_ne!(blocks.digest(&img).expect("digest"), before, "a used block does");
    }

    #[test]
    fn block_digests_name_the_blocks_that_differ() {
        let dir = tempfile::tempdir().expect("tmp");
        let img = dir.path().join("userdata.img");
        std::fs::write(&img, vec![3u8; 64 * 4096 + 100]).expect("write");
        let store = BaselineBlocks { skip: vec![(8 * 4096, 10 * 4096)], skipped_free_bytes: 0 };
        let before = store.digest(&img).expect("digest");
        let mut bytes = std::fs::read(&img).expect("read");
        bytes[9 * 4096] = 0; // skipped: no difference
        bytes[20 * 4096 + 7] = 0;
        bytes[21 * 4096] = 0;
        bytes[40 * 4096 + 4095] = 0;
        bytes[64 * 4096 + 99] = 0; // the short tail block
        std::fs::write(&img, &bytes).expect("write");
        let after = store.digest(&img).expect("digest");
        assert_eq!(before.differing(&after), vec![(20, 2), (40, 1), (64, 1)]);
        assert!(before.differing(&before).is_empty());
        let shorter = BlockDigest { sums: before.sums[..60].to_vec() };
        assert_eq!(before.differing(&shorter), vec![(60, 5)]);
        let text = describe_differing(&img, &before.differing(&after));
        assert!(text.starts_with("4 block(s) of 4096 bytes differ in 3 run(s): 20-21, 40, 64;"), "{text}");
    }
}
