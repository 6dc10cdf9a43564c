//! f2fs mode (`checkpoint=fs` in the fstab): f2fs's own checkpointing
//! instead of dm-snapshot.
//!
//! While f2fs is mounted with `checkpoint=disable[:N%]` it writes no
//! checkpoint, so every change of the boot disappears on any unmount or
//! crash until it is remounted with `checkpoint=enable`. So:
//! - arm: mount /data with `checkpoint=disable:N%` (N from 0, +10 on
//!   EAGAIN up to 100; plain `checkpoint=disable` on EINVAL; if the kernel
//!   refuses both, an `Unsafe` refusal the boot records);
//! - commit: live remount with `checkpoint=enable`, keeping the other mount
//!   options (the live mount's, and its VFS flags: f2fs resets unspecified
//!   options on remount);
//! - rollback: nothing to do: the crash or unmount that ended the attempt
//!   already dropped it. The next attempt mounts with `checkpoint=disable`
//!   again; after the last one /data is mounted normally by init and shows
//!   the baseline.
//!
//! # Who mounts /data (the mount-ownership decision)
//! rewindd itself mounts /data, during PrepareUserdata, when this boot is an
//! attempt; the attempt is counted in the same record write that follows a
//! successful mount, so an attempt that could not be armed is never
//! counted. init's own mount of /data comes later and is skipped because
//! /data is mounted already (the QEMU guest init checks /proc/mounts). On a
//! boot that is not an attempt rewindd mounts nothing and init mounts /data
//! as usual. (On Android fs_mgr does the mount: see android/README.md.)
//!
//! rewind keeps no COW files in f2fs mode, so it has no files to pin here;
//! block mode on an f2fs /data pins its COW files before fallocate
//! (cowstore.rs, F2FS_IOC_SET_PIN_FILE) and checks the pin
//! (F2FS_IOC_GET_PIN_FILE) whenever it re-reads their extents.
//!
//! Space: f2fs hides the blocks it cannot reuse before the next checkpoint
//! as "unusable" (`/sys/fs/f2fs/<dev>/unusable`, in filesystem blocks).
//! rewind reports them and applies the block-mode thresholds and overflow
//! policy to `unusable / (unusable + free)`, free being statvfs's f_bfree
//! (which f2fs already lowers by the unusable blocks): at 100 % nothing can
//! be written any more until a checkpoint.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;

use super::{Backend, Merged, Traits, Usage};
use crate::config::CowConfig;
use crate::dm::SnapshotStatus;
use crate::error::{Error, Result};
use crate::fstab::{CheckpointMode, CheckpointedPartition};
use crate::state::extents_hash;
use crate::state::{FreeMap, PartitionState};
use crate::sys::blockdev::ReadAt;
use crate::types::{error_chain, BackendKind, Progress};

/// First `checkpoint=disable:N%` tried, the step on EAGAIN and the ceiling.
pub const START_PERCENT: u32 = 0;
pub const STEP_PERCENT: u32 = 10;
pub const MAX_PERCENT: u32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum F2fsError {
    #[error(
        "The kernel refused checkpoint=disable for {device} on {mount_point} (tried: {}); \
         rollback protection cannot work with this kernel or these mount options",
        tried.iter().map(|(o, e)| format!("{o}: {}", e.desc())).collect::<Vec<_>>().join(", ")
    )]
    CheckpointRefused { device: String, mount_point: String, tried: Vec<(String, Errno)> },
    #[error("Cannot mount {device} on {mount_point} with '{options}'")]
    Mount {
        device: String,
        mount_point: String,
        options: String,
        #[source]
        source: Errno,
    },
    #[error("Cannot remount {mount_point} with '{options}'")]
    Remount {
        mount_point: String,
        options: String,
        #[source]
        source: Errno,
    },
    #[error("Cannot unmount {mount_point} to drop the uncommitted attempt")]
    Unmount {
        mount_point: String,
        #[source]
        source: Errno,
    },
    #[error("{mount_point} is not mounted")]
    NotMounted { mount_point: String },
    #[error("{mount_point} is {found}, not f2fs")]
    NotF2fs { mount_point: String, found: String },
    #[error("{mount_point} is mounted from device {found}, not from {device} ({expected})")]
    WrongDevice { mount_point: String, device: String, expected: String, found: String },
    #[error("{mount_point} is already mounted with checkpoint=disable (a checkpoint outside rewind?)")]
    AlreadyDisabled { mount_point: String },
    #[error("{device} is {now} bytes now but {recorded} bytes when the checkpoint started: not the same partition")]
    DeviceChanged { device: String, recorded: u64, now: u64 },
    #[error("Partition {name} is not a checkpoint=fs entry of the fstab")]
    UnknownPartition { name: String },
    #[error("Cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Unparsable {path}: '{text}'")]
    Parse { path: PathBuf, text: String },
    #[error("Cannot statvfs {mount_point}")]
    Statvfs {
        mount_point: String,
        #[source]
        source: Errno,
    },
    #[error("Cannot find the size of {device}")]
    Size {
        device: String,
        #[source]
        source: crate::sys::SysError,
    },
}

