//! The life cycle against a recording backend and a real state store:
//! attempt counting, roll-forward after power cuts, refusals.

use super::*;
use crate::backend::fake::FakeBackend;
use crate::config::{Config, EvidenceConfig};
use crate::error::{Error, Result};
use crate::fstab::CheckpointMode;
use crate::state::{Intent, State, Store};
use crate::testing::{armed_state, cow_file, fstab_entry, snapshot_part};
use crate::types::{ErrorKind, EventKind, Phase, PrepareOutcome};
use std::path::PathBuf;

fn part() -> crate::state::PartitionState {
    snapshot_part("/dev/vdb", 1 << 30, vec![cow_file("/data/rewind/cow.0000", &[(0, 1 << 20, 1 << 20)])])
}

/// A device: the state directory survives "reboots"; the backend (dm
/// devices) does not.
struct Device {
    dir: tempfile::TempDir,
    boot: u32,
    /// Whether the "configuration" has a commit command.
    commit_command: bool,
    /// `cow.last_rollback_in_background`.
    background: bool,
    /// The kernel log rewindd reads (`evidence.kmsg`); empty: none.
    kmsg: PathBuf,
}

impl Device {
    fn new(attempts: u32) -> Device {
        let dir = tempfile::tempdir().expect("tmp");
        let st = armed_state(attempts, vec![part()]);
        Store::new(dir.path()).save(&st).expect("save");
        Device { dir, boot: 0, commit_command: true, background: false, kmsg: PathBuf::new() }
    }

    fn load(&self) -> State {
        Store::new(self.dir.path()).load().expect("load").state
    }

