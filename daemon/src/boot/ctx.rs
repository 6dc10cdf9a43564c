//! What every life-cycle step works with, and the small moves they share:
//! recording an event, saving the record, retiring a finished checkpoint's
//! partitions, refusing.

use crate::backend::Backend;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fstab::CheckpointedPartition;
use crate::state::{State, Store};
use crate::sys;
use crate::types::{error_chain, Event, EventKind, Phase, PrepareOutcome};

/// Everything the life-cycle steps work with.
pub struct Ctx<'a> {
    pub backend: &'a mut dyn Backend,
    pub store: &'a mut Store,
    pub state: &'a mut State,
    /// The fstab's checkpointed partitions (for the idle stack and for
    /// creating stores).
    pub parts: &'a [CheckpointedPartition],
    pub config: &'a Config,
    pub boot_id: &'a str,
    pub boot_reason: &'a str,
    /// Called with each event as it is recorded (WatchStatus).
    pub notify: &'a dyn Fn(&Event),
}

impl Ctx<'_> {
    /// Adds an event to the history (saved with the next `save`).
    pub fn record(&mut self, kind: EventKind, partition: &str, detail: impl Into<String>) {
        let e = Event {
            time_unix: sys::now_unix(),
            kind: kind.as_str().to_string(),
            attempt: self.state.attempt,
            attempts: self.state.attempts,
            partition: partition.to_string(),
            detail: detail.into(),
            boot_reason: self.boot_reason.to_string(),
        };
        tracing::info!(kind = kind.as_str(), partition, detail = %e.detail, attempt = e.attempt, attempts = e.attempts, "event");
        (self.notify)(&e);
        self.state.push_event(e, self.config.history_limit);
    }

    pub fn save(&mut self) -> Result<()> {
        self.state.seq += 1;
        self.store.save(self.state)?;
        Ok(())
    }

    /// Whether a commit command is configured (`commit_command`): a commit
    /// finished at boot leaves it pending for the next commit call.
    pub fn has_commit_command(&self) -> bool {
        !self.config.commit_command.is_empty()
    }

    pub(super) fn outcome(&self) -> PrepareOutcome {
        PrepareOutcome {
            phase: self.state.phase,
            attempt: self.state.attempt,
            attempts: self.state.attempts,
            unlimited: self.state.unlimited,
        }
    }

    pub(super) fn ensure_idle_all(&mut self) -> Result<()> {
        for p in self.parts {
            self.backend.ensure_idle(p)?;
        }
        Ok(())
    }

    /// The checkpoint is over: its files wait for deletion until the
    /// filesystem is mounted again.
    pub(super) fn retire_partitions(&mut self) {
        for p in std::mem::take(&mut self.state.partitions) {
            self.state.pending_cleanup.extend(p.cow_files);
        }
        self.state.intent = None;
        self.state.rollback_failure = None;
        self.state.thresholds_hit.clear();
    }

    /// A check failed before anything was written: give up protection
    /// rather than write through a map we cannot trust, keep the data as it
    /// is, make the partition usable, record and report.
    pub(super) fn refuse(&mut self, partition: &str, err: Error) -> Result<PrepareOutcome> {
        let why = error_chain(&err);
        self.record(EventKind::Refused, partition, format!("rollback protection given up: {why}"));
        self.state.protection_lost = Some(why);
        self.retire_partitions();
        self.state.phase = Phase::Idle;
        self.save()?;
        self.ensure_idle_all()?;
        Err(err)
    }
}