impl F2fsError {
    /// The service edge's error kind.
    pub fn kind(&self) -> crate::types::ErrorKind {
        use crate::types::ErrorKind as K;
        match self {
            // Protection cannot be given: refuse and report (boot records it).
            F2fsError::CheckpointRefused { .. } | F2fsError::DeviceChanged { .. } => K::Unsafe,
            F2fsError::NotMounted { .. }
            | F2fsError::NotF2fs { .. }
            | F2fsError::WrongDevice { .. }
            | F2fsError::UnknownPartition { .. } => K::Unavailable,
            F2fsError::AlreadyDisabled { .. } => K::WrongPhase,
            F2fsError::Mount { .. }
            | F2fsError::Remount { .. }
            | F2fsError::Unmount { .. }
            | F2fsError::Read { .. }
            | F2fsError::Parse { .. }
            | F2fsError::Statvfs { .. }
            | F2fsError::Size { .. } => K::Internal,
        }
    }
}

/// The filesystem mounted on a mount point, from /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveMount {
    /// "major:minor" of the mounted device.
    pub device: String,
    pub fs_type: String,
    /// Per-mount options (rw, nosuid, nodev, noatime...).
    pub mount_options: Vec<String>,
    /// Superblock options (f2fs prints `checkpoint=disable:<blocks>`).
    pub super_options: Vec<String>,
}

impl LiveMount {
    /// Checkpointing is off (an attempt is armed).
    pub fn checkpoint_disabled(&self) -> bool {
        self.super_options.iter().any(|o| o == "checkpoint=disable" || o.starts_with("checkpoint=disable:"))
    }

    /// The VFS flags of the live mount, for a remount that must keep them
    /// (MS_REMOUNT without MS_NOSUID would clear nosuid).
    pub fn vfs_flags(&self) -> MsFlags {
        let mut f = MsFlags::empty();
        for o in self.mount_options.iter().chain(self.super_options.iter()) {
            f |= match o.as_str() {
                "ro" => MsFlags::MS_RDONLY,
                "nosuid" => MsFlags::MS_NOSUID,
                "nodev" => MsFlags::MS_NODEV,
                "noexec" => MsFlags::MS_NOEXEC,
                "noatime" => MsFlags::MS_NOATIME,
                "nodiratime" => MsFlags::MS_NODIRATIME,
                "relatime" => MsFlags::MS_RELATIME,
                "sync" => MsFlags::MS_SYNCHRONOUS,
                "dirsync" => MsFlags::MS_DIRSYNC,
                "lazytime" => MsFlags::MS_LAZYTIME,
                _ => MsFlags::empty(),
            };
        }
        f
    }
}

