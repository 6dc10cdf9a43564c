//! What one trial does on its guest, as a scenario run by the one run loop
//! (`scenario::run_scenario`): the old system's baseline and checkpoint,
//! the phase the trial cuts, the cuts of the boots after it, then the
//! boots that let rewind finish and the verdict on the data itself.
//!
//! Kept cheap (TCG boots take seconds): one guest, the default baseline
//! and update workload (a few MiB), one attempt, 4-7 boots.

use std::time::Duration;

use rewind_daemon::state::CowFile;
use rewind_daemon::types::EventKind::{Aborted, CommitBegun, Committed};
use serde::{Deserialize, Serialize};

use crate::failure::BootEnd;
use crate::manifest::{self, Manifest};
use crate::plan::{stage, BootPlan, Failure};
use crate::scenario::{checks, Ctx, ScenarioError};
use crate::target::TargetError;

use super::trial::{Cut, Outcome, Phase, Trial};

/// The device /data's filesystem is on with metadata encryption (the
/// guest init's dm-crypt layer over rewind-userdata).
const CRYPT: &str = "/dev/block/mapper/userdata-crypt";

/// Boots after the cuts allowed to reach a settled phase (idle or
/// rolled-back): an attempt armed by a cut `start` takes one more.
const SETTLE_BOOTS: usize = 3;

/// Baseline data a merge trial's attempt rewrites in place (block mode),
/// so that its rollback has a merge to cut: with the free map the update
/// workload's new files are not copied, and what is left merges in well
/// under 0.1 s, over before any cut of the phase's 0-0.7 s could land. 48
/// MiB of rewritten chunks merge in about 0.3-0.6 s under TCG (with 24
/// MiB the rollback was already recorded 287 ms in).
const MERGE_BALLAST_MIB: u64 = 48;

