//! A rollback ends at the baseline however it is interrupted: power cuts
//! at several points of the final merge, and AbortChanges mid-attempt.

use rewind_daemon::types::EventKind::{Aborted, Attempt, RollbackFinished};

use crate::failure::BootEnd;
use crate::plan::{stage, BootPlan, Failure};
use crate::scenario::{checks, Ctx, ScenarioError};
use crate::target::TargetError;

/// 3. Power cuts at several points of the final rollback's merge.
pub(super) fn power_cut_during_rollback(cx: &mut Ctx) -> Result<(), ScenarioError> {
    // Half the free space for the COW store, so an attempt can dirty enough
    // chunks (~170 MiB on the default 512 MiB disk) for a merge of seconds.
    // The merge is waited for (not the default background merge): each
    // cut boot's share of the whole rollback is then what it merged before
    // its stage, so the points can be aimed; in the background the merge
    // runs on between prepare's return and guest init's first look, and an
    // early cut can land past the early range.
    checks::set_rewindd_extra(cx, Some("[cow]\nfree_share_percent = 50\nlast_rollback_in_background = false\n"))?;
    // Where in the whole rollback a cut must land to count for a point:
    // (label, from %, below %). A point is passed only by a cut that
    // landed inside the merge (progress below 100 %, prepare unfinished)
    // within its range; "early again" must be the boot right after "early".
    let points: [(&str, u64, u64); 4] =
        [("early", 0, 34), ("early again (second cut in a row)", 0, 34), ("middle", 34, 67), ("late", 67, 100)];
    let mut landed: Vec<Option<String>> = vec![None; points.len()];
    cx.boot_ready(&BootPlan::rewind())?;
    cx.run_baseline()?;
    let mut baseline = None;
    // Baseline data each round's attempt rewrites in place (writes into
    // free space are not copied, so they would leave nothing to merge);
    // written in round 1, restored by every rollback.
    let mut ballast_mib = None;
    for round in 1..=3 {
        if landed.iter().all(Option::is_some) {
            break;
        }
        checks::start(cx, 1, &format!("e2e: rollback cuts, round {round}"))?;
        let st = checks::status(cx)?;
        let cow = st["partitions"][0]["cow_bytes"].as_u64().unwrap_or(0);
        let mib = match ballast_mib {
            Some(mib) => mib,
            None => {
                let (free, _) = checks::df_du(cx)?;
                let mib = ((cow * 3 / 4) >> 20).min((free >> 10).saturating_sub(32));
                checks::write_ballast(cx, mib)?;
                *ballast_mib.insert(mib)
            }
        };
        let base = checks::data_manifest(cx)?;
        if let Some(b) = &baseline {
            cx.same_manifest(&format!("round {round} starts from the baseline"), b, &base);
        }
        baseline.get_or_insert(base);
        cx.shutdown()?;
        // A later round's store is sized from less free space (the ballast
        // is in place): rewrite no more than three quarters of it, or the
        // snapshot overflows and the attempt is committed instead.
        let mib = mib.min((cow * 3 / 4) >> 20);
        cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
        checks::rewrite_ballast(cx, mib)?;
        cx.say(&format!(
            "round {round}: COW store {} MiB, attempt rewrote {mib} MiB of baseline data; power cut",
            cow >> 20
        ));
        cx.target.power_cut()?;
        // Cut the same rollback boot after boot, each time at the progress
        // stage (guest init: merging, merge-25/50/75 of this boot's merge)
        // aimed at the next pending point, until the merge is over.
        let mut whole: Option<u64> = None; // bytes of the round's first merge
        let mut done_pct = 0u64; // share of the whole rollback merged so far
        let mut prev_early_boot: Option<u32> = None;
        for _ in 0..6 {
            let Some(i) = landed.iter().position(Option::is_none) else { break };
            let (label, lo, hi) = points[i];
            if done_pct >= hi {
                // This round's merge is past the point: a new round.
                break;
            }
            // This boot's merge covers done_pct..100 of the whole; the
            // highest stage at or below the point's middle (the cut lands
            // a poll or two after its stage).
            let aim = (lo + hi) / 2;
            let at = [(stage::MERGE_75, 75u64), (stage::MERGE_50, 50), (stage::MERGE_25, 25)]
                .into_iter()
                .find(|(_, p)| done_pct + (100 - done_pct) * p / 100 <= aim)
                .map(|(s, _)| s)
                .unwrap_or(stage::MERGING);
            let res = cx.target.boot(&BootPlan::rewind().with_failure(Failure::power_cut_at(at)));
            let n = cx.target.boots().len() as u32;
            let log = checks::merge_log(cx, n);
            let (last, prepared) = checks::merge_progress(&log);
            let rec = match res {
                Ok(rec) => Some(rec),
                // The merge ended before the stage: the boot reached ready
                // and the harness cut it there.
                Err(TargetError::Other(msg)) => {
                    cx.say(&format!("cut for {label} missed: {msg}"));
                    None
                }
                Err(e) => return Err(e.into()),
            };
            let bytes = last.as_ref().and_then(|(_, t)| checks::merge_bytes(t));
            if let (Some((_, total)), None) = (bytes, whole) {
                whole = Some(total);
            }
            let inside = rec.as_ref().is_some_and(|r| r.ended == Some(BootEnd::HostPowerCut) && r.last_stage() == at)
                && !prepared
                && last.as_ref().is_some_and(|(p, _)| *p < 100);
            let at_text = last.as_ref().map(|(p, t)| format!("{p}% {t}")).unwrap_or_else(|| "no progress".into());
            let overall = match (bytes, whole) {
                (Some((done, total)), Some(w)) if w > 0 => Some((w.saturating_sub(total) + done) * 100 / w),
                _ => None,
            };
            // Which pending point this cut passes, by where it landed.
            let credited = if inside {
                overall.and_then(|o| {
                    (0..points.len()).find(|&k| {
                        landed[k].is_none()
                            && o >= points[k].1
                            && o < points[k].2
                            && (k != 1 || prev_early_boot == Some(n - 1))
                    })
                })
            } else {
                None
            };
            cx.say(&format!(
                "round {round}, boot {n}: aimed at {label}, cut at stage {at}: this boot's merge at {at_text} \
                 ({} of the whole rollback); inside the merge: {inside}; counts for: {}",
                overall.map(|o| format!("{o}%")).unwrap_or_else(|| "?".into()),
                credited.map(|k| points[k].0).unwrap_or("none")
            ));
            if let Some(k) = credited {
                landed[k] = Some(format!(
                    "round {round}, boot {n}: cut at stage {at}, this boot's merge at {at_text}, {}% of the whole rollback",
                    overall.unwrap_or(0)
                ));
            }
            // The boot before an "early again": any cut inside the merge's
            // early range (credited or not).
            prev_early_boot = (inside && overall.is_some_and(|o| o < points[0].2)).then_some(n);
            if !inside && (prepared || rec.is_none() || last.as_ref().is_some_and(|(p, _)| *p >= 100)) {
                // Missed after the end: this round's merge is over.
                break;
            }
            if let Some(o) = overall {
                done_pct = done_pct.max(o);
            }
        }
        // The boot that completes (or finds completed) the rollback.
        cx.boot_ready(&BootPlan::rewind())?;
        let rec = cx.target.boots().last().cloned().ok_or(TargetError::NotRunning)?;
        cx.check(
            &format!("round {round}: the rollback completes without errors"),
            rec.errors.is_empty(),
            format!("{:?}", rec.errors),
        );
        let log = checks::merge_log(cx, rec.index);
        cx.say(&format!(
            "round {round}: final boot {}: data-mounted at {} (resumed merge: {})",
            rec.index,
            checks::secs(rec.reached_ms(stage::DATA_MOUNTED)),
            checks::merge_progress(&log).0.map(|(p, t)| format!("{p}% {t}")).unwrap_or_else(|| "none left".into())
        ));
        let needs = cx.exec("rewindctl needs-rollback")?;
        cx.check_eq(&format!("round {round}: needs-rollback is true"), 0, needs.status);
        checks::check_cow_gone(cx, &format!("round {round}: COW files removed"))?;
        let now = checks::data_manifest(cx)?;
        cx.same_manifest(
            &format!("round {round}: userdata is exactly the baseline"),
            baseline.as_ref().expect("set above"),
            &now,
        );
        checks::check_idle_stack(cx, &format!("round {round}"))?;
    }
    for (i, (label, lo, hi)) in points.iter().enumerate() {
        cx.check(
            &format!("a power cut landed inside the merge: {label} ({lo}-{hi} % of the rollback)"),
            landed[i].is_some(),
            landed[i].clone().unwrap_or_else(|| "never landed inside the merge".into()),
        );
    }
    checks::fsck_after_umount(cx, "userdata fsck clean after the interrupted rollbacks")?;
    cx.shutdown()?;
    Ok(())
}

