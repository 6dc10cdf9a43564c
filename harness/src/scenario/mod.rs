//! Scenarios: written once, run by thin `#[test]`s (tests/) and by the CLI
//! alike, on any [`Target`] through one run loop ([`run_on`]).
//!
//! A scenario is a function over a [`Ctx`] (a `Target` plus the report).
//! It boots with plans, runs commands, and records checks; a check that
//! fails does not stop the scenario unless it is a `require`. What it needs
//! from its machine (rewindd, a filesystem, the crypt layer, the device
//! profile, ...) is its [`Needs`], a field, never derived from its name.
//! To add one:
//!
//! ```ignore
//! fn my_scenario(cx: &mut Ctx) -> Result<(), ScenarioError> {
//!     cx.boot_ready(&BootPlan::rewind())?;
//!     checks::start(cx, 2, "my scenario")?;
//!     let out = cx.exec_checked("cat /proc/mounts")?;
//!     cx.check("data is mounted", out.contains(" /data "), "/proc/mounts");
//!     cx.shutdown()?;
//!     Ok(())
//! }
//! // and one entry in the registry of the file it belongs to (see `all`):
//! Scenario { name: "my-scenario", summary: "...", needs: Needs::DAEMON, run: my_scenario },
//! ```
//! Witnesses shared by scenarios (manifests, fsck, the dm stack, rewindd's
//! status and history, ...) are in [`checks`], one helper per job. A thin
//! test in tests/ (`guest_` prefix: nextest's guest group) names it:
//! ```ignore
//! #[test]
//! fn guest_my_outcome_holds() { rewind_e2e::run("my-scenario"); }
//! ```

pub mod builtin;
pub mod checks;
mod ctx;
pub mod daemon;
pub mod device;
pub mod e2e;
pub mod encrypted;
pub mod f2fs;
mod needs;
pub mod pace;
mod run;
pub mod vold;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::manifest::ManifestError;
use crate::plan::FsType;
use crate::target::TargetError;

pub use builtin::REGISTRY;
pub use ctx::Ctx;
pub use needs::{Needs, Scripts};
pub use rewind_daemon::types::error_chain;
pub use run::{run, run_on, run_scenario, RunError};

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("Reading the manifest from the guest")]
    Manifest(#[from] ManifestError),
    #[error("Required check failed: {name}: {detail}")]
    Required { name: String, detail: String },
    #[error("Talking to rewindd over gRPC")]
    Grpc(#[from] crate::grpc::GrpcError),
    #[error("Unknown scenario {0:?} (see `rewind-harness scenario --list`)")]
    Unknown(String),
}

impl ScenarioError {
    /// Something the target printed or left that a witness cannot read.
    pub fn other(msg: impl Into<String>) -> Self {
        ScenarioError::Target(TargetError::Other(msg.into()))
    }
}

/// A registered scenario.
#[derive(Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    pub summary: &'static str,
    /// What it needs from its machine; `run` builds the guest for it.
    pub needs: Needs,
    pub run: fn(&mut Ctx) -> Result<(), ScenarioError>,
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario").field("name", &self.name).field("needs", &self.needs).finish()
    }
}

/// Every registered scenario: the harness's own and rewindd's (builtin),
/// issue 4's end-to-end outcomes (e2e), the device-capable ones, metadata
/// encryption, then rewindd's core (daemon), f2fs mode (f2fs) and what
/// Android's callers of vold see (vold).
pub fn all() -> impl Iterator<Item = &'static Scenario> {
    REGISTRY
        .iter()
        .chain(e2e::E2E.iter())
        .chain(device::DEVICE.iter())
        .chain(encrypted::ENCRYPTED.iter())
        .chain(daemon::DAEMON.iter())
        .chain(f2fs::F2FS.iter())
        .chain(vold::VOLD.iter())
}

pub fn find(name: &str) -> Option<&'static Scenario> {
    all().find(|s| s.name == name)
}

/// How to run a scenario (the CLI's flags; tests use the defaults). A
/// scenario's [`Needs`] override them where it needs something.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub fs: FsType,
    pub keep: bool,
    pub baseline: Option<PathBuf>,
    pub workload: Option<PathBuf>,
    pub guest_tools: Vec<PathBuf>,
    pub userdata_mib: Option<u64>,
    /// vCPUs of the guest (`--cpus`), default 1.
    pub cpus: Option<u32>,
    /// Stack a dm-crypt layer under /data in the guest (Android's metadata
    /// encryption; ext4 only). Scenarios that need it force it.
    pub metadata_encryption: bool,
    /// Narrate each step (the demo): the steps and the final story on
    /// stdout, no per-check or per-boot log lines.
    pub narrate: bool,
    /// Print the QEMU command line of each boot (--verbose); it is in the
    /// JSON report either way.
    pub verbose: bool,
    /// Restrict the QEMU guest to what a physical device with
    /// `ro.rewind.defer_commit=true` can do (`device::profile`); scenarios
    /// that need it (the `device-*` ones) force it.
    pub device_profile: bool,
    /// Show progress over the boots (`scenario NAME` on the command line):
    /// a bar on a terminal, a line per boot otherwise ([`pace`]).
    pub progress: bool,
    /// The campaign trial to run (`rewind-harness campaign`): the trial
    /// scenario reads its phase and cuts here.
    pub trial: Option<crate::campaign::Trial>,
    /// Where the campaign keeps the old systems its trials start from
    /// (saved by the first trial that booted one; `campaign --fresh` and
    /// everything else: None, every trial boots its own).
    pub old_systems: Option<PathBuf>,
    /// The dm-log-writes run (`rewind-harness log-writes`): its phase,
    /// points and where its log is kept.
    pub log_writes: Option<crate::logwrites::Config>,
    /// Follow rewindd's WatchStatus during each boot and put the samples in
    /// the report (asked for by `--report` or `--html`).
    pub sample_status: bool,
}

/// Time a closure (for measurements printed in reports).
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_name_is_unique_and_found() {
        let mut names: Vec<&str> = all().map(|s| s.name).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(n, names.len());
        for s in all() {
            assert!(std::ptr::eq(find(s.name).expect("found"), s), "{} is found by name", s.name);
        }
    }

    #[test]
    fn needs_are_fields_not_names() {
        let needs = |name| find(name).expect(name).needs;
        assert!(
            needs("metadata-encryption").metadata_encryption && needs("metadata-encryption-commit").metadata_encryption
        );
        assert!(all().filter(|s| s.needs.device_profile).all(|s| s.name.starts_with("device-")));
        assert_eq!(all().filter(|s| s.needs.device_profile).count(), device::DEVICE.len());
        assert!(!needs("three-failed-boots").device_profile && !needs("three-failed-boots").metadata_encryption);
        assert!(f2fs::F2FS
            .iter()
            .all(|s| s.needs.fs == Some(FsType::F2fs) && (s.needs.daemon || s.name == "guest-f2fs-bench")));
        assert!(!needs("dm-witness").daemon && needs("abort").daemon);
    }
}