pub(super) fn run_trial(cx: &mut Ctx) -> Result<(), ScenarioError> {
    let trial = cx
        .options
        .trial
        .clone()
        .ok_or_else(|| ScenarioError::other("the campaign trial runs through `rewind-harness campaign` only"))?;
    cx.say(&format!("trial {} of seed {}: {}", trial.index, trial.seed, trial.describe()));
    // The host's block witness reads ext4 from the raw image: not through
    // dm-crypt, not f2fs (which keeps no COW store to merge).
    let block_witness = !cx.is_f2fs() && !cx.options.metadata_encryption;

    // A block-mode merge trial: ballast to merge, and a record of where
    // its cut landed.
    let block_merge = trial.phase == Phase::Merge && !cx.is_f2fs();
    let mut blocks = None;
    let mut committed = None;
    let (baseline, landed) = if trial.phase == Phase::CheckpointStart {
        // The old system, cut while it starts the checkpoint.
        cx.boot_ready(&BootPlan::rewind())?;
        cx.run_baseline()?;
        cx.exec_checked("sync")?;
        let baseline = checks::data_manifest(cx)?;
        cx.report.facts.insert(OLD_SYSTEM_FACT.into(), "booted by this trial".into());
        cx.exec_checked("setsid rewindctl start --attempts 1 --reason campaign > /dev/null 2>&1 < /dev/null &")?;
        (baseline, cut_after(cx, trial.cut.delay_ms)?)
    } else {
        let old = old_system(cx, &trial, block_merge)?;
        if block_witness {
            let image = checks::userdata_image(cx);
            let used = checks::BaselineBlocks::of(&image, &old.cow)?;
            let digest = used.digest(&image)?;
            blocks = Some((used, digest));
        }
        (old.baseline, cut_phase(cx, &trial, &mut committed)?)
    };
    cx.report.facts.insert("landed".into(), landed);
    // The boot the phase's cut ended (the last one so far), and how many
    // boots came before the attempt's: the old system's, unless restored.
    let phase_boot = cx.target.boots().last().map(|b| b.index);
    let restored = cx.report.facts.get(OLD_SYSTEM_FACT).is_some_and(|f| f == RESTORED);
    let old_boots = usize::from(!restored);

    // The cuts of the boots right after, while rewind finishes.
    for (i, c) in trial.more_cuts.iter().enumerate() {
        let landed = cut_boot(cx, BootPlan::rewind(), c)?;
        cx.report.facts.insert(format!("cut {}", i + 2), landed);
    }

    // Rewind finishes. Where the block witness still holds, the first boots
    // leave /data unmounted, so the raw image can be compared with the
    // baseline's blocks before any mount writes to it. It holds only until
    // /data is mounted again: a boot after the attempt's that mounted /data
    // (the rollback was done before its cut) wrote the superblock and freed
    // the COW files, as any boot after a rollback does.
    // `data-mounting`, not only `data-mounted`: a cut during the mount,
    // before its marker, may have left the superblock the mount wrote.
    let mounted_again = cx
        .target
        .boots()
        .iter()
        .skip(old_boots + 1)
        .find(|b| b.reached(stage::DATA_MOUNTING) || b.reached(stage::DATA_MOUNTED))
        .map(|b| b.index);
    let mut settled = None;
    if blocks.is_some() && mounted_again.is_none() {
        for _ in 0..SETTLE_BOOTS {
            cx.boot_ready(&BootPlan::rewind().without_data())?;
            let phase = checks::phase(&checks::status(cx)?);
            cx.shutdown()?;
            if phase == "idle" || phase == "rolled-back" {
                settled = Some(phase);
                break;
            }
        }
    }
    // None: not compared; Some(runs of differing blocks).
    let block_diff = match (&settled, &blocks, mounted_again) {
        (Some(p), Some((used, before)), None) if p == "rolled-back" => {
            Some(used.compare(before, &checks::userdata_image(cx))?)
        }
        _ => None,
    };
    let not_compared = match (mounted_again, &blocks) {
        (_, None) => "not compared (no block witness for this phase or filesystem)".to_string(),
        (Some(n), _) => format!("not compared (boot {n} mounted /data after the attempt, or began to)"),
        (None, _) => "not compared (not rolled back)".to_string(),
    };

    let phase = settle(cx)?;
    if block_merge {
        let boots = cx.target.boots();
        let cut = phase_boot.and_then(|i| boots.iter().find(|b| b.index == i));
        let next = phase_boot.and_then(|i| boots.iter().find(|b| b.index > i && b.reached(stage::USERDATA_PREPARED)));
        if let Some(cut) = cut {
            cx.report.facts.insert("merge cut".into(), merge_cut(cut, next));
        }
    }
    if matches!(trial.phase, Phase::Commit | Phase::StateRecord) {
        // Whether the cut call got its record on disk first: the history
        // (on /metadata) says, not the timing.
        let h = checks::history(cx)?;
        let recorded = h.has(Aborted) || h.has(CommitBegun) || h.has(Committed);
        cx.report.facts.insert("call recorded".into(), if recorded { "yes" } else { "no" }.into());
    }

    let outcome = judge(cx, &baseline, committed.as_ref(), trial.allowed(), &phase)?;
    match block_diff {
        Some(diff) => {
            let equal = diff.is_none();
            cx.report.facts.insert("blocks".into(), if equal { "equal" } else { "differ" }.into());
            if let Some(d) = &diff {
                cx.report.facts.insert("blocks that differ".into(), d.clone());
            }
            cx.check(
                "every block the baseline filesystem uses (COW blocks aside) equals the baseline",
                equal || outcome != Outcome::Baseline,
                diff.map_or_else(|| "equal".to_string(), |d| format!("differ: {d}")),
            );
        }
        None => {
            cx.report.facts.insert("blocks".into(), not_compared);
        }
    }
    check_end_state(cx)
}

/// The fact that says where a trial's old system came from.
pub(super) const OLD_SYSTEM_FACT: &str = "old system";
const RESTORED: &str = "restored";
/// The old system's record beside its saved disks; written last, so a
/// directory without it is an unfinished save, never used.
const OLD_SYSTEM_JSON: &str = "old-system.json";

