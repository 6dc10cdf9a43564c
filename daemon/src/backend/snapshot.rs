//! Block mode: dm-snapshot over COW files (architecture.md, "Device stack").
//!
//! ```text
//! rewind-<part>       always present: linear | snapshot-origin | snapshot-merge
//! rewind-<part>-cow   linear over the COW files' extents
//! rewind-<part>-snap  snapshot <raw> <cow> PO <chunk>  (never mounted)
//! rewind-<part>-verify  transient read-only linear, to re-read extents
//!                       (records without a map fingerprint only)
//! ```
//!
//! Kernel rule followed everywhere: the origin (or merge) device is
//! suspended while a snapshot target is loaded or unloaded.
//!
//! Before the COW map is used (arm, merge), it is checked against the
//! record. ext4 (records with a map fingerprint, `ext4map`): the raw
//! partition's bytes that hold each COW file's map (its inode's bytes
//! 0x10-0x6F and its extent-tree blocks) are read with O_DIRECT and
//! compared with the sha256s recorded at start; no device is created,
//! nothing is mounted and no key is needed, so this works before vold
//! stacks metadata encryption (dm-default-key) on `rewind-<part>` and under
//! Android's sepolicy, which forbids rewindd to mount. The log says
//! `COW map verified from the raw device (N regions, no mount)`. At start
//! (`seal_store`) the fingerprint is taken after the files were created,
//! checkpointed and FIEMAP-verified, from the device /data is mounted from
//! (parsed) and the raw partition (hashed), and only if the parsed extents
//! equal FIEMAP's; with a wide-block cipher (Adiantum) a neighbour inode's
//! change also changes our bytes, and the map is refused (safe, not silent).
//!
//! Records without a fingerprint (written before it existed, and f2fs)
//! keep the older check: the partition is exposed through the read-only
//! `-verify` device, mounted `ro` without journal replay (`noload` on ext4,
//! `norecovery` on f2fs) on a private directory under the metadata dir,
//! FIEMAP'd, and unmounted. Nothing can write to the raw device outside the
//! snapshot that way (a journal replay would, and would corrupt a pending
//! merge). start_checkpoint freezes/thaws the filesystem after creating the
//! files so the journal is checkpointed and the no-replay view shows them.
//!
//! The COW header is checked too: it must be zero (never armed) or a valid
//! dm-snapshot header with our chunk size. start zeroes it on the raw device
//! (under encryption the zeroes written through the filesystem are
//! ciphertext there).
//!
//! /data may be mounted from `rewind-<part>` or from a `crypt` /
//! `default-key` device stacked directly on it with offset 0 (metadata
//! encryption); FIEMAP offsets are then still raw offsets. The crypt
//! table's parameters hold the key and are never logged.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use devicemapper::{Device, Sectors};
use nix::mount::MsFlags;

use super::{Backend, Merged, Traits, Usage};
use crate::config::CowConfig;
use crate::config::{Config, DevNodes};
use crate::cowstore::{self, CowError};
use crate::dm::armed::armed_table;
use crate::dm::control::{ensure, snapshot_status};
use crate::dm::stats;
use crate::dm::target::{OriginParams, SnapParams, LINEAR, SNAPSHOT_MERGE, SNAPSHOT_ORIGIN};
use crate::dm::{DmControl, Freeze, SnapshotStatus, Table, Target};
use crate::error::{Error, Result};
use crate::ext4map::{self, InodeMap};
use crate::fstab::CheckpointedPartition;
use crate::state::{extents_hash, runs_hash, FreeMap, FreeMapSeal, PartitionState};
use crate::sys;
use crate::sys::blockdev::ReadAt;
use crate::sys::blockdev::{self, BlockInfo};
use crate::types::{error_chain, BackendKind, Progress};

/// dm-snapshot's persistent store magic ("SnAp", little endian).
pub const SNAP_MAGIC: u32 = 0x7041_6e53;
/// Bytes zeroed at the start of the store before arming (the header).
pub const HEADER_ZERO_BYTES: usize = 4096;
/// How often a merge is polled (progress is reported at least every second).
/// Most lines in an armed top table (free map): past it the smallest free
/// runs stay protected. Loading a table costs per line; 4,096 lines keep
/// arming well under a second while a fragmented baseline still gains its
/// large free runs.
const MAX_ARMED_LINES: usize = 4096;
const MERGE_POLL: Duration = Duration::from_millis(200);
/// A merge making no progress for this long is reported as failed.
const MERGE_STALL: Duration = Duration::from_secs(600);

/// File and mount operations the stack needs besides dm ioctls.
pub trait StackIo: Send {
    /// Device number and size in bytes of the raw partition.
    fn raw(&self, path: &str) -> Result<(Device, u64)>;
    fn node(&self, name: &str, dev: Device) -> Result<PathBuf>;
    fn remove_node(&self, name: &str);
    fn read_head(&self, node: &Path) -> Result<[u8; 16]>;
    fn zero_head(&self, node: &Path) -> Result<()>;
    fn mount_ro(&self, node: &Path, fs_type: &str, dir: &Path) -> Result<()>;
    fn umount(&self, dir: &Path) -> Result<()>;
    /// Device number of the filesystem mounted at `dir`.
    fn mounted_device(&self, dir: &str) -> Option<Device>;
    /// What sysfs says about a block device (kernel name, size, slaves).
    fn block_info(&self, dev: Device) -> Result<BlockInfo>;
    /// The ext4 map of the file at `path` (`size` bytes), parsed from the
    /// filesystem on `fs_dev`, the device it is mounted from.
    fn ext4_map(&self, fs_dev: Device, path: &Path, size: u64) -> Result<InodeMap>;
    /// The raw device, for reads below every page cache (O_DIRECT).
    fn open_raw(&self, raw: &str) -> Result<Box<dyn ReadAt>>;
    /// The devices stacked directly on `dev` (sysfs holders).
    fn holders(&self, dev: Device) -> Result<Vec<Device>>;
    /// Any block device by number, read-only, O_DIRECT (a crypt layer's
    /// plaintext, for the sealed free map).
    fn open_dev(&self, dev: Device) -> Result<Box<dyn ReadAt>>;
}

/// The real system.
pub struct SysIo {
    pub dev_dir: PathBuf,
    /// Whether rewindd makes the nodes or waits for ueventd's.
    pub dev_nodes: DevNodes,
}

/// How long to wait for ueventd's node of a new dm device (it normally
/// takes milliseconds; ueventd may be busy with coldboot at early-fs).
const UEVENTD_NODE_WAIT: Duration = Duration::from_secs(10);

