//! The stack moves against the fake device-mapper, which enforces the
//! kernel rule (origin suspended while a snapshot is loaded/unloaded) and
//! refuses shared COW devices.

use std::sync::{Arc, Mutex};

use super::*;
use crate::dm::fake::FakeDm;
use crate::fstab::CheckpointMode;
use crate::sys::blockdev::BlockInfo;
use crate::testing::{cow_file, fstab_entry, snapshot_part};

const RAW: Device = Device { major: 8, minor: 16 };
const RAW_SIZE: u64 = 1 << 30;

#[derive(Default)]
struct IoLog {
    head: Option<[u8; 16]>,
    ops: Vec<String>,
    /// Where /data is mounted from (default 254:1, the first fake device).
    mounted: Option<Device>,
    /// Nothing is mounted on /data (early boot, before mount_all).
    unmounted: bool,
    /// The raw device's first bytes (reads past them fail).
    raw_bytes: Vec<u8>,
    /// ext4 maps by file path.
    maps: Vec<(String, InodeMap)>,
    infos: Vec<(Device, BlockInfo)>,
    /// Devices stacked on each device (sysfs holders).
    holders: Vec<(Device, Device)>,
    /// What a crypt layer's plaintext reads as (`open_dev`).
    plain_bytes: Vec<u8>,
}

/// The fake raw device's bytes.
struct MemDev(Vec<u8>);

impl ReadAt for MemDev {
    fn read_at_exact(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        let src =
            self.0.get(start..start + buf.len()).ok_or(std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

#[derive(Clone, Default)]
struct FakeIo(Arc<Mutex<IoLog>>);

impl StackIo for FakeIo {
    fn raw(&self, path: &str) -> Result<(Device, u64)> {
        assert_eq!(path, "/dev/vdb");
        Ok((RAW, RAW_SIZE))
    }
    fn node(&self, name: &str, _dev: Device) -> Result<PathBuf> {
        Ok(PathBuf::from("/dev/mapper").join(name))
    }
    fn remove_node(&self, _name: &str) {}
    fn read_head(&self, _node: &Path) -> Result<[u8; 16]> {
        Ok(self.0.lock().unwrap_or_else(|p| p.into_inner()).head.unwrap_or([0; 16]))
    }
    fn zero_head(&self, node: &Path) -> Result<()> {
        let mut l = self.0.lock().unwrap_or_else(|p| p.into_inner());
        l.ops.push(format!("zero {}", node.display()));
        l.head = Some([0; 16]);
        Ok(())
    }
    fn mount_ro(&self, node: &Path, fs_type: &str, dir: &Path) -> Result<()> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).ops.push(format!(
            "mount {} {fs_type} {}",
            node.display(),
            dir.display()
        ));
        Ok(())
    }
    fn umount(&self, dir: &Path) -> Result<()> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).ops.push(format!("umount {}", dir.display()));
        Ok(())
    }
    fn mounted_device(&self, _dir: &str) -> Option<Device> {
        let l = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if l.unmounted {
            return None;
        }
        Some(l.mounted.unwrap_or(Device { major: 254, minor: 1 }))
    }
    fn block_info(&self, dev: Device) -> Result<BlockInfo> {
        let l = self.0.lock().unwrap_or_else(|p| p.into_inner());
        l.infos
            .iter()
            .find(|(d, _)| *d == dev)
            .map(|(_, i)| i.clone())
            .ok_or_else(|| Error::Internal(format!("no sysfs for {dev}")))
    }
    fn ext4_map(&self, _fs_dev: Device, path: &Path, _size: u64) -> Result<InodeMap> {
        let l = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let want = path.to_string_lossy();
        l.maps
            .iter()
            .find(|(p, _)| *p == want)
            .map(|(_, m)| m.clone())
            .ok_or_else(|| Error::Internal(format!("no map for {want}")))
    }
    fn open_raw(&self, raw: &str) -> Result<Box<dyn ReadAt>> {
        let mut l = self.0.lock().unwrap_or_else(|p| p.into_inner());
        l.ops.push(format!("open raw {raw}"));
        Ok(Box::new(MemDev(l.raw_bytes.clone())))
    }
    fn holders(&self, dev: Device) -> Result<Vec<Device>> {
        let l = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(l.holders.iter().filter(|(below, _)| *below == dev).map(|(_, up)| *up).collect())
    }
    fn open_dev(&self, dev: Device) -> Result<Box<dyn ReadAt>> {
        let mut l = self.0.lock().unwrap_or_else(|p| p.into_inner());
        l.ops.push(format!("open dev {dev}"));
        Ok(Box::new(MemDev(l.plain_bytes.clone())))
    }
}

fn header(valid: u32, chunk: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&SNAP_MAGIC.to_le_bytes());
    b[4..8].copy_from_slice(&valid.to_le_bytes());
    b[8..12].copy_from_slice(&1u32.to_le_bytes());
    b[12..].copy_from_slice(&chunk.to_le_bytes());
    b
}

fn part() -> PartitionState {
    snapshot_part(
        "/dev/vdb",
        RAW_SIZE,
        vec![cow_file("/data/rewind/cow.0000", &[(0, 256 << 20, 4 << 20), (4 << 20, 512 << 20, 4 << 20)])],
    )
}

fn backend() -> (SnapshotBackend, FakeDm, FakeIo) {
    let dm = FakeDm::default();
    let io = FakeIo::default();
    let b = SnapshotBackend::new(&Config::default(), Box::new(dm.clone()), Box::new(io.clone()));
    (b, dm, io)
}

fn idle_ref() -> CheckpointedPartition {
    fstab_entry(CheckpointMode::Block, "/dev/block/mapper/rewind-userdata", "/dev/vdb", &[])
}

fn kind(dm: &FakeDm, name: &str) -> Option<&'static str> {
    dm.active(name).and_then(|t| t.kind())
}

#[test]
fn idle_top_is_linear_over_the_whole_raw_device() {
    let (mut b, dm, _) = backend();
    b.ensure_idle(&idle_ref()).expect("idle");
    assert_eq!(dm.active("rewind-userdata").expect("top").to_string(), "0 2097152 linear 8:16 0\n");
    // Idempotent: the second call verifies and touches nothing.
    let before = dm.log().len();
    b.ensure_idle(&idle_ref()).expect("again");
    assert_eq!(dm.log().len(), before);
}

#[test]
fn ensure_idle_never_replaces_a_different_table() {
    let (mut b, dm, _) = backend();
    let t = Table::single(Sectors(2097152), Target::Origin(OriginParams { origin: RAW }));
    dm.create("rewind-userdata", &t, false).expect("create");
    let err = b.ensure_idle(&idle_ref()).expect_err("mismatch");
    assert_eq!(err.kind(), crate::types::ErrorKind::Unsafe);
    assert_eq!(kind(&dm, "rewind-userdata"), Some(SNAPSHOT_ORIGIN));
}

