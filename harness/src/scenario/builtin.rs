//! The registered scenarios of the harness itself (`Needs::NOTHING`: the
//! harness and the kernel alone, raw plans), and rewindd's headline ones
//! (the demo's three failed boots, the boot-completed commit, a cut merge).

use std::time::Duration;

use rewind_daemon::types::EventKind;

use super::checks::{self, RAW};
use super::{Ctx, Needs, Scenario, ScenarioError, Scripts};
use crate::failure::BootEnd;
use crate::manifest;
use crate::plan::{stage, BootPlan, Failure, FsType};

pub static REGISTRY: &[Scenario] = &[
    Scenario {
        name: "boot-to-ready",
        summary: "A raw guest boots to ready: disks by name, modules, tools, exec status/stderr, clean poweroff, fsck clean",
        needs: Needs::NOTHING,
        run: boot_to_ready,
    },
    Scenario {
        name: "dm-witness",
        summary: "device-mapper in the guest: dm targets present, a linear device over userdata reads back its table and carries a filesystem",
        needs: Needs::NOTHING,
        run: dm_witness,
    },
    Scenario {
        name: "manifest-detects-changes",
        summary: "The manifest sees a changed, added, removed, chmod-ed and re-xattr-ed file exactly, and nothing across a clean reboot",
        needs: Needs::NOTHING,
        run: manifest_detects_changes,
    },
    Scenario {
        name: "failure-panic",
        summary: "A kernel panic injected at data-mounted is observed as a panic; the next boot is fine",
        needs: Needs::NOTHING,
        run: failure_panic,
    },
    Scenario {
        name: "failure-watchdog",
        summary: "A hang at data-mounted is reset by the i6300esb watchdog and observed as a watchdog reset",
        needs: Needs::NOTHING,
        run: failure_watchdog,
    },
    Scenario {
        name: "failure-power-cut",
        summary: "The host cuts power while the workload writes; observed as a power cut; ext4 recovers and fsck is clean",
        needs: Needs::NOTHING,
        run: failure_power_cut,
    },
    Scenario {
        name: "failure-guest-reset",
        summary: "A guest reset (sysrq b) is observed as a guest reset",
        needs: Needs::NOTHING,
        run: failure_guest_reset,
    },
    Scenario {
        name: "failure-kinds",
        summary: "Every failure kind in one guest, each observed as what it is",
        needs: Needs::NOTHING,
        run: failure_kinds,
    },
    Scenario {
        name: "custom-scripts",
        summary: "Bring your own workload: a baseline script, a per-boot workload (with REWIND_ATTEMPT) and a host tool with its shared libraries (xz) all reach the guest",
        needs: Needs { guest_tools: &["xz"], scripts: Some(CUSTOM_SCRIPTS), ..Needs::NOTHING },
        run: custom_scripts,
    },
    Scenario {
        name: "boot-completed-commits",
        summary: "A boot of the new system that completes runs rewindd.rc's boot-completed commit: its changes stay across a reboot",
        needs: Needs::DAEMON,
        run: boot_completed_commits,
    },
    Scenario {
        name: "power-cut-mid-merge",
        summary: "The power is cut while the rollback merge runs inside prepare-userdata (stage `merging`; `cow.last_rollback_in_background = false`); the next boot finishes it: userdata is the baseline, fsck clean",
        needs: Needs::DAEMON,
        run: power_cut_mid_merge,
    },
    Scenario {
        name: "three-failed-boots",
        summary: "Checkpoint with 3 attempts, three failed boots (power cut, panic, hang) of the new system: userdata is back to the baseline",
        needs: Needs::DAEMON,
        run: three_failed_boots,
    },
];

/// custom-scripts' own baseline and workload (as `--baseline` and
/// `--workload` would give them).
const CUSTOM_SCRIPTS: Scripts = Scripts {
    baseline: "echo custom-baseline > \"$REWIND_DATA/custom-baseline\"\n",
    workload: "echo \"attempt $REWIND_ATTEMPT\" > \"$REWIND_DATA/custom-workload\"\n",
};

