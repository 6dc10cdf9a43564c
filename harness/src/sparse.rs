//! Disk images copied as holes where they are zero: the guests' 512 MiB
//! userdata is mostly empty, and the campaign and the dm-log-writes
//! replays copy it for every trial or point.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Copies `from` to `to` (created or truncated), leaving every all-zero
/// MiB a hole; the copy reads back byte for byte equal.
pub fn copy(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut src = File::open(from)?;
    let len = src.metadata()?.len();
    let mut dst = File::create(to)?;
    dst.set_len(len)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = read_full(&mut src, &mut buf)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            dst.seek(SeekFrom::Start(at))?;
            dst.write_all(&buf[..n])?;
        }
        at += n as u64;
    }
    Ok(())
}

/// Reads until `buf` is full or the file ends; how many bytes were read.
pub fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_copy_is_equal_and_keeps_zero_mibs_as_holes() {
        let dir = tempfile::tempdir().expect("tmp");
        let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
        let mut f = File::create(&a).expect("create");
        f.set_len(8 << 20).expect("len");
        f.seek(SeekFrom::Start(3 << 20)).expect("seek");
        f.write_all(b"data in the fourth MiB").expect("write");
        f.seek(SeekFrom::Start((8 << 20) - 3)).expect("seek");
        f.write_all(b"end").expect("write");
        drop(f);
        // A stale longer destination is truncated, not left behind.
        std::fs::write(&b, vec![7u8; 9 << 20]).expect("stale");
        copy(&a, &b).expect("copy");
        assert_eq!(std::fs::read(&a).expect("a"), std::fs::read(&b).expect("b"));
        let blocks = std::fs::metadata(&b).expect("meta").blocks() * 512;
        assert!(blocks <= 2 << 20, "two MiBs of data, {blocks} bytes allocated");
    }
}
