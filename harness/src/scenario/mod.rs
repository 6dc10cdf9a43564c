//! Scenarios: written once, run by thin `#[test]`s (tests/) and by the CLI
//! alike.
//!
//! A scenario is a function over a [`Ctx`] (a `Target` plus the report).
//! It boots with plans, runs commands, and records checks; a check that
//! fails does not stop the scenario unless it is a `require`. To add one:
//!
//! ```ignore
//! fn my_scenario(cx: &mut Ctx) -> Result<(), ScenarioError> {
//!     cx.boot(&BootPlan::raw())?;
//!     let out = cx.exec_checked("cat /proc/mounts")?;
//!     cx.check("data is mounted", out.contains(" /data "), "/proc/mounts");
//!     cx.shutdown()?;
//!     Ok(())
//! }
//! // and one line in `builtin::REGISTRY` (issue 4's outcomes: `e2e::E2E`):
//! Scenario { name: "my-scenario", summary: "...", needs_daemon: false, run: my_scenario },
//! ```
//! and a thin test in tests/ (`guest_` prefix: nextest's guest group):
//! ```ignore
//! #[test]
//! fn guest_my_outcome_holds() { rewind_e2e::run("my-scenario"); }
//! ```

pub mod builtin;
pub mod checks;
pub mod device;
pub mod e2e;
pub mod encrypted;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::failure::BootEnd;
use crate::guest::{GuestConfig, QemuGuest};
use crate::manifest::{Manifest, ManifestError};
use crate::plan::{BootPlan, FsType};
use crate::report::{Check, ScenarioReport};
use crate::target::{BootRecord, ExecOutput, Target, TargetError};

pub use builtin::REGISTRY;

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

/// A registered scenario.
#[derive(Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    pub summary: &'static str,
    /// Needs a working rewindd (issue 4 scenarios).
    pub needs_daemon: bool,
    pub run: fn(&mut Ctx) -> Result<(), ScenarioError>,
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario").field("name", &self.name).finish()
    }
}

/// Every registered scenario: the harness's own and rewindd's (builtin),
/// then issue 4's end-to-end outcomes (e2e).
pub fn all() -> impl Iterator<Item = &'static Scenario> {
    REGISTRY.iter().chain(e2e::E2E.iter()).chain(device::DEVICE.iter()).chain(encrypted::ENCRYPTED.iter())
}

pub fn find(name: &str) -> Option<&'static Scenario> {
    all().find(|s| s.name == name)
}

/// How to run a scenario (the CLI's flags; tests use the defaults).
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub fs: FsType,
    pub keep: bool,
    pub baseline: Option<PathBuf>,
    pub workload: Option<PathBuf>,
    pub guest_tools: Vec<PathBuf>,
    pub userdata_mib: Option<u64>,
    /// Stack a dm-crypt layer under /data in the guest (Android's metadata
    /// encryption; ext4 only). The `metadata-encryption*` scenarios force it.
    pub metadata_encryption: bool,
    /// Narrate each step (the demo).
    pub narrate: bool,
    /// Restrict the QEMU guest to what a physical device with
    /// `ro.rewind.defer_commit=true` can do (`device::profile`); the
    /// `device-*` scenarios force it.
    pub device_profile: bool,
}

/// What a scenario sees: the target and its report.
pub struct Ctx<'a> {
    pub target: &'a mut dyn Target,
    pub report: ScenarioReport,
    pub options: Options,
}

impl<'a> Ctx<'a> {
    pub fn new(target: &'a mut dyn Target, scenario: &str, options: Options) -> Self {
        let report = ScenarioReport::new(scenario, &target.describe(), target.fs().as_str());
        Ctx { target, report, options }
    }

    /// A line for people, when narrating (the demo) or always to stderr.
    pub fn say(&self, text: &str) {
        if self.options.narrate {
            println!("==> {text}");
        } else {
            eprintln!("[{}] {text}", self.report.scenario);
        }
    }

    /// Records a check; returns whether it passed.
    pub fn check(&mut self, name: &str, passed: bool, detail: impl Into<String>) -> bool {
        let detail = detail.into();
        eprintln!(
            "[{}] check {}: {name}{}",
            self.report.scenario,
            if passed { "ok" } else { "FAILED" },
            if detail.is_empty() { String::new() } else { format!(" ({})", first_lines(&detail, 3)) }
        );
        if self.options.narrate {
            println!("    [{}] {name}", if passed { "ok" } else { "FAIL" });
        }
        self.report.checks.push(Check { name: name.to_string(), passed, detail });
        passed
    }

