//! Where the harness keeps things on the host. Everything fetched or built
//! lives under the workspace's `target/` so it is never committed and a
//! `cargo clean` resets it.

use std::path::PathBuf;

/// The workspace root (the directory holding the top Cargo.toml).
pub fn workspace_root() -> PathBuf {
    // harness/ is one level below the root; resolved at compile time so the
    // CLI works from any working directory.
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Cargo's target directory (`CARGO_TARGET_DIR` wins, as cargo does it).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join("target"),
    }
}

/// The guest kit cache: `target/rewind-kit/` unless `REWIND_KIT_DIR` says
/// otherwise.
pub fn kit_dir() -> PathBuf {
    match std::env::var_os("REWIND_KIT_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => target_dir().join("rewind-kit"),
    }
}

/// Where cargo puts the workspace's static binaries (`.cargo/config.toml`
/// sets an explicit target so crt-static applies).
pub fn bin_dir() -> PathBuf {
    target_dir().join("x86_64-unknown-linux-gnu").join("debug")
}

/// Directory for scenario runs kept with `--keep` (and for temp dirs, so
/// they sit on the same filesystem as the kit).
pub fn runs_dir() -> PathBuf {
    kit_dir().join("runs")
}

/// The machine-wide guest slots (at most two guests at a time on these
/// 2-core machines, whichever checkout or runner starts them):
/// `REWIND_SLOT_DIR`, else `/tmp/rewind-guest-slots`, shared by every
/// clone and worktree on the machine.
pub fn slots_dir() -> PathBuf {
    match std::env::var_os("REWIND_SLOT_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => std::env::temp_dir().join("rewind-guest-slots"),
    }
}