impl SysIo {
    /// A node for `dev`: the one ueventd or devtmpfs made if there is one,
    /// else one made as `name` (`true`: remove it with `remove_node` once
    /// it is open).
    fn node_of(&self, dev: Device, name: &str) -> Result<(PathBuf, bool)> {
        let info = blockdev::block_info(Path::new(SYSFS), dev)?;
        Ok(match blockdev::existing_node(Path::new("/dev"), &info.kname, dev) {
            Some(p) => (p, false),
            None => (self.node(name, dev)?, true),
        })
    }
}

impl StackIo for SysIo {
    fn raw(&self, path: &str) -> Result<(Device, u64)> {
        let p = Path::new(path);
        Ok((sys::block_device(p)?, sys::block_size_bytes(p)?))
    }
    fn node(&self, name: &str, dev: Device) -> Result<PathBuf> {
        Ok(match self.dev_nodes {
            DevNodes::Mknod => sys::make_dev_node(&self.dev_dir, name, dev)?,
            DevNodes::Ueventd => sys::wait_dev_node(&self.dev_dir, name, dev, UEVENTD_NODE_WAIT)?,
        })
    }
    fn remove_node(&self, name: &str) {
        // ueventd removes its own nodes when the device goes.
        if self.dev_nodes == DevNodes::Mknod {
            sys::remove_dev_node(&self.dev_dir, name)
        }
    }
    // O_DIRECT both ways: the kernel writes the header through dm-bufio,
    // below the block device's page cache, so a cached page could be stale.
    fn read_head(&self, node: &Path) -> Result<[u8; 16]> {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(node)
            .map_err(|e| Error::io(format!("open {}", node.display()), e))?;
        let mut buf = blockdev::Aligned::new(HEADER_ZERO_BYTES);
        f.read_exact_at(buf.buf(), 0)
            .map_err(|e| Error::io(format!("read the COW header on {}", node.display()), e))?;
        let mut b = [0u8; 16];
        b.copy_from_slice(&buf.buf()[..16]);
        Ok(b)
    }
    fn zero_head(&self, node: &Path) -> Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(node)
            .map_err(|e| Error::io(format!("open {}", node.display()), e))?;
        let mut buf = blockdev::Aligned::new(HEADER_ZERO_BYTES);
        f.write_all_at(buf.buf(), 0)
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(format!("zero the COW header on {}", node.display()), e))
    }
    fn mount_ro(&self, node: &Path, fs_type: &str, dir: &Path) -> Result<()> {
        let opts = match fs_type {
            "ext4" | "ext3" => "noload",
            "f2fs" => "norecovery",
            _ => "",
        };
        let flags =
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_NOATIME;
        Ok(sys::mount(node, dir, fs_type, flags, opts)?)
    }
    fn umount(&self, dir: &Path) -> Result<()> {
        Ok(sys::umount(dir)?)
    }
    fn mounted_device(&self, dir: &str) -> Option<Device> {
        sys::mounted_device(Path::new(dir))
    }
    fn block_info(&self, dev: Device) -> Result<BlockInfo> {
        Ok(blockdev::block_info(Path::new(SYSFS), dev)?)
    }
    fn ext4_map(&self, fs_dev: Device, path: &Path, size: u64) -> Result<InodeMap> {
        let f = File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        let meta = f.metadata().map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
        if Device::from(meta.dev()) != fs_dev {
            return Err(Error::Unsafe(format!(
                "{} is on device {}, not on {fs_dev}",
                path.display(),
                Device::from(meta.dev())
            )));
        }
        // An extra cross-check (the extents compared with FIEMAP are the
        // real one): a policy that denies the ioctl (Android sepolicy
        // allow-lists ioctls) only loses this one.
        let generation = match blockdev::file_generation(&f, path) {
            Ok(g) => Some(g),
            Err(sys::SysError::Nix {
                source: e @ (nix::Error::EACCES | nix::Error::EPERM | nix::Error::ENOTTY),
                ..
            }) => {
                tracing::warn!(file = %path.display(), "FS_IOC_GETVERSION refused ({e}): inode generation not cross-checked");
                None
            }
            Err(e) => return Err(e.into()),
        };
        // Buffered reads: ext4 keeps its metadata in this device's page
        // cache, so they see what the filesystem sees.
        let name = format!("fsmap-{}-{}", fs_dev.major, fs_dev.minor);
        let (node, made) = self.node_of(fs_dev, &name)?;
        let res = File::open(&node).map_err(|e| Error::io(format!("open {}", node.display()), e)).and_then(|dev| {
            let m = ext4map::map_inode(&dev, meta.ino(), size)
                .map_err(|e| CowError::BadMap(format!("{}: {e} (on {})", path.display(), node.display())))?;
            if let Some(generation) = generation.filter(|g| *g != m.generation) {
                return Err(Error::from(CowError::BadMap(format!(
                    "{}: inode {} read from {} has generation {}, the file {generation}: not the same inode",
                    path.display(),
                    m.ino,
                    node.display(),
                    m.generation
                ))));
            }
            Ok(m)
        });
        if made {
            self.remove_node(&name);
        }
        res
    }
    fn open_raw(&self, raw: &str) -> Result<Box<dyn ReadAt>> {
        Ok(Box::new(blockdev::DirectDev::open(Path::new(raw))?))
    }
    fn holders(&self, dev: Device) -> Result<Vec<Device>> {
        Ok(blockdev::holders(Path::new(SYSFS), dev)?)
    }
    fn open_dev(&self, dev: Device) -> Result<Box<dyn ReadAt>> {
        let name = format!("seal-{}-{}", dev.major, dev.minor);
        let (node, made) = self.node_of(dev, &name)?;
        // The open descriptor keeps the device; a node made for it goes.
        let opened = blockdev::DirectDev::open(&node);
        if made {
            self.remove_node(&name);
        }
        Ok(Box::new(opened?))
    }
}

const SYSFS: &str = "/sys";

/// What the first bytes of a COW store say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// All zero: never armed, or armed and never written by the kernel.
    Zero,
    Valid {
        chunk_sectors: u32,
    },
    /// The kernel invalidated the snapshot (store full): no rollback.
    Invalidated,
    Foreign,
}

pub fn parse_header(b: &[u8; 16]) -> Header {
    let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    if b.iter().all(|x| *x == 0) {
        return Header::Zero;
    }
    // A magic of zero is a new store for the kernel, whatever follows.
    if word(0) == 0 {
        return Header::Zero;
    }
    if word(0) != SNAP_MAGIC || word(8) != 1 {
        return Header::Foreign;
    }
    if word(4) == 0 {
        return Header::Invalidated;
    }
    Header::Valid { chunk_sectors: word(12) }
}

