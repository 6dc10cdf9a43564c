//! The guest kernel: Debian's `linux-image-<version>-amd64` package,
//! downloaded with apt-get and unpacked under the kit directory (the host's
//! /boot is never touched). Kept until the package name changes, so a warm
//! cache works offline.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::host::{self, HostError};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("Cannot tell which kernel package linux-image-amd64 depends on, and no kernel is cached in {dir}")]
    Unresolved {
        dir: PathBuf,
        #[source]
        source: Option<HostError>,
    },
    #[error("Downloading kernel package {package}")]
    Download {
        package: String,
        #[source]
        source: HostError,
    },
    #[error("Unpacking {deb} / building modules.dep")]
    Unpack {
        deb: PathBuf,
        #[source]
        source: HostError,
    },
    #[error("Kernel package {package} has no {missing}")]
    Incomplete { package: String, missing: PathBuf },
    #[error("I/O on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KernelError + '_ {
    move |source| KernelError::Io { path: path.to_path_buf(), source }
}

/// An unpacked kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub package: String,
    /// uname -r of the guest, e.g. "6.1.0-56-amd64".
    pub release: String,
    pub root: PathBuf,
    pub vmlinuz: PathBuf,
    /// `<root>/lib/modules/<release>`
    pub modules_dir: PathBuf,
    /// sha256 of the .deb: part of the kit's cache key.
    pub deb_sha256: String,
}

/// The package `linux-image-amd64` depends on, from `apt-cache depends`.
pub fn parse_apt_depends(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && !p.starts_with('<'))
        .map(str::to_string)
}

pub fn release_of(package: &str) -> Option<&str> {
    package.strip_prefix("linux-image-").filter(|r| !r.is_empty())
}

const COMPLETE_MARKER: &str = ".complete";

fn load(dir: &Path, package: &str) -> Result<Option<Kernel>, KernelError> {
    let marker = dir.join(COMPLETE_MARKER);
    let Ok(deb_sha256) = std::fs::read_to_string(&marker) else {
        return Ok(None);
    };
    let release = release_of(package).unwrap_or_default().to_string();
    let vmlinuz = dir.join("boot").join(format!("vmlinuz-{release}"));
    let modules_dir = dir.join("lib/modules").join(&release);
    for p in [&vmlinuz, &modules_dir.join("modules.dep")] {
        if !p.exists() {
            return Err(KernelError::Incomplete { package: package.to_string(), missing: p.clone() });
        }
    }
    Ok(Some(Kernel {
        package: package.to_string(),
        release,
        root: dir.to_path_buf(),
        vmlinuz,
        modules_dir,
        deb_sha256: deb_sha256.trim().to_string(),
    }))
}