/// What every trial after the checkpoint's start begins with: the old
/// system's /data (the baseline, plus the merge ballast where asked),
/// synced, with a one-attempt checkpoint started, powered off cleanly.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OldSystem {
    baseline: Manifest,
    cow: Vec<CowFile>,
    /// The trial that booted it.
    built_by: u64,
}

/// The old system this trial starts from. Booting it (the baseline, the
/// checkpoint's start and a clean shutdown) is a third to half of a
/// trial's guest time and is the same in every trial of a campaign run
/// (the trial's phase and cuts all come after it), so the first trial of
/// the run that needs one boots it and saves its disks
/// (`Options::old_systems`), and later trials start from a copy. The
/// variants: with or without the merge ballast.
fn old_system(cx: &mut Ctx, trial: &Trial, ballast: bool) -> Result<OldSystem, ScenarioError> {
    let saved = cx.options.old_systems.as_ref().map(|d| d.join(if ballast { "with-ballast" } else { "plain" }));
    if let Some(dir) = &saved {
        if let Ok(text) = std::fs::read_to_string(dir.join(OLD_SYSTEM_JSON)) {
            let old: OldSystem = serde_json::from_str(&text)
                .map_err(|e| ScenarioError::other(format!("{}: {e}", dir.join(OLD_SYSTEM_JSON).display())))?;
            cx.target.start_from(dir)?;
            cx.say(&format!("the old system: restored (booted by trial {})", old.built_by));
            cx.report.facts.insert(OLD_SYSTEM_FACT.into(), RESTORED.into());
            cx.report.facts.insert("old system booted by".into(), old.built_by.to_string());
            return Ok(old);
        }
    }
    cx.boot_ready(&BootPlan::rewind())?;
    cx.run_baseline()?;
    if ballast {
        checks::write_ballast(cx, MERGE_BALLAST_MIB)?;
    }
    cx.exec_checked("sync")?;
    let baseline = checks::data_manifest(cx)?;
    checks::start(cx, 1, "campaign")?;
    let cow = checks::state(cx)?.partitions.first().map(|p| p.cow_files.clone()).unwrap_or_default();
    cx.shutdown()?;
    let old = OldSystem { baseline, cow, built_by: trial.index };
    let fact = match saved {
        Some(dir) => match cx.target.save_powered_off(&dir) {
            Ok(()) => {
                let json = serde_json::to_string(&old).map_err(|e| ScenarioError::other(e.to_string()))?;
                let (tmp, path) = (dir.join("old-system.json.new"), dir.join(OLD_SYSTEM_JSON));
                std::fs::write(&tmp, json)
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .map_err(|e| ScenarioError::other(format!("{}: {e}", path.display())))?;
                "booted by this trial, saved for the campaign's later trials"
            }
            Err(TargetError::Unsupported { .. }) => "booted by this trial (the target cannot save it)",
            Err(e) => return Err(e.into()),
        },
        None => "booted by this trial",
    };
    cx.report.facts.insert(OLD_SYSTEM_FACT.into(), fact.into());
    Ok(old)
}

/// The boots that let rewind finish after the cuts: each must reach ready
/// without errors, until rewindd's phase settles (idle or rolled-back),
/// checked; returns the phase. Shared with the dm-log-writes replays.
pub(crate) fn settle(cx: &mut Ctx) -> Result<String, ScenarioError> {
    // The next boot reaches ready, and any that are still owed.
    let mut phase = String::new();
    for n in 0..SETTLE_BOOTS {
        let rec = cx.boot_ready(&BootPlan::rewind())?;
        cx.check(
            &format!("boot {} after the cuts prepares without errors", rec.index),
            rec.errors.is_empty(),
            format!("{:?}", rec.errors),
        );
        phase = checks::phase(&checks::status(cx)?);
        if phase == "idle" || phase == "rolled-back" || n + 1 == SETTLE_BOOTS {
            break;
        }
        cx.shutdown()?;
    }
    cx.check(
        "rewind settles: phase idle or rolled-back",
        phase == "idle" || phase == "rolled-back",
        format!("phase {phase:?}"),
    );
    cx.report.facts.insert("phase".into(), phase.clone());
    Ok(phase)
}