#[test]
fn arm_builds_origin_snapshot_and_cow_under_the_kernel_rule() {
    let (mut b, dm, io) = backend();
    b.ensure_idle(&idle_ref()).expect("idle");
    b.arm(&part(), 1).expect("arm");
    assert_eq!(kind(&dm, "rewind-userdata"), Some(SNAPSHOT_ORIGIN));
    let cow = dm.active("rewind-userdata-cow").expect("cow");
    assert_eq!(cow.to_string(), "0 8192 linear 8:16 524288\n8192 8192 linear 8:16 1048576\n");
    let snap = dm.active("rewind-userdata-snap").expect("snap").to_string();
    assert_eq!(snap, format!("0 2097152 snapshot 8:16 {} PO 8\n", dm.lock().devs["rewind-userdata-cow"].dev));
    assert!(io.0.lock().expect("io").ops.iter().any(|o| o == "zero /dev/mapper/rewind-userdata-cow"));
    let log = dm.log();
    let s = log.iter().position(|l| l == "suspend rewind-userdata").expect("suspend");
    let c = log.iter().position(|l| l == "create rewind-userdata-snap").expect("create");
    let r = log.iter().rposition(|l| l == "resume rewind-userdata").expect("resume");
    assert!(s < c && c < r, "{log:?}");
    assert!(b.is_armed(&part()).expect("armed"));
    assert_eq!(b.stack("userdata").len(), 3);
    // The snapshot's start is the one suspend that freezes a filesystem.
    assert_eq!(dm.lock().frozen, ["rewind-userdata"]);
}

/// No swap but the arm freezes: a freeze counts against the block device
/// even with nothing mounted, so a mount of /data that init starts while
/// the background merge's end is swapped from rewindd's poll would fail
/// with EBUSY ("Can't mount, blockdev is frozen"). A commit and a merge's
/// start and end suspend the top without freezing.
#[test]
fn only_the_arm_freezes_the_filesystem() {
    let (mut b, dm, io) = backend();
    b.ensure_idle(&idle_ref()).expect("idle");
    b.arm(&part(), 1).expect("arm");
    b.commit_live(&part()).expect("commit");
    io.0.lock().expect("io").head = Some(header(1, 8));
    dm.script_status("rewind-userdata", &["1000/16384 16", "16/16384 16"]);
    assert_eq!(b.merge_in_background(&part()).expect("begin"), None, "left running");
    assert!(b.poll_background_merge(&part(), &mut |_| {}).expect("look").is_some(), "ended");
    assert_eq!(kind(&dm, "rewind-userdata"), Some(LINEAR));
    let suspends = dm.log().iter().filter(|l| l.starts_with("suspend rewind-userdata")).count();
    assert_eq!(suspends, 4, "arm, commit, merge start, merge end: {:?}", dm.log());
    assert_eq!(dm.lock().frozen, ["rewind-userdata"], "only the arm froze");
}

#[test]
fn arm_refuses_when_the_top_is_not_linear() {
    let (mut b, _dm, _) = backend();
    b.arm(&part(), 1).expect("arm");
    assert!(b.arm(&part(), 1).is_err(), "arming twice must be refused");
}

/// A rewindd killed inside arm leaves the stack at one of its steps (top
/// suspended; the snapshot made; the origin table loaded but not live;
/// live but not recorded). The next prepare of the same boot (rewindctl
/// calls again on the restarted daemon, /data not mounted yet) takes it
/// down and arms afresh on a zeroed store, the top running; the old code
/// refused at every such prepare, and a suspended top hung the mount.
/// With /data mounted over the leftover stack it is refused, untouched.
#[test]
fn an_arm_interrupted_in_this_boot_is_armed_afresh() {
    const TOP: &str = "rewind-userdata";
    const SNAP: &str = "rewind-userdata-snap";
    for step in ["top suspended", "snapshot made", "origin loaded", "live, not recorded"] {
        let (mut b, dm, io) = backend();
        io.0.lock().expect("io").unmounted = true;
        b.ensure_idle(&idle_ref()).expect("idle");
        let linear = dm.active(TOP).expect("top");
        if step == "top suspended" {
            dm.suspend(TOP, Freeze::Filesystem).expect("suspend");
        } else {
            b.arm(&part(), 1).expect("first arm");
            let origin = dm.active(TOP).expect("origin");
            if step != "live, not recorded" {
                // Back to the moment after the snapshot was made.
                dm.suspend(TOP, Freeze::Filesystem).expect("suspend");
                dm.load(TOP, &linear).expect("load");
                dm.resume(TOP).expect("resume");
                dm.suspend(TOP, Freeze::Filesystem).expect("suspend");
                if step == "origin loaded" {
                    dm.load(TOP, &origin).expect("load origin");
                }
            }
        }
        io.0.lock().expect("io").head = Some(header(1, 8));
        b.arm(&part(), 1).unwrap_or_else(|e| panic!("{step}: {e}"));
        assert_eq!(kind(&dm, TOP), Some(SNAPSHOT_ORIGIN), "{step}");
        assert!(dm.exists(SNAP), "{step}");
        assert!(!dm.lock().devs[TOP].suspended, "{step}: the top runs");
        assert_eq!(io.0.lock().expect("io").head, Some([0; 16]), "{step}: a fresh store");
        assert!(b.is_armed(&part()).expect("armed"), "{step}");
    }
    let (mut b, dm, _io) = backend();
    b.arm(&part(), 1).expect("arm");
    let before = dm.log().len();
    let err = b.arm(&part(), 1).expect_err("mounted over the leftover stack");
    assert_eq!(err.kind(), crate::types::ErrorKind::Unsafe);
    assert!(err.to_string().contains("is mounted"), "{err}");
    assert!(dm.log()[before..].iter().all(|l| !l.starts_with("suspend") && !l.starts_with("remove")), "untouched");
}

#[test]
fn failed_snapshot_load_leaves_the_top_linear_and_running() {
    let (mut b, dm, _) = backend();
    b.ensure_idle(&idle_ref()).expect("idle");
    dm.fail_once("load rewind-userdata");
    assert!(b.arm(&part(), 1).is_err());
    assert_eq!(kind(&dm, "rewind-userdata"), Some(LINEAR));
    assert!(!dm.lock().devs["rewind-userdata"].suspended);
    assert!(!dm.exists("rewind-userdata-snap"));
}

#[test]
fn live_commit_swaps_to_linear_and_drops_snapshot_and_cow() {
    let (mut b, dm, _) = backend();
    b.arm(&part(), 1).expect("arm");
    b.commit_live(&part()).expect("commit");
    assert_eq!(dm.active("rewind-userdata").expect("top").to_string(), "0 2097152 linear 8:16 0\n");
    assert!(!dm.exists("rewind-userdata-snap"));
    assert!(!dm.exists("rewind-userdata-cow"));
    // Repeating a finished commit is harmless.
    b.commit_live(&part()).expect("again");
}

