//! The engine: the one owner of checkpoint state and of the dm devices. The
//! gRPC service (`service`) calls only this API; everything here is
//! blocking and thread-safe (the service runs calls on tokio's blocking
//! pool). Types here are the daemon's own; `service` converts them to and
//! from `rewind_proto` messages.
//!
//! CONTRACT between the core (fstab/state/fiemap/dm/backend/boot/space) and
//! the service edge. Signatures may grow fields, but keep the meaning.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::backend::snapshot::{SnapshotBackend, SysIo};
use crate::backend::{Backend, PartRef};
use crate::boot::{self, error_chain};
use crate::config::Config;
use crate::cowstore;
use crate::dm::{KernelDm, SnapshotStatus};
use crate::error::{Error, Result};
use crate::fstab::{self, CheckpointMode, CheckpointedPartition};
use crate::space;
use crate::state::{extents_hash, PartitionState, State, Store};
use crate::sys;

/// Checkpoint phase, as recorded in the state record (architecture.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Idle,
    /// Started; the first attempt has not been prepared yet.
    Armed,
    Checkpointing,
    RollingBack,
    Committing,
    /// Attempts used up (or aborted without retry): userdata is back at the
    /// baseline and NeedsRollback is true until the next StartCheckpoint or
    /// an explicit reset.
    RolledBack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    Snapshot,
    F2fs,
}

/// Status of the whole checkpoint (GetStatus).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StatusReport {
    pub phase: Phase,
    /// 1-based attempt of the current boot; 0 when not checkpointing.
    pub attempt: u32,
    pub attempts: u32,
    pub partitions: Vec<PartitionReport>,
    /// Set when checkpointing cannot work on this machine, with the reason.
    pub unavailable_reason: Option<String>,
    /// Set when rollback protection was lost (COW overflow, invalid snapshot).
    pub protection_lost: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PartitionReport {
    pub name: String,
    pub mount_point: String,
    pub backend: BackendKind,
    pub raw_device: String,
    /// "rewind-userdata: snapshot-origin", one line per dm device.
    pub device_stack: Vec<String>,
    pub cow_bytes: u64,
    pub cow_used_bytes: u64,
    pub chunk_sectors: u32,
    pub merge_done_sectors: u64,
    pub merge_total_sectors: u64,
    /// "Invalid", "Overflow", "Merge failed" when dm reports a word.
    pub snapshot_state: Option<String>,
    /// f2fs: bytes hidden as unusable while checkpoint=disable.
    pub unusable_bytes: u64,
}

/// One history entry (bounded list in the state record).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub time_unix: u64,
    /// started, attempt, rollback-begun, rollback-finished, committed,
    /// commit-begun, aborted, overflow, space-threshold, refused, ...
    pub kind: String,
    pub attempt: u32,
    pub attempts: u32,
    pub partition: String,
    pub detail: String,
    pub boot_reason: String,
}

/// Progress while PrepareUserdata runs (merge progress, steps).
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub step: String,
    pub partition: String,
    pub done_sectors: u64,
    pub total_sectors: u64,
}

/// What PrepareUserdata decided for this boot.
#[derive(Debug, Clone, PartialEq)]
pub struct PrepareOutcome {
    pub phase: Phase,
    pub attempt: u32,
    pub attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Supports {
    pub block: bool,
    pub file: bool,
}

/// Pushed to WatchStatus subscribers.
#[derive(Debug, Clone)]
pub enum Notice {
    Event(Event),
    Status(StatusReport),
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
    /// Block-mode partitions of the fstab.
    parts: Vec<PartRef>,
    fstab_parts: Vec<CheckpointedPartition>,
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
}

fn read_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

impl Engine {
    /// Loads and validates the state record and the fstab. Never fails just
    /// because device-mapper is missing: status then carries the reason and
    /// mutating calls return `Error::Unavailable`.
    pub fn open(config: Config) -> Result<Engine> {
        let backend: std::result::Result<Box<dyn Backend>, String> = match KernelDm::open() {
            Ok(dm) => Ok(Box::new(SnapshotBackend::new(
                &config,
                Box::new(dm),
                Box::new(SysIo { dev_dir: config.dev_mapper_dir.clone(), dev_nodes: config.dev_nodes }),
            ))),
            Err(e) => Err(format!("device-mapper is not available: {}", error_chain(&e))),
        };
        // checkpoint=fs entries add the f2fs backend (routed by partition).
        let backend = crate::backend::f2fs::select(&config, backend, Box::new(crate::backend::f2fs::KernelF2fs));
        Ok(Self::open_with(config, backend, read_boot_id(), sys::boot_reason()))
    }