/// The last mount on `mount_point` in mountinfo text (the one visible).
pub fn live_mount_from(mountinfo: &str, mount_point: &str) -> Option<LiveMount> {
    let mut found = None;
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 7 || f[4] != mount_point {
            continue;
        }
        // Optional fields end at the "-" separator.
        let Some(sep) = f.iter().skip(6).position(|x| *x == "-").map(|p| p + 6) else { continue };
        if f.len() < sep + 4 {
            continue;
        }
        found = Some(LiveMount {
            device: f[2].to_string(),
            fs_type: f[sep + 1].to_string(),
            mount_options: f[5].split(',').map(str::to_string).collect(),
            super_options: f[sep + 3].split(',').map(str::to_string).collect(),
        });
    }
    found
}

/// Space f2fs hides while checkpointing is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct F2fsSpace {
    pub unusable_bytes: u64,
    /// statvfs f_bfree in bytes (f2fs subtracts the unusable blocks).
    pub free_bytes: u64,
}

impl F2fsSpace {
    /// As a snapshot-style usage (sectors), so the block-mode thresholds
    /// and overflow policy apply unchanged: used = unusable, total =
    /// unusable + free.
    pub fn as_status(&self) -> SnapshotStatus {
        let allocated = self.unusable_bytes / 512;
        let total = ((self.unusable_bytes + self.free_bytes) / 512).max(allocated).max(1);
        SnapshotStatus::Usage { allocated, total, metadata: 0 }
    }
}

/// The system calls f2fs mode makes, behind a trait so the option logic
/// (EAGAIN/EINVAL) and the life cycle run on a host with a fake.
pub trait F2fsSys: Send {
    /// mount(2) of an f2fs filesystem. The raw errno is the answer the
    /// option choice depends on.
    fn mount(&mut self, source: &str, target: &str, flags: MsFlags, data: &str) -> std::result::Result<(), Errno>;
    fn umount(&mut self, target: &str) -> std::result::Result<(), Errno>;
    /// What is mounted on `mount_point`, if anything.
    fn live(&self, mount_point: &str) -> Option<LiveMount>;
    /// "major:minor" of a block device node.
    fn device_number(&self, device: &str) -> std::result::Result<String, F2fsError>;
    fn device_size(&self, device: &str) -> std::result::Result<u64, F2fsError>;
    /// Unusable and free space of the f2fs mounted on `mount_point`.
    fn space(&self, mount_point: &str) -> std::result::Result<F2fsSpace, F2fsError>;
    /// `ckpt_flags` of the last valid checkpoint on the (unmounted) device.
    fn checkpoint_flags(&self, device: &str) -> std::result::Result<u32, F2fsError>;
}

/// include/linux/f2fs_fs.h: the checkpoint was written while checkpointing
/// was off (the mount with checkpoint=disable); a mount goes back to it.
pub const CP_DISABLED_FLAG: u32 = 0x0000_1000;
const F2FS_MAGIC: u32 = 0xF2F5_2010;
/// The superblock's offset on the device (the first copy).
const SUPER_OFFSET: u64 = 1024;

/// `ckpt_flags` of the newest valid checkpoint pack (of the two) on an
/// f2fs device or image, read directly (on-disk layout of
/// include/linux/f2fs_fs.h). A pack is valid when its header and footer
/// carry the same version; the CRC is not checked, so use the answer for
/// reports only, never to decide what to do with data.
pub fn last_checkpoint_flags(device: &Path) -> std::result::Result<u32, F2fsError> {
    let f = std::fs::File::open(device).map_err(|source| F2fsError::Read { path: device.to_path_buf(), source })?;
    checkpoint_flags_from(&f, device)
}