#[test]
fn commit_with_a_failing_snapshot_removal_keeps_the_origin() {
    let (mut b, dm, _) = backend();
    b.arm(&part(), 1).expect("arm");
    dm.fail_once("remove rewind-userdata-snap");
    assert!(b.commit_live(&part()).is_err());
    assert_eq!(kind(&dm, "rewind-userdata"), Some(SNAPSHOT_ORIGIN));
    assert!(!dm.lock().devs["rewind-userdata"].suspended, "top must be resumed after a failure");
    b.commit_live(&part()).expect("retry");
}

#[test]
fn boot_merge_polls_to_completion_then_goes_linear() {
    let (mut b, dm, io) = backend();
    io.0.lock().expect("io").head = Some(header(1, 8));
    dm.script_status("rewind-userdata", &["1000/16384 16", "600/16384 16", "100/16384 16", "16/16384 16"]);
    let mut seen = Vec::new();
    let r = b.merge(&part(), &mut |p| seen.push((p.done_sectors, p.total_sectors))).expect("merge");
    assert_eq!(r, Merged::Merged { sectors: 1000 });
    assert_eq!(seen.last(), Some(&(984, 984)));
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0));
    assert_eq!(kind(&dm, "rewind-userdata"), Some(LINEAR));
    assert!(!dm.exists("rewind-userdata-cow"));
    assert!(dm.log().iter().any(|l| l == "load rewind-userdata"));
}

/// The last rollback in the background: the merge is loaded and left
/// running (the top device serves I/O meanwhile); each poll looks once,
/// and the one that sees it done goes linear and drops the store.
#[test]
fn a_background_merge_is_loaded_then_finished_by_the_polls() {
    let (mut b, dm, io) = backend();
    io.0.lock().expect("io").head = Some(header(1, 8));
    dm.script_status("rewind-userdata", &["1000/16384 16", "600/16384 16", "16/16384 16"]);
    assert_eq!(b.merge_in_background(&part()).expect("begin"), None, "left running");
    assert_eq!(kind(&dm, "rewind-userdata"), Some(SNAPSHOT_MERGE));
    let mut seen = Vec::new();
    assert_eq!(b.poll_background_merge(&part(), &mut |p| seen.push(p.done_sectors)).expect("look"), None);
    let done = b.poll_background_merge(&part(), &mut |p| seen.push(p.done_sectors)).expect("look");
    assert_eq!(done, Some(Merged::Merged { sectors: 1000 }));
    assert_eq!(seen, [400, 984]);
    assert_eq!(kind(&dm, "rewind-userdata"), Some(LINEAR));
    assert!(!dm.exists("rewind-userdata-cow"));
    // Nothing is merging any more: a stray look is an error, not a success.
    assert!(b.poll_background_merge(&part(), &mut |_| {}).is_err());
    // A store never written is finished at once.
    let (mut b, _dm, _) = backend();
    assert_eq!(b.merge_in_background(&part()).expect("nothing"), Some(Merged::Nothing));
}

#[test]
fn merge_resumes_when_the_merge_table_is_already_loaded() {
    let (mut b, dm, io) = backend();
    io.0.lock().expect("io").head = Some(header(1, 8));
    b.ensure_idle(&idle_ref()).expect("idle");
    // A merge already running in this boot (prepare re-run after an error).
    let (cow, _) = b.build_cow(&part(), RAW, RAW_SIZE).expect("cow");
    let t = Table::single(Sectors(2097152), Target::Merge(SnapParams::new(RAW, cow, Sectors(8))));
    b.swap_top("userdata", &t, false).expect("swap");
    dm.script_status("rewind-userdata", &["16/16384 16"]);
    b.merge(&part(), &mut |_| {}).expect("merge");
    assert_eq!(kind(&dm, "rewind-userdata"), Some(LINEAR));
}

#[test]
fn merge_of_a_never_armed_store_is_nothing() {
    let (mut b, dm, _) = backend();
    assert_eq!(b.merge(&part(), &mut |_| {}).expect("merge"), Merged::Nothing);
    assert_eq!(kind(&dm, "rewind-userdata"), Some(LINEAR));
    assert!(!dm.exists("rewind-userdata-cow"));
}

#[test]
fn merge_refuses_invalidated_foreign_or_mismatched_stores_without_touching_the_top() {
    for (head, what) in [
        (header(0, 8), "invalidated"),
        (header(1, 16), "chunk"),
        (
            {
                let mut h = [0u8; 16];
                h[0] = 0xEB; // a filesystem boot sector, not a COW store
                h[1] = 0x3C;
                h
            },
            "does not lead",
        ),
    ] {
        let (mut b, dm, io) = backend();
        io.0.lock().expect("io").head = Some(head);
        let err = b.merge(&part(), &mut |_| {}).expect_err(what);
        assert_eq!(err.kind(), crate::types::ErrorKind::Unsafe);
        assert!(err.to_string().contains(what), "{err}");
        assert_eq!(kind(&dm, "rewind-userdata"), Some(LINEAR), "{what}");
    }
}

#[test]
fn merge_failure_word_is_reported_not_taken_for_done() {
    let (mut b, dm, io) = backend();
    io.0.lock().expect("io").head = Some(header(1, 8));
    dm.script_status("rewind-userdata", &["Merge failed"]);
    let err = b.merge(&part(), &mut |_| {}).expect_err("failed");
    assert!(err.to_string().contains("Merge failed"));
    assert_eq!(kind(&dm, "rewind-userdata"), Some(SNAPSHOT_MERGE), "merge stays loaded for the next try");
}

/// After `Merge failed` the kernel will not restart that merge target (a
/// resume retries it and finds "exception for block 0 is on disk but not
/// in memory"; a new merge table is refused while it exists: "A snapshot
/// is already merging"), and the raw partition is half merged: the top
/// goes, so nothing can mount either; the store stays for the next boot,
/// whose merge starts again from the store's metadata on disk.
#[test]
fn a_failed_merge_is_held_back_then_resumed_from_the_store() {
    let (mut b, dm, io) = backend();
    io.0.lock().expect("io").head = Some(header(1, 8));
    dm.script_status("rewind-userdata", &["Merge failed"]);
    b.merge(&part(), &mut |_| {}).expect_err("failed");
    b.hold_back(&part()).expect("held back");
    assert!(!dm.exists("rewind-userdata"), "no device to mount half merged");
    assert!(!dm.exists("rewind-userdata-snap"));
    assert!(dm.exists("rewind-userdata-cow"), "the store is kept");
    // Held back twice in a boot (prepare called again): nothing to undo.
    b.hold_back(&part()).expect("again");
    // The next prepare (the store works again) builds the stack anew.
    dm.script_status("rewind-userdata", &["400/16384 16", "16/16384 16"]);
    assert_eq!(b.merge(&part(), &mut |_| {}).expect("resumed"), Merged::Merged { sectors: 400 });
    assert_eq!(kind(&dm, "rewind-userdata"), Some(LINEAR));
}