    /// `open` with a given backend (or the reason there is none); host
    /// tests use it with a fake.
    pub fn open_with(
        config: Config,
        backend: std::result::Result<Box<dyn Backend>, String>,
        boot_id: String,
        boot_reason: String,
    ) -> Engine {
        let mut unavailable = Vec::new();
        let (fstab_parts, parts) = match fstab::load(&config.fstab)
            .and_then(|e| fstab::checkpointed(&e, &config.fstab, &config.dm_prefix, &config.dev_mapper_dir))
        {
            Ok(all) => {
                // Both modes: checkpoint=fs partitions go to the f2fs backend
                // (backend::f2fs::Routed).
                let block: Vec<PartRef> =
                    all.iter().map(|p| PartRef { name: p.name.clone(), raw_device: p.raw_device.clone() }).collect();
                if block.is_empty() {
                    unavailable
                        .push(format!("no checkpoint=block or checkpoint=fs partition in {}", config.fstab.display()));
                }
                (all, block)
            }
            Err(e) => {
                unavailable.push(error_chain(&e));
                (Vec::new(), Vec::new())
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
                            time_unix: boot::now_unix(),
                            kind: "state-recovered".into(),
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
            fstab_parts,
            backend,
            unavailable: if unavailable.is_empty() { None } else { Some(unavailable.join("; ")) },
            state_broken,
            boot_id,
            boot_reason,
            reboot_requested: false,
            merge_progress: Vec::new(),
        };
        let report = inner.report();
        Engine { inner: Mutex::new(inner), cached: Mutex::new(report), tx }
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

    pub fn start_checkpoint(&self, attempts: u32, reason: &str) -> Result<StatusReport> {
        if attempts == 0 || attempts > 100 {
            return Err(Error::InvalidArgument(format!("attempts must be 1..=100, got {attempts}")));
        }
        self.mutate(|inner, notify| {
            inner.usable()?;
            inner.start(attempts, reason, notify)?;
            Ok(inner.report())
        })
    }
    pub fn needs_checkpoint(&self) -> bool {
        matches!(self.lock().state.phase, Phase::Armed | Phase::Checkpointing | Phase::RollingBack)
    }
    pub fn needs_rollback(&self) -> bool {
        let inner = self.lock();
        let st = &inner.state;
        st.phase == Phase::RolledBack || (st.no_retry && matches!(st.phase, Phase::Armed | Phase::Checkpointing))
    }
    pub fn is_checkpointing(&self) -> bool {
        self.lock().state.phase == Phase::Checkpointing
    }
    /// Live commit. Returns the time the commit took.
    pub fn commit(&self, reason: &str) -> Result<Duration> {
        self.mutate(|inner, notify| {
            inner.usable()?;
            let hook_cmd = inner.config.commit_command.clone();
            let took = inner.with_ctx(notify, |ctx| {
                boot::commit(ctx, reason, &mut || {
                    sys::run_command(&hook_cmd).map_err(|e| Error::Internal(format!("commit command failed: {e}")))
                })
            })?;
            inner.cleanup_pending(notify);
            Ok(took)
        })
    }
    pub fn abort(&self, reason: &str, keep_retrying: bool) -> Result<StatusReport> {
        self.mutate(|inner, notify| {
            inner.usable()?;
            inner.with_ctx(notify, |ctx| boot::abort(ctx, reason, keep_retrying))?;
            Ok(inner.report())
        })
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
            r
        })
    }
    pub fn supports(&self) -> Supports {
        let inner = self.lock();
        // As vold: block = a checkpoint=block entry, file = a checkpoint=fs
        // entry; and only when rewind can act on them here.
        let ok = inner.unavailable.is_none();
        let has = |m: CheckpointMode| inner.fstab_parts.iter().any(|p| p.mode == m);
        Supports { block: ok && has(CheckpointMode::Block), file: ok && has(CheckpointMode::Fs) }
    }
    pub fn status(&self) -> StatusReport {
        match self.inner.try_lock() {
            Ok(inner) => {
                let r = inner.report();
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
            if inner.state.phase != Phase::Checkpointing && inner.state.pending_cleanup.is_empty() {
                return Ok(());
            }
        }
        self.mutate(|inner, notify| {
            inner.cleanup_pending(notify);
            inner.watch_space(notify)
        })
    }
}

impl Inner {
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
            history_limit: self.config.history_limit,
            boot_id: &self.boot_id,
            boot_reason: &self.boot_reason,
            has_commit_command: !self.config.commit_command.is_empty(),
            notify,
        };
        f(&mut ctx)
    }