/// [`last_checkpoint_flags`] over any reader (an image in memory for the
/// fuzzer); `device` only names it in errors.
pub fn checkpoint_flags_from(src: &dyn ReadAt, device: &Path) -> std::result::Result<u32, F2fsError> {
    let read = |off: u64, len: usize| -> std::result::Result<Vec<u8>, F2fsError> {
        let mut b = vec![0u8; len];
        src.read_at_exact(&mut b, off).map_err(|source| F2fsError::Read { path: device.to_path_buf(), source })?;
        Ok(b)
    };
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let u64_at = |b: &[u8], o: usize| u64::from(u32_at(b, o)) | (u64::from(u32_at(b, o + 4)) << 32);
    let bad = |what: &str| F2fsError::Parse { path: device.to_path_buf(), text: what.to_string() };
    let sb = read(SUPER_OFFSET, 128)?;
    if u32_at(&sb, 0) != F2FS_MAGIC {
        return Err(bad("no f2fs superblock"));
    }
    let (log_block, log_per_seg, cp_blkaddr) = (u32_at(&sb, 16), u32_at(&sb, 20), u64::from(u32_at(&sb, 76)));
    if !(9..=16).contains(&log_block) || log_per_seg > 16 {
        return Err(bad("superblock sizes out of range"));
    }
    let bs = 1u64 << log_block;
    let per_seg = 1u64 << log_per_seg;
    let mut best: Option<(u64, u32)> = None;
    for start in [cp_blkaddr, cp_blkaddr + per_seg] {
        let head = read(start * bs, 140)?;
        let (ver, flags, total) = (u64_at(&head, 0), u32_at(&head, 132), u64::from(u32_at(&head, 136)));
        if total == 0 || total > per_seg {
            continue;
        }
        let foot = read((start + total - 1) * bs, 8)?;
        if u64_at(&foot, 0) != ver {
            continue;
        }
        if best.is_none_or(|(v, _)| ver > v) {
            best = Some((ver, flags));
        }
    }
    best.map(|(_, f)| f).ok_or_else(|| bad("no valid checkpoint pack"))
}

/// The real kernel.
pub struct KernelF2fs;

impl F2fsSys for KernelF2fs {
    fn mount(&mut self, source: &str, target: &str, flags: MsFlags, data: &str) -> std::result::Result<(), Errno> {
        nix::mount::mount(Some(source), target, Some("f2fs"), flags, if data.is_empty() { None } else { Some(data) })
    }
    fn umount(&mut self, target: &str) -> std::result::Result<(), Errno> {
        nix::mount::umount2(target, nix::mount::MntFlags::empty())
    }
    fn live(&self, mount_point: &str) -> Option<LiveMount> {
        let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        live_mount_from(&text, mount_point)
    }
    fn device_number(&self, device: &str) -> std::result::Result<String, F2fsError> {
        crate::sys::block_device(Path::new(device))
            .map(|d| d.to_string())
            .map_err(|source| F2fsError::Size { device: device.to_string(), source })
    }
    fn device_size(&self, device: &str) -> std::result::Result<u64, F2fsError> {
        crate::sys::block_size_bytes(Path::new(device))
            .map_err(|source| F2fsError::Size { device: device.to_string(), source })
    }
    fn space(&self, mount_point: &str) -> std::result::Result<F2fsSpace, F2fsError> {
        let live =
            self.live(mount_point).ok_or_else(|| F2fsError::NotMounted { mount_point: mount_point.to_string() })?;
        // The sysfs directory is named after the kernel's name of the
        // block device (sb->s_id: vda, dm-0, sda17), which the
        // /sys/dev/block/<maj:min> link leads to.
        let link = PathBuf::from(format!("/sys/dev/block/{}", live.device));
        let target = std::fs::read_link(&link).map_err(|source| F2fsError::Read { path: link.clone(), source })?;
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| F2fsError::Parse { path: link.clone(), text: target.display().to_string() })?;
        let path = PathBuf::from(format!("/sys/fs/f2fs/{name}/unusable"));
        let text = std::fs::read_to_string(&path).map_err(|source| F2fsError::Read { path: path.clone(), source })?;
        let blocks: u64 =
            text.trim().parse().map_err(|_| F2fsError::Parse { path: path.clone(), text: text.trim().to_string() })?;
        let st = nix::sys::statvfs::statvfs(mount_point)
            .map_err(|source| F2fsError::Statvfs { mount_point: mount_point.to_string(), source })?;
        // f2fs counts unusable in its own blocks, which statfs reports as
        // f_bsize (4 KiB, or the page size on newer kernels).
        let bsize = st.block_size() as u64;
        Ok(F2fsSpace { unusable_bytes: blocks * bsize, free_bytes: st.blocks_free() as u64 * bsize })
    }
    fn checkpoint_flags(&self, device: &str) -> std::result::Result<u32, F2fsError> {
        last_checkpoint_flags(Path::new(device))
    }
}

