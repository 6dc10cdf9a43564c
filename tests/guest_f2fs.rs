//! f2fs mode (`checkpoint=fs`) on a real kernel (QEMU guest, Debian 6.1,
//! TCG): rewindd mounts /data with f2fs's `checkpoint=disable:N%` while an
//! attempt runs, any crash drops the attempt, a commit remounts with
//! `checkpoint=enable` and keeps it. Each test runs one scenario of
//! `rewind_harness::scenario::f2fs` (f2fs userdata is one of its needs);
//! witnesses rewindd does not share: /proc/mounts, the guest's manifest
//! tool, fsck.f2fs on the unmounted partition, and f2fs's own sysfs.

/// start -> the attempt writes (with fsync) -> power cut -> next boot: the
/// changes are gone (the manifest equals the baseline), the next attempt is
/// armed with checkpoint=disable, and fsck.f2fs finds the partition clean.
#[test]
fn guest_f2fs_crash_drops_the_attempt() {
    rewind_e2e::run("guest-f2fs-crash");
}

/// start -> the attempt writes -> commit (live remount with
/// checkpoint=enable) -> power cut: every change survives, and the next
/// boot is idle with /data mounted normally.
#[test]
fn guest_f2fs_commit_keeps_changes() {
    rewind_e2e::run("guest-f2fs-commit");
}

/// Two attempts, both fail (one power cut, one clean shutdown without a
/// commit): the third boot has no attempt left, NeedsRollback is true,
/// init mounts /data normally and it is exactly the baseline.
#[test]
fn guest_f2fs_attempts_exhausted_needs_rollback() {
    rewind_e2e::run("guest-f2fs-exhausted");
}

/// Figures, side by side in one guest (TCG, so only the ratios mean
/// much): mount with checkpoint=disable:0% vs a plain mount, 64 MiB with
/// conv=fsync (new file, then rewritten in place) on each, the commit
/// (remount checkpoint=enable). The same code as `rewind-harness bench
/// --f2fs-checkpoint`; printed on stderr (`--nocapture`).
#[test]
fn guest_f2fs_bench_mount_commit_write() {
    rewind_e2e::run("guest-f2fs-bench");
}

/// A nearly full, fragmented f2fs (90 % of the free space written as
/// 256 KiB files, every other one deleted since the last checkpoint): `checkpoint=disable:0%` can be refused with EAGAIN when
/// f2fs's GC cannot clean the holes within its time limit. rewindd then
/// raises the share by 10 until the kernel accepts, the attempt is armed
/// and counted once, and a crash still drops it.
#[test]
fn guest_f2fs_fragmented_userdata_still_arms() {
    rewind_e2e::run("guest-f2fs-eagain");
}

/// A power cut in the middle of a commit, while its hook runs (held by a
/// slow commit hook): in f2fs mode the checkpoint=enable remount comes
/// before the hook, so the attempt's changes are already kept. The next
/// boot finishes the commit, and the history says (from f2fs's last
/// checkpoint on disk) that the changes were kept. (A cut before the
/// remount took loses them; that path is host-tested with a fake kernel:
/// backend::f2fs::tests::interrupted_commit_says_whether_the_attempt_survived.)
#[test]
fn guest_f2fs_commit_cut_during_the_hook_keeps_the_attempt() {
    rewind_e2e::run("guest-f2fs-commit-cut");
}