pub struct SnapshotBackend {
    dm: Box<dyn DmControl>,
    io: Box<dyn StackIo>,
    prefix: String,
    verify_dir: PathBuf,
    /// `cow.free_map`: arm with the baseline's free chunks mapped linear.
    free_map: bool,
    /// `cow.free_counted_runs`: the linear runs that get a dm-stats region.
    free_counted_runs: u32,
    /// Sectors allocated in each merging store at this process's first
    /// look: the merge's total, for progress and the history.
    merge_start: std::collections::HashMap<String, u64>,
}

impl SnapshotBackend {
    pub fn new(config: &Config, dm: Box<dyn DmControl>, io: Box<dyn StackIo>) -> SnapshotBackend {
        SnapshotBackend {
            dm,
            io,
            prefix: config.dm_prefix.clone(),
            verify_dir: config.metadata_dir.join("mnt"),
            free_map: config.cow.free_map,
            free_counted_runs: config.cow.free_counted_runs,
            merge_start: Default::default(),
        }
    }

    pub fn top(&self, part: &str) -> String {
        format!("{}-{part}", self.prefix)
    }
    fn cow(&self, part: &str) -> String {
        format!("{}-{part}-cow", self.prefix)
    }
    fn snap(&self, part: &str) -> String {
        format!("{}-{part}-snap", self.prefix)
    }
    fn verify_name(&self, part: &str) -> String {
        format!("{}-{part}-verify", self.prefix)
    }

    fn linear_table(raw: Device, size: u64) -> Result<Table> {
        if size < 4096 || !size.is_multiple_of(512) {
            return Err(Error::Unsafe(format!("raw device {raw} has an unusable size of {size} bytes")));
        }
        Ok(Table::single(Sectors(size / 512), Target::linear(raw, Sectors(0))))
    }

    /// The raw device, checked against the record: another size means
    /// another partition, and writing through the map would hit it.
    fn raw_checked(&self, part: &PartitionState) -> Result<(Device, u64)> {
        let (dev, size) = self.io.raw(&part.raw_device)?;
        if size != part.raw_size_bytes {
            return Err(Error::Unsafe(format!(
                "{}: raw device {} is {size} bytes, {} recorded",
                part.name, part.raw_device, part.raw_size_bytes
            )));
        }
        Ok((dev, size))
    }

    fn ensure_top(&self, name: &str, raw: Device, size: u64) -> Result<Device> {
        let top = self.top(name);
        let table = Self::linear_table(raw, size)?;
        // The top device may legitimately carry a snapshot table inside the
        // boot that armed it; callers that accept that check first.
        let dev = ensure(&*self.dm, &top, &table, false)?.device();
        self.io.node(&top, dev)?;
        Ok(dev)
    }

    fn build_cow(&self, part: &PartitionState, raw: Device, size: u64) -> Result<(Device, PathBuf)> {
        let table = cowstore::linear_table(&part.cow_files, raw, size)?;
        let name = self.cow(&part.name);
        let dev = ensure(&*self.dm, &name, &table, false)?.device();
        let node = self.io.node(&name, dev)?;
        Ok((dev, node))
    }

    fn remove_cow(&self, part: &str) -> Result<()> {
        let name = self.cow(part);
        if self.dm.device(&name)?.is_some() {
            self.dm.remove(&name)?;
        }
        self.io.remove_node(&name);
        Ok(())
    }

