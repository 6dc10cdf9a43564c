//! Boot loops are impossible (issue 12 item 6a): once an attempt is
//! committed, power cuts during the early boots that follow (before
//! rewindd runs, while it starts, inside prepare-userdata, right after it)
//! never roll the system back, however many come in a row; and a commit
//! that keeps failing is bounded (item 6b), and a rewindd killed inside
//! prepare-userdata leaves the device bootable (item 6c).

use rewind_daemon::types::EventKind::{CommitBegun, CommitFailed, CommitStopped, Committed, Refused, RollbackBegun};

use std::time::Duration;

use crate::failure::BootEnd;
use crate::plan::{stage, BootPlan, Failure};
use crate::scenario::{checks, Ctx, ScenarioError};

/// Where the power goes out in the boots after the commit; prepare-userdata
/// twice in a row, as a flaky battery would.
const CUTS: &[&str] = &[
    stage::METADATA_MOUNTED,
    stage::REWINDD_STARTED,
    stage::PREPARE_USERDATA,
    stage::PREPARE_USERDATA,
    stage::USERDATA_PREPARED,
    stage::DATA_MOUNTED,
];

pub(super) fn power_cuts_after_commit(cx: &mut Ctx) -> Result<(), ScenarioError> {
    cx.boot_ready(&BootPlan::rewind())?;
    cx.run_baseline()?;
    checks::start(cx, 2, "e2e: commit, then early power cuts")?;
    let baseline = checks::data_manifest(cx)?;
    cx.shutdown()?;

    let rec = cx.boot_ready(&BootPlan::rewind().with_workload(1).with_commit())?;
    cx.check(
        "the attempt commits",
        rec.reached(stage::COMMITTED) && rec.errors.is_empty(),
        format!("stages {}; errors {:?}", rec.stages.join(","), rec.errors),
    );
    let committed = checks::data_manifest(cx)?;
    cx.changed_manifest("the attempt changed userdata", &baseline, &committed);
    cx.shutdown()?;

    for at in CUTS {
        let rec =
            cx.boot_expect_end(&BootPlan::rewind().with_failure(Failure::power_cut_at(at)), BootEnd::HostPowerCut)?;
        cx.check_eq(&format!("boot {}: the power is cut at {at}", rec.index), *at, rec.last_stage());
    }

    cx.boot_ready(&BootPlan::rewind())?;
    checks::check_commit_kept(cx, &format!("after {} early power cuts", CUTS.len()), &committed)?;
    checks::check_idle_stack(cx, "after the early power cuts")?;
    checks::check_phase(cx, "phase is idle after the early power cuts", "idle")?;
    let h = checks::history(cx)?;
    cx.check(
        "history: committed, and no rollback begun after the commit",
        matches!(h.rposition(Committed), Some(c) if h.rposition(RollbackBegun).is_none_or(|r| r < c)),
        h.text(),
    );
    checks::fsck_after_umount(cx, "userdata fsck clean after the early power cuts")?;
    cx.shutdown()?;
    Ok(())
}

/// The snapshot device the live commit must remove (block mode).
const SNAP_NAME: &str = "rewind-userdata-snap";

/// Holds `SNAP_NAME` open from a process of its own, as a stray reader
/// (a backup tool, a debugging shell) would: the kernel then refuses to
/// remove it (EBUSY) and the live commit fails on the kernel's own terms.
/// Returns the holder's pid.
fn hold_snapshot_open(cx: &mut Ctx) -> Result<String, ScenarioError> {
    let script = format!(
        "for d in /sys/block/dm-*; do [ \"$(cat $d/dm/name)\" = {SNAP_NAME} ] && dev=/dev/${{d##*/}}; done; \
         test -n \"$dev\" || {{ echo no {SNAP_NAME}; exit 1; }}; \
         setsid sh -c \"exec sleep 100000 < $dev\" > /dev/null 2>&1 & echo $!"
    );
    let pid = cx.exec_checked(&script)?.trim().to_string();
    let open = cx.exec_checked(&format!("sleep 1; cat /sys/block/dm-*/holders 2>/dev/null; ls -l /proc/{pid}/fd/0"))?;
    cx.check(&format!("a process (pid {pid}) holds {SNAP_NAME} open"), open.contains("/dev/dm-"), open);
    Ok(pid)
}

