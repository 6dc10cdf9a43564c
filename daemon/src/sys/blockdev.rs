//! Block devices as sysfs and O_DIRECT see them: what a device number is
//! (kernel name, size, the devices below it, its dm name), a node for it,
//! aligned reads and writes below every page cache, and which layer /data
//! may be mounted from (a crypt layer stacked on the top device).

use std::fs::{File, OpenOptions};
use std::io::{Error as IoError, ErrorKind};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use devicemapper::Device;

use super::SysError;

/// O_DIRECT alignment used for buffers and offsets (covers 512- and
/// 4096-byte logical blocks).
const ALIGN: usize = 4096;

fn io(step: &'static str, path: &Path) -> impl FnOnce(IoError) -> SysError {
    let path = path.to_path_buf();
    move |source| SysError::Io { step, path, source }
}

fn invalid(step: &'static str, path: &Path, what: String) -> SysError {
    SysError::Io { step, path: path.to_path_buf(), source: IoError::new(ErrorKind::InvalidData, what) }
}

/// What sysfs says about one block device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockInfo {
    /// Kernel name (`dm-3`, `vdb`), from `uevent`'s DEVNAME.
    pub kname: String,
    pub size_bytes: u64,
    /// Kernel names of the devices below it (`slaves/`).
    pub slaves: Vec<String>,
    /// The device-mapper name, for dm devices.
    pub dm_name: Option<String>,
}

/// `<sysfs>/dev/block/M:m/{uevent,size,slaves/,dm/name}`.
pub fn block_info(sysfs: &Path, dev: Device) -> Result<BlockInfo, SysError> {
    let dir = sysfs.join("dev/block").join(format!("{}:{}", dev.major, dev.minor));
    let uevent_path = dir.join("uevent");
    let uevent = std::fs::read_to_string(&uevent_path).map_err(io("read", &uevent_path))?;
    let kname = uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty() && !n.contains(".."))
        .ok_or_else(|| invalid("read", &uevent_path, "no DEVNAME".into()))?;
    let size_path = dir.join("size");
    let sectors: u64 = std::fs::read_to_string(&size_path)
        .map_err(io("read", &size_path))?
        .trim()
        .parse()
        .map_err(|_| invalid("parse", &size_path, "not a number of sectors".into()))?;
    let slaves_dir = dir.join("slaves");
    let mut slaves: Vec<String> = match std::fs::read_dir(&slaves_dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io("list", &slaves_dir)(e)),
    };
    slaves.sort();
    let dm_name =
        std::fs::read_to_string(dir.join("dm/name")).ok().map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
    Ok(BlockInfo { kname, size_bytes: sectors.saturating_mul(512), slaves, dm_name })
}

/// An existing node for `dev` named `kname`: `/dev/block/<kname>`
/// (Android's ueventd) or `/dev/<kname>` (devtmpfs), if it is that device.
/// The devices stacked directly on `dev` (`<sysfs>/dev/block/M:m/holders/`,
/// each holder's `dev`): where a crypt layer over rewind's top device is
/// found without being told its name.
pub fn holders(sysfs: &Path, dev: Device) -> Result<Vec<Device>, SysError> {
    let dir = sysfs.join("dev/block").join(format!("{}:{}", dev.major, dev.minor)).join("holders");
    let entries = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("list", &dir)(e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(io("list", &dir))?;
        let kname = e.file_name().to_string_lossy().into_owned();
        let dev_path = sysfs.join("class/block").join(&kname).join("dev");
        let text = std::fs::read_to_string(&dev_path).map_err(io("read", &dev_path))?;
        let d = text.trim().parse::<Device>().map_err(|_| invalid("parse", &dev_path, format!("{:?}", text.trim())))?;
        out.push(d);
    }
    out.sort_by_key(|d| (d.major, d.minor));
    Ok(out)
}

pub fn existing_node(dev_root: &Path, kname: &str, dev: Device) -> Option<PathBuf> {
    let want = libc::makedev(dev.major, dev.minor);
    [dev_root.join("block").join(kname), dev_root.join(kname)]
        .into_iter()
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device() && m.rdev() == want))
}