fn boot_to_ready(cx: &mut Ctx) -> Result<(), ScenarioError> {
    let rec = cx.boot_ready(&BootPlan::raw())?;
    cx.check("boot reaches ready", true, format!("{:.1} s to ready", rec.ready_ms.unwrap_or(0) as f64 / 1000.0));
    let uname = cx.exec_checked("uname -r")?;
    cx.check("guest runs Debian's kernel", uname.trim().ends_with("-amd64"), uname.trim().to_string());
    for disk in ["userdata", "metadata"] {
        let serial =
            cx.exec_checked(&format!("d=$(readlink /dev/block/by-name/{disk}); cat /sys/block/${{d##*/}}/serial"))?;
        cx.check_eq(&format!("by-name/{disk} is the disk with that serial"), disk, serial.trim());
    }
    let mounts = cx.exec_checked("cat /proc/mounts")?;
    for m in [" /data ", " /metadata ", " /host 9p "] {
        cx.check(&format!("{} is mounted", m.trim()), mounts.contains(m), "");
    }
    let modules = cx.exec_checked("cut -d' ' -f1 /proc/modules")?;
    let loaded: Vec<&str> = modules.lines().collect();
    for m in ["dm_mod", "dm_snapshot", "dm_flakey", "dm_log_writes", "dm_delay", "ext4", "f2fs", "i6300esb", "9p"] {
        cx.check(&format!("module {m} is loaded"), loaded.contains(&m), "");
    }
    let tools = cx.exec(
        "mkfs.ext4 -V && e2fsck -V && fsck.f2fs -V && dmsetup version && getfattr --version && rewind-manifest --help",
    )?;
    cx.check("guest tools run", tools.success(), format!("{}{}", tools.stdout, tools.stderr));
    let status = cx.exec("echo out; echo err >&2; exit 7")?;
    cx.check_eq(
        "exec returns status, stdout and stderr",
        (7, "out\n", "err\n"),
        (status.status, status.stdout.as_str(), status.stderr.as_str()),
    );
    cx.shutdown()?;
    cx.boot_ready(&BootPlan::raw().without_data())?;
    checks::fsck_clean(cx, RAW, "userdata fsck clean after a clean shutdown")?;
    cx.shutdown()?;
    Ok(())
}

fn dm_witness(cx: &mut Ctx) -> Result<(), ScenarioError> {
    cx.boot_ready(&BootPlan::raw().without_data())?;
    let targets = checks::dmsetup(cx.target, "targets")?;
    for t in ["linear", "snapshot", "snapshot-origin", "snapshot-merge", "flakey", "delay", "log-writes"] {
        cx.check(
            &format!("dm target {t} is available"),
            targets.lines().any(|l| l.split_whitespace().next() == Some(t)),
            "",
        );
    }
    let sectors = checks::sectors(cx.target, RAW)?;
    let devno = cx.exec_checked("d=$(readlink /dev/block/by-name/userdata); cat /sys/block/${d##*/}/dev")?;
    let devno = devno.trim().to_string();
    cx.exec_checked(&format!("dmsetup create wit-linear --table '0 {sectors} linear {RAW} 0'"))?;
    let table = checks::dmsetup(cx.target, "table wit-linear")?;
    cx.check_eq("linear table reads back", format!("0 {sectors} linear {devno} 0"), table.trim().to_string());
    let status = checks::dmsetup(cx.target, "status wit-linear")?;
    cx.check_eq("linear status reads back", format!("0 {sectors} linear"), status.trim().to_string());
    let node = cx.exec_checked(
        "for d in /sys/block/dm-*; do [ \"$(cat $d/dm/name)\" = wit-linear ] && echo /dev/${d##*/}; done",
    )?;
    let node = node.trim().to_string();
    cx.require("dm node appears without udev", node.starts_with("/dev/dm-"), node.clone())?;
    let fs = cx.target.fs().as_str();
    let wrote =
        cx.exec(&format!("mount -t {fs} {node} /mnt && echo through-dm > /mnt/witness && sync && umount /mnt"))?;
    cx.check("a filesystem mounts and writes through dm-linear", wrote.success(), wrote.stderr);
    // A delay target over the same disk loads and reads back, live-swapped
    // in like rewindd's commit does (suspend, load, resume).
    let swap = cx.exec(&format!(
        "dmsetup suspend wit-linear && dmsetup load wit-linear --table '0 {sectors} delay {RAW} 0 0' && dmsetup resume wit-linear && dmsetup table wit-linear"
    ))?;
    cx.check_eq(
        "live table swap to delay reads back",
        format!("0 {sectors} delay {devno} 0 0"),
        swap.stdout.trim().to_string(),
    );
    cx.exec_checked("dmsetup remove wit-linear")?;
    let gone = cx.exec_checked("dmsetup ls")?;
    cx.check("dm device removed", !gone.contains("wit-linear"), gone);
    let read = cx.exec_checked(&format!("mount -t {fs} {RAW} /mnt && cat /mnt/witness; umount /mnt"))?;
    cx.check_eq("data written through dm is on the raw disk", "through-dm", read.trim());
    checks::fsck_clean(cx, RAW, "userdata fsck clean")?;
    cx.shutdown()?;
    Ok(())
}