    fn top_kind(&self, part: &str) -> Result<Option<&'static str>> {
        let top = self.top(part);
        Ok(match self.dm.device(&top)? {
            Some(_) => self.dm.table(&top)?.kind(),
            None => None,
        })
    }

    /// The top device's table while armed, and how it maps free space.
    /// With `cow.free_map` and an ext4 baseline whose bitmaps prove clean
    /// (read from the raw partition, below every page cache, before
    /// anything mounts it), the chunks it leaves free are mapped linear;
    /// otherwise, and on any doubt, one snapshot-origin line protects every
    /// chunk, as without the option.
    ///
    /// A map recorded by an earlier attempt of this checkpoint must be read
    /// back run for run: the rollback restored every chunk the baseline
    /// uses, bitmaps included, so a different map means the baseline is not
    /// what the record says, and nothing is mapped linear.
    fn armed_top_table(&self, part: &PartitionState, raw: Device, size: u64, attempt: u32) -> (Table, FreeMap) {
        let whole = Table::single(Sectors(size / 512), Target::Origin(OriginParams { origin: raw }));
        let not_used = |reason: String| {
            tracing::info!(partition = %part.name, "free map not used, every chunk protected: {reason}");
            (whole.clone(), FreeMap::NotUsed { reason })
        };
        if !self.free_map {
            return not_used("cow.free_map is off in the configuration".into());
        }
        if part.fs_type != "ext4" {
            return not_used(format!("the baseline is {}, and only ext4's bitmaps are read", part.fs_type));
        }
        let chunk_sectors = u64::from(part.chunk_sectors);
        let started = std::time::Instant::now();
        let (map, sealed_at_unix) = match self.read_free_map(part, size, chunk_sectors * 512) {
            Ok(found) => found,
            Err(why) => return not_used(why),
        };
        let read_ms = started.elapsed().as_millis() as u64;
        let t = match armed_table(raw, size / 512, chunk_sectors, &map.free_runs, MAX_ARMED_LINES) {
            Ok(t) => t,
            Err(why) => return not_used(format!("the table builder refused the map: {why}")),
        };
        let runs_sha256 = runs_hash(&t.runs);
        let taken_at_attempt = match &part.free_map {
            Some(FreeMap::Mapped { runs_sha256: recorded, taken_at_attempt, chunks, .. }) => {
                if *recorded != runs_sha256 || *chunks != map.chunks {
                    return not_used(format!(
                        "the bitmaps now show {} free chunks in {} runs, not the map recorded at attempt \
                         {taken_at_attempt}; the baseline is not what the record says",
                        t.free_chunks,
                        t.runs.len()
                    ));
                }
                *taken_at_attempt
            }
            _ => attempt,
        };
        tracing::info!(
            partition = %part.name,
            "free map: {} of {} chunks free, mapped linear ({} lines, {} small runs left protected), read in {read_ms} ms",
            t.free_chunks,
            map.chunks,
            t.table.lines.len(),
            t.runs_dropped,
        );
        let record = FreeMap::Mapped {
            chunk_bytes: chunk_sectors * 512,
            chunks: map.chunks,
            free_chunks_found: map.free_chunks(),
            runs: t.runs,
            runs_sha256,
            taken_at_attempt,
            read_ms,
            sealed_at_unix,
        };
        (t.table, record)
    }

    /// The baseline's free map: from its block bitmaps on the raw
    /// partition, or, when those cannot be read there (ciphertext, under
    /// metadata encryption), from the map sealed at the clean shutdown
    /// before the first attempt, if every fingerprinted byte of the raw
    /// partition is still what it was then (`Some(when it was sealed)`).
    /// Equal ciphertext at the same sectors is equal plaintext, and the map
    /// is a function of those bytes alone (ext4map::seal); anything else
    /// is an error saying why, and every chunk stays protected.
    fn read_free_map(
        &self,
        part: &PartitionState,
        size: u64,
        chunk_bytes: u64,
    ) -> std::result::Result<(ext4map::free::FreeMap, Option<u64>), String> {
        let raw = self.io.open_raw(&part.raw_device).map_err(|e| error_chain(&e))?;
        let (why, not_ext4) = match ext4map::free::take(&*raw, size, chunk_bytes) {
            Ok(map) => return Ok((map, None)),
            Err(e) => (error_chain(&e), matches!(e, ext4map::free::FreeMapError::Parse(ext4map::MapError::Magic(_)))),
        };
        let Some(seal) = &part.free_map_seal else {
            return Err(if not_ext4 {
                format!(
                    "{why}; no map was sealed at a clean shutdown (under metadata encryption the raw partition is \
                     ciphertext: `rewindctl seal-free-map` after /data is unmounted takes the map through the crypt layer)"
                )
            } else {
                why
            });
        };
        if seal.chunk_bytes != chunk_bytes || seal.chunks != size.div_ceil(chunk_bytes) {
            return Err(format!(
                "{why}; the sealed map is in {} chunks of {} bytes, the device has {} of {chunk_bytes}",
                seal.chunks,
                seal.chunk_bytes,
                size.div_ceil(chunk_bytes)
            ));
        }
        match ext4map::seal::broken(&*raw, &seal.regions) {
            Ok(None) => Ok((
                ext4map::free::FreeMap { chunk_bytes, chunks: seal.chunks, free_runs: seal.free_runs.clone() },
                Some(seal.sealed_at_unix),
            )),
            Ok(Some(change)) => Err(format!(
                "the raw partition is not readable ext4 ({why}), and the map sealed at shutdown no longer holds: \
                 {change} since the seal (the filesystem was mounted or changed after it)"
            )),
            Err(e) => Err(format!("{why}; the sealed map could not be checked: {e}")),
        }
    }

    /// Loads the merge: checks the store and swaps the top device to
    /// snapshot-merge (or finds it merging, after a cut). `false`: the store
    /// was never written (zero header): nothing to undo, the store is gone.
    fn begin_merge(&mut self, part: &PartitionState) -> Result<bool> {
        let (raw, size) = self.raw_checked(part)?;
        let top = self.top(&part.name);
        let kind = self.top_kind(&part.name)?;
        if kind.is_none() {
            self.ensure_top(&part.name, raw, size)?;
        }
        let (cow, cow_node) = self.build_cow(part, raw, size)?;
        let chunk = Sectors(u64::from(part.chunk_sectors));
        if kind == Some(SNAPSHOT_MERGE) {
            return Ok(true);
        }
        if kind == Some(SNAPSHOT_ORIGIN) {
            // The attempt is live in this boot (its filesystem may be
            // mounted): merging would change data under it. Rollback
            // happens at the next boot.
            return Err(Error::WrongPhase {
                phase: "checkpointing".into(),
                what: format!("{top} carries a live attempt; reboot to roll it back"),
            });
        } else if kind != Some(LINEAR) && kind.is_some() {
            return Err(Error::Unsafe(format!("{top} has an unexpected table ({kind:?})")));
        }
        match parse_header(&self.io.read_head(&cow_node)?) {
            Header::Zero => {
                self.remove_cow(&part.name)?;
                return Ok(false);
            }
            Header::Valid { chunk_sectors } if chunk_sectors == part.chunk_sectors => {}
            Header::Valid { chunk_sectors } => {
                return Err(Error::Unsafe(format!(
                    "{}: COW header says chunk {chunk_sectors}, recorded {}",
                    part.name, part.chunk_sectors
                )))
            }
            Header::Invalidated => {
                return Err(Error::Unsafe(format!(
                    "{}: the COW header says the kernel invalidated the snapshot (its store overflowed or failed); \
                     the baseline cannot be restored",
                    part.name
                )))
            }
            Header::Foreign => {
                return Err(Error::Unsafe(format!(
                    "{}: the COW map does not lead to a dm-snapshot store; refusing to merge",
                    part.name
                )))
            }
        }
        let table = Table::single(Sectors(size / 512), Target::Merge(SnapParams::new(raw, cow, chunk)));
        // A leftover snapshot device would share the store with the
        // merge: it goes in the same suspended window.
        self.swap_top(&part.name, &table, true)?;
        Ok(true)
    }

    /// One look at a loaded merge: reports progress and returns whether
    /// every exception is copied back, and the sectors still allocated.
    /// The first look of this process fixes the merge's total.
    fn merge_look(&mut self, part: &PartitionState, progress: &mut dyn FnMut(Progress)) -> Result<(bool, u64)> {
        let top = self.top(&part.name);
        match snapshot_status(&*self.dm, &top)? {
            st @ SnapshotStatus::Usage { allocated, metadata, .. } => {
                let start = *self.merge_start.entry(part.name.clone()).or_insert(allocated);
                let total = start.saturating_sub(metadata);
                let done = start.saturating_sub(allocated);
                progress(Progress {
                    step: "merge".into(),
                    partition: part.name.clone(),
                    done_sectors: done.min(total),
                    total_sectors: total,
                });
                Ok((st.merge_done(), allocated))
            }
            // After the swap: data is partly merged, so this is not a
            // refusal; the merge stays loaded and is retried.
            other => Err(Error::Internal(format!("{top}: merge status is '{other}'"))),
        }
    }

    /// The merge is over: the idle table, the store released.
    fn end_merge(&mut self, part: &PartitionState) -> Result<Merged> {
        let (raw, size) = self.raw_checked(part)?;
        self.swap_top(&part.name, &Self::linear_table(raw, size)?, false)?;
        self.remove_cow(&part.name)?;
        let merged = self.merge_start.remove(&part.name).unwrap_or(0);
        Ok(Merged::Merged { sectors: merged })
    }

    /// After an arm: one dm-stats region per linear run of the top device,
    /// for the `cow.free_counted_runs` longest runs, so status can say how
    /// much was written into free space (never copied, so the snapshot
    /// does not count it). Best effort: the
    /// counters are a report, never a reason to lose protection; a failure
    /// is logged and status says "unknown". Without a free map any regions
    /// of ours left from an earlier arm of this boot are deleted.
    fn count_free_writes(&self, part: &str, free_map: &FreeMap) {
        let top = self.top(part);
        let ranges = free_map.counted_sectors(self.free_counted_runs);
        let started = Instant::now();
        let r = if ranges.is_empty() {
            stats::delete_all(&*self.dm, &top).map(|deleted| stats::Ensured::Created { created: 0, deleted })
        } else {
            stats::ensure_regions(&*self.dm, &top, &ranges)
        };
        match r {
            Ok(stats::Ensured::Kept(n)) => {
                tracing::info!(partition = %part, "free-space write counters: {n} dm-stats regions kept from this boot")
            }
            Ok(stats::Ensured::Created { created: 0, .. }) => {}
            Ok(stats::Ensured::Created { created, deleted }) => tracing::info!(
                partition = %part,
                "free-space write counters: {created} dm-stats regions on {top} in {} ms ({deleted} stale deleted)",
                started.elapsed().as_millis()
            ),
            Err(e) => tracing::warn!(
                partition = %part,
                error = %error_chain(&e),
                "free-space write counters not set up; status reports writes into free space as unknown (protection is unaffected)"
            ),
        }
    }

    /// Arming found the stack of an arm a killed rewindd left in this boot
    /// (dm devices outlive the process, never a reboot): the snapshot made,
    /// the top maybe still suspended, its snapshot-origin table loaded or
    /// live. The record says no attempt was counted on it, and nothing is
    /// mounted on /data (prepare-userdata has not returned, so init has not
    /// mounted it; checked, as a caller could have): nothing was written
    /// through it. The top goes back to linear, the snapshot is dropped in
    /// the same suspended window (a top left suspended is resumed by it),
    /// and the arm starts afresh on a zeroed store. Arming on it instead
    /// would be refused at every prepare of this boot, and /data would be
    /// mounted over a stack the record does not know.
    fn undo_interrupted_arm(&self, part: &PartitionState, raw: Device, size: u64) -> Result<()> {
        if let Some(m) = self.io.mounted_device(&part.mount_point) {
            return Err(Error::Unsafe(format!(
                "{} is mounted (device {m}) over a snapshot stack no attempt was counted on; not re-arming under it",
                part.mount_point
            )));
        }
        tracing::warn!(partition = %part.name, "an arm interrupted in this boot left its stack; taking it down before arming again");
        self.swap_top(&part.name, &Self::linear_table(raw, size)?, true)
    }

    /// Swaps the top device's table while it is suspended, removing the
    /// snapshot device in the same window (kernel rule). On failure the
    /// device is resumed with whatever table it had, and the error returned.
    fn swap_top(&self, part: &str, table: &Table, remove_snap: bool) -> Result<()> {
        let top = self.top(part);
        let snap = self.snap(part);
        // Never a freeze (Freeze::No): every swap here keeps what the
        // filesystem reads, and a freeze would fail a mount of /data that
        // init starts meanwhile (a background merge ends from the poll).
        self.dm.suspend(&top, Freeze::No)?;
        let step = || -> Result<()> {
            if remove_snap && self.dm.device(&snap)?.is_some() {
                self.dm.remove(&snap)?;
                self.io.remove_node(&snap);
            }
            self.dm.load(&top, table)?;
            Ok(())
        };
        let res = step();
        let resumed = self.dm.resume(&top);
        res?;
        resumed?;
        Ok(())
    }

    /// The boot's check for ext4 stores recorded with a fingerprint: the
    /// map's bytes on the raw device are the recorded ones. No device, no
    /// mount, no key: works below metadata encryption.
    fn verify_fingerprint(&self, part: &PartitionState) -> Result<()> {
        let raw = self.io.open_raw(&part.raw_device)?;
        let mut n = 0;
        for f in &part.cow_files {
            let changed = |detail: String| Error::from(CowError::ExtentsChanged { path: f.path.clone(), detail });
            match ext4map::first_change(&*raw, &f.fingerprint) {
                Ok(None) => n += f.fingerprint.len(),
                Ok(Some((i, now))) => {
                    let r = &f.fingerprint[i];
                    let what = if i == 0 { format!("inode {}", f.inode) } else { format!("extent-tree block {i}") };
                    return Err(changed(format!(
                        "{what} at byte {} of {} ({} bytes) changed: sha256 {now}, recorded {}",
                        r.offset, part.raw_device, r.len, r.sha256
                    )));
                }
                Err(e) => return Err(changed(format!("cannot read the map fingerprint on {}: {e}", part.raw_device))),
            }
        }
        tracing::info!(partition = %part.name, "COW map verified from the raw device ({n} regions, no mount)");
        Ok(())
    }

    /// /data may be mounted from a metadata-encryption layer (vold's
    /// dm-default-key, or dm-crypt) stacked directly on the top device
    /// and mapping it 1:1: FIEMAP offsets are then still top (= raw)
    /// offsets. The table's parameters hold the key: only its target type
    /// is ever reported.
    fn check_crypt_layer(
        &self,
        top: &str,
        top_dev: Device,
        size: u64,
        mounted: Device,
    ) -> std::result::Result<(), String> {
        let (name, kind) = self.crypt_layer(top, top_dev, size, mounted)?;
        tracing::info!("mounted device {name} is a {kind} layer directly on {top}");
        Ok(())
    }

    /// Whether `upper` is a crypt/default-key layer mapping the top device
    /// 1:1 ([`blockdev::check_crypt_layer`]): its dm name and target type.
    fn crypt_layer(
        &self,
        top: &str,
        top_dev: Device,
        size: u64,
        upper: Device,
    ) -> std::result::Result<(String, &'static str), String> {
        let top_info = self.io.block_info(top_dev).map_err(|e| format!("sysfs of {top}: {}", error_chain(&e)))?;
        let info = self.io.block_info(upper).map_err(|e| format!("sysfs of {upper}: {}", error_chain(&e)))?;
        let name = info.dm_name.clone().ok_or_else(|| format!("{} is not a device-mapper device", info.kname))?;
        let lines = self.dm.raw_table(&name).map_err(|e| format!("table of {name}: {e}"))?;
        let kind = blockdev::check_crypt_layer(top_dev, &top_info.kname, size, &info, &lines)?;
        Ok((name, kind))
    }

    /// The metadata-encryption layer stacked on the top device, if one is:
    /// (its dm name, its device), checked as for a mount
    /// ([`blockdev::check_crypt_layer`]: one line, the whole top device,
    /// offset 0), so that its sector S is the raw partition's sector S.
    fn crypt_holder(&self, top: &str, top_dev: Device, size: u64) -> std::result::Result<(String, Device), String> {
        let holders = self.io.holders(top_dev).map_err(|e| format!("holders of {top}: {}", error_chain(&e)))?;
        let mut refused = Vec::new();
        for dev in holders {
            match self.crypt_layer(top, top_dev, size, dev) {
                Ok((name, _)) => return Ok((name, dev)),
                Err(why) => refused.push(why),
            }
        }
        Err(if refused.is_empty() {
            format!("no crypt layer sits on {top}: the raw partition is plain ext4, read at arm time, nothing to seal")
        } else {
            format!("nothing on {top} is a crypt layer mapping it 1:1 ({})", refused.join("; "))
        })
    }

    /// The sealed free map of `part` (Backend::seal_free_map).
    fn seal_inner(&self, part: &PartitionState) -> std::result::Result<FreeMapSeal, String> {
        if !self.free_map {
            return Err("cow.free_map is off in the configuration".into());
        }
        if part.fs_type != "ext4" {
            return Err(format!("the baseline is {}, and only ext4's bitmaps are read", part.fs_type));
        }
        let top = self.top(&part.name);
        let top_dev =
            self.dm.device(&top).map_err(|e| error_chain(&e))?.ok_or_else(|| format!("{top} does not exist"))?;
        let (_, size) = self.io.raw(&part.raw_device).map_err(|e| error_chain(&e))?;
        let (name, crypt) = self.crypt_holder(&top, top_dev, size)?;
        if self.io.mounted_device(&part.mount_point) == Some(crypt) {
            return Err(format!(
                "{} is still mounted from {name}: the map is sealed once it is unmounted (its bitmaps are final only then)",
                part.mount_point
            ));
        }
        let started = std::time::Instant::now();
        let plain = self.io.open_dev(crypt).map_err(|e| format!("open {name}: {}", error_chain(&e)))?;
        let raw = self.io.open_raw(&part.raw_device).map_err(|e| error_chain(&e))?;
        let chunk_bytes = u64::from(part.chunk_sectors) * 512;
        let sealed = ext4map::seal::seal(&*plain, &*raw, size, chunk_bytes)
            .map_err(|e| format!("through {name}: {}", error_chain(&e)))?;
        let sealed_at_unix =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        tracing::info!(
            partition = %part.name,
            "free map sealed through {name}: {} of {} chunks free in {} runs, {} regions fingerprinted",
            sealed.map.free_chunks(),
            sealed.map.chunks,
            sealed.map.free_runs.len(),
            sealed.regions.len()
        );
        Ok(FreeMapSeal {
            chunk_bytes,
            chunks: sealed.map.chunks,
            runs_sha256: runs_hash(&sealed.map.free_runs),
            free_runs: sealed.map.free_runs,
            regions: sealed.regions,
            sealed_at_unix,
            read_ms: started.elapsed().as_millis() as u64,
        })
    }

    fn verify_inner(&self, part: &PartitionState, raw: Device, size: u64, dir: &Path) -> Result<()> {
        let name = self.verify_name(&part.name);
        let table = Self::linear_table(raw, size)?;
        let dev = self.dm.create(&name, &table, true)?;
        let node = self.io.node(&name, dev)?;
        let res = match self.io.mount_ro(&node, &part.fs_type, dir) {
            Ok(()) => {
                let r = cowstore::verify(&part.cow_files, &part.mount_point, dir).map_err(Error::from);
                let u = self.io.umount(dir);
                r.and(u)
            }
            Err(e) => Err(e),
        };
        let removed = self.dm.remove(&name);
        self.io.remove_node(&name);
        res?;
        removed?;
        Ok(())
    }
    /// At start, after the COW files are created, checkpointed and verified
    /// through the filesystem: prepares what the boot checks below it (the
    /// store's header zeroed on the raw device, the ext4 map fingerprint
    /// recorded into `part`).
    fn seal_store(&self, part: &mut PartitionState) -> Result<()> {
        // The dm-snapshot header is the -cow device's first 4 KiB.
        // cowstore::create wrote zeroes through the filesystem; under
        // metadata encryption the disk holds their ciphertext, which the
        // boot's header check would refuse as a foreign store. So the
        // header is zeroed below the filesystem, through a short-lived
        // -cow device (the linear map of the very extents the boot will
        // use, so a header spanning extents is handled by the kernel):
        // rewindd never opens the raw partition for writing, and sepolicy
        // grants it dm devices, not userdata_block_device writes. Safe:
        // the files are immutable (their blocks cannot be reallocated) and
        // nothing reads them through the filesystem.
        let (raw_dev, size) = self.raw_checked(part)?;
        let (_, cow_node) = self.build_cow(part, raw_dev, size)?;
        let zeroed = self.io.zero_head(&cow_node).and_then(|()| self.io.read_head(&cow_node)).and_then(|head| {
            if head.iter().all(|b| *b == 0) {
                Ok(())
            } else {
                Err(Error::Internal(format!("{}: the COW header reads back non-zero after zeroing it", part.name)))
            }
        });
        let removed = self.remove_cow(&part.name);
        zeroed?;
        removed?;
        if part.fs_type != "ext4" {
            // f2fs: the boot re-reads the map through a read-only mount.
            return Ok(());
        }
        let fs_dev = self
            .io
            .mounted_device(&part.mount_point)
            .ok_or_else(|| Error::Unavailable(format!("{} is not mounted", part.mount_point)))?;
        let raw = self.io.open_raw(&part.raw_device)?;
        let mut regions = 0;
        for f in &mut part.cow_files {
            let m = self.io.ext4_map(fs_dev, Path::new(&f.path), f.size_bytes)?;
            // The parse must say exactly what the kernel said: if it does
            // not, the parser is wrong and its regions mean nothing.
            if let Err(e) = cowstore::compare(f, &m.extents) {
                let detail = match e {
                    CowError::ExtentsChanged { detail, .. } => detail,
                    other => other.to_string(),
                };
                return Err(Error::from(CowError::BadMap(format!(
                    "the ext4 parse of {} (inode {}) disagrees with FIEMAP ({detail}); not starting",
                    f.path, m.ino
                ))));
            }
            f.fingerprint = ext4map::fingerprint(&*raw, &m.regions())
                .map_err(|e| CowError::BadMap(format!("{}: fingerprint on {}: {e}", f.path, part.raw_device)))?;
            f.inode = m.ino;
            regions += f.fingerprint.len();
            tracing::info!(
                partition = %part.name,
                file = %f.path,
                inode = m.ino,
                tree_blocks = m.tree_blocks.len(),
                "COW map fingerprinted at inode byte {} ({} regions)",
                m.inode_offset,
                f.fingerprint.len()
            );
        }
        tracing::info!(partition = %part.name, "COW map fingerprint recorded ({regions} regions of {})", part.raw_device);
        Ok(())
    }
}

