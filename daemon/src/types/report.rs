//! The status of the whole checkpoint and of each partition (GetStatus).

use serde::Serialize;

use super::{BackendKind, Phase, SlotState};

/// Status of the whole checkpoint (GetStatus).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    pub phase: Phase,
    /// 1-based attempt of the current boot; 0 when not checkpointing.
    pub attempt: u32,
    pub attempts: u32,
    /// The checkpoint runs until commit or abort (`attempts` is 0).
    pub unlimited: bool,
    pub partitions: Vec<PartitionReport>,
    /// Set when checkpointing cannot work on this machine, with the reason.
    pub unavailable_reason: Option<String>,
    /// Set when rollback protection was lost (COW overflow, invalid snapshot).
    pub protection_lost: Option<String>,
    /// The running boot slot's state, as the slot query last said.
    #[serde(serialize_with = "slot_word")]
    pub slot: SlotState,
    /// Set while a begun commit has failed at least once and is not done.
    pub commit_failure: Option<CommitFailureReport>,
    /// Set while a pending rollback could not go on (the kernel's words and
    /// what to do); the next boot resumes it.
    pub rollback_failure: Option<String>,
}

/// A commit whose data commit failed (phase committing): how often, the
/// last error, whether boots still retry it, and what to do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommitFailureReport {
    /// Failed data commits since the commit intent.
    pub failures: u32,
    /// `commit_max_failures`: at this count boots stop retrying.
    pub limit: u32,
    /// The last failure's error (the kernel's or backend's words).
    pub last_error: String,
    /// Boots still retry the commit (failures below the limit).
    pub retried_at_boot: bool,
    /// What to do about it.
    pub fix: String,
}

fn slot_word<S: serde::Serializer>(slot: &SlotState, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(slot.as_str())
}

#[derive(Debug, Clone, PartialEq, Serialize)]
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
    /// How the last arm mapped the baseline's free space; None before the
    /// first arm and on f2fs.
    pub free_map: Option<FreeMapReport>,
}

/// How the armed top device treats the chunks the baseline leaves free
/// (`cow.free_map`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FreeMapReport {
    /// Free chunks are mapped linear: written in place, never copied.
    pub mapped: bool,
    /// Chunks in the device.
    pub chunks: u64,
    /// Chunks mapped linear.
    pub linear_chunks: u64,
    /// Linear runs in the armed table.
    pub segments: u32,
    /// How the map was taken, or why it was not used.
    pub detail: String,
    /// Bytes written into the chunks mapped linear since this boot's arm
    /// (dm-stats counters on the top device; every write counts, the same
    /// block written twice counts twice). Set only while this boot's
    /// attempt is armed over the map and the counters could be read.
    pub free_written_bytes: Option<u64>,
    /// Why `free_written_bytes` is unknown while the attempt is armed over
    /// the map (the counters could not be set up or read).
    pub free_written_unknown: Option<String>,
    /// Linear runs whose writes `free_written_bytes` counts (the
    /// `cow.free_counted_runs` longest; 0 when there is no figure). Fewer
    /// than `segments`: the figure is a lower bound.
    pub free_written_segments: u32,
    /// Chunks in those runs, of `linear_chunks`.
    pub free_written_chunks: u64,
}

/// What SealFreeMap did for one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SealOutcome {
    pub partition: String,
    /// A seal is recorded (the arm of the next attempt checks it).
    pub sealed: bool,
    /// What was sealed, or why nothing was.
    pub detail: String,
}
