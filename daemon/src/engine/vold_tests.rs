//! vold's checkpoint contract, verb by verb, as rewind answers it: each
//! test names the `Checkpoint.cpp` function (system/vold) whose behaviour
//! it pins and says where rewind's answer differs. Boots are engines over
//! the same host "device" (state record and COW files survive, the recording
//! backend's devices do not); the slot is a flag file read by the slot
//! query, the reboot command appends its reason to a file.

use std::path::PathBuf;

use super::*;
use crate::backend::fake::FakeBackend;
use crate::testing::HostDirs;
use crate::types::ErrorKind;

struct Device {
    h: HostDirs,
    /// Exists while the boot slot is marked successful.
    slot_flag: PathBuf,
    /// One line per reboot: the reason the reboot command was given.
    reboots: PathBuf,
    boots: u32,
}

fn sh(script: String) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script]
}

fn device() -> Device {
    let mut h = HostDirs::new(
        "/dev/block/mapper/rewind-userdata {data} ext4 noatime wait,check,checkpoint=block,rewind_raw=/dev/vdb",
    );
    h.config.cow.min_bytes = 1 << 20;
    h.config.cow.max_bytes = 2 << 20;
    h.config.cow.file_max_bytes = 2 << 20;
    let root = h.config.metadata_dir.parent().expect("parent").to_path_buf();
    let slot_flag = root.join("slot-marked");
    let reboots = root.join("reboots");
    h.config.evidence.kmsg = PathBuf::new();
    h.config.evidence.pstore_dir = PathBuf::new();
    h.config.evidence.sources = vec![h.data.join("tombstones")];
    Device { h, slot_flag, reboots, boots: 0 }
}

impl Device {
    /// A device whose slot is queried and marked by rewind's commit.
    fn with_slot(mut self, marked: bool) -> Device {
        self.h.config.slot_query_command = sh(format!("test -e '{}'", self.slot_flag.display()));
        self.h.config.commit_command = sh(format!("touch '{}'", self.slot_flag.display()));
        self.h.config.reboot_command = vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("echo \"$0\" >> '{}'", self.reboots.display()),
            "{reason}".into(),
        ];
        if marked {
            std::fs::write(&self.slot_flag, b"").expect("flag");
        }
        self
    }

    /// The next boot (a new kernel boot: new boot id, no live devices).
    fn boot(&mut self) -> Engine {
        self.boots += 1;
        self.same_boot()
    }

    /// Another engine in the same kernel boot (rewindd restarted, or a
    /// userspace reboot): same boot id.
    fn same_boot(&self) -> Engine {
        Engine::open_with(
            self.h.config.clone(),
            checkpointed_partitions(&self.h.config),
            Ok(Box::new(FakeBackend::default())),
            format!("boot-{}", self.boots),
            format!("reason-{}", self.boots),
        )
    }

    fn reboots(&self) -> Vec<String> {
        std::fs::read_to_string(&self.reboots).unwrap_or_default().lines().map(str::to_string).collect()
    }
}

fn start(e: &Engine, budget: Budget) {
    if let Err(err) = e.start_checkpoint(budget, "ota", false) {
        panic!("StartCheckpoint on the host's temp dir failed: {}", error_chain(&err));
    }
}

/// `cp_startCheckpoint(retry)` writes `retry + 1`; `cp_markBootAttempt`
/// takes one off at every boot and `cp_needsCheckpoint` checkpoints while
/// it is not 0, so `startCheckpoint 1` checkpoints two boots and the third
/// finds "0": `cp_needsRollback` is true. rewind: the same two attempts,
/// counted at prepare, then the rollback.
#[test]
fn start_checkpoint_n_checkpoints_n_plus_one_boots() {
    let mut d = device();
    start(&d.boot(), Budget::from_vold_retry(1).expect("retry 1"));
    for k in 1..=2 {
        let e = d.boot();
        let o = e.prepare_userdata(&mut |_| {}).expect("prepare");
        assert_eq!((o.phase, o.attempt, o.attempts), (Phase::Checkpointing, k, 2));
        assert!(e.needs_checkpoint(true) && !e.needs_rollback());
    }
    let e = d.boot();
    assert_eq!(e.prepare_userdata(&mut |_| {}).expect("prepare").phase, Phase::RolledBack);
    assert!(!e.needs_checkpoint(true) && e.needs_rollback());
}

