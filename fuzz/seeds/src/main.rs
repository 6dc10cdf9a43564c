//! Writes the seeds of every fuzz target as `fuzz/corpus/<target>/seed-*`:
//! the project's own fstabs and configs, dm lines and state records made by
//! the daemon's own types and encoder, and ext4/f2fs images made by
//! mkfs.ext4 -d / mkfs.f2fs, cut down to the bytes the parser reads.
//!
//!     cargo run --manifest-path fuzz/Cargo.toml -p rewind-fuzz-seeds [-- CORPUS_DIR]
//!
//! Files the fuzzer added (named by their sha1) are left alone; seeds are
//! overwritten, so running it again is harmless.

use std::cell::RefCell;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use devicemapper::{Device, Sectors};
use rewind_daemon::backend::f2fs;
use rewind_daemon::dm::target::{OriginParams, SnapParams};
use rewind_daemon::dm::{Table, Target};
use rewind_daemon::ext4map::{self, Region};
use rewind_daemon::fiemap::Extent;
use rewind_daemon::state::{self, CowFile, Intent, PartitionState, State};
use rewind_daemon::sys::blockdev::ReadAt;
use rewind_daemon::types::{BackendKind, Event, EventKind, Phase};

#[path = "../../src/sparse.rs"]
mod sparse;

type Res<T> = Result<T, String>;

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> Res<()> {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    let p = d.join(format!("seed-{name}"));
    std::fs::write(&p, bytes).map_err(|e| format!("{}: {e}", p.display()))?;
    println!("{:>7} {}", bytes.len(), p.display());
    Ok(())
}