/// A snapshot left from an arm goes too, removed while the origin is
/// suspended (the fake enforces the kernel's rule).
#[test]
fn hold_back_removes_a_leftover_snapshot_under_a_suspended_origin() {
    let (mut b, dm, _) = backend();
    b.arm(&part(), 1).expect("arm");
    b.hold_back(&part()).expect("held back");
    assert!(!dm.exists("rewind-userdata") && !dm.exists("rewind-userdata-snap"));
}

#[test]
fn a_live_attempt_is_never_merged_under_a_mounted_filesystem() {
    let (mut b, dm, io) = backend();
    b.arm(&part(), 1).expect("arm");
    io.0.lock().expect("io").head = Some(header(1, 8));
    let err = b.merge(&part(), &mut |_| {}).expect_err("live");
    assert_eq!(err.kind(), crate::types::ErrorKind::WrongPhase);
    assert_eq!(kind(&dm, "rewind-userdata"), Some(SNAPSHOT_ORIGIN));
    assert!(dm.exists("rewind-userdata-snap"));
    assert!(!dm.lock().devs["rewind-userdata"].suspended);
}

#[test]
fn a_resized_raw_device_is_refused() {
    let (mut b, _, _) = backend();
    let mut p = part();
    p.raw_size_bytes += 4096;
    assert_eq!(b.arm(&p, 1).expect_err("size").kind(), crate::types::ErrorKind::Unsafe);
    assert_eq!(b.merge(&p, &mut |_| {}).expect_err("size").kind(), crate::types::ErrorKind::Unsafe);
}

#[test]
fn verification_mounts_a_read_only_view_and_cleans_up() {
    let (mut b, dm, io) = backend();
    // The fake mount shows nothing, so the files are missing: refused.
    let err = b.verify_store(&part()).expect_err("missing files");
    assert_eq!(err.kind(), crate::types::ErrorKind::Unsafe);
    assert!(!dm.exists("rewind-userdata-verify"));
    let ops = io.0.lock().expect("io").ops.clone();
    assert_eq!(ops[0], "mount /dev/mapper/rewind-userdata-verify ext4 /metadata/rewind/mnt/userdata");
    assert_eq!(ops[1], "umount /metadata/rewind/mnt/userdata");
    assert!(dm.log().iter().any(|l| l == "create rewind-userdata-verify"));
    assert!(dm.lock().devs.is_empty());
}

#[test]
fn usage_reads_the_snapshot() {
    let (mut b, dm, _) = backend();
    assert_eq!(b.usage(&part()).expect("none"), None);
    b.arm(&part(), 1).expect("arm");
    dm.script_status("rewind-userdata-snap", &["Invalid"]);
    assert_eq!(b.usage(&part()).expect("usage"), Some(SnapshotStatus::Invalid));
}

#[test]
fn header_parsing() {
    assert_eq!(parse_header(&[0; 16]), Header::Zero);
    assert_eq!(parse_header(&header(1, 8)), Header::Valid { chunk_sectors: 8 });
    assert_eq!(parse_header(&header(0, 8)), Header::Invalidated);
    let mut h = header(1, 8);
    h[8] = 2;
    assert_eq!(parse_header(&h), Header::Foreign);
}

#[test]
fn start_needs_the_filesystem_mounted_through_the_idle_top() {
    let (mut b, dm, _) = backend();
    assert_eq!(b.check_mounted(&idle_ref()).expect_err("no top").kind(), crate::types::ErrorKind::Unavailable);
    b.ensure_idle(&idle_ref()).expect("idle");
    // The fake reports /data on 254:1, the first device created: the top.
    assert_eq!(b.check_mounted(&idle_ref()).expect("ok"), RAW_SIZE);
    b.arm(&part(), 1).expect("arm");
    assert_eq!(b.check_mounted(&idle_ref()).expect_err("armed").kind(), crate::types::ErrorKind::Unsafe);
    let _ = dm;
}

/// The fake's raw device: 64 KiB of a pattern; the file's inode at 0x2300
/// and one extent-tree block (block 9) below it.
fn fingerprinted() -> (SnapshotBackend, FakeDm, FakeIo, PartitionState) {
    let (b, dm, io) = backend();
    let p = part();
    let map = InodeMap {
        ino: 12,
        inode_offset: 0x2300,
        generation: 7,
        size: p.cow_files[0].size_bytes,
        block_size: 4096,
        tree_blocks: vec![9],
        extents: p.cow_files[0].extents.clone(),
    };
    {
        let mut l = io.0.lock().expect("io");
        l.raw_bytes = (0..64 * 1024).map(|i| (i % 253) as u8).collect();
        l.maps.push((p.cow_files[0].path.clone(), map));
    }
    (b, dm, io, p)
}

#[test]
fn start_records_the_fingerprint_and_zeroes_the_header_through_the_cow_device() {
    let (b, dm, io, mut p) = fingerprinted();
    b.seal_store(&mut p).expect("seal");
    let f = &p.cow_files[0];
    assert_eq!(f.inode, 12);
    let regions: Vec<(u64, u32)> = f.fingerprint.iter().map(|r| (r.offset, r.len)).collect();
    assert_eq!(regions, vec![(0x2310, 0x60), (9 * 4096, 4096)]);
    let raw = io.0.lock().expect("io").raw_bytes.clone();
    assert_eq!(f.fingerprint[0].sha256, ext4map::hash(&raw[0x2310..0x2370]));
    let ops = io.0.lock().expect("io").ops.clone();
    // The header is the first 4 KiB of the -cow device (the store's map),
    // written below the filesystem; the raw partition is only read.
    assert!(ops.contains(&"zero /dev/mapper/rewind-userdata-cow".to_string()), "{ops:?}");
    assert!(dm.device("rewind-userdata-cow").expect("dm").is_none(), "the -cow device is removed again");
    assert!(dm.log().iter().any(|l| l.contains("rewind-userdata-cow")), "{:?}", dm.log());
}

#[test]
fn start_refuses_when_the_ext4_parse_disagrees_with_fiemap() {
    let (b, _dm, io, mut p) = fingerprinted();
    io.0.lock().expect("io").maps[0].1.extents[1].physical += 4096;
    let e = b.seal_store(&mut p).expect_err("mismatch");
    assert_eq!(e.kind(), crate::types::ErrorKind::Unsafe);
    assert!(crate::types::error_chain(&e).contains("disagrees with FIEMAP"), "{e}");
    assert!(p.cow_files[0].fingerprint.is_empty());
}