/// The verdict on the data after rewind settled in `phase`: /data's
/// manifest is exactly the baseline or exactly `committed`, an outcome
/// `allowed`, and the phase agrees with it (checked); returns the outcome.
pub(crate) fn judge(
    cx: &mut Ctx,
    baseline: &Manifest,
    committed: Option<&Manifest>,
    allowed: &[Outcome],
    phase: &str,
) -> Result<Outcome, ScenarioError> {
    let now = checks::data_manifest(cx)?;
    let outcome = classify(baseline, committed, &now);
    cx.report.facts.insert("outcome".into(), outcome.as_str().into());
    let vs_baseline = manifest::diff(baseline, &now);
    let vs_committed = committed.map(|c| manifest::diff(c, &now));
    cx.check(
        "userdata is exactly the baseline or exactly the committed state, never a mix",
        outcome != Outcome::Mix,
        format!(
            "{}: against the baseline {}; against the committed state {}",
            outcome.as_str(),
            vs_baseline.summary(5),
            vs_committed.map(|d| d.summary(5)).unwrap_or_else(|| "(none: nothing was committed)".into())
        ),
    );
    cx.check(
        &format!("the outcome is one this phase allows ({:?})", allowed),
        allowed.contains(&outcome),
        outcome.as_str(),
    );
    cx.check(
        "the phase agrees with the data (rolled-back: the baseline; committed data: idle)",
        match outcome {
            Outcome::Committed => phase == "idle",
            Outcome::Baseline => phase == "rolled-back" || phase == "idle",
            Outcome::Mix => false,
        },
        format!("phase {phase}, data {}", outcome.as_str()),
    );
    Ok(outcome)
}

/// The stack and filesystem after the verdict: the COW files gone, the
/// idle stack (without metadata encryption), /data unmounted and fsck clean.
pub(crate) fn check_end_state(cx: &mut Ctx) -> Result<(), ScenarioError> {
    checks::check_cow_gone(cx, "COW files removed")?;
    if !cx.options.metadata_encryption {
        checks::check_idle_stack(cx, "at the end")?;
    }
    cx.exec_checked("sync; umount /data")?;
    let device = if cx.options.metadata_encryption { CRYPT } else { checks::userdata_device(cx.fs()) };
    checks::fsck_clean(cx, device, "userdata fsck clean")?;
    Ok(())
}

/// Which state `now` is: the baseline, the committed state, or a mix.
pub(super) fn classify(baseline: &Manifest, committed: Option<&Manifest>, now: &Manifest) -> Outcome {
    if manifest::diff(baseline, now).is_empty() {
        Outcome::Baseline
    } else if committed.is_some_and(|c| manifest::diff(c, now).is_empty()) {
        Outcome::Committed
    } else {
        Outcome::Mix
    }
}

/// From a powered-off guest armed with one attempt: the trial's phase, cut.
/// Sets `committed` to the attempt's data where a commit may keep it.
/// Returns where the cut landed.
fn cut_phase(cx: &mut Ctx, trial: &Trial, committed: &mut Option<Manifest>) -> Result<String, ScenarioError> {
    let attempt = BootPlan::rewind().with_workload(1);
    match trial.phase {
        Phase::CheckpointStart => Err(ScenarioError::other("checkpoint-start is cut before the checkpoint exists")),
        Phase::AttemptWrites | Phase::ArmingAtBoot => cut_boot(cx, attempt, &trial.cut),
        Phase::Merge => {
            // The attempt dies (a power cut after its writes); the next boot
            // merges it away, and that merge is cut.
            cx.boot_ready(&attempt)?;
            if !cx.is_f2fs() {
                checks::rewrite_ballast(cx, MERGE_BALLAST_MIB)?;
            }
            cx.exec_checked("sync")?;
            cx.target.power_cut()?;
            let mut cut = trial.cut.clone();
            if cx.is_f2fs() {
                // No merge in f2fs mode: the rollback is the mount itself.
                cut.stage = Some(stage::PREPARE_USERDATA.into());
            }
            cut_boot(cx, BootPlan::rewind(), &cut)
        }
        Phase::Commit | Phase::StateRecord => {
            cx.boot_ready(&attempt)?;
            cx.exec_checked("sync")?;
            let call = if trial.phase == Phase::StateRecord && !trial.commit {
                "rewindctl abort --reason campaign"
            } else {
                *committed = Some(checks::data_manifest(cx)?);
                "rewindctl commit --reason campaign"
            };
            cx.exec_checked(&format!("setsid {call} > /dev/null 2>&1 < /dev/null &"))?;
            cut_after(cx, trial.cut.delay_ms)
        }
        Phase::Shutdown => {
            let plan = if trial.commit { attempt.with_commit() } else { attempt };
            cx.boot_ready(&plan)?;
            cx.exec_checked("sync")?;
            if trial.commit {
                *committed = Some(checks::data_manifest(cx)?);
            }
            // The guest's own shutdown sequence (as Target::shutdown), cut
            // while it runs.
            cx.exec_checked(
                "setsid sh -c 'sync; umount /data; dmsetup remove userdata-crypt; umount /metadata; sync; poweroff -f' \
                 > /dev/null 2>&1 < /dev/null &",
            )?;
            cut_after(cx, trial.cut.delay_ms)
        }
    }
}

