//! Linux (and Android) system calls the core needs: mounts, device nodes,
//! inode flags, f2fs pinning, freeze/thaw, sizes, mountinfo, cmdline.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use devicemapper::Device;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};

#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error("Cannot {step} {path}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot {step} {path}")]
    Nix {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("{path} exists and is not the block device {device}")]
    NodeClash { path: PathBuf, device: String },
    #[error("{path} did not appear as the block device {device} within {waited_ms} ms: on Android ueventd creates it (is ueventd running?); on a system without ueventd set dev_nodes = \"mknod\" in rewindd.toml")]
    NodeTimeout { path: PathBuf, device: String, waited_ms: u64 },
}

fn nix_err(step: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> SysError {
    let path = path.to_path_buf();
    move |source| SysError::Nix { step, path, source }
}
fn io_err(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SysError {
    let path = path.to_path_buf();
    move |source| SysError::Io { step, path, source }
}

/// Why this boot happened, recorded with every attempt in the history.
/// In order: on Android the properties `sys.boot.reason` (bootstat's
/// canonical reason, once it ran) and `ro.boot.bootreason` (init copies it
/// from bootconfig / the command line before any service starts); then
/// `androidboot.bootreason` from /proc/bootconfig (Android 12+ bootloaders
/// pass androidboot.* there) and /proc/cmdline (older ones, the test
/// guests). Empty when nothing says.
pub fn boot_reason() -> String {
    #[cfg(target_os = "android")]
    for prop in ["sys.boot.reason", "ro.boot.bootreason"] {
        match super::android::getprop(prop) {
            Ok(v) if !v.is_empty() => return v,
            Ok(_) => {}
            Err(e) => tracing::warn!("reading {prop}: {e}"),
        }
    }
    let bootconfig =
        std::fs::read_to_string("/proc/bootconfig").map(|c| boot_reason_from_bootconfig(&c)).unwrap_or_default();
    if !bootconfig.is_empty() {
        return bootconfig;
    }
    std::fs::read_to_string("/proc/cmdline").map(|c| boot_reason_from(&c)).unwrap_or_default()
}

pub fn boot_reason_from(cmdline: &str) -> String {
    cmdline.split_whitespace().find_map(|w| w.strip_prefix("androidboot.bootreason=")).unwrap_or("").to_string()
}

/// `androidboot.bootreason` from /proc/bootconfig, whose lines read
/// `androidboot.bootreason = "reboot,ota"` (the kernel prints every value
/// quoted; an array value is `"a", "b"`: the first is taken).
pub fn boot_reason_from_bootconfig(bootconfig: &str) -> String {
    bootconfig
        .lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == "androidboot.bootreason")
        .map(|(_, v)| {
            let v = v.trim();
            let first = match v.strip_prefix('"') {
                Some(rest) => rest.split('"').next().unwrap_or(""),
                None => v,
            };
            first.to_string()
        })
        .unwrap_or_default()
}

/// Publishes the phase as `rewind.phase` (android/rewindd.rc documents the
/// words). Android only; a failure is logged and never fatal: the state
/// record, not the property, is the truth.
pub fn publish_phase(word: &str) {
    #[cfg(target_os = "android")]
    if let Err(e) = super::android::setprop("rewind.phase", word) {
        tracing::warn!("setting rewind.phase={word}: {e}");
    }
    #[cfg(not(target_os = "android"))]
    let _ = word;
}

/// Makes `<dir>/<name>` a block node for `dev` (no udev on the device's
/// early boot, nor in test guests). An existing node for the same device
/// is kept; a node for another device is replaced (dm numbers are reused
/// across boots), anything else is refused.
pub fn make_dev_node(dir: &Path, name: &str, dev: Device) -> Result<PathBuf, SysError> {
    std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let path = dir.join(name);
    let want = libc::makedev(dev.major, dev.minor);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_block_device() && m.rdev() == want => return Ok(path),
        Ok(m) if m.file_type().is_block_device() || m.file_type().is_symlink() => {
            std::fs::remove_file(&path).map_err(io_err("replace", &path))?;
        }
        Ok(_) => return Err(SysError::NodeClash { path, device: dev.to_string() }),
        Err(_) => {}
    }
    nix::sys::stat::mknod(&path, SFlag::S_IFBLK, Mode::from_bits_truncate(0o600), want)
        .map_err(nix_err("mknod", &path))?;
    Ok(path)
}