    fn fstab_part(&self, name: &str) -> Option<&CheckpointedPartition> {
        self.fstab_parts.iter().find(|p| p.name == name)
    }

    /// StartCheckpoint: create and record the COW stores (phase Armed);
    /// the next prepare arms attempt 1.
    fn start(&mut self, attempts: u32, reason: &str, notify: &dyn Fn(&Event)) -> Result<()> {
        match self.state.phase {
            Phase::Idle | Phase::RolledBack => {}
            other => {
                return Err(Error::WrongPhase {
                    phase: format!("{other:?}"),
                    what: "start: a checkpoint is already running".into(),
                })
            }
        }
        let chunk = self.config.cow.chunk_sectors;
        if chunk < 8 || !chunk.is_power_of_two() {
            return Err(Error::Unavailable(format!("cow.chunk_sectors {chunk} is not a power of two >= 8")));
        }
        self.cleanup_pending(notify);
        let mut made: Vec<PartitionState> = Vec::new();
        let res = (|| -> Result<()> {
            for pr in self.parts.clone() {
                let fp = self
                    .fstab_part(&pr.name)
                    .cloned()
                    .ok_or_else(|| Error::Internal(format!("{} vanished from the fstab", pr.name)))?;
                let backend = self.backend.as_deref().ok_or_else(|| Error::Unavailable("no backend".into()))?;
                let raw_size = backend.check_mounted(&pr, &fp.mount_point)?;
                let mp = Path::new(&fp.mount_point);
                if fp.mode == CheckpointMode::Fs {
                    // f2fs mode keeps no COW store: the baseline is f2fs's
                    // last checkpoint before the next checkpoint=disable
                    // mount. Write one now so everything up to the start
                    // is in it even if this boot ends in a crash.
                    sys::checkpoint_fs(mp)?;
                    made.push(PartitionState {
                        name: pr.name.clone(),
                        mount_point: fp.mount_point.clone(),
                        fs_type: fp.fs_type.clone(),
                        backend: BackendKind::F2fs,
                        raw_device: pr.raw_device.clone(),
                        raw_size_bytes: raw_size,
                        chunk_sectors: chunk,
                        cow_sha256: extents_hash(&[]),
                        cow_files: Vec::new(),
                    });
                    continue;
                }
                // Files from an earlier, unrecorded start (a cut before the
                // record was written) are ours: remove them first.
                let stray = cowstore::stray_files(mp, &self.config.cow.dir);
                if !stray.is_empty() {
                    tracing::warn!(count = stray.len(), "removing stray COW files");
                    cowstore::remove_stray(&stray)?;
                }
                let free = sys::free_bytes(mp)?;
                let plan = cowstore::plan(free, &self.config.cow, &fp.mount_point)?;
                let files = cowstore::create(mp, &self.config.cow, &fp.fs_type, &plan)?;
                let mut part = PartitionState {
                    name: pr.name.clone(),
                    mount_point: fp.mount_point.clone(),
                    fs_type: fp.fs_type.clone(),
                    backend: BackendKind::Snapshot,
                    raw_device: pr.raw_device.clone(),
                    raw_size_bytes: raw_size,
                    chunk_sectors: chunk,
                    cow_sha256: extents_hash(&files),
                    cow_files: files,
                };
                made.push(part.clone());
                // Checkpoint the journal so a no-replay mount at boot sees
                // the files, then make sure the extents did not move.
                sys::checkpoint_fs(mp)?;
                cowstore::verify(&part.cow_files, &part.mount_point, mp)?;
                // The map must also pass the checks the boot applies
                // (bounds, overlap) now, not first at boot.
                cowstore::linear_table(&part.cow_files, devicemapper::Device { major: 0, minor: 0 }, raw_size)?;
                // What the boot checks without mounting (header on the raw
                // device, ext4 map fingerprint): recorded with the files.
                let backend = self.backend.as_deref().ok_or_else(|| Error::Unavailable("no backend".into()))?;
                backend.seal_store(&mut part)?;
                if let Some(last) = made.last_mut() {
                    *last = part;
                }
            }
            Ok(())
        })();
        if let Err(e) = res {
            for p in &made {
                let _ = cowstore::remove(&p.cow_files);
            }
            return Err(e);
        }
        let prev_history = std::mem::take(&mut self.state.history);
        let pending = std::mem::take(&mut self.state.pending_cleanup);
        self.state = State {
            seq: self.state.seq,
            phase: Phase::Armed,
            attempts,
            reason: reason.to_string(),
            started_unix: boot::now_unix(),
            partitions: made.clone(),
            pending_cleanup: pending,
            // An earlier commit's command still owed stays owed.
            commit_command_pending: self.state.commit_command_pending,
            history: prev_history,
            ..State::default()
        };
        let cow: u64 = made.iter().map(|p| p.cow_bytes()).sum();
        let files: usize = made.iter().map(|p| p.cow_files.len()).sum();
        let detail = format!("{reason} ({attempts} attempts, COW store {} MiB in {files} files)", cow >> 20);
        let saved = self.with_ctx(notify, |ctx| {
            ctx.record("started", "", detail);
            ctx.save()
        });
        if let Err(e) = saved {
            // Not recorded: the checkpoint does not exist; do not leave its
            // files behind.
            for p in &made {
                let _ = cowstore::remove(&p.cow_files);
            }
            self.state.phase = Phase::Idle;
            self.state.partitions.clear();
            return Err(e);
        }
        Ok(())
    }