fn manifest_detects_changes(cx: &mut Ctx) -> Result<(), ScenarioError> {
    cx.boot_ready(&BootPlan::raw())?;
    cx.run_baseline()?;
    let before = cx.manifest("/data")?;
    cx.check(
        "baseline manifest covers the tree",
        before.files() > 300,
        format!("{} entries, {} files", before.entries.len(), before.files()),
    );
    let label = before.get("db/app.db").and_then(|e| e.xattrs.get("user.rewind.label").cloned());
    cx.check_eq("xattrs are recorded", Some(hex_of("baseline")), label);
    let group = before.get("user/0/version.hardlink").and_then(|e| e.link_group.clone());
    cx.check_eq("hard links are grouped", Some("db/app.db.version".to_string()), group);
    let link = before.get("user/0/current.db").and_then(|e| e.target.clone());
    cx.check_eq("symlink targets are recorded", Some("../db/app.db".to_string()), link);

    cx.exec_checked(
        "set -e; cd /data
         dd if=/dev/urandom of=media/video.bin bs=4096 seek=10 count=1 conv=notrunc 2>/dev/null
         echo new > misc/added
         rm app/com.example.app1/files/f1
         chmod 0640 misc/empty
         setfattr -n user.rewind.label -v changed db/app.db
         sync",
    )?;
    let after = cx.manifest("/data")?;
    let d = manifest::diff(&before, &after);
    cx.check_eq("added is listed", vec!["misc/added".to_string()], d.added.clone());
    cx.check_eq("removed is listed", vec!["app/com.example.app1/files/f1".to_string()], d.removed.clone());
    cx.check_eq("changed are listed", vec!["db/app.db", "media/video.bin"], d.changed_paths());
    cx.check_eq("chmod-ed is listed", vec!["misc/empty"], d.chmodded_paths());
    let what: Vec<Vec<&str>> = d.changed.iter().map(|c| c.what.clone()).collect();
    cx.check_eq("what changed is named", vec![vec!["xattrs"], vec!["content"]], what);
    cx.shutdown()?;

    cx.boot_ready(&BootPlan::raw())?;
    let again = cx.manifest("/data")?;
    cx.same_manifest("manifest is identical across a clean reboot", &after, &again);
    cx.exec_checked("umount /data")?;
    checks::fsck_clean(cx, RAW, "userdata fsck clean")?;
    cx.shutdown()?;
    Ok(())
}

fn hex_of(s: &str) -> String {
    hex::encode(s.as_bytes())
}

