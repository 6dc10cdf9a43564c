//! The demo's story: one line per boot (what the new system did, how the
//! boot ended, what rewind did), each check once, a short verdict. Built
//! only from the recorded report (the stage markers and ends the host
//! observed, the checks against what rewindd reported), so it is tested
//! from a recorded report without a guest. The QEMU command lines stay in
//! the report (and on stderr with --verbose).

use crate::plan::{stage, Mode};
use crate::report::ScenarioReport;
use crate::target::BootRecord;

/// What rewind did in a boot, from the stage markers the guest printed.
fn rewind_did(b: &BootRecord) -> String {
    if b.plan.mode == Mode::Raw {
        return "rewind not in this boot".into();
    }
    let mut did = Vec::new();
    // The last rollback merges after prepare-userdata returned.
    let background = b.reached(stage::MERGE_BACKGROUND);
    if b.reached(stage::MERGING) && !background {
        did.push("merged the checkpoint".to_string());
    }
    if b.reached(stage::USERDATA_PREPARED) {
        did.push("prepared userdata".to_string());
        if background && b.reached(stage::MERGE_ENDED) {
            did.push("merged the checkpoint in the background while /data was in use".to_string());
        } else if background {
            did.push("left the merge running in the background".to_string());
        }
    } else if b.reached(stage::PREPARE_USERDATA) {
        did.push("started prepare-userdata but did not finish it".to_string());
    } else if b.reached(stage::REWINDD_STARTED) {
        did.push("rewindd started, userdata not prepared".to_string());
    } else {
        did.push("rewindd never started".to_string());
    }
    if b.reached(stage::COMMITTED) {
        did.push("committed".to_string());
    }
    did.join(", ")
}

/// What the system in this boot did, from the plan and the markers.
fn system_did(b: &BootRecord) -> String {
    let mut s = if b.plan.run_workload {
        format!("new system, attempt {}", b.plan.attempt)
    } else {
        "system without the update's workload".to_string()
    };
    if b.plan.run_workload && b.reached(stage::WORKLOAD_DONE) {
        s += ": migrated /data";
    } else if b.plan.run_workload && b.reached(stage::WORKLOAD_START) {
        s += ": started migrating /data";
    }
    s
}

/// How the boot ended (or that the scenario stopped it at ready).
fn ending(b: &BootRecord) -> String {
    let failure = b.failure.as_deref().map(|f| format!("injected {f}, ")).unwrap_or_default();
    let end = match &b.ended {
        Some(e) => format!("ended in a {e}"),
        None => "still running".to_string(),
    };
    let reached =
        if b.reached(stage::READY) { "reached ready".to_string() } else { format!("got to {}", b.last_stage()) };
    format!("{failure}{reached}, {end} after {:.1} s", b.duration_ms as f64 / 1000.0)
}

/// One line for a boot.
pub fn boot_line(b: &BootRecord) -> String {
    let reason = b.boot_reason.as_deref().map(|r| format!(" (boot reason {r})")).unwrap_or_default();
    let errors = if b.errors.is_empty() { String::new() } else { format!("; guest errors: {}", b.errors.join("; ")) };
    format!("boot {}{reason}: {}; {}; rewind: {}{errors}", b.index, system_did(b), ending(b), rewind_did(b))
}