/// The store's files for one partition, checked as the boot will check
/// them: stray files of an unrecorded start removed, sized from free space,
/// created (fallocate, real zeroes, fsync, immutable/pinned), the journal
/// checkpointed so a no-replay view at boot sees them, the extents read
/// back, and the map checked for bounds and overlap. Removes the files it
/// made if any later step fails. The device work (header, fingerprint) is
/// [`SnapshotBackend`]'s; host tests with a recording backend use this part
/// alone, on real files.
pub fn create_cow_files(part: &CheckpointedPartition, cow: &CowConfig, raw_size: u64) -> Result<PartitionState> {
    let mp = Path::new(&part.mount_point);
    // Files from an earlier, unrecorded start (a cut before the record was
    // written) are ours: remove them first.
    let stray = cowstore::stray_files(mp, &cow.dir);
    if !stray.is_empty() {
        tracing::warn!(count = stray.len(), "removing stray COW files");
        cowstore::remove_stray(&stray)?;
    }
    let free = sys::free_bytes(mp)?;
    let plan = cowstore::plan(free, cow, &part.mount_point)?;
    let files = cowstore::create(mp, cow, &part.fs_type, &plan)?;
    let state = PartitionState {
        name: part.name.clone(),
        mount_point: part.mount_point.clone(),
        fs_type: part.fs_type.clone(),
        backend: BackendKind::Snapshot,
        raw_device: part.raw_device.clone(),
        raw_size_bytes: raw_size,
        chunk_sectors: cow.chunk_sectors,
        cow_sha256: extents_hash(&files),
        free_map: None,
        free_map_seal: None,
        cow_files: files,
    };
    let checked = (|| -> Result<()> {
        // Checkpoint the journal so a no-replay mount at boot sees the
        // files, then make sure the extents did not move.
        sys::checkpoint_fs(mp)?;
        cowstore::verify(&state.cow_files, &state.mount_point, mp)?;
        // The map must also pass the checks the boot applies (bounds,
        // overlap) now, not first at boot.
        cowstore::linear_table(&state.cow_files, Device { major: 0, minor: 0 }, raw_size)?;
        Ok(())
    })();
    match checked {
        Ok(()) => Ok(state),
        Err(e) => {
            let _ = cowstore::remove(&state.cow_files);
            Err(e)
        }
    }
}

