//! A commit keeps the attempt: a good boot commits at boot-completed,
//! a failed attempt followed by a good one keeps only the good one's
//! changes, and a power cut inside the commit rolls forward.

use std::time::Duration;

use rewind_daemon::types::EventKind::{
    Attempt, CommitBegun, CommitCommand, CommitCommandPending, Committed, RollbackBegun, RollbackFinished,
};

use crate::failure::BootEnd;
use crate::manifest;
use crate::plan::{stage, BootPlan, Failure};
use crate::scenario::{checks, Ctx, ScenarioError};

/// 1. A good boot commits; the changes stay; the stack and the store are gone.
pub(super) fn good_boot_commits(cx: &mut Ctx) -> Result<(), ScenarioError> {
    cx.boot_ready(&BootPlan::rewind())?;
    cx.run_baseline()?;
    let (free_before, du_before) = checks::df_du(cx)?;
    checks::start(cx, 2, "e2e: good boot")?;
    let (free_armed, _) = checks::df_du(cx)?;
    let baseline = checks::data_manifest(cx)?;
    if cx.is_f2fs() {
        // f2fs mode keeps nothing on /data: start writes /metadata only.
        cx.check(
            "f2fs: rewindctl start reserves no space on /data (within 1 MiB)",
            free_armed + 1024 >= free_before,
            format!("free {free_before} KiB before start, {free_armed} KiB after"),
        );
    } else {
        cx.check(
            "the COW store takes space while the checkpoint runs",
            free_armed + 8 * 1024 < free_before,
            format!("free {free_before} KiB before start, {free_armed} KiB after"),
        );
    }
    cx.shutdown()?;

    let rec = cx.boot_ready(&BootPlan::rewind().with_workload(1).with_commit())?;
    cx.check(
        "the attempt reaches boot-completed and commits without errors",
        rec.reached(stage::COMMITTED) && rec.errors.is_empty(),
        format!("stages {}; errors {:?}", rec.stages.join(","), rec.errors),
    );
    let committed = checks::data_manifest(cx)?;
    cx.changed_manifest("the attempt changed userdata", &baseline, &committed);
    cx.check("the attempt's marker is there", committed.get("attempt-1").is_some(), "");
    let st = checks::check_phase(cx, "phase is idle after the commit", "idle")?;
    let h = checks::history(cx)?;
    cx.check("history records the commit", h.has(Committed), h.text());
    if cx.is_f2fs() {
        // The commit remounted /data live with checkpoint=enable.
        checks::check_idle_stack(cx, "f2fs: after the commit (live remount)")?;
        let unusable = st["partitions"][0]["unusable_bytes"].as_u64();
        cx.check_eq("f2fs: status reports no unusable space after the commit", Some(0), unusable);
        cx.check(
            "f2fs: history shows the attempt armed, then committed live",
            matches!(
                (h.position(Attempt), h.rposition_with(Committed, "live")),
                (Some(a), Some(c)) if a < c
            ),
            h.text(),
        );
    }
    cx.shutdown()?;

    for n in 1..=2 {
        cx.boot_ready(&BootPlan::rewind())?;
        checks::check_commit_kept(cx, &format!("reboot {n}"), &committed)?;
        checks::check_idle_stack(cx, &format!("reboot {n}"))?;
        checks::check_phase(cx, &format!("reboot {n}: phase is idle"), "idle")?;
        if n == 2 {
            // The store's space is free again: free space moved by what the
            // attempt's files added (du), within 2 MiB (directory blocks,
            // the journal's own accounting).
            let (free_after, du_after) = checks::df_du(cx)?;
            let expected = free_before as i64 - (du_after as i64 - du_before as i64);
            let off = free_after as i64 - expected;
            cx.check(
                "the COW space is free again (df after == df before start - the attempt's growth, within 2 MiB)",
                off.abs() <= 2048,
                format!(
                    "free before start {free_before} KiB, while armed {free_armed} KiB, after {free_after} KiB; \
                     files grew {} KiB; off by {off} KiB",
                    du_after as i64 - du_before as i64
                ),
            );
            checks::fsck_after_umount(cx, "userdata fsck clean after the commit and two reboots")?;
        }
        cx.shutdown()?;
    }
    Ok(())
}