/// `cp_startCheckpoint(-1)` writes a count that `cp_markBootAttempt` never
/// takes down, so every boot is checkpointed until `cp_commitChanges`
/// removes the file. rewind: unlimited attempts, each uncommitted boot is
/// still discarded (merged) at the next, none ever ends in a rollback by
/// count; the commit keeps the last attempt.
#[test]
fn start_checkpoint_minus_one_checkpoints_every_boot_until_commit() {
    let mut d = device();
    start(&d.boot(), Budget::from_vold_retry(-1).expect("-1"));
    for k in 1..=5 {
        let e = d.boot();
        let o = e.prepare_userdata(&mut |_| {}).expect("prepare");
        assert_eq!((o.phase, o.attempt, o.unlimited), (Phase::Checkpointing, k, true), "boot {k}");
        assert!(!e.needs_rollback(), "never rolled back by count");
        assert!(e.status().unlimited);
    }
    let e = d.boot();
    e.prepare_userdata(&mut |_| {}).expect("attempt 6");
    e.commit("boot completed").expect("commit");
    assert_eq!(e.status().phase, Phase::Idle);
    assert!(!e.needs_checkpoint(true) && !e.needs_rollback());
}

/// `cp_startCheckpoint` writes a new count over a pending one (a staged
/// install during an update's checkpoint). rewind renews the budget, counted
/// after the running boot; the store and the live snapshot stay. Without
/// `renew` (rewindctl start) it stays a wrong-phase error.
#[test]
fn start_checkpoint_while_one_is_pending_renews_its_count() {
    let mut d = device();
    start(&d.boot(), Budget::Attempts(1));
    let e = d.boot();
    e.prepare_userdata(&mut |_| {}).expect("attempt 1 of 1");
    assert_eq!(
        e.start_checkpoint(Budget::Attempts(3), "x", false).expect_err("no renew").kind(),
        ErrorKind::WrongPhase
    );
    let s = e.start_checkpoint(Budget::from_vold_retry(1).expect("1"), "staged install", true).expect("renew");
    assert_eq!((s.phase, s.attempt, s.attempts), (Phase::Checkpointing, 1, 3), "two more boots after this one");
    assert!(e.history().iter().any(|ev| ev.is(EventKind::Renewed)));
    let e = d.boot();
    assert_eq!(e.prepare_userdata(&mut |_| {}).expect("prepare").attempt, 2);
}

/// `cp_needsCheckpoint`: true when the boot HAL says the current slot is
/// not marked successful, before the counter file is even read; a failed
/// HAL call counts as marked (`value_or(true)`). rewind: the slot query,
/// with no record at all.
#[test]
fn needs_checkpoint_is_true_on_an_unmarked_slot_without_a_record() {
    let mut d = device().with_slot(false);
    let e = d.boot();
    let st = e.status();
    assert_eq!((st.phase, st.slot), (Phase::Idle, SlotState::Unmarked), "GetStatus asks the slot itself");
    assert!(e.needs_checkpoint(true) && e.needs_checkpoint(false));
    assert_eq!(e.slot_state(), SlotState::Unmarked);
    std::fs::write(&d.slot_flag, b"").expect("mark");
    let e = d.boot();
    assert!(!e.needs_checkpoint(true), "marked: no checkpoint");
    assert_eq!(e.status().slot, SlotState::Marked);
    // A query that fails is unknown, not unmarked.
    let mut d = device();
    d.h.config.commit_command = vec!["true".into()];
    d.h.config.slot_query_command = sh("echo 'boot HAL not found' >&2; exit 70".into());
    let e = d.boot();
    assert!(!e.needs_checkpoint(true));
    assert_eq!(e.slot_state(), SlotState::Unknown);
}

