//! The engine: the one owner of checkpoint state and of the dm devices. The
//! gRPC service (`service`) calls only this API; everything here is
//! blocking and thread-safe (the service runs calls on tokio's blocking
//! pool).
//!
//! The engine owns the lock, the status cache, the WatchStatus channel and
//! opening (state record, fstab, backend); every step of the life cycle is
//! `boot`'s, called with a [`boot::Ctx`] over the engine's fields. The types
//! it speaks are the shared ones of `types`; `service` converts them to and
//! from `rewind_proto` messages.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::backend::snapshot::{SnapshotBackend, SysIo};
use crate::backend::{routed, Backend, Usage};
use crate::boot;
use crate::config::Config;
use crate::dm::{KernelDm, SnapshotStatus};
use crate::error::{Error, Result};
use crate::evidence::{Copier, Evidence};
use crate::fstab::{self, CheckpointMode, CheckpointedPartition};
use crate::slot;
use crate::state::{FreeMap, PartitionState, State, Store};
use crate::sys;
use crate::types::{
    error_chain, AttemptEvidence, Budget, Event, EventKind, PartitionReport, Phase, PrepareOutcome, Progress,
    SealOutcome, SlotState, StatusReport, Supports,
};

/// Pushed to WatchStatus subscribers.
#[derive(Debug, Clone)]
pub enum Notice {
    Event(Event),
    Status(StatusReport),
}

/// One reading of the free-space write counters.
struct FreeWrittenReading {
    at: Instant,
    took: Duration,
    /// `Err`: why the figure is unknown.
    value: std::result::Result<u64, String>,
}

/// A WatchStatus tick reuses a reading younger than this many times its
/// own duration, so the counters (one message per linear run, up to
/// ~2,000) take at most a tenth of the time however fast a watcher asks
/// (every 100 ms at the fastest). GetStatus always reads.
const FREE_WRITTEN_REUSE_FACTOR: u32 = 10;

/// How long GetStatus waits for the engine before it answers with the
/// last published report (a poll of the space watch is short; a merge is
/// not).
const STATUS_WAIT: Duration = Duration::from_secs(2);

/// How a report gets the free-space counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Read them now (GetStatus).
    Now,
    /// Reuse a reading younger than FREE_WRITTEN_REUSE_FACTOR times its
    /// duration (WatchStatus ticks).
    Recent,
    /// Reuse the last reading; read only if there is none (the reports of
    /// mutating calls and of the space watch, every poll).
    Last,
}

/// Ring size of the WatchStatus broadcast; slow subscribers lag, they do
/// not block the engine.
const NOTICE_CAPACITY: usize = 256;

pub struct Engine {
    inner: Mutex<Inner>,
    /// Last report, served while a long call (a merge) holds `inner`.
    cached: Mutex<StatusReport>,
    tx: broadcast::Sender<Notice>,
}

struct Inner {
    config: Config,
    store: Store,
    state: State,
    /// The fstab's checkpointed partitions (both modes).
    parts: Vec<CheckpointedPartition>,
    backend: Option<Box<dyn Backend>>,
    /// Why checkpointing cannot work here (no dm, no fstab entry...).
    unavailable: Option<String>,
    /// Neither copy of the state record is good: refuse to act.
    state_broken: Option<String>,
    boot_id: String,
    boot_reason: String,
    /// The abort policy already asked for a reboot in this run.
    reboot_requested: bool,
    /// Last merge progress per partition (for status during prepare).
    merge_progress: Vec<Progress>,
    /// This process's PrepareUserdata left the last rollback's merge
    /// running (`cow.last_rollback_in_background`): the poll finishes it.
    background_merge: bool,
    /// The slot query said "marked" in this run: it stays marked (a slot
    /// is never unmarked under a running system), so it is not asked again.
    slot_marked: bool,
    /// The last answer of the slot query, for the status.
    slot_last: SlotState,
    /// The evidence copier of this boot's attempt (started by the poll).
    copier: Option<Copier>,
    /// When this kernel boot started (files newer than this are the
    /// attempt's evidence).
    boot_started_unix: u64,
    /// Last reading of the bytes written into free space, per partition.
    /// Status reads anew; the reports the space watch publishes every poll
    /// reuse it (`report_with`).
    free_written: RefCell<HashMap<String, FreeWrittenReading>>,
}

