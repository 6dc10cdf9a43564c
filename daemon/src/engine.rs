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

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::backend::snapshot::{SnapshotBackend, SysIo};
use crate::backend::{routed, Backend, Usage};
use crate::boot;
use crate::config::Config;
use crate::dm::{KernelDm, SnapshotStatus};
use crate::error::{Error, Result};
use crate::fstab::{self, CheckpointMode, CheckpointedPartition};
use crate::state::{State, Store};
use crate::sys;
use crate::types::{
    error_chain, Event, EventKind, PartitionReport, Phase, PrepareOutcome, Progress, StatusReport, Supports,
};

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
            inner.with_ctx(notify, |ctx| boot::start(ctx, attempts, reason))?;
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
        let has = |m: CheckpointMode| inner.parts.iter().any(|p| p.mode == m);
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
            let cmd = inner.config.reboot_command.clone();
            let mut reboot_requested = inner.reboot_requested;
            let r = inner
                .with_ctx(notify, |ctx| boot::space::watch(ctx, &mut reboot_requested, &mut || sys::run_command(&cmd)));
            inner.reboot_requested = reboot_requested;
            r
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
