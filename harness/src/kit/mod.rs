//! The guest kit: kernel + an initramfs made of a cached "base" archive
//! (modules, busybox, filesystem and dm tools with their libraries) and a
//! per-run "overlay" archive (project binaries, init, config), concatenated.
//!
//! The base archive is keyed by a hash of everything that goes into it (file
//! contents included), so it is rebuilt exactly when an input changes; a
//! warm cache needs no network.

pub mod cpio;
pub mod host;
pub mod kernel;
pub mod modules;
pub mod project;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use self::cpio::{Archive, CpioError, Node, Source};
use self::host::HostError;
use self::kernel::{Kernel, KernelError};
use self::modules::{ModuleDb, ModuleError};
use crate::lock::{FileLock, LockError};

/// Bumped when the layout of the base archive changes without its inputs.
const KIT_FORMAT: &str = "rewind-kit-v1";

#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("Preparing the guest kernel")]
    Kernel(#[from] KernelError),
    #[error("Selecting kernel modules from {modules_dep}")]
    Modules {
        modules_dep: PathBuf,
        #[source]
        source: ModuleError,
    },
    #[error("Writing initramfs {path}")]
    Cpio {
        path: PathBuf,
        #[source]
        source: CpioError,
    },
    #[error("Host program {0} not found")]
    ProgramNotFound(String),
    #[error("Locking the kit directory")]
    Lock(#[from] LockError),
    #[error("I/O on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Building project binaries")]
    Project(#[from] project::ProjectError),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KitError + '_ {
    move |source| KitError::Io { path: path.to_path_buf(), source }
}

/// A ready guest kit.
#[derive(Debug, Clone)]
pub struct Kit {
    pub dir: PathBuf,
    pub kernel: Kernel,
    pub base_cpio: PathBuf,
    /// What QEMU boots: the PVH vmlinux when there is one, else the bzImage.
    pub boot_kernel: PathBuf,
    /// Hash of the base archive's inputs (its file name carries it).
    pub key: String,
    /// Module paths (relative to lib/modules/<release>) in load order.
    pub modules: Vec<String>,
    /// Guest tools: (name, host path).
    pub tools: Vec<(String, PathBuf)>,
    pub base_entries: usize,
    /// True when the base archive came from the cache.
    pub cached: bool,
    pub elapsed: Duration,
}

impl Kit {
    /// Builds the kit, or returns the cached one. Safe to call from several
    /// processes at once (a file lock serializes the builders).
    pub fn ensure() -> Result<Kit, KitError> {
        Self::ensure_in(&crate::paths::kit_dir())
    }

    pub fn ensure_in(dir: &Path) -> Result<Kit, KitError> {
        let started = Instant::now();
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let _lock = FileLock::exclusive(&dir.join("build.lock"))?;
        host::ensure_host_programs()?;
        let kernel = kernel::ensure(dir)?;
        let (archive, modules, tools) = base_archive(&kernel)?;
        let memo_path = dir.join("hash-memo.tsv");
        let mut memo = HashMemo::load(&memo_path);
        let key = archive_key_with(&archive, &kernel, &mut |p| memo.sha256(p))?;
        memo.save(&memo_path);
        let base_cpio = dir.join(format!("base-{}.cpio", &key[..16]));
        let cached = base_cpio.exists();
        if !cached {
            archive.write_file(&base_cpio).map_err(|source| KitError::Cpio { path: base_cpio.clone(), source })?;
            // Old bases are dead weight (tens of MB each).
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("base-") && name.ends_with(".cpio") && p != base_cpio {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        let boot_kernel = kernel::pvh_vmlinux(&kernel).unwrap_or_else(|| kernel.vmlinuz.clone());
        Ok(Kit {
            dir: dir.to_path_buf(),
            boot_kernel,
            kernel,
            base_cpio,
            key,
            modules,
            tools,
            base_entries: archive.len(),
            cached,
            elapsed: started.elapsed(),
        })
    }

    /// Writes `base + overlay` as one initrd file (QEMU takes one).
    pub fn write_initrd(&self, overlay: &Archive, out: &Path) -> Result<(), KitError> {
        let cpio_err = |source| KitError::Cpio { path: out.to_path_buf(), source };
        let mut f = File::create(out).map_err(io_err(out))?;
        let mut base = File::open(&self.base_cpio).map_err(io_err(&self.base_cpio))?;
        std::io::copy(&mut base, &mut f).map_err(io_err(out))?;
        let mut f = overlay.write_to(std::io::BufWriter::new(f)).map_err(cpio_err)?;
        f.flush().map_err(io_err(out))?;
        Ok(())
    }

    /// A human summary (`rewind-harness kit`).
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let size = std::fs::metadata(&self.base_cpio).map(|m| m.len()).unwrap_or(0);
        s += &format!("kit dir:      {}\n", self.dir.display());
        s += &format!("kernel:       {} ({})\n", self.kernel.package, self.kernel.vmlinuz.display());
        s += &format!("boots:        {}\n", self.boot_kernel.display());
        s += &format!(
            "base cpio:    {} ({} entries, {:.1} MiB, {})\n",
            self.base_cpio.display(),
            self.base_entries,
            size as f64 / (1 << 20) as f64,
            if self.cached { "cached" } else { "built now" }
        );
        s += &format!("cache key:    {}\n", self.key);
        s += &format!("modules ({}), load order:\n", self.modules.len());
        for m in &self.modules {
            s += &format!("  {m}\n");
        }
        s += "tools:\n";
        for (name, path) in &self.tools {
            s += &format!("  {name:<10} {}\n", path.display());
        }
        s += &format!("ready in {:.2} s\n", self.elapsed.as_secs_f64());
        s
    }
}

/// Adds a host program and its shared libraries (at their host paths, where
/// the dynamic loader looks for them) to an archive.
pub fn add_program(archive: &mut Archive, guest_path: &str, host_path: &Path) -> Result<(), KitError> {
    let cpio_err = |source| KitError::Cpio { path: host_path.to_path_buf(), source };
    archive.file_from_host(guest_path, host_path, 0o755).map_err(cpio_err)?;
    for lib in host::shared_libraries(host_path)? {
        let name = lib.to_string_lossy().into_owned();
        if !archive.contains(&name) {
            // Follow symlinks on the host; the guest gets a plain file.
            let real = std::fs::canonicalize(&lib).map_err(io_err(&lib))?;
            archive.file_from_host(&name, &real, 0o755).map_err(cpio_err)?;
        }
    }
    Ok(())
}

type BaseParts = (Archive, Vec<String>, Vec<(String, PathBuf)>);

fn base_archive(kernel: &Kernel) -> Result<BaseParts, KitError> {
    let mut a = Archive::new();
    let cpio_err = |source| KitError::Cpio { path: PathBuf::from("base"), source };
    for d in ["proc", "sys", "dev", "run", "tmp", "host", "data", "metadata", "root", "mnt", "etc/rewind"] {
        a.dir(d, 0o755).map_err(cpio_err)?;
    }
    a.dir("tmp", 0o1777).map_err(cpio_err)?;
    // The kernel opens /dev/console for init before devtmpfs is mounted.
    a.char_dev("dev/console", 0o600, 5, 1).map_err(cpio_err)?;
    a.file_bytes("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644).map_err(cpio_err)?;
    a.file_bytes("etc/group", "root:x:0:\n", 0o644).map_err(cpio_err)?;

    // busybox and its applets.
    let busybox = host::find_program("busybox").ok_or_else(|| KitError::ProgramNotFound("busybox".into()))?;
    add_program(&mut a, "bin/busybox", &busybox)?;
    let applets = host::run(Command::new(&busybox).arg("--list-full"))?;
    for applet in applets.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if applet != "bin/busybox" && applet != "linuxrc" {
            a.symlink(applet, "/bin/busybox").map_err(cpio_err)?;
        }
    }

    // /bin/sh is dash, not busybox: Debian's busybox-static shell runs its
    // own applets before anything on PATH, so `xz`, `chattr` or
    // `setfattr` would silently be busybox's, not the real tools (or a
    // --guest-tool). busybox stays as `ash` and for every other applet.
    let dash = host::find_program("dash").ok_or_else(|| KitError::ProgramNotFound("dash".into()))?;
    add_program(&mut a, "bin/dash", &dash)?;
    a.symlink("bin/sh", "/bin/dash").map_err(cpio_err)?;

    // Real tools replace busybox applets of the same name (chattr, ...).
    let mut tools = Vec::new();
    for name in host::GUEST_TOOLS {
        let path = host::find_program(name).ok_or_else(|| KitError::ProgramNotFound(name.to_string()))?;
        // Keep the tool's own name: mkfs.ext4 is a link to mke2fs and
        // decides what it makes from argv[0].
        add_program(&mut a, &format!("usr/sbin/{name}"), &path)?;
        // Drop a same-named busybox link elsewhere on PATH that would win.
        for dir in ["sbin", "bin", "usr/bin"] {
            remove_link(&mut a, &format!("{dir}/{name}"));
        }
        tools.push((name.to_string(), path));
    }
    if Path::new("/etc/mke2fs.conf").exists() {
        a.file_from_host("etc/mke2fs.conf", Path::new("/etc/mke2fs.conf"), 0o644).map_err(cpio_err)?;
    }

    // Kernel modules, in load order.
    let dep_path = kernel.modules_dir.join("modules.dep");
    let builtin_path = kernel.modules_dir.join("modules.builtin");
    let dep = std::fs::read_to_string(&dep_path).map_err(io_err(&dep_path))?;
    let builtin = std::fs::read_to_string(&builtin_path).unwrap_or_default();
    let db = ModuleDb::parse(&dep, &builtin);
    let order = db
        .resolve(modules::REQUIRED_MODULES, modules::OPTIONAL_MODULES)
        .map_err(|source| KitError::Modules { modules_dep: dep_path.clone(), source })?;
    for m in &order {
        let host_path = kernel.modules_dir.join(m);
        a.file_from_host(&format!("lib/modules/{}/{m}", kernel.release), &host_path, 0o644).map_err(cpio_err)?;
    }
    a.file_bytes("etc/rewind/modules", order.join("\n") + "\n", 0o644).map_err(cpio_err)?;
    Ok((a, order, tools))
}

fn remove_link(a: &mut Archive, path: &str) {
    a.remove_if(path, |n| matches!(n, Node::Symlink { .. }));
}

/// Content hashes of host files, remembered by (path, size, mtime, inode):
/// a debug build hashes ~15 MB of kit inputs in over a second, on every
/// guest start. A changed file changes its mtime or size, so it is hashed
/// again.
#[derive(Debug, Default)]
struct HashMemo {
    entries: std::collections::HashMap<String, (String, [u8; 32])>,
    dirty: bool,
}

impl HashMemo {
    fn stamp(path: &Path) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(format!("{}:{}.{}:{}", m.len(), m.mtime(), m.mtime_nsec(), m.ino()))
    }

    fn load(path: &Path) -> Self {
        let mut memo = HashMemo::default();
        for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
            let mut f = line.split('\t');
            if let (Some(p), Some(stamp), Some(sha)) = (f.next(), f.next(), f.next()) {
                let mut bytes = [0u8; 32];
                if hex::decode_to_slice(sha, &mut bytes).is_ok() {
                    memo.entries.insert(p.to_string(), (stamp.to_string(), bytes));
                }
            }
        }
        memo
    }

    fn sha256(&mut self, path: &Path) -> Result<[u8; 32], KitError> {
        let key = path.to_string_lossy().into_owned();
        let stamp = Self::stamp(path);
        if let (Some(stamp), Some((known, sha))) = (&stamp, self.entries.get(&key)) {
            if stamp == known {
                return Ok(*sha);
            }
        }
        let sha = file_sha256(path)?;
        if let Some(stamp) = stamp {
            self.entries.insert(key, (stamp, sha));
            self.dirty = true;
        }
        Ok(sha)
    }

    fn save(&self, path: &Path) {
        if !self.dirty {
            return;
        }
        let mut text = String::new();
        for (p, (stamp, sha)) in &self.entries {
            text += &format!("{p}\t{stamp}\t{}\n", hex::encode(sha));
        }
        let tmp = path.with_extension("tmp");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
}

#[cfg(test)]
fn archive_key(a: &Archive, kernel: &Kernel) -> Result<String, KitError> {
    archive_key_with(a, kernel, &mut |p| file_sha256(p))
}

/// sha256 over the format version, the kernel package and every entry
/// (host files by content).
fn archive_key_with(
    a: &Archive,
    kernel: &Kernel,
    hash: &mut dyn FnMut(&Path) -> Result<[u8; 32], KitError>,
) -> Result<String, KitError> {
    let mut h = Sha256::new();
    h.update(KIT_FORMAT.as_bytes());
    h.update(kernel.package.as_bytes());
    h.update(kernel.deb_sha256.as_bytes());
    for (path, node) in a.iter() {
        h.update(path.as_bytes());
        h.update([0]);
        match node {
            Node::Dir { mode } => h.update(format!("d{mode:o}")),
            Node::Symlink { target } => h.update(format!("l{target}")),
            Node::CharDev { mode, major, minor } => h.update(format!("c{mode:o}:{major}:{minor}")),
            Node::File { mode, source } => {
                h.update(format!("f{mode:o}"));
                match source {
                    Source::Bytes(b) => h.update(b),
                    Source::Host(p) => h.update(hash(p)?),
                }
            }
        }
        h.update([0]);
    }
    Ok(hex::encode(h.finalize()))
}

pub fn file_sha256(path: &Path) -> Result<[u8; 32], KitError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(io_err(path))?;
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(deb: &str) -> Kernel {
        Kernel {
            package: "linux-image-6.1.0-56-amd64".into(),
            release: "6.1.0-56-amd64".into(),
            root: "/k".into(),
            vmlinuz: "/k/boot/vmlinuz".into(),
            modules_dir: "/k/lib/modules/6.1.0-56-amd64".into(),
            deb_sha256: deb.into(),
        }
    }

    #[test]
    fn cache_key_follows_every_input() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("tool");
        std::fs::write(&tool, b"v1").unwrap();
        let mut a = Archive::new();
        a.file_from_host("usr/bin/tool", &tool, 0o755).unwrap();
        a.symlink("bin/sh", "/bin/busybox").unwrap();
        let k1 = archive_key(&a, &kernel("aa")).unwrap();
        assert_eq!(k1, archive_key(&a, &kernel("aa")).unwrap(), "stable for the same inputs");
        assert_ne!(k1, archive_key(&a, &kernel("bb")).unwrap(), "another kernel .deb");
        std::fs::write(&tool, b"v2").unwrap();
        let k2 = archive_key(&a, &kernel("aa")).unwrap();
        assert_ne!(k1, k2, "a tool's content");
        a.symlink("bin/ls", "/bin/busybox").unwrap();
        assert_ne!(k2, archive_key(&a, &kernel("aa")).unwrap(), "a new entry");
        let mut b = a.clone();
        b.file_from_host("usr/bin/tool", &tool, 0o700).unwrap();
        assert_ne!(archive_key(&a, &kernel("aa")).unwrap(), archive_key(&b, &kernel("aa")).unwrap(), "a mode");
    }

    #[test]
    fn hash_memo_rehashes_a_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        let memo_path = dir.path().join("memo.tsv");
        std::fs::write(&f, b"one").unwrap();
        let mut memo = HashMemo::load(&memo_path);
        let one = memo.sha256(&f).unwrap();
        memo.save(&memo_path);
        let mut memo = HashMemo::load(&memo_path);
        assert_eq!(memo.sha256(&f).unwrap(), one, "remembered");
        std::fs::write(&f, b"two!").unwrap();
        assert_ne!(memo.sha256(&f).unwrap(), one, "size/mtime changed: hashed again");
    }
}