    /// One boot: prepare with a fresh backend.
    fn boot(&mut self, fail: Option<(&'static str, ErrorKind)>) -> (Result<PrepareOutcome>, FakeBackend, State) {
        self.boot += 1;
        let mut backend = FakeBackend { fail, ..FakeBackend::default() };
        let (r, state) = self.run(&mut backend, |ctx| prepare(ctx, &mut |_| {}));
        (r, backend, state)
    }

    fn run<T>(&self, backend: &mut FakeBackend, f: impl FnOnce(&mut Ctx<'_>) -> Result<T>) -> (Result<T>, State) {
        let mut store = Store::new(self.dir.path());
        let mut state = store.load().expect("load").state;
        let parts = [fstab_entry(CheckpointMode::Block, "/dev/block/mapper/rewind-userdata", "/dev/vdb", &[])];
        let boot_id = format!("boot-{}", self.boot);
        let config = Config {
            history_limit: 64,
            commit_command: if self.commit_command { vec!["true".into()] } else { Vec::new() },
            // Evidence goes to the test's own "/metadata", never the host's.
            metadata_dir: self.dir.path().to_path_buf(),
            evidence: EvidenceConfig {
                kmsg: self.kmsg.clone(),
                pstore_dir: PathBuf::new(),
                ..EvidenceConfig::default()
            },
            cow: crate::config::CowConfig { last_rollback_in_background: self.background, ..Default::default() },
            ..Config::default()
        };
        let mut ctx = Ctx {
            backend,
            store: &mut store,
            state: &mut state,
            parts: &parts,
            config: &config,
            boot_id: &boot_id,
            boot_reason: "reboot,test",
            notify: &|_| {},
        };
        let r = f(&mut ctx);
        (r, self.load())
    }
}

/// Boots attempt 1, then a commit cut off after its intent (the backend's
/// data commit fails, as a power cut would stop it): the intent must be on
/// disk. Returns the state after it and how often the commit hook ran.
fn cut_during_commit(d: &mut Device) -> (State, u32) {
    let (r, mut b, _) = d.boot(None);
    r.expect("prepare");
    b.fail = Some(("commit", ErrorKind::Internal));
    let mut runs = 0;
    let (r, st) = d.run(&mut b, |ctx| {
        commit(ctx, "boot completed", &mut || {
            runs += 1;
            Ok(())
        })
    });
    assert!(r.is_err(), "the data commit was cut off");
    assert_eq!(st.phase, Phase::Committing, "the intent is on disk");
    (st, runs)
}

#[test]
fn three_failed_boots_then_rolled_back() {
    let mut d = Device::new(3);
    for k in 1..=3 {
        let (r, b, st) = d.boot(None);
        let o = r.expect("prepare");
        assert_eq!((o.phase, o.attempt, o.attempts), (Phase::Checkpointing, k, 3));
        assert_eq!(st.attempt, k);
        if k == 1 {
            assert_eq!(b.ops, ["verify", "arm"]);
        } else {
            assert_eq!(b.ops, ["verify", "merge", "arm"], "boot {k} discards attempt {}", k - 1);
        }
    }
    let (r, b, st) = d.boot(None);
    let o = r.expect("prepare");
    assert_eq!(o.phase, Phase::RolledBack);
    assert_eq!(b.ops, ["verify", "merge", "idle"]);
    assert!(st.partitions.is_empty());
    assert_eq!(st.pending_cleanup.len(), 1, "COW files deleted once mounted");
    // Later boots stay rolled back and idle.
    let (r, b, _) = d.boot(None);
    assert_eq!(r.expect("prepare").phase, Phase::RolledBack);
    assert_eq!(b.ops, ["idle"]);
    let kinds: Vec<Option<EventKind>> = st.history.iter().map(|e| EventKind::parse(&e.kind)).collect();
    let one = [
        Some(EventKind::Attempt),
        Some(EventKind::Evidence),
        Some(EventKind::RollbackBegun),
        Some(EventKind::RollbackFinished),
    ];
    assert_eq!(kinds, one.repeat(3));
    assert!(st.history.iter().all(|e| e.boot_reason == "reboot,test"));
}

#[test]
fn second_prepare_in_the_same_boot_counts_nothing() {
    let mut d = Device::new(3);
    let (r, mut b, _) = d.boot(None);
    r.expect("prepare");
    b.ops.clear();
    let (r, st) = d.run(&mut b, |ctx| prepare(ctx, &mut |_| {}));
    assert_eq!(r.expect("again").attempt, 1);
    assert_eq!(st.attempt, 1);
    assert!(b.ops.is_empty());
}

#[test]
fn commit_keeps_data_and_ends_the_checkpoint() {
    let mut d = Device::new(3);
    let (r, mut b, _) = d.boot(None);
    r.expect("prepare");
    let mut hooked = 0;
    let (r, st) = d.run(&mut b, |ctx| {
        commit(ctx, "boot completed", &mut || {
            hooked += 1;
            Ok(())
        })
    });
    r.expect("commit");
    assert_eq!(hooked, 1);
    assert_eq!(st.phase, Phase::Idle);
    assert!(st.history.iter().any(|e| e.is(EventKind::CommitCommand)), "the command is a logged step");
    assert!(!st.commit_command_pending);
    assert_eq!(st.pending_cleanup.len(), 1);
    assert_eq!(b.ops.last().map(String::as_str), Some("commit"));
    // Next boot: idle, no merge.
    let (r, b, _) = d.boot(None);
    assert_eq!(r.expect("prepare").phase, Phase::Idle);
    assert_eq!(b.ops, ["idle"]);
}

#[test]
fn power_cut_during_commit_finishes_the_commit_at_boot() {
    let mut d = Device::new(3);
    cut_during_commit(&mut d);
    let (r, b, st) = d.boot(None);
    assert_eq!(r.expect("prepare").phase, Phase::Idle);
    assert_eq!(b.ops, ["commit", "idle"], "rolled forward, never merged");
    assert!(st.history.iter().any(|e| e.is(EventKind::Committed)));
}

/// A cut after the commit intent: the boot finishes the data commit but
/// leaves the commit command (e.g. mark the slot successful) to the next
/// commit call, which init makes at boot completed; it runs exactly once.
#[test]
fn commit_command_cut_off_by_a_power_cut_runs_at_the_next_commit_call() {
    let mut d = Device::new(3);
    cut_during_commit(&mut d);

    let (r, _, st) = d.boot(None);
    assert_eq!(r.expect("prepare").phase, Phase::Idle);
    assert!(st.commit_command_pending, "the boot does not run the command");
    assert!(st.history.iter().any(|e| e.is(EventKind::CommitCommandPending)));

    let mut b = FakeBackend::default();
    let mut runs = 0;
    let (r, st) = d.run(&mut b, |ctx| {
        commit(ctx, "boot completed", &mut || {
            runs += 1;
            Ok(())
        })
    });
    r.expect("the pending command runs");
    assert_eq!(runs, 1);
    assert!(!st.commit_command_pending);
    assert_eq!(st.history.last().map(|e| e.kind.as_str()), Some(EventKind::CommitCommand.as_str()));
    assert!(b.ops.is_empty(), "the data was committed at boot: no device is touched");
    // Owed once: the next call has nothing to do.
    let (r, _) = d.run(&mut b, |ctx| {
        commit(ctx, "boot completed", &mut || {
            runs += 1;
            Ok(())
        })
    });
    assert!(matches!(r, Err(Error::WrongPhase { .. })), "{r:?}");
    assert_eq!(runs, 1);
}

#[test]
fn a_failing_pending_commit_command_stays_pending_and_is_recorded() {
    let mut d = Device::new(3);
    cut_during_commit(&mut d);
    d.boot(None).0.expect("rolled forward");
    let mut b = FakeBackend::default();
    let (r, st) = d.run(&mut b, |ctx| commit(ctx, "c", &mut || Err(Error::Internal("boot HAL down".into()))));
    assert!(r.is_err());
    assert!(st.commit_command_pending);
    let failed = st.history.iter().find(|e| e.is(EventKind::CommitCommandFailed)).expect("recorded");
    assert!(failed.detail.contains("boot HAL down"), "{}", failed.detail);
    let (r, st) = d.run(&mut b, |ctx| commit(ctx, "c", &mut || Ok(())));
    r.expect("retry");
    assert!(!st.commit_command_pending);
}

#[test]
fn without_a_commit_command_nothing_is_left_pending() {
    let mut d = Device::new(3);
    d.commit_command = false;
    let (_, runs) = cut_during_commit(&mut d);
    let (r, _, st) = d.boot(None);
    assert_eq!(r.expect("prepare").phase, Phase::Idle);
    assert!(!st.commit_command_pending);
    assert!(!st.history.iter().any(|e| e.kind.starts_with(EventKind::CommitCommand.as_str())));
    assert_eq!(runs, 0, "no command configured: the hook is never called");
}

#[test]
fn failing_commit_hook_keeps_the_intent_and_a_retry_completes() {
    let mut d = Device::new(3);
    let (r, mut b, _) = d.boot(None);
    r.expect("prepare");
    let (r, st) = d.run(&mut b, |ctx| commit(ctx, "c", &mut || Err(Error::Internal("bootctl failed".into()))));
    assert!(r.is_err());
    assert_eq!(st.phase, Phase::Committing);
    let (r, st) = d.run(&mut b, |ctx| commit(ctx, "c", &mut || Ok(())));
    r.expect("retry");
    assert_eq!(st.phase, Phase::Idle);
}

#[test]
fn power_cut_during_merge_resumes_without_using_an_attempt() {
    let mut d = Device::new(3);
    d.boot(None).0.expect("attempt 1");
    let (r, _, st) = d.boot(Some(("merge", ErrorKind::Internal)));
    assert!(r.is_err());
    assert_eq!((st.phase, st.attempt), (Phase::RollingBack, 1));
    let (r, b, st) = d.boot(None);
    let o = r.expect("resumed");
    assert_eq!((o.phase, o.attempt), (Phase::Checkpointing, 2));
    assert_eq!(b.ops, ["verify", "merge", "verify", "arm"]);
    assert_eq!(st.attempt, 2);
}

/// A merge the kernel stops (`Merge failed`: the COW store returned an
/// I/O error) is not a power cut: the boot must not mount the half-merged
/// partition, so the top is held back; the rollback stays pending with the
/// kernel's words in status and history; the next boot, with the store
/// working again, resumes it and arms the next attempt as usual.
#[test]
fn a_merge_the_kernel_stops_holds_userdata_back_until_a_boot_finishes_it() {
    let mut d = Device::new(3);
    d.kmsg = d.dir.path().join("kmsg");
    std::fs::write(&d.kmsg, "3,7,9000,-;device-mapper: snapshots: Read error: shutting down merge.\n").expect("kmsg");
    d.boot(None).0.expect("attempt 1");
    let (r, b, st) = d.boot(Some(("merge", ErrorKind::Internal)));
    let e = r.expect_err("the merge failed");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(b.ops, ["verify", "merge", "hold-back"], "held back, never made linear or armed");
    assert_eq!((st.phase, st.attempt), (Phase::RollingBack, 1));
    assert!(matches!(st.intent, Some(Intent::Rollback { final_: false, .. })), "{:?}", st.intent);
    let why = st.rollback_failure.clone().expect("status says why");
    for words in ["the rollback cannot go on", "Read error: shutting down merge.", "held back", "next boot", "Fix:"] {
        assert!(why.contains(words), "{words:?} missing: {why}");
    }
    assert!(e.to_string().contains("Read error: shutting down merge."), "{e}");
    let failed: Vec<_> = st.history.iter().filter(|e| e.is(EventKind::RollbackFailed)).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].detail, why);
    assert!(!st.history.iter().any(|e| e.is(EventKind::RollbackFinished)));

