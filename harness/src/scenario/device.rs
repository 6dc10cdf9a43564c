//! Scenarios a real Android device can run (`--target adb|cuttlefish`),
//! written once and verified in CI on the QEMU guest in device profile
//! (`device::profile`: exactly what a phone on a userdebug build with
//! `ro.rewind.defer_commit=true` can do; their `Needs::device_profile`
//! makes `scenario::run` wrap the guest so). They ask only for boots under the boot contract
//! (`BootPlan::rewind`), a kernel panic once the device is up (`ready`),
//! the workload and the commit.
//!
//! On a device the scenario cannot own /data (logs and apps change it all
//! the time), so it owns one directory inside it, [`DEVICE_DATA_DIR`]: the
//! baseline and the workload run there (`REWIND_DATA`), and the data checks
//! are manifests of that directory, exact before/after. rewindd's own
//! account is read with `rewindctl status/history --json` (this run's
//! events only: a device keeps the history of earlier runs), and the stack
//! with the kernel's device-mapper names (`/sys/block/dm-*/dm/name`) and
//! `/dev/block/mapper`. Only commands Android has too: sh, rewindctl,
//! rewind-manifest, ls, cat, rm; no dmsetup (Android has dmctl), no fsck of
//! the mounted /data.

use rewind_daemon::types::EventKind::{Attempt, Committed, RollbackFinished};

use super::checks::{self, check_phase, phase, status, History};
use super::{Ctx, Needs, Scenario, ScenarioError};
use crate::failure::BootEnd;
use crate::manifest::{self, Manifest};
use crate::plan::{shell_quote, stage, BootPlan, Failure, FsType, DEVICE_DATA_DIR};

pub static DEVICE: &[Scenario] = &[
    Scenario {
        name: "device-three-failed-boots",
        summary: "Device-capable: 3 attempts each run the workload in the data dir and panic at ready; the next boot is rolled back: data dir == baseline, history 3 attempts rolled back, no COW device or file",
        needs: Needs { device_profile: true, ..Needs::DAEMON },
        run: three_failed_boots,
    },
    Scenario {
        name: "device-fail-then-commit",
        summary: "Device-capable: attempt 1 panics at ready; attempt 2 starts from the baseline, runs the workload and commits; a reboot keeps exactly attempt 2's data, idle, no COW device or file",
        needs: Needs { device_profile: true, ..Needs::DAEMON },
        run: fail_then_commit,
    },
    Scenario {
        name: "device-good-boot-commits",
        summary: "Device-capable: one attempt runs the workload and commits; two more boots keep exactly its data, idle, no COW device or file",
        needs: Needs { device_profile: true, ..Needs::DAEMON },
        run: good_boot_commits,
    },
];

/// Every boot of these scenarios: the boot contract, workload in the dir.
fn plan() -> BootPlan {
    BootPlan::rewind().with_data_dir(DEVICE_DATA_DIR)
}

fn dir_manifest(cx: &mut Ctx) -> Result<Manifest, ScenarioError> {
    checks::manifest(cx.target, DEVICE_DATA_DIR, &[])
}

/// This run's history: the events from the last `started` on (a device
/// keeps the events of earlier checkpoints).
fn history(cx: &mut Ctx) -> Result<History, ScenarioError> {
    Ok(checks::history(cx)?.this_run())
}

/// rewind's device-mapper devices as the kernel names them, and
/// /dev/block/mapper's listing (what ueventd, or the guest init, linked).
fn rewind_devices(cx: &mut Ctx) -> Result<(Vec<String>, String), ScenarioError> {
    let out = cx.exec_checked(
        "for f in /sys/block/dm-*/dm/name; do [ -r \"$f\" ] && cat \"$f\"; done; echo @@mapper; ls /dev/block/mapper",
    )?;
    let (kernel, mapper) = out.split_once("@@mapper").unwrap_or((out.as_str(), ""));
    let names: Vec<String> =
        kernel.split_whitespace().filter(|n| n.starts_with("rewind-")).map(str::to_string).collect();
    let mapper: Vec<&str> = mapper.split_whitespace().filter(|n| n.starts_with("rewind-")).collect();
    Ok((names.clone(), format!("kernel: {} | /dev/block/mapper: {}", names.join(" "), mapper.join(" "))))
}

