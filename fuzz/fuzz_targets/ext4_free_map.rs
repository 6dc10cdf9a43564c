//! `ext4map/free.rs`: the baseline's free map, read from the block bitmaps
//! of the raw device at arm time, over an image in memory (input: the
//! `rewind_fuzz::sparse` chunk list, like `ext4_map`). Must hold: no
//! panic; an accepted map's runs are sorted, disjoint, not adjacent and
//! inside the device; no chunk is free that holds a block before the
//! first data block or past the filesystem's end; the same image gives the
//! same map; and `dm::armed` turns every accepted map into a table that
//! passes its own checks. Memory stays proportional to the input, plus
//! what the descriptors of at most `free::MAX_GROUPS` groups need (a
//! superblock may describe that many groups in a few bytes of input).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_daemon::dm::armed::armed_table;
use rewind_daemon::ext4map::{self, free};
use rewind_fuzz::{bounded, Image};

/// Bytes of the map's memory per group (descriptor and metadata ranges:
/// about 90), as input bytes at `bounded`'s 64 bytes each.
const GROUP_ALLOWANCE: usize = free::MAX_GROUPS as usize * 128 / 64;

const RAW: devicemapper::Device = devicemapper::Device { major: 8, minor: 16 };

fuzz_target!(|data: &[u8]| {
    let image = Image::from_sparse(data);
    let Ok(sb) = ext4map::read_super(&image) else { return };
    let fs_bytes = sb.blocks_count.saturating_mul(sb.block_size);
    for chunk_bytes in [4096u64, 65536] {
        // The device as large as the filesystem, and a little larger.
        for device_bytes in [fs_bytes, fs_bytes.saturating_add(chunk_bytes * 3 + 512)] {
            let Ok(map) = bounded("free::take", data.len() + GROUP_ALLOWANCE, 64, || {
                free::take(&image, device_bytes, chunk_bytes)
            }) else {
                continue;
            };
            assert_eq!(map.chunks, device_bytes.div_ceil(chunk_bytes));
            let mut prev_end = None;
            for &(first, count) in &map.free_runs {
                assert!(count > 0, "empty run");
                if let Some(end) = prev_end {
                    assert!(first > end, "runs unsorted, overlapping or adjacent: {:?}", map.free_runs);
                }
                let end = first + count;
                assert!(end * chunk_bytes <= fs_bytes.min(device_bytes), "free run past the filesystem");
                assert!(first * chunk_bytes >= sb.first_data_block * sb.block_size, "free chunk before the data");
                prev_end = Some(end);
            }
            let again = free::take(&image, device_bytes, chunk_bytes).expect("the same image parses again");
            assert_eq!(again, map, "the map is not deterministic");
            let sectors = device_bytes / 512;
            if sectors > 0 {
                let t = armed_table(RAW, sectors, chunk_bytes / 512, &map.free_runs, 64).expect("accepted maps build");
                assert!(t.table.lines.len() <= 64);
                assert_eq!(*t.table.len(), sectors);
            }
        }
    }
});