    // The store works again: the next boot resumes the merge and goes on.
    let (r, b, st) = d.boot(None);
    assert_eq!(r.expect("resumed").phase, Phase::Checkpointing);
    assert_eq!(b.ops, ["verify", "merge", "verify", "arm"]);
    assert_eq!(st.attempt, 2, "the failed boot counted no attempt");
    assert_eq!(st.rollback_failure, None, "cleared once the rollback finished");
}

/// The last rollback stuck the same way stays rolled-back-pending (never
/// idle, never rolled back in name only) until a boot finishes the merge.
#[test]
fn a_stuck_last_rollback_stays_pending_across_boots() {
    let mut d = Device::new(1);
    d.boot(None).0.expect("attempt 1");
    for _ in 0..2 {
        let (r, b, st) = d.boot(Some(("merge", ErrorKind::Internal)));
        assert_eq!(r.expect_err("stuck").kind(), ErrorKind::Unavailable);
        assert_eq!(b.ops, ["verify", "merge", "hold-back"]);
        assert_eq!(st.phase, Phase::RollingBack);
        assert!(st.rollback_failure.is_some() && !st.partitions.is_empty());
    }
    let (r, b, st) = d.boot(None);
    assert_eq!(r.expect("finished").phase, Phase::RolledBack);
    assert_eq!(b.ops, ["verify", "merge", "idle"]);
    assert_eq!((st.rollback_failure, st.history.iter().filter(|e| e.is(EventKind::RollbackFailed)).count()), (None, 2));
}