/// Cuts the running guest `delay_ms` from now; where it landed.
fn cut_after(cx: &mut Ctx, delay_ms: u64) -> Result<String, ScenarioError> {
    std::thread::sleep(Duration::from_millis(delay_ms));
    match cx.target.power_cut() {
        Ok(rec) if rec.ended == Some(BootEnd::HostPowerCut) => Ok(format!("cut +{delay_ms} ms")),
        Ok(rec) => Ok(format!(
            "+{delay_ms} ms: the boot had ended first ({})",
            rec.ended.map(|e| e.to_string()).unwrap_or_else(|| "?".into())
        )),
        Err(TargetError::NotRunning) => Ok(format!("+{delay_ms} ms: the guest had powered off first")),
        Err(e) => Err(e.into()),
    }
}

/// Where a cut at the merge landed, from what the guest saw in the cut
/// boot and whether the next boot to finish prepare-userdata merged again
/// (the rollback was still pending at the cut: a merge cut midway resumes;
/// one cut after the last chunk but before rewindd's record finds nothing
/// left to copy). The host's timing alone cannot say.
fn merge_cut(cut: &crate::target::BootRecord, next: Option<&crate::target::BootRecord>) -> String {
    let seen = if cut.reached(stage::MERGE_ENDED) {
        "after the guest saw the rollback recorded"
    } else if cut.reached(stage::MERGING) {
        "while the guest saw the merge running"
    } else if cut.reached(stage::MERGE_BACKGROUND) {
        "after the merge was loaded, before the guest saw it running or recorded"
    } else {
        "before the merge was loaded"
    };
    let pending = match next {
        Some(n) if checks::merge_ran(n) => format!("; boot {} merged again (the rollback was still pending)", n.index),
        Some(n) => format!("; boot {} did not merge (recorded before the cut)", n.index),
        None => String::new(),
    };
    format!("{seen}{pending}")
}

/// The stage a cut "at the merge" follows in this trial's boots. A trial
/// has one attempt, so every rollback it runs is the last one, which
/// rewindd runs in the background (`cow.last_rollback_in_background`,
/// the default, which the campaign keeps): prepare-userdata returns with
/// the merge loaded and guest init prints `merge-background` as it starts
/// to follow it. `merging` is printed only if the follower's first look
/// finds the merge still running, and an update's merge is often over by
/// then, so a cut aimed at `merging` would mostly miss it.
/// f2fs has no merge: its rollback is the mount at prepare-userdata.
fn cut_stage(at: &str, f2fs: bool) -> &str {
    match at {
        stage::MERGING if f2fs => stage::PREPARE_USERDATA,
        stage::MERGING => stage::MERGE_BACKGROUND,
        other => other,
    }
}

