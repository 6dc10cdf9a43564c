//! `fstab.rs`: an fs_mgr fstab (the device's, or any file `--fstab`
//! names), then the choice of checkpointed partitions from it, as
//! `Engine::open` does. Must hold: no panic; every accepted entry prints
//! back as a line that parses to the same entry; the partitions chosen
//! have names usable in a dm name, each once, each mount point once, and
//! a block-mode partition under rewind's dm path never has that path as
//! its raw device.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rewind_daemon::fstab::{self, CheckpointMode, FstabEntry};
use rewind_fuzz::{bounded, text};

fn line(e: &FstabEntry) -> String {
    let list = |v: Vec<String>| if v.is_empty() { "defaults".to_string() } else { v.join(",") };
    let flags = e
        .fs_mgr_flags
        .iter()
        .map(|f| match &f.value {
            Some(v) => format!("{}={v}", f.name),
            None => f.name.clone(),
        })
        .collect();
    format!("{} {} {} {} {}", e.blk_device, e.mount_point, e.fs_type, list(e.mnt_options.clone()), list(flags))
}

fuzz_target!(|data: &[u8]| {
    let input = text(data);
    let path = Path::new("/vendor/etc/fstab.fuzz");
    let Ok(entries) = bounded("fstab parse", data.len(), 16, || fstab::parse(&input, path)) else { return };
    let mut last_line = 0;
    for e in &entries {
        assert!(e.line > last_line, "line numbers out of order");
        last_line = e.line;
        let printed = line(e);
        let again = fstab::parse(&printed, path).unwrap_or_else(|err| panic!("{printed:?}: {err}"));
        assert_eq!(again.len(), 1, "{printed:?}");
        assert_eq!(FstabEntry { line: e.line, ..again[0].clone() }, *e, "{printed:?}");
    }
    for dm_dir in ["/dev/block/mapper", "/run/mapper"] {
        let Ok(parts) = fstab::checkpointed(&entries, path, "rewind", Path::new(dm_dir)) else { continue };
        for (i, p) in parts.iter().enumerate() {
            assert!(
                !p.name.is_empty() && p.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "partition name {:?}",
                p.name
            );
            assert!(parts[..i].iter().all(|q| q.name != p.name && q.mount_point != p.mount_point), "{parts:?}");
            if p.mode == CheckpointMode::Block && p.blk_device.ends_with(&format!("/rewind-{}", p.name)) {
                assert_ne!(p.raw_device, p.blk_device, "dm device stacked on itself");
            }
            assert!(entries.iter().any(|e| e.blk_device == p.blk_device && e.mount_point == p.mount_point));
        }
    }
});