/// Positioned reads of a device or image: the raw partition read
/// O_DIRECT ([`DirectDev`]), or a plain file (an image in host tests).
pub trait ReadAt {
    fn read_at_exact(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl ReadAt for File {
    fn read_at_exact(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

/// A block device opened read-only with O_DIRECT: reads come from the
/// device itself, not through its page cache (which may be stale next to
/// dm-bufio or another layer's writes). Read-only on purpose: rewindd never
/// writes the raw partition; dm-snapshot does, in the kernel.
pub struct DirectDev {
    file: File,
    path: PathBuf,
}

/// A zero-filled buffer whose start is 4 KiB-aligned, as O_DIRECT needs.
pub struct Aligned {
    raw: Vec<u8>,
    off: usize,
    len: usize,
}

impl Aligned {
    pub fn new(len: usize) -> Aligned {
        let raw = vec![0u8; len + ALIGN];
        let off = raw.as_ptr().align_offset(ALIGN);
        Aligned { raw, off, len }
    }
    pub fn buf(&mut self) -> &mut [u8] {
        &mut self.raw[self.off..self.off + self.len]
    }
}

impl DirectDev {
    pub fn open(path: &Path) -> Result<DirectDev, SysError> {
        let file = OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path).map_err(io("open", path))?;
        Ok(DirectDev { file, path: path.to_path_buf() })
    }
}

impl ReadAt for DirectDev {
    /// Reads the aligned span around the range and copies the range out.
    fn read_at_exact(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = offset / ALIGN as u64 * ALIGN as u64;
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| IoError::new(ErrorKind::InvalidInput, "range overflows"))?;
        let end = end.div_ceil(ALIGN as u64) * ALIGN as u64;
        let mut b = Aligned::new((end - start) as usize);
        self.file
            .read_exact_at(b.buf(), start)
            .map_err(|e| IoError::new(e.kind(), format!("{}: {e}", self.path.display())))?;
        let skip = (offset - start) as usize;
        buf.copy_from_slice(&b.buf()[skip..skip + buf.len()]);
        Ok(())
    }
}

nix::ioctl_read!(fs_ioc_getversion, b'v', 1, libc::c_long);

/// i_generation of an open file (FS_IOC_GETVERSION; ext4 writes an int).
pub fn file_generation(f: &File, path: &Path) -> Result<u32, SysError> {
    let mut v: libc::c_long = 0;
    // SAFETY: the ioctl writes at most a long to the pointer.
    unsafe { fs_ioc_getversion(f.as_raw_fd(), &mut v) }.map_err(|source| SysError::Nix {
        step: "FS_IOC_GETVERSION",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(v as u32)
}

/// dm target types that may sit between the top device and /data: the
/// metadata-encryption layers (vold's dm-default-key, or dm-crypt).
pub const CRYPT_TARGETS: [&str; 2] = ["crypt", "default-key"];

/// One line of a dm table as the kernel prints it: (start, length, target
/// type, parameters). A crypt line's parameters carry the key: they are
/// parsed here and never logged or stored.
pub type RawLine = (u64, u64, String, String);

/// Checks that `upper` (what /data is mounted from) is a dm crypt layer
/// directly on the top device and maps it 1:1, so FIEMAP offsets of the
/// upper filesystem are offsets on the top device. Returns the target
/// type. Messages name what was found but never a table's parameters.
pub fn check_crypt_layer(
    top: Device,
    top_kname: &str,
    top_size: u64,
    upper: &BlockInfo,
    lines: &[RawLine],
) -> Result<&'static str, String> {
    let name = upper.dm_name.as_deref().ok_or_else(|| format!("{} is not a device-mapper device", upper.kname))?;
    if upper.slaves != [top_kname] {
        return Err(format!("{name} ({}) sits on {:?}, not only on {top_kname}", upper.kname, upper.slaves));
    }
    if upper.size_bytes != top_size {
        return Err(format!("{name} is {} bytes, the top device {top_size}", upper.size_bytes));
    }
    let [(start, len, kind, params)] = lines else {
        return Err(format!("{name} has {} table lines, not one", lines.len()));
    };
    let Some(kind) = CRYPT_TARGETS.iter().find(|k| **k == kind.as_str()) else {
        return Err(format!("{name} is a '{kind}' device, not {}", CRYPT_TARGETS.join(" or ")));
    };
    if *start != 0 || len.saturating_mul(512) != top_size {
        return Err(format!("{name}'s {kind} line covers sectors {start}+{len}, not the whole top device"));
    }
    // crypt and default-key alike: <cipher> <key> <iv_offset> <dev> <start> [<#opt> <opts>...]
    let words: Vec<&str> = params.split_whitespace().collect();
    let (dev, offset) = match (words.get(3), words.get(4)) {
        (Some(d), Some(o)) => (*d, *o),
        _ => return Err(format!("{name}'s {kind} line has {} parameters, fewer than 5", words.len())),
    };
    if dev.parse::<Device>().ok() != Some(top) {
        return Err(format!("{name}'s {kind} line maps device {dev}, not the top device {top}"));
    }
    if offset != "0" {
        return Err(format!("{name}'s {kind} line starts at sector {offset} of the top device, not 0"));
    }
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOP: Device = Device { major: 254, minor: 0 };

    fn upper() -> BlockInfo {
        BlockInfo {
            kname: "dm-3".into(),
            size_bytes: 1 << 30,
            slaves: vec!["dm-0".into()],
            dm_name: Some("userdata".into()),
        }
    }
    fn line(kind: &str, params: &str) -> Vec<RawLine> {
        vec![(0, (1 << 30) / 512, kind.into(), params.into())]
    }
    const KEY: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn accepts_crypt_and_default_key_over_the_top_device() {
        let p = format!("aes-xts-plain64 {KEY} 0 254:0 0");
        assert_eq!(check_crypt_layer(TOP, "dm-0", 1 << 30, &upper(), &line("crypt", &p)), Ok("crypt"));
        let p = format!("aes-xts-plain64 {KEY} 0 254:0 0 3 allow_discards sector_size:4096 iv_large_sectors");
        assert_eq!(check_crypt_layer(TOP, "dm-0", 1 << 30, &upper(), &line("crypt", &p)), Ok("crypt"));
        let p = format!("aes-xts-plain64 {KEY} 0 254:0 0 1 wrappedkey_v0");
        assert_eq!(check_crypt_layer(TOP, "dm-0", 1 << 30, &upper(), &line("default-key", &p)), Ok("default-key"));
    }

    #[test]
    fn refuses_other_stacks_without_printing_the_key() {
        let good = format!("aes-xts-plain64 {KEY} 0 254:0 0");
        let cases: Vec<(BlockInfo, Vec<RawLine>, &str)> = vec![
            (BlockInfo { dm_name: None, ..upper() }, line("crypt", &good), "not a device-mapper"),
            (BlockInfo { slaves: vec!["dm-1".into()], ..upper() }, line("crypt", &good), "sits on"),
            (BlockInfo { slaves: vec!["dm-0".into(), "vdc".into()], ..upper() }, line("crypt", &good), "sits on"),
            (BlockInfo { size_bytes: 1 << 29, ..upper() }, line("crypt", &good), "bytes"),
            (upper(), line("linear", "254:0 0"), "'linear'"),
            (upper(), line("crypt", &format!("aes-xts-plain64 {KEY} 0 254:1 0")), "maps device"),
            (upper(), line("crypt", &format!("aes-xts-plain64 {KEY} 0 254:0 8")), "sector 8"),
            (upper(), line("crypt", &format!("aes-xts-plain64 {KEY} 0")), "fewer than 5"),
            (
                upper(),
                vec![(0, 8, "crypt".into(), good.clone()), (8, 16, "crypt".into(), good.clone())],
                "2 table lines",
            ),
            (upper(), vec![(8, (1 << 30) / 512, "crypt".into(), good.clone())], "covers"),
        ];
        for (info, lines, want) in cases {
            let e = check_crypt_layer(TOP, "dm-0", 1 << 30, &info, &lines).expect_err(want);
            assert!(e.contains(want), "{e} should say {want}");
            assert!(!e.contains(KEY), "{e} leaks the key");
        }
    }

    #[test]
    fn sysfs_entries_are_read() {
        let d = tempfile::tempdir().expect("tmp");
        let dir = d.path().join("dev/block/254:3");
        std::fs::create_dir_all(dir.join("slaves/dm-0")).expect("mkdir");
        std::fs::create_dir_all(dir.join("dm")).expect("mkdir");
        std::fs::write(dir.join("uevent"), "MAJOR=254\nMINOR=3\nDEVNAME=dm-3\nDEVTYPE=disk\n").expect("w");
        std::fs::write(dir.join("size"), "2097152\n").expect("w");
        std::fs::write(dir.join("dm/name"), "userdata\n").expect("w");
        let i = block_info(d.path(), Device { major: 254, minor: 3 }).expect("info");
        assert_eq!(
            i,
            BlockInfo {
                kname: "dm-3".into(),
                size_bytes: 1 << 30,
                slaves: vec!["dm-0".into()],
                dm_name: Some("userdata".into())
            }
        );
        std::fs::write(dir.join("uevent"), "MAJOR=254\n").expect("w");
        assert!(block_info(d.path(), Device { major: 254, minor: 3 }).is_err());
        assert!(block_info(d.path(), Device { major: 8, minor: 0 }).is_err());
    }

    /// O_DIRECT reads of unaligned ranges return the right bytes (on a
    /// plain file; tmpfs refuses O_DIRECT, then the test says so).
    #[test]
    fn direct_reads_and_zeroing() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("dev");
        let data: Vec<u8> = (0..3 * ALIGN).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).expect("w");
        let dev = match DirectDev::open(&p) {
            Ok(dev) => dev,
            Err(e) => {
                eprintln!("no O_DIRECT here ({e}); skipped");
                return;
            }
        };
        let mut b = [0u8; 96];
        dev.read_at_exact(&mut b, 4090).expect("read");
        assert_eq!(&b[..], &data[4090..4186]);
        let mut past = [0u8; 16];
        assert!(dev.read_at_exact(&mut past, 3 * ALIGN as u64).is_err());
    }
}