impl SnapshotBackend {
    /// Block mode's rules: the data survives a cut at any point, so the
    /// commit command runs before the data commit; an arm refusal is retried
    /// at the next boot; the usage is the COW store's.
    pub const TRAITS: Traits = Traits {
        kind: BackendKind::Snapshot,
        commit_data_first: false,
        arm_refusal_is_final: false,
        usage: Usage::CowStore,
    };
}

impl Backend for SnapshotBackend {
    fn traits(&self, _name: &str) -> Traits {
        Self::TRAITS
    }

    fn create_store(&self, part: &CheckpointedPartition, cow: &CowConfig, raw_size: u64) -> Result<PartitionState> {
        let mut state = create_cow_files(part, cow, raw_size)?;
        // What the boot checks without mounting (header on the raw device,
        // ext4 map fingerprint): recorded with the files.
        if let Err(e) = self.seal_store(&mut state) {
            let _ = cowstore::remove(&state.cow_files);
            return Err(e);
        }
        Ok(state)
    }

    fn ensure_idle(&mut self, part: &CheckpointedPartition) -> Result<()> {
        let (raw, size) = self.io.raw(&part.raw_device)?;
        self.ensure_top(&part.name, raw, size)?;
        Ok(())
    }

    fn verify_store(&mut self, part: &PartitionState) -> Result<()> {
        let (raw, size) = self.raw_checked(part)?;
        // A leftover from a crash in the middle of a verification.
        let name = self.verify_name(&part.name);
        let dir = self.verify_dir.join(&part.name);
        if self.dm.device(&name)?.is_some() {
            let _ = self.io.umount(&dir);
            self.dm.remove(&name)?;
        }
        let with = part.cow_files.iter().filter(|f| !f.fingerprint.is_empty()).count();
        if with > 0 && with == part.cow_files.len() && part.fs_type == "ext4" {
            return self.verify_fingerprint(part);
        }
        if with > 0 {
            return Err(Error::Unsafe(format!(
                "{}: {with} of {} COW files have a map fingerprint ({}): the record is inconsistent",
                part.name,
                part.cow_files.len(),
                part.fs_type
            )));
        }
        self.verify_inner(part, raw, size, &dir)
    }