/// The fstab's checkpointed partitions, parsed once for the engine and
/// the backend routing.
pub fn checkpointed_partitions(config: &Config) -> Result<Vec<CheckpointedPartition>> {
    let entries = fstab::load(&config.fstab)?;
    Ok(fstab::checkpointed(&entries, &config.fstab, &config.dm_prefix, &config.dev_mapper_dir)?)
}

fn read_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

impl Engine {
    /// Loads and validates the state record and the fstab. Never fails just
    /// because device-mapper is missing: status then carries the reason and
    /// mutating calls return `Error::Unavailable`.
    pub fn open(config: Config) -> Result<Engine> {
        let fstab = checkpointed_partitions(&config);
        let snapshot: std::result::Result<Box<dyn Backend>, String> = match KernelDm::open() {
            Ok(dm) => Ok(Box::new(SnapshotBackend::new(
                &config,
                Box::new(dm),
                Box::new(SysIo { dev_dir: config.dev_mapper_dir.clone(), dev_nodes: config.dev_nodes }),
            ))),
            Err(e) => Err(format!("device-mapper is not available: {}", error_chain(&e))),
        };
        // checkpoint=fs entries add the f2fs backend (routed by partition).
        let backend = routed::select(&fstab, snapshot, Box::new(crate::backend::f2fs::KernelF2fs));
        Ok(Self::open_with(config, fstab, backend, read_boot_id(), sys::boot_reason()))
    }

    /// `open` with the fstab's checkpointed partitions (or why they could
    /// not be read) and a given backend (or the reason there is none); host
    /// tests use it with a fake.
    pub fn open_with(
        config: Config,
        fstab: Result<Vec<CheckpointedPartition>>,
        backend: std::result::Result<Box<dyn Backend>, String>,
        boot_id: String,
        boot_reason: String,
    ) -> Engine {
        let mut unavailable = Vec::new();
        let parts = match fstab {
            Ok(all) => {
                if all.is_empty() {
                    unavailable
                        .push(format!("no checkpoint=block or checkpoint=fs partition in {}", config.fstab.display()));
                }
                all
            }
            Err(e) => {
                unavailable.push(error_chain(&e));
                Vec::new()
            }
        };
        let backend = match backend {
            Ok(b) => Some(b),
            Err(why) => {
                unavailable.insert(0, why);
                None
            }
        };
        let mut store = Store::new(&config.metadata_dir);
        let (state, state_broken) = match store.load() {
            Ok(l) => {
                let mut st = l.state;
                if let Some(problem) = l.problem {
                    tracing::error!(dir = %config.metadata_dir.display(), %problem, "state record bad; previous copy in use");
                    st.push_event(
                        Event {
                            time_unix: sys::now_unix(),
                            kind: EventKind::StateRecovered.as_str().into(),
                            attempt: st.attempt,
                            attempts: st.attempts,
                            partition: String::new(),
                            detail: format!("current copy rejected ({problem}); previous copy in use"),
                            boot_reason: boot_reason.clone(),
                        },
                        config.history_limit,
                    );
                }
                (st, None)
            }
            Err(e) => {
                let why = error_chain(&e);
                tracing::error!(%why, "no good state record: refusing to act");
                (State::default(), Some(why))
            }
        };
        store.publish_phase(state.phase);
        let (tx, _) = broadcast::channel(NOTICE_CAPACITY);
        let inner = Inner {
            config,
            store,
            state,
            parts,
            backend,
            unavailable: if unavailable.is_empty() { None } else { Some(unavailable.join("; ")) },
            state_broken,
            boot_id,
            boot_reason,
            reboot_requested: false,
            merge_progress: Vec::new(),
            background_merge: false,
            slot_marked: false,
            slot_last: SlotState::NotQueried,
            copier: None,
            boot_started_unix: sys::boot_started_unix(),
            free_written: RefCell::default(),
        };
        let report = inner.report();
        Engine { inner: Mutex::new(inner), cached: Mutex::new(report), tx }
    }