/// 2. Attempt 1 fails, attempt 2 commits: only attempt 2's changes.
pub(super) fn fail_then_succeed(cx: &mut Ctx) -> Result<(), ScenarioError> {
    let baseline = checks::prepare_checkpoint(cx, 2, "e2e: fail then succeed")?;
    cx.boot_expect_end(
        &BootPlan::rewind().with_workload(1).with_failure(Failure::panic_at(stage::WORKLOAD_DONE)),
        BootEnd::Panic,
    )?;
    let rec = cx.boot_ready(&BootPlan::rewind().with_workload(2).with_commit())?;
    cx.check(
        "attempt 2 reaches boot-completed and commits without errors",
        rec.reached(stage::COMMITTED) && rec.errors.is_empty(),
        format!("stages {}; errors {:?}", rec.stages.join(","), rec.errors),
    );
    // Attempt 2's boot merged attempt 1 away before /data was mounted.
    cx.say(&format!(
        "attempt 2's boot (discarding attempt 1 by a merge first): data-mounted at {}, merge stage {}",
        checks::secs(rec.reached_ms(stage::DATA_MOUNTED)),
        if checks::merge_ran(&rec) { "seen" } else { "not seen" }
    ));
    if cx.is_f2fs() {
        // f2fs mode: no merge; attempt 1's panic dropped it (no checkpoint
        // was written), and prepare-userdata recorded its rollback before
        // arming attempt 2.
        let h = checks::history(cx)?;
        let first = h.position(Attempt);
        let rolled = h.position(RollbackFinished);
        let second = h.rposition(Attempt);
        cx.check(
            "f2fs: attempt 2's boot recorded attempt 1's rollback before arming attempt 2 (no merge)",
            !checks::merge_ran(&rec)
                && matches!((first, rolled, second), (Some(a), Some(r), Some(b)) if a < r && r < b),
            h.text(),
        );
    } else {
        checks::check_merged(cx, "attempt 2's boot merged attempt 1 away first", &rec, "the merge of attempt 1");
    }
    let committed = checks::data_manifest(cx)?;
    for p in checks::attempt_artifacts(1) {
        cx.check(&format!("nothing of attempt 1 survives: {p} is absent"), committed.get(&p).is_none(), "");
    }
    for p in checks::attempt_artifacts(2) {
        cx.check(&format!("attempt 2's {p} is present"), committed.get(&p).is_some(), "");
    }
    let label = committed.get("db/app.db").and_then(|e| e.xattrs.get("user.rewind.label").cloned());
    cx.check_eq("db/app.db's label is attempt 2's", Some(hex::encode("attempt-2")), label);
    let d = manifest::diff(&baseline, &committed);
    let from_1: Vec<&String> = d
        .added
        .iter()
        .filter(|p| p.contains("new1") || p.ends_with(".1") || p.contains("tmp1") || p.contains("attempt-1"))
        .collect();
    cx.check(
        "the diff from the baseline names only attempt 2's additions",
        from_1.is_empty() && !d.added.is_empty(),
        format!("{}; attempt-1 names: {from_1:?}", d.counts()),
    );
    // The baseline's own files that attempt 2 did not touch are untouched:
    // every change is one update.sh makes.
    let expected_touched = [
        "db/app.db",
        "db/app.db.version",
        "media/video.bin",
        "misc/config",
        "misc/config/settings.conf",
        "user/0/current.db",
        "user/0/version.hardlink",
        "app/com.example.app7/files/f7",
    ];
    let unexpected: Vec<&str> = d
        .changed_paths()
        .into_iter()
        .chain(d.chmodded_paths())
        .filter(|p| {
            !expected_touched.contains(p)
                && !p.starts_with("app/")
                && *p != "misc"
                && *p != "user/0"
                && *p != "db"
                && *p != "."
                && !p.is_empty()
        })
        .collect();
    cx.check("nothing else of the baseline changed", unexpected.is_empty(), format!("{unexpected:?}"));
    cx.shutdown()?;

    cx.boot_ready(&BootPlan::rewind())?;
    checks::check_cow_gone(cx, "no COW file left")?;
    let now = checks::data_manifest(cx)?;
    cx.same_manifest("after a reboot userdata equals attempt 2's committed state", &committed, &now);
    checks::check_idle_stack(cx, "after the reboot")?;
    let h = checks::history(cx)?;
    cx.check(
        "history: attempt 1, its rollback, attempt 2, committed",
        h.count(Attempt) == 2 && h.has(RollbackFinished) && h.has(Committed),
        h.text(),
    );
    checks::fsck_after_umount(cx, "userdata fsck clean after the commit")?;
    cx.shutdown()?;
    Ok(())
}