/// The store cannot even be read before the merge (the COW device fails
/// at boot): held back too, never left linear over what may be half merged.
#[test]
fn an_unreadable_store_before_the_merge_holds_userdata_back() {
    let mut d = Device::new(2);
    d.boot(None).0.expect("attempt 1");
    let (r, b, st) = d.boot(Some(("verify", ErrorKind::Internal)));
    assert_eq!(r.expect_err("stuck").kind(), ErrorKind::Unavailable);
    assert_eq!(b.ops, ["verify", "hold-back"]);
    assert_eq!(st.phase, Phase::RollingBack);
}

#[test]
fn power_cut_while_arming_does_not_use_an_attempt() {
    let mut d = Device::new(3);
    let (r, _, st) = d.boot(Some(("arm", ErrorKind::Internal)));
    assert!(r.is_err());
    assert_eq!((st.phase, st.attempt), (Phase::Armed, 0));
    let (r, _, _) = d.boot(None);
    assert_eq!(r.expect("prepare").attempt, 1);
}

#[test]
fn final_merge_interrupted_still_ends_rolled_back() {
    let mut d = Device::new(1);
    d.boot(None).0.expect("attempt 1");
    let (r, _, st) = d.boot(Some(("merge", ErrorKind::Internal)));
    assert!(r.is_err());
    assert!(matches!(st.intent, Some(Intent::Rollback { final_: true, .. })));
    let (r, b, _) = d.boot(None);
    assert_eq!(r.expect("prepare").phase, Phase::RolledBack);
    assert_eq!(b.ops, ["verify", "merge", "idle"]);
}

#[test]
fn changed_extents_refuse_to_arm_and_keep_the_device_bootable() {
    let mut d = Device::new(3);
    let (r, b, st) = d.boot(Some(("verify", ErrorKind::Unsafe)));
    assert_eq!(r.expect_err("refused").kind(), ErrorKind::Unsafe);
    assert_eq!(b.ops, ["verify", "idle"], "never armed, idle device made");
    assert_eq!(st.phase, Phase::Idle);
    assert!(st.protection_lost.as_deref().unwrap_or("").contains("extents changed"));
    assert!(st.history.iter().any(|e| e.is(EventKind::Refused)));
}

