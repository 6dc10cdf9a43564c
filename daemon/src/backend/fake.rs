//! A recording backend for host tests of the life cycle and the engine.

use std::sync::{Arc, Mutex};

use super::{Backend, Merged, Traits};
use crate::config::CowConfig;
use crate::dm::SnapshotStatus;
use crate::error::{Error, Result};
use crate::fstab::CheckpointedPartition;
use crate::state::{FreeMap, PartitionState};
use crate::types::{ErrorKind, Progress};

#[derive(Default)]
pub struct FakeBackend {
    pub ops: Vec<String>,
    pub armed: bool,
    /// op name -> error kind to return once.
    pub fail: Option<(&'static str, ErrorKind)>,
    /// A background merge runs for this many looks (None: merges finish at
    /// once, as a waited-for merge).
    pub background_looks: Option<u32>,
    /// What `arm` reports of free space (None: nothing, as f2fs).
    pub free_map: Option<FreeMap>,
    /// What `free_written_bytes` answers, and how often it was asked
    /// (shared, so a test sees it after the engine took the backend).
    pub free_written: Arc<Mutex<FreeWrittenProbe>>,
    /// What `seal_free_map` returns (None: the default refusal).
    pub seal: Option<crate::state::FreeMapSeal>,
}

#[derive(Debug)]
pub struct FreeWrittenProbe {
    pub answer: std::result::Result<u64, String>,
    pub reads: usize,
    /// How long a reading takes (the kernel's takes one message per run).
    pub delay: std::time::Duration,
}

impl Default for FreeWrittenProbe {
    fn default() -> Self {
        FreeWrittenProbe { answer: Ok(0), reads: 0, delay: std::time::Duration::ZERO }
    }
}

impl FakeBackend {
    fn step(&mut self, op: &str) -> Result<()> {
        self.ops.push(op.to_string());
        if let Some((f, kind)) = self.fail {
            if f == op {
                self.fail = None;
                return Err(match kind {
                    ErrorKind::Unsafe => Error::Unsafe(format!("{op}: extents changed")),
                    _ => Error::Internal(format!("{op}: power cut")),
                });
            }
        }
        Ok(())
    }
}

impl Backend for FakeBackend {
    fn seal_free_map(&self, part: &PartitionState) -> std::result::Result<crate::state::FreeMapSeal, String> {
        self.seal.clone().ok_or_else(|| format!("{}: no crypt layer in the fake", part.name))
    }
    /// The snapshot backend's rules: the life cycle under test is block
    /// mode's.
    fn traits(&self, _name: &str) -> Traits {
        super::snapshot::SnapshotBackend::TRAITS
    }
    /// Real COW files (fallocate, zeroes, FIEMAP, immutable) without the
    /// device work, so the engine's host tests run the whole start.
    fn create_store(&self, part: &CheckpointedPartition, cow: &CowConfig, raw_size: u64) -> Result<PartitionState> {
        super::snapshot::create_cow_files(part, cow, raw_size)
    }
    fn ensure_idle(&mut self, _part: &CheckpointedPartition) -> Result<()> {
        self.step("idle")
    }
    fn verify_store(&mut self, _part: &PartitionState) -> Result<()> {
        self.step("verify")
    }
    fn merge(&mut self, _part: &PartitionState, progress: &mut dyn FnMut(Progress)) -> Result<Merged> {
        self.step("merge")?;
        self.armed = false;
        progress(Progress { step: "merge".into(), partition: "userdata".into(), done_sectors: 8, total_sectors: 8 });
        Ok(Merged::Merged { sectors: 8 })
    }
    fn hold_back(&mut self, _part: &PartitionState) -> Result<()> {
        self.step("hold-back")
    }
    fn merge_in_background(&mut self, part: &PartitionState) -> Result<Option<Merged>> {
        if self.background_looks.is_none() {
            return self.merge(part, &mut |_| {}).map(Some);
        }
        self.step("merge-bg")?;
        Ok(None)
    }
    fn poll_background_merge(
        &mut self,
        _part: &PartitionState,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Option<Merged>> {
        self.step("merge-look")?;
        let left = self.background_looks.as_mut().ok_or_else(|| Error::Internal("no background merge".into()))?;
        progress(Progress {
            step: "merge".into(),
            partition: "userdata".into(),
            done_sectors: 8 - u64::from((*left).min(8)),
            total_sectors: 8,
        });
        if *left > 0 {
            *left -= 1;
            return Ok(None);
        }
        self.armed = false;
        Ok(Some(Merged::Merged { sectors: 8 }))
    }
    fn arm(&mut self, _part: &PartitionState, _attempt: u32) -> Result<Option<FreeMap>> {
        self.step("arm")?;
        self.armed = true;
        Ok(self.free_map.clone())
    }
    fn commit_live(&mut self, _part: &PartitionState) -> Result<()> {
        self.step("commit")?;
        self.armed = false;
        Ok(())
    }
    fn is_armed(&self, _part: &PartitionState) -> Result<bool> {
        Ok(self.armed)
    }
    fn usage(&self, _part: &PartitionState) -> Result<Option<SnapshotStatus>> {
        Ok(None)
    }
    fn check_mounted(&self, _part: &CheckpointedPartition) -> Result<u64> {
        // Larger than any host disk, so real FIEMAP offsets fit.
        Ok(1 << 50)
    }
    fn stack(&self, _name: &str) -> Vec<String> {
        Vec::new()
    }
    fn free_written_bytes(&self, _part: &PartitionState) -> std::result::Result<u64, String> {
        let mut p = self.free_written.lock().unwrap_or_else(|p| p.into_inner());
        p.reads += 1;
        std::thread::sleep(p.delay);
        p.answer.clone()
    }
}
