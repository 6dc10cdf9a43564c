//! Backends: how one partition is checkpointed. `snapshot` (block mode,
//! dm-snapshot over COW files) and `f2fs` (checkpoint=fs entries: f2fs's own
//! checkpoint=disable); `routed` sends each partition to its own.
//!
//! The boot logic (`boot`) decides *what* happens from the state record;
//! a backend does it to the devices. The trait is complete: creating the
//! store, the commit order and what a backend refuses are its methods and
//! [`Traits`], so no caller matches on the backend kind. Keeping the seam
//! here also lets the decision logic be tested on a host with a recording
//! backend (`fake`).

pub mod f2fs;
pub mod routed;
pub mod snapshot;

#[cfg(test)]
pub mod fake;

use crate::config::CowConfig;
use crate::cowstore;
use crate::dm::SnapshotStatus;
use crate::error::Result;
use crate::fstab::CheckpointedPartition;
use crate::state::{FreeMap, PartitionState};
use crate::types::{error_chain, BackendKind, Progress};

/// What a merge found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merged {
    /// Exceptions were copied back; the partition is at the baseline.
    Merged { sectors: u64 },
    /// The store was never armed (zero header): nothing to undo.
    Nothing,
}

/// What a backend's usage measures (the space watch applies the same
/// thresholds and policy to both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// Allocated sectors of the COW store.
    CowStore,
    /// Space f2fs hides as unusable while checkpointing is off.
    F2fsUnusable,
}

impl Usage {
    /// How events and status name it.
    pub fn name(self) -> &'static str {
        match self {
            Usage::CowStore => "COW store",
            Usage::F2fsUnusable => "f2fs unusable space",
        }
    }
}

/// The rules that differ from one backend to another, read by the life
/// cycle and the status report instead of matching on the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traits {
    pub kind: BackendKind,
    /// The attempt's data survives a power cut only once it is committed
    /// (f2fs: until the checkpoint=enable remount), so the commit command,
    /// which may mark the boot slot successful, must run after the data
    /// commit. Block mode keeps the data across a cut at any point and runs
    /// the command first.
    pub commit_data_first: bool,
    /// An `Unsafe` error from [`Backend::arm`] would recur at every boot (the
    /// kernel refuses checkpoint=disable in every form): the boot gives
    /// protection up at once, recorded, instead of retrying forever.
    pub arm_refusal_is_final: bool,
    pub usage: Usage,
}