/// Boots with `failure`, expects `expected`, then proves the machine boots
/// again with /data mounted.
fn failure_case(cx: &mut Ctx, plan: BootPlan, expected: BootEnd) -> Result<(), ScenarioError> {
    let rec = cx.boot_expect_end(&plan, expected.clone())?;
    if expected == BootEnd::WatchdogReset {
        let at = plan.failure.as_ref().and_then(|f| f.guest_side()).map(|(_, at)| at.to_string());
        if let Some(i) = at.and_then(|at| rec.stages.iter().position(|s| *s == at)) {
            let detect = rec.duration_ms.saturating_sub(rec.stage_ms[i]);
            cx.check(
                "watchdog resets a hung guest within 3 watchdog periods",
                detect < u64::from(plan.watchdog_secs) * 3000,
                format!("hang at {} ms, reset observed {} ms later", rec.stage_ms[i], detect),
            );
        }
    }
    let next = cx.boot_ready(&BootPlan::raw())?;
    cx.check(
        &format!("boot {} after the failure mounts /data", next.index),
        next.reached(stage::DATA_MOUNTED),
        next.stages.join(","),
    );
    cx.exec_checked("umount /data")?;
    checks::fsck_clean(cx, RAW, &format!("userdata fsck clean after {expected}"))?;
    cx.shutdown()?;
    Ok(())
}

fn failure_panic(cx: &mut Ctx) -> Result<(), ScenarioError> {
    failure_case(cx, BootPlan::raw().with_failure(Failure::panic_at(stage::DATA_MOUNTED)), BootEnd::Panic)
}

fn failure_watchdog(cx: &mut Ctx) -> Result<(), ScenarioError> {
    failure_case(cx, BootPlan::raw().with_failure(Failure::hang_at(stage::DATA_MOUNTED)), BootEnd::WatchdogReset)
}

fn failure_power_cut(cx: &mut Ctx) -> Result<(), ScenarioError> {
    // Baseline first so the workload has files to rewrite when the cut hits.
    cx.boot_ready(&BootPlan::raw())?;
    cx.run_baseline()?;
    cx.shutdown()?;
    failure_case(
        cx,
        BootPlan::raw()
            .with_workload(1)
            .with_failure(Failure::power_cut_at_after(stage::WORKLOAD_START, Duration::from_millis(1500))),
        BootEnd::HostPowerCut,
    )
}

fn failure_guest_reset(cx: &mut Ctx) -> Result<(), ScenarioError> {
    failure_case(cx, BootPlan::raw().with_failure(Failure::guest_reset_at(stage::DATA_MOUNTED)), BootEnd::GuestReset)
}

fn failure_kinds(cx: &mut Ctx) -> Result<(), ScenarioError> {
    let cases = [
        (Failure::panic_at(stage::NETWORK_UP), BootEnd::Panic),
        (Failure::hang_at(stage::DATA_MOUNTED), BootEnd::WatchdogReset),
        (Failure::power_cut_at(stage::METADATA_MOUNTED), BootEnd::HostPowerCut),
        (Failure::guest_reset_at(stage::BOOT_COMPLETED), BootEnd::GuestReset),
        (Failure::poweroff_at(stage::READY), BootEnd::CleanShutdown),
    ];
    for (failure, expected) in cases {
        let rec = cx.boot_expect_end(&BootPlan::raw().with_failure(failure.clone()), expected)?;
        if let Failure::HostPowerCut { at, .. } = &failure {
            cx.check_eq("an exact power cut lands at its stage", at.as_str(), rec.last_stage());
        }
    }
    let rec = cx.boot_ready(&BootPlan::raw())?;
    cx.check("the machine boots after every kind", rec.reached(stage::DATA_MOUNTED), rec.stages.join(","));
    cx.shutdown()?;
    Ok(())
}

/// The scenario's own scripts ran (`REWIND_ATTEMPT` set for the workload)
/// and its host tool runs in the guest with its shared libraries.
fn custom_scripts(cx: &mut Ctx) -> Result<(), ScenarioError> {
    cx.boot_ready(&BootPlan::raw())?;
    cx.run_baseline()?;
    let b = cx.exec_checked("cat /data/custom-baseline")?;
    cx.check_eq("custom baseline ran", "custom-baseline", b.trim());
    cx.shutdown()?;
    cx.boot_ready(&BootPlan::raw().with_workload(2))?;
    let w = cx.exec_checked("cat /data/custom-workload")?;
    cx.check_eq("custom workload ran with REWIND_ATTEMPT", "attempt 2", w.trim());
    let v = cx.exec("xz --version")?;
    cx.check("guest tool runs with its libraries", v.success(), format!("{}{}", v.stdout, v.stderr));
    cx.shutdown()?;
    Ok(())
}