/// A commit that fails is bounded (issue 12 item 6b): a live commit the
/// kernel refuses (the snapshot device held open: EBUSY) is counted three
/// times; the data stays protected under snapshot-origin meanwhile; at
/// `commit_max_failures` (3) boots stop retrying it: two boots each come
/// up with /data on the plain device over the committed data, no new
/// event, status saying why; an explicit `rewindctl commit` then ends the
/// checkpoint. Userdata is the attempt's data (manifest of every file)
/// throughout, the COW files go, fsck is clean.
pub(super) fn commit_failures_are_bounded(cx: &mut Ctx) -> Result<(), ScenarioError> {
    cx.boot_ready(&BootPlan::rewind())?;
    cx.run_baseline()?;
    checks::start(cx, 2, "e2e: a commit the kernel refuses")?;
    let baseline = checks::data_manifest(cx)?;
    cx.shutdown()?;

    cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    let attempt = checks::data_manifest(cx)?;
    cx.changed_manifest("the attempt changed userdata", &baseline, &attempt);
    let holder = hold_snapshot_open(cx)?;
    for n in 1..=3u64 {
        let out = cx.exec("rewindctl commit --reason 'held open'")?;
        cx.check(
            &format!("commit {n} fails with the kernel's EBUSY"),
            !out.success() && out.stderr.contains("busy"),
            format!("status {:?}: {}{}", out.status, out.stdout, out.stderr),
        );
        let st = checks::status(cx)?;
        let c = &st["commit_failure"];
        cx.check_eq(&format!("commit {n}: phase committing"), "committing".to_string(), checks::phase(&st));
        cx.check_eq(&format!("commit {n}: status counts {n} failures"), Some(n), c["failures"].as_u64());
        cx.check_eq(&format!("commit {n}: boots retry below the limit"), Some(n < 3), c["retried_at_boot"].as_bool());
        let stack = checks::dm_stack(&mut *cx.target, &[])?;
        cx.check(
            &format!("commit {n}: still protected (snapshot-origin stays)"),
            stack.table.contains("snapshot-origin") && stack.ls.contains(SNAP_NAME),
            stack.detail(),
        );
    }
    let text = cx.exec_checked("rewindctl status")?;
    cx.check(
        "status says the boots stop retrying and what to do",
        text.contains("failed 3 times since the intent")
            && text.contains("boots no longer retry it (limit 3 reached)")
            && text.contains("fuser"),
        text.clone(),
    );
    let now = checks::data_manifest(cx)?;
    cx.same_manifest("after the failed commits userdata is the attempt's data", &attempt, &now);
    cx.exec_checked(&format!("kill {holder}"))?;
    cx.shutdown()?;

    // Two boots past the limit: neither retries, both come up.
    for k in 1..=2 {
        let rec = cx.boot_ready(&BootPlan::rewind())?;
        cx.check(
            &format!("stopped boot {k}: prepare-userdata succeeds and /data mounts"),
            rec.reached(stage::DATA_MOUNTED) && rec.errors.is_empty(),
            format!("stages {}; errors {:?}", rec.stages.join(","), rec.errors),
        );
        let st = checks::status(cx)?;
        cx.check_eq(&format!("stopped boot {k}: phase committing"), "committing".to_string(), checks::phase(&st));
        cx.check_eq(
            &format!("stopped boot {k}: not retried at boot (still 3 failures)"),
            Some(3),
            st["commit_failure"]["failures"].as_u64(),
        );
        let stack = checks::dm_stack(&mut *cx.target, &[])?;
        cx.check(&format!("stopped boot {k}: /data on the plain linear device"), stack.is_idle(), stack.detail());
        let now = checks::data_manifest(cx)?;
        cx.same_manifest(&format!("stopped boot {k}: userdata is the committed data"), &attempt, &now);
        let h = checks::history(cx)?;
        cx.check_eq(&format!("stopped boot {k}: three commit-failed"), 3, h.count(CommitFailed));
        cx.check_eq(&format!("stopped boot {k}: one commit-stopped"), 1, h.count(CommitStopped));
        cx.shutdown()?;
    }

    cx.boot_ready(&BootPlan::rewind())?;
    let out = cx.exec("rewindctl commit --reason 'cause removed'")?;
    cx.check("the explicit commit succeeds", out.success(), format!("{}{}", out.stdout, out.stderr));
    let st = checks::check_phase(cx, "phase idle after the explicit commit", "idle")?;
    cx.check("no commit failure reported once committed", st["commit_failure"].is_null(), st.to_string());
    let h = checks::history(cx)?;
    cx.check(
        "history: committed after the failures, never rolled back",
        matches!(
            (h.rposition(CommitFailed), h.rposition(Committed)),
            (Some(f), Some(c)) if f < c
        ) && h.rposition(RollbackBegun).is_none_or(|r| Some(r) < h.position(CommitBegun)),
        h.text(),
    );
    cx.shutdown()?;
    cx.boot_ready(&BootPlan::rewind())?;
    checks::check_commit_kept(cx, "after the explicit commit", &attempt)?;
    checks::check_idle_stack(cx, "after the explicit commit")?;
    checks::fsck_after_umount(cx, "userdata fsck clean after the bounded commit failures")?;
    cx.shutdown()?;
    Ok(())
}

/// Where rewindd is killed in each attempt's boot: counted from the text
/// in rewindd's log (none: from the stage marker), after how long. The
/// anchors are lines rewindd logs inside the call, so the kill lands in
/// it however fast the machine is. Attempt 1: once the first arm has read
/// the free map, i.e. while it suspends the top, makes the snapshot, loads
/// and resumes the origin, or sets up its counters, before the attempt is
/// recorded; attempt 2: at the first progress line of the merge that
/// discards attempt 1 (the kernel goes on merging without rewindd);
/// attempt 3: once the merge of attempt 2 is recorded, inside the arm that
/// follows.
const KILLS: &[(&str, &str, u64)] = &[
    (stage::PREPARE_USERDATA, "free map:", 0),
    (stage::MERGING, "", 0),
    (stage::PREPARE_USERDATA, "kind=\"rollback-finished\"", 0),
];

