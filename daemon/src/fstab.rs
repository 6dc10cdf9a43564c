//! Android fs_mgr fstab parsing and the choice of checkpointed partitions.
//!
//! An fstab line has five whitespace-separated fields:
//! `<blk_device> <mount_point> <type> <mnt_flags> <fs_mgr_flags>`; `#` starts
//! a comment. fs_mgr flags are a comma list of `name` or `name=value`.
//! A partition is checkpointed when its fs_mgr flags carry `checkpoint=block`
//! (dm-snapshot backend) or `checkpoint=fs` (f2fs backend).
//!
//! # How the raw device is found (block mode)
//!
//! fs_mgr mounts whatever `blk_device` names, and a filesystem mounted on the
//! partition itself would keep device-mapper off it. So for `checkpoint=block`
//! the fstab names the stable dm path rewindd always creates,
//! `/dev/block/mapper/<prefix>-<part>` (or `<dev_mapper_dir>/<prefix>-<part>`):
//!
//! ```text
//! /dev/block/mapper/rewind-userdata /data ext4 noatime,nosuid,nodev wait,check,checkpoint=block,rewind_raw=/dev/block/by-name/userdata
//! ```
//!
//! * partition name = last path component without the `<prefix>-` part;
//! * raw device = the rewind-specific fs_mgr flag `rewind_raw=<path>`, or
//!   `/dev/block/by-name/<part>` when the flag is absent. (fs_mgr ignores
//!   flags it does not know, with a warning.)
//!
//! An fstab that names the raw device directly (`/dev/block/by-name/userdata`)
//! is accepted too: name = last path component, raw device = that path. The
//! mount must then be done through `<dev_mapper_dir>/<prefix>-<part>` by
//! whoever mounts it (test guests); a warning is logged.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::types::BackendKind;

/// Where fs_mgr expects partitions by name when `rewind_raw=` is absent.
pub const BY_NAME_DIR: &str = "/dev/block/by-name";
/// The fs_mgr flag that names the raw device behind the dm path.
pub const RAW_FLAG: &str = "rewind_raw";

#[derive(Debug, thiserror::Error)]
pub enum FstabError {
    #[error("Cannot read fstab {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: crate::sys::files::FileError,
    },
    #[error("{path}:{line}: field {field}: {problem}")]
    Line { path: PathBuf, line: usize, field: &'static str, problem: String },
}

/// Checkpoint mode from the `checkpoint=` fs_mgr flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointMode {
    Block,
    Fs,
}