fn text_seeds(dir: &Path) -> Res<()> {
    let fstabs: &[(&str, &str)] = &[
        ("android-ext4", include_str!("../../../android/fstab.rewind.ext4")),
        ("android-f2fs", include_str!("../../../android/fstab.rewind.f2fs")),
        (
            "guest-ext4",
            "/dev/block/by-name/metadata /metadata ext4 noatime,nosuid,nodev wait,check,first_stage_mount\n\
             /dev/block/mapper/rewind-userdata /data ext4 noatime,nosuid,nodev wait,check,checkpoint=block,rewind_raw=/dev/block/by-name/userdata\n",
        ),
        (
            "guest-f2fs",
            "/dev/block/by-name/metadata /metadata ext4 noatime,nosuid,nodev wait,check,first_stage_mount\n\
             /dev/block/by-name/userdata /data f2fs noatime,nosuid,nodev wait,check,checkpoint=fs\n",
        ),
        (
            "two-data-lines",
            "/dev/block/bootdevice/by-name/userdata /data f2fs noatime,nosuid,nodev,discard,fsync_mode=nobarrier latemount,wait,check,formattable,fileencryption=ice,quota,reservedsize=128M,checkpoint=fs\n\
             /dev/block/bootdevice/by-name/userdata /data ext4 noatime,nosuid,nodev,barrier=1,noauto_da_alloc latemount,wait,check,formattable,fileencryption=ice,quota,reservedsize=128M,checkpoint=block\n",
        ),
        ("run-mapper", "/run/mapper/rewind-userdata /data ext4 defaults wait,checkpoint=block,rewind_raw=/dev/vdb\n"),
    ];
    for (name, t) in fstabs {
        write(dir, "fstab", name, t.as_bytes())?;
    }

    let configs: &[(&str, &str)] = &[
        ("example", include_str!("../../../daemon/rewindd.example.toml")),
        ("android", include_str!("../../../android/rewindd.toml")),
        (
            "guest",
            "fstab = \"/etc/fstab.rewind\"\nmetadata_dir = \"/metadata/rewind\"\nsocket = \"/dev/socket/rewindd\"\n\
             listen_tcp = \"0.0.0.0:50051\"\nreboot_command = [\"reboot\", \"-f\"]\n",
        ),
        (
            "keys",
            "fstab = \"/tmp/fstab\"\nallowed_uids = [0]\nlisten_tcp = \"127.0.0.1:5000\"\ndev_nodes = \"ueventd\"\n\
             commit_command = [\"bootctl\", \"mark-successful\"]\n[cow]\nchunk_sectors = 16\ndir = \"rewind\"\n\
             [space]\noverflow_policy = \"commit\"\nthresholds_percent = [90]\n",
        ),
    ];
    for (name, t) in configs {
        write(dir, "config", name, t.as_bytes())?;
    }

    for (i, line) in
        ["16/2097152 16", "1048576/2097152 2056\n", "0/0 0", "Invalid", "Overflow", "Merge failed", "Unknown"]
            .iter()
            .enumerate()
    {
        write(dir, "dm_status", &format!("{i}"), line.as_bytes())?;
    }

    let (raw, cow) = (Device { major: 8, minor: 16 }, Device { major: 254, minor: 1 });
    let snap = SnapParams::new(raw, cow, Sectors(8));
    let with_features =
        SnapParams { features: vec!["discard_zeroes_cow".into(), "discard_passdown_origin".into()], ..snap.clone() };
    let targets = [
        Target::linear(raw, Sectors(0)),
        Target::linear(Device { major: 254, minor: 3 }, Sectors(123456)),
        Target::Origin(OriginParams { origin: raw }),
        Target::Snapshot(snap.clone()),
        Target::Merge(SnapParams { chunk: Sectors(32), ..snap.clone() }),
        Target::Snapshot(with_features),
    ];
    for (i, t) in targets.iter().enumerate() {
        write(dir, "dm_target", &format!("{i}"), t.to_string().as_bytes())?;
    }

    let lin = |dev: Device, off: u64| Target::linear(dev, Sectors(off));
    let line = |start: u64, len: u64, t: Target| devicemapper::TargetLine::new(Sectors(start), Sectors(len), t);
    let tables = [
        // A COW store over two extents of a file (cowstore::linear_table).
        Table { lines: vec![line(0, 2048, lin(raw, 4096)), line(2048, 1024, lin(raw, 90112))] },
        // The free-space-aware top device: origin over used runs, linear
        // in place over free ones.
        Table {
            lines: vec![
                line(0, 8192, Target::Origin(OriginParams { origin: raw })),
                line(8192, 8192, lin(raw, 8192)),
                line(16384, 16384, Target::Origin(OriginParams { origin: raw })),
            ],
        },
        Table::single(Sectors(1 << 21), Target::Snapshot(snap.clone())),
        Table::single(Sectors(1 << 21), Target::Merge(snap)),
    ];
    for (i, t) in tables.iter().enumerate() {
        write(dir, "dm_table", &format!("{i}"), t.to_string().as_bytes())?;
    }

    let mountinfo = "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
        30 22 254:5 / /metadata rw,nosuid,nodev,noatime shared:4 - ext4 /dev/block/by-name/metadata rw,seclabel\n\
        40 22 254:0 / /data rw,nosuid,nodev,noatime shared:2 - f2fs /dev/block/by-name/userdata rw,lazytime,background_gc=on,checkpoint=disable:0,active_logs=6\n\
        41 40 0:45 / /data/tmp rw,relatime shared:3 master:1 - tmpfs tmpfs rw\n";
    write(dir, "mountinfo", "f2fs-disabled", mountinfo.as_bytes())?;
    write(
        dir,
        "mountinfo",
        "ext4-stacked",
        b"22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
          40 22 254:0 / /data rw,relatime shared:2 - ext4 /dev/mapper/rewind-userdata rw\n\
          41 40 0:45 / /data rw,relatime shared:3 - tmpfs tmpfs rw\n",
    )?;

    write(dir, "boot_reason", "cmdline", b"console=ttyS0 androidboot.bootreason=reboot,ota quiet\n")?;
    write(
        dir,
        "boot_reason",
        "bootconfig",
        b"androidboot.hardware = \"cutf_cvm\"\nandroidboot.bootreason = \"reboot,ota\"\nandroidboot.serialno = \"CUTTLEFISHCVD01\"\n",
    )?;
    write(dir, "boot_reason", "bootconfig-array", b"androidboot.bootreason = \"kernel_panic\", \"x\"\n")?;
    Ok(())
}