#[test]
fn changed_extents_before_a_merge_refuse_the_merge() {
    let mut d = Device::new(3);
    d.boot(None).0.expect("attempt 1");
    let (r, b, st) = d.boot(Some(("verify", ErrorKind::Unsafe)));
    assert!(r.is_err());
    assert_eq!(b.ops, ["verify", "idle"]);
    assert_eq!(st.phase, Phase::Idle);
    assert!(st.protection_lost.is_some());
}

#[test]
fn abort_without_retry_rolls_back_at_the_next_boot() {
    let mut d = Device::new(3);
    let (r, mut b, _) = d.boot(None);
    r.expect("attempt 1");
    let (r, st) = d.run(&mut b, |ctx| abort(ctx, "health check failed", false));
    r.expect("abort");
    assert!(st.no_retry);
    assert_eq!(st.phase, Phase::Checkpointing, "abort does not reboot or act by itself");
    let (r, b, _) = d.boot(None);
    assert_eq!(r.expect("prepare").phase, Phase::RolledBack);
    assert_eq!(b.ops, ["verify", "merge", "idle"]);
}

#[test]
fn abort_with_retry_only_records() {
    let mut d = Device::new(3);
    let (r, mut b, _) = d.boot(None);
    r.expect("attempt 1");
    let (r, st) = d.run(&mut b, |ctx| abort(ctx, "retry please", true));
    r.expect("abort");
    assert!(!st.no_retry);
    assert_eq!(d.boot(None).0.expect("prepare").attempt, 2);
}

#[test]
fn abort_before_the_first_boot_without_retry_ends_rolled_back_without_merging() {
    let mut d = Device::new(3);
    let mut b = FakeBackend::default();
    let (r, _) = d.run(&mut b, |ctx| abort(ctx, "cancel", false));
    r.expect("abort");
    let (r, b, st) = d.boot(None);
    assert_eq!(r.expect("prepare").phase, Phase::RolledBack);
    assert_eq!(b.ops, ["idle"]);
    assert_eq!(st.pending_cleanup.len(), 1);
}

#[test]
fn commit_or_abort_without_a_checkpoint_is_a_phase_error() {
    let d = Device::new(3);
    let mut b = FakeBackend::default();
    let mut st = d.load();
    st.phase = Phase::Idle;
    st.partitions.clear();
    Store::new(d.dir.path()).save(&st).expect("save");
    let (r, _) = d.run(&mut b, |ctx| commit(ctx, "x", &mut || Ok(())));
    assert_eq!(r.expect_err("phase").kind(), ErrorKind::WrongPhase);
    let (r, _) = d.run(&mut b, |ctx| abort(ctx, "x", false));
    assert_eq!(r.expect_err("phase").kind(), ErrorKind::WrongPhase);
}

#[test]
fn commit_before_the_first_boot_cancels() {
    let d = Device::new(3);
    let mut b = FakeBackend::default();
    let (r, st) = d.run(&mut b, |ctx| commit(ctx, "never mind", &mut || Ok(())));
    r.expect("commit");
    assert_eq!(st.phase, Phase::Idle);
    assert!(b.ops.is_empty());
}

#[test]
fn a_live_stack_is_never_prepared_twice_even_without_a_boot_id() {
    let mut d = Device::new(3);
    let (r, mut b, _) = d.boot(None);
    r.expect("attempt 1");
    b.ops.clear();
    // Same boot, but the boot id reads differently (unreadable /proc...):
    // the live stack alone says "this boot".
    d.boot += 1;
    let (r, st) = d.run(&mut b, |ctx| prepare(ctx, &mut |_| {}));
    assert_eq!(r.expect("no-op").attempt, 1);
    assert_eq!(st.attempt, 1);
    assert!(b.ops.is_empty(), "nothing merged under a mounted filesystem: {:?}", b.ops);
}

#[test]
fn same_boot_with_the_stack_gone_is_refused_not_rearmed() {
    let mut d = Device::new(3);
    let (r, mut b, _) = d.boot(None);
    r.expect("attempt 1");
    b.armed = false;
    b.ops.clear();
    let (r, st) = d.run(&mut b, |ctx| prepare(ctx, &mut |_| {}));
    assert_eq!(r.expect_err("gone").kind(), ErrorKind::Unsafe);
    assert_eq!(st.attempt, 1);
    assert!(b.ops.is_empty());
}

