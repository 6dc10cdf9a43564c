//! rewindd's configuration: a TOML file whose every key has a default that
//! serves, overridden by command-line flags. Every key is documented in
//! `daemon/CONFIG.md` and `daemon/rewindd.example.toml` (keep the three in
//! step; a test checks that the example parses to the defaults).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    /// Permission bits of the socket file rewindd creates itself (not the
    /// one init hands over). Read-only calls are open to anyone who can
    /// connect; mutating calls are checked against `allowed_uids` anyway.
    pub socket_mode: u32,
    /// Also serve on TCP (test guests only).
    pub listen_tcp: Option<SocketAddr>,
    /// TCP callers carry no uid. When true they may call mutating RPCs; when
    /// false they get PERMISSION_DENIED. `--listen-tcp` on the command line
    /// implies true (test guests); a `listen_tcp` set only in the file does
    /// not.
    pub tcp_trusted: bool,
    /// Uids allowed to call mutating RPCs (root and system).
    pub allowed_uids: Vec<u32>,
    /// Prefix of the dm device names: "<prefix>-<partition>[-cow|-snap]".
    pub dm_prefix: String,
    /// Directory holding dm device nodes made without udev.
    pub dev_mapper_dir: PathBuf,
    /// Who makes the dm device nodes in `dev_mapper_dir`.
    pub dev_nodes: DevNodes,
    pub cow: CowConfig,
    pub space: SpaceConfig,
    /// Entries kept in the history.
    pub history_limit: usize,
    /// Command run to reboot (abort policy, AbortChanges with reboot). An
    /// argument `{reason}` is replaced by the reboot reason (one word of
    /// `[a-z0-9_,.:-]`, see [`reboot_reason_word`]), so the next boot's
    /// reason carries it, as vold's abort does (`reboot,<reason>`).
    pub reboot_command: Vec<String>,
    /// Optional command run as a logged step of commit (e.g. mark the boot
    /// slot successful); empty = none.
    pub commit_command: Vec<String>,
    /// Failed data commits (live or at boot) since the commit intent after
    /// which prepare-userdata stops retrying the commit at boot: the boot
    /// then only makes the partitions usable, the intent and the COW files
    /// stay, and a `rewindctl commit` retries. Bounds the retries (and the
    /// history they fill) of a commit that fails at every boot.
    pub commit_max_failures: u32,
    /// Optional command saying whether the running boot slot is marked
    /// successful (exit 0 = marked; see `slot`): while it is not,
    /// NeedsCheckpoint is true even with no checkpoint recorded, and a
    /// commit with no checkpoint runs the commit command to mark it (vold's
    /// `cp_needsCheckpoint` and `cp_commitChanges`). Empty = no query.
    pub slot_query_command: Vec<String>,
    pub evidence: EvidenceConfig,
}

/// What rewindd keeps of a failed attempt, and how much of /metadata it
/// may use for it (`evidence`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvidenceConfig {
    /// Copy crash evidence while an attempt runs.
    pub enabled: bool,
    /// Directories whose new files are copied (absolute; walked without
    /// following symlinks, a few levels deep).
    pub sources: Vec<PathBuf>,
    /// The kernel log device whose tail is kept (`kmsg.tail`); empty = none.
    pub kmsg: PathBuf,
    pub kmsg_tail_bytes: u64,
    /// pstore, read at the boot after a failed attempt (the console of the
    /// crashed boot); empty = none.
    pub pstore_dir: PathBuf,
    /// Bytes kept of one source file (its tail, when larger).
    pub max_file_bytes: u64,
    /// Bytes kept of one attempt; the oldest files go first.
    pub max_attempt_bytes: u64,
    /// Bytes kept of all attempts; the oldest files go first.
    pub max_total_bytes: u64,
    /// Free space left on /metadata after every copy: a copy that would
    /// leave less drops older evidence or is not made.
    pub min_free_bytes: u64,
    /// The kernel log tail is written at most this often while it grows.
    pub kmsg_flush_ms: u64,
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        EvidenceConfig {
            enabled: true,
            sources: ["/data/tombstones", "/data/anr", "/data/system/dropbox"].iter().map(PathBuf::from).collect(),
            kmsg: PathBuf::from("/dev/kmsg"),
            kmsg_tail_bytes: 128 << 10,
            pstore_dir: PathBuf::from("/sys/fs/pstore"),
            max_file_bytes: 1 << 20,
            max_attempt_bytes: 4 << 20,
            max_total_bytes: 8 << 20,
            min_free_bytes: 4 << 20,
            kmsg_flush_ms: 5000,
        }
    }
}