/// `cp_needsCheckpoint` decides once per boot and answers the same until
/// the commit (b/138952436: a checkpoint started during a boot must not
/// turn that boot into a checkpointed one); `cp_isCheckpointing` returns
/// that same flag. rewind's `this_boot` answer (vdc needsCheckpoint and
/// isCheckpointing): false for a checkpoint armed for the next boot, true
/// for this boot's attempt, false again after its commit.
#[test]
fn needs_checkpoint_for_this_boot_ignores_a_checkpoint_started_in_it() {
    let mut d = device();
    let e = d.boot();
    start(&e, Budget::Attempts(2));
    assert!(!e.needs_checkpoint(true), "armed for the next boot");
    assert!(e.needs_checkpoint(false), "rewindctl needs-checkpoint: a checkpoint is pending");
    let e = d.boot();
    e.prepare_userdata(&mut |_| {}).expect("attempt 1");
    assert!(e.needs_checkpoint(true));
    e.commit("ok").expect("commit");
    assert!(!e.needs_checkpoint(true));
}

/// `cp_markBootAttempt`: ok with no counter file; otherwise counts the
/// boot. rewind counted it at prepare: ok with no checkpoint and for this
/// boot's attempt; a checkpoint pending but not armed in this boot (prepare
/// did not run) is an error, since this boot's writes are not protected.
#[test]
fn mark_boot_attempt_confirms_the_count_made_at_prepare() {
    let mut d = device();
    let e = d.boot();
    assert_eq!(e.mark_boot_attempt().expect("idle").phase, Phase::Idle);
    start(&e, Budget::Attempts(2));
    let e = d.boot();
    let err = e.mark_boot_attempt().expect_err("not prepared");
    assert_eq!(err.kind(), ErrorKind::WrongPhase);
    assert!(error_chain(&err).contains("prepare-userdata did not run"), "{}", error_chain(&err));
    e.prepare_userdata(&mut |_| {}).expect("prepare");
    let o = e.mark_boot_attempt().expect("counted");
    assert_eq!((o.phase, o.attempt), (Phase::Checkpointing, 1));
    assert_eq!(e.mark_boot_attempt().expect("again").attempt, 1, "counts nothing itself");
}

/// `cp_prepareCheckpoint`: nothing to do unless `isCheckpointing`; then
/// dm-bow starts tracking. rewind: ok when the boot is no attempt; for an
/// attempt, the armed stack must be live.
#[test]
fn prepare_checkpoint_checks_the_live_stack_of_an_attempt() {
    let mut d = device();
    let e = d.boot();
    e.prepare_checkpoint().expect("no attempt: nothing to do");
    start(&e, Budget::Attempts(2));
    let e = d.boot();
    e.prepare_userdata(&mut |_| {}).expect("prepare");
    e.prepare_checkpoint().expect("live");
    // rewindd restarted in the same boot without the devices (a fake
    // backend that never armed): the record says armed, the stack is not.
    let e = d.same_boot();
    assert_eq!(e.prepare_checkpoint().expect_err("not live").kind(), ErrorKind::Unsafe);
}

/// `cp_restoreCheckpoint(device)` restores a checkpointed device before
/// fs_mgr mounts it. rewind's restore is prepare-userdata: run for the
/// named partition (by raw device, fstab device or mount point) while it
/// is not mounted; an unknown device is refused.
#[test]
fn restore_checkpoint_runs_prepare_for_its_partition() {
    let mut d = device();
    start(&d.boot(), Budget::Attempts(2));
    let e = d.boot();
    let err = e.restore_checkpoint("/dev/block/by-name/system", &mut |_| {}).expect_err("unknown");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let o = e.restore_checkpoint("/dev/vdb", &mut |_| {}).expect("restore");
    assert_eq!((o.phase, o.attempt), (Phase::Checkpointing, 1));
    let o = e.restore_checkpoint("/dev/block/mapper/rewind-userdata", &mut |_| {}).expect("again");
    assert_eq!(o.attempt, 1, "idempotent in a boot");
}