/// `cow.last_rollback_in_background`: a rollback before a further attempt
/// still waits for its merge; the last one returns with the merge running
/// (phase RollingBack, final intent on disk), and the poll ends it as a
/// waited-for merge would: RolledBack, COW files pending deletion.
#[test]
fn the_last_rollback_merges_in_the_background_and_the_poll_finishes_it() {
    let mut d = Device::new(2);
    d.background = true;
    d.boot(None).0.expect("attempt 1");
    let (r, b, _) = d.boot(None);
    assert_eq!(r.expect("attempt 2").phase, Phase::Checkpointing);
    assert_eq!(b.ops, ["verify", "merge", "arm"], "a rollback before an attempt waits for its merge");
    d.boot += 1;
    let mut b = FakeBackend { background_looks: Some(2), ..FakeBackend::default() };
    let (r, st) = d.run(&mut b, |ctx| prepare(ctx, &mut |_| {}));
    assert_eq!(r.expect("prepare returns at once").phase, Phase::RollingBack);
    assert!(st.final_rollback_running(), "the final intent is on disk: a cut resumes the merge");
    assert_eq!(b.ops, ["verify", "merge-bg"]);
    let mut seen = Vec::new();
    for look in 1..=3 {
        let (r, st) = d.run(&mut b, |ctx| finish_background_rollback(ctx, &mut |p| seen.push(p.done_sectors)));
        assert_eq!(r.expect("look"), look == 3, "look {look}");
        assert_eq!(st.phase == Phase::RolledBack, look == 3);
    }
    assert_eq!(seen, [6, 7, 8], "progress reported at every look");
    let st = d.load();
    assert!(st.partitions.is_empty() && st.intent.is_none());
    assert_eq!(st.pending_cleanup.len(), 1, "COW files deleted once mounted");
    let last = st.history.last().expect("event");
    assert_eq!(EventKind::parse(&last.kind), Some(EventKind::RollbackFinished));
    assert!(last.detail.contains("in the background"), "{}", last.detail);
    // Nothing left to finish: the poll says so and changes nothing.
    let (r, after) = d.run(&mut b, |ctx| finish_background_rollback(ctx, &mut |_| {}));
    assert!(r.expect("idle look"));
    assert_eq!(after.seq, st.seq);
}

/// The kernel stops a background merge (an I/O error on the store): the
/// poll records it once, with the error, and stops looking; the intent
/// stays, and the next boot resumes the merge and finishes the rollback.
#[test]
fn a_background_merge_the_kernel_stops_is_recorded_and_resumed_next_boot() {
    let mut d = Device::new(1);
    d.background = true;
    d.boot(None).0.expect("attempt 1");
    d.boot += 1;
    let mut b = FakeBackend { background_looks: Some(5), ..FakeBackend::default() };
    assert_eq!(d.run(&mut b, |ctx| prepare(ctx, &mut |_| {})).0.expect("prepare").phase, Phase::RollingBack);
    b.fail = Some(("merge-look", ErrorKind::Internal));
    let (r, st) = d.run(&mut b, |ctx| finish_background_rollback(ctx, &mut |_| {}));
    assert!(r.expect("a stopped merge is not a poll error"), "nothing left for this boot's poll");
    assert_eq!(st.phase, Phase::RollingBack);
    assert!(matches!(st.intent, Some(Intent::Rollback { final_: true, .. })));
    let why = st.rollback_failure.clone().expect("status says why");
    assert!(why.contains("merge-look: power cut") && why.contains("Fix:"), "{why}");
    let failed: Vec<_> = st.history.iter().filter(|e| e.is(EventKind::RollbackFailed)).collect();
    assert_eq!(failed.len(), 1);
    // The next boot: the merge again, to its end.
    d.boot += 1;
    let mut b = FakeBackend { background_looks: Some(0), ..FakeBackend::default() };
    assert_eq!(d.run(&mut b, |ctx| prepare(ctx, &mut |_| {})).0.expect("resumed").phase, Phase::RollingBack);
    let (r, st) = d.run(&mut b, |ctx| finish_background_rollback(ctx, &mut |_| {}));
    assert!(r.expect("look"));
    assert_eq!(st.phase, Phase::RolledBack);
    assert_eq!(st.attempt, 1, "no attempt used");
}

