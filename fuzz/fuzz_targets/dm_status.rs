//! `dm/status.rs`: a snapshot or snapshot-merge status line as the kernel
//! prints it (or anything else a foreign table's status may hold).
//! Must hold: no panic; what parses prints back to text that parses to the
//! same status; the counters a status accepts are consistent (a merge can
//! only be done if no word replaced the counters, a percent is 0..=100).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_daemon::dm::SnapshotStatus;
use rewind_fuzz::{bounded, text};

fuzz_target!(|data: &[u8]| {
    let line = text(data);
    let Ok(status) = bounded("status parse", data.len(), 4, || SnapshotStatus::parse(&line)) else { return };
    let printed = status.to_string();
    assert_eq!(SnapshotStatus::parse(&printed), Ok(status), "'{line}' printed as '{printed}'");
    if let Some(p) = status.used_percent() {
        assert!(p <= 100, "'{line}': {p} %");
    }
    assert!(!(status.merge_done() && status.word().is_some()), "'{line}': a word read as a finished merge");
    assert!(!(status.is_lost() && status.word().is_none()), "'{line}': lost without a word");
});