fn cow_file(path: &str, extents: &[(u64, u64, u64)]) -> CowFile {
    CowFile {
        path: path.into(),
        size_bytes: extents.iter().map(|e| e.2).sum(),
        extents: extents.iter().map(|&(logical, physical, length)| Extent { logical, physical, length }).collect(),
        fingerprint: Vec::new(),
        inode: 0,
    }
}

fn partition(backend: BackendKind, files: Vec<CowFile>) -> PartitionState {
    PartitionState {
        name: "userdata".into(),
        mount_point: "/data".into(),
        fs_type: if backend == BackendKind::F2fs { "f2fs" } else { "ext4" }.into(),
        backend,
        raw_device: "/dev/block/by-name/userdata".into(),
        raw_size_bytes: 64 << 30,
        chunk_sectors: 8,
        cow_sha256: state::extents_hash(&files),
        cow_files: files,
    }
}

fn event(kind: EventKind, attempt: u32, detail: &str) -> Event {
    Event {
        time_unix: 1_795_000_000 + u64::from(attempt),
        kind: kind.as_str().into(),
        attempt,
        attempts: 3,
        partition: "userdata".into(),
        detail: detail.into(),
        boot_reason: "reboot,ota".into(),
    }
}

/// Records as rewindd writes them, in each phase: whole files, and their
/// bodies alone (the target also tries an input as a body behind a
/// correct header).
fn state_seeds(dir: &Path) -> Res<()> {
    let mut cow = cow_file("/data/rewind/cow.0000", &[(0, 1 << 30, 4 << 20), (4 << 20, 2 << 30, 4 << 20)]);
    cow.inode = 12;
    cow.fingerprint = vec![
        Region { offset: 4096 * 34 + 0xb10, len: 0x60, sha256: "ab".repeat(32) },
        Region { offset: 4096 * 900, len: 4096, sha256: "cd".repeat(32) },
    ];
    let checkpointing = State {
        seq: 7,
        phase: Phase::Checkpointing,
        attempt: 2,
        attempts: 3,
        boot_id: "0d5e3c3a-4a9f-4f0e-9a43-5b2a3c1f0e77".into(),
        reason: "ota 2026-11".into(),
        started_unix: 1_795_000_000,
        thresholds_hit: vec![50],
        partitions: vec![partition(BackendKind::Snapshot, vec![cow.clone()])],
        history: vec![
            event(EventKind::Started, 0, "ota"),
            event(EventKind::Attempt, 1, ""),
            event(EventKind::Attempt, 2, ""),
        ],
        ..State::default()
    };
    let rolling_back = State {
        phase: Phase::RollingBack,
        intent: Some(Intent::Rollback { reason: "attempt 3 not committed".into(), final_: true }),
        ..checkpointing.clone()
    };
    let committing = State {
        phase: Phase::Committing,
        intent: Some(Intent::Commit { reason: "boot completed".into() }),
        commit_command_pending: true,
        ..checkpointing.clone()
    };
    let rolled_back = State {
        phase: Phase::RolledBack,
        protection_lost: Some("COW store overflow (Overflow)".into()),
        pending_cleanup: vec![cow],
        partitions: Vec::new(),
        ..checkpointing.clone()
    };
    let f2fs = State {
        phase: Phase::Armed,
        attempt: 0,
        no_retry: true,
        partitions: vec![partition(BackendKind::F2fs, Vec::new())],
        ..checkpointing.clone()
    };
    let states = [
        ("idle", State::default()),
        ("checkpointing", checkpointing),
        ("rolling-back", rolling_back),
        ("committing", committing),
        ("rolled-back", rolled_back),
        ("f2fs-armed", f2fs),
    ];
    for (name, s) in states {
        s.validate().map_err(|e| format!("seed {name} is not a valid record: {e}"))?;
        let bytes = state::encode(&s).map_err(|e| format!("{name}: {e}"))?;
        let nl = bytes.iter().position(|b| *b == b'\n').ok_or("no header")?;
        write(dir, "state_record", &format!("{name}.record"), &bytes)?;
        write(dir, "state_record", &format!("{name}.body"), &bytes[nl + 1..])?;
    }
    Ok(())
}