/// `cp_commitChanges`: ok and nothing when not checkpointing; otherwise
/// `MarkBootSuccessful` first. rewind: with no record but an unmarked slot
/// the commit runs the commit command to mark it (the slot query then says
/// marked); with nothing pending it is wrong-phase, which vdc's
/// commitChanges reads as ok.
#[test]
fn commit_changes_marks_an_unmarked_slot_without_a_checkpoint() {
    let mut d = device().with_slot(false);
    let e = d.boot();
    assert!(e.needs_checkpoint(true));
    e.commit("boot completed").expect("mark the slot");
    assert!(d.slot_flag.exists(), "the commit command ran");
    assert!(!e.needs_checkpoint(true));
    let last = e.history().last().cloned().expect("event");
    assert!(last.is(EventKind::CommitCommand) && last.detail.contains("no checkpoint"), "{last:?}");
    let e = d.boot();
    assert_eq!(e.commit("again").expect_err("nothing").kind(), ErrorKind::WrongPhase);
}

/// `cp_abortChanges(message, retry)`: without retry the counter becomes 0
/// (`cp_needsRollback` true), then `android_reboot(RESTART2, message)`, so
/// the next boot's reason is `reboot,<message>`. rewind: the abort is
/// recorded, the reboot command runs with the message as the reason, and
/// the next boot rolls back for good.
#[test]
fn abort_changes_without_retry_reboots_with_the_message_and_rolls_back() {
    let mut d = device().with_slot(true);
    start(&d.boot(), Budget::Attempts(3));
    let e = d.boot();
    e.prepare_userdata(&mut |_| {}).expect("attempt 1");
    e.abort("apexd_initiated", false, true).expect("abort");
    assert_eq!(d.reboots(), ["apexd_initiated"]);
    assert!(e.needs_rollback());
    let h = e.history();
    assert!(h.iter().any(|ev| ev.is(EventKind::Reboot) && ev.detail.starts_with("reboot,apexd_initiated")), "{h:?}");
    let e = d.boot();
    assert_eq!(e.prepare_userdata(&mut |_| {}).expect("prepare").phase, Phase::RolledBack);
}

/// `cp_abortChanges(message, true)` keeps the counter and reboots: the
/// next boot is the next attempt.
#[test]
fn abort_changes_with_retry_reboots_into_the_next_attempt() {
    let mut d = device().with_slot(true);
    start(&d.boot(), Budget::Attempts(3));
    let e = d.boot();
    e.prepare_userdata(&mut |_| {}).expect("attempt 1");
    e.abort("low memory", true, true).expect("abort");
    assert_eq!(d.reboots(), ["low_memory"]);
    assert!(!e.needs_rollback());
    let e = d.boot();
    assert_eq!(e.prepare_userdata(&mut |_| {}).expect("prepare").attempt, 2);
}

/// `cp_abortChanges` returns at once when `cp_needsCheckpoint` is false:
/// no reboot. rewind: wrong-phase (vdc's abortChanges reads it as ok), no
/// reboot; with an unmarked slot (vold's needsCheckpoint true) it reboots
/// even with no record, and the bootloader counts the failed boot.
#[test]
fn abort_changes_with_nothing_pending_does_not_reboot() {
    let mut d = device().with_slot(true);
    let e = d.boot();
    assert_eq!(e.abort("x", false, true).expect_err("nothing").kind(), ErrorKind::WrongPhase);
    assert!(d.reboots().is_empty());
    std::fs::remove_file(&d.slot_flag).expect("unmark");
    let e = d.boot();
    e.abort("health check", false, true).expect("slot not marked: reboot");
    assert_eq!(d.reboots(), ["health_check"]);
}

/// `cp_supportsCheckpoint` (and the block/file variants) answer from the
/// fstab's checkpoint flags. rewind's fstab is its own; the vdc-compatible
/// supportsCheckpoint additionally requires that rewind's commit marks the
/// slot (update_verifier leaves the marking to whoever says "supported").
#[test]
fn supports_checkpoint_says_whether_the_commit_marks_the_slot() {
    let mut d = device();
    let s = d.boot().supports();
    assert!(s.block && !s.file && !s.marks_slot);
    let mut d = device().with_slot(true);
    let s = d.boot().supports();
    assert!(s.block && s.marks_slot);
}