/// Waits (up to 60 s) until the guest has started rewindd again after the
/// kill and it serves.
fn wait_restarted(cx: &mut Ctx, boot: u32) -> Result<String, ScenarioError> {
    let log = format!("/host/logs/boot-{boot}/kill-rewindd.log");
    cx.exec(&format!(
        "i=0; while ! grep -q 'started rewindd' {log} 2>/dev/null && [ $i -lt 600 ]; do usleep 100000; i=$((i+1)); done; \
         i=0; while ! rewindctl status > /dev/null 2>&1 && [ $i -lt 300 ]; do usleep 100000; i=$((i+1)); done"
    ))?;
    Ok(checks::boot_log(cx, boot, "kill-rewindd.log"))
}

/// rewindd killed inside prepare-userdata leaves the device bootable
/// (issue 12 item 6c). Three attempts' boots each SIGKILL rewindd during
/// PrepareUserdata (arming, merging, later), then go on as init would:
/// init starts rewindd again (rewindd.rc: not oneshot), rewindctl's
/// prepare-userdata calls again on the new daemon, /data mounts, the
/// workload runs, no commit. Each such boot must reach ready with the
/// attempt counted once and armed; the fourth boot finds no attempt left
/// and rolls back: userdata is exactly the baseline (manifest of every
/// file), fsck clean, each attempt counted once, nothing refused.
pub(super) fn rewindd_killed_in_prepare(cx: &mut Ctx) -> Result<(), ScenarioError> {
    let baseline = checks::prepare_checkpoint(cx, 3, "e2e: rewindd killed in prepare-userdata")?;
    for (i, (at, after_log, delay)) in KILLS.iter().enumerate() {
        let attempt = i as u32 + 1;
        let plan = BootPlan::rewind().with_workload(attempt).with_failure(Failure::kill_rewindd_after_log(
            at,
            after_log,
            Duration::from_millis(*delay),
        ));
        let rec = cx.boot_ready(&plan)?;
        let kill = wait_restarted(cx, rec.index)?;
        let prepare = checks::prepare_log(cx, rec.index);
        cx.check(
            &format!("attempt {attempt}: rewindd was killed at {at} ({after_log:?}+{delay}ms) and started again"),
            kill.contains("killed rewindd") && kill.contains("started rewindd"),
            kill.clone(),
        );
        cx.check(
            &format!("attempt {attempt}: the boot goes on: prepare-userdata ends well, /data mounts, ready"),
            rec.reached(stage::DATA_MOUNTED) && rec.reached(stage::READY) && rec.errors.is_empty(),
            format!("stages {}; errors {:?}; prepare: {}", rec.stages.join(","), rec.errors, prepare.trim()),
        );
        cx.check(
            &format!("attempt {attempt}: the kill landed inside PrepareUserdata and rewindctl called again"),
            prepare.contains("calling again"),
            prepare.trim().to_string(),
        );
        // Where the dead daemon was: the last thing it logged.
        let dead = checks::boot_log(cx, rec.index, "rewindd.log");
        cx.say(&format!(
            "attempt {attempt}: rewindd's last line before the kill: {}",
            dead.lines().last().unwrap_or("")
        ));
        let st = checks::status(cx)?;
        cx.check_eq(
            &format!("attempt {attempt}: phase checkpointing"),
            "checkpointing".to_string(),
            checks::phase(&st),
        );
        cx.check_eq(&format!("attempt {attempt}: counted once"), Some(u64::from(attempt)), st["attempt"].as_u64());
        let stack = checks::dm_stack(cx.target, &["rewind-userdata-cow", "rewind-userdata-snap"])?;
        cx.check(
            &format!("attempt {attempt}: armed (snapshot-origin under /data)"),
            stack.table.contains("snapshot-origin") && stack.ls.contains("rewind-userdata-snap"),
            stack.detail(),
        );
        let pids = cx.exec_checked("pidof rewindd")?;
        cx.check(&format!("attempt {attempt}: one rewindd runs"), pids.split_whitespace().count() == 1, pids);
        let now = checks::data_manifest(cx)?;
        cx.check(&format!("attempt {attempt}: its workload ran"), now.get(&format!("attempt-{attempt}")).is_some(), "");
        cx.shutdown()?;
    }
    cx.boot_ready(&BootPlan::rewind())?;
    checks::check_phase(cx, "no attempt left: rolled back", "rolled-back")?;
    let now = checks::data_manifest(cx)?;
    cx.same_manifest("userdata is exactly the baseline after three killed prepares", &baseline, &now);
    checks::check_idle_stack(cx, "after the final rollback")?;
    let h = checks::history(cx)?;
    cx.check_eq("history: attempts 1, 2, 3 each counted once", vec![1, 2, 3], h.attempts_counted());
    cx.check("history: nothing refused", !h.has(Refused), h.text());
    checks::fsck_after_umount(cx, "userdata fsck clean after the killed prepares")?;
    cx.shutdown()?;
    Ok(())
}
