//! Host programs the harness and the guest kit need: finding them, their
//! shared libraries (ldd), and installing the Debian packages that provide
//! them when they are missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("Missing host programs {programs:?}; run: {install_line}")]
    Missing { programs: Vec<String>, install_line: String },
    #[error("Installing {packages:?} failed; run: {install_line}")]
    InstallFailed { packages: Vec<String>, install_line: String },
    #[error("Cannot run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed { command: String, status: String, stderr: String },
}

/// Program -> the Debian package that provides it.
pub const HOST_PROGRAMS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("busybox", "busybox-static"),
    ("dash", "dash"),
    ("mkfs.ext4", "e2fsprogs"),
    ("e2fsck", "e2fsprogs"),
    ("tune2fs", "e2fsprogs"),
    ("dumpe2fs", "e2fsprogs"),
    ("filefrag", "e2fsprogs"),
    ("chattr", "e2fsprogs"),
    ("lsattr", "e2fsprogs"),
    ("mkfs.f2fs", "f2fs-tools"),
    ("fsck.f2fs", "f2fs-tools"),
    ("dmsetup", "dmsetup"),
    ("getfattr", "attr"),
    ("setfattr", "attr"),
    ("depmod", "kmod"),
    ("strip", "binutils"),
    ("xz", "xz-utils"),
    ("dpkg", "dpkg"),
    ("apt-get", "apt"),
];

/// Programs copied into the guest (with their libraries), beside busybox.
pub const GUEST_TOOLS: &[&str] = &[
    "mkfs.ext4",
    "e2fsck",
    "tune2fs",
    "dumpe2fs",
    "filefrag",
    "chattr",
    "lsattr",
    "mkfs.f2fs",
    "fsck.f2fs",
    "dmsetup",
    "getfattr",
    "setfattr",
];

const SEARCH_DIRS: &[&str] = &["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// Finds a program in PATH or the usual sbin directories (root's tools are
/// often not on a user's PATH).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path_var).collect();
    dirs.extend(SEARCH_DIRS.iter().map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The exact line a person should run to install `packages`.
pub fn install_line(packages: &[String]) -> String {
    let sudo = if is_root() { "" } else { "sudo " };
    format!("{sudo}apt-get install -y --no-install-recommends {}", packages.join(" "))
}

/// Makes sure every host program is there: installs the missing packages
/// when running as root, else stops with the command to run. Checked once
/// per process.
pub fn ensure_host_programs() -> Result<(), HostError> {
    static CHECKED: OnceLock<()> = OnceLock::new();
    if CHECKED.get().is_some() {
        return Ok(());
    }
    let missing: Vec<(&str, &str)> =
        HOST_PROGRAMS.iter().copied().filter(|(prog, _)| find_program(prog).is_none()).collect();
    if !missing.is_empty() {
        let mut packages: Vec<String> = missing.iter().map(|(_, pkg)| pkg.to_string()).collect();
        packages.sort();
        packages.dedup();
        let line = install_line(&packages);
        if !is_root() {
            return Err(HostError::Missing {
                programs: missing.iter().map(|(p, _)| p.to_string()).collect(),
                install_line: line,
            });
        }
        eprintln!("rewind-harness: installing missing host packages: {}", packages.join(" "));
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&packages)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        // A fresh machine may have no package lists yet: update once and retry.
        let ok = install()
            || (Command::new("apt-get").args(["update", "-qq"]).status().map(|s| s.success()).unwrap_or(false)
                && install());
        if !ok {
            return Err(HostError::InstallFailed { packages, install_line: line });
        }
    }
    let _ = CHECKED.set(());
    Ok(())
}

/// Runs a command, returning stdout; a non-zero exit is an error carrying
/// stderr.
pub fn run(cmd: &mut Command) -> Result<String, HostError> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| HostError::Spawn { command: command.clone(), source })?;
    if !out.status.success() {
        return Err(HostError::CommandFailed {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Shared libraries (and the dynamic loader) a binary needs, as absolute
/// host paths; empty for a static binary.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, HostError> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|source| HostError::Spawn { command: format!("ldd {}", binary.display()), source })?;
    // ldd exits 1 for static binaries ("not a dynamic executable").
    Ok(parse_ldd(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses ldd output: `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x..)`
/// and `/lib64/ld-linux-x86-64.so.2 (0x..)`; the vdso has no file.
pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let candidate = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = candidate {
            if p.starts_with('/') && !libs.iter().any(|l: &PathBuf| l == Path::new(p)) {
                libs.push(PathBuf::from(p));
            }
        }
    }
    libs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_is_parsed() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
            \tlibdevmapper.so.1.02.1 => /lib/x86_64-linux-gnu/libdevmapper.so.1.02.1 (0x00007f)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n\
            \tlibmissing.so => not found\n";
        assert_eq!(
            parse_ldd(text),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libdevmapper.so.1.02.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tnot a dynamic executable\n").is_empty());
    }

    #[test]
    fn install_line_names_every_package() {
        let line = install_line(&["attr".into(), "kmod".into()]);
        assert!(line.ends_with("apt-get install -y --no-install-recommends attr kmod"), "{line}");
    }
}