/// No snapshot, COW or verify device; block mode keeps exactly the stable
/// top device, f2fs mode has none.
fn check_no_cow_devices(cx: &mut Ctx, when: &str) -> Result<(), ScenarioError> {
    let (names, detail) = rewind_devices(cx)?;
    let transient = |n: &String| n.ends_with("-cow") || n.ends_with("-snap") || n.ends_with("-verify");
    let ok = match cx.target.fs() {
        FsType::Ext4 => names.iter().any(|n| n == "rewind-userdata") && !names.iter().any(transient),
        FsType::F2fs => names.is_empty(),
    };
    cx.check(&format!("{when}: no rewind snapshot/COW device left (only the stable top in block mode)"), ok, detail);
    Ok(())
}

fn check_cow_gone(cx: &mut Ctx, when: &str) -> Result<bool, ScenarioError> {
    checks::check_cow_gone(cx, &format!("{when}: the COW files are gone (/data/rewind empty or absent)"))
}

/// A normal boot, the baseline in a fresh data dir, a checkpoint with
/// `attempts`, the baseline's manifest; powered off after.
fn begin(cx: &mut Ctx, attempts: u32, reason: &str) -> Result<Manifest, ScenarioError> {
    cx.say("Boot the old system (no checkpoint) and fill the data dir with the baseline.");
    // With a commit: an idle device has nothing to commit, and a device
    // that commits at boot_completed by itself can run this boot too.
    cx.boot_ready(&plan().with_commit())?;
    let st = status(cx)?;
    let ph = phase(&st);
    cx.require(
        "rewindd is idle before the scenario (no checkpoint of someone else's running)",
        ph == "idle" || ph == "rolled-back",
        format!("phase {ph:?}; on a device: `rewindctl abort`, reboot, and run again"),
    )?;
    cx.exec_checked(&format!("rm -rf {}", shell_quote(DEVICE_DATA_DIR)))?;
    cx.run_baseline_in(DEVICE_DATA_DIR)?;
    checks::start(cx, attempts, reason)?;
    let baseline = dir_manifest(cx)?;
    let bytes: u64 = baseline.entries.iter().filter_map(|e| e.size).sum();
    cx.check(
        "the baseline filled the data dir",
        baseline.files() >= 300,
        format!("{} files, {:.1} MiB in {DEVICE_DATA_DIR}", baseline.files(), bytes as f64 / (1 << 20) as f64),
    );
    check_phase(cx, "phase is armed after start", "armed")?;
    cx.shutdown()?;
    Ok(baseline)
}

/// How attempt `n` fails: attempt 2 loses power at ready (a phone: the
/// sysrq-b hard reset; Cuttlefish: stop_cvd; QEMU: the host cuts), the
/// others panic at ready (sysrq c on a device).
fn attempt_failure(n: u32) -> (Failure, BootEnd, &'static str) {
    if n == 2 {
        (Failure::power_cut_at(stage::READY), BootEnd::HostPowerCut, "the power goes")
    } else {
        (Failure::panic_at(stage::READY), BootEnd::Panic, "the kernel panics")
    }
}

/// Boots attempt `n`: the workload runs in the data dir, then the boot
/// fails at ready as `attempt_failure` says, and is observed as that.
fn failed_attempt(cx: &mut Ctx, n: u32) -> Result<(), ScenarioError> {
    let (failure, end, how) = attempt_failure(n);
    cx.say(&format!("Boot the new system, attempt {n}: it migrates the data dir, then {how}."));
    let rec = cx.boot_expect_end(&plan().with_workload(n).with_failure(failure), end)?;
    cx.check(
        &format!("attempt {n}'s workload ran to its end before it failed"),
        rec.reached(stage::WORKLOAD_DONE) && rec.errors.is_empty(),
        format!("stages {}; errors {:?}", rec.stages.join(","), rec.errors),
    );
    Ok(())
}

/// The data dir's manifest after `who` ran the workload; checks it
/// differs from `baseline`.
fn changed_dir(cx: &mut Ctx, baseline: &Manifest, who: &str) -> Result<Manifest, ScenarioError> {
    let now = dir_manifest(cx)?;
    let d = manifest::diff(baseline, &now);
    cx.check(&format!("{who} changed the data dir"), !d.is_empty(), d.summary(5));
    Ok(now)
}

/// What an attempt's update.sh leaves (in the data dir): its marker and
/// its new app.
fn attempt_marks(n: u32) -> Vec<String> {
    checks::attempt_artifacts(n).into_iter().take(2).collect()
}