/// Waits for `<dir>/<name>` to resolve to the block device `dev`, made by
/// someone else: on Android ueventd creates `/dev/block/dm-N` and the
/// `/dev/block/mapper/<name>` link when the dm device appears (like AOSP's
/// libdm, rewindd waits instead of racing it; it also has no CAP_MKNOD
/// there). A link still pointing at an older device of the same name (dm
/// numbers are reused across boots) is waited out, not used.
pub fn wait_dev_node(dir: &Path, name: &str, dev: Device, timeout: std::time::Duration) -> Result<PathBuf, SysError> {
    let path = dir.join(name);
    let want = libc::makedev(dev.major, dev.minor);
    let started = std::time::Instant::now();
    loop {
        // metadata() follows the link: what matters is the node it names.
        if let Ok(m) = std::fs::metadata(&path) {
            if m.file_type().is_block_device() && m.rdev() == want {
                return Ok(path);
            }
        }
        if started.elapsed() >= timeout {
            return Err(SysError::NodeTimeout {
                path,
                device: dev.to_string(),
                waited_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

pub fn remove_dev_node(dir: &Path, name: &str) {
    let path = dir.join(name);
    if let Ok(m) = std::fs::symlink_metadata(&path) {
        if m.file_type().is_block_device() {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// The device number of a block device node.
pub fn block_device(path: &Path) -> Result<Device, SysError> {
    let m = std::fs::metadata(path).map_err(io_err("stat", path))?;
    if !m.file_type().is_block_device() {
        return Err(SysError::Io {
            step: "use as a block device",
            path: path.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        });
    }
    Ok(Device::from(m.rdev()))
}

nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);

/// Size of a block device in bytes.
pub fn block_size_bytes(path: &Path) -> Result<u64, SysError> {
    let f = File::open(path).map_err(io_err("open", path))?;
    let mut size = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64 to the pointer.
    unsafe { blkgetsize64(f.as_raw_fd(), &mut size) }.map_err(nix_err("BLKGETSIZE64", path))?;
    Ok(size)
}

pub fn mount(source: &Path, target: &Path, fstype: &str, flags: MsFlags, data: &str) -> Result<(), SysError> {
    std::fs::create_dir_all(target).map_err(io_err("create", target))?;
    nix::mount::mount(Some(source), target, Some(fstype), flags, if data.is_empty() { None } else { Some(data) })
        .map_err(nix_err("mount", target))
}

pub fn umount(target: &Path) -> Result<(), SysError> {
    nix::mount::umount2(target, MntFlags::empty()).map_err(nix_err("unmount", target))
}

/// Free bytes for an unprivileged writer (statvfs f_bavail).
pub fn free_bytes(path: &Path) -> Result<u64, SysError> {
    let s = nix::sys::statvfs::statvfs(path).map_err(nix_err("statvfs", path))?;
    Ok(s.blocks_available() as u64 * s.fragment_size() as u64)
}

/// The filesystem block size.
pub fn fs_block_size(path: &Path) -> Result<u64, SysError> {
    let s = nix::sys::statvfs::statvfs(path).map_err(nix_err("statvfs", path))?;
    Ok(s.fragment_size() as u64)
}

nix::ioctl_read!(fs_ioc_getflags, b'f', 1, libc::c_long);
nix::ioctl_write_ptr!(fs_ioc_setflags, b'f', 2, libc::c_long);
/// FS_IMMUTABLE_FL from linux/fs.h.
pub const FS_IMMUTABLE_FL: libc::c_long = 0x0000_0010;

/// Sets or clears the immutable inode flag (chattr +i / -i).
pub fn set_immutable(file: &File, path: &Path, on: bool) -> Result<(), SysError> {
    // The kernel reads and writes an int through these "long" ioctls; the
    // zeroed long keeps the upper half defined.
    let mut flags: libc::c_long = 0;
    // SAFETY: the pointer is to a live c_long.
    unsafe { fs_ioc_getflags(file.as_raw_fd(), &mut flags) }.map_err(nix_err("read inode flags of", path))?;
    let flags = flags & 0xffff_ffff;
    let new = if on { flags | FS_IMMUTABLE_FL } else { flags & !FS_IMMUTABLE_FL };
    if new != flags {
        // SAFETY: as above.
        unsafe { fs_ioc_setflags(file.as_raw_fd(), &new) }.map_err(nix_err("set inode flags of", path))?;
    }
    Ok(())
}

pub fn is_immutable(file: &File, path: &Path) -> Result<bool, SysError> {
    let mut flags: libc::c_long = 0;
    // SAFETY: the pointer is to a live c_long.
    unsafe { fs_ioc_getflags(file.as_raw_fd(), &mut flags) }.map_err(nix_err("read inode flags of", path))?;
    Ok(flags & FS_IMMUTABLE_FL != 0)
}

nix::ioctl_write_ptr!(f2fs_ioc_set_pin_file, 0xf5, 13, u32);

/// f2fs: pin the file before allocating so GC never moves its blocks.
pub fn f2fs_pin(file: &File, path: &Path) -> Result<(), SysError> {
    let on: u32 = 1;
    // SAFETY: the pointer is to a live u32.
    unsafe { f2fs_ioc_set_pin_file(file.as_raw_fd(), &on) }.map_err(nix_err("pin", path))?;
    Ok(())
}

nix::ioctl_read!(f2fs_ioc_get_pin_file, 0xf5, 14, u32);
/// FS_NOCOW_FL from linux/fs.h; f2fs reports pinned files with it.
pub const FS_NOCOW_FL: libc::c_long = 0x0080_0000;
/// F2FS_SUPER_MAGIC from linux/magic.h.
pub const F2FS_SUPER_MAGIC: i64 = 0xF2F5_2010;

/// f2fs: whether the file is pinned. F2FS_IOC_GET_PIN_FILE answers with the
/// pin's GC-failure count, which can be 0 for a file just pinned, so the
/// FS_NOCOW_FL inode flag (what libfiemap checks) counts too.
pub fn f2fs_is_pinned(file: &File, path: &Path) -> Result<bool, SysError> {
    let mut pin: u32 = 0;
    // SAFETY: the kernel writes one u32 to the pointer.
    unsafe { f2fs_ioc_get_pin_file(file.as_raw_fd(), &mut pin) }.map_err(nix_err("read the f2fs pin of", path))?;
    if pin != 0 {
        return Ok(true);
    }
    let mut flags: libc::c_long = 0;
    // SAFETY: the pointer is to a live c_long.
    unsafe { fs_ioc_getflags(file.as_raw_fd(), &mut flags) }.map_err(nix_err("read inode flags of", path))?;
    Ok(flags & FS_NOCOW_FL != 0)
}

/// fallocate(2), mode 0, over [0, len). libc's, not nix's: nix builds its
/// wrapper for target_os = "linux" only, so it does not exist on Android.
pub fn fallocate(file: &File, len: u64) -> std::io::Result<()> {
    let len = libc::off64_t::try_from(len).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: the fd is valid for the call (borrowed from `file`); no pointers.
    let r = unsafe { libc::fallocate64(file.as_raw_fd(), 0, 0, len) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether `path` is on an f2fs filesystem (statfs magic).
// f_type is i64 on 64-bit Linux but narrower on 32-bit Android targets.
#[allow(clippy::useless_conversion)]
pub fn is_f2fs(path: &Path) -> bool {
    // f_type is signed on glibc and unsigned on bionic: compare in i128,
    // which both widen to without a cast.
    nix::sys::statfs::statfs(path)
        .map(|s| i128::from(s.filesystem_type().0) == i128::from(F2FS_SUPER_MAGIC))
        .unwrap_or(false)
}

nix::ioctl_readwrite!(fifreeze, b'X', 119, libc::c_int);
nix::ioctl_readwrite!(fithaw, b'X', 120, libc::c_int);

/// Freeze then thaw the filesystem at `mount_point`: ext4 checkpoints its
/// journal on freeze, so metadata just written is in place on disk and a
/// later `noload` mount sees it. Falls back to syncfs when freezing is
/// refused (EBUSY when already frozen, EOPNOTSUPP).
pub fn checkpoint_fs(mount_point: &Path) -> Result<(), SysError> {
    let dir = File::open(mount_point).map_err(io_err("open", mount_point))?;
    let mut arg: libc::c_int = 0;
    // SAFETY: FIFREEZE/FITHAW take an int argument that is not used.
    match unsafe { fifreeze(dir.as_raw_fd(), &mut arg) } {
        Ok(_) => {
            // SAFETY: as above.
            unsafe { fithaw(dir.as_raw_fd(), &mut arg) }.map_err(nix_err("thaw", mount_point))?;
            Ok(())
        }
        Err(_) => nix::unistd::syncfs(&dir).map_err(nix_err("syncfs", mount_point)),
    }
}

/// The device number of the filesystem mounted at `mount_point`, from
/// /proc/self/mountinfo (the last mount on that path wins, like the kernel).
pub fn mounted_device(mount_point: &Path) -> Option<Device> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounted_device_from(&text, mount_point)
}

pub fn mounted_device_from(mountinfo: &str, mount_point: &Path) -> Option<Device> {
    let want = mount_point.to_str()?;
    let mut found = None;
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() > 4 && f[4] == want {
            found = f[2].parse::<Device>().ok();
        }
    }
    found
}

/// Whether the last mount at `mount_point` in `mountinfo` is writable
/// (its per-mount options have `rw`); false when nothing is mounted there.
pub fn mounted_writable_from(mountinfo: &str, mount_point: &Path) -> bool {
    let Some(want) = mount_point.to_str() else { return false };
    let mut writable = false;
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() > 5 && f[4] == want {
            writable = f[5].split(',').any(|o| o == "rw");
        }
    }
    writable
}

/// Runs a command (reboot, commit hook) and reports how it ended.
pub fn run_command(argv: &[String]) -> Result<(), String> {
    let (prog, args) = argv.split_first().ok_or("empty command")?;
    let st = std::process::Command::new(prog).args(args).status().map_err(|e| format!("{prog}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{} exited with {st}", argv.join(" ")))
    }
}

/// Seconds since the epoch (0 if the clock is before it), for history
/// entries and the record's start time.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// When this kernel boot started, in Unix seconds (the clock now minus
/// /proc/uptime); 0 when uptime cannot be read.
pub fn boot_started_unix() -> u64 {
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|w| w.parse::<f64>().ok()));
    match uptime {
        Some(up) if up.is_finite() && up >= 0.0 => now_unix().saturating_sub(up as u64),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_reason_is_read_from_cmdline() {
        assert_eq!(boot_reason_from("console=ttyS0 androidboot.bootreason=reboot,ota quiet"), "reboot,ota");
        assert_eq!(boot_reason_from("console=ttyS0 quiet"), "");
    }

    #[test]
    fn boot_reason_is_read_from_bootconfig() {
        let bc = "androidboot.hardware = \"cutf_cvm\"\nandroidboot.bootreason = \"reboot,ota\"\nandroidboot.serialno = \"CUTTLEFISHCVD01\"\n";
        assert_eq!(boot_reason_from_bootconfig(bc), "reboot,ota");
        assert_eq!(boot_reason_from_bootconfig("androidboot.bootreason = \"kernel_panic\", \"x\"\n"), "kernel_panic");
        assert_eq!(boot_reason_from_bootconfig("androidboot.bootreasonx = \"no\"\n"), "");
        assert_eq!(boot_reason_from_bootconfig("androidboot.hardware = \"x\"\n"), "");
        assert_eq!(boot_reason_from_bootconfig(""), "");
    }

    #[test]
    fn mountinfo_lookup_takes_the_last_mount() {
        let mi = "\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 254:0 / /data rw,relatime shared:2 - ext4 /dev/mapper/rewind-userdata rw
41 40 0:45 / /data rw,relatime shared:3 - tmpfs tmpfs rw
";
        assert_eq!(mounted_device_from(mi, Path::new("/data")), Some(Device { major: 0, minor: 45 }));
        assert_eq!(mounted_device_from(mi, Path::new("/")), Some(Device { major: 259, minor: 2 }));
        assert_eq!(mounted_device_from(mi, Path::new("/metadata")), None);
    }

    #[test]
    fn immutable_flag_round_trip_on_host_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").expect("w");
        let f = File::open(&p).expect("open");
        // Needs CAP_LINUX_IMMUTABLE and an fs with inode flags; skip otherwise.
        if set_immutable(&f, &p, true).is_err() {
            eprintln!("cannot set immutable here; skipped");
            return;
        }
        assert!(is_immutable(&f, &p).expect("flags"));
        assert!(std::fs::remove_file(&p).is_err(), "immutable file must not be removable");
        set_immutable(&f, &p, false).expect("clear");
        assert!(!is_immutable(&f, &p).expect("flags"));
        std::fs::remove_file(&p).expect("removable again");
    }

    #[test]
    fn dev_nodes_are_made_and_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = Device { major: 1, minor: 3 }; // /dev/null's numbers: harmless
        let Ok(p) = make_dev_node(dir.path(), "rewind-x", d) else {
            eprintln!("mknod not permitted here; skipped");
            return;
        };
        assert_eq!(block_device(&p).expect("node"), d);
        assert_eq!(make_dev_node(dir.path(), "rewind-x", d).expect("again"), p);
        std::fs::remove_file(&p).expect("rm");
        std::fs::write(&p, b"file").expect("w");
        assert!(matches!(make_dev_node(dir.path(), "rewind-x", d), Err(SysError::NodeClash { .. })));
    }

    /// The first block device node in /dev (a loop device on the test
    /// machines); None where there is none.
    fn some_block_device() -> Option<(PathBuf, Device)> {
        let mut nodes: Vec<PathBuf> = std::fs::read_dir("/dev").ok()?.flatten().map(|e| e.path()).collect();
        nodes.sort();
        nodes.into_iter().find_map(|p| {
            let m = std::fs::symlink_metadata(&p).ok()?;
            if !m.file_type().is_block_device() {
                return None;
            }
            let d = block_device(&p).ok()?;
            Some((p, d))
        })
    }

    #[test]
    fn waiting_for_a_node_ueventd_makes() {
        let dir = tempfile::tempdir().expect("tmp");
        // A link to something that is not the device: waited out, then a
        // timeout naming the path and the fix.
        std::os::unix::fs::symlink("/dev/null", dir.path().join("rewind-y")).expect("link");
        let d = Device { major: 7, minor: 0 };
        let err = wait_dev_node(dir.path(), "rewind-y", d, std::time::Duration::from_millis(100))
            .expect_err("/dev/null is not block device 7:0");
        assert!(matches!(err, SysError::NodeTimeout { .. }), "{err:?}");
        assert!(err.to_string().contains("rewind-y") && err.to_string().contains("mknod"), "{err}");

        let Some((node, dev)) = some_block_device() else {
            eprintln!("no block device node in /dev here; the appearing-link half skipped");
            return;
        };
        // ueventd's link appears while rewindd waits.
        let link = dir.path().join("rewind-z");
        let maker = {
            let link = link.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(150));
                std::os::unix::fs::symlink(&node, &link).expect("link");
            })
        };
        let got = wait_dev_node(dir.path(), "rewind-z", dev, std::time::Duration::from_secs(10)).expect("appears");
        maker.join().expect("maker");
        assert_eq!(got, link);
    }
}