/// Splits fstab mount options into VFS flags and the filesystem's data
/// string (fs_mgr's split). `checkpoint=` options are dropped: rewind
/// decides them.
pub fn split_options(options: &[String]) -> (MsFlags, Vec<String>) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        let f = match o.as_str() {
            "defaults" | "rw" => Some(MsFlags::empty()),
            "ro" => Some(MsFlags::MS_RDONLY),
            "nosuid" => Some(MsFlags::MS_NOSUID),
            "nodev" => Some(MsFlags::MS_NODEV),
            "noexec" => Some(MsFlags::MS_NOEXEC),
            "noatime" => Some(MsFlags::MS_NOATIME),
            "nodiratime" => Some(MsFlags::MS_NODIRATIME),
            "relatime" => Some(MsFlags::MS_RELATIME),
            "sync" => Some(MsFlags::MS_SYNCHRONOUS),
            "dirsync" => Some(MsFlags::MS_DIRSYNC),
            "lazytime" => Some(MsFlags::MS_LAZYTIME),
            _ => None,
        };
        match f {
            Some(f) => flags |= f,
            None if o.starts_with("checkpoint=") => {}
            None => data.push(o.clone()),
        }
    }
    (flags, data)
}

fn with_option(base: &[String], opt: &str) -> String {
    let mut v = base.to_vec();
    v.push(opt.to_string());
    v.join(",")
}

/// Mounts (or, with MS_REMOUNT in `flags`, remounts) with checkpointing
/// off: `checkpoint=disable:N%` from N = 0, N += 10 on EAGAIN (f2fs could
/// not free enough space within its GC time for that share of unusable
/// blocks) up to 100, and plain `checkpoint=disable` on EINVAL (kernels
/// without the `:N%` form). Returns the option that was accepted.
pub fn disable_checkpoint(
    sys: &mut dyn F2fsSys,
    device: &str,
    mount_point: &str,
    flags: MsFlags,
    base: &[String],
) -> std::result::Result<String, F2fsError> {
    let mut tried: Vec<(String, Errno)> = Vec::new();
    let refused = |tried: Vec<(String, Errno)>| F2fsError::CheckpointRefused {
        device: device.to_string(),
        mount_point: mount_point.to_string(),
        tried,
    };
    let mut percent = START_PERCENT;
    loop {
        let opt = format!("checkpoint=disable:{percent}%");
        let data = with_option(base, &opt);
        match sys.mount(device, mount_point, flags, &data) {
            Ok(()) => return Ok(opt),
            Err(Errno::EAGAIN) => {
                tracing::warn!(device, mount_point, option = %opt, "f2fs: EAGAIN (not enough space reclaimable); raising the unusable share");
                tried.push((opt, Errno::EAGAIN));
                if percent >= MAX_PERCENT {
                    return Err(refused(tried));
                }
                percent = (percent + STEP_PERCENT).min(MAX_PERCENT);
            }
            Err(Errno::EINVAL) => {
                tried.push((opt, Errno::EINVAL));
                let plain = "checkpoint=disable".to_string();
                tracing::warn!(
                    device,
                    mount_point,
                    "f2fs: EINVAL for checkpoint=disable:N%; trying plain checkpoint=disable"
                );
                return match sys.mount(device, mount_point, flags, &with_option(base, &plain)) {
                    Ok(()) => Ok(plain),
                    Err(e) => {
                        tried.push((plain, e));
                        Err(refused(tried))
                    }
                };
            }
            // Not an answer about the option (no device, busy, I/O): a
            // plain failure the next prepare retries.
            Err(source) => {
                return Err(F2fsError::Mount {
                    device: device.to_string(),
                    mount_point: mount_point.to_string(),
                    options: data,
                    source,
                })
            }
        }
    }
}