#[test]
fn f2fs_stores_get_the_header_but_no_fingerprint() {
    let (b, _dm, io, mut p) = fingerprinted();
    p.fs_type = "f2fs".into();
    b.seal_store(&mut p).expect("seal");
    assert!(p.cow_files[0].fingerprint.is_empty());
    assert!(io.0.lock().expect("io").ops.iter().any(|o| o.starts_with("zero /dev/mapper/rewind-userdata-cow")));
}

#[test]
fn boot_verifies_the_fingerprint_from_the_raw_device_without_mounting() {
    let (mut b, dm, io, mut p) = fingerprinted();
    b.seal_store(&mut p).expect("seal");
    io.0.lock().expect("io").ops.clear();
    b.verify_store(&p).expect("unchanged");
    // A neighbour's bytes in the same block are not the map.
    io.0.lock().expect("io").raw_bytes[0x2300 + 0x100] ^= 0xFF;
    io.0.lock().expect("io").raw_bytes[0x2300 + 0x08] ^= 0xFF;
    b.verify_store(&p).expect("neighbour and atime changes are fine");
    let ops = io.0.lock().expect("io").ops.clone();
    assert!(ops.iter().all(|o| !o.starts_with("mount")), "{ops:?}");
    assert!(dm.log().iter().all(|l| !l.contains("verify")), "{:?}", dm.log());
    // i_block changed: refused, naming the file, the inode and the offset.
    io.0.lock().expect("io").raw_bytes[0x2300 + 0x30] ^= 1;
    let e = b.verify_store(&p).expect_err("inode changed");
    assert_eq!(e.kind(), crate::types::ErrorKind::Unsafe);
    let msg = crate::types::error_chain(&e);
    assert!(msg.contains("cow.0000") && msg.contains("inode 12") && msg.contains(&format!("byte {}", 0x2310)), "{msg}");
    io.0.lock().expect("io").raw_bytes[0x2300 + 0x30] ^= 1;
    // The tree block changed.
    io.0.lock().expect("io").raw_bytes[9 * 4096 + 77] ^= 1;
    let msg = crate::types::error_chain(&b.verify_store(&p).expect_err("tree changed"));
    assert!(msg.contains("extent-tree block 1") && msg.contains(&format!("byte {}", 9 * 4096)), "{msg}");
    io.0.lock().expect("io").raw_bytes[9 * 4096 + 77] ^= 1;
    // Unreadable: refused too.
    io.0.lock().expect("io").raw_bytes.truncate(4096);
    assert_eq!(b.verify_store(&p).expect_err("short").kind(), crate::types::ErrorKind::Unsafe);
}

#[test]
fn a_partly_fingerprinted_record_is_refused_and_old_records_mount() {
    let (mut b, _dm, io, mut p) = fingerprinted();
    b.seal_store(&mut p).expect("seal");
    let mut two = p.clone();
    let mut second = part().cow_files[0].clone();
    second.path = "/data/rewind/cow.0001".into();
    two.cow_files.push(second);
    let msg = crate::types::error_chain(&b.verify_store(&two).expect_err("partial"));
    assert!(msg.contains("1 of 2"), "{msg}");
    // No fingerprint at all: the mount check, as before.
    io.0.lock().expect("io").ops.clear();
    let _ = b.verify_store(&part());
    assert!(io.0.lock().expect("io").ops.iter().any(|o| o.starts_with("mount")));
}

/// FakeDm with a crypt device whose kernel table the fake cannot model.
struct CryptDm(FakeDm, Vec<blockdev::RawLine>);

impl DmControl for CryptDm {
    fn device(&self, name: &str) -> std::result::Result<Option<Device>, crate::dm::DmOpError> {
        self.0.device(name)
    }
    fn create(&self, name: &str, table: &Table, ro: bool) -> std::result::Result<Device, crate::dm::DmOpError> {
        self.0.create(name, table, ro)
    }
    fn load(&self, name: &str, table: &Table) -> std::result::Result<(), crate::dm::DmOpError> {
        self.0.load(name, table)
    }
    fn suspend(&self, name: &str, freeze: crate::dm::Freeze) -> std::result::Result<(), crate::dm::DmOpError> {
        self.0.suspend(name, freeze)
    }
    fn resume(&self, name: &str) -> std::result::Result<(), crate::dm::DmOpError> {
        self.0.resume(name)
    }
    fn remove(&self, name: &str) -> std::result::Result<(), crate::dm::DmOpError> {
        self.0.remove(name)
    }
    fn table(&self, name: &str) -> std::result::Result<Table, crate::dm::DmOpError> {
        self.0.table(name)
    }
    fn status(&self, name: &str) -> std::result::Result<Vec<String>, crate::dm::DmOpError> {
        self.0.status(name)
    }
    fn message(&self, name: &str, msg: &str) -> std::result::Result<Option<String>, crate::dm::DmOpError> {
        self.0.message(name, msg)
    }
    fn raw_table(&self, name: &str) -> std::result::Result<Vec<blockdev::RawLine>, crate::dm::DmOpError> {
        if name == "userdata-crypt" {
            return Ok(self.1.clone());
        }
        self.0.raw_table(name)
    }
}

#[test]
fn data_may_be_mounted_through_a_crypt_layer_on_the_top() {
    const KEY: &str = "ffeeddccbbaa99887766554433221100";
    let top = Device { major: 254, minor: 1 };
    let upper = Device { major: 254, minor: 9 };
    let run = |params: &str, kind: &str, slaves: &[&str]| {
        let dm = FakeDm::default();
        let io = FakeIo::default();
        {
            let mut l = io.0.lock().expect("io");
            l.mounted = Some(upper);
            l.infos.push((
                top,
                BlockInfo {
                    kname: "dm-1".into(),
                    size_bytes: RAW_SIZE,
                    slaves: vec!["vdb".into()],
                    dm_name: Some("rewind-userdata".into()),
                },
            ));
            l.infos.push((
                upper,
                BlockInfo {
                    kname: "dm-9".into(),
                    size_bytes: RAW_SIZE,
                    slaves: slaves.iter().map(|s| s.to_string()).collect(),
                    dm_name: Some("userdata-crypt".into()),
                },
            ));
        }
        let lines = vec![(0, RAW_SIZE / 512, kind.to_string(), params.to_string())];
        let mut b = SnapshotBackend::new(&Config::default(), Box::new(CryptDm(dm, lines)), Box::new(io));
        b.ensure_idle(&idle_ref()).expect("idle");
        b.check_mounted(&idle_ref())
    };
    assert_eq!(run(&format!("aes-xts-plain64 {KEY} 0 254:1 0"), "crypt", &["dm-1"]).expect("crypt"), RAW_SIZE);
    assert_eq!(
        run(&format!("aes-xts-plain64 {KEY} 0 254:1 0 1 allow_discards"), "default-key", &["dm-1"]).expect("dkey"),
        RAW_SIZE
    );
    for (params, kind, slaves, want) in [
        (format!("aes-xts-plain64 {KEY} 0 254:1 0"), "crypt", vec!["vdb"], "sits on"),
        (format!("aes-xts-plain64 {KEY} 0 254:1 16"), "crypt", vec!["dm-1"], "sector 16"),
        ("254:1 0".to_string(), "linear", vec!["dm-1"], "'linear'"),
    ] {
        let e = run(&params, kind, &slaves).expect_err(want);
        assert_eq!(e.kind(), crate::types::ErrorKind::Unsafe);
        let msg = crate::types::error_chain(&e);
        assert!(msg.contains(want) && !msg.contains(KEY), "{msg}");
    }
}