    /// Deletes COW files of finished checkpoints once their filesystem is
    /// mounted through our top device again. Failures are logged and
    /// retried at the next poll.
    fn cleanup_pending(&mut self, notify: &dyn Fn(&Event)) {
        if self.state.pending_cleanup.is_empty() {
            return;
        }
        let Some(backend) = self.backend.as_deref() else { return };
        let mut left = Vec::new();
        let mut removed = 0usize;
        for f in std::mem::take(&mut self.state.pending_cleanup) {
            let owner = self
                .fstab_parts
                .iter()
                .filter(|p| p.mode == CheckpointMode::Block && Path::new(&f.path).starts_with(&p.mount_point))
                .max_by_key(|p| p.mount_point.len());
            let mounted = owner.is_some_and(|p| {
                backend
                    .check_mounted(&PartRef { name: p.name.clone(), raw_device: p.raw_device.clone() }, &p.mount_point)
                    .is_ok()
            });
            if !mounted {
                left.push(f);
                continue;
            }
            match cowstore::remove(std::slice::from_ref(&f)) {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(path = %f.path, error = %error_chain(&e), "COW file not removed yet");
                    left.push(f);
                }
            }
        }
        self.state.pending_cleanup = left;
        if removed > 0 {
            let _ = self.with_ctx(notify, |ctx| {
                ctx.record("cleanup", "", format!("{removed} COW files removed"));
                ctx.save()
            });
        }
    }

    fn watch_space(&mut self, notify: &dyn Fn(&Event)) -> Result<()> {
        if self.state.phase != Phase::Checkpointing || self.state.boot_id != self.boot_id {
            return Ok(());
        }
        let Some(backend) = self.backend.as_deref() else { return Ok(()) };
        let mut actions = Vec::new();
        for p in &self.state.partitions {
            if let Some(st) = backend.usage(p)? {
                // f2fs: the share of space hidden as unusable (backend::f2fs).
                let what = if p.backend == BackendKind::F2fs { "f2fs unusable space" } else { "COW store" };
                actions.push((
                    p.name.clone(),
                    what,
                    space::evaluate(&st, &self.config.space, &self.state.thresholds_hit),
                ));
            }
        }
        for (name, what, d) in actions {
            if !d.crossed.is_empty() {
                let pct = d.percent.unwrap_or(0);
                self.with_ctx(notify, |ctx| {
                    for t in &d.crossed {
                        ctx.record("space-threshold", &name, format!("{what} {pct}% used (crossed {t}%)"));
                        ctx.state.thresholds_hit.push(*t);
                    }
                    ctx.save()
                })?;
            }
            match d.action {
                space::Action::None => {}
                space::Action::Lost { word } => {
                    let why = format!(
                        "{name}: snapshot is '{word}' (COW store overflowed): rollback protection lost; \
                         the data is untouched and kept (committed)"
                    );
                    self.state.protection_lost = Some(why.clone());
                    self.with_ctx(notify, |ctx| {
                        ctx.record("overflow", &name, why.clone());
                        ctx.save()?;
                        boot::commit(ctx, "protection lost: COW store overflowed", &mut || Ok(()))
                    })?;
                    self.cleanup_pending(notify);
                    return Ok(());
                }
                space::Action::Commit { percent } => {
                    let why = format!("{what} {percent}% used; overflow policy commit");
                    self.state.protection_lost = Some(format!("{name}: committed early: {why}"));
                    self.with_ctx(notify, |ctx| {
                        ctx.record("overflow", &name, why.clone());
                        boot::commit(ctx, &why, &mut || Ok(()))
                    })?;
                    self.cleanup_pending(notify);
                    return Ok(());
                }
                space::Action::Abort { percent } => {
                    if self.reboot_requested {
                        continue;
                    }
                    self.reboot_requested = true;
                    let why = format!(
                        "{what} {percent}% used (abort at {}%): rebooting to discard this attempt",
                        self.config.space.abort_at_percent
                    );
                    self.with_ctx(notify, |ctx| boot::abort(ctx, &why, true))?;
                    let cmd = self.config.reboot_command.clone();
                    if let Err(e) = sys::run_command(&cmd) {
                        self.with_ctx(notify, |ctx| {
                            ctx.record("reboot-failed", &name, e.clone());
                            ctx.save()
                        })?;
                        return Err(Error::Internal(format!("reboot command failed: {e}")));
                    }
                }
            }
        }
        Ok(())
    }

    fn report(&self) -> StatusReport {
        let st = &self.state;
        let partitions = self
            .parts
            .iter()
            .map(|pr| {
                let fp = self.fstab_part(&pr.name);
                let rec = st.partitions.iter().find(|p| p.name == pr.name);
                let usage = match (self.backend.as_deref(), rec) {
                    (Some(b), Some(r)) => b.usage(r).ok().flatten(),
                    _ => None,
                };
                let progress = self.merge_progress.iter().find(|p| p.partition == pr.name);
                // f2fs reports its unusable share as a usage (backend::f2fs).
                let f2fs = fp.is_some_and(|p| p.mode == CheckpointMode::Fs);
                let used_bytes = match usage {
                    Some(SnapshotStatus::Usage { allocated, .. }) => allocated * 512,
                    _ => 0,
                };
                PartitionReport {
                    name: pr.name.clone(),
                    mount_point: fp.map(|p| p.mount_point.clone()).unwrap_or_default(),
                    backend: if f2fs { BackendKind::F2fs } else { BackendKind::Snapshot },
                    raw_device: pr.raw_device.clone(),
                    device_stack: self.backend.as_deref().map(|b| b.stack(&pr.name)).unwrap_or_default(),
                    cow_bytes: rec.map(|r| r.cow_bytes()).unwrap_or(0),
                    cow_used_bytes: if f2fs { 0 } else { used_bytes },
                    chunk_sectors: rec.map(|r| r.chunk_sectors).unwrap_or(self.config.cow.chunk_sectors),
                    merge_done_sectors: progress.map(|p| p.done_sectors).unwrap_or(0),
                    merge_total_sectors: progress.map(|p| p.total_sectors).unwrap_or(0),
                    snapshot_state: usage.and_then(|u| u.word()).map(str::to_string),
                    unusable_bytes: if f2fs { used_bytes } else { 0 },
                }
            })
            .collect();
        StatusReport {
            phase: st.phase,
            attempt: if st.phase == Phase::Checkpointing { st.attempt } else { 0 },
            attempts: st.attempts,
            partitions,
            unavailable_reason: match (&self.state_broken, &self.unavailable) {
                (Some(b), _) => Some(format!("state record unusable: {b}")),
                (None, u) => u.clone(),
            },
            protection_lost: st.protection_lost.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