    pub fn check_eq<T: PartialEq + std::fmt::Debug>(&mut self, name: &str, expected: T, actual: T) -> bool {
        let passed = expected == actual;
        let detail = if passed { format!("{actual:?}") } else { format!("expected {expected:?}, got {actual:?}") };
        self.check(name, passed, detail)
    }

    /// A check the rest of the scenario depends on: stops it when it fails.
    pub fn require(&mut self, name: &str, passed: bool, detail: impl Into<String>) -> Result<(), ScenarioError> {
        let detail = detail.into();
        if self.check(name, passed, detail.clone()) {
            Ok(())
        } else {
            Err(ScenarioError::Required { name: name.to_string(), detail })
        }
    }

    pub fn boot(&mut self, plan: &BootPlan) -> Result<BootRecord, ScenarioError> {
        Ok(self.target.boot(plan)?)
    }

    /// Boots a plan that must reach `ready`.
    pub fn boot_ready(&mut self, plan: &BootPlan) -> Result<BootRecord, ScenarioError> {
        let rec = self.target.boot(plan)?;
        let index = rec.index;
        self.require(
            &format!("boot {index} reaches ready"),
            rec.is_ready(),
            format!("last stage {}, ended {:?}, guest errors {:?}", rec.last_stage(), rec.ended, rec.errors),
        )?;
        Ok(rec)
    }

    /// Boots a plan with a failure and checks that the host saw it end the
    /// way it was made to.
    pub fn boot_expect_end(&mut self, plan: &BootPlan, expected: BootEnd) -> Result<BootRecord, ScenarioError> {
        let rec = self.target.boot(plan)?;
        let ended = rec.ended.clone();
        self.check(
            &format!(
                "boot {} ({}) is observed as {expected}",
                rec.index,
                rec.failure.as_deref().unwrap_or("no failure")
            ),
            ended.as_ref() == Some(&expected),
            format!(
                "ended: {}; last stage {}; {:.1} s",
                ended.map(|e| e.to_string()).unwrap_or_else(|| "still running".into()),
                rec.last_stage(),
                rec.duration_ms as f64 / 1000.0
            ),
        );
        Ok(rec)
    }

    pub fn exec(&mut self, command: &str) -> Result<ExecOutput, ScenarioError> {
        Ok(self.target.exec(command)?)
    }

    pub fn exec_checked(&mut self, command: &str) -> Result<String, ScenarioError> {
        Ok(self.target.exec_checked(command)?)
    }

    pub fn shutdown(&mut self) -> Result<BootRecord, ScenarioError> {
        let rec = self.target.shutdown()?;
        self.check_eq(
            &format!("boot {} powers off cleanly", rec.index),
            Some(BootEnd::CleanShutdown),
            rec.ended.clone(),
        );
        Ok(rec)
    }

    /// Runs the scenario's baseline script on /data.
    pub fn run_baseline(&mut self) -> Result<(), ScenarioError> {
        self.run_baseline_in(crate::plan::DEFAULT_DATA_DIR)
    }

    /// Runs the scenario's baseline script on `dir` (`REWIND_DATA`).
    pub fn run_baseline_in(&mut self, dir: &str) -> Result<(), ScenarioError> {
        let script = self.target.baseline_script();
        let out = self.exec(&format!("REWIND_DATA={} sh {script}", crate::plan::shell_quote(dir)))?;
        self.require("baseline script succeeds", out.success(), first_lines(&out.stderr, 5))
    }

    /// Checks that `after` has exactly `before`'s entries (contents, modes,
    /// owners, links, xattrs); the detail names the first differences.
    pub fn same_manifest(&mut self, name: &str, before: &Manifest, after: &Manifest) -> bool {
        let d = crate::manifest::diff(before, after);
        let detail = if d.is_empty() {
            format!("{} entries, {} files", after.entries.len(), after.files())
        } else {
            d.summary(10)
        };
        self.check(name, d.is_empty(), detail)
    }

