//! Sealing against real ext4 images: the "ciphertext" is the image put
//! through a deterministic per-sector keystream, which has what the seal
//! relies on (same sector and plaintext give the same ciphertext; any
//! plaintext change changes it), and the plaintext is changed with debugfs.

use std::path::{Path, PathBuf};

use super::*;
pub(crate) use crate::ext4map::tests::Mem;
use crate::ext4map::tests::{debugfs, have_tools, mkfs};

/// splitmix64: a keystream word per (sector, word), so every sector is
/// enciphered differently and the same plaintext gives the same bytes.
fn key(sector: u64, word: u64) -> u64 {
    let mut z = (sector << 7 | word).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(crate) fn encipher(plain: &[u8]) -> Mem {
    let mut out = plain.to_vec();
    for (s, sector) in out.chunks_mut(512).enumerate() {
        for (w, b) in sector.chunks_mut(8).enumerate() {
            let k = key(s as u64, w as u64).to_le_bytes();
            b.iter_mut().zip(k).for_each(|(x, k)| *x ^= k);
        }
    }
    Mem(out)
}

const CHUNK: u64 = 4096;

struct Fixture {
    _dir: tempfile::TempDir,
    img: PathBuf,
}

impl Fixture {
    /// A 32 MiB filesystem with a journal and a few files, cleanly
    /// unmounted (mkfs -d leaves it so).
    fn new(extra: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).expect("mkdir");
        for i in 0..8 {
            std::fs::write(src.join(format!("f{i}")), vec![i as u8; 100_000]).expect("write");
        }
        let img = dir.path().join("img");
        mkfs(&img, &src, extra, "32M");
        Fixture { _dir: dir, img }
    }
    fn plain(&self) -> Mem {
        Mem(std::fs::read(&self.img).expect("read image"))
    }
    fn size(&self) -> u64 {
        std::fs::metadata(&self.img).expect("stat").len()
    }
    fn seal(&self) -> (Sealed, Mem) {
        let plain = self.plain();
        let raw = encipher(&plain.0);
        let sealed = seal(&plain, &raw, self.size(), CHUNK).expect("seal");
        (sealed, raw)
    }
    fn path(&self) -> &Path {
        &self.img
    }
}

#[test]
fn the_seal_holds_the_map_through_the_cipher_and_holds_while_nothing_changes() {
    if !have_tools() {
        eprintln!("skipped: mkfs.ext4/debugfs not installed");
        return;
    }
    for extra in [&[][..], &["-b", "1024"], &["-O", "^flex_bg"], &["-J", "size=4"]] {
        let fx = Fixture::new(extra);
        let (sealed, raw) = fx.seal();
        assert_eq!(sealed.map, free::take(&fx.plain(), fx.size(), CHUNK).expect("map"), "{extra:?}");
        assert!(sealed.map.free_chunks() > 0, "{extra:?}: the image has free space");
        assert_eq!(broken(&raw, &sealed.regions), Ok(None), "{extra:?}");
        // The journal is in the seal: its blocks are among the regions.
        let covered: u64 = sealed.regions.iter().map(|r| u64::from(r.len)).sum();
        assert!(covered >= 1 << 20, "{extra:?}: {covered} bytes sealed, the journal is at least 1 MiB");
    }
}

#[test]
fn a_write_into_free_space_keeps_the_seal() {
    if !have_tools() {
        return;
    }
    let fx = Fixture::new(&[]);
    let (sealed, mut raw) = fx.seal();
    let (first, n) = *sealed.map.free_runs.last().expect("a free run");
    let at = ((first + n / 2) * CHUNK) as usize;
    raw.0[at..at + 4096].fill(0xA5);
    assert_eq!(broken(&raw, &sealed.regions), Ok(None));
}

