//! The engine: the one owner of checkpoint state and of the dm devices. The
//! gRPC service (`service`) calls only this API; everything here is
//! blocking and thread-safe (the service runs calls on tokio's blocking
//! pool). Types here are the daemon's own; `service` converts them to and
//! from `rewind_proto` messages.
//!
//! CONTRACT between the core (fstab/state/fiemap/dm/backend/boot/space) and
//! the service edge. Signatures may grow fields, but keep the meaning.

use std::time::Duration;

use crate::config::Config;
use crate::error::Result;

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

pub struct Engine {
    _config: Config,
}

impl Engine {
    /// Loads and validates the state record and the fstab. Never fails just
    /// because device-mapper is missing: status then carries the reason and
    /// mutating calls return `Error::Unavailable`.
    pub fn open(config: Config) -> Result<Engine> {
        let _ = config;
        todo!("core")
    }

    pub fn start_checkpoint(&self, attempts: u32, reason: &str) -> Result<StatusReport> {
        let _ = (attempts, reason);
        todo!("core")
    }
    pub fn needs_checkpoint(&self) -> bool {
        todo!("core")
    }
    pub fn needs_rollback(&self) -> bool {
        todo!("core")
    }
    pub fn is_checkpointing(&self) -> bool {
        todo!("core")
    }
    /// Live commit. Returns the time the commit took.
    pub fn commit(&self, reason: &str) -> Result<Duration> {
        let _ = reason;
        todo!("core")
    }
    pub fn abort(&self, reason: &str, keep_retrying: bool) -> Result<StatusReport> {
        let _ = (reason, keep_retrying);
        todo!("core")
    }
    /// The boot-time step (boot contract). Calls `progress` while a merge
    /// runs (at least every second).
    pub fn prepare_userdata(&self, progress: &mut dyn FnMut(Progress)) -> Result<PrepareOutcome> {
        let _ = progress;
        todo!("core")
    }
    pub fn supports(&self) -> Supports {
        todo!("core")
    }
    pub fn status(&self) -> StatusReport {
        todo!("core")
    }
    pub fn history(&self) -> Vec<Event> {
        todo!("core")
    }
    /// Events (history entries as they are recorded, threshold crossings)
    /// for WatchStatus.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Notice> {
        todo!("core")
    }
    /// One pass of the space watch (called by rewindd every
    /// `space.poll_interval_ms`): reads COW usage, emits threshold events,
    /// applies the overflow policy.
    pub fn poll_space(&self) -> Result<()> {
        todo!("core")
    }
}