/// Data options of the live mount that can be given back on a remount:
/// without rw/ro and the VFS-level ones (passed as flags), and without
/// `checkpoint=` (rewind decides it).
pub fn remountable_options(live: &LiveMount) -> Vec<String> {
    live.super_options
        .iter()
        .filter(|o| !matches!(o.as_str(), "rw" | "ro" | "sync" | "dirsync" | "lazytime" | "nolazytime"))
        .filter(|o| !o.starts_with("checkpoint="))
        .cloned()
        .collect()
}

/// The commit: a live remount with `checkpoint=enable`, which writes a
/// checkpoint of everything. f2fs resets the options a remount does not
/// name, so the live mount's own options are given back first; should the
/// kernel refuse one of them, the fstab's options, then `checkpoint=enable`
/// alone (what vold does). A failed commit would lose the attempt at the
/// next reboot, so every form is tried before giving up. Returns the data
/// string that was accepted.
pub fn enable_checkpoint(
    sys: &mut dyn F2fsSys,
    device: &str,
    mount_point: &str,
    live: &LiveMount,
    fstab_data: &[String],
) -> std::result::Result<String, F2fsError> {
    let flags = live.vfs_flags() | MsFlags::MS_REMOUNT;
    let mut forms = vec![
        with_option(&remountable_options(live), "checkpoint=enable"),
        with_option(fstab_data, "checkpoint=enable"),
        "checkpoint=enable".to_string(),
    ];
    forms.dedup();
    let mut last = None;
    for options in forms {
        match sys.mount(device, mount_point, flags, &options) {
            Ok(()) => return Ok(options),
            Err(source) => {
                tracing::warn!(mount_point, options = %options, error = %source, "f2fs: remount with checkpoint=enable refused; trying fewer options");
                last = Some(F2fsError::Remount { mount_point: mount_point.to_string(), options, source });
            }
        }
    }
    Err(last.unwrap_or(F2fsError::NotMounted { mount_point: mount_point.to_string() }))
}

/// The f2fs backend.
pub struct F2fsBackend {
    /// checkpoint=fs entries of the fstab.
    parts: Vec<CheckpointedPartition>,
    sys: Box<dyn F2fsSys>,
}

impl F2fsBackend {
    pub fn new(parts: Vec<CheckpointedPartition>, sys: Box<dyn F2fsSys>) -> Self {
        let parts = parts.into_iter().filter(|p| p.mode == CheckpointMode::Fs).collect();
        F2fsBackend { parts, sys }
    }

    fn entry(&self, name: &str) -> std::result::Result<&CheckpointedPartition, F2fsError> {
        self.parts.iter().find(|p| p.name == name).ok_or_else(|| F2fsError::UnknownPartition { name: name.to_string() })
    }

    /// The live mount on the entry's mount point, checked to be f2fs from
    /// the entry's device.
    fn live_checked(&self, e: &CheckpointedPartition) -> std::result::Result<Option<LiveMount>, F2fsError> {
        let Some(live) = self.sys.live(&e.mount_point) else { return Ok(None) };
        if live.fs_type != "f2fs" {
            return Err(F2fsError::NotF2fs { mount_point: e.mount_point.clone(), found: live.fs_type });
        }
        let expected = self.sys.device_number(&e.blk_device)?;
        if live.device != expected {
            return Err(F2fsError::WrongDevice {
                mount_point: e.mount_point.clone(),
                device: e.blk_device.clone(),
                expected,
                found: live.device,
            });
        }
        Ok(Some(live))
    }

    fn arm_one(&mut self, e: &CheckpointedPartition) -> std::result::Result<String, F2fsError> {
        let (flags, data) = split_options(&e.mnt_options);
        match self.live_checked(e)? {
            Some(live) if live.checkpoint_disabled() => Ok("already mounted with checkpoint=disable".into()),
            Some(live) => {
                // Mounted before PrepareUserdata (boot-order problem): arm
                // in place. Writes made before this point are part of the
                // baseline; say so.
                tracing::warn!(mount_point = %e.mount_point,
                    "f2fs: already mounted before prepare-userdata; disabling checkpoints by remount");
                let flags = live.vfs_flags() | MsFlags::MS_REMOUNT;
                disable_checkpoint(self.sys.as_mut(), &e.blk_device, &e.mount_point, flags, &data)
            }
            None => {
                std::fs::create_dir_all(&e.mount_point).ok();
                disable_checkpoint(self.sys.as_mut(), &e.blk_device, &e.mount_point, flags, &data)
            }
        }
    }
}

