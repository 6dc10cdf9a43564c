//! Issue 5 (item 4): issue 4's end-to-end outcomes with an f2fs userdata
//! (`--fs f2fs`, checkpoint=fs: f2fs's own checkpoint=disable instead of
//! dm-snapshot). Each test runs one scenario of
//! `rewind_harness::scenario::e2e` by name, as `rewind-harness scenario
//! NAME --fs f2fs` does; the scenarios check f2fs's witnesses in that mode
//! (no dm device, /data's checkpoint=disable in /proc/mounts, status
//! unusable_bytes, the history, fsck.f2fs of the raw partition). A test
//! passes only if every check did; the report is printed either way.
//!
//! three-failed-boots on f2fs is guest_harness's
//! `guest_demo_rolls_userdata_back_on_f2fs`. Not here, because they do not
//! apply to f2fs mode: power-cut-during-rollback (f2fs has no merge to
//! cut: the crash itself drops the attempt), overflow-commit and
//! extents-tampered (COW files and their extents exist only in block mode).

/// A good boot commits (live remount with checkpoint=enable): two more
/// boots keep every change, no dm device, no unusable space left.
#[test]
fn guest_f2fs_good_boot_commits_keeps_every_change() {
    rewind_e2e::run_f2fs("good-boot-commits");
}

/// Attempt 1 panics (dropped: no checkpoint), attempt 2 commits: nothing
/// of attempt 1 survives.
#[test]
fn guest_f2fs_fail_then_succeed_keeps_only_the_second_attempt() {
    rewind_e2e::run_f2fs("fail-then-succeed");
}

/// A power cut while the commit's hook runs (after the intent and the
/// checkpoint=enable remount): the next boot rolls forward, changes kept.
#[test]
fn guest_f2fs_power_cut_during_commit_rolls_forward() {
    rewind_e2e::run_f2fs("power-cut-during-commit");
}

/// AbortChanges without retry: the next boot is rolled back, NeedsRollback.
#[test]
fn guest_f2fs_abort_rolls_back_and_needs_rollback() {
    rewind_e2e::run_f2fs("abort");
}

/// Ordinary boots: /data is the raw partition mounted normally, no dm
/// device, data kept; overhead vs raw reported.
#[test]
fn guest_f2fs_no_checkpoint_is_passthrough() {
    rewind_e2e::run_f2fs("no-checkpoint");
}

/// f2fs's unusable space (blocks freed since checkpointing was turned off)
/// filled past the same thresholds, policy abort: recorded at 95 %, the
/// reboot drops the attempt, baseline intact.
#[test]
fn guest_f2fs_overflow_aborts_and_keeps_the_baseline() {
    rewind_e2e::run_f2fs("overflow");
}
