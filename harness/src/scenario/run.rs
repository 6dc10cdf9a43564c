//! The one run loop ([`run_on`]): any scenario on any [`Target`] (the QEMU
//! guest, the device profile over it, an adb device, Cuttlefish), with the
//! same report, teardown and console dump. [`run`] builds the QEMU guest a
//! scenario needs and hands it to the loop.

use std::path::PathBuf;
use std::time::Instant;

use crate::device::profile::{Capabilities, DeviceProfile};
use crate::guest::{GuestConfig, QemuGuest};
use crate::report::ScenarioReport;
use crate::target::{io_err, Target, TargetError};

use super::{error_chain, find, Ctx, Options, Scenario, ScenarioError};

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
    #[error("Scenario {scenario} needs {tool} on the host (it goes into the guest with its libraries): install it")]
    MissingTool { scenario: String, tool: &'static str },
}

/// Runs `scenario` on `target` and returns its report, passed or not. A
/// panic inside the scenario is a failed scenario. When the scenario is
/// over the target makes its boot records final (`Target::finish_run`);
/// on failure its console is printed between `==== console` markers.
pub fn run_on(target: &mut dyn Target, scenario: &Scenario, options: &Options) -> ScenarioReport {
    if !options.progress {
        return run_loop(target, scenario, options);
    }
    let dir = super::pace::counts_dir();
    let fs = target.fs();
    let total = super::pace::expected_boots(&dir, scenario.name, fs);
    let mut paced = super::pace::Paced::new(target, crate::progress::Progress::maybe_total(total, "boot"));
    let report = run_loop(&mut paced, scenario, options);
    paced.finish();
    // Only a run that went to its end says how many boots the scenario makes.
    if report.passed {
        super::pace::record_boots(&dir, scenario.name, fs, report.boots.len());
    }
    report
}

fn run_loop(target: &mut dyn Target, scenario: &Scenario, options: &Options) -> ScenarioReport {
    let name = scenario.name;
    let started = Instant::now();
    crate::progress::log(&format!(
        "[{name}] on {} (artifacts {})",
        target.describe(),
        target.artifacts_dir().display()
    ));
    let mut report = {
        let mut cx = Ctx::new(target, name, options.clone());
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (scenario.run)(&mut cx)));
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
    target.finish_run();
    report.boots = target.boots().to_vec();
    report.duration_ms = started.elapsed().as_millis() as u64;
    report.finish();
    report.artifacts = target.kept_artifacts();
    if report.artifacts.is_some() {
        report.images = target.disk_images();
    }
    if !report.passed {
        eprint!("{}", target.framed_console());
    }
    report
}

/// Runs a registered scenario on a fresh QEMU guest built for its needs
/// (wrapped in the device profile when it needs that) and returns its
/// report; the guest is torn down (killed, reaped, its run directory
/// removed unless `keep`) before this returns.
pub fn run(name: &str, options: &Options) -> Result<ScenarioReport, RunError> {
    let scenario = find(name).ok_or_else(|| Box::new(ScenarioError::Unknown(name.to_string())))?;
    run_scenario(scenario, options)
}

/// [`run`] for a scenario that is not in the registry (a campaign trial).
pub fn run_scenario(scenario: &Scenario, options: &Options) -> Result<ScenarioReport, RunError> {
    let name = scenario.name;
    let options = scenario.needs.apply(options);
    // The scenario's own scripts, written where the guest copies them from.
    let scripts_dir = match scenario.needs.scripts {
        Some(_) => Some(tempfile::tempdir().map_err(|e| guest_error(name, TargetError::Other(e.to_string())))?),
        None => None,
    };
    let cfg = guest_config(scenario, &options, scripts_dir.as_ref().map(|d| d.path()))?;
    let mut guest = QemuGuest::new(cfg).map_err(|e| guest_error(name, e))?;
    drop(scripts_dir);
    let report = if options.device_profile {
        run_on(&mut DeviceProfile::new(&mut guest, Capabilities::PHYSICAL_DEFER_COMMIT), scenario, &options)
    } else {
        run_on(&mut guest, scenario, &options)
    };
    drop(guest);
    Ok(report)
}

fn guest_error(name: &str, source: TargetError) -> RunError {
    RunError::Guest { scenario: name.to_string(), source: Box::new(source) }
}