fn f2fs_err(e: F2fsError) -> Error {
    Error::Backend { what: "f2fs checkpoint", kind: e.kind(), source: Box::new(e) }
}

impl Backend for F2fsBackend {
    fn traits(&self, _name: &str) -> Traits {
        Traits {
            kind: BackendKind::F2fs,
            commit_data_first: true,
            arm_refusal_is_final: true,
            usage: Usage::F2fsUnusable,
        }
    }

    /// Not an attempt: nothing to set up; init mounts /data as usual.
    fn ensure_idle(&mut self, _part: &CheckpointedPartition) -> Result<()> {
        Ok(())
    }

    /// f2fs mode keeps no COW store: the baseline is f2fs's last checkpoint
    /// before the next checkpoint=disable mount. One is written now so
    /// everything up to the start is in it even if this boot ends in a
    /// crash.
    fn create_store(&self, part: &CheckpointedPartition, cow: &CowConfig, raw_size: u64) -> Result<PartitionState> {
        crate::sys::checkpoint_fs(Path::new(&part.mount_point))?;
        Ok(PartitionState {
            name: part.name.clone(),
            mount_point: part.mount_point.clone(),
            fs_type: part.fs_type.clone(),
            backend: BackendKind::F2fs,
            raw_device: part.raw_device.clone(),
            raw_size_bytes: raw_size,
            chunk_sectors: cow.chunk_sectors,
            cow_sha256: extents_hash(&[]),
            free_map: None,
            free_map_seal: None,
            cow_files: Vec::new(),
        })
    }

    /// No store to verify; the partition must still be the one the
    /// checkpoint started on (same size).
    fn verify_store(&mut self, part: &PartitionState) -> Result<()> {
        let now = self.sys.device_size(&part.raw_device).map_err(f2fs_err)?;
        if now != part.raw_size_bytes {
            return Err(f2fs_err(F2fsError::DeviceChanged {
                device: part.raw_device.clone(),
                recorded: part.raw_size_bytes,
                now,
            }));
        }
        Ok(())
    }

    /// The uncommitted attempt was dropped by the crash or unmount that
    /// ended it. Only if it is still mounted with checkpointing off (not
    /// on a normal boot) does dropping it need an unmount.
    fn merge(&mut self, part: &PartitionState, _progress: &mut dyn FnMut(Progress)) -> Result<Merged> {
        let e = self.entry(&part.name).map_err(f2fs_err)?.clone();
        match self.live_checked(&e).map_err(f2fs_err)? {
            Some(live) if live.checkpoint_disabled() => {
                self.sys
                    .umount(&e.mount_point)
                    .map_err(|source| f2fs_err(F2fsError::Unmount { mount_point: e.mount_point.clone(), source }))?;
                tracing::info!(mount_point = %e.mount_point, "f2fs: unmounted with checkpoint=disable: attempt dropped");
            }
            Some(_) => {
                // Mounted with checkpointing on before prepare: that mount
                // already went back to the last checkpoint (the baseline).
                tracing::warn!(mount_point = %e.mount_point, "f2fs: mounted before prepare-userdata; the attempt was dropped at that mount");
            }
            None => {}
        }
        Ok(Merged::Nothing)
    }

    fn arm(&mut self, part: &PartitionState, _attempt: u32) -> Result<Option<FreeMap>> {
        let e = self.entry(&part.name).map_err(f2fs_err)?.clone();
        let started = std::time::Instant::now();
        let opt = self.arm_one(&e).map_err(f2fs_err)?;
        tracing::info!(mount_point = %e.mount_point, option = %opt, ms = started.elapsed().as_millis() as u64,
            "f2fs: attempt armed (checkpointing off)");
        Ok(None)
    }