/// A power cut while the last rollback merges in the background: the next
/// boot starts the same merge again (in the background), using no attempt.
#[test]
fn a_cut_during_the_background_merge_resumes_it_at_the_next_boot() {
    let mut d = Device::new(1);
    d.background = true;
    d.boot(None).0.expect("attempt 1");
    d.boot += 1;
    let mut b = FakeBackend { background_looks: Some(5), ..FakeBackend::default() };
    assert_eq!(d.run(&mut b, |ctx| prepare(ctx, &mut |_| {})).0.expect("prepare").phase, Phase::RollingBack);
    // Cut: the next boot's backend has no merge loaded.
    d.boot += 1;
    let mut b = FakeBackend { background_looks: Some(0), ..FakeBackend::default() };
    let (r, st) = d.run(&mut b, |ctx| prepare(ctx, &mut |_| {}));
    assert_eq!(r.expect("resumed").phase, Phase::RollingBack);
    assert_eq!(b.ops, ["verify", "merge-bg"]);
    assert_eq!(st.attempt, 1, "no attempt used");
    let (r, st) = d.run(&mut b, |ctx| finish_background_rollback(ctx, &mut |_| {}));
    assert!(r.expect("look"));
    assert_eq!(st.phase, Phase::RolledBack);
}

/// A commit whose data commit keeps failing (live, then at two boots) is
/// counted in the history each time, with the partition and the error; at
/// `commit_max_failures` (3) the boots stop retrying it: the next boot only
/// makes the device usable (no commit step, the intent and COW files stay)
/// and adds no event, however many boots follow; a commit call retries and
/// ends the checkpoint, and the count starts again at the next commit.
/// Before the bound every boot retried forever.
#[test]
fn failed_commits_are_counted_and_boots_stop_retrying_at_the_limit() {
    let mut d = Device::new(3);
    let (st, _) = cut_during_commit(&mut d);
    let failed: Vec<_> = st.history.iter().filter(|e| e.is(EventKind::CommitFailed)).collect();
    assert_eq!(failed.len(), 1, "the live failure is on disk");
    assert_eq!(failed[0].partition, "userdata");
    assert!(failed[0].detail.starts_with("live, failed commit 1 since the intent: "), "{}", failed[0].detail);
    assert_eq!(commit::failed_commits(&st), 1);
    let r = commit::failure_report(&st, 3).expect("a failed commit is reported");
    assert_eq!((r.failures, r.limit, r.retried_at_boot), (1, 3, true));
    assert_eq!(r.last_error, "commit: power cut");
    for n in 2..=3 {
        let (r, b, st) = d.boot(Some(("commit", ErrorKind::Internal)));
        assert!(r.is_err(), "boot {n}: the commit at boot failed");
        assert_eq!(b.ops, ["commit", "idle"], "boot {n}: tried, then the device made usable for /data");
        assert_eq!(st.phase, Phase::Committing, "the intent stays");
        assert!(!st.partitions.is_empty(), "the COW files stay with the intent");
        assert_eq!(commit::failed_commits(&st), n);
        let last = st.history.iter().rev().find(|e| e.is(EventKind::CommitFailed)).expect("event");
        assert!(last.detail.starts_with(&format!("at boot, failed commit {n} since the intent: ")), "{}", last.detail);
    }
    let st = d.load();
    let stopped: Vec<_> = st.history.iter().filter(|e| e.is(EventKind::CommitStopped)).collect();
    assert_eq!(stopped.len(), 1, "the limit is recorded once: {:?}", st.history);
    assert!(
        stopped[0].detail.contains("failed 3 times since the intent (commit_max_failures 3)"),
        "{}",
        stopped[0].detail
    );
    let r = commit::failure_report(&st, 3).expect("reported");
    assert_eq!((r.failures, r.retried_at_boot), (3, false));
    assert!(r.fix.contains("rewindctl commit"), "{}", r.fix);

    // Later boots: no commit step, only the usable device; nothing recorded.
    let events = st.history.len();
    for _ in 0..4 {
        let (r, b, st) = d.boot(Some(("commit", ErrorKind::Internal)));
        assert_eq!(r.expect("prepare").phase, Phase::Committing, "the boot goes on");
        assert_eq!(b.ops, ["idle"], "not retried at boot");
        assert_eq!(st.history.len(), events, "a stopped boot adds no event");
        assert!(!st.partitions.is_empty(), "the intent and the COW files stay");
    }

    // An explicit commit retries; it succeeds and ends the checkpoint.
    let mut b = FakeBackend::default();
    let (r, st) = d.run(&mut b, |ctx| commit(ctx, "operator", &mut || Ok(())));
    r.expect("the commit call retries");
    assert_eq!(b.ops, ["commit"]);
    assert_eq!(st.phase, Phase::Idle);
    assert!(st.partitions.is_empty());
    assert!(commit::failure_report(&st, 3).is_none(), "nothing to report once committed");
    let done = st.history.iter().rposition(|e| e.is(EventKind::Committed)).expect("committed");
    let failed = st.history.iter().rposition(|e| e.is(EventKind::CommitFailed)).expect("failed");
    assert!(done > failed, "the commit finished after the failures");
    let (r, b, _) = d.boot(None);
    assert_eq!(r.expect("prepare").phase, Phase::Idle);
    assert_eq!(b.ops, ["idle"]);
}