/// `cow.free_map` on, over a real 16 MiB ext4 image (mkfs.ext4 -d) at the
/// start of the fake raw device. None without the tools (CI has them).
/// The bytes of a real 16 MiB ext4 image (mkfs.ext4 -d, one 300 KiB
/// file). None without the tools (CI has them).
fn baseline_image(dir: &std::path::Path) -> Option<Vec<u8>> {
    use crate::ext4map::tests::{have_tools, mkfs};
    if !have_tools() {
        assert!(std::env::var_os("CI").is_none(), "CI: mkfs.ext4 and debugfs are needed");
        return None;
    }
    let src = dir.join("src");
    std::fs::create_dir_all(&src).expect("src");
    std::fs::write(src.join("a"), vec![7u8; 300 << 10]).expect("a");
    let img = dir.join("fs.img");
    mkfs(&img, &src, &["-b", "4096"], "16M");
    Some(std::fs::read(&img).expect("image"))
}

fn free_map_backend(dir: &std::path::Path) -> Option<(SnapshotBackend, FakeDm, FakeIo)> {
    let image = baseline_image(dir)?;
    let mut config = Config::default();
    config.cow.free_map = true;
    let dm = FakeDm::default();
    let io = FakeIo::default();
    io.0.lock().expect("io").raw_bytes = image;
    let b = SnapshotBackend::new(&config, Box::new(dm.clone()), Box::new(io.clone()));
    Some((b, dm, io))
}

fn armed_fresh(b: &mut SnapshotBackend, dm: &FakeDm, p: &PartitionState, attempt: u32) -> FreeMap {
    // Each attempt arms from the idle table (a rollback leaves it; a live
    // commit is the quickest way back to it here).
    if dm.exists("rewind-userdata-snap") {
        b.commit_live(p).expect("back to idle");
    }
    b.ensure_idle(&idle_ref()).expect("idle");
    b.arm(p, attempt).expect("arm").expect("block mode reports its free map")
}

#[test]
fn free_map_is_recorded_and_the_same_map_is_used_by_a_later_attempt() {
    let dir = tempfile::tempdir().expect("tmp");
    let Some((mut b, dm, _io)) = free_map_backend(dir.path()) else { return };
    let mut p = part();
    let map = armed_fresh(&mut b, &dm, &p, 1);
    let FreeMap::Mapped { chunks, free_chunks_found, ref runs, taken_at_attempt, .. } = map else {
        panic!("a clean ext4 baseline is mapped: {map:?}")
    };
    assert_eq!(chunks, RAW_SIZE / 4096);
    assert_eq!(taken_at_attempt, 1);
    // Past the 16 MiB filesystem nothing is known free.
    assert!(runs.iter().all(|&(f, n)| f + n <= 4096), "{runs:?}");
    assert!(free_chunks_found > 2000 && free_chunks_found < 4096, "{free_chunks_found}");
    map.validate(p.raw_size_bytes, p.chunk_sectors).expect("a map the backend records validates");
    let top = dm.active("rewind-userdata").expect("top");
    assert_eq!(top.kind(), Some(SNAPSHOT_ORIGIN), "armed, with linear lines over free runs");
    assert!(top.lines.len() > 1, "{top}");
    // Attempt 2 reads the same bitmaps: the record stays as taken at 1.
    p.free_map = Some(map.clone());
    let mut again = armed_fresh(&mut b, &dm, &p, 2);
    if let (FreeMap::Mapped { read_ms, .. }, FreeMap::Mapped { read_ms: first, .. }) = (&mut again, &map) {
        *read_ms = *first;
    }
    assert_eq!(again, map, "taken at attempt 1, the same runs");
    assert_eq!(dm.active("rewind-userdata").expect("top"), top);
}

#[test]
fn a_map_that_differs_from_the_record_protects_every_chunk() {
    let dir = tempfile::tempdir().expect("tmp");
    let Some((mut b, dm, io)) = free_map_backend(dir.path()) else { return };
    let mut p = part();
    let map = armed_fresh(&mut b, &dm, &p, 1);
    let FreeMap::Mapped { ref runs, .. } = map else { panic!("{map:?}") };
    // The recorded map claims one chunk less free than the bitmaps now say
    // (as if the baseline had changed between attempts).
    let mut shrunk = map.clone();
    if let FreeMap::Mapped { runs: r, runs_sha256, .. } = &mut shrunk {
        let last = r.len() - 1;
        r[last].1 -= 1;
        *runs_sha256 = crate::state::runs_hash(r);
    }
    assert!(!runs.is_empty());
    p.free_map = Some(shrunk);
    let got = armed_fresh(&mut b, &dm, &p, 2);
    let FreeMap::NotUsed { reason } = got else { panic!("{got:?}") };
    assert!(reason.contains("not the map recorded at attempt 1"), "{reason}");
    assert_eq!(dm.active("rewind-userdata").expect("top").to_string(), "0 2097152 snapshot-origin 8:16\n");
    // A baseline that is not clean is never mapped: the reason says so.
    let mut raw = io.0.lock().expect("io");
    raw.raw_bytes[1024 + 0x3A] &= !1; // s_state: not cleanly unmounted
    drop(raw);
    p.free_map = None;
    let FreeMap::NotUsed { reason } = armed_fresh(&mut b, &dm, &p, 1) else { panic!("unclean mapped") };
    assert!(reason.contains("clean") || reason.contains("VALID"), "{reason}");
}