    fn merge(&mut self, part: &PartitionState, progress: &mut dyn FnMut(Progress)) -> Result<Merged> {
        if !self.begin_merge(part)? {
            return Ok(Merged::Nothing);
        }
        let mut last_change = Instant::now();
        let mut last_alloc = u64::MAX;
        loop {
            let (done, allocated) = self.merge_look(part, progress)?;
            if done {
                break;
            }
            if allocated != last_alloc {
                last_alloc = allocated;
                last_change = Instant::now();
            } else if last_change.elapsed() > MERGE_STALL {
                return Err(Error::Internal(format!(
                    "{}: merge made no progress for {MERGE_STALL:?}",
                    self.top(&part.name)
                )));
            }
            std::thread::sleep(MERGE_POLL);
        }
        self.end_merge(part)
    }

    fn hold_back(&mut self, part: &PartitionState) -> Result<()> {
        let top = self.top(&part.name);
        let snap = self.snap(&part.name);
        // A merge target goes with the top; a leftover snapshot first (it
        // shares the store, and the kernel wants it gone while the origin
        // is suspended: removing the top ends that use).
        if self.dm.device(&snap)?.is_some() {
            self.dm.suspend(&top, Freeze::No)?;
            let removed = self.dm.remove(&snap);
            self.dm.resume(&top)?;
            removed?;
            self.io.remove_node(&snap);
        }
        if self.dm.device(&top)?.is_some() {
            self.dm.remove(&top)?;
        }
        self.io.remove_node(&top);
        self.merge_start.remove(&part.name);
        tracing::warn!(partition = %part.name, "{top} removed: the rollback cannot go on in this boot, nothing may mount the partition half merged");
        Ok(())
    }

    fn merge_in_background(&mut self, part: &PartitionState) -> Result<Option<Merged>> {
        if !self.begin_merge(part)? {
            return Ok(Some(Merged::Nothing));
        }
        // The first look records where the merge starts (for its total).
        let (done, _) = self.merge_look(part, &mut |_| {})?;
        if done {
            return self.end_merge(part).map(Some);
        }
        Ok(None)
    }

