//! `ext4map.rs`: the ext4 structures the COW map check reads from the raw
//! device at boot (superblock, group descriptors, inodes, extent trees),
//! over an image in memory behind the daemon's `ReadAt` seam (input: the
//! `rewind_fuzz::sparse` chunk list, so a real image fits in a few KiB).
//! Every one of the first inodes is mapped with the size its own inode
//! states, as `start` maps a COW file. Must hold: no panic; a map that is
//! accepted covers exactly [0, size) with extents inside the filesystem;
//! its tree blocks are distinct; its regions fingerprint, and the
//! fingerprint reads back unchanged from the same image; memory stays
//! proportional to the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_daemon::ext4map;
use rewind_daemon::sys::blockdev::ReadAt;
use rewind_fuzz::{bounded, Image};

/// Inodes tried per input (mkfs puts the first regular files at 12+).
const INODES: u64 = 24;

fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

fuzz_target!(|data: &[u8]| {
    let image = Image::from_sparse(data);
    let Ok(sb) = ext4map::read_super(&image) else { return };
    for ino in 1..=INODES.min(u64::from(sb.inodes_count)) {
        let Ok(off) = ext4map::inode_offset(&image, &sb, ino) else { continue };
        let mut raw = [0u8; 128];
        if image.read_at_exact(&mut raw, off).is_err() {
            continue;
        }
        let size = le32(&raw, 0x04) | (le32(&raw, 0x6C) << 32);
        let Ok(map) = bounded("map_inode", data.len(), 64, || ext4map::map_inode(&image, ino, size)) else { continue };
        assert_eq!((map.ino, map.size, map.inode_offset, map.block_size), (ino, size, off, sb.block_size));
        let fs_bytes = u128::from(sb.blocks_count) * u128::from(sb.block_size);
        let mut pos = 0u64;
        for e in &map.extents {
            assert_eq!(e.logical, pos, "inode {ino}: extents leave a hole or overlap: {:?}", map.extents);
            assert!(e.length > 0, "inode {ino}: empty extent");
            assert!(
                u128::from(e.physical) + u128::from(e.length) <= fs_bytes,
                "inode {ino}: extent {e:?} outside the filesystem"
            );
            pos += e.length;
        }
        assert_eq!(pos, size, "inode {ino}: extents cover {pos} of {size} bytes");
        for (i, b) in map.tree_blocks.iter().enumerate() {
            assert!(!map.tree_blocks[..i].contains(b), "inode {ino}: tree block {b} visited twice");
        }
        let regions = map.regions();
        let prints = ext4map::fingerprint(&image, &regions).expect("the regions just parsed are readable");
        assert_eq!(ext4map::first_change(&image, &prints), Ok(None), "inode {ino}: fingerprint not stable");
    }
});
