//! Issue 4's outcomes, end to end on a real kernel (QEMU guest): each test
//! runs one scenario of `rewind_harness::scenario::e2e` (also
//! `rewind-harness scenario NAME`) and passes only if every check did; the
//! report (checks, boots, times) is printed either way.

/// A boot that reaches boot-completed commits: two more boots keep every
/// change, no snapshot/COW device or COW file is left, the space is free.
#[test]
fn guest_good_boot_commits_keeps_every_change() {
    rewind_e2e::run("good-boot-commits");
}

/// Attempt 1 panics, attempt 2 commits: nothing of attempt 1 survives.
#[test]
fn guest_fail_then_succeed_keeps_only_the_second_attempt() {
    rewind_e2e::run("fail-then-succeed");
}

/// Power cuts early, twice in a row, mid and late in the final rollback's
/// merge: userdata still ends at the baseline, fsck clean.
#[test]
fn guest_power_cut_during_rollback_still_ends_at_baseline() {
    rewind_e2e::run("power-cut-during-rollback");
}

/// A power cut after the commit intent rolls forward at the next boot.
#[test]
fn guest_power_cut_during_commit_rolls_forward() {
    rewind_e2e::run("power-cut-during-commit");
}

/// AbortChanges without retry: the next boot rolls back, NeedsRollback.
#[test]
fn guest_abort_rolls_back_and_needs_rollback() {
    rewind_e2e::run("abort");
}

/// Ordinary boots: linear passthrough, data kept; overhead vs raw reported.
#[test]
fn guest_no_checkpoint_is_passthrough() {
    rewind_e2e::run("no-checkpoint");
}

/// More than the COW store holds, default policy abort: recorded at 95 %,
/// the attempt is discarded by a reboot, baseline intact.
#[test]
fn guest_overflow_aborts_and_keeps_the_baseline() {
    rewind_e2e::run("overflow");
}

/// More than the COW store holds, policy commit: committed early,
/// protection_lost reported, every write kept.
#[test]
fn guest_overflow_commit_policy_commits_and_reports() {
    rewind_e2e::run("overflow-commit");
}

/// A COW file's blocks moved between boots: rewindd refuses to arm, names
/// the file, userdata is unchanged.
#[test]
fn guest_extents_tampered_are_refused() {
    rewind_e2e::run("extents-tampered");
}

/// cow.free_map: free chunks are mapped linear, new files cost no COW,
/// the rollback is exact.
#[test]
fn guest_free_space_is_not_copied_and_rolls_back_exactly() {
    rewind_e2e::run("free-space-not-copied");
}

/// Bytes written into free space at the table's line cap, and their cost.
#[test]
fn guest_free_written_is_counted_at_the_line_cap() {
    rewind_e2e::run("free-written-many-runs");
}

/// cow.free_map under power cuts in the attempts and the final merge.
#[test]
fn guest_free_map_survives_power_cuts_and_rolls_back_exactly() {
    rewind_e2e::run("free-map-power-cuts");
}

/// Six power cuts in the early boots of a committed system never roll it
/// back (issue 12 item 6a).
#[test]
fn guest_power_cuts_after_commit_never_roll_back() {
    rewind_e2e::run("power-cuts-after-commit");
}

/// cow.free_map refused for a baseline whose journal needs recovery.
#[test]
fn guest_free_map_unclean_baseline_protects_every_chunk() {
    rewind_e2e::run("free-map-unclean-baseline");
}

/// The last rollback merges in the background while the old system runs.
#[test]
fn guest_last_rollback_merges_in_the_background() {
    rewind_e2e::run("last-rollback-in-background");
}

/// A live commit the kernel refuses (EBUSY) three times: boots stop
/// retrying it at commit_max_failures, /data still mounts on the committed
/// data, an explicit commit ends it (issue 12 item 6b).
#[test]
fn guest_commit_failures_are_bounded() {
    rewind_e2e::run("commit-failures-bounded");
}

/// rewindd SIGKILLed inside prepare-userdata (arming, merging) in three
/// boots: each boot still reaches ready armed, the rollback is exact
/// (issue 12 item 6c).
#[test]
fn guest_rewindd_killed_in_prepare_leaves_the_device_bootable() {
    rewind_e2e::run("rewindd-killed-in-prepare");
}

/// The COW device fails (dm-flakey error_writes) during an attempt: the
/// checkpoint is reported lost in the kernel's words, the attempt's data
/// kept, never merged into a mix (issue 12 item 3).
#[test]
fn guest_cow_fails_during_attempt() {
    rewind_e2e::run("cow-fails-during-attempt");
}

/// The COW device fails during the rollback's merge: held back and
/// pending with the kernel's words, resumed by the next boot to the exact
/// baseline (issue 12 item 3).
#[test]
fn guest_cow_fails_during_merge() {
    rewind_e2e::run("cow-fails-during-merge");
}