/// The guest `options` (needs applied) ask for, with the scenario's own
/// scripts written into `scripts_dir` and its host tools found on PATH.
fn guest_config(
    scenario: &Scenario,
    options: &Options,
    scripts_dir: Option<&std::path::Path>,
) -> Result<GuestConfig, RunError> {
    let name = scenario.name;
    let (mut baseline, mut workload) = (options.baseline.clone(), options.workload.clone());
    if let (Some(s), Some(dir)) = (scenario.needs.scripts, scripts_dir) {
        let write = |file: &str, text: &str| -> Result<PathBuf, RunError> {
            let path = dir.join(file);
            std::fs::write(&path, text).map_err(io_err(&path)).map_err(|e| guest_error(name, e))?;
            Ok(path)
        };
        baseline = Some(write("baseline.sh", s.baseline)?);
        workload = Some(write("workload.sh", s.workload)?);
    }
    let mut cfg =
        GuestConfig::new(name).with_fs(options.fs).with_baseline(baseline).with_workload(workload).keep(options.keep);
    cfg.quiet = options.narrate && !options.verbose;
    cfg.show_command_line = options.verbose || !options.narrate;
    cfg.sample_status = options.sample_status;
    if let Some(mib) = options.userdata_mib {
        cfg = cfg.with_userdata_mib(mib);
    }
    if let Some(n) = options.cpus {
        cfg.cpus = n;
    }
    for t in &options.guest_tools {
        cfg = cfg.with_guest_tool(t.clone());
    }
    for &tool in scenario.needs.guest_tools {
        let path = crate::kit::host::find_program(tool)
            .ok_or_else(|| RunError::MissingTool { scenario: name.to_string(), tool })?;
        cfg = cfg.with_guest_tool(path);
    }
    if options.metadata_encryption {
        cfg = cfg.with_metadata_encryption();
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::adb::{fake_adb, AdbConfig, AdbTarget, NoPowerControl};

    /// A device that cannot do what the scenario asks (a raw boot): the
    /// loop still returns a report, failed, carrying the target's clear
    /// error, and the device's artifacts.
    #[test]
    fn a_refusal_of_the_target_reaches_the_report() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = AdbConfig { artifacts: dir.path().join("artifacts"), ..AdbConfig::default() };
        let mut t = AdbTarget::new(fake_adb(dir.path(), "false"), Box::new(NoPowerControl), cfg).expect("set up");
        t.no_settle();
        let report = run_on(&mut t, find("dm-witness").expect("registered"), &Options::default());
        assert!(!report.passed);
        let err = report.error.clone().unwrap_or_default();
        assert!(err.contains("cannot"), "{err}");
        assert_eq!(report.artifacts, Some(dir.path().join("artifacts")));
        assert!(report.images.is_empty());
    }

    #[test]
    fn a_panicking_scenario_is_a_failed_report_with_its_message() {
        fn panics(_: &mut Ctx) -> Result<(), ScenarioError> {
            panic!("the witness broke");
        }
        let s = Scenario { name: "panics", summary: "", needs: super::super::Needs::NOTHING, run: panics };
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = AdbConfig { artifacts: dir.path().join("artifacts"), ..AdbConfig::default() };
        let mut t = AdbTarget::new(fake_adb(dir.path(), "true"), Box::new(NoPowerControl), cfg).expect("set up");
        let report = run_on(&mut t, &s, &Options::default());
        assert!(!report.passed);
        assert_eq!(report.error.as_deref(), Some("scenario panicked: the witness broke"));
    }

    #[test]
    fn a_scenarios_own_scripts_and_tools_go_into_its_guest() {
        let s = find("custom-scripts").expect("registered");
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = guest_config(s, &s.needs.apply(&Options::default()), Some(dir.path())).expect("config");
        let baseline = std::fs::read_to_string(cfg.baseline.as_ref().expect("baseline")).expect("written");
        assert_eq!(baseline, s.needs.scripts.expect("scripts").baseline);
        assert!(cfg.guest_tools.iter().any(|t| t.ends_with("xz")), "{:?}", cfg.guest_tools);
        let plain = guest_config(find("dm-witness").expect("registered"), &Options::default(), None).expect("config");
        assert_eq!((plain.baseline, plain.guest_tools.len()), (None, 0));
    }
}