/// Cached kernels, newest package name last.
fn cached(kernels_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(kernels_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join(COMPLETE_MARKER).exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Returns the unpacked kernel, downloading it when the wanted package is
/// not cached. `REWIND_KERNEL_PACKAGE` pins a package name.
pub fn ensure(kit_dir: &Path) -> Result<Kernel, KernelError> {
    let kernels_dir = kit_dir.join("kernel");
    // apt-cache takes a second; its answer only changes with the package
    // lists, so it is remembered against their mtime.
    let lists_stamp = std::fs::metadata("/var/lib/apt/lists")
        .and_then(|m| m.modified())
        .map(|t| format!("{t:?}"))
        .unwrap_or_default();
    let resolved_path = kernels_dir.join("resolved");
    let remembered = std::fs::read_to_string(&resolved_path).ok().and_then(|t| {
        let (stamp, pkg) = t.trim().split_once('\t')?;
        (stamp == lists_stamp && kernels_dir.join(pkg).join(COMPLETE_MARKER).exists()).then(|| pkg.to_string())
    });
    let wanted = match std::env::var("REWIND_KERNEL_PACKAGE") {
        Ok(p) if !p.is_empty() => Ok(p),
        _ if remembered.is_some() => Ok(remembered.unwrap_or_default()),
        _ => host::run(Command::new("apt-cache").args(["depends", "linux-image-amd64"])).and_then(|out| {
            parse_apt_depends(&out).ok_or_else(|| HostError::CommandFailed {
                command: "apt-cache depends linux-image-amd64".into(),
                status: "no linux-image-* dependency".into(),
                stderr: out.lines().take(5).collect::<Vec<_>>().join("; "),
            })
        }),
    };
    let package = match wanted {
        Ok(p) => p,
        // Offline (or no package lists): any kernel already cached will do.
        Err(e) => match cached(&kernels_dir).pop() {
            Some(p) => p,
            None => return Err(KernelError::Unresolved { dir: kernels_dir, source: Some(e) }),
        },
    };
    let dir = kernels_dir.join(&package);
    if let Some(k) = load(&dir, &package)? {
        let _ = std::fs::write(&resolved_path, format!("{lists_stamp}\t{package}\n"));
        return Ok(k);
    }
    download(kit_dir, &package)?;
    let _ = std::fs::write(&resolved_path, format!("{lists_stamp}\t{package}\n"));
    load(&dir, &package)?
        .ok_or(KernelError::Incomplete { package: package.clone(), missing: dir.join(COMPLETE_MARKER) })
}

fn download(kit_dir: &Path, package: &str) -> Result<(), KernelError> {
    let release = release_of(package).ok_or_else(|| KernelError::Incomplete {
        package: package.to_string(),
        missing: PathBuf::from("a release in its name"),
    })?;
    let debs = kit_dir.join("debs");
    std::fs::create_dir_all(&debs).map_err(io_err(&debs))?;
    eprintln!("rewind-harness: downloading {package}");
    let find_deb = || {
        std::fs::read_dir(&debs).into_iter().flatten().flatten().map(|e| e.path()).find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
        })
    };
    let deb = match find_deb() {
        Some(deb) => deb,
        None => {
            host::run(Command::new("apt-get").args(["download", "-q", package]).current_dir(&debs))
                .map_err(|source| KernelError::Download { package: package.to_string(), source })?;
            find_deb().ok_or_else(|| KernelError::Incomplete {
                package: package.to_string(),
                missing: debs.join(format!("{package}_*.deb")),
            })?
        }
    };
    let bytes = std::fs::read(&deb).map_err(io_err(&deb))?;
    let sha = hex::encode(Sha256::digest(&bytes));
    let dir = kit_dir.join("kernel").join(package);
    let tmp = kit_dir.join("kernel").join(format!(".{package}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let unpack = |cmd: &mut Command| host::run(cmd).map_err(|source| KernelError::Unpack { deb: deb.clone(), source });
    unpack(Command::new("dpkg").arg("-x").arg(&deb).arg(&tmp))?;
    // Debian builds modules.dep in postinst, which dpkg -x does not run.
    unpack(Command::new("depmod").arg("-b").arg(&tmp).arg(release))?;
    std::fs::write(tmp.join(COMPLETE_MARKER), &sha).map_err(io_err(&tmp))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
    Ok(())
}

/// Offset of the xz stream inside a bzImage.
pub fn xz_offset(bz: &[u8]) -> Option<usize> {
    const MAGIC: &[u8] = b"\xfd7zXZ\x00";
    bz.windows(MAGIC.len()).position(|w| w == MAGIC)
}

/// The uncompressed ELF kernel, for QEMU's PVH entry: it skips the
/// firmware's bzImage path and the in-guest xz decompression, which cost
/// ~3 s of every TCG boot (measured: 6.8 s -> 4.0 s to the first panic).
/// None when the kernel has no PVH entry or cannot be unpacked; the caller
/// then boots the bzImage.
pub fn pvh_vmlinux(kernel: &Kernel) -> Option<PathBuf> {
    let out = kernel.root.join("boot").join(format!("vmlinux-{}.pvh", kernel.release));
    if out.exists() {
        return Some(out);
    }
    let config = std::fs::read_to_string(kernel.root.join("boot").join(format!("config-{}", kernel.release))).ok()?;
    if !config.lines().any(|l| l == "CONFIG_PVH=y") {
        return None;
    }
    let bz = std::fs::read(&kernel.vmlinuz).ok()?;
    let offset = xz_offset(&bz)?;
    let tmp = out.with_extension("tmp");
    let mut child = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(&tmp).ok()?)
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take()?;
        // xz stops at the end of its stream; the bytes after it are not xz.
        let _ = stdin.write_all(&bz[offset..]);
    }
    let ok = child.wait().ok()?.success();
    let elf = std::fs::read(&tmp).ok().is_some_and(|b| b.starts_with(b"\x7fELF"));
    if !(ok && elf) {
        let _ = std::fs::remove_file(&tmp);
        return None;
    }
    std::fs::rename(&tmp, &out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_depends_names_the_versioned_package() {
        let text = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(parse_apt_depends(text).as_deref(), Some("linux-image-6.1.0-56-amd64"));
        assert_eq!(parse_apt_depends("linux-image-amd64\n"), None);
        assert_eq!(release_of("linux-image-6.1.0-56-amd64"), Some("6.1.0-56-amd64"));
    }

    #[test]
    fn xz_stream_is_found_in_a_bzimage() {
        let mut bz = vec![0u8; 100];
        bz.extend_from_slice(b"\xfd7zXZ\x00rest");
        assert_eq!(xz_offset(&bz), Some(100));
        assert_eq!(xz_offset(b"no stream here"), None);
    }
}