/// 4. A power cut between the commit's intent and its end rolls forward.
pub(super) fn power_cut_during_commit(cx: &mut Ctx) -> Result<(), ScenarioError> {
    // The configured commit command runs after the Committing intent is on
    // /metadata and before the table reload (daemon/src/boot/commit.rs):
    // it announces itself on the console and waits, so the host's power
    // cut lands between the two.
    checks::set_rewindd_extra(
        cx,
        Some("commit_command = [\"sh\", \"-c\", \"echo '@@REWIND-STAGE commit-intent@@' > /dev/console; sleep 60\"]\n"),
    )?;
    let baseline = checks::prepare_checkpoint(cx, 2, "e2e: commit cut")?;
    let rec = cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    cx.check("the attempt ran its workload", rec.reached(stage::WORKLOAD_DONE), rec.stages.join(","));
    cx.exec_checked("sync")?;
    let attempt = checks::data_manifest(cx)?;
    cx.changed_manifest("the attempt changed userdata", &baseline, &attempt);
    // The commit, as boot-completed runs it, in the background.
    cx.exec_checked("setsid rewindctl commit --reason 'e2e: boot completed' > /tmp/commit.log 2>&1 < /dev/null &")?;
    let t = std::time::Instant::now();
    let mut intent = false;
    while t.elapsed() < Duration::from_secs(60) {
        let con = cx.target.console();
        if con.contains("@@REWIND-STAGE commit-intent@@") {
            intent = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let waited = format!(
        "{} after {:.1} s",
        if intent { "commit-intent marker on the console" } else { "no commit-intent marker on the console" },
        t.elapsed().as_secs_f64()
    );
    cx.require("the commit reached its hook (intent written)", intent, waited)?;
    let state = cx.exec_checked("cat /metadata/rewind/state")?;
    let phase_line = state.lines().find(|l| l.contains("\"phase\"")).unwrap_or("").trim().to_string();
    cx.check(
        "the state record says committing (intent on disk) when the power goes",
        phase_line.to_lowercase().contains("committing") && state.contains("\"intent\""),
        phase_line,
    );
    if cx.is_f2fs() {
        // f2fs mode remounts with checkpoint=enable before the hook: the
        // commit's effect on the data is done when the power goes.
        let m = checks::data_mount(cx)?;
        cx.check(
            "f2fs: /data was already remounted without checkpoint=disable (before the hook)",
            m.is_raw() && !m.checkpoint_disabled(),
            m.detail(),
        );
    } else {
        let table = checks::dmsetup(cx.target, "table rewind-userdata")?;
        cx.check(
            "the stack is still snapshot-origin (the commit is half done)",
            table.contains("snapshot-origin"),
            table,
        );
    }
    let rec = cx.target.power_cut()?;
    cx.check_eq("the commit is cut by a power cut", Some(BootEnd::HostPowerCut), rec.ended);
    // From the next boot on the commit command only leaves a trace (the
    // cut one never finished): it must run once, at the next commit call,
    // not during the boot's roll-forward.
    checks::set_rewindd_extra(
        cx,
        Some("commit_command = [\"sh\", \"-c\", \"echo ran >> /metadata/commit-command.log\"]\n"),
    )?;

    let rec = cx.boot_ready(&BootPlan::rewind())?;
    cx.check("the next boot prepares without errors", rec.errors.is_empty(), format!("{:?}", rec.errors));
    cx.check("the next boot did not merge (never back)", !checks::merge_ran(&rec), rec.stages.join(","));
    checks::check_phase(cx, "phase is idle (rolled forward)", "idle")?;
    let h = checks::history(cx)?;
    cx.check(
        "history: commit begun, then committed at boot, no rollback",
        h.has(CommitBegun)
            && h.has_with(Committed, "interruption")
            && !h.has(RollbackBegun)
            && !h.has(RollbackFinished),
        h.text(),
    );
    if cx.is_f2fs() {
        // Read from f2fs's last checkpoint on disk at the next boot.
        cx.check(
            "f2fs: the roll-forward says the attempt's changes were kept",
            h.has_with(Committed, "changes are kept"),
            h.text(),
        );
    }
    checks::check_cow_gone(cx, "no COW file left")?;
    let now = checks::data_manifest(cx)?;
    cx.same_manifest("every change of the attempt is there (manifest == the attempt's)", &attempt, &now);
    checks::check_idle_stack(cx, "after the roll-forward")?;
    let needs = cx.exec("rewindctl needs-rollback")?;
    cx.check_eq("needs-rollback is false", 1, needs.status);
    check_pending_commit_command(cx)?;
    checks::fsck_after_umount(cx, "userdata fsck clean after the rolled-forward commit")?;
    cx.shutdown()?;
    Ok(())
}

/// The commit command a cut interrupted is owed: the roll-forward at boot
/// records it as pending without running it; the next `rewindctl commit`
/// (init's, at boot completed) runs it exactly once, as a logged step.
fn check_pending_commit_command(cx: &mut Ctx) -> Result<(), ScenarioError> {
    let runs = |cx: &mut Ctx| -> Result<usize, ScenarioError> {
        Ok(cx.exec("cat /metadata/commit-command.log 2>/dev/null")?.stdout.lines().count())
    };
    let h = checks::history(cx)?;
    cx.check("history: the commit command is pending after the roll-forward", h.has(CommitCommandPending), h.text());
    let n = runs(cx)?;
    cx.check_eq("the roll-forward at boot did not run the commit command", 0, n);
    let out = cx.exec("rewindctl commit --reason 'e2e: boot completed'")?;
    cx.check_eq("rewindctl commit (boot completed) succeeds", 0, out.status);
    let n = runs(cx)?;
    cx.check_eq("it ran the owed commit command once", 1, n);
    let h = checks::history(cx)?;
    cx.check("history: the commit command ran as a logged step", h.last_is(CommitCommand), h.text());
    let out = cx.exec("rewindctl commit --reason 'e2e: boot completed'")?;
    cx.check(
        "a second commit call has nothing to commit and does not run the command again",
        out.status == 0 && out.stdout.contains("nothing to commit"),
        format!("exit {}: {}", out.status, out.stdout.trim()),
    );
    let n = runs(cx)?;
    cx.check_eq("the command ran exactly once", 1, n);
    checks::set_rewindd_extra(cx, None)
}
