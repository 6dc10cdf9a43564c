//! Block-level witnesses of the COW store: filefrag's view of a file's
//! extents, and the host's hash of the userdata image outside the store's
//! blocks (a rollback must restore every other byte).

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

/// sha256 of the userdata image with the COW files' blocks zeroed (they
/// hold the store's own data, which is not userdata).
pub fn image_hash_outside(image: &Path, cow: &[CowFile]) -> Result<String, ScenarioError> {
    let mut ranges: Vec<(u64, u64)> =
        cow.iter().flat_map(|f| f.extents.iter().map(|e| (e.physical, e.physical + e.length))).collect();
    ranges.sort_unstable();
    let mut f = std::fs::File::open(image).map_err(io_err(image))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err(image))?;
        if n == 0 {
            break;
        }
        for (a, b) in &ranges {
            let (s, e) = ((*a).max(pos), (*b).min(pos + n as u64));
            if s < e {
                buf[(s - pos) as usize..(e - pos) as usize].fill(0);
            }
        }
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(hex::encode(h.finalize()))
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
}