    fn poll_background_merge(
        &mut self,
        part: &PartitionState,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Option<Merged>> {
        if self.top_kind(&part.name)? != Some(SNAPSHOT_MERGE) {
            return Err(Error::Internal(format!("{} is not merging", self.top(&part.name))));
        }
        let (done, _) = self.merge_look(part, progress)?;
        if done {
            return self.end_merge(part).map(Some);
        }
        Ok(None)
    }

    fn arm(&mut self, part: &PartitionState, attempt: u32) -> Result<Option<FreeMap>> {
        let (raw, size) = self.raw_checked(part)?;
        let top = self.top(&part.name);
        let snap = self.snap(&part.name);
        let kind = self.top_kind(&part.name)?;
        let leftover_snap = self.dm.device(&snap)?.is_some();
        match kind {
            None => {
                if leftover_snap {
                    self.dm.remove(&snap)?;
                    self.io.remove_node(&snap);
                }
                self.ensure_top(&part.name, raw, size)?;
            }
            Some(LINEAR) if !leftover_snap => {
                self.ensure_top(&part.name, raw, size)?;
            }
            Some(LINEAR) | Some(SNAPSHOT_ORIGIN) => self.undo_interrupted_arm(part, raw, size)?,
            Some(other) => return Err(Error::Unsafe(format!("{top} is {other}, not linear; not arming"))),
        }
        let (cow, cow_node) = self.build_cow(part, raw, size)?;
        // An empty store: dm-snapshot starts a new one when the magic is 0.
        self.io.zero_head(&cow_node)?;
        let chunk = Sectors(u64::from(part.chunk_sectors));
        let snap_table = Table::single(Sectors(size / 512), Target::Snapshot(SnapParams::new(raw, cow, chunk)));
        let (origin_table, free_map) = self.armed_top_table(part, raw, size, attempt);
        // The one freeze: the snapshot starts here, and an arm in a
        // userspace reboot happens under a mounted /data, whose written
        // data the store's starting point must hold. (At a boot nothing is
        // mounted yet, and init mounts only after prepare-userdata returns.)
        self.dm.suspend(&top, Freeze::Filesystem)?;
        let step = || -> Result<()> {
            let dev = self.dm.create(&snap, &snap_table, false)?;
            if let Err(e) = self.dm.load(&top, &origin_table) {
                let _ = self.dm.remove(&snap);
                return Err(e.into());
            }
            self.io.node(&snap, dev)?;
            Ok(())
        };
        let res = step();
        let resumed = self.dm.resume(&top);
        res?;
        resumed?;
        match snapshot_status(&*self.dm, &snap)? {
            SnapshotStatus::Usage { .. } => {}
            other => return Err(Error::Unsafe(format!("{snap} is '{other}' right after arming"))),
        }
        self.count_free_writes(&part.name, &free_map);
        Ok(Some(free_map))
    }

    fn commit_live(&mut self, part: &PartitionState) -> Result<()> {
        let (raw, size) = self.raw_checked(part)?;
        match self.top_kind(&part.name)? {
            Some(SNAPSHOT_ORIGIN) => {
                self.swap_top(&part.name, &Self::linear_table(raw, size)?, true)?;
            }
            Some(LINEAR) => {
                // Already swapped (a commit interrupted after the swap).
                let snap = self.snap(&part.name);
                if self.dm.device(&snap)?.is_some() {
                    self.dm.remove(&snap)?;
                    self.io.remove_node(&snap);
                }
            }
            None => {
                // Committed across a reboot: nothing is stacked; make the
                // idle device.
                self.ensure_top(&part.name, raw, size)?;
            }
            Some(other) => return Err(Error::Unsafe(format!("{}: cannot commit, top device is {other}", part.name))),
        }
        // Writes after the commit are nobody's to count.
        if let Err(e) = stats::delete_all(&*self.dm, &self.top(&part.name)) {
            tracing::warn!(partition = %part.name, error = %error_chain(&e), "free-space counters not deleted after commit");
        }
        if let Err(e) = self.remove_cow(&part.name) {
            // The commit itself is done; a leftover cow device only pins
            // the files' blocks until the next boot.
            tracing::warn!(partition = %part.name, error = %e, "cow device not removed after commit");
        }
        Ok(())
    }

    fn free_written_bytes(&self, part: &PartitionState) -> std::result::Result<u64, String> {
        let ranges = part.free_map.as_ref().map(|m| m.counted_sectors(self.free_counted_runs)).unwrap_or_default();
        stats::written_sectors(&*self.dm, &self.top(&part.name), &ranges)
            .map(|s| s.saturating_mul(512))
            .map_err(|e| error_chain(&e))
    }

    fn seal_free_map(&self, part: &PartitionState) -> std::result::Result<FreeMapSeal, String> {
        self.seal_inner(part)
    }

    fn is_armed(&self, part: &PartitionState) -> Result<bool> {
        Ok(self.top_kind(&part.name)? == Some(SNAPSHOT_ORIGIN) && self.dm.device(&self.snap(&part.name))?.is_some())
    }

    fn usage(&self, part: &PartitionState) -> Result<Option<SnapshotStatus>> {
        let snap = self.snap(&part.name);
        if self.dm.device(&snap)?.is_some() {
            return Ok(Some(snapshot_status(&*self.dm, &snap)?));
        }
        if self.top_kind(&part.name)? == Some(SNAPSHOT_MERGE) {
            return Ok(Some(snapshot_status(&*self.dm, &self.top(&part.name))?));
        }
        Ok(None)
    }

    fn check_mounted(&self, part: &CheckpointedPartition) -> Result<u64> {
        let mount_point = part.mount_point.as_str();
        let (raw, size) = self.io.raw(&part.raw_device)?;
        let top = self.top(&part.name);
        let dev = self.dm.device(&top)?.ok_or_else(|| {
            Error::Unavailable(format!("{top} does not exist (prepare-userdata did not run at boot)"))
        })?;
        let kernel = self.dm.table(&top)?;
        if kernel != Self::linear_table(raw, size)? {
            return Err(Error::Unsafe(format!(
                "{top} is not the idle linear map of {}: {}",
                part.raw_device,
                kernel.to_string().trim_end()
            )));
        }
        if self.dm.device(&self.snap(&part.name))?.is_some() {
            return Err(Error::Unsafe(format!("{} exists while idle", self.snap(&part.name))));
        }
        match self.io.mounted_device(mount_point) {
            Some(m) if m == dev => Ok(size),
            Some(m) => {
                self.check_crypt_layer(&top, dev, size, m).map_err(|why| {
                    Error::Unsafe(format!(
                        "{mount_point} is mounted from {m}, not from {top} ({dev}) or a crypt layer on it: {why}"
                    ))
                })?;
                Ok(size)
            }
            None => Err(Error::Unavailable(format!("{mount_point} is not mounted"))),
        }
    }

    fn stack(&self, name: &str) -> Vec<String> {
        [self.top(name), self.cow(name), self.snap(name), self.verify_name(name)]
            .into_iter()
            .filter_map(|n| match self.dm.device(&n) {
                Ok(Some(_)) => {
                    let kind = self.dm.table(&n).ok().and_then(|t| t.kind()).unwrap_or("?");
                    Some(format!("{n}: {kind}"))
                }
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