    /// Checks that `after` differs from `before` (the attempt really
    /// changed the data); the detail counts what changed.
    pub fn changed_manifest(&mut self, name: &str, before: &Manifest, after: &Manifest) -> bool {
        let d = crate::manifest::diff(before, after);
        self.check(name, !d.is_empty(), d.counts())
    }

    /// gRPC client of rewindd in the running guest (host side, through the
    /// forwarded port).
    pub fn grpc(&mut self) -> Result<crate::grpc::Grpc, ScenarioError> {
        let endpoint = self.target.grpc_endpoint().ok_or(TargetError::NotRunning)?;
        Ok(crate::grpc::Grpc::connect(&endpoint, Duration::from_secs(30))?)
    }

    /// Manifest of a guest directory (by the guest's rewind-manifest).
    pub fn manifest(&mut self, root: &str) -> Result<Manifest, ScenarioError> {
        checks::manifest(self.target, root, &[])
    }
}

fn first_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.trim().lines().take(n).collect();
    lines.join(" | ")
}

/// Errors of running a scenario by name.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Scenario(#[from] Box<ScenarioError>),
    #[error("Starting the QEMU guest for {scenario}")]
    Guest {
        scenario: String,
        #[source]
        source: Box<TargetError>,
    },
}

/// Runs a registered scenario on a fresh QEMU guest and returns its report.
/// On failure the last boot's console is printed between `==== console`
/// markers. The report is returned whether the scenario passed or not.
pub fn run(name: &str, options: &Options) -> Result<ScenarioReport, RunError> {
    let scenario = find(name).ok_or_else(|| Box::new(ScenarioError::Unknown(name.to_string())))?;
    let mut options = options.clone();
    options.metadata_encryption |= encrypted::needs_metadata_encryption(name);
    options.device_profile |= device::needs_device_profile(name);
    run_fn(name, &options, scenario.run)
}

/// Runs any scenario body (a closure) on a fresh QEMU guest configured from
/// `options`, with the same report, teardown and console dump as `run`:
/// for tests that keep their scenario next to them.
pub fn run_fn(
    name: &str,
    options: &Options,
    body: impl FnOnce(&mut Ctx) -> Result<(), ScenarioError>,
) -> Result<ScenarioReport, RunError> {
    let started = Instant::now();
    let mut cfg = GuestConfig::new(name)
        .with_fs(options.fs)
        .with_baseline(options.baseline.clone())
        .with_workload(options.workload.clone())
        .keep(options.keep);
    if let Some(mib) = options.userdata_mib {
        cfg = cfg.with_userdata_mib(mib);
    }
    for t in &options.guest_tools {
        cfg = cfg.with_guest_tool(t.clone());
    }
    if options.metadata_encryption {
        cfg = cfg.with_metadata_encryption();
    }
    let mut guest = QemuGuest::new(cfg)
        .map_err(|source| RunError::Guest { scenario: name.to_string(), source: Box::new(source) })?;
    eprintln!("[{name}] on {} (run dir {})", guest.describe(), guest.artifacts_dir().display());
    let mut report = {
        let mut profiled;
        let target: &mut dyn Target = if options.device_profile {
            profiled = crate::device::profile::DeviceProfile::new(
                &mut guest,
                crate::device::profile::Capabilities::PHYSICAL_DEFER_COMMIT,
            );
            &mut profiled
        } else {
            &mut guest
        };
        let mut cx = Ctx::new(target, name, options.clone());
        // A panic inside a scenario is a failed scenario, with its console.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&mut cx)));
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => cx.report.error = Some(error_chain(&e)),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                cx.report.error = Some(format!("scenario panicked: {msg}"));
            }
        }
        cx.report
    };
    // Whatever happened, the guest goes down before the report is final.
    if guest.boots().last().is_some_and(|b| b.ended.is_none()) {
        let _ = guest.power_cut();
    }
    report.boots = guest.boots().to_vec();
    report.duration_ms = started.elapsed().as_millis() as u64;
    report.finish();
    if options.keep {
        let dir = guest.artifacts_dir();
        report.images = ["userdata.img", "metadata.img"].iter().map(|n| dir.join(n)).collect();
        report.artifacts = Some(dir);
    }
    if !report.passed {
        eprint!("{}", guest.framed_console());
    }
    Ok(report)
}

/// "message: cause: cause" for one-line reports.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s += &format!(": {cause}");
        src = cause.source();
    }
    s
}

/// Time a closure (for measurements printed in reports).
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}
