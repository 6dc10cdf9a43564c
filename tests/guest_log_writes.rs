//! Lost volatile write caches (`rewind-harness log-writes`, issue 12 item
//! 2), a fixed-seed slice: a commit recorded under dm-log-writes (both
//! disks one ordered log, checked by replaying the whole log onto the
//! disks as logging began), then two of its flush/FUA points and one point
//! between flushes (a seeded subset of the cached writes kept) rebuilt and
//! booted; each must end at the baseline or committed exactly (manifest of
//! every file, rewindd's phase agreeing, COW files gone, fsck clean, the
//! boot ready); then a rollback merge the same way (the baseline only).
//! About 2-3 minutes of guest time each.
#[test]
fn guest_log_writes_commit_replays_end_at_baseline_or_committed() {
    rewind_e2e::log_writes(rewind_harness::logwrites::Phase::Commit, 1, 2, 1);
}

/// The rollback's merge, the same way: every replay ends at the baseline.
#[test]
fn guest_log_writes_merge_replays_end_at_the_baseline() {
    rewind_e2e::log_writes(rewind_harness::logwrites::Phase::Merge, 1, 2, 1);
}