/// The demo and issue 4's headline: three failed boots roll userdata back.
fn three_failed_boots(cx: &mut Ctx) -> Result<(), ScenarioError> {
    cx.say("Boot the old system and fill userdata with the baseline.");
    cx.boot_ready(&BootPlan::rewind())?;
    cx.run_baseline()?;
    cx.say("Start a checkpoint with 3 attempts (the update is installed).");
    checks::start(cx, 3, "demo: ota")?;
    let baseline = checks::data_manifest(cx)?;
    let bytes: u64 = baseline.entries.iter().filter_map(|e| e.size).sum();
    cx.say(&format!(
        "Baseline: {} files, {:.1} MiB (manifest taken in the guest by rewind-manifest).",
        baseline.files(),
        bytes as f64 / (1 << 20) as f64
    ));
    cx.shutdown()?;

    cx.say("Boot the new system, attempt 1: it migrates /data and reaches ready, but never commits.");
    cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    let migrated = checks::data_manifest(cx)?;
    let d = manifest::diff(&baseline, &migrated);
    cx.check("the new system really changed userdata", !d.is_empty(), d.counts());
    cx.say(&format!("Attempt 1 changed userdata: {}. Now the power goes out.", d.counts()));
    let rec = cx.target.power_cut()?;
    cx.check_eq(&format!("boot {} is observed as a host power cut", rec.index), Some(BootEnd::HostPowerCut), rec.ended);
    let failures = [
        (Failure::panic_at(stage::WORKLOAD_DONE), BootEnd::Panic),
        (Failure::hang_at(stage::WORKLOAD_DONE), BootEnd::WatchdogReset),
    ];
    for (k, (failure, end)) in failures.into_iter().enumerate() {
        let attempt = k as u32 + 2;
        cx.say(&format!("Boot the new system, attempt {attempt}: it migrates /data again, then fails ({failure})."));
        cx.boot_expect_end(&BootPlan::rewind().with_workload(attempt).with_failure(failure), end)?;
    }
    cx.say("Boot again: the attempts are used up; prepare-userdata rolls userdata back.");
    cx.boot_ready(&BootPlan::rewind())?;
    let needs = cx.exec("rewindctl needs-rollback")?;
    cx.check_eq("needs-rollback is true (rewindctl in the guest)", 0, needs.status);
    let mut grpc = cx.grpc()?;
    let via_host = grpc.needs_rollback()?;
    cx.check_eq("NeedsRollback is true (gRPC from the host)", true, via_host);
    let now = checks::data_manifest(cx)?;
    cx.same_manifest("userdata is exactly the baseline", &baseline, &now);
    // The history must tell the story: each attempt counted once, each
    // discarded, the last one ending in the rollback.
    let history = checks::History::from_grpc(&grpc.history()?.events);
    checks::check_three_attempts_rolled_back(cx, &history);
    // The boot reasons a bootloader gives (the harness passes them as
    // androidboot.bootreason): how each attempt ended, in the history.
    checks::check_boot_reasons_after_attempts(cx, &history.this_run(), &["cold", "kernel_panic", "watchdog"]);
    let table = checks::dmsetup(cx.target, "table")?;
    if cx.target.fs() == FsType::Ext4 {
        // Block mode: the always-present top device, back to linear, and
        // nothing of the snapshot stack left.
        cx.check(
            "dmsetup shows rewind-userdata as linear",
            table.lines().any(|l| l.starts_with("rewind-userdata:") && l.contains(" linear ")),
            table.clone(),
        );
        cx.check(
            "no snapshot or COW device is left",
            !table.lines().any(|l| l.starts_with("rewind-userdata-snap:") || l.starts_with("rewind-userdata-cow:")),
            table.clone(),
        );
        // rewindd deletes the COW files once /data is mounted again (its
        // space poll, every second by default): userdata ends as it was
        // before StartCheckpoint, without them.
        checks::check_cow_gone(cx, "the COW files are gone after the rollback")?;
    }
    if cx.options.narrate {
        cx.say(&format!("dmsetup table (an independent witness):\n{}", table.trim_end()));
        if let Ok(h) = cx.exec_checked("rewindctl history") {
            cx.say(&format!("rewindctl history:\n{}", h.trim_end()));
        }
    }
    checks::fsck_after_umount(cx, "userdata fsck clean after the rollback")?;
    cx.shutdown()?;
    cx.say("Userdata is bit-for-bit the baseline: the bootloader can fall back to the old slot.");
    Ok(())
}