impl CheckpointMode {
    /// The backend that serves this mode.
    pub fn backend_kind(self) -> BackendKind {
        match self {
            CheckpointMode::Block => BackendKind::Snapshot,
            CheckpointMode::Fs => BackendKind::F2fs,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsMgrFlag {
    pub name: String,
    pub value: Option<String>,
}

/// One parsed fstab line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FstabEntry {
    /// 1-based line number, for messages.
    pub line: usize,
    pub blk_device: String,
    pub mount_point: String,
    pub fs_type: String,
    pub mnt_options: Vec<String>,
    pub fs_mgr_flags: Vec<FsMgrFlag>,
    pub checkpoint: Option<CheckpointMode>,
}

impl FstabEntry {
    pub fn flag(&self, name: &str) -> Option<&FsMgrFlag> {
        self.fs_mgr_flags.iter().find(|f| f.name == name)
    }
}

/// A partition rewind protects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointedPartition {
    pub name: String,
    pub mount_point: String,
    pub fs_type: String,
    pub mode: CheckpointMode,
    /// The path in the fstab (what gets mounted).
    pub blk_device: String,
    /// The partition under the dm stack.
    pub raw_device: String,
    /// The fstab's mount options (f2fs mode mounts /data with them).
    pub mnt_options: Vec<String>,
}

/// fs_mgr flags that take a value; a bare occurrence is a bad line. The
/// others in [`BARE_FLAGS`] must not carry one. Unknown flags are kept and
/// ignored (fs_mgr does the same), so new Android releases do not break us.
const VALUE_FLAGS: &[&str] = &[
    "avb_keys",
    "checkpoint",
    "eraseblk",
    "encryptable",
    "fileencryption",
    "forceencrypt",
    "forcefdeorfbe",
    "keydirectory",
    "length",
    "logicalblk",
    "lowerdir",
    "max_comp_streams",
    "metadata_encryption",
    "readahead_size_kb",
    "reservedsize",
    "swapprio",
    "sysfs_path",
    "zram_backingdev_size",
    "zramsize",
    RAW_FLAG,
];
const BARE_FLAGS: &[&str] = &[
    "check",
    "first_stage_mount",
    "formattable",
    "fsverity",
    "latemount",
    "logical",
    "nofail",
    "noemulatedsd",
    "nonremovable",
    "notrim",
    "quota",
    "recoveryonly",
    "resize",
    "slotselect",
    "slotselect_other",
    "verify",
    "wait",
    "wrappedkey",
    "zoned",
];

/// A device's fstab is a few dozen lines; anything past this is not one.
pub const MAX_FSTAB_BYTES: u64 = 1 << 20;

/// Reads and parses an fstab file.
pub fn load(path: &Path) -> Result<Vec<FstabEntry>, FstabError> {
    let text = crate::sys::files::read_text_required(path, MAX_FSTAB_BYTES)
        .map_err(|source| FstabError::Read { path: path.to_path_buf(), source })?;
    parse(&text, path)
}

/// Parses fstab text; `path` only names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<Vec<FstabEntry>, FstabError> {
    let mut out = Vec::new();
    for (idx, raw_line) in text.lines().enumerate() {
        let line = idx + 1;
        let content = match raw_line.find('#') {
            Some(pos) => &raw_line[..pos],
            None => raw_line,
        };
        let fields: Vec<&str> = content.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let bad =
            |field: &'static str, problem: String| FstabError::Line { path: path.to_path_buf(), line, field, problem };
        if fields.len() != 5 {
            return Err(bad("count", format!("expected 5 fields, found {}", fields.len())));
        }
        let (blk_device, mount_point, fs_type, mnt, fsmgr) = (fields[0], fields[1], fields[2], fields[3], fields[4]);
        // blk_device may be a bare name (logical partitions: `system` with
        // the `logical` flag; `tmpfs`, `none`); checkpointed ones are
        // checked below. Mount points are absolute except for swap/zram.
        if !(mount_point.starts_with('/') || matches!(mount_point, "none" | "auto" | "swap")) {
            return Err(bad("mount_point", format!("'{mount_point}' is not an absolute path")));
        }
        if !fs_type.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-') {
            return Err(bad("type", format!("'{fs_type}' is not a filesystem type")));
        }
        let mnt_options =
            if mnt == "defaults" { Vec::new() } else { split_list(mnt).map_err(|p| bad("mnt_flags", p))? };
        let mut flags = Vec::new();
        let mut checkpoint = None;
        if fsmgr != "defaults" {
            for item in split_list(fsmgr).map_err(|p| bad("fs_mgr_flags", p))? {
                let (name, value) = match item.split_once('=') {
                    Some((n, v)) => (n.to_string(), Some(v.to_string())),
                    None => (item.clone(), None),
                };
                if name.is_empty() {
                    return Err(bad("fs_mgr_flags", format!("flag '{item}' has no name")));
                }
                // avb is both bare (`avb`) and valued (`avb=vbmeta`).
                if VALUE_FLAGS.contains(&name.as_str()) && value.as_deref().unwrap_or("").is_empty() {
                    return Err(bad("fs_mgr_flags", format!("flag '{name}' needs a value")));
                }
                if BARE_FLAGS.contains(&name.as_str()) && value.is_some() {
                    return Err(bad("fs_mgr_flags", format!("flag '{name}' takes no value")));
                }
                if !VALUE_FLAGS.contains(&name.as_str()) && !BARE_FLAGS.contains(&name.as_str()) && name != "avb" {
                    tracing::debug!(path = %path.display(), line, flag = %name, "unknown fs_mgr flag kept");
                }
                if name == "checkpoint" {
                    if checkpoint.is_some() {
                        return Err(bad("fs_mgr_flags", "checkpoint= given twice".to_string()));
                    }
                    checkpoint = Some(match value.as_deref() {
                        Some("block") => CheckpointMode::Block,
                        Some("fs") => CheckpointMode::Fs,
                        other => {
                            return Err(bad(
                                "fs_mgr_flags",
                                format!("checkpoint={} is neither 'block' nor 'fs'", other.unwrap_or("")),
                            ))
                        }
                    });
                }
                if name == RAW_FLAG && !value.as_deref().unwrap_or("").starts_with('/') {
                    return Err(bad("fs_mgr_flags", format!("{RAW_FLAG}= must be an absolute path")));
                }
                flags.push(FsMgrFlag { name, value });
            }
        }
        if checkpoint.is_some() && !blk_device.starts_with('/') {
            return Err(bad("blk_device", "a checkpointed partition needs a block device path".into()));
        }
        out.push(FstabEntry {
            line,
            blk_device: blk_device.to_string(),
            mount_point: mount_point.to_string(),
            fs_type: fs_type.to_string(),
            mnt_options,
            fs_mgr_flags: flags,
            checkpoint,
        });
    }
    Ok(out)
}