    fn commit_live(&mut self, part: &PartitionState) -> Result<()> {
        let e = self.entry(&part.name).map_err(f2fs_err)?.clone();
        match self.live_checked(&e).map_err(f2fs_err)? {
            Some(live) if live.checkpoint_disabled() => {
                let (_, fstab_data) = split_options(&e.mnt_options);
                let opt = enable_checkpoint(self.sys.as_mut(), &e.blk_device, &e.mount_point, &live, &fstab_data)
                    .map_err(f2fs_err)?;
                tracing::info!(mount_point = %e.mount_point, options = %opt, "f2fs: checkpointing on again (committed)");
                Ok(())
            }
            // Already enabled (a repeated commit after a cut): done.
            Some(_) => Ok(()),
            None => {
                // Not mounted: whatever the attempt wrote is gone already
                // (f2fs drops it at unmount); there is nothing to enable.
                tracing::warn!(mount_point = %e.mount_point,
                    "f2fs: commit with the filesystem not mounted: changes not checkpointed before the unmount are lost");
                Ok(())
            }
        }
    }

    fn is_armed(&self, part: &PartitionState) -> Result<bool> {
        let e = self.entry(&part.name).map_err(f2fs_err)?;
        Ok(self.live_checked(e).map_err(f2fs_err)?.is_some_and(|l| l.checkpoint_disabled()))
    }

    fn usage(&self, part: &PartitionState) -> Result<Option<SnapshotStatus>> {
        if !self.is_armed(part)? {
            return Ok(None);
        }
        Ok(Some(self.sys.space(&part.mount_point).map_err(f2fs_err)?.as_status()))
    }

    /// StartCheckpoint: /data must be mounted now, as f2fs, from the
    /// fstab's device, with checkpointing on.
    fn check_mounted(&self, part: &CheckpointedPartition) -> Result<u64> {
        let mount_point = part.mount_point.as_str();
        let e = self.entry(&part.name).map_err(f2fs_err)?;
        match self.live_checked(e).map_err(f2fs_err)? {
            None => Err(f2fs_err(F2fsError::NotMounted { mount_point: mount_point.to_string() })),
            Some(l) if l.checkpoint_disabled() => {
                Err(f2fs_err(F2fsError::AlreadyDisabled { mount_point: mount_point.to_string() }))
            }
            Some(_) => self.sys.device_size(&part.raw_device).map_err(f2fs_err),
        }
    }

    fn interrupted_commit_note(&self, part: &PartitionState) -> Option<String> {
        // Mounted: commit_live enables checkpointing live, nothing is lost.
        if self.sys.live(&part.mount_point).is_some() {
            return None;
        }
        Some(match self.sys.checkpoint_flags(&part.raw_device) {
            Ok(f) if f & CP_DISABLED_FLAG != 0 => "the power cut came before f2fs checkpointed the attempt \
                 (its last checkpoint is the one written with checkpointing off): the attempt's changes \
                 are lost and userdata is at the baseline"
                .to_string(),
            Ok(_) => "f2fs had checkpointed the attempt before the power cut: its changes are kept".to_string(),
            Err(e) => format!(
                "f2fs's last checkpoint is unreadable ({}): whether the attempt's changes were kept is unknown",
                error_chain(&e)
            ),
        })
    }

    fn stack(&self, name: &str) -> Vec<String> {
        let Ok(e) = self.entry(name) else { return Vec::new() };
        match self.sys.live(&e.mount_point) {
            Some(l) => {
                let cp = l
                    .super_options
                    .iter()
                    .find(|o| o.starts_with("checkpoint="))
                    .cloned()
                    .unwrap_or_else(|| "checkpoint=enable".into());
                vec![format!("{name}: f2fs {} on {} ({cp})", e.mount_point, e.blk_device)]
            }
            None => vec![format!("{name}: f2fs on {} (not mounted)", e.blk_device)],
        }
    }
}

#[cfg(test)]
mod tests;