/// A file as a device that notes every byte range read.
struct Recorder {
    file: File,
    reads: RefCell<Vec<(u64, usize)>>,
}

impl ReadAt for Recorder {
    fn read_at_exact(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.reads.borrow_mut().push((offset, buf.len()));
        self.file.read_exact_at(buf, offset)
    }
}

/// The image reduced to the sectors `reads` touched, as a sparse input.
fn cut(img: &Path, reads: &[(u64, usize)]) -> Res<Vec<u8>> {
    let bytes = std::fs::read(img).map_err(|e| format!("{}: {e}", img.display()))?;
    let mut kept = vec![0u8; bytes.len()];
    for &(off, len) in reads {
        let from = (off / sparse::SECTOR * sparse::SECTOR) as usize;
        let to = ((off + len as u64).div_ceil(sparse::SECTOR) * sparse::SECTOR) as usize;
        let to = to.min(bytes.len());
        kept[from..to].copy_from_slice(&bytes[from..to]);
    }
    let encoded = sparse::encode(&kept);
    // The fuzz targets' decoder must give back exactly the kept sectors.
    let mut back = vec![0u8; kept.len()];
    for (off, bytes) in sparse::decode(&encoded, usize::MAX) {
        back[off as usize..off as usize + bytes.len()].copy_from_slice(bytes);
    }
    if back != kept {
        return Err(format!("{}: the chunk list does not decode to the image", img.display()));
    }
    Ok(encoded)
}

fn sbin(name: &str) -> PathBuf {
    ["/usr/sbin", "/sbin"].iter().map(|d| Path::new(d).join(name)).find(|p| p.exists()).unwrap_or(name.into())
}

fn run(cmd: &mut Command) -> Res<String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// mkfs.ext4 -d over a tree with a COW-like file and neighbours; then
/// `debugfs` commands (to fragment a file into an extent tree).
fn ext4_image(work: &Path, name: &str, opts: &[&str], size: &str, files: u32, debugfs: &str) -> Res<PathBuf> {
    let src = work.join(format!("{name}.d"));
    std::fs::create_dir_all(&src).map_err(|e| e.to_string())?;
    std::fs::write(src.join("cow.0000"), vec![0x5a; 256 << 10]).map_err(|e| e.to_string())?;
    for i in 0..files {
        std::fs::write(src.join(format!("f{i}")), i.to_le_bytes().repeat(1024)).map_err(|e| e.to_string())?;
    }
    std::fs::write(src.join("small"), b"inline?").map_err(|e| e.to_string())?;
    let img = work.join(format!("{name}.img"));
    run(Command::new(sbin("mkfs.ext4")).args(["-F", "-q"]).args(opts).arg("-d").arg(&src).arg(&img).arg(size))?;
    if !debugfs.is_empty() {
        let script = work.join(format!("{name}.debugfs"));
        std::fs::write(&script, debugfs).map_err(|e| e.to_string())?;
        run(Command::new(sbin("debugfs")).arg("-w").arg("-f").arg(&script).arg(&img))?;
    }
    Ok(img)
}

