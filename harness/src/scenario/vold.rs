//! Android's callers see the checkpoint (android/INTEGRATION.md), in a QEMU
//! guest: unlimited attempts (vold's `startCheckpoint -1`) through three
//! failures with no rollback, then a commit; `needsCheckpoint` on a boot
//! slot not marked successful with no checkpoint recorded, and the slot
//! marked at rewind's commit; `abort --reboot` whose reason is the next
//! boot's; and a failed attempt's tombstone and ANR trace kept across its
//! rollback. The slot flag is the guest's bootctl stand-in's file on the
//! share (`guest/bootctl.sh`); boot reasons are what the harness passes as
//! `androidboot.bootreason`, the way a bootloader does.

use rewind_daemon::types::EventKind::{
    Aborted, CommitCommand, Committed, Evidence, Reboot, RollbackBegun, RollbackFinished,
};
use serde_json::Value;

use crate::failure::BootEnd;
use crate::plan::{stage, BootPlan, Failure};
use crate::scenario::{checks, Ctx, Needs, Scenario, ScenarioError};
use crate::timeouts;
use crate::FsType;

pub static VOLD: &[Scenario] = &[
    Scenario {
        name: "unlimited-attempts",
        summary: "startCheckpoint -1 (vdc form): a power cut, a panic and a hang are each discarded at the next boot but never end in a rollback; attempt 4 commits and its changes stay",
        needs: Needs { fs: Some(FsType::Ext4), ..Needs::DAEMON },
        run: unlimited_attempts,
    },
    Scenario {
        name: "slot-unmarked-needs-checkpoint",
        summary: "No checkpoint recorded, boot slot not marked: vdc needsCheckpoint is true (Keystore would defer), supportsCheckpoint true; the boot-completed commit marks the slot (bootctl), then needsCheckpoint is false",
        needs: Needs::DAEMON,
        run: slot_unmarked,
    },
    Scenario {
        name: "abort-reboot-reason",
        summary: "rewindctl abort --reboot during an attempt: rewindd reboots with the reason, the next boot's reason is reboot,<reason> (history, evidence), userdata rolled back to the baseline",
        needs: Needs { fs: Some(FsType::Ext4), ..Needs::DAEMON },
        run: abort_reboot_reason,
    },
    Scenario {
        name: "evidence-survives-rollback",
        summary: "Attempt 2 writes a tombstone and an ANR trace and panics: after the rollback /data is the baseline and both are in /metadata/rewind/attempts/2/ byte for byte, with kernel_panic as its boot reason",
        needs: Needs { fs: Some(FsType::Ext4), ..Needs::DAEMON },
        run: evidence_survives_rollback,
    },
];

/// rewindd's config for the slot: android/rewindd.toml's, with the guest's
/// bootctl stand-in.
const SLOT_TOML: &str = "commit_command = [\"/usr/bin/bootctl\", \"mark-boot-successful\"]\n\
    slot_query_command = [\"/bin/sh\", \"-c\", \"bootctl is-slot-marked-successful $(bootctl get-current-slot)\"]\n";

/// The guest's script of a crashing system (tombstone, ANR trace).
const CRASH_SCRIPT: &str = include_str!("../../workloads/crash-evidence.sh");

/// `rewindctl checkpoint <words>`'s exit status (vdc's: 1 = true).
fn vdc(cx: &mut Ctx, words: &str) -> Result<i32, ScenarioError> {
    Ok(cx.exec(&format!("rewindctl checkpoint {words}"))?.status)
}

/// Checks `rewindctl checkpoint <words>` exits `expected`.
fn check_vdc(cx: &mut Ctx, name: &str, words: &str, expected: i32) -> Result<(), ScenarioError> {
    let got = vdc(cx, words)?;
    cx.check_eq(name, expected, got);
    Ok(())
}

fn slot_marked(cx: &Ctx) -> bool {
    cx.target.artifacts_dir().join("share").join(crate::guest::SHARE_SLOT_MARKED).exists()
}