/// The checks after a boot that must be idle with `expected` data.
fn check_idle_with(cx: &mut Ctx, when: &str, expected: &Manifest) -> Result<(), ScenarioError> {
    check_cow_gone(cx, when)?;
    let now = dir_manifest(cx)?;
    cx.same_manifest(&format!("{when}: the data dir is exactly as committed"), expected, &now);
    check_phase(cx, &format!("{when}: phase is idle"), "idle")?;
    check_no_cow_devices(cx, when)?;
    Ok(())
}

fn three_failed_boots(cx: &mut Ctx) -> Result<(), ScenarioError> {
    let baseline = begin(cx, 3, "device: three failed boots")?;
    for n in 1..=3 {
        failed_attempt(cx, n)?;
    }
    cx.say("Boot again: the attempts are used up; prepare-userdata rolls userdata back.");
    cx.boot_ready(&plan())?;
    check_phase(cx, "phase is rolled-back", "rolled-back")?;
    let needs = cx.exec("rewindctl needs-rollback")?;
    cx.check_eq("needs-rollback is true (exit 0)", 0, needs.status);
    let h = history(cx)?;
    checks::check_three_attempts_rolled_back(cx, &h);
    cx.check("nothing was committed", !h.has(Committed), h.story());
    check_cow_gone(cx, "after the rollback")?;
    let now = dir_manifest(cx)?;
    cx.same_manifest("the data dir is exactly the baseline", &baseline, &now);
    check_no_cow_devices(cx, "after the rollback")?;
    cx.shutdown()?;
    Ok(())
}

fn fail_then_commit(cx: &mut Ctx) -> Result<(), ScenarioError> {
    let baseline = begin(cx, 3, "device: fail then commit")?;
    failed_attempt(cx, 1)?;

    cx.say("Boot attempt 2: it must start from the baseline; it migrates and commits.");
    cx.boot_ready(&plan())?;
    let st = status(cx)?;
    cx.check(
        "attempt 2 is checkpointing",
        phase(&st) == "checkpointing" && st["attempt"].as_u64() == Some(2),
        format!("phase {}, attempt {}", phase(&st), st["attempt"]),
    );
    let at_start = dir_manifest(cx)?;
    cx.same_manifest("attempt 2 starts from exactly the baseline (attempt 1 is gone)", &baseline, &at_start);
    // The workload and the commit by hand (not the plan's): the data dir
    // is checked at ready first, which the QEMU guest reaches only after
    // the plan's workload.
    let workload = cx.target.workload_script();
    let out = cx.exec(&format!("REWIND_DATA={} REWIND_ATTEMPT=2 sh {workload}", shell_quote(DEVICE_DATA_DIR)))?;
    cx.require("attempt 2's workload succeeds", out.success(), out.stderr.trim().to_string())?;
    let out = cx.exec("rewindctl --wait 10 commit --reason 'device: attempt 2 is good'")?;
    cx.require("rewindctl commit succeeds", out.success(), format!("{}{}", out.stdout, out.stderr))?;
    let committed = changed_dir(cx, &baseline, "attempt 2")?;
    for p in attempt_marks(2) {
        cx.check(&format!("attempt 2's {p} is there"), committed.get(&p).is_some(), "");
    }
    for p in attempt_marks(1) {
        cx.check(&format!("nothing of attempt 1: {p} is absent"), committed.get(&p).is_none(), "");
    }
    check_phase(cx, "phase is idle after the commit", "idle")?;
    cx.shutdown()?;

    cx.say("Reboot: attempt 2's data stays.");
    cx.boot_ready(&plan().with_commit())?;
    check_idle_with(cx, "after the reboot", &committed)?;
    let h = history(cx)?;
    let ok = h.attempts_counted() == [1, 2]
        && matches!(
            (h.rposition(Attempt), h.position(RollbackFinished), h.rposition(Committed)),
            (Some(a2), Some(r), Some(c)) if r < a2 && a2 < c
        );
    cx.check("history: attempt 1, its rollback, attempt 2, committed", ok, h.story());
    cx.shutdown()?;
    Ok(())
}

