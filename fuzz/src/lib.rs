//! What the fuzz targets share: an allocation meter (the "no unbounded
//! allocation" check), a block device held in memory behind the daemon's
//! own [`ReadAt`] seam, and text from arbitrary bytes.
//!
//! Each target in `fuzz_targets/` drives one parser of outside input the
//! way rewindd calls it and asserts what must hold beyond "no panic":
//! round trips where the format has two directions, internal consistency
//! of what a parse accepted, and an allocation bound proportional to the
//! input.

pub mod sparse;

use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};

use rewind_daemon::sys::blockdev::ReadAt;

/// The system allocator, counting live bytes and their peak.
struct Metered;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are
// updated around it.
unsafe impl GlobalAlloc for Metered {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed through.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Metered = Metered;

/// Fixed allowance on top of the per-input-byte one: buffers every parse
/// needs whatever the input (a 64 KiB ext4 block, a sha256 state, toml's
/// tables).
pub const ALLOC_SLACK: usize = 1 << 20;

/// Runs `f` and panics (a libFuzzer crash) if the bytes it held live at
/// once, above what was live before, exceed `per_byte` per input byte plus
/// [`ALLOC_SLACK`]: a parser must not let a small input make it allocate
/// without bound (a length field taken at its word, a loop that grows).
pub fn bounded<R>(what: &str, input_len: usize, per_byte: usize, f: impl FnOnce() -> R) -> R {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = f();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    let limit = input_len.saturating_mul(per_byte).saturating_add(ALLOC_SLACK);
    assert!(peak <= limit, "{what}: {peak} bytes live at once for a {input_len}-byte input (limit {limit})");
    r
}

/// The input as text the way a file read would give it, with invalid
/// UTF-8 replaced (the file-reading functions refuse such files before
/// parsing; replacing keeps the mutator's non-text bytes useful here).
pub fn text(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// Size of the device an [`Image`] stands for: reads past it fail, as on a
/// real device.
pub const DEVICE_BYTES: u64 = 1 << 30;
/// Chunks taken from one input; the rest is ignored.
pub const MAX_CHUNKS: usize = 1024;

/// A block device in memory: the chunks of a [`sparse`] input over
/// zeroes, [`DEVICE_BYTES`] long.
pub struct Image<'a> {
    chunks: Vec<(u64, &'a [u8])>,
}

impl<'a> Image<'a> {
    pub fn from_sparse(input: &'a [u8]) -> Image<'a> {
        Image { chunks: sparse::decode(input, MAX_CHUNKS) }
    }
}

impl ReadAt for Image<'_> {
    fn read_at_exact(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).filter(|e| *e <= DEVICE_BYTES);
        let Some(end) = end else {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the end of the device"));
        };
        buf.fill(0);
        for &(at, bytes) in &self.chunks {
            let (from, to) = (at.max(offset), (at + bytes.len() as u64).min(end));
            if from < to {
                let src = &bytes[(from - at) as usize..(to - at) as usize];
                buf[(from - offset) as usize..(to - offset) as usize].copy_from_slice(src);
            }
        }
        Ok(())
    }
}
