//! Fixtures the daemon's unit tests share: COW files, partition records,
//! fstab entries and state records, each built the way rewindd builds them
//! (a partition's extent hash always matches its files).

use crate::config::Config;
use crate::fiemap::Extent;
use crate::fstab::{CheckpointMode, CheckpointedPartition};
use crate::state::{extents_hash, CowFile, PartitionState, State};
use crate::types::{BackendKind, Phase};

/// The partition name and mount point every fixture uses.
pub const NAME: &str = "userdata";
pub const MOUNT_POINT: &str = "/data";

/// A COW file made of `extents` (logical, physical, length in bytes), its
/// size their sum; no fingerprint.
pub fn cow_file(path: &str, extents: &[(u64, u64, u64)]) -> CowFile {
    CowFile {
        path: path.to_string(),
        size_bytes: extents.iter().map(|e| e.2).sum(),
        extents: extents.iter().map(|&(logical, physical, length)| Extent { logical, physical, length }).collect(),
        fingerprint: Vec::new(),
        inode: 0,
    }
}

/// A block-mode (ext4, dm-snapshot) partition record over `raw_device` of
/// `raw_size` bytes with `files` as its store.
pub fn snapshot_part(raw_device: &str, raw_size: u64, files: Vec<CowFile>) -> PartitionState {
    PartitionState {
        name: NAME.into(),
        mount_point: MOUNT_POINT.into(),
        fs_type: "ext4".into(),
        backend: BackendKind::Snapshot,
        raw_device: raw_device.into(),
        raw_size_bytes: raw_size,
        chunk_sectors: 8,
        cow_sha256: extents_hash(&files),
        free_map: None,
        free_map_seal: None,
        cow_files: files,
    }
}

/// An f2fs-mode (checkpoint=fs) partition record: no store.
pub fn f2fs_part(raw_device: &str, raw_size: u64) -> PartitionState {
    PartitionState {
        fs_type: "f2fs".into(),
        backend: BackendKind::F2fs,
        ..snapshot_part(raw_device, raw_size, Vec::new())
    }
}

/// The fstab entry of a checkpointed userdata in `mode`.
pub fn fstab_entry(
    mode: CheckpointMode,
    blk_device: &str,
    raw_device: &str,
    options: &[&str],
) -> CheckpointedPartition {
    CheckpointedPartition {
        name: NAME.into(),
        mount_point: MOUNT_POINT.into(),
        fs_type: match mode {
            CheckpointMode::Block => "ext4".into(),
            CheckpointMode::Fs => "f2fs".into(),
        },
        mode,
        blk_device: blk_device.into(),
        raw_device: raw_device.into(),
        mnt_options: options.iter().map(|o| o.to_string()).collect(),
    }
}

/// A record just started with `attempts` over `partitions` (phase Armed).
pub fn armed_state(attempts: u32, partitions: Vec<PartitionState>) -> State {
    State { phase: Phase::Armed, attempts, partitions, ..State::default() }
}

/// A host directory standing in for a device: a data directory (the
/// mount point), an fstab naming it with `line` (`{data}` is replaced by
/// its path) and a metadata directory, with a config pointing at both.
pub struct HostDirs {
    _dir: tempfile::TempDir,
    pub data: std::path::PathBuf,
    pub config: Config,
}

impl HostDirs {
    pub fn new(line: &str) -> HostDirs {
        let dir = tempfile::tempdir().expect("tmp");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data");
        let fstab = dir.path().join("fstab");
        std::fs::write(&fstab, format!("{}\n", line.replace("{data}", &data.display().to_string()))).expect("fstab");
        let config = Config { fstab, metadata_dir: dir.path().join("metadata"), ..Config::default() };
        HostDirs { _dir: dir, data, config }
    }
}