/// The boot-completed step of android/rewindd.rc (start rewind_commit),
/// run by the guest init when the plan lets the boot complete.
fn boot_completed_commits(cx: &mut Ctx) -> Result<(), ScenarioError> {
    checks::begin_checkpoint(cx, 2, "commit test")?;
    cx.shutdown()?;
    let rec = cx.boot_ready(&BootPlan::rewind().with_workload(1).with_commit())?;
    cx.check(
        "boot completed and committed without errors",
        rec.reached(stage::COMMITTED) && rec.errors.is_empty(),
        format!("stages {}; errors {:?}", rec.stages.join(","), rec.errors),
    );
    let checkpointing = cx.exec("rewindctl is-checkpointing")?;
    cx.check_eq("is-checkpointing is false after the commit", 1, checkpointing.status);
    let h = checks::history(cx)?;
    cx.check("history records the commit", h.has(EventKind::Committed), h.text());
    let committed = checks::data_manifest(cx)?;
    cx.shutdown()?;
    cx.boot_ready(&BootPlan::rewind())?;
    let after = checks::data_manifest(cx)?;
    cx.same_manifest("committed changes stay across a reboot", &committed, &after);
    cx.shutdown()?;
    Ok(())
}

/// A power cut while prepare-userdata merges: the merge is resumed. The
/// update workload's merge takes 0.2-0.9 s under TCG; in the background
/// (the default for the last rollback) it is often over before the guest's
/// first look, so this scenario has prepare-userdata wait for it. Cuts in
/// a background merge: power-cut-during-rollback, guest-merge-power-cut
/// and the campaign's merge phase.
fn power_cut_mid_merge(cx: &mut Ctx) -> Result<(), ScenarioError> {
    checks::set_rewindd_extra(cx, Some("[cow]\nlast_rollback_in_background = false\n"))?;
    let baseline = checks::prepare_checkpoint(cx, 1, "merge cut")?;
    // The only attempt writes, then dies without committing.
    cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    let rec = cx.target.power_cut()?;
    cx.check_eq("attempt 1 ends in a power cut", Some(BootEnd::HostPowerCut), rec.ended);
    // The next boot rolls back: cut the power as soon as the merge runs.
    let rec = cx.boot_expect_end(
        &BootPlan::rewind().with_failure(Failure::power_cut_at(stage::MERGING)),
        BootEnd::HostPowerCut,
    )?;
    cx.check_eq("the cut lands while the merge runs", stage::MERGING, rec.last_stage());
    let rec = cx.boot_ready(&BootPlan::rewind())?;
    cx.check("the next boot prepares without errors", rec.errors.is_empty(), format!("{:?}", rec.errors));
    let needs = cx.exec("rewindctl needs-rollback")?;
    cx.check_eq("needs-rollback is true", 0, needs.status);
    let now = checks::data_manifest(cx)?;
    cx.same_manifest("userdata is exactly the baseline after the resumed merge", &baseline, &now);
    checks::fsck_after_umount(cx, "userdata fsck clean")?;
    cx.shutdown()?;
    Ok(())
}