/// An explicit commit past the limit that fails again is counted (4), and
/// the limit is not recorded a second time.
#[test]
fn a_commit_call_past_the_limit_is_counted_and_keeps_the_intent() {
    let mut d = Device::new(3);
    cut_during_commit(&mut d);
    for _ in 2..=3 {
        let (r, _, _) = d.boot(Some(("commit", ErrorKind::Internal)));
        assert!(r.is_err());
    }
    let mut b = FakeBackend { fail: Some(("commit", ErrorKind::Internal)), ..FakeBackend::default() };
    let (r, st) = d.run(&mut b, |ctx| commit(ctx, "operator", &mut || Ok(())));
    assert!(r.is_err());
    assert_eq!(st.phase, Phase::Committing);
    assert_eq!(commit::failed_commits(&st), 4);
    assert_eq!(st.history.iter().filter(|e| e.is(EventKind::CommitStopped)).count(), 1);
    let r = commit::failure_report(&st, 3).expect("reported");
    assert_eq!((r.failures, r.retried_at_boot), (4, false));
}

fn a_seal() -> crate::state::FreeMapSeal {
    let free_runs = vec![(100u64, 50u64)];
    crate::state::FreeMapSeal {
        chunk_bytes: 4096,
        chunks: (1u64 << 30) / 4096,
        runs_sha256: crate::state::runs_hash(&free_runs),
        free_runs,
        regions: vec![crate::ext4map::Region { offset: 1024, len: 1024, sha256: "00".repeat(32) }],
        sealed_at_unix: 1,
        read_ms: 2,
    }
}

#[test]
fn the_free_map_is_sealed_only_before_the_first_attempt_and_a_failed_seal_records_nothing() {
    let mut d = Device::new(3);
    // Armed (started, no attempt yet): a backend that cannot seal says why
    // and nothing is written.
    let mut b = FakeBackend::default();
    let before = d.load();
    let (r, st) = d.run(&mut b, seal_free_map);
    let out = r.expect("seal");
    assert_eq!(out.len(), 1);
    assert!(!out[0].sealed && out[0].detail.contains("no crypt layer"), "{out:?}");
    assert_eq!(st.seq, before.seq, "nothing sealed, nothing saved");
    // One that can: recorded, and the record (validated on load) keeps it.
    let mut b = FakeBackend { seal: Some(a_seal()), ..FakeBackend::default() };
    let (r, st) = d.run(&mut b, seal_free_map);
    assert!(r.expect("seal")[0].sealed);
    assert_eq!(st.partitions[0].free_map_seal, Some(a_seal()));
    // After the first attempt is armed the disk is the attempt's: refused,
    // the recorded seal kept.
    let (r, _, _) = d.boot(None);
    assert_eq!(r.expect("prepare").phase, Phase::Checkpointing);
    let mut b =
        FakeBackend { seal: Some(crate::state::FreeMapSeal { sealed_at_unix: 9, ..a_seal() }), ..Default::default() };
    let (r, st) = d.run(&mut b, seal_free_map);
    assert_eq!(r.expect_err("phase").kind(), ErrorKind::WrongPhase);
    assert_eq!(st.partitions[0].free_map_seal, Some(a_seal()));
}