/// What the ext4_map target reads of an image: the same loop.
fn ext4_reads(img: &Path) -> Res<(Vec<(u64, usize)>, usize)> {
    let rec = Recorder { file: File::open(img).map_err(|e| e.to_string())?, reads: RefCell::new(Vec::new()) };
    let sb = ext4map::read_super(&rec).map_err(|e| format!("{}: {e}", img.display()))?;
    let mut mapped = 0;
    for ino in 1..=24.min(u64::from(sb.inodes_count)) {
        let Ok(off) = ext4map::inode_offset(&rec, &sb, ino) else { continue };
        let mut raw = [0u8; 128];
        rec.read_at_exact(&mut raw, off).map_err(|e| e.to_string())?;
        let le32 = |at: usize| u64::from(u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]));
        let size = le32(0x04) | (le32(0x6C) << 32);
        if ext4map::map_inode(&rec, ino, size).is_ok() {
            mapped += 1;
        }
    }
    Ok((rec.reads.into_inner(), mapped))
}

fn ext4_seeds(dir: &Path, work: &Path) -> Res<()> {
    // 8 4-KiB holes left by deleting every other file, filled by one file:
    // more extents than the inode's i_block holds, so a tree of depth 1.
    let mut fragment = String::new();
    for i in (0..16).step_by(2) {
        fragment.push_str(&format!("rm f{i}\n"));
    }
    let big = work.join("big");
    std::fs::write(&big, (0..40_000u32).map(|i| (i % 251) as u8 | 1).collect::<Vec<u8>>())
        .map_err(|e| e.to_string())?;
    fragment.push_str(&format!("write {} big\n", big.display()));
    let images = [
        ("4k", ext4_image(work, "4k", &["-b", "4096", "-N", "32"], "4M", 4, "")?),
        ("1k", ext4_image(work, "1k", &["-b", "1024", "-N", "32"], "4M", 4, "")?),
        (
            "4k-no64bit-nojournal",
            ext4_image(work, "n64", &["-b", "4096", "-N", "32", "-O", "^64bit,^has_journal"], "4M", 4, "")?,
        ),
        (
            "4k-inline",
            ext4_image(work, "inl", &["-b", "4096", "-N", "32", "-I", "256", "-O", "inline_data"], "4M", 4, "")?,
        ),
        ("4k-depth1", ext4_image(work, "frag", &["-b", "4096", "-N", "32"], "4M", 16, &fragment)?),
    ];
    for (name, img) in images {
        let (reads, mapped) = ext4_reads(&img)?;
        if mapped == 0 {
            return Err(format!("{name}: no inode maps; the seed would teach nothing"));
        }
        write(dir, "ext4_map", name, &cut(&img, &reads)?)?;
    }
    Ok(())
}

fn f2fs_seeds(dir: &Path, work: &Path) -> Res<()> {
    let img = work.join("f2fs.img");
    File::create(&img).and_then(|f| f.set_len(64 << 20)).map_err(|e| e.to_string())?;
    run(Command::new(sbin("mkfs.f2fs")).args(["-q", "-f"]).arg(&img))?;
    let rec = Recorder { file: File::open(&img).map_err(|e| e.to_string())?, reads: RefCell::new(Vec::new()) };
    let flags = f2fs::checkpoint_flags_from(&rec, &img).map_err(|e| format!("f2fs image: {e}"))?;
    println!("f2fs image: ckpt_flags {flags:#x}");
    write(dir, "f2fs_checkpoint", "mkfs-64m", &cut(&img, &rec.reads.into_inner())?)
}

fn main() {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("..")).join("corpus"));
    let result = tempfile::tempdir().map_err(|e| e.to_string()).and_then(|work| {
        text_seeds(&dir)?;
        state_seeds(&dir)?;
        ext4_seeds(&dir, work.path())?;
        f2fs_seeds(&dir, work.path())
    });
    if let Err(e) = result {
        eprintln!("seeds: {e}");
        std::process::exit(1);
    }
}