/// A reboot reason as one word the way Android writes them
/// (`reboot,<word>`): lower case `[a-z0-9_,.:-]`, anything else `_`, at
/// most 64 characters; empty becomes `rewind`.
pub fn reboot_reason_word(reason: &str) -> String {
    let mut w: String = reason
        .trim()
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() || "_,.:-".contains(c) { c } else { '_' })
        .take(64)
        .collect();
    if w.is_empty() {
        w.push_str("rewind");
    }
    w
}

impl Config {
    /// The reboot command with `{reason}` replaced by the reason's word.
    pub fn reboot_argv(&self, reason: &str) -> Vec<String> {
        let word = reboot_reason_word(reason);
        self.reboot_command.iter().map(|a| a.replace("{reason}", &word)).collect()
    }
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
    /// Map the chunks a cleanly unmounted ext4 baseline leaves free as
    /// `linear` while armed, so writes there are neither copied nor
    /// counted (`ext4map::free`, `dm::armed`). When the map cannot be
    /// proven the whole device is protected, as with `false`.
    pub free_map: bool,
    /// How many of the linear runs get a dm-stats region counting the
    /// bytes written into free space: the longest ones. Fewer regions make
    /// the arm and each status read cheaper; status then says the figure
    /// covers that many runs and is a lower bound. 1..=4096.
    pub free_counted_runs: u32,
    /// The last rollback (no attempt left) does not hold the boot: the
    /// merge is started and PrepareUserdata returns, /data mounts on the
    /// merging device (snapshot-merge serves I/O while it merges), and
    /// rewindd finishes the rollback when the kernel is done. A cut
    /// before the end resumes the merge at the next boot. A rollback
    /// before a further attempt always waits for its merge. On by default;
    /// `false` holds PrepareUserdata until the last merge is over.
    pub last_rollback_in_background: bool,
}

/// Who makes the block nodes of rewindd's dm devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DevNodes {
    /// rewindd mknods `<dev_mapper_dir>/<name>` itself: systems without a
    /// device manager at that point of boot (the QEMU test guests, a
    /// minimal initramfs).
    Mknod,
    /// ueventd (Android) or udev makes them; rewindd waits for
    /// `<dev_mapper_dir>/<name>` to name the new device, like AOSP's libdm.
    /// On Android this is the only choice: rewindd has no CAP_MKNOD (a
    /// neverallow) and a node of its own would fight ueventd's link.
    Ueventd,
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
            socket_mode: 0o666,
            listen_tcp: None,
            tcp_trusted: false,
            allowed_uids: vec![0, 1000],
            dm_prefix: "rewind".to_string(),
            dev_mapper_dir: PathBuf::from("/dev/mapper"),
            dev_nodes: DevNodes::Mknod,
            cow: CowConfig::default(),
            space: SpaceConfig::default(),
            history_limit: 64,
            reboot_command: vec!["reboot".to_string()],
            commit_command: Vec::new(),
            commit_max_failures: 3,
            slot_query_command: Vec::new(),
            evidence: EvidenceConfig::default(),
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
            free_map: true,
            free_counted_runs: crate::dm::stats::DEFAULT_COUNTED_RUNS,
            last_rollback_in_background: true,
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

/// Where rewindd looks for its file when `--config` is not given; a missing
/// file there is not an error (every key has a default).
pub const DEFAULT_CONFIG_PATH: &str = "/system/etc/rewindd.toml";

