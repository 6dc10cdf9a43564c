//! What a scenario sees: the target, the report it fills, its options; and
//! the steps every scenario uses (boots that must reach ready or end a
//! given way, commands, checks, manifests).

use std::time::Duration;

use crate::failure::BootEnd;
use crate::manifest::Manifest;
use crate::plan::{stage, BootPlan, FsType};
use crate::report::{Check, ScenarioReport};
use crate::target::{BootRecord, ExecOutput, Target, TargetError};

use super::{checks, Options, ScenarioError};

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

    /// Filesystem of userdata on the target.
    pub fn fs(&self) -> FsType {
        self.target.fs()
    }

    /// Whether userdata is f2fs (rewind's f2fs mode, `checkpoint=fs`),
    /// where the block-mode witnesses become f2fs's own.
    pub fn is_f2fs(&self) -> bool {
        self.fs() == FsType::F2fs
    }

    /// A line for people, when narrating (the demo) or always to stderr.
    pub fn say(&self, text: &str) {
        if self.options.narrate {
            crate::progress::say(&format!("==> {text}"));
        } else {
            crate::progress::log(&format!("[{}] {text}", self.report.scenario));
        }
    }

    /// Records a check; returns whether it passed.
    pub fn check(&mut self, name: &str, passed: bool, detail: impl Into<String>) -> bool {
        let detail = detail.into();
        // Narrating, the checks are printed once, in the final story.
        if !self.options.narrate {
            crate::progress::log(&format!(
                "[{}] check {}: {name}{}",
                self.report.scenario,
                if passed { "ok" } else { "FAILED" },
                if detail.is_empty() { String::new() } else { format!(" ({})", first_lines(&detail, 3)) }
            ));
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

    /// Boots a plan that must reach `ready`. A last rollback that merges
    /// in the background (`cow.last_rollback_in_background`) is waited
    /// for after ready, so that the scenario checks its end state; the
    /// scenario that looks at /data while it merges uses
    /// [`Ctx::boot_ready_merging`].
    pub fn boot_ready(&mut self, plan: &BootPlan) -> Result<BootRecord, ScenarioError> {
        let rec = self.boot_ready_merging(plan)?;
        self.wait_background_merge(&rec)?;
        Ok(rec)
    }

    /// Waits for the background merge boot `rec` started, if one runs: the
    /// guest's follower (guest/init.sh, follow_background_merge) writes
    /// rewindctl watch's exit code when rewindd recorded the rollback.
    pub fn wait_background_merge(&mut self, rec: &BootRecord) -> Result<(), ScenarioError> {
        if !rec.reached(stage::MERGE_BACKGROUND) {
            return Ok(());
        }
        let t = std::time::Instant::now();
        let out = self.target.exec_timeout(
            "while [ ! -s /tmp/background-merge.done ]; do usleep 100000; done; cat /tmp/background-merge.done",
            crate::timeouts::EXEC_TIMEOUT,
        )?;
        let ended = out.success() && out.stdout.trim() == "0";
        let log = checks::boot_log(self, rec.index, "background-merge.log");
        let log: Vec<&str> = log.lines().rev().take(4).collect();
        self.require(
            &format!("boot {}: the last rollback's background merge ends in rolled-back", rec.index),
            ended,
            format!(
                "rewindctl watch exit {:?}; background-merge.log ends (last first): {}",
                out.stdout.trim(),
                log.join(" | ")
            ),
        )?;
        self.say(&format!(
            "boot {}: the background merge was over {:.1} s after ready was seen",
            rec.index,
            t.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// [`Ctx::boot_ready`] without waiting for a background merge.
    pub fn boot_ready_merging(&mut self, plan: &BootPlan) -> Result<BootRecord, ScenarioError> {
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