fn good_boot_commits(cx: &mut Ctx) -> Result<(), ScenarioError> {
    let baseline = begin(cx, 2, "device: good boot")?;
    cx.say("Boot the new system: it migrates the data dir and commits at boot completed.");
    let rec = cx.boot_ready(&plan().with_workload(1).with_commit())?;
    cx.check(
        "the attempt ran its workload and committed without errors",
        rec.reached(stage::WORKLOAD_DONE) && rec.reached(stage::COMMITTED) && rec.errors.is_empty(),
        format!("stages {}; errors {:?}", rec.stages.join(","), rec.errors),
    );
    let committed = changed_dir(cx, &baseline, "the attempt")?;
    cx.check("the attempt's marker is there", committed.get("attempt-1").is_some(), "");
    check_phase(cx, "phase is idle after the commit", "idle")?;
    let h = history(cx)?;
    cx.check(
        "history: attempt 1, then committed, no rollback",
        h.attempts_counted() == [1]
            && !h.has(RollbackFinished)
            && matches!((h.position(Attempt), h.position(Committed)), (Some(a), Some(c)) if a < c),
        h.story(),
    );
    cx.shutdown()?;
    for n in 1..=2 {
        cx.boot_ready(&plan().with_commit())?;
        check_idle_with(cx, &format!("reboot {n}"), &committed)?;
        cx.shutdown()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::device::adb::{fake_adb_with_script, Adb, AdbConfig, AdbTarget, SysrqReset};

    /// A fake `adb` for a device that defers its commit: answers the
    /// scenarios' commands with canned output (never runs them on the
    /// host) and logs every call.
    fn fake_device(dir: &Path) -> Adb {
        let arms = r#"  shell)
    case "$2" in
      "getprop sys.boot_completed") echo 1;;
      "getprop init.svc.rewindd") echo running;;
      "getprop rewind.defer_commit") echo true;;
      "cat /proc/mounts") echo "/dev/block/mapper/rewind-userdata /data ext4 rw 0 0";;
      *"status --json"*) echo '{"phase":"idle","attempt":0,"attempts":0,"partitions":[]}';;
      *"history --json"*) echo '{"events":[]}';;
      rewind-manifest*) echo '{"root":"/data/local/tmp/rewind-data","entries":[]}';;
      *) :;;
    esac
    exit 0;;
"#;
        fake_adb_with_script(dir, arms, "FAKE02")
    }

    /// Each device scenario runs on the adb target to its end: every plan
    /// it asks for passes the device's checks (the checks themselves fail
    /// against canned answers; what matters is that nothing is refused).
    #[test]
    fn every_device_scenario_gets_past_the_device_plan_checks() {
        let expected_boots =
            [("device-three-failed-boots", 5), ("device-fail-then-commit", 4), ("device-good-boot-commits", 4)];
        assert_eq!(expected_boots.len(), DEVICE.len(), "one row per scenario");
        for (name, boots) in expected_boots {
            let dir = tempfile::tempdir().expect("tmp");
            let cfg = AdbConfig { artifacts: dir.path().join("artifacts"), ..AdbConfig::default() };
            let adb = fake_device(dir.path());
            // A phone: its power cut is the sysrq-b hard reset.
            let power = SysrqReset::new(adb.clone()).no_settle();
            let mut t = AdbTarget::new(adb, Box::new(power), cfg).expect("fake device");
            t.no_settle();
            let scenario = super::super::find(name).expect("registered");
            let report = super::super::run_on(&mut t, scenario, &super::super::Options::default());
            assert_eq!(report.error, None, "{name} stopped early:\n{}", report.summary());
            assert_eq!(report.boots.len(), boots, "{name}:\n{}", report.summary());
            let calls = std::fs::read_to_string(dir.path().join("calls.log")).expect("log");
            assert!(
                calls.contains("shell REWIND_DATA=/data/local/tmp/rewind-data REWIND_ATTEMPT=")
                    && calls.contains("rewind-manifest '/data/local/tmp/rewind-data'"),
                "{name}: the workload and the manifests use the data dir:\n{calls}"
            );
            assert!(!calls.contains("dmsetup"), "{name}: dmsetup is not on Android:\n{calls}");
            if name == "device-good-boot-commits" {
                // The deferred commit follows the workload: its writes
                // belong to the attempt, as on QEMU.
                let w = calls.find("REWIND_ATTEMPT=1 sh").expect("the attempt's workload ran");
                let boot = calls[..w].rfind(" reboot\n").expect("the attempt's boot");
                assert!(
                    !calls[boot..w].contains("rewindctl --wait 10 commit")
                        && calls[w..].contains("rewindctl --wait 10 commit"),
                    "the attempt's boot: workload, then commit:\n{}",
                    &calls[boot..]
                );
            }
        }
    }
}