/// Largest value accepted for `cow.chunk_sectors`: dm-snapshot takes larger
/// chunks, but past 1 MiB every first write copies so much that a boot
/// crawls; a value this large is more likely a unit mistake (bytes).
pub const MAX_CHUNK_SECTORS: u32 = 2048;

/// A config file is a few dozen lines; anything past this is not one.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("Cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: crate::sys::files::FileError,
    },
    /// toml's message names the key (also an unknown one) with line and
    /// column, so it is kept whole as the source.
    #[error("Cannot parse config file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("Invalid value for `{key}` in {origin}: {reason}")]
    Invalid { key: &'static str, origin: String, reason: String },
}

/// Command-line values that win over the file (rewindd's flags).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub fstab: Option<PathBuf>,
    pub metadata_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    /// `--listen-tcp`: also sets `tcp_trusted` (test guests).
    pub listen_tcp: Option<SocketAddr>,
}

impl Config {
    /// Parses a TOML document; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse { path: origin.to_path_buf(), source })
    }

    /// Reads and parses a file, without validating it (see [`Config::validate`]).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = crate::sys::files::read_text_required(path, MAX_CONFIG_BYTES)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::from_toml_str(&text, path)
    }

    /// rewindd's whole rule: the file named by `--config` (must exist), else
    /// [`DEFAULT_CONFIG_PATH`] if it exists, else the defaults; then the
    /// flags; then validation. Returns the config and the file it came from.
    pub fn load(explicit: Option<&Path>, overrides: &Overrides) -> Result<(Config, Option<PathBuf>), ConfigError> {
        Config::load_from(explicit, Path::new(DEFAULT_CONFIG_PATH), overrides)
    }

    /// [`Config::load`] with the default path as a parameter (tests).
    pub fn load_from(
        explicit: Option<&Path>,
        default_path: &Path,
        overrides: &Overrides,
    ) -> Result<(Config, Option<PathBuf>), ConfigError> {
        let (mut config, source) = match explicit {
            Some(path) => (Config::from_file(path)?, Some(path.to_path_buf())),
            None if default_path.exists() => (Config::from_file(default_path)?, Some(default_path.to_path_buf())),
            None => (Config::default(), None),
        };
        config.apply(overrides);
        let origin = match &source {
            Some(path) => format!("{} (or its flag)", path.display()),
            None => "the defaults or flags".to_string(),
        };
        config.validate_in(&origin)?;
        Ok((config, source))
    }

    /// Flags win over the file.
    pub fn apply(&mut self, overrides: &Overrides) {
        if let Some(fstab) = &overrides.fstab {
            self.fstab = fstab.clone();
        }
        if let Some(dir) = &overrides.metadata_dir {
            self.metadata_dir = dir.clone();
        }
        if let Some(socket) = &overrides.socket {
            self.socket = socket.clone();
        }
        if let Some(addr) = overrides.listen_tcp {
            self.listen_tcp = Some(addr);
            // Asking for TCP on the command line is what test guests do;
            // the transport is test-only (CONFIG.md, `tcp_trusted`).
            self.tcp_trusted = true;
        }
    }

    /// Checks every value that the engine or the service would otherwise
    /// trip over later, at a worse time (mid-boot).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_in("config")
    }

    fn validate_in(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |key: &'static str, reason: String| ConfigError::Invalid { key, origin: origin.to_string(), reason };
        for (key, path) in [
            ("fstab", &self.fstab),
            ("metadata_dir", &self.metadata_dir),
            ("socket", &self.socket),
            ("dev_mapper_dir", &self.dev_mapper_dir),
        ] {
            if path.as_os_str().is_empty() {
                return Err(bad(key, "must not be empty".into()));
            }
        }
        if self.socket_mode > 0o777 {
            return Err(bad(
                "socket_mode",
                format!("{:#o} is not a permission mode (0o000..=0o777)", self.socket_mode),
            ));
        }
        if self.dm_prefix.is_empty()
            || self.dm_prefix.len() > 64
            || !self.dm_prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad("dm_prefix", format!("{:?} must be 1 to 64 characters of [A-Za-z0-9_-] (dm names are at most 127 bytes, with the partition appended)", self.dm_prefix)));
        }
        if self.history_limit == 0 || self.history_limit > 10_000 {
            return Err(bad("history_limit", format!("{} is outside 1..=10000", self.history_limit)));
        }
        if self.space.overflow_policy == OverflowPolicy::Abort && self.reboot_command.is_empty() {
            return Err(bad("reboot_command", "must name a command when space.overflow_policy = \"abort\"".into()));
        }
        if self.reboot_command.first().is_some_and(|c| c.is_empty()) {
            return Err(bad("reboot_command", "the program name is empty".into()));
        }
        // The count is read back from the history, so the history must be
        // able to hold that many failures.
        if self.commit_max_failures == 0
            || self.commit_max_failures > 100
            || self.commit_max_failures as usize > self.history_limit
        {
            return Err(bad(
                "commit_max_failures",
                format!("{} is outside 1..=100 or above history_limit", self.commit_max_failures),
            ));
        }
        if self.commit_command.first().is_some_and(|c| c.is_empty()) {
            return Err(bad("commit_command", "the program name is empty".into()));
        }
        if self.slot_query_command.first().is_some_and(|c| c.is_empty()) {
            return Err(bad("slot_query_command", "the program name is empty".into()));
        }
        if !self.slot_query_command.is_empty() && self.commit_command.is_empty() {
            // A slot that is never marked makes the bootloader fall back:
            // with a slot query rewind is the one that marks it at commit.
            return Err(bad(
                "commit_command",
                "must mark the boot slot successful (e.g. [\"/system/bin/bootctl\", \"mark-boot-successful\"]) when slot_query_command is set".into(),
            ));
        }
        self.validate_evidence(&bad)?;

        let cow = &self.cow;
        let dir = Path::new(&cow.dir);
        if cow.dir.is_empty()
            || dir.is_absolute()
            || dir.components().any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(bad(
                "cow.dir",
                format!(
                    "{:?} must be a relative path without `..` (it is joined to the partition's mount point)",
                    cow.dir
                ),
            ));
        }
        if !(1..=100).contains(&cow.free_share_percent) {
            return Err(bad("cow.free_share_percent", format!("{} is outside 1..=100", cow.free_share_percent)));
        }
        if cow.min_bytes == 0 {
            return Err(bad("cow.min_bytes", "must be at least 1".into()));
        }
        if cow.min_bytes > cow.max_bytes {
            return Err(bad("cow.max_bytes", format!("{} is below cow.min_bytes ({})", cow.max_bytes, cow.min_bytes)));
        }
        if cow.file_max_bytes < 1 << 20 {
            return Err(bad("cow.file_max_bytes", format!("{} is below 1 MiB", cow.file_max_bytes)));
        }
        if cow.chunk_sectors < 8 || !cow.chunk_sectors.is_power_of_two() || cow.chunk_sectors > MAX_CHUNK_SECTORS {
            return Err(bad(
                "cow.chunk_sectors",
                format!("{} must be a power of two in 8..={MAX_CHUNK_SECTORS} (512-byte sectors)", cow.chunk_sectors),
            ));
        }
        if !(1..=4096).contains(&cow.free_counted_runs) {
            return Err(bad("cow.free_counted_runs", format!("{} is outside 1..=4096", cow.free_counted_runs)));
        }

        let space = &self.space;
        if let Some(t) = space.thresholds_percent.iter().find(|t| !(1..=100).contains(*t)) {
            return Err(bad("space.thresholds_percent", format!("{t} is outside 1..=100")));
        }
        if !(1..=100).contains(&space.abort_at_percent) {
            return Err(bad("space.abort_at_percent", format!("{} is outside 1..=100", space.abort_at_percent)));
        }
        if !(50..=3_600_000).contains(&space.poll_interval_ms) {
            return Err(bad("space.poll_interval_ms", format!("{} is outside 50..=3600000", space.poll_interval_ms)));
        }
        Ok(())
    }

    fn validate_evidence(&self, bad: &dyn Fn(&'static str, String) -> ConfigError) -> Result<(), ConfigError> {
        let ev = &self.evidence;
        for src in &ev.sources {
            let normal = src.is_absolute()
                && src.components().skip(1).all(|c| matches!(c, std::path::Component::Normal(_)))
                && src.components().count() > 1;
            if !normal {
                return Err(bad(
                    "evidence.sources",
                    format!("{} must be an absolute directory without `..` (and not /)", src.display()),
                ));
            }
            if src.starts_with(&self.metadata_dir) || self.metadata_dir.starts_with(src) {
                return Err(bad(
                    "evidence.sources",
                    format!(
                        "{} overlaps metadata_dir {}: evidence would copy itself",
                        src.display(),
                        self.metadata_dir.display()
                    ),
                ));
            }
        }
        if ev.max_file_bytes == 0 || ev.max_file_bytes > ev.max_attempt_bytes {
            return Err(bad(
                "evidence.max_file_bytes",
                format!("{} must be 1..=evidence.max_attempt_bytes", ev.max_file_bytes),
            ));
        }
        if ev.max_attempt_bytes > ev.max_total_bytes {
            return Err(bad(
                "evidence.max_attempt_bytes",
                format!("{} is above evidence.max_total_bytes ({})", ev.max_attempt_bytes, ev.max_total_bytes),
            ));
        }
        if ev.kmsg_tail_bytes > ev.max_attempt_bytes {
            return Err(bad(
                "evidence.kmsg_tail_bytes",
                format!("{} is above evidence.max_attempt_bytes", ev.kmsg_tail_bytes),
            ));
        }
        if !(100..=3_600_000).contains(&ev.kmsg_flush_ms) {
            return Err(bad("evidence.kmsg_flush_ms", format!("{} is outside 100..=3600000", ev.kmsg_flush_ms)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(e: &dyn std::error::Error) -> String {
        let mut out = e.to_string();
        let mut cur = e.source();
        while let Some(s) = cur {
            out.push_str(": ");
            out.push_str(&s.to_string());
            cur = s.source();
        }
        out
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().expect("defaults validate");
        let c = Config::default();
        assert_eq!(c.allowed_uids, vec![0, 1000]);
        assert!(!c.tcp_trusted);
        assert_eq!(c.cow.chunk_sectors, 8);
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(Config::from_toml_str("", Path::new("x.toml")).unwrap(), Config::default());
    }

    #[test]
    fn example_file_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("rewindd.example.toml");
        let c = Config::from_file(&path).expect("example parses");
        assert_eq!(c, Config::default(), "rewindd.example.toml must list the defaults");
    }

    /// The configuration shipped for devices parses, validates, and makes
    /// the Android-specific choices (ueventd's nodes under
    /// /dev/block/mapper, init's socket path).
    #[test]
    fn shipped_android_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../android/rewindd.toml");
        let c = Config::from_file(&path).expect("android/rewindd.toml parses");
        c.validate().expect("android/rewindd.toml validates");
        assert_eq!(c.dev_nodes, DevNodes::Ueventd);
        assert_eq!(c.dev_mapper_dir, Path::new("/dev/block/mapper"));
        assert_eq!(c.socket, Path::new("/dev/socket/rewindd"));
        assert_eq!(c.fstab, Path::new("/vendor/etc/fstab.rewind"));
        assert_eq!(c.reboot_argv("apexd_initiated"), ["/system/bin/reboot", "apexd_initiated"]);
        assert_eq!(c.commit_command, ["/system/bin/bootctl", "mark-boot-successful"]);
        assert!(!c.slot_query_command.is_empty());
    }

    #[test]
    fn file_values_are_read() {
        let text = r#"
            fstab = "/tmp/fstab"
            allowed_uids = [0]
            listen_tcp = "127.0.0.1:5000"
            [cow]
            chunk_sectors = 16
            [space]
            overflow_policy = "commit"
            thresholds_percent = [90]
        "#;
        let c = Config::from_toml_str(text, Path::new("t.toml")).unwrap();
        assert_eq!(c.fstab, PathBuf::from("/tmp/fstab"));
        assert_eq!(c.allowed_uids, vec![0]);
        assert_eq!(c.listen_tcp, Some("127.0.0.1:5000".parse().unwrap()));
        assert!(!c.tcp_trusted, "listen_tcp in the file does not imply trust");
        assert_eq!(c.cow.chunk_sectors, 16);
        assert_eq!(c.cow.min_bytes, CowConfig::default().min_bytes);
        assert_eq!(c.space.overflow_policy, OverflowPolicy::Commit);
        c.validate().unwrap();
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let e = Config::from_toml_str("[cow]\nchunk_sector = 8\n", Path::new("/etc/r.toml")).unwrap_err();
        let msg = chain(&e);
        assert!(msg.contains("/etc/r.toml"), "{msg}");
        assert!(msg.contains("chunk_sector"), "{msg}");
        let e = Config::from_toml_str("sockets = \"/x\"\n", Path::new("/etc/r.toml")).unwrap_err();
        assert!(chain(&e).contains("sockets"), "{}", chain(&e));
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rewindd.toml");
        std::fs::write(&file, "fstab = \"/from/file\"\nmetadata_dir = \"/md/file\"\n").unwrap();
        let overrides = Overrides {
            fstab: Some("/from/flag".into()),
            socket: Some("/tmp/s".into()),
            listen_tcp: Some("127.0.0.1:1".parse().unwrap()),
            ..Default::default()
        };
        let (c, src) = Config::load_from(Some(&file), Path::new("/nonexistent"), &overrides).unwrap();
        assert_eq!(src.as_deref(), Some(file.as_path()));
        assert_eq!(c.fstab, PathBuf::from("/from/flag"));
        assert_eq!(c.metadata_dir, PathBuf::from("/md/file"));
        assert_eq!(c.socket, PathBuf::from("/tmp/s"));
        assert!(c.tcp_trusted, "--listen-tcp implies tcp_trusted");
    }

    #[test]
    fn default_path_is_used_only_when_present() {
        let dir = tempfile::tempdir().unwrap();
        let default_path = dir.path().join("rewindd.toml");
        let (c, src) = Config::load_from(None, &default_path, &Overrides::default()).unwrap();
        assert_eq!((c, src), (Config::default(), None));
        std::fs::write(&default_path, "history_limit = 7\n").unwrap();
        let (c, src) = Config::load_from(None, &default_path, &Overrides::default()).unwrap();
        assert_eq!(c.history_limit, 7);
        assert_eq!(src, Some(default_path));
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let e =
            Config::load_from(Some(Path::new("/nonexistent/r.toml")), Path::new("/nonexistent"), &Overrides::default())
                .unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
    }

    /// `{reason}` in the reboot command becomes one Android-style word, so
    /// the next boot's reason reads `reboot,<word>`.
    #[test]
    fn reboot_command_carries_the_reason_as_one_word() {
        let c = Config { reboot_command: vec!["/system/bin/reboot".into(), "{reason}".into()], ..Config::default() };
        assert_eq!(c.reboot_argv("apexd_initiated"), ["/system/bin/reboot", "apexd_initiated"]);
        assert_eq!(c.reboot_argv("OTA failed: boot 2\n\x1b[1m"), ["/system/bin/reboot", "ota_failed:_boot_2___1m"]);
        assert_eq!(c.reboot_argv(""), ["/system/bin/reboot", "rewind"]);
        assert_eq!(reboot_reason_word(&"x".repeat(200)).len(), 64);
        // Without the placeholder the command runs as configured.
        assert_eq!(Config::default().reboot_argv("anything"), ["reboot"]);
    }

    #[test]
    fn validation_rejects_bad_values() {
        type Case = (&'static str, fn(&mut Config));
        let cases: Vec<Case> = vec![
            ("cow.chunk_sectors", |c| c.cow.chunk_sectors = 4),
            ("cow.chunk_sectors", |c| c.cow.chunk_sectors = 24),
            ("cow.chunk_sectors", |c| c.cow.chunk_sectors = 4096),
            ("cow.free_counted_runs", |c| c.cow.free_counted_runs = 0),
            ("cow.free_counted_runs", |c| c.cow.free_counted_runs = 4097),
            ("cow.free_share_percent", |c| c.cow.free_share_percent = 0),
            ("cow.free_share_percent", |c| c.cow.free_share_percent = 101),
            ("cow.max_bytes", |c| c.cow.max_bytes = 1),
            ("cow.min_bytes", |c| c.cow.min_bytes = 0),
            ("cow.file_max_bytes", |c| c.cow.file_max_bytes = 4096),
            ("cow.dir", |c| c.cow.dir = "/abs".into()),
            ("cow.dir", |c| c.cow.dir = "../up".into()),
            ("cow.dir", |c| c.cow.dir = String::new()),
            ("space.thresholds_percent", |c| c.space.thresholds_percent = vec![50, 0]),
            ("space.thresholds_percent", |c| c.space.thresholds_percent = vec![101]),
            ("space.abort_at_percent", |c| c.space.abort_at_percent = 101),
            ("space.abort_at_percent", |c| c.space.abort_at_percent = 0),
            ("space.poll_interval_ms", |c| c.space.poll_interval_ms = 0),
            ("history_limit", |c| c.history_limit = 0),
            ("commit_max_failures", |c| c.commit_max_failures = 0),
            ("commit_max_failures", |c| c.commit_max_failures = 101),
            ("commit_max_failures", |c| {
                c.history_limit = 2;
                c.commit_max_failures = 3;
            }),
            ("dm_prefix", |c| c.dm_prefix = "a b".into()),
            ("dm_prefix", |c| c.dm_prefix = String::new()),
            ("socket_mode", |c| c.socket_mode = 0o1777),
            ("socket", |c| c.socket = PathBuf::new()),
            ("reboot_command", |c| c.reboot_command.clear()),
            ("commit_command", |c| c.commit_command = vec![String::new()]),
            ("slot_query_command", |c| {
                c.commit_command = vec!["true".into()];
                c.slot_query_command = vec![String::new()];
            }),
            ("commit_command", |c| c.slot_query_command = vec!["bootctl".into()]),
            ("evidence.sources", |c| c.evidence.sources = vec!["data/anr".into()]),
            ("evidence.sources", |c| c.evidence.sources = vec!["/".into()]),
            ("evidence.sources", |c| c.evidence.sources = vec!["/data/../metadata".into()]),
            ("evidence.sources", |c| c.evidence.sources = vec!["/metadata".into()]),
            ("evidence.max_file_bytes", |c| c.evidence.max_file_bytes = 0),
            ("evidence.max_attempt_bytes", |c| c.evidence.max_attempt_bytes = c.evidence.max_total_bytes + 1),
            ("evidence.kmsg_tail_bytes", |c| c.evidence.kmsg_tail_bytes = c.evidence.max_attempt_bytes + 1),
            ("evidence.kmsg_flush_ms", |c| c.evidence.kmsg_flush_ms = 0),
        ];
        for (key, mutate) in cases {
            let mut c = Config::default();
            mutate(&mut c);
            match c.validate() {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: expected Invalid, got {other:?}"),
            }
        }
        // The commit policy needs no reboot command.
        let mut c = Config::default();
        c.space.overflow_policy = OverflowPolicy::Commit;
        c.reboot_command.clear();
        c.validate().unwrap();
        // Powers of two above 8 are fine.
        c.cow.chunk_sectors = 64;
        c.validate().unwrap();
    }
}
