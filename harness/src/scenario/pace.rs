//! Progress over a scenario's boots ("boot 4 of 7, about 40 s left"): a
//! [`Target`] wrapper that tells [`Progress`] when each boot starts. A
//! scenario does not declare how many boots it makes (loops and early
//! stops decide), so the total is the count of its last passing run on
//! this machine (`kit_dir()/boot-counts/`); before one, the lines count
//! the boots without a total or an estimate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::plan::{BootPlan, FsType};
use crate::progress::Progress;
use crate::target::{BootRecord, ExecOutput, Target, TargetError};

/// Where the boot counts of past runs are kept.
pub fn counts_dir() -> PathBuf {
    crate::paths::kit_dir().join("boot-counts")
}

fn count_file(dir: &Path, scenario: &str, fs: FsType) -> PathBuf {
    dir.join(format!("{scenario}-{fs}"))
}

/// The boots the last passing run of `scenario` on `fs` made, if any.
pub fn expected_boots(dir: &Path, scenario: &str, fs: FsType) -> Option<u64> {
    let text = std::fs::read_to_string(count_file(dir, scenario, fs)).ok()?;
    text.trim().parse().ok().filter(|&n| n > 0)
}

/// Remembers a passing run's boots for the next estimate. Best effort: a
/// count that cannot be written only costs the next run its total.
pub fn record_boots(dir: &Path, scenario: &str, fs: FsType, boots: usize) {
    if std::fs::create_dir_all(dir).is_ok() {
        let _ = std::fs::write(count_file(dir, scenario, fs), format!("{boots}\n"));
    }
}

/// What the boot line says about the plan: the failure it injects.
fn describe(plan: &BootPlan) -> String {
    match &plan.failure {
        Some(f) => f.to_string(),
        None => format!("{:?} boot, no failure", plan.mode).to_lowercase(),
    }
}

/// `inner`, with a progress step at each boot.
pub struct Paced<'a> {
    inner: &'a mut dyn Target,
    progress: Progress,
}

impl<'a> Paced<'a> {
    pub fn new(inner: &'a mut dyn Target, progress: Progress) -> Self {
        Paced { inner, progress }
    }

    pub fn finish(self) {
        self.progress.finish();
    }
}

impl Target for Paced<'_> {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn fs(&self) -> FsType {
        self.inner.fs()
    }
    fn boot(&mut self, plan: &BootPlan) -> Result<BootRecord, TargetError> {
        self.progress.begin(&describe(plan));
        self.inner.boot(plan)
    }
    fn exec(&mut self, command: &str) -> Result<ExecOutput, TargetError> {
        self.inner.exec(command)
    }
    fn exec_timeout(&mut self, command: &str, timeout: Duration) -> Result<ExecOutput, TargetError> {
        self.inner.exec_timeout(command, timeout)
    }
    fn exec_checked(&mut self, command: &str) -> Result<String, TargetError> {
        self.inner.exec_checked(command)
    }
    fn power_cut(&mut self) -> Result<BootRecord, TargetError> {
        self.inner.power_cut()
    }
    fn shutdown(&mut self) -> Result<BootRecord, TargetError> {
        self.inner.shutdown()
    }
    fn wait_end(&mut self, timeout: Duration) -> Result<BootRecord, TargetError> {
        self.inner.wait_end(timeout)
    }
    fn boots(&self) -> &[BootRecord] {
        self.inner.boots()
    }
    fn console(&self) -> String {
        self.inner.console()
    }
    fn framed_console(&self) -> String {
        self.inner.framed_console()
    }
    fn grpc_endpoint(&self) -> Option<String> {
        self.inner.grpc_endpoint()
    }
    fn push(&mut self, local: &Path, guest_path: &str) -> Result<(), TargetError> {
        self.inner.push(local, guest_path)
    }
    fn pull(&mut self, guest_path: &str, local: &Path) -> Result<(), TargetError> {
        self.inner.pull(guest_path, local)
    }
    fn baseline_script(&self) -> String {
        self.inner.baseline_script()
    }
    fn workload_script(&self) -> String {
        self.inner.workload_script()
    }
    fn artifacts_dir(&self) -> PathBuf {
        self.inner.artifacts_dir()
    }
    fn kept_artifacts(&self) -> Option<PathBuf> {
        self.inner.kept_artifacts()
    }
    fn disk_images(&self) -> Vec<PathBuf> {
        self.inner.disk_images()
    }
    fn finish_run(&mut self) {
        self.inner.finish_run()
    }
    fn save_powered_off(&self, dir: &Path) -> Result<(), TargetError> {
        self.inner.save_powered_off(dir)
    }
    fn start_from(&mut self, dir: &Path) -> Result<(), TargetError> {
        self.inner.start_from(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::BootEnd;
    use crate::plan::{stage, Failure};
    use crate::progress::Captured;
    use crate::scenario::{run_on, Ctx, Needs, Options, Scenario, ScenarioError};
    use crate::target::testing::Recorder;

    fn three_boots(cx: &mut Ctx) -> Result<(), ScenarioError> {
        cx.boot_ready(&BootPlan::rewind())?;
        cx.boot(&BootPlan::rewind().with_failure(Failure::panic_at(stage::DATA_MOUNTED)))?;
        cx.boot_ready(&BootPlan::rewind())?;
        cx.check_eq("ended", None::<BootEnd>, None);
        Ok(())
    }

    #[test]
    fn each_boot_is_a_plain_line_with_the_count_of_the_last_run() {
        let s = Scenario { name: "three-boots", summary: "", needs: Needs::NOTHING, run: three_boots };
        let dir = tempfile::tempdir().expect("tmp");
        let run = |dir: &Path| {
            let cap = Captured::default();
            let total = expected_boots(dir, s.name, FsType::Ext4);
            let mut inner = Recorder::default();
            let mut paced = Paced::new(&mut inner, Progress::lines(total, "boot", Box::new(cap.clone())));
            let report = run_on(&mut paced, &s, &Options::default());
            paced.finish();
            assert!(report.passed, "{}", report.summary());
            record_boots(dir, s.name, FsType::Ext4, report.boots.len());
            cap.text()
        };
        let first = run(dir.path());
        assert_eq!(
            first.lines().collect::<Vec<_>>(),
            ["boot 1 (rewind boot, no failure)", "boot 2 (panic@data-mounted)", "boot 3 (rewind boot, no failure)"]
        );
        assert_eq!(expected_boots(dir.path(), s.name, FsType::Ext4), Some(3));
        assert_eq!(expected_boots(dir.path(), s.name, FsType::F2fs), None);
        let second = run(dir.path());
        let lines: Vec<&str> = second.lines().collect();
        assert_eq!(lines[0], "boot 1 of 3 (rewind boot, no failure)");
        assert!(
            lines[1].starts_with("boot 2 of 3, about ") && lines[1].ends_with(" left (panic@data-mounted)"),
            "{second}"
        );
        assert!(lines[2].starts_with("boot 3 of 3, about "), "{second}");
    }
}