#[test]
fn any_change_of_allocation_breaks_the_seal() {
    if !have_tools() {
        return;
    }
    let fx = Fixture::new(&[]);
    let (sealed, _) = fx.seal();
    // A new file: bitmap, descriptor and superblock counts change.
    std::fs::write(fx.path().with_extension("new"), vec![1u8; 300_000]).expect("write");
    let new = fx.path().with_extension("new");
    debugfs(fx.path(), true, &format!("write {} added", new.display()));
    let raw = encipher(&fx.plain().0);
    let why = broken(&raw, &sealed.regions).expect("read").expect("the seal is broken");
    assert!(why.contains("changed"), "{why}");
    // The journal alone: a byte in its data changes nothing else.
    let fx = Fixture::new(&[]);
    let (sealed, raw) = fx.seal();
    let journal = journal_ranges(&fx.plain()).expect("journal");
    let (start, len) = *journal.iter().max_by_key(|r| r.1).expect("journal data");
    let mut plain = fx.plain();
    plain.0[(start + len / 2) as usize] ^= 1;
    let changed = encipher(&plain.0);
    assert_eq!(broken(&raw, &sealed.regions), Ok(None));
    assert!(broken(&changed, &sealed.regions).expect("read").is_some(), "a journal change breaks the seal");
    // The superblock (what any mount writes).
    let mut plain = fx.plain();
    plain.0[1024 + 0x2C] ^= 1; // s_mtime
    assert!(broken(&encipher(&plain.0), &sealed.regions).expect("read").is_some());
}

#[test]
fn a_filesystem_that_is_not_clean_is_not_sealed() {
    if !have_tools() {
        return;
    }
    let fx = Fixture::new(&[]);
    let mut plain = fx.plain();
    plain.0[1024 + 0x3A] &= !1; // s_state: not cleanly unmounted
    let raw = encipher(&plain.0);
    assert!(matches!(seal(&plain, &raw, fx.size(), CHUNK), Err(SealError::Map(FreeMapError::NotClean(_)))));
}

/// A raw device that something writes to while the seal reads it.
struct Moving {
    mem: Mem,
    reads: std::cell::Cell<u32>,
    flip_after: u32,
    at: usize,
}

impl ReadAt for Moving {
    fn read_at_exact(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.reads.set(self.reads.get() + 1);
        self.mem.read_at_exact(buf, offset)?;
        if self.reads.get() > self.flip_after {
            let start = offset as usize;
            if (start..start + buf.len()).contains(&self.at) {
                buf[self.at - start] ^= 1;
            }
        }
        Ok(())
    }
}

#[test]
fn allocation_that_changes_during_the_seal_is_refused() {
    if !have_tools() {
        return;
    }
    let fx = Fixture::new(&[]);
    let plain = fx.plain();
    let count = ranges(&plain, fx.size()).expect("ranges").len() as u32;
    // The superblock region changes after the first fingerprint.
    let raw = Moving { mem: encipher(&plain.0), reads: 0.into(), flip_after: count, at: 1024 + 0x2C };
    assert_eq!(seal(&plain, &raw, fx.size(), CHUNK), Err(SealError::Changing));
}

#[test]
fn an_external_journal_is_refused() {
    let fx_plain = {
        let mut img = vec![0u8; 8192];
        img[1024 + 0x38..1024 + 0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
        img[1024 + 0x60..1024 + 0x64].copy_from_slice(&0x40u32.to_le_bytes()); // extents
        img[1024 + 0x28..1024 + 0x2C].copy_from_slice(&32u32.to_le_bytes()); // inodes per group
        img[1024 + 0x14..1024 + 0x18].copy_from_slice(&1u32.to_le_bytes()); // first data block
        img[1024 + 0x04..1024 + 0x08].copy_from_slice(&8u32.to_le_bytes()); // blocks
        img[1024 + 0x5C..1024 + 0x60].copy_from_slice(&COMPAT_HAS_JOURNAL.to_le_bytes());
        img[1024 + 0xE4..1024 + 0xE8].copy_from_slice(&0x0801u32.to_le_bytes()); // s_journal_dev
        Mem(img)
    };
    assert!(matches!(journal_ranges(&fx_plain), Err(SealError::Journal(_))));
}