pub trait Backend: Send {
    /// The rules for the fstab partition `name`.
    fn traits(&self, name: &str) -> Traits;
    /// Boot, no checkpoint active: the top device exists with its idle
    /// table (linear over the raw device), created or verified.
    fn ensure_idle(&mut self, part: &CheckpointedPartition) -> Result<()>;
    /// Running system, before creating a store: the filesystem must be
    /// mounted through the idle top device, which maps the raw device 1:1
    /// (so FIEMAP offsets are raw offsets). Returns the raw device's size in
    /// bytes.
    fn check_mounted(&self, part: &CheckpointedPartition) -> Result<u64>;
    /// Running system, StartCheckpoint, after `check_mounted`: creates the
    /// partition's store and everything the boot checks below it, and
    /// returns its record. Leaves nothing behind on error.
    fn create_store(&self, part: &CheckpointedPartition, cow: &CowConfig, raw_size: u64) -> Result<PartitionState>;
    /// Undoes `create_store` for a store that was never recorded (another
    /// partition failed, or the record could not be written). Best effort.
    fn discard_store(&self, part: &PartitionState) {
        if let Err(e) = cowstore::remove(&part.cow_files) {
            tracing::warn!(partition = %part.name, error = %error_chain(&e), "unrecorded COW files not removed");
        }
    }
    /// Re-reads the COW store's extents and compares them with the record.
    /// Any difference is an `Unsafe` error; nothing has been written.
    fn verify_store(&mut self, part: &PartitionState) -> Result<()>;
    /// Boot: discard everything written since the store was armed
    /// (snapshot-merge), leaving the idle table. Resumable: calling it again
    /// after a power cut finishes the same merge. `Unsafe` errors come only
    /// before anything was written (a refusal); later errors leave the merge
    /// to be resumed.
    fn merge(&mut self, part: &PartitionState, progress: &mut dyn FnMut(Progress)) -> Result<Merged>;
    /// Boot, a rollback's merge could not go on (`merge` failed after the
    /// intent): takes the partition's top device away, so nothing mounts
    /// the raw partition while it is neither the baseline nor the attempt
    /// (half merged), nor the merge device while its COW store fails (the
    /// kernel's merge is stopped, and writes would land in the failing
    /// store). The next boot builds the stack again and resumes the merge.
    /// Backends without a device stack have nothing to hold back.
    fn hold_back(&mut self, _part: &PartitionState) -> Result<()> {
        Ok(())
    }
    /// Boot, the last rollback (no attempt follows): starts the merge and
    /// returns without waiting, so the old system can mount the partition
    /// on the merging device while the kernel merges (snapshot-merge serves
    /// reads and writes meanwhile). `Some`: finished already (or the backend
    /// cannot merge in the background and did it all); `None`: running,
    /// finish it with `poll_background_merge`. Same refusals as `merge`.
    fn merge_in_background(&mut self, part: &PartitionState) -> Result<Option<Merged>> {
        self.merge(part, &mut |_| {}).map(Some)
    }
    /// One look at a merge `merge_in_background` left running: `Some` once
    /// it is over (the idle table, the store released).
    fn poll_background_merge(
        &mut self,
        part: &PartitionState,
        _progress: &mut dyn FnMut(Progress),
    ) -> Result<Option<Merged>> {
        Err(crate::error::Error::Internal(format!("{}: no merge runs in the background", part.name)))
    }
    /// Boot: start attempt number `attempt` (empty store, origin tracked).
    /// Returns how the baseline's free space is mapped, for the record
    /// (None: the backend has no such notion, as f2fs).
    fn arm(&mut self, part: &PartitionState, attempt: u32) -> Result<Option<FreeMap>>;
    /// Running system: drop the snapshot live, keeping every write.
    fn commit_live(&mut self, part: &PartitionState) -> Result<()>;
    /// Clean shutdown before the first attempt, the partition unmounted:
    /// the baseline's free map read through the crypt layer on the top
    /// device and sealed with raw ciphertext fingerprints
    /// (`ext4map::seal`), for the arms that cannot read the bitmaps. Err:
    /// why not (nothing is recorded then).
    fn seal_free_map(&self, part: &PartitionState) -> std::result::Result<crate::state::FreeMapSeal, String> {
        Err(format!("{}: this backend maps no free space", part.name))
    }
    /// Whether the stack of an armed attempt is live in this boot.
    fn is_armed(&self, part: &PartitionState) -> Result<bool>;
    /// Usage of the live snapshot (or f2fs's unusable space), if one is
    /// loaded.
    fn usage(&self, part: &PartitionState) -> Result<Option<SnapshotStatus>>;
    /// "rewind-userdata: snapshot-origin", one line per existing device.
    fn stack(&self, name: &str) -> Vec<String>;
    /// Bytes written since this boot's arm into the chunks the armed top
    /// device maps linear (never copied, so not in `usage`). Asked only
    /// while this boot's attempt is armed over a free map; `Err` says why
    /// the figure is unknown.
    fn free_written_bytes(&self, part: &PartitionState) -> std::result::Result<u64, String> {
        Err(format!("{}: this backend maps no free space", part.name))
    }
    /// Boot, before finishing a commit a power cut interrupted: what is
    /// known about the attempt's data, for the history (f2fs: whether the
    /// cut came before f2fs checkpointed it). None: nothing to add.
    fn interrupted_commit_note(&self, _part: &PartitionState) -> Option<String> {
        None
    }
}