/// Boots `plan` with `cut` injected; where it landed. A stage the boot
/// never passed (no merge to cut) is cut at ready instead.
fn cut_boot(cx: &mut Ctx, plan: BootPlan, cut: &Cut) -> Result<String, ScenarioError> {
    let at = cut_stage(cut.stage.as_deref().unwrap_or(stage::PREPARE_USERDATA), cx.is_f2fs()).to_string();
    let failure = Failure::power_cut_at_after(&at, Duration::from_millis(cut.delay_ms));
    match cx.target.boot(&plan.with_failure(failure)) {
        Ok(rec) => Ok(format!(
            "boot {}: {at}+{} ms, {} at stage {}",
            rec.index,
            cut.delay_ms,
            rec.ended.as_ref().map(|e| e.to_string()).unwrap_or_else(|| "still running".into()),
            rec.last_stage()
        )),
        Err(TargetError::Other(msg)) if msg.contains("never injected") => {
            Ok(format!("{at} never reached: cut at ready"))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(index: u32, stages: &[&str]) -> crate::target::BootRecord {
        let mut b = crate::target::BootRecord::new(index, &BootPlan::rewind(), "c".into(), "q".into(), String::new());
        b.stages = stages.iter().map(|s| s.to_string()).collect();
        b
    }

    #[test]
    fn where_a_merge_cut_landed_is_told_from_the_cut_boot_and_the_next() {
        use stage::*;
        let loaded = [PREPARE_USERDATA, USERDATA_PREPARED, MERGE_BACKGROUND];
        let cut = boot(3, &loaded);
        let resumed = boot(5, &[PREPARE_USERDATA, USERDATA_PREPARED, MERGE_BACKGROUND]);
        let plain = boot(5, &[PREPARE_USERDATA, USERDATA_PREPARED, READY]);
        assert_eq!(
            merge_cut(&cut, Some(&resumed)),
            "after the merge was loaded, before the guest saw it running or recorded; boot 5 merged again (the rollback was still pending)"
        );
        assert!(merge_cut(&cut, Some(&plain)).ends_with("; boot 5 did not merge (recorded before the cut)"));
        let running = boot(3, &[PREPARE_USERDATA, USERDATA_PREPARED, MERGE_BACKGROUND, MERGING]);
        assert_eq!(merge_cut(&running, None), "while the guest saw the merge running");
        let ended = boot(3, &[USERDATA_PREPARED, MERGE_BACKGROUND, MERGE_ENDED]);
        assert!(merge_cut(&ended, None).starts_with("after the guest saw the rollback recorded"));
        assert_eq!(merge_cut(&boot(3, &[PREPARE_USERDATA]), None), "before the merge was loaded");
    }

    #[test]
    fn a_cut_at_the_merge_follows_the_background_merge_in_block_mode() {
        assert_eq!(cut_stage(stage::MERGING, false), stage::MERGE_BACKGROUND);
        assert_eq!(cut_stage(stage::MERGING, true), stage::PREPARE_USERDATA);
        assert_eq!(cut_stage(stage::DATA_MOUNTED, false), stage::DATA_MOUNTED);
        assert_eq!(cut_stage(stage::PREPARE_USERDATA, true), stage::PREPARE_USERDATA);
    }

    #[test]
    fn the_data_is_one_state_or_a_mix() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("a"), "baseline").expect("write");
        let base = manifest::scan(dir.path()).expect("scan");
        std::fs::write(dir.path().join("a"), "attempt").expect("write");
        std::fs::write(dir.path().join("b"), "new").expect("write");
        let done = manifest::scan(dir.path()).expect("scan");
        std::fs::remove_file(dir.path().join("b")).expect("rm");
        let half = manifest::scan(dir.path()).expect("scan");
        assert_eq!(classify(&base, None, &base), Outcome::Baseline);
        assert_eq!(classify(&base, Some(&done), &base), Outcome::Baseline);
        assert_eq!(classify(&base, Some(&done), &done), Outcome::Committed);
        assert_eq!(classify(&base, None, &done), Outcome::Mix, "nothing was committed");
        assert_eq!(classify(&base, Some(&done), &half), Outcome::Mix);
    }
}