/// `cp_resetCheckpoint` forgets this boot's decision so that a userspace
/// reboot (init runs resetCheckpoint, then markBootAttempt) is checkpointed
/// and counted as a new boot (vold's change: "startCheckpoint 1;
/// needsCheckpoint → 0; resetCheckpoint; needsCheckpoint → 1"). rewind: a
/// second prepare in the same boot counts nothing, unless a reset asked for
/// it; then markBootAttempt counts attempt 2 on the live snapshot, with no
/// merge, and once (the mark is used up).
#[test]
fn reset_checkpoint_makes_the_next_prepare_count_again_without_merging() {
    let mut d = device();
    start(&d.boot(), Budget::Attempts(3));
    let e = d.boot();
    e.prepare_userdata(&mut |_| {}).expect("attempt 1");
    assert_eq!(e.prepare_userdata(&mut |_| {}).expect("again").attempt, 1, "same boot: nothing counted");
    e.reset_checkpoint().expect("reset");
    let o = e.mark_boot_attempt().expect("counted again");
    assert_eq!((o.phase, o.attempt), (Phase::Checkpointing, 2));
    assert_eq!(e.mark_boot_attempt().expect("once").attempt, 2, "the reset is used up");
    let h = e.history();
    assert!(h.iter().any(|ev| ev.is(EventKind::Reset)));
    assert!(!h.iter().any(|ev| ev.is(EventKind::RollbackBegun)), "never merged: {h:?}");
    // The next kernel boot discards both (one snapshot) and arms attempt 3.
    let e = d.boot();
    assert_eq!(e.prepare_userdata(&mut |_| {}).expect("prepare").attempt, 3);
}

/// A userspace reboot after the last attempt: nothing left to count, so the
/// next full boot rolls back (vold's counter reaches 0 the same way);
/// before any checkpoint a reset does nothing (vold only clears its memory).
#[test]
fn reset_checkpoint_with_no_attempt_left_rolls_back_at_the_next_boot() {
    let mut d = device();
    let e = d.boot();
    e.reset_checkpoint().expect("idle: nothing");
    assert!(e.history().is_empty());
    start(&e, Budget::Attempts(1));
    let e = d.boot();
    e.prepare_userdata(&mut |_| {}).expect("attempt 1 of 1");
    e.reset_checkpoint().expect("reset");
    e.mark_boot_attempt().expect("nothing left: recorded");
    assert!(e.needs_rollback());
    let e = d.boot();
    assert_eq!(e.prepare_userdata(&mut |_| {}).expect("prepare").phase, Phase::RolledBack);
}

/// What an attempt left survives its rollback: a tombstone written while
/// attempt 2 runs is copied by the poll, and the next boot adds its reason.
#[test]
fn a_failed_attempts_evidence_survives_its_rollback() {
    let mut d = device();
    start(&d.boot(), Budget::Attempts(2));
    let e = d.boot();
    e.prepare_userdata(&mut |_| {}).expect("attempt 1");
    let e = d.boot();
    e.prepare_userdata(&mut |_| {}).expect("attempt 2");
    std::fs::create_dir_all(d.h.data.join("tombstones")).expect("mkdir");
    std::fs::write(d.h.data.join("tombstones/tombstone_00"), b"signal 11").expect("tombstone");
    e.poll_space().expect("poll");
    let e = d.boot();
    assert_eq!(e.prepare_userdata(&mut |_| {}).expect("prepare").phase, Phase::RolledBack);
    let kept = e.attempt_evidence(2, false).expect("attempt 2");
    assert_eq!(kept.boot_reason, "reason-4", "the next boot's reason");
    assert!(kept.files.iter().any(|f| f.name.ends_with("tombstones/tombstone_00")), "{kept:?}");
    let ev = e.history().into_iter().rfind(|ev| ev.is(EventKind::Evidence)).expect("evidence event");
    assert!(ev.detail.contains("attempt 2") && ev.detail.contains("tombstone_00"), "{}", ev.detail);
}