fn split_list(s: &str) -> Result<Vec<String>, String> {
    let items: Vec<String> = s.split(',').map(str::to_string).collect();
    if items.iter().any(|i| i.is_empty()) {
        return Err(format!("empty item in '{s}'"));
    }
    Ok(items)
}

/// Picks the checkpointed partitions. Android fstabs may list the same
/// partition twice (an ext4 and an f2fs line for /data): the first
/// checkpointed line for a mount point wins, like fs_mgr's first successful
/// mount; later ones are logged and ignored.
pub fn checkpointed(
    entries: &[FstabEntry],
    path: &Path,
    dm_prefix: &str,
    dev_mapper_dir: &Path,
) -> Result<Vec<CheckpointedPartition>, FstabError> {
    let mut out: Vec<CheckpointedPartition> = Vec::new();
    let mut seen_mounts = HashSet::new();
    for e in entries {
        let Some(mode) = e.checkpoint else { continue };
        if !seen_mounts.insert(e.mount_point.clone()) {
            tracing::warn!(path = %path.display(), line = e.line, mount = %e.mount_point,
                "second checkpointed entry for this mount point ignored");
            continue;
        }
        let bad = |field: &'static str, problem: String| FstabError::Line {
            path: path.to_path_buf(),
            line: e.line,
            field,
            problem,
        };
        let blk = Path::new(&e.blk_device);
        let last = blk
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| bad("blk_device", "no partition name in the path".into()))?;
        let parent = blk.parent().unwrap_or(Path::new("/"));
        let dm_dir =
            parent == Path::new("/dev/block/mapper") || parent == Path::new("/dev/mapper") || parent == dev_mapper_dir;
        let prefix = format!("{dm_prefix}-");
        let raw_flag = e.flag(RAW_FLAG).and_then(|f| f.value.clone());
        let (name, raw_device) = match (mode, dm_dir, last.strip_prefix(&prefix)) {
            (CheckpointMode::Block, true, Some(name)) => {
                let raw = raw_flag.unwrap_or_else(|| format!("{BY_NAME_DIR}/{name}"));
                (name.to_string(), raw)
            }
            (CheckpointMode::Block, true, None) => {
                return Err(bad(
                    "blk_device",
                    format!("dm path '{}' is not a '{prefix}<partition>' device", e.blk_device),
                ))
            }
            (CheckpointMode::Block, false, _) => {
                tracing::warn!(path = %path.display(), line = e.line,
                    "fstab names the raw device; mount it through the {prefix}<part> dm path");
                (last.to_string(), raw_flag.unwrap_or_else(|| e.blk_device.clone()))
            }
            (CheckpointMode::Fs, _, _) => (last.to_string(), raw_flag.unwrap_or_else(|| e.blk_device.clone())),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(bad("blk_device", format!("partition name '{name}' is not usable in a dm name")));
        }
        if mode == CheckpointMode::Block && raw_device == e.blk_device && dm_dir {
            return Err(bad("fs_mgr_flags", "raw device equals the dm device".into()));
        }
        if out.iter().any(|p| p.name == name) {
            return Err(bad("blk_device", format!("partition '{name}' is checkpointed twice")));
        }
        out.push(CheckpointedPartition {
            name,
            mount_point: e.mount_point.clone(),
            fs_type: e.fs_type.clone(),
            mode,
            blk_device: e.blk_device.clone(),
            raw_device,
            mnt_options: e.mnt_options.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/vendor/etc/fstab.test";

    fn parse_ok(text: &str) -> Vec<FstabEntry> {
        parse(text, Path::new(P)).expect("parses")
    }
    fn parts(text: &str) -> Vec<CheckpointedPartition> {
        checkpointed(&parse_ok(text), Path::new(P), "rewind", Path::new("/dev/mapper")).expect("picks")
    }

    /// A phone-like fstab: dynamic partitions, AVB, FBE + metadata
    /// encryption, zram, sdcard voldmanaged, and userdata through rewind.
    const PHONE: &str = "\
# Android fstab file.
#<src>                                   <mnt_point>   <type>  <mnt_flags and options>                       <fs_mgr_flags>
system                                   /system       ext4    ro,barrier=1                                  wait,slotselect,avb=vbmeta_system,logical,first_stage_mount,avb_keys=/avb/q-gsi.avbpubkey:/avb/r-gsi.avbpubkey
vendor                                   /vendor       ext4    ro,barrier=1                                  wait,slotselect,avb=vbmeta,logical,first_stage_mount
/dev/block/by-name/boot                  /boot         emmc    defaults                                      defaults
/dev/block/by-name/metadata              /metadata     ext4    noatime,nosuid,nodev,discard                  wait,check,formattable,first_stage_mount
/dev/block/mapper/rewind-userdata        /data         ext4    noatime,nosuid,nodev,noauto_da_alloc,discard  latemount,wait,check,quota,formattable,fileencryption=aes-256-xts:aes-256-cts:v2+inlinecrypt_optimized,metadata_encryption=aes-256-xts:wrappedkey_v0,keydirectory=/metadata/vold/metadata_encryption,reservedsize=128M,checkpoint=block,rewind_raw=/dev/block/by-name/userdata,sysfs_path=/sys/devices/platform/soc/1d84000.ufshc,resize
/devices/platform/soc/8804000.sdhci/mmc_host* /storage/sdcard1 vfat nosuid,nodev                       wait,voldmanaged=sdcard1:auto,encryptable=footer
/dev/block/zram0                         none          swap    defaults                                      zramsize=50%,max_comp_streams=8,zram_backingdev_size=512M
";

    #[test]
    fn phone_fstab_parses_every_line() {
        let e = parse_ok(PHONE);
        assert_eq!(e.len(), 7);
        assert_eq!(e[0].blk_device, "system");
        assert!(e[0].flag("logical").is_some());
        assert_eq!(e[0].flag("avb").and_then(|f| f.value.as_deref()), Some("vbmeta_system"));
        assert!(e[2].mnt_options.is_empty() && e[2].fs_mgr_flags.is_empty());
        assert_eq!(e[4].line, 7);
        assert_eq!(e[4].checkpoint, Some(CheckpointMode::Block));
        assert_eq!(e[4].mnt_options, vec!["noatime", "nosuid", "nodev", "noauto_da_alloc", "discard"]);
        assert_eq!(e[6].mount_point, "none");
    }

    #[test]
    fn phone_fstab_checkpoints_userdata_through_rewind_dm_path() {
        let p = parts(PHONE);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].name, "userdata");
        assert_eq!(p[0].mount_point, "/data");
        assert_eq!(p[0].mode, CheckpointMode::Block);
        assert_eq!(p[0].blk_device, "/dev/block/mapper/rewind-userdata");
        assert_eq!(p[0].raw_device, "/dev/block/by-name/userdata");
    }

    #[test]
    fn dm_path_without_raw_flag_defaults_to_by_name() {
        let p = parts("/dev/block/mapper/rewind-userdata /data ext4 noatime wait,checkpoint=block\n");
        assert_eq!(p[0].raw_device, "/dev/block/by-name/userdata");
    }

    #[test]
    fn guest_style_fstab_uses_dev_mapper_and_virtio_raw() {
        let p = checkpointed(
            &parse_ok("/run/mapper/rewind-userdata /data ext4 defaults wait,checkpoint=block,rewind_raw=/dev/vdb\n"),
            Path::new(P),
            "rewind",
            Path::new("/run/mapper"),
        )
        .expect("picks");
        assert_eq!((p[0].name.as_str(), p[0].raw_device.as_str()), ("userdata", "/dev/vdb"));
    }

    #[test]
    fn raw_device_named_directly_is_the_raw_device() {
        let p = parts(
            "/dev/block/platform/soc/1d84000.ufshc/by-name/userdata /data ext4 noatime latemount,wait,check,checkpoint=block\n",
        );
        assert_eq!(p[0].name, "userdata");
        assert_eq!(p[0].raw_device, "/dev/block/platform/soc/1d84000.ufshc/by-name/userdata");
    }

    /// Two /data lines (f2fs first, ext4 fallback) as some vendors ship: the
    /// first checkpointed one is taken.
    #[test]
    fn duplicate_data_lines_take_the_first() {
        let text = "\
/dev/block/bootdevice/by-name/userdata /data f2fs noatime,nosuid,nodev,discard,fsync_mode=nobarrier latemount,wait,check,formattable,fileencryption=ice,quota,reservedsize=128M,checkpoint=fs
/dev/block/bootdevice/by-name/userdata /data ext4 noatime,nosuid,nodev,barrier=1,noauto_da_alloc latemount,wait,check,formattable,fileencryption=ice,quota,reservedsize=128M,checkpoint=block
";
        let p = parts(text);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].mode, CheckpointMode::Fs);
        assert_eq!(p[0].fs_type, "f2fs");
    }

    #[test]
    fn no_checkpoint_flag_means_no_partition() {
        assert!(parts("/dev/block/by-name/userdata /data ext4 noatime wait,check\n").is_empty());
    }

    #[test]
    fn comments_blank_lines_and_tabs_are_ignored() {
        let e = parse_ok("\n   \n# x\n\t/dev/block/by-name/cache\t/cache\text4\tnoatime\twait # trailing\n");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, 4);
    }

    fn err(text: &str) -> (usize, &'static str, String) {
        match parse(text, Path::new(P)) {
            Err(FstabError::Line { path, line, field, problem }) => {
                assert_eq!(path, Path::new(P));
                (line, field, problem)
            }
            other => panic!("expected a line error, got {other:?}"),
        }
    }

    #[test]
    fn bad_lines_name_file_line_and_field() {
        assert_eq!(err("# c\n/dev/a /data ext4 noatime\n").0, 2);
        assert_eq!(err("/dev/a /data ext4 noatime wait extra\n").1, "count");
        assert_eq!(err("dev/a /data ext4 noatime wait,checkpoint=block\n").1, "blk_device");
        assert_eq!(err("/dev/a data ext4 noatime wait\n").1, "mount_point");
        assert_eq!(err("/dev/a /data ex$t4 noatime wait\n").1, "type");
        assert_eq!(err("/dev/a /data ext4 noatime,,nodev wait\n").1, "mnt_flags");
        assert_eq!(err("/dev/a /data ext4 noatime wait,checkpoint=file\n").1, "fs_mgr_flags");
        assert_eq!(err("/dev/a /data ext4 noatime wait,checkpoint\n").1, "fs_mgr_flags");
        assert_eq!(err("/dev/a /data ext4 noatime wait=1\n").1, "fs_mgr_flags");
        assert_eq!(err("/dev/a /data ext4 noatime reservedsize\n").1, "fs_mgr_flags");
        assert_eq!(err("/dev/a /data ext4 noatime checkpoint=block,checkpoint=fs\n").1, "fs_mgr_flags");
        assert_eq!(err("/dev/a /data ext4 noatime rewind_raw=vdb\n").1, "fs_mgr_flags");
        let msg = parse("/dev/a /data ext4 noatime wait,\n", Path::new(P)).unwrap_err().to_string();
        assert_eq!(msg, "/vendor/etc/fstab.test:1: field fs_mgr_flags: empty item in 'wait,'");
    }

    #[test]
    fn unknown_flags_are_kept_not_fatal() {
        let e = parse_ok("/dev/a /data ext4 noatime wait,some_future_flag,other=3\n");
        assert_eq!(e[0].fs_mgr_flags.len(), 3);
    }

    #[test]
    fn bad_partition_choices_are_refused() {
        let pick = |t: &str| checkpointed(&parse_ok(t), Path::new(P), "rewind", Path::new("/dev/mapper"));
        // A dm path that is not ours.
        assert!(pick("/dev/block/mapper/userdata /data ext4 noatime checkpoint=block\n").is_err());
        // Same partition twice under different mount points.
        assert!(pick(
            "/dev/block/mapper/rewind-userdata /data ext4 noatime checkpoint=block\n\
             /dev/block/mapper/rewind-userdata /data2 ext4 noatime checkpoint=block\n"
        )
        .is_err());
        // raw = the dm path itself would stack dm on itself.
        assert!(pick(
            "/dev/block/mapper/rewind-userdata /data ext4 noatime checkpoint=block,rewind_raw=/dev/block/mapper/rewind-userdata\n"
        )
        .is_err());
    }

    #[test]
    fn missing_file_is_a_read_error() {
        assert!(matches!(load(Path::new("/nonexistent/fstab")), Err(FstabError::Read { .. })));
    }

    /// The examples shipped for device makers (android/fstab.rewind.*)
    /// parse with rewindd's own parser, whole (logical partitions, sysfs
    /// voldmanaged paths, swap), and name exactly one checkpointed
    /// partition: userdata, in the mode and on the raw device the boot
    /// contract expects.
    #[test]
    fn shipped_android_fstab_examples_parse() {
        let examples = [
            ("android/fstab.rewind.ext4", include_str!("../../android/fstab.rewind.ext4"), CheckpointMode::Block),
            ("android/fstab.rewind.f2fs", include_str!("../../android/fstab.rewind.f2fs"), CheckpointMode::Fs),
        ];
        for (name, text, mode) in examples {
            let path = Path::new(name);
            let entries = parse(text, path).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(entries.iter().any(|e| e.blk_device == "system" && e.flag("logical").is_some()), "{name}");
            let parts = checkpointed(&entries, path, "rewind", Path::new("/dev/block/mapper"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(parts.len(), 1, "{name}: {parts:?}");
            let p = &parts[0];
            assert_eq!((p.name.as_str(), p.mount_point.as_str(), p.mode), ("userdata", "/data", mode), "{name}");
            assert_eq!(p.raw_device, "/dev/block/by-name/userdata", "{name}");
            if mode == CheckpointMode::Block {
                assert_eq!(p.blk_device, "/dev/block/mapper/rewind-userdata", "{name}");
            }
        }
    }
}