/// The whole story: boots, checks (each once, its detail's first line only
/// when it failed), the verdict.
pub fn render(r: &ScenarioReport) -> String {
    let mut s = String::new();
    for b in &r.boots {
        s += &boot_line(b);
        s.push('\n');
    }
    for c in &r.checks {
        if c.passed {
            s += &format!("  [ok]   {}\n", c.name);
        } else {
            let detail = c.detail.trim().lines().next().unwrap_or_default();
            s += &format!("  [FAIL] {}: {detail}\n", c.name);
        }
    }
    if let Some(e) = &r.error {
        s += &format!("stopped early: {e}\n");
    }
    let failed = r.failed_checks().len();
    s += &format!(
        "{}: {} boots, {} of {} checks passed, {:.0} s{}\n",
        if r.passed { "PASSED" } else { "FAILED" },
        r.boots.len(),
        r.checks.len() - failed,
        r.checks.len(),
        r.duration_ms as f64 / 1000.0,
        r.artifacts.as_ref().map(|a| format!("; logs kept in {}", a.display())).unwrap_or_default()
    );
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::failure::BootEnd;
    use crate::plan::{BootPlan, Failure};
    use crate::report::Check;
    use std::path::PathBuf;

    const QEMU: &str = "qemu-system-x86_64 -machine q35 -accel tcg -m 1024 -kernel vmlinuz -append console=ttyS0";

    fn boot(index: u32, plan: BootPlan, stages: &[&str], ended: Option<BootEnd>, reason: Option<&str>) -> BootRecord {
        let dir = PathBuf::from(format!("/tmp/run/boot-{index}"));
        let mut b = BootRecord::new(index, &plan, dir.join("console.log"), dir.join("qmp.log"), QEMU.into());
        b.stages = stages.iter().map(|s| s.to_string()).collect();
        b.stage_ms = (0..stages.len() as u64).map(|i| i * 1000).collect();
        b.ended = ended;
        b.duration_ms = 20_000 + u64::from(index) * 1_500;
        b.boot_reason = reason.map(str::to_string);
        b
    }

    /// The demo's five boots as three-failed-boots records them.
    pub(crate) fn demo_report() -> ScenarioReport {
        use stage::*;
        let up = [REWINDD_STARTED, PREPARE_USERDATA, USERDATA_PREPARED, DATA_MOUNTED];
        let with = |extra: &[&'static str]| up.iter().copied().chain(extra.iter().copied()).collect::<Vec<_>>();
        let mut r = ScenarioReport::new("three-failed-boots", "qemu (tcg)", "ext4");
        r.boots = vec![
            boot(1, BootPlan::rewind(), &with(&[READY]), Some(BootEnd::CleanShutdown), None),
            boot(
                2,
                BootPlan::rewind().with_workload(1),
                &with(&[WORKLOAD_START, WORKLOAD_DONE, READY]),
                Some(BootEnd::HostPowerCut),
                Some("shutdown,userrequested"),
            ),
            boot(
                3,
                BootPlan::rewind().with_workload(2).with_failure(Failure::panic_at(WORKLOAD_DONE)),
                &with(&[WORKLOAD_START, WORKLOAD_DONE]),
                Some(BootEnd::Panic),
                Some("cold"),
            ),
            boot(
                4,
                BootPlan::rewind().with_workload(3).with_failure(Failure::hang_at(WORKLOAD_DONE)),
                &with(&[WORKLOAD_START, WORKLOAD_DONE]),
                Some(BootEnd::WatchdogReset),
                Some("kernel_panic"),
            ),
            boot(5, BootPlan::rewind(), &with(&[READY]), Some(BootEnd::CleanShutdown), Some("watchdog")),
        ];
        for (name, passed) in [
            ("boot 1 reaches ready", true),
            ("the new system really changed userdata", true),
            ("userdata is exactly the baseline", true),
            ("userdata fsck clean after the rollback", false),
        ] {
            let detail = if passed { "ok detail" } else { "e2fsck: 3 errors\nmore lines" };
            r.checks.push(Check { name: name.into(), passed, detail: detail.into() });
        }
        r.duration_ms = 190_000;
        r.finish();
        r
    }

    #[test]
    fn story_matches_the_golden_file() {
        let got = render(&demo_report());
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/demo-story.txt");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &got).unwrap();
        }
        let want = std::fs::read_to_string(&path).expect("golden file (UPDATE_GOLDEN=1 writes it)");
        assert_eq!(got, want, "story changed; review and rerun with UPDATE_GOLDEN=1");
    }

    #[test]
    fn one_line_per_boot_each_check_once_no_command_line() {
        let r = demo_report();
        let s = render(&r);
        for b in &r.boots {
            let prefix = format!("boot {} ", b.index);
            let prefix2 = format!("boot {}:", b.index);
            assert_eq!(s.lines().filter(|l| l.starts_with(&prefix) || l.starts_with(&prefix2)).count(), 1, "{s}");
        }
        for c in &r.checks {
            assert_eq!(s.matches(c.name.as_str()).count(), 1, "{} in\n{s}", c.name);
        }
        assert!(!s.contains("qemu-system"), "{s}");
        assert!(s.contains("injected panic@workload-done"), "{s}");
        assert!(s.contains("ended in a watchdog reset"), "{s}");
        assert!(s.contains("(boot reason kernel_panic)"), "{s}");
        assert!(s.lines().last().unwrap().starts_with("FAILED: 5 boots, 3 of 4 checks passed"), "{s}");
    }
}