/// 5. AbortChanges without retry: the next boot rolls back for good.
pub(super) fn abort(cx: &mut Ctx) -> Result<(), ScenarioError> {
    let baseline = checks::prepare_checkpoint(cx, 3, "e2e: abort")?;
    cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    let changed = checks::data_manifest(cx)?;
    cx.changed_manifest("the attempt changed userdata", &baseline, &changed);
    if cx.is_f2fs() {
        checks::check_f2fs_armed(cx, "f2fs: during the attempt")?;
    }
    let out = cx.exec("rewindctl abort --reason 'e2e: health check failed'")?;
    cx.require("rewindctl abort succeeds", out.success(), format!("{}{}", out.stdout, out.stderr))?;
    cx.shutdown()?;

    let rec = cx.boot_ready(&BootPlan::rewind())?;
    cx.check("the boot after the abort prepares without errors", rec.errors.is_empty(), format!("{:?}", rec.errors));
    if !cx.is_f2fs() {
        // (f2fs mode has no merge: the shutdown without a commit dropped
        // the attempt; the history and the manifest below are the checks.)
        checks::check_merged(cx, "the boot after the abort merged the attempt away", &rec, "the rollback merge");
    }
    cx.say(&format!(
        "boot after abort (rollback merge before /data): data-mounted at {}",
        checks::secs(rec.reached_ms(stage::DATA_MOUNTED))
    ));
    let needs = cx.exec("rewindctl needs-rollback")?;
    cx.check_eq("needs-rollback is true (exit 0)", 0, needs.status);
    checks::check_phase(cx, "phase is rolled-back", "rolled-back")?;
    let h = checks::history(cx)?;
    let aborted = h.position_with(Aborted, "health check failed");
    let rolled = h.rposition(RollbackFinished);
    cx.check(
        "history: aborted (with the reason), then the rollback",
        matches!((aborted, rolled), (Some(a), Some(r)) if a < r),
        h.text(),
    );
    cx.check("no further attempt was armed after the abort", h.count(Attempt) == 1, h.text());
    checks::check_cow_gone(cx, "COW files removed")?;
    let now = checks::data_manifest(cx)?;
    cx.same_manifest("userdata is exactly the baseline", &baseline, &now);
    checks::check_idle_stack(cx, "after the rollback")?;
    checks::fsck_after_umount(cx, "userdata fsck clean after the rollback")?;
    cx.shutdown()?;
    Ok(())
}
