//! The project's own static binaries for the guest: rewindd, rewindctl
//! (rewind-daemon) and rewind-manifest (this crate). Built with cargo when
//! missing or older than their sources, then stripped into the kit cache.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use crate::paths;

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("`{command}` failed and {binary} does not exist")]
    Build { command: String, binary: PathBuf },
    #[error("Stripping {binary}")]
    Strip {
        binary: PathBuf,
        #[source]
        source: super::host::HostError,
    },
    #[error("I/O on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A project binary: cargo package, binary name, source dirs that make it.
pub struct ProjectBinary {
    pub package: &'static str,
    pub name: &'static str,
    pub sources: &'static [&'static str],
}

pub const REWINDD: ProjectBinary =
    ProjectBinary { package: "rewind-daemon", name: "rewindd", sources: &["daemon", "proto", "Cargo.lock"] };
pub const REWINDCTL: ProjectBinary =
    ProjectBinary { package: "rewind-daemon", name: "rewindctl", sources: &["daemon", "proto", "Cargo.lock"] };
pub const MANIFEST: ProjectBinary = ProjectBinary {
    package: "rewind-harness",
    name: "rewind-manifest",
    sources: &["harness/src", "harness/Cargo.toml", "Cargo.lock"],
};

fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if meta.is_dir() {
        std::fs::read_dir(path)
            .ok()?
            .flatten()
            .filter(|e| e.file_name() != "target")
            .filter_map(|e| newest_mtime(&e.path()))
            .max()
    } else {
        meta.modified().ok()
    }
}

fn is_stale(binary: &Path, sources: &[&str]) -> bool {
    let Some(built) = std::fs::metadata(binary).and_then(|m| m.modified()).ok() else {
        return true;
    };
    let root = paths::workspace_root();
    sources.iter().filter_map(|s| newest_mtime(&root.join(s))).any(|src| src > built)
}

/// Path of the up-to-date unstripped binary, building it if needed. When
/// the build fails (someone's work in progress) but an older binary exists,
/// that one is used with a warning: the harness tests must not depend on
/// the daemon compiling at this minute.
pub fn ensure_built(bin: &ProjectBinary) -> Result<PathBuf, ProjectError> {
    let binary = paths::bin_dir().join(bin.name);
    if (std::env::var_os("REWIND_NO_CARGO_BUILD").is_some() || !is_stale(&binary, bin.sources)) && binary.exists() {
        return Ok(binary);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(paths::workspace_root()).args(["build", "-q", "-p", bin.package, "--bin", bin.name]);
    let command = format!("cargo build -p {} --bin {}", bin.package, bin.name);
    eprintln!("rewind-harness: {command}");
    let ok = cmd.status().map(|s| s.success()).unwrap_or(false);
    if !ok {
        if binary.exists() {
            eprintln!("rewind-harness: warning: `{command}` failed; using the existing {}", binary.display());
        } else {
            return Err(ProjectError::Build { command, binary });
        }
    }
    Ok(binary)
}

/// A stripped copy in the kit cache, named by the content hash of the input.
pub fn stripped(kit_dir: &Path, binary: &Path, name: &str) -> Result<PathBuf, ProjectError> {
    let sha = super::file_sha256(binary)
        .map_err(|_| ProjectError::Io { path: binary.to_path_buf(), source: std::io::Error::other("cannot hash") })?;
    let dir = kit_dir.join("bin");
    std::fs::create_dir_all(&dir).map_err(|source| ProjectError::Io { path: dir.clone(), source })?;
    let out = dir.join(format!("{name}-{}", &hex::encode(sha)[..16]));
    if out.exists() {
        return Ok(out);
    }
    // Per-process temporary name: two harness processes (parallel tests)
    // staging the same binary must not strip into, or rename, each
    // other's half-written file.
    let tmp = dir.join(format!("{name}-{}.{}.tmp", &hex::encode(sha)[..16], std::process::id()));
    super::host::run(Command::new("strip").arg("-o").arg(&tmp).arg(binary))
        .map_err(|source| ProjectError::Strip { binary: binary.to_path_buf(), source })?;
    if let Err(source) = std::fs::rename(&tmp, &out) {
        let _ = std::fs::remove_file(&tmp);
        if !out.exists() {
            return Err(ProjectError::Io { path: out.clone(), source });
        }
    }
    Ok(out)
}

/// Built, fresh and stripped, ready for the overlay.
pub fn guest_binary(kit_dir: &Path, bin: &ProjectBinary) -> Result<PathBuf, ProjectError> {
    let built = ensure_built(bin)?;
    stripped(kit_dir, &built, bin.name)
}
