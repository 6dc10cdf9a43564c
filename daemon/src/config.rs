//! rewindd's configuration: a TOML file whose every key has a default that
//! serves, overridden by command-line flags. Every key is documented in the
//! README ("Configuration").

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// fs_mgr fstab naming the checkpointed partitions.
    pub fstab: PathBuf,
    /// Where the state record lives (on /metadata).
    pub metadata_dir: PathBuf,
    /// Unix socket to serve on when init did not hand one over
    /// (ANDROID_SOCKET_rewindd).
    pub socket: PathBuf,
    /// Also serve on TCP (test guests only).
    pub listen_tcp: Option<SocketAddr>,
    /// Uids allowed to call mutating RPCs (root and system).
    pub allowed_uids: Vec<u32>,
    /// Prefix of the dm device names: "<prefix>-<partition>[-cow|-snap]".
    pub dm_prefix: String,
    /// Directory holding dm device nodes made without udev.
    pub dev_mapper_dir: PathBuf,
    pub cow: CowConfig,
    pub space: SpaceConfig,
    /// Entries kept in the history.
    pub history_limit: usize,
    /// Command run to reboot (abort policy, AbortChanges with reboot).
    pub reboot_command: Vec<String>,
    /// Optional command run as a logged step of commit (e.g. mark the boot
    /// slot successful); empty = none.
    pub commit_command: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CowConfig {
    /// Directory (relative to the partition's mount point) for cow.NNNN.
    pub dir: String,
    /// Share of the free space to reserve for the COW store, percent.
    pub free_share_percent: u32,
    /// Smallest acceptable COW store; refuse to start below it.
    pub min_bytes: u64,
    /// Largest COW store.
    pub max_bytes: u64,
    /// Split the store into files of at most this size.
    pub file_max_bytes: u64,
    /// dm-snapshot chunk size in 512-byte sectors (power of two, >= 8).
    pub chunk_sectors: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OverflowPolicy {
    /// Before the store is full (at `abort_at_percent`): record, then reboot
    /// so the attempt is discarded. Default: never lose protection silently.
    Abort,
    /// Commit the attempt (keeps data, ends protection), recorded.
    Commit,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpaceConfig {
    /// WatchStatus events when COW usage crosses these percentages.
    pub thresholds_percent: Vec<u32>,
    pub overflow_policy: OverflowPolicy,
    /// Usage at which the abort policy acts.
    pub abort_at_percent: u32,
    pub poll_interval_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            fstab: PathBuf::from("/vendor/etc/fstab.rewind"),
            metadata_dir: PathBuf::from("/metadata/rewind"),
            socket: PathBuf::from("/dev/socket/rewindd"),
            listen_tcp: None,
            allowed_uids: vec![0, 1000],
            dm_prefix: "rewind".to_string(),
            dev_mapper_dir: PathBuf::from("/dev/mapper"),
            cow: CowConfig::default(),
            space: SpaceConfig::default(),
            history_limit: 64,
            reboot_command: vec!["reboot".to_string()],
            commit_command: Vec::new(),
        }
    }
}

impl Default for CowConfig {
    fn default() -> Self {
        CowConfig {
            dir: "rewind".to_string(),
            free_share_percent: 25,
            min_bytes: 16 << 20,
            max_bytes: 16 << 30,
            file_max_bytes: 1 << 30,
            chunk_sectors: 8,
        }
    }
}

impl Default for SpaceConfig {
    fn default() -> Self {
        SpaceConfig {
            thresholds_percent: vec![50, 80],
            overflow_policy: OverflowPolicy::Abort,
            abort_at_percent: 95,
            poll_interval_ms: 1000,
        }
    }
}