    /// The engine for a status: GetStatus waits up to [`STATUS_WAIT`] for
    /// a short step (the space watch's poll, the evidence copier) to end,
    /// so the figures it reads are read now rather than the last
    /// published ones; a WatchStatus tick never waits. A long call (a
    /// merge) still gets the last report.
    fn try_lock_for(&self, reading: Reading) -> std::sync::TryLockResult<MutexGuard<'_, Inner>> {
        let until = Instant::now() + if reading == Reading::Now { STATUS_WAIT } else { Duration::ZERO };
        loop {
            match self.inner.try_lock() {
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                r => return r,
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic in a call must not wedge the daemon; the state on disk is
        // the truth and every step re-reads what it needs.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a mutating step with the life-cycle context, then publishes
    /// the new status.
    fn mutate<T>(&self, f: impl FnOnce(&mut Inner, &dyn Fn(&Event)) -> Result<T>) -> Result<T> {
        let mut inner = self.lock();
        let tx = self.tx.clone();
        let notify = move |e: &Event| {
            let _ = tx.send(Notice::Event(e.clone()));
        };
        let r = f(&mut inner, &notify);
        let report = inner.report();
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = report.clone();
        let _ = self.tx.send(Notice::Status(report));
        r
    }

    /// StartCheckpoint. With `renew`, a checkpoint already pending gets
    /// this budget instead of a wrong-phase error (vold's startCheckpoint
    /// rewrites its counter the same way; `boot::renew`).
    pub fn start_checkpoint(&self, budget: Budget, reason: &str, renew: bool) -> Result<StatusReport> {
        if let Budget::Attempts(n) = budget {
            if n == 0 || n > 100 {
                return Err(Error::InvalidArgument(format!("attempts must be 1..=100, got {n}")));
            }
        }
        self.mutate(|inner, notify| {
            inner.usable()?;
            let pending = matches!(inner.state.phase, Phase::Armed | Phase::Checkpointing);
            if renew && pending {
                inner.with_ctx(notify, |ctx| boot::renew(ctx, budget, reason))?;
            } else {
                inner.with_ctx(notify, |ctx| boot::start(ctx, budget, reason))?;
            }
            Ok(inner.report())
        })
    }
    /// NeedsCheckpoint. `this_boot` answers for the running boot only, as
    /// vold's `cp_needsCheckpoint` does (its answer is decided at boot):
    /// true when this boot's writes are checkpointed, false for a
    /// checkpoint that starts at the next boot. Either way true while the
    /// boot slot is not marked successful (the slot query), record or not.
    pub fn needs_checkpoint(&self, this_boot: bool) -> bool {
        let by_phase = {
            let inner = self.lock();
            let st = &inner.state;
            match st.phase {
                Phase::Checkpointing if this_boot => st.boot_id == inner.boot_id && !inner.boot_id.is_empty(),
                Phase::Armed => !this_boot,
                Phase::Checkpointing | Phase::RollingBack => true,
                Phase::Idle | Phase::Committing | Phase::RolledBack => false,
            }
        };
        by_phase || self.slot_state() == SlotState::Unmarked
    }
    pub fn needs_rollback(&self) -> bool {
        let inner = self.lock();
        let st = &inner.state;
        st.phase == Phase::RolledBack
            || st.final_rollback_running()
            || (st.no_retry && matches!(st.phase, Phase::Armed | Phase::Checkpointing))
    }
    pub fn is_checkpointing(&self) -> bool {
        self.lock().state.phase == Phase::Checkpointing
    }
    /// Live commit. Returns the time the commit took.
    pub fn commit(&self, reason: &str) -> Result<Duration> {
        // No checkpoint, but the slot is not known to be marked: marking it
        // is this commit's job (boot::mark_slot).
        let slot = self.slot_state();
        self.mutate(|inner, notify| {
            inner.usable()?;
            let hook_cmd = inner.config.commit_command.clone();
            // The old system after the last rollback (finished, or merging
            // in the background) has no checkpoint to commit.
            let idle =
                matches!(inner.state.phase, Phase::Idle | Phase::RolledBack) || inner.state.final_rollback_running();
            if idle && !inner.state.commit_command_pending && matches!(slot, SlotState::Unmarked | SlotState::Unknown) {
                let took = inner.with_ctx(notify, |ctx| {
                    boot::mark_slot(ctx, reason, &mut || {
                        sys::run_command(&hook_cmd).map_err(|e| Error::Internal(format!("commit command failed: {e}")))
                    })
                })?;
                inner.slot_marked = true;
                inner.slot_last = SlotState::Marked;
                return Ok(took);
            }
            let took = inner.with_ctx(notify, |ctx| {
                boot::commit(ctx, reason, &mut || {
                    sys::run_command(&hook_cmd).map_err(|e| Error::Internal(format!("commit command failed: {e}")))
                })
            })?;
            inner.cleanup_pending(notify);
            if !inner.config.commit_command.is_empty() {
                inner.slot_marked = true;
                inner.slot_last = SlotState::Marked;
            }
            Ok(took)
        })
    }
    /// AbortChanges. With `reboot`, rewindd then reboots with the reason
    /// (vold's abort always does), also when no checkpoint is recorded but
    /// the slot is not marked (vold aborts whenever its needsCheckpoint
    /// was true): that boot has failed and the bootloader counts it.
    pub fn abort(&self, reason: &str, keep_retrying: bool, reboot: bool) -> Result<StatusReport> {
        let slot = if reboot { self.slot_state() } else { SlotState::NotQueried };
        self.mutate(|inner, notify| {
            inner.usable()?;
            let pending = matches!(inner.state.phase, Phase::Armed | Phase::Checkpointing);
            inner.with_ctx(notify, |ctx| {
                if pending || slot != SlotState::Unmarked {
                    boot::abort(ctx, reason, keep_retrying)?;
                } else {
                    ctx.record(
                        EventKind::Aborted,
                        "",
                        format!("{reason} (no checkpoint recorded; the boot slot is not marked successful)"),
                    );
                }
                if reboot {
                    boot::reboot(ctx, reason, &mut |argv| sys::run_command(argv))?;
                }
                Ok(())
            })?;
            Ok(inner.report())
        })
    }
    /// vold's markBootAttempt (boot::mark_boot_attempt): counted at
    /// prepare, or counted again after a reset.
    pub fn mark_boot_attempt(&self) -> Result<PrepareOutcome> {
        self.mutate(|inner, notify| {
            inner.usable()?;
            inner.with_ctx(notify, |ctx| boot::mark_boot_attempt(ctx, &mut |_| {}))
        })
    }
    /// vold's prepareCheckpoint (boot::prepare_checkpoint).
    pub fn prepare_checkpoint(&self) -> Result<()> {
        self.mutate(|inner, notify| {
            inner.usable()?;
            inner.with_ctx(notify, boot::prepare_checkpoint)
        })
    }
    /// SealFreeMap (boot::seal_free_map): at the clean shutdown before the
    /// first attempt, once /data is unmounted.
    pub fn seal_free_map(&self) -> Result<Vec<SealOutcome>> {
        self.mutate(|inner, notify| {
            inner.usable()?;
            inner.with_ctx(notify, boot::seal_free_map)
        })
    }
    /// vold's resetCheckpoint (boot::reset).
    pub fn reset_checkpoint(&self) -> Result<()> {
        self.mutate(|inner, notify| {
            inner.usable()?;
            inner.with_ctx(notify, boot::reset)
        })
    }
    /// vold's restoreCheckpoint(device), which fs_mgr calls for each
    /// checkpointed entry before mounting it: rewind's restore is the
    /// prepare (idempotent in a boot), run only while the partition is not
    /// mounted. A mounted partition is never touched: its prepare ran
    /// before it was mounted (or the boot is unprotected, which
    /// markBootAttempt reports).
    pub fn restore_checkpoint(&self, device: &str, progress: &mut dyn FnMut(Progress)) -> Result<PrepareOutcome> {
        let part = {
            let inner = self.lock();
            inner
                .parts
                .iter()
                .find(|p| p.raw_device == device || p.blk_device == device || p.mount_point == device)
                .cloned()
        };
        let Some(part) = part else {
            return Err(Error::InvalidArgument(format!(
                "{device} is not a partition rewind checkpoints (not a raw device, device or mount point in the fstab)"
            )));
        };
        if sys::mounted_device(std::path::Path::new(&part.mount_point)).is_some() {
            let inner = self.lock();
            return Ok(PrepareOutcome {
                phase: inner.state.phase,
                attempt: inner.state.attempt,
                attempts: inner.state.attempts,
                unlimited: inner.state.unlimited,
            });
        }
        self.prepare_userdata(progress)
    }
    /// The boot-time step (boot contract). Calls `progress` while a merge
    /// runs (at least every second).
    pub fn prepare_userdata(&self, progress: &mut dyn FnMut(Progress)) -> Result<PrepareOutcome> {
        let cached = &self.cached;
        let tx = self.tx.clone();
        self.mutate(|inner, notify| {
            inner.usable()?;
            inner.merge_progress.clear();
            let mut seen: Vec<Progress> = Vec::new();
            let mut on_progress = |p: Progress| {
                if let Ok(mut c) = cached.lock() {
                    if let Some(r) = c.partitions.iter_mut().find(|r| r.name == p.partition) {
                        r.merge_done_sectors = p.done_sectors;
                        r.merge_total_sectors = p.total_sectors;
                        r.snapshot_state = None;
                    }
                    let _ = tx.send(Notice::Status(c.clone()));
                }
                seen.retain(|x| x.partition != p.partition);
                seen.push(p.clone());
                progress(p);
            };
            let r = inner.with_ctx(notify, |ctx| boot::prepare(ctx, &mut on_progress));
            inner.merge_progress = seen;
            inner.background_merge = r.is_ok() && inner.state.phase == Phase::RollingBack;
            r
        })
    }
    pub fn supports(&self) -> Supports {
        let inner = self.lock();
        // As vold: block = a checkpoint=block entry, file = a checkpoint=fs
        // entry; and only when rewind can act on them here.
        let ok = inner.unavailable.is_none();
        let has = |m: CheckpointMode| inner.parts.iter().any(|p| p.mode == m);
        Supports {
            block: ok && has(CheckpointMode::Block),
            file: ok && has(CheckpointMode::Fs),
            marks_slot: !inner.config.commit_command.is_empty() && !inner.config.slot_query_command.is_empty(),
        }
    }
    pub fn status(&self) -> StatusReport {
        self.status_reading(Reading::Now)
    }
    /// [`Engine::status`] for a WatchStatus tick: the free-space counters
    /// are read again only if the last reading is older than
    /// [`FREE_WRITTEN_REUSE_FACTOR`] times what it took.
    pub fn watch_status(&self) -> StatusReport {
        self.status_reading(Reading::Recent)
    }
    fn status_reading(&self, reading: Reading) -> StatusReport {
        // The slot as it is now (the report carries the last answer).
        let _ = self.slot_state_now();
        match self.try_lock_for(reading) {
            Ok(inner) => {
                let r = inner.report_with(reading);
                *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = r.clone();
                r
            }
            // A long call (merge) is running: the last report, with its
            // progress, instead of blocking.
            Err(_) => self.cached.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
    pub fn history(&self) -> Vec<Event> {
        self.lock().state.history.clone()
    }
    /// What is kept of this checkpoint's attempts (or the previous one's).
    pub fn evidence(&self, previous: bool) -> Result<Vec<AttemptEvidence>> {
        let ev = self.evidence_dirs();
        Ok(ev.list(previous)?)
    }
    pub fn attempt_evidence(&self, attempt: u32, previous: bool) -> Result<AttemptEvidence> {
        Ok(self.evidence_dirs().attempt(attempt, previous)?)
    }
    /// One kept file, by its stored name (only names an index gives).
    pub fn open_evidence(&self, attempt: u32, name: &str, previous: bool) -> Result<std::fs::File> {
        Ok(self.evidence_dirs().open(attempt, name, previous)?)
    }
    fn evidence_dirs(&self) -> Evidence {
        let inner = self.lock();
        Evidence::new(&inner.config.metadata_dir, &inner.config.evidence)
    }
    /// The boot slot's state (slot module), cached once marked.
    pub fn slot_state(&self) -> SlotState {
        let argv = {
            let inner = self.lock();
            if inner.slot_marked {
                return SlotState::Marked;
            }
            inner.config.slot_query_command.clone()
        };
        self.query_slot(argv, true)
    }

    /// [`Engine::slot_state`] for GetStatus, which must not wait for a long
    /// call (a merge) holding the engine: then the last answer.
    fn slot_state_now(&self) -> Option<SlotState> {
        let argv = {
            let inner = self.inner.try_lock().ok()?;
            if inner.slot_marked {
                return Some(SlotState::Marked);
            }
            inner.config.slot_query_command.clone()
        };
        Some(self.query_slot(argv, false))
    }

    /// Runs the query outside the lock (the boot HAL may take a while) and
    /// keeps its answer; without `wait`, only if the engine is free.
    fn query_slot(&self, argv: Vec<String>, wait: bool) -> SlotState {
        if argv.is_empty() {
            return SlotState::NotQueried;
        }
        let (state, why) = slot::query(&argv);
        if let Some(why) = why {
            tracing::warn!(%why, "slot query failed: treated as marked for NeedsCheckpoint");
        }
        let inner = if wait { Some(self.lock()) } else { self.inner.try_lock().ok() };
        if let Some(mut inner) = inner {
            inner.slot_last = state;
            if state == SlotState::Marked {
                inner.slot_marked = true;
            }
        }
        state
    }
    /// Events (history entries as they are recorded, threshold crossings)
    /// for WatchStatus.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Notice> {
        self.tx.subscribe()
    }
    /// One pass of the space watch (called by rewindd every
    /// `space.poll_interval_ms`): reads COW usage, emits threshold events,
    /// applies the overflow policy.
    pub fn poll_space(&self) -> Result<()> {
        // Nothing to do on a machine without checkpointing; do not publish.
        {
            let inner = self.lock();
            if inner.backend.is_none() || inner.state_broken.is_some() {
                return Ok(());
            }
            if inner.state.phase != Phase::Checkpointing
                && inner.state.pending_cleanup.is_empty()
                && !inner.background_merge
            {
                return Ok(());
            }
        }
        let cached = &self.cached;
        let tx = self.tx.clone();
        self.mutate(|inner, notify| {
            if inner.background_merge {
                // One look at the merge; its progress goes to status and
                // WatchStatus as a waited-for merge's does.
                let mut seen: Vec<Progress> = Vec::new();
                let r = inner.with_ctx(notify, |ctx| {
                    boot::finish_background_rollback(ctx, &mut |p: Progress| {
                        if let Ok(mut c) = cached.lock() {
                            if let Some(r) = c.partitions.iter_mut().find(|r| r.name == p.partition) {
                                r.merge_done_sectors = p.done_sectors;
                                r.merge_total_sectors = p.total_sectors;
                            }
                            let _ = tx.send(Notice::Status(c.clone()));
                        }
                        seen.retain(|x| x.partition != p.partition);
                        seen.push(p);
                    })
                });
                for p in seen {
                    inner.merge_progress.retain(|x| x.partition != p.partition);
                    inner.merge_progress.push(p);
                }
                match r {
                    Ok(true) => {
                        inner.background_merge = false;
                        inner.merge_progress.clear();
                    }
                    Ok(false) => {}
                    // Logged by the poll loop; the merge stays loaded and
                    // the next pass looks again.
                    Err(e) => return Err(e),
                }
            }
            inner.cleanup_pending(notify);
            inner.poll_evidence();
            let cmd = inner.config.reboot_argv("rewind_cow_full");
            let mut reboot_requested = inner.reboot_requested;
            let r = inner
                .with_ctx(notify, |ctx| boot::space::watch(ctx, &mut reboot_requested, &mut || sys::run_command(&cmd)));
            inner.reboot_requested = reboot_requested;
            r
        })
    }
}

impl Inner {
    /// The evidence copier's pass while this boot's attempt runs; its
    /// failures are logged, never returned (evidence must not disturb the
    /// space watch that shares the poll).
    fn poll_evidence(&mut self) {
        let st = &self.state;
        let live = st.phase == Phase::Checkpointing && st.boot_id == self.boot_id && !self.boot_id.is_empty();
        if !live || !self.config.evidence.enabled {
            self.copier = None;
            return;
        }
        let ev = Evidence::new(&self.config.metadata_dir, &self.config.evidence);
        if self.copier.as_ref().map(Copier::attempt) != Some(st.attempt) {
            self.copier = Some(Copier::new(&ev, st.attempt, self.boot_started_unix));
        }
        let Some(copier) = self.copier.as_mut() else { return };
        match copier.poll(&ev) {
            Ok(p) => {
                if !p.copied.is_empty() {
                    tracing::info!(attempt = copier.attempt(), copied = ?p.copied, "evidence kept");
                }
                if !p.not_kept.is_empty() {
                    tracing::warn!(attempt = copier.attempt(), not_kept = ?p.not_kept, "evidence not kept");
                }
            }
            Err(e) => tracing::warn!(error = %error_chain(&e), "evidence poll failed"),
        }
    }

    fn usable(&self) -> Result<()> {
        if let Some(why) = &self.state_broken {
            return Err(Error::Unsafe(format!("state record unusable: {why}")));
        }
        if let Some(why) = &self.unavailable {
            return Err(Error::Unavailable(why.clone()));
        }
        Ok(())
    }

    fn with_ctx<T>(&mut self, notify: &dyn Fn(&Event), f: impl FnOnce(&mut boot::Ctx<'_>) -> Result<T>) -> Result<T> {
        let backend = self.backend.as_deref_mut().ok_or_else(|| Error::Unavailable("no backend".into()))?;
        let mut ctx = boot::Ctx {
            backend,
            store: &mut self.store,
            state: &mut self.state,
            parts: &self.parts,
            config: &self.config,
            boot_id: &self.boot_id,
            boot_reason: &self.boot_reason,
            notify,
        };
        f(&mut ctx)
    }

    /// Deletes COW files of finished checkpoints whose filesystem is
    /// mounted again (`boot::cleanup_pending`); nothing to do without a
    /// backend.
    fn cleanup_pending(&mut self, notify: &dyn Fn(&Event)) {
        let _ = self.with_ctx(notify, |ctx| {
            boot::cleanup_pending(ctx);
            Ok(())
        });
    }

    fn report(&self) -> StatusReport {
        self.report_with(Reading::Last)
    }

    /// Bytes written into the free chunks mapped linear, while this boot's
    /// attempt is armed over a free map (None otherwise), read from the
    /// kernel or reused as `reading` says.
    fn free_written(&self, rec: &PartitionState, reading: Reading) -> Option<std::result::Result<u64, String>> {
        let st = &self.state;
        let live = st.phase == Phase::Checkpointing && st.boot_id == self.boot_id && !self.boot_id.is_empty();
        let mapped = matches!(rec.free_map, Some(FreeMap::Mapped { .. }));
        let mut cache = self.free_written.borrow_mut();
        if !live || !mapped {
            cache.remove(&rec.name);
            return None;
        }
        let backend = self.backend.as_deref()?;
        let stale = match (cache.get(&rec.name), reading) {
            (None, _) | (Some(_), Reading::Now) => true,
            (Some(r), Reading::Recent) => r.at.elapsed() >= r.took * FREE_WRITTEN_REUSE_FACTOR,
            (Some(_), Reading::Last) => false,
        };
        if stale {
            let at = Instant::now();
            let value = backend.free_written_bytes(rec);
            cache.insert(rec.name.clone(), FreeWrittenReading { at, took: at.elapsed(), value });
        }
        cache.get(&rec.name).map(|r| r.value.clone())
    }

    /// The status, with the free-space write counters read as `reading`
    /// says.
    fn report_with(&self, reading: Reading) -> StatusReport {
        let st = &self.state;
        let partitions = self
            .parts
            .iter()
            .map(|fp| {
                let rec = st.partitions.iter().find(|p| p.name == fp.name);
                let usage = match (self.backend.as_deref(), rec) {
                    (Some(b), Some(r)) => b.usage(r).ok().flatten(),
                    _ => None,
                };
                let progress = self.merge_progress.iter().find(|p| p.partition == fp.name);
                // What the usage measures is the backend's to say (f2fs
                // reports its unusable share as a usage).
                let measure = self.backend.as_deref().map(|b| b.traits(&fp.name).usage);
                let used_bytes = match usage {
                    Some(SnapshotStatus::Usage { allocated, .. }) => allocated * 512,
                    _ => 0,
                };
                let unusable = measure == Some(Usage::F2fsUnusable);
                PartitionReport {
                    name: fp.name.clone(),
                    mount_point: fp.mount_point.clone(),
                    backend: fp.mode.backend_kind(),
                    raw_device: fp.raw_device.clone(),
                    device_stack: self.backend.as_deref().map(|b| b.stack(&fp.name)).unwrap_or_default(),
                    cow_bytes: rec.map(|r| r.cow_bytes()).unwrap_or(0),
                    cow_used_bytes: if unusable { 0 } else { used_bytes },
                    chunk_sectors: rec.map(|r| r.chunk_sectors).unwrap_or(self.config.cow.chunk_sectors),
                    merge_done_sectors: progress.map(|p| p.done_sectors).unwrap_or(0),
                    merge_total_sectors: progress.map(|p| p.total_sectors).unwrap_or(0),
                    snapshot_state: usage.and_then(|u| u.word()).map(str::to_string),
                    unusable_bytes: if unusable { used_bytes } else { 0 },
                    free_map: rec.and_then(|r| {
                        let mut m = r.free_map.as_ref()?.report();
                        match self.free_written(r, reading) {
                            Some(Ok(bytes)) => {
                                m.free_written_bytes = Some(bytes);
                                // What the figure covers: the runs that
                                // have regions, as the backend made them.
                                let k = self.config.cow.free_counted_runs;
                                let (runs, chunks) = r.free_map.as_ref().map(|f| f.counted(k)).unwrap_or_default();
                                m.free_written_segments = runs;
                                m.free_written_chunks = chunks;
                            }
                            Some(Err(why)) => m.free_written_unknown = Some(why),
                            None => {}
                        }
                        Some(m)
                    }),
                }
            })
            .collect();
        StatusReport {
            phase: st.phase,
            attempt: if st.phase == Phase::Checkpointing { st.attempt } else { 0 },
            attempts: st.attempts,
            unlimited: st.unlimited,
            partitions,
            unavailable_reason: match (&self.state_broken, &self.unavailable) {
                (Some(b), _) => Some(format!("state record unusable: {b}")),
                (None, u) => u.clone(),
            },
            protection_lost: st.protection_lost.clone(),
            slot: if self.slot_marked { SlotState::Marked } else { self.slot_last },
            commit_failure: boot::commit_failure_report(st, self.config.commit_max_failures),
            rollback_failure: st.rollback_failure.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod vold_tests;
