//! `backend/f2fs.rs::checkpoint_flags_from`: the f2fs superblock and the
//! two checkpoint packs read from the raw device (what rewind reports
//! about a partition's last checkpoint), over an image in memory (input:
//! the `rewind_fuzz::sparse` chunk list). Must hold: no panic, no read
//! that is not bounded by the format (a pack's block count is taken from
//! the device), memory proportional to the input.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rewind_daemon::backend::f2fs;
use rewind_fuzz::{bounded, Image};

fuzz_target!(|data: &[u8]| {
    let image = Image::from_sparse(data);
    let _ = bounded("checkpoint flags", data.len(), 4, || {
        f2fs::checkpoint_flags_from(&image, Path::new("/dev/block/by-name/userdata"))
    });
});
