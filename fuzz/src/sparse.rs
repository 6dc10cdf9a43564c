//! The fuzz inputs' encoding of a block device: a list of chunks, every
//! other byte zero. A real image is mostly zeroes with metadata far apart
//! (f2fs's checkpoint packs sit 2 MiB in), so a plain image as input would
//! be megabytes the mutator mostly wastes its time on; a chunk list keeps a
//! real image in a few KiB and lets the mutator move metadata by editing an
//! offset.
//!
//! ```text
//! input := chunk*
//! chunk := sector: u32 LE   (offset / 512)
//!          len:    u16 LE   (bytes that follow; a short last chunk is cut)
//!          bytes:  [u8; len]
//! ```
//!
//! Later chunks overwrite earlier ones where they overlap. Kept free of
//! dependencies: `fuzz/seeds` includes this file to write the seeds.

/// 512-byte sectors: the unit of a chunk's offset.
pub const SECTOR: u64 = 512;
/// Bytes in one chunk header.
pub const HEADER: usize = 6;

/// Encodes `image` as chunks of its non-zero 512-byte sectors (runs of
/// them merged, at most 127 sectors a chunk).
pub fn encode(image: &[u8]) -> Vec<u8> {
    const MAX_RUN: usize = 127;
    let sectors = image.len().div_ceil(SECTOR as usize);
    let sector = |i: usize| &image[i * SECTOR as usize..((i + 1) * SECTOR as usize).min(image.len())];
    let mut out = Vec::new();
    let mut i = 0;
    while i < sectors {
        if sector(i).iter().all(|b| *b == 0) {
            i += 1;
            continue;
        }
        let start = i;
        while i < sectors && i - start < MAX_RUN && sector(i).iter().any(|b| *b != 0) {
            i += 1;
        }
        let bytes = &image[start * SECTOR as usize..(i * SECTOR as usize).min(image.len())];
        let sector_no = u32::try_from(start).unwrap_or(u32::MAX);
        out.extend_from_slice(&sector_no.to_le_bytes());
        out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// The chunks of an input: (byte offset, bytes).
pub fn decode(input: &[u8], max_chunks: usize) -> Vec<(u64, &[u8])> {
    let mut chunks = Vec::new();
    let mut rest = input;
    while rest.len() >= HEADER && chunks.len() < max_chunks {
        let sector = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let len = usize::from(u16::from_le_bytes([rest[4], rest[5]]));
        let body = &rest[HEADER..];
        let take = len.min(body.len());
        chunks.push((u64::from(sector) * SECTOR, &body[..take]));
        rest = &body[take..];
    }
    chunks
}
