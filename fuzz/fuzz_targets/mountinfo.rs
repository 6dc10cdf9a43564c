//! mountinfo parsing: `backend/f2fs.rs::live_mount_from` (what f2fs mode
//! remounts with, and whether checkpointing is off) and
//! `sys::mounted_device_from` (which device is mounted on a path). Input:
//! /proc/self/mountinfo text; the mount point looked up is /data and the
//! fifth field of the input's first line. Must hold: no panic; what is
//! found comes from a line of the input whose fifth field is that mount
//! point, and a device found parses as the third field of such a line.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rewind_daemon::backend::f2fs::live_mount_from;
use rewind_daemon::sys::mounted_device_from;
use rewind_fuzz::{bounded, text};

fuzz_target!(|data: &[u8]| {
    let input = text(data);
    let first = input.lines().next().and_then(|l| l.split(' ').nth(4)).unwrap_or("/").to_string();
    for mount_point in ["/data", first.as_str()] {
        let lines: Vec<Vec<&str>> = input
            .lines()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .filter(|f| f.len() > 4 && f[4] == mount_point)
            .collect();
        if let Some(m) = bounded("live_mount_from", data.len(), 8, || live_mount_from(&input, mount_point)) {
            assert!(lines.iter().any(|f| f[2] == m.device), "{mount_point}: device {:?} from no line", m.device);
            let _ = (m.checkpoint_disabled(), m.vfs_flags());
        }
        if let Some(dev) = mounted_device_from(&input, Path::new(mount_point)) {
            let last = lines.last().expect("a device found on some line");
            assert_eq!(last[2].parse().ok(), Some(dev), "{mount_point}: not the last mount's device");
        }
    }
});
