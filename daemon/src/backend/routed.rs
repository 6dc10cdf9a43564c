//! Which backend serves which partition: block-mode (`checkpoint=block`)
//! partitions go to the snapshot backend, `checkpoint=fs` ones to f2fs.
//! [`select`] takes the fstab already parsed (the engine parses it once).

use super::f2fs::{F2fsBackend, F2fsSys};
use super::{Backend, Merged, Traits};
use crate::config::CowConfig;
use crate::dm::SnapshotStatus;
use crate::error::{Error, Result};
use crate::fstab::{CheckpointMode, CheckpointedPartition};
use crate::state::{FreeMap, PartitionState};
use crate::types::{error_chain, BackendKind, Progress};

/// Routes each partition to its backend.
pub struct Routed {
    /// The snapshot backend, or why there is none (no device-mapper).
    pub snapshot: std::result::Result<Box<dyn Backend>, String>,
    pub f2fs: Box<dyn Backend>,
    /// Names of the checkpoint=fs partitions.
    pub fs_names: Vec<String>,
}

impl Routed {
    fn by_kind(&self, kind: BackendKind) -> Result<&dyn Backend> {
        match kind {
            BackendKind::F2fs => Ok(self.f2fs.as_ref()),
            BackendKind::Snapshot => self.snapshot.as_deref().map_err(|why| Error::Unavailable(why.clone())),
        }
    }
    fn by_kind_mut(&mut self, kind: BackendKind) -> Result<&mut dyn Backend> {
        match kind {
            BackendKind::F2fs => Ok(self.f2fs.as_mut()),
            BackendKind::Snapshot => match &mut self.snapshot {
                Ok(b) => Ok(b.as_mut()),
                Err(why) => Err(Error::Unavailable(why.clone())),
            },
        }
    }
    fn kind_of(&self, name: &str) -> BackendKind {
        if self.fs_names.iter().any(|n| n == name) {
            BackendKind::F2fs
        } else {
            BackendKind::Snapshot
        }
    }
}

impl Backend for Routed {
    fn traits(&self, name: &str) -> Traits {
        match self.by_kind(self.kind_of(name)) {
            Ok(b) => b.traits(name),
            // No snapshot backend: nothing will be armed; the kind is still
            // what the fstab says.
            Err(_) => super::snapshot::SnapshotBackend::TRAITS,
        }
    }
    fn ensure_idle(&mut self, part: &CheckpointedPartition) -> Result<()> {
        let k = self.kind_of(&part.name);
        self.by_kind_mut(k)?.ensure_idle(part)
    }
    fn check_mounted(&self, part: &CheckpointedPartition) -> Result<u64> {
        self.by_kind(self.kind_of(&part.name))?.check_mounted(part)
    }
    fn create_store(&self, part: &CheckpointedPartition, cow: &CowConfig, raw_size: u64) -> Result<PartitionState> {
        self.by_kind(self.kind_of(&part.name))?.create_store(part, cow, raw_size)
    }
    fn discard_store(&self, part: &PartitionState) {
        if let Ok(b) = self.by_kind(part.backend) {
            b.discard_store(part)
        }
    }
    fn verify_store(&mut self, part: &PartitionState) -> Result<()> {
        self.by_kind_mut(part.backend)?.verify_store(part)
    }
    fn merge(&mut self, part: &PartitionState, progress: &mut dyn FnMut(Progress)) -> Result<Merged> {
        self.by_kind_mut(part.backend)?.merge(part, progress)
    }
    fn merge_in_background(&mut self, part: &PartitionState) -> Result<Option<Merged>> {
        self.by_kind_mut(part.backend)?.merge_in_background(part)
    }
    fn poll_background_merge(
        &mut self,
        part: &PartitionState,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Option<Merged>> {
        self.by_kind_mut(part.backend)?.poll_background_merge(part, progress)
    }
    fn arm(&mut self, part: &PartitionState, attempt: u32) -> Result<Option<FreeMap>> {
        self.by_kind_mut(part.backend)?.arm(part, attempt)
    }
    fn commit_live(&mut self, part: &PartitionState) -> Result<()> {
        self.by_kind_mut(part.backend)?.commit_live(part)
    }
    fn seal_free_map(&self, part: &PartitionState) -> std::result::Result<crate::state::FreeMapSeal, String> {
        self.by_kind(part.backend).map_err(|e| crate::types::error_chain(&e))?.seal_free_map(part)
    }
    fn is_armed(&self, part: &PartitionState) -> Result<bool> {
        self.by_kind(part.backend)?.is_armed(part)
    }
    fn usage(&self, part: &PartitionState) -> Result<Option<SnapshotStatus>> {
        self.by_kind(part.backend)?.usage(part)
    }
    fn stack(&self, name: &str) -> Vec<String> {
        self.by_kind(self.kind_of(name)).map(|b| b.stack(name)).unwrap_or_default()
    }
    fn free_written_bytes(&self, part: &PartitionState) -> std::result::Result<u64, String> {
        self.by_kind(part.backend).map_err(|e| error_chain(&e))?.free_written_bytes(part)
    }
    fn interrupted_commit_note(&self, part: &PartitionState) -> Option<String> {
        self.by_kind(part.backend).ok()?.interrupted_commit_note(part)
    }
}

/// The backend for this fstab (`parts`: its checkpointed entries, or why
/// it could not be read): the snapshot backend alone when no entry is
/// `checkpoint=fs` (unchanged block mode); otherwise both, routed. When a
/// `checkpoint=block` entry exists and device-mapper is missing, the reason
/// stands for the whole daemon.
pub fn select<E>(
    parts: &std::result::Result<Vec<CheckpointedPartition>, E>,
    snapshot: std::result::Result<Box<dyn Backend>, String>,
    sys: Box<dyn F2fsSys>,
) -> std::result::Result<Box<dyn Backend>, String> {
    // A bad fstab: the engine reports the fstab problem itself.
    let Ok(parts) = parts else { return snapshot };
    let fs_names: Vec<String> = parts.iter().filter(|p| p.mode == CheckpointMode::Fs).map(|p| p.name.clone()).collect();
    if fs_names.is_empty() {
        return snapshot;
    }
    let has_block = parts.iter().any(|p| p.mode == CheckpointMode::Block);
    if has_block {
        if let Err(why) = &snapshot {
            return Err(why.clone());
        }
    }
    Ok(Box::new(Routed { snapshot, f2fs: Box::new(F2fsBackend::new(parts.clone(), sys)), fs_names }))
}
