//! Backends: how one partition is checkpointed. `snapshot` (block mode,
//! dm-snapshot over COW files) and `f2fs` (checkpoint=fs entries: f2fs's own
//! checkpoint=disable); `f2fs::Routed` sends each partition to its own.
//!
//! The boot logic (`boot`) decides *what* happens from the state record;
//! a backend does it to the devices. Keeping the seam here also lets the
//! decision logic be tested on a host with a recording backend.

pub mod f2fs;
pub mod snapshot;

#[cfg(test)]
pub mod fake;

use crate::dm::SnapshotStatus;
use crate::engine::Progress;
use crate::error::Result;
use crate::state::PartitionState;

/// What a merge found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merged {
    /// Exceptions were copied back; the partition is at the baseline.
    Merged { sectors: u64 },
    /// The store was never armed (zero header): nothing to undo.
    Nothing,
}

/// A partition as the fstab names it (enough to build the idle stack).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRef {
    pub name: String,
    pub raw_device: String,
}

pub trait Backend: Send {
    /// Boot, no checkpoint active: the top device exists with its idle
    /// table (linear over the raw device), created or verified.
    fn ensure_idle(&mut self, part: &PartRef) -> Result<()>;
    /// Re-reads the COW store's extents and compares them with the record.
    /// Any difference is an `Unsafe` error; nothing has been written.
    fn verify_store(&mut self, part: &PartitionState) -> Result<()>;
    /// Running system, at start, after the COW files are created,
    /// checkpointed and verified through the filesystem: prepare what the
    /// boot checks below it (block mode: the store's header zeroed on the
    /// raw device, the ext4 map fingerprint recorded into `part`).
    fn seal_store(&self, _part: &mut PartitionState) -> Result<()> {
        Ok(())
    }
    /// Boot: discard everything written since the store was armed
    /// (snapshot-merge), leaving the idle table. Resumable: calling it again
    /// after a power cut finishes the same merge. `Unsafe` errors come only
    /// before anything was written (a refusal); later errors leave the merge
    /// to be resumed.
    fn merge(&mut self, part: &PartitionState, progress: &mut dyn FnMut(Progress)) -> Result<Merged>;
    /// Boot: start a fresh attempt (empty store, origin tracked).
    fn arm(&mut self, part: &PartitionState) -> Result<()>;
    /// Running system: drop the snapshot live, keeping every write.
    fn commit_live(&mut self, part: &PartitionState) -> Result<()>;
    /// Whether the stack of an armed attempt is live in this boot.
    fn is_armed(&self, part: &PartitionState) -> Result<bool>;
    /// COW usage of the live snapshot, if one is loaded.
    fn usage(&self, part: &PartitionState) -> Result<Option<SnapshotStatus>>;
    /// Running system, before creating a COW store: the filesystem at
    /// `mount_point` must be mounted through the idle top device, which
    /// maps the raw device 1:1 (so FIEMAP offsets are raw offsets).
    /// Returns the raw device's size in bytes.
    fn check_mounted(&self, part: &PartRef, mount_point: &str) -> Result<u64>;
    /// "rewind-userdata: snapshot-origin", one line per existing device.
    fn stack(&self, name: &str) -> Vec<String>;
    /// Boot, before finishing a commit a power cut interrupted: what is
    /// known about the attempt's data, for the history (f2fs: whether the
    /// cut came before f2fs checkpointed it). None: nothing to add.
    fn interrupted_commit_note(&self, _part: &PartitionState) -> Option<String> {
        None
    }
}