#[test]
fn free_map_off_unreadable_or_not_ext4_says_why_every_chunk_is_protected() {
    let whole = "0 2097152 snapshot-origin 8:16\n";
    // On by default; a raw device with no ext4 on it (the fake's is empty).
    let (mut b, dm, _) = backend();
    b.ensure_idle(&idle_ref()).expect("idle");
    let FreeMap::NotUsed { reason } = b.arm(&part(), 1).expect("arm").expect("reported") else {
        panic!("nothing to read is never mapped")
    };
    assert!(reason.contains("superblock") || reason.contains("read"), "{reason}");
    assert_eq!(dm.active("rewind-userdata").expect("top").to_string(), whole);
    // Off in the configuration.
    let mut config = Config::default();
    config.cow.free_map = false;
    let dm = FakeDm::default();
    let mut b = SnapshotBackend::new(&config, Box::new(dm.clone()), Box::new(FakeIo::default()));
    b.ensure_idle(&idle_ref()).expect("idle");
    let got = b.arm(&part(), 1).expect("arm").expect("reported");
    assert_eq!(got, FreeMap::NotUsed { reason: "cow.free_map is off in the configuration".into() });
    assert_eq!(dm.active("rewind-userdata").expect("top").to_string(), whole);
    // Not ext4 (block mode over another filesystem).
    let dm = FakeDm::default();
    let mut b = SnapshotBackend::new(&Config::default(), Box::new(dm.clone()), Box::new(FakeIo::default()));
    b.ensure_idle(&idle_ref()).expect("idle");
    let mut p = part();
    p.fs_type = "f2fs".into();
    let FreeMap::NotUsed { reason } = b.arm(&p, 1).expect("arm").expect("reported") else { panic!("f2fs mapped") };
    assert!(reason.contains("f2fs"), "{reason}");
    assert_eq!(dm.active("rewind-userdata").expect("top").to_string(), whole);
}

#[test]
fn a_recorded_free_map_is_validated_when_the_record_loads() {
    let runs = vec![(10u64, 5u64), (20, 3)];
    let good = FreeMap::Mapped {
        chunk_bytes: 4096,
        chunks: RAW_SIZE / 4096,
        free_chunks_found: 8,
        runs_sha256: crate::state::runs_hash(&runs),
        runs,
        taken_at_attempt: 1,
        read_ms: 3,
        sealed_at_unix: None,
    };
    good.validate(RAW_SIZE, 8).expect("good");
    let bad = |f: &dyn Fn(&mut FreeMap)| {
        let mut m = good.clone();
        f(&mut m);
        m.validate(RAW_SIZE, 8).expect_err("refused")
    };
    let set = |m: &mut FreeMap, new_runs: Vec<(u64, u64)>, rehash: bool| {
        if let FreeMap::Mapped { runs, runs_sha256, .. } = m {
            *runs = new_runs;
            if rehash {
                *runs_sha256 = crate::state::runs_hash(runs);
            }
        }
    };
    assert!(bad(&|m| set(m, vec![(10, 6), (20, 3)], false)).contains("hash"));
    assert!(bad(&|m| set(m, vec![(20, 3), (10, 5)], true)).contains("unsorted"));
    assert!(bad(&|m| set(m, vec![(10, 0)], true)).contains("empty"));
    assert!(bad(&|m| set(m, vec![(RAW_SIZE / 4096 - 1, 2)], true)).contains("out of range"));
    assert!(bad(&|m| set(m, vec![(10, 9)], true)).contains("more chunks linear"));
    assert!(good.validate(RAW_SIZE, 16).expect_err("chunk size").contains("chunks of 4096"));
    assert!(good.validate(RAW_SIZE * 2, 8).expect_err("device").contains("does not cover"));
}

#[test]
fn past_cow_free_counted_runs_only_the_longest_runs_have_regions() {
    use crate::dm::target::{Table, Target};
    let mut config = Config::default();
    config.cow.free_counted_runs = 2;
    let dm = FakeDm::default();
    let mut b = SnapshotBackend::new(&config, Box::new(dm.clone()), Box::new(FakeIo::default()));
    let top = "rewind-userdata";
    let raw = Device { major: 8, minor: 16 };
    dm.create(top, &Table::single(Sectors(RAW_SIZE / 512), Target::linear(raw, Sectors(0))), false).expect("top");
    // Runs of 1, 5, 2 and 5 chunks (4 KiB): the two of 5 are counted.
    let runs = vec![(10, 1), (20, 5), (40, 2), (60, 5)];
    let map = FreeMap::Mapped {
        chunk_bytes: 4096,
        chunks: RAW_SIZE / 4096,
        free_chunks_found: 13,
        runs_sha256: crate::state::runs_hash(&runs),
        runs,
        taken_at_attempt: 1,
        read_ms: 0,
        sealed_at_unix: None,
    };
    b.count_free_writes("userdata", &map);
    let mut have: Vec<(u64, u64)> = dm.regions(top).iter().map(|r| (r.start, r.len)).collect();
    have.sort_unstable();
    assert_eq!(have, [(160, 40), (480, 40)], "regions on the two longest runs only");
    assert_eq!(map.counted(2), (2, 10));
    let mut p = part();
    p.free_map = Some(map.clone());
    // A write into an uncounted run is not in the figure (a lower bound);
    // one into a counted run is, exactly.
    dm.write(top, 80, 8);
    assert_eq!(b.free_written_bytes(&p), Ok(0));
    dm.write(top, 480, 16);
    assert_eq!(b.free_written_bytes(&p), Ok(16 * 512));
    // A rewindd restarted with another cap finds regions that are not its
    // set: unknown, never a figure over the wrong runs; its arm remakes them.
    b.free_counted_runs = 3;
    assert!(b.free_written_bytes(&p).expect_err("another set").contains("not the"));
    b.count_free_writes("userdata", &map);
    assert_eq!(dm.regions(top).len(), 3);
    assert_eq!(b.free_written_bytes(&p), Ok(0));
}