fn evidence_json(cx: &mut Ctx, attempt: u32) -> Result<Value, ScenarioError> {
    let out = cx.exec_checked(&format!("rewindctl evidence {attempt} --json"))?;
    serde_json::from_str(&out).map_err(|e| ScenarioError::other(format!("rewindctl evidence --json: {e}: {out}")))
}

fn kept_names(ev: &Value) -> Vec<String> {
    ev["files"]
        .as_array()
        .map(|f| f.iter().filter_map(|x| x["name"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Ends the running boot with a kernel panic from inside (the agent's
/// command returns before the panic lands).
fn panic_now(cx: &mut Ctx) -> Result<(), ScenarioError> {
    cx.exec_checked("(sleep 1; echo c > /proc/sysrq-trigger) > /dev/null 2>&1 < /dev/null &")?;
    let rec = cx.target.wait_end(timeouts::SHUTDOWN_TIMEOUT)?;
    cx.check_eq(&format!("boot {} ends in a kernel panic", rec.index), Some(BootEnd::Panic), rec.ended);
    Ok(())
}

/// vold's `startCheckpoint -1`: every boot until a commit or an abort.
fn unlimited_attempts(cx: &mut Ctx) -> Result<(), ScenarioError> {
    cx.boot_ready(&BootPlan::rewind())?;
    cx.run_baseline()?;
    let started = vdc(cx, "startCheckpoint -1")?;
    cx.require("rewindctl checkpoint startCheckpoint -1 exits 0", started == 0, format!("exit {started}"))?;
    let st = checks::check_phase(cx, "armed for the next boot", "armed")?;
    cx.check_eq("status says unlimited", Some(true), st["unlimited"].as_bool());
    let baseline = checks::data_manifest(cx)?;
    cx.shutdown()?;

    // Attempt 1: migrates, then the power goes.
    cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    let st = checks::check_phase(cx, "attempt 1 is checkpointing", "checkpointing")?;
    cx.check_eq(
        "attempt 1: status attempt 1, unlimited",
        (Some(1), Some(true)),
        (st["attempt"].as_u64(), st["unlimited"].as_bool()),
    );
    let needs = vdc(cx, "needsCheckpoint")?;
    cx.check_eq("attempt 1: vdc needsCheckpoint is true (exit 1)", 1, needs);
    let rec = cx.target.power_cut()?;
    cx.check_eq(&format!("boot {} is a power cut", rec.index), Some(BootEnd::HostPowerCut), rec.ended);
    // Attempts 2 and 3 fail on their own.
    for (attempt, failure, end) in [
        (2, Failure::panic_at(stage::WORKLOAD_DONE), BootEnd::Panic),
        (3, Failure::hang_at(stage::WORKLOAD_DONE), BootEnd::WatchdogReset),
    ] {
        cx.boot_expect_end(&BootPlan::rewind().with_workload(attempt).with_failure(failure), end)?;
    }
    // Attempt 4: three failures later, still a checkpointed attempt, not a
    // rollback; it completes and commits.
    let rec = cx.boot_ready(&BootPlan::rewind().with_workload(4).with_commit())?;
    cx.check(
        "attempt 4 reaches boot-completed and commits without errors",
        rec.reached(stage::COMMITTED) && rec.errors.is_empty(),
        format!("stages {}; errors {:?}", rec.stages.join(","), rec.errors),
    );
    let needs = cx.exec("rewindctl needs-rollback")?;
    cx.check_eq("needs-rollback is false (exit 1): never rolled back by count", 1, needs.status);
    checks::check_phase(cx, "idle after the commit", "idle")?;
    let h = checks::history(cx)?.this_run();
    cx.check_eq("history counts attempts 1 to 4, once each", vec![1, 2, 3, 4], h.attempts_counted());
    cx.check_eq("each failed attempt was discarded at the next boot (3 merges)", 3, h.count(RollbackFinished));
    cx.check(
        "no rollback ended the checkpoint (no 'no attempt left')",
        !h.has_with(RollbackFinished, "no attempt left") && !h.has_with(RollbackBegun, "aborted"),
        h.text(),
    );
    cx.check("the commit ended it", h.last_of(Committed).is_some(), h.text());
    checks::check_boot_reasons_after_attempts(cx, &h, &["cold", "kernel_panic", "watchdog"]);
    let committed = checks::data_manifest(cx)?;
    for k in 1..=3 {
        for p in checks::attempt_artifacts(k) {
            cx.check(
                &format!("nothing of failed attempt {k} survives: {p} is absent"),
                committed.get(&p).is_none(),
                "",
            );
        }
    }
    for p in checks::attempt_artifacts(4) {
        cx.check(&format!("attempt 4's {p} is present"), committed.get(&p).is_some(), "");
    }
    cx.changed_manifest("the committed attempt changed userdata", &baseline, &committed);
    cx.shutdown()?;
    cx.boot_ready(&BootPlan::rewind())?;
    checks::check_commit_kept(cx, "after a reboot", &committed)?;
    checks::check_idle_stack(cx, "after the commit and a reboot")?;
    cx.shutdown()?;
    Ok(())
}

/// vold's `cp_needsCheckpoint` is true while the slot is not marked, with
/// no counter file; its commit marks the slot.
fn slot_unmarked(cx: &mut Ctx) -> Result<(), ScenarioError> {
    checks::set_rewindd_extra(cx, Some(SLOT_TOML))?;
    cx.require("the new slot starts unmarked (no flag on the share)", !slot_marked(cx), "")?;
    cx.boot_ready(&BootPlan::rewind())?;
    let st = checks::check_phase(cx, "no checkpoint is recorded (idle)", "idle")?;
    cx.check_eq("status shows the slot unmarked", Some("unmarked"), st["slot"].as_str());
    let h = checks::history(cx)?;
    cx.check("the history is empty (no record of any checkpoint)", h.events().is_empty(), h.text());
    check_vdc(cx, "vdc needsCheckpoint is true (exit 1) on the unmarked slot", "needsCheckpoint", 1)?;
    check_vdc(cx, "vdc isCheckpointing answers the same (exit 1)", "isCheckpointing", 1)?;
    let native = cx.exec("rewindctl needs-checkpoint")?;
    cx.check_eq("rewindctl needs-checkpoint is true (exit 0)", 0, native.status);
    check_vdc(
        cx,
        "vdc supportsCheckpoint is true (exit 1): update_verifier defers to rewind",
        "supportsCheckpoint",
        1,
    )?;
    check_vdc(cx, "vdc needsRollback is false (exit 0)", "needsRollback", 0)?;
    let stack = checks::dmsetup(cx.target, "table")?;
    cx.check(
        "nothing is checkpointed: rewind-userdata is a plain linear map",
        stack.lines().any(|l| l.starts_with("rewind-userdata:") && l.contains(" linear "))
            && !stack.contains("snapshot"),
        stack.clone(),
    );
    cx.check("the slot is still unmarked before the commit", !slot_marked(cx), "");
    cx.shutdown()?;

    // The boot that completes: init's boot-completed commit marks the slot.
    let rec = cx.boot_ready(&BootPlan::rewind().with_commit())?;
    cx.check(
        "the boot completes and its commit runs without errors",
        rec.reached(stage::COMMITTED) && rec.errors.is_empty(),
        format!("stages {}; errors {:?}", rec.stages.join(","), rec.errors),
    );
    cx.check("rewind's commit marked the slot (bootctl mark-boot-successful)", slot_marked(cx), "");
    let h = checks::history(cx)?;
    cx.check(
        "history: the commit command ran with no checkpoint pending",
        h.has_with(CommitCommand, "no checkpoint was pending"),
        h.text(),
    );
    check_vdc(cx, "vdc needsCheckpoint is false after the commit (exit 0)", "needsCheckpoint", 0)?;
    let st = checks::check_phase(cx, "still idle", "idle")?;
    cx.check_eq("status shows the slot marked", Some("marked"), st["slot"].as_str());
    cx.shutdown()?;
    cx.boot_ready(&BootPlan::rewind())?;
    check_vdc(cx, "the next boot: the slot is marked, needsCheckpoint false (exit 0)", "needsCheckpoint", 0)?;
    cx.shutdown()?;
    checks::set_rewindd_extra(cx, None)?;
    Ok(())
}

/// `rewindctl abort --reboot` as vold's abortChanges: the reason is the
/// next boot's.
fn abort_reboot_reason(cx: &mut Ctx) -> Result<(), ScenarioError> {
    let baseline = checks::prepare_checkpoint(cx, 3, "vold: abort with reboot")?;
    cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    let changed = checks::data_manifest(cx)?;
    cx.changed_manifest("attempt 1 changed userdata", &baseline, &changed);
    // rewindd reboots the guest at once (as `reboot -f`), so the client's
    // answer may not come back: the command runs in the background and the
    // history of the next boot is the witness.
    cx.exec_checked(
        "(rewindctl abort --reason apexd_initiated --reboot > /dev/null 2>&1) > /dev/null 2>&1 < /dev/null &",
    )?;
    let rec = cx.target.wait_end(timeouts::SHUTDOWN_TIMEOUT)?;
    cx.check_eq(&format!("boot {} ends in rewindd's reboot", rec.index), Some(BootEnd::GuestReset), rec.ended);

    let rec = cx.boot_ready(&BootPlan::rewind())?;
    cx.check_eq(
        "the next boot is given reboot,apexd_initiated as its reason",
        Some("reboot,apexd_initiated".to_string()),
        rec.boot_reason.clone(),
    );
    checks::check_phase(cx, "rolled back for good (no retry)", "rolled-back")?;
    check_vdc(cx, "vdc needsRollback is true (exit 1)", "needsRollback", 1)?;
    let h = checks::history(cx)?.this_run();
    cx.check("history: aborted with the reason", h.has_with(Aborted, "apexd_initiated"), h.text());
    cx.check("history: the reboot and its reason", h.has_with(Reboot, "reboot,apexd_initiated"), h.text());
    let rollback = h.last_of(RollbackFinished).map(|e| e.boot_reason.clone());
    cx.check_eq(
        "the rollback's boot reason in the history is reboot,apexd_initiated",
        Some("reboot,apexd_initiated".to_string()),
        rollback,
    );
    let kept = evidence_json(cx, 1)?;
    cx.check_eq(
        "attempt 1's evidence names how it ended",
        Some("reboot,apexd_initiated"),
        kept["boot_reason"].as_str(),
    );
    let now = checks::data_manifest(cx)?;
    cx.same_manifest("userdata is exactly the baseline", &baseline, &now);
    checks::check_idle_stack(cx, "after the rollback")?;
    checks::fsck_after_umount(cx, "userdata fsck clean after the rollback")?;
    cx.shutdown()?;
    Ok(())
}

/// What attempt 2 left survives its rollback in /metadata/rewind/attempts/2/.
fn evidence_survives_rollback(cx: &mut Ctx) -> Result<(), ScenarioError> {
    let baseline = checks::prepare_checkpoint(cx, 2, "vold: evidence")?;
    cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    cx.target.power_cut()?;

    cx.boot_ready(&BootPlan::rewind().with_workload(2))?;
    checks::set_boot_file(cx, "crash-evidence.sh", Some(CRASH_SCRIPT))?;
    let sums = cx.exec_checked("sh /host/boot/crash-evidence.sh")?;
    let sum_of = |file: &str| {
        sums.lines().find(|l| l.ends_with(file)).and_then(|l| l.split_whitespace().next()).unwrap_or("").to_string()
    };
    let tombstone_sum = sum_of("tombstones/tombstone_00");
    let anr_sum = sum_of("anr/anr_2026-11-23-23-50-46-000");
    cx.require(
        "the crashing system wrote a tombstone and an ANR trace",
        !tombstone_sum.is_empty() && !anr_sum.is_empty(),
        sums.clone(),
    )?;
    // rewindd's poll copies them within a second or two; a crash takes
    // that long to bring a phone down. Up to 30 s, then the panic anyway.
    let index = "/metadata/rewind/attempts/2/index.json";
    let waited = cx.exec(&format!(
        "i=0; while [ $i -lt 300 ]; do grep -q tombstone_00 {index} 2>/dev/null && grep -q anr_2026 {index} && exit 0; \
         usleep 100000; i=$((i+1)); done; exit 1"
    ))?;
    cx.check("rewindd copied both while attempt 2 ran", waited.success(), format!("exit {}", waited.status));
    panic_now(cx)?;

    let rec = cx.boot_ready(&BootPlan::rewind())?;
    cx.check_eq("the final boot's reason is kernel_panic", Some("kernel_panic".to_string()), rec.boot_reason.clone());
    checks::check_phase(cx, "rolled back (the attempts are used up)", "rolled-back")?;
    let now = checks::data_manifest(cx)?;
    cx.same_manifest(
        "userdata is exactly the baseline (the tombstone and the trace are gone from /data)",
        &baseline,
        &now,
    );
    let dir = "/metadata/rewind/attempts/2";
    for (name, sum) in
        [("data/tombstones/tombstone_00", &tombstone_sum), ("data/anr/anr_2026-11-23-23-50-46-000", &anr_sum)]
    {
        let kept = cx.exec(&format!("sha256sum {dir}/{name}"))?;
        let kept_sum = kept.stdout.split_whitespace().next().unwrap_or("").to_string();
        cx.check_eq(&format!("{dir}/{name} is the original, byte for byte"), sum.clone(), kept_sum);
    }
    let reason = cx.exec_checked(&format!("cat {dir}/boot-reason"))?;
    cx.check_eq("attempt 2's boot-reason file says kernel_panic", "kernel_panic", reason.trim());
    let kept = evidence_json(cx, 2)?;
    let names = kept_names(&kept);
    cx.check(
        "rewindctl evidence 2 lists the tombstone, the ANR trace, the kernel log tail and the boot reason",
        ["data/tombstones/tombstone_00", "data/anr/anr_2026-11-23-23-50-46-000", "kmsg.tail", "boot-reason"]
            .iter()
            .all(|n| names.iter().any(|k| k == n)),
        format!("{names:?}"),
    );
    cx.exec_checked("rm -rf /tmp/ev && rewindctl evidence 2 --extract /tmp/ev")?;
    let extracted = cx.exec_checked("sha256sum /tmp/ev/data/tombstones/tombstone_00")?;
    cx.check(
        "rewindctl evidence --extract gives the tombstone back",
        extracted.starts_with(&tombstone_sum) && !tombstone_sum.is_empty(),
        extracted.clone(),
    );
    let first = evidence_json(cx, 1)?;
    cx.check_eq(
        "attempt 1's evidence says it ended in a power cut (cold)",
        Some("cold"),
        first["boot_reason"].as_str(),
    );
    let table = cx.exec_checked("rewindctl history")?;
    cx.check(
        "rewindctl history names what was kept of attempt 2",
        table.contains("evidence kept") && table.contains("attempt 2:") && table.contains("tombstone_00"),
        table.clone(),
    );
    let h = checks::history(cx)?.this_run();
    cx.check("history records the evidence of attempt 2", h.has_with(Evidence, "attempt 2"), h.text());
    cx.check_eq("history counts attempts 1 and 2", vec![1, 2], h.attempts_counted());
    checks::fsck_after_umount(cx, "userdata fsck clean after the rollback")?;
    cx.shutdown()?;
    Ok(())
}