#[test]
fn writes_into_the_linear_runs_are_counted_by_our_dm_stats_regions() {
    let dir = tempfile::tempdir().expect("tmp");
    let Some((mut b, dm, _io)) = free_map_backend(dir.path()) else { return };
    let top = "rewind-userdata";
    let mut p = part();
    let map = armed_fresh(&mut b, &dm, &p, 1);
    let ranges = map.linear_sectors();
    assert!(!ranges.is_empty(), "{ranges:?}");
    let mut have: Vec<(u64, u64)> = dm.regions(top).iter().map(|r| (r.start, r.len)).collect();
    have.sort_unstable();
    assert_eq!(have, ranges, "one region per linear run");
    assert!(dm.regions(top).iter().all(|r| r.program_id == "rewind-free" && r.step == r.len));
    p.free_map = Some(map.clone());
    assert_eq!(b.free_written_bytes(&p), Ok(0));

    // Another program's region on the same device is neither touched nor
    // counted.
    dm.message(top, "@stats_create 0+2097152 /1 dmstats").expect("foreign region");
    let (first, len) = ranges[0];
    dm.write(top, first, len.min(2048));
    dm.write(top, first + len - 8, 16); // half in the run, half after it
    dm.write(top, 0, 8); // the superblock's chunk: used, copied, not ours
    let want = (len.min(2048) + 8) * 512;
    assert_eq!(b.free_written_bytes(&p), Ok(want));

    // An arm run again in this boot over the same map keeps the regions
    // and their counts (list first: no duplicates).
    b.count_free_writes("userdata", &map);
    assert_eq!(dm.regions(top).iter().filter(|r| r.program_id == "rewind-free").count(), ranges.len());
    assert_eq!(b.free_written_bytes(&p), Ok(want));
    // A set that does not match the map is replaced, never summed.
    dm.message(top, "@stats_delete 0").expect("delete one");
    assert!(b.free_written_bytes(&p).expect_err("a region is missing").contains("not the"));
    b.count_free_writes("userdata", &map);
    assert_eq!(b.free_written_bytes(&p), Ok(0), "made anew");

    // The commit deletes ours and leaves the other program's.
    b.commit_live(&p).expect("commit");
    let left: Vec<String> = dm.regions(top).iter().map(|r| r.program_id.clone()).collect();
    assert_eq!(left, ["dmstats"]);
}

#[test]
fn a_dm_stats_failure_never_fails_the_arm_and_reads_as_unknown() {
    let dir = tempfile::tempdir().expect("tmp");
    let Some((mut b, dm, _io)) = free_map_backend(dir.path()) else { return };
    let top = "rewind-userdata";
    let mut p = part();
    // The kernel refuses the region (out of memory): the arm still
    // protects as it should.
    dm.lock().stats_create_limit = Some(0);
    let map = armed_fresh(&mut b, &dm, &p, 1);
    assert!(matches!(map, FreeMap::Mapped { .. }), "{map:?}");
    assert!(dm.exists("rewind-userdata-snap"), "armed");
    assert!(dm.regions(top).is_empty(), "{:?}", dm.regions(top));
    p.free_map = Some(map);
    let why = b.free_written_bytes(&p).expect_err("unknown");
    assert!(why.contains("0 regions") && why.contains("rewind-free"), "{why}");
    // A failed message (no dm-stats at all) is the same: armed, unknown.
    dm.lock().stats_create_limit = None;
    b.commit_live(&p).expect("back to idle");
    b.ensure_idle(&idle_ref()).expect("idle");
    dm.fail_once("message rewind-userdata");
    p.free_map = None;
    let map = b.arm(&p, 1).expect("arm does not fail").expect("reported");
    assert!(dm.exists("rewind-userdata-snap"), "armed");
    p.free_map = Some(map);
    assert!(b.free_written_bytes(&p).is_err());
}

/// Metadata encryption: the raw partition is ciphertext, the free map is
/// sealed through the crypt layer on the top device once /data is
/// unmounted, and the arms use it while every fingerprinted byte holds.
#[test]
fn a_free_map_sealed_through_the_crypt_layer_arms_over_ciphertext_until_its_bytes_change() {
    const KEY: &str = "ffeeddccbbaa99887766554433221100";
    let dir = tempfile::tempdir().expect("tmp");
    let Some(plain) = baseline_image(dir.path()) else { return };
    let cipher = crate::ext4map::seal::tests::encipher(&plain).0;
    let (top, upper) = (Device { major: 254, minor: 1 }, Device { major: 254, minor: 9 });
    let dm = FakeDm::default();
    let io = FakeIo::default();
    {
        let mut l = io.0.lock().expect("io");
        l.raw_bytes = cipher.clone();
        l.plain_bytes = plain;
        l.mounted = Some(upper);
        l.holders.push((top, upper));
        l.infos.push((
            top,
            BlockInfo {
                kname: "dm-1".into(),
                size_bytes: RAW_SIZE,
                slaves: vec!["vdb".into()],
                dm_name: Some("rewind-userdata".into()),
            },
        ));
        l.infos.push((
            upper,
            BlockInfo {
                kname: "dm-9".into(),
                size_bytes: RAW_SIZE,
                slaves: vec!["dm-1".into()],
                dm_name: Some("userdata-crypt".into()),
            },
        ));
    }
    let lines = vec![(0, RAW_SIZE / 512, "crypt".to_string(), format!("aes-xts-plain64 {KEY} 0 254:1 0"))];
    let mut b = SnapshotBackend::new(&Config::default(), Box::new(CryptDm(dm.clone(), lines)), Box::new(io.clone()));
    b.ensure_idle(&idle_ref()).expect("idle");
    let mut p = part();
    // Not while /data is mounted from the crypt layer.
    let why = b.seal_free_map(&p).expect_err("mounted");
    assert!(why.contains("still mounted from userdata-crypt"), "{why}");
    io.0.lock().expect("io").mounted = None;
    let seal = b.seal_free_map(&p).expect("sealed");
    seal.validate(p.raw_size_bytes, p.chunk_sectors).expect("a seal the backend makes validates");
    assert!(seal.free_runs.iter().map(|r| r.1).sum::<u64>() > 2000, "{:?}", seal.free_runs);
    // Without the seal the ciphertext gives no map, and the reason says
    // what would.
    let FreeMap::NotUsed { reason } = armed_fresh(&mut b, &dm, &p, 1) else { panic!("ciphertext mapped") };
    assert!(reason.contains("seal-free-map"), "{reason}");
    // With it: mapped, linear lines over the sealed runs.
    p.free_map_seal = Some(seal.clone());
    let map = armed_fresh(&mut b, &dm, &p, 1);
    let FreeMap::Mapped { sealed_at_unix, ref runs, .. } = map else { panic!("sealed map not used: {map:?}") };
    assert_eq!(sealed_at_unix, Some(seal.sealed_at_unix));
    assert!(!runs.is_empty());
    assert!(dm.active("rewind-userdata").expect("top").lines.len() > 1);
    assert!(map.report().detail.contains("crypt layer"), "{}", map.report().detail);
    // Attempt 2 (the rollback restored every fingerprinted byte): the same.
    p.free_map = Some(map.clone());
    let FreeMap::Mapped { .. } = armed_fresh(&mut b, &dm, &p, 2) else { panic!("attempt 2 not mapped") };
    // A fingerprinted byte changed (a bitmap, after a mount): refused.
    let at = seal.regions[seal.regions.len() / 2].offset as usize;
    io.0.lock().expect("io").raw_bytes[at] ^= 1;
    let FreeMap::NotUsed { reason } = armed_fresh(&mut b, &dm, &p, 2) else { panic!("a broken seal was used") };
    assert!(reason.contains("no longer holds"), "{reason}");
    assert_eq!(dm.active("rewind-userdata").expect("top").to_string(), "0 2097152 snapshot-origin 8:16\n");
}
