//! Free-space-aware arming (`cow.free_map = true`): the chunks a cleanly
//! unmounted ext4 baseline leaves free are mapped `linear` while armed, so
//! an attempt's new files cost no COW, and the rollback still ends at the
//! baseline, checked on the data (manifest of every file, fsck).

use serde_json::Value;

use crate::failure::BootEnd;
use crate::plan::{stage, BootPlan, Failure};
use crate::scenario::{checks, Ctx, ScenarioError};

const NEW_FILE_MIB: u64 = 64;

fn cow_used(st: &Value) -> u64 {
    st["partitions"][0]["cow_used_bytes"].as_u64().unwrap_or(0)
}

/// Bytes written into free space this boot, as status reports them (None:
/// absent or unknown; the check then fails with the status as detail).
pub(super) fn free_written(st: &Value) -> Option<u64> {
    st["partitions"][0]["free_map"]["free_written_bytes"].as_u64()
}

/// `got` is `want` within -5 % / +10 % (a little of a new file may land in
/// chunks left protected; ext4 writes a new file's data once).
pub(super) fn about(got: u64, want: u64) -> bool {
    (want * 95 / 100..=want * 110 / 100).contains(&got)
}

/// Milliseconds for `n` runs of `rewindctl status --json`, timed in the
/// guest (each one reads every dm-stats region of the free runs).
pub(super) fn time_status(cx: &mut Ctx, n: u32) -> Result<f64, ScenarioError> {
    let out = cx.exec_checked(&format!(
        "a=$(cat /proc/uptime); i=0; while [ $i -lt {n} ]; do rewindctl status --json > /dev/null; \
         i=$((i+1)); done; b=$(cat /proc/uptime); echo ${{a%% *}} ${{b%% *}}"
    ))?;
    let t: Vec<f64> = out.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    match t.as_slice() {
        [a, b] => Ok((b - a) * 1000.0 / f64::from(n)),
        _ => Err(ScenarioError::other(format!("status timing: {out}"))),
    }
}

/// The armed top table has linear lines (free chunks) and origin lines.
fn check_armed_over_free_map(cx: &mut Ctx, when: &str) -> Result<(), ScenarioError> {
    let table = cx.exec_checked("dmsetup table rewind-userdata")?;
    let linear = table.lines().filter(|l| l.contains(" linear ")).count();
    let origin = table.lines().filter(|l| l.contains(" snapshot-origin ")).count();
    cx.check(
        &format!("{when}: armed over the free map (linear lines over free chunks, snapshot-origin over used ones)"),
        linear > 0 && origin > 0,
        format!("{} lines: {linear} linear, {origin} snapshot-origin", table.lines().count()),
    );
    // The record and status say the same, and the map is the one taken at
    // the first arm (later attempts must read back exactly that map).
    let st = checks::status(cx)?;
    let map = &st["partitions"][0]["free_map"];
    let detail = map["detail"].as_str().unwrap_or("");
    cx.check(
        &format!("{when}: status shows the free map, taken at attempt 1"),
        map["mapped"] == true
            && map["linear_chunks"].as_u64().unwrap_or(0) > 0
            && map["segments"].as_u64() == Some(linear as u64)
            && detail.contains("at attempt 1"),
        map.to_string(),
    );
    Ok(())
}

/// An attempt writes a 64 MiB new file (free space) after the usual
/// update workload (renames, deletes, rewrites in place, a database): the
/// new file adds less than 1 % of its size to the store; a clean shutdown
/// without a commit ends the only attempt, and the next boot rolls back to
/// the exact baseline.
pub(super) fn free_space_not_copied(cx: &mut Ctx) -> Result<(), ScenarioError> {
    checks::set_rewindd_extra(cx, None)?; // cow.free_map is on by default
    let baseline = checks::prepare_checkpoint(cx, 1, "e2e: free map")?;
    cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    check_armed_over_free_map(cx, "attempt 1")?;
    let log = cx.exec("dmesg 2>/dev/null | grep 'free map' | tail -n 3")?;
    cx.say(&format!("rewindd: {}", log.stdout.trim()));

    cx.exec_checked("sync")?;
    let st = checks::status(cx)?;
    let (before, free_before) = (cow_used(&st), free_written(&st));
    cx.exec_checked(&format!(
        "dd if=/dev/urandom of=/data/new-file.bin bs=1M count={NEW_FILE_MIB} conv=fsync 2>/dev/null; sync"
    ))?;
    let st = checks::status(cx)?;
    let (after, free_after) = (cow_used(&st), free_written(&st));
    let written = NEW_FILE_MIB << 20;
    let added = after.saturating_sub(before);
    cx.check(
        "a 64 MiB new file adds less than 1 % of its size to the COW store",
        added * 100 < written,
        format!(
            "COW used {before} -> {after} bytes: {added} bytes for {written} written ({:.2} %)",
            added as f64 * 100.0 / written as f64
        ),
    );
    // The same write, seen by the dm-stats counters of the linear runs:
    // about the file's size went into free space (a little of it may land
    // in chunks left protected, and ext4 writes nothing twice here).
    let grew = free_after.zip(free_before).map(|(a, b)| a.saturating_sub(b));
    cx.check(
        "status reports about 64 MiB written into free space (dm-stats), while the COW store grew by KiBs",
        grew.is_some_and(|g| about(g, written)),
        format!(
            "written into free space {free_before:?} -> {free_after:?} bytes ({:.1} MiB for {NEW_FILE_MIB} MiB \
             written); COW grew {:.1} KiB; free_map {}",
            grew.unwrap_or(0) as f64 / f64::from(1 << 20),
            added as f64 / 1024.0,
            st["partitions"][0]["free_map"]
        ),
    );
    let text = cx.exec_checked("rewindctl status")?;
    let line = text.lines().find(|l| l.contains("written into free space")).unwrap_or("").to_string();
    cx.check("rewindctl status says it in words", line.contains("this boot, not copied"), text.trim().to_string());
    let segments = st["partitions"][0]["free_map"]["segments"].as_u64().unwrap_or(0);
    let ms = time_status(cx, 5)?;
    cx.say(&format!("rewindctl status with {segments} dm-stats regions: {ms:.0} ms per call (mean of 5)"));
    // Stateless: a rewindd restarted mid-attempt finds the same regions.
    checks::restart_rewindd(cx, "freebytes", &[])?;
    let again = free_written(&checks::status(cx)?);
    cx.check(
        "a restarted rewindd reads the same counters (stateless)",
        again.zip(free_after).is_some_and(|(a, b)| a >= b && a - b < 1 << 20),
        format!("{free_after:?} before the restart, {again:?} after"),
    );
    let changed = checks::data_manifest(cx)?;
    cx.changed_manifest("the attempt changed userdata", &baseline, &changed);
    cx.shutdown()?;

    let now = checks::boot_rolls_back_to(cx, "the next boot merged the attempt away", &baseline)?;
    cx.check("the new file is gone", now.get("new-file.bin").is_none(), "");
    checks::check_idle_stack(cx, "after the rollback")?;
    checks::fsck_after_umount(cx, "userdata fsck clean after the rollback")?;
    cx.shutdown()?;
    Ok(())
}

/// Power cuts with the free map: attempt 1 (the update workload and a new
/// file) is cut; its merge restores the clean baseline, so attempt 2 is
/// armed over the free map again; attempt 2 rewrites 24 MiB of baseline
/// data in place (those chunks must still be copied: the store grows by at
/// least that much) and is cut; the final rollback's merge is cut too; the
/// boot after ends at the exact baseline, fsck clean.
pub(super) fn free_map_power_cuts(cx: &mut Ctx) -> Result<(), ScenarioError> {
    // cow.free_map is on by default. The final rollback's merge is waited
    // for, so the cut at `merging` lands inside it: in the background a
    // 24 MiB merge can end before guest init's first look (the background
    // merge's own cuts are guest-merge-power-cut's).
    checks::set_rewindd_extra(cx, Some("[cow]\nlast_rollback_in_background = false\n"))?;
    let baseline = checks::prepare_checkpoint(cx, 2, "e2e: free map power cuts")?;
    cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    check_armed_over_free_map(cx, "attempt 1")?;
    cx.exec_checked("dd if=/dev/urandom of=/data/new-file.bin bs=1M count=16 2>/dev/null; sync")?;
    cx.say("attempt 1: update workload and a 16 MiB new file; power cut");
    cx.target.power_cut()?;

    let rec = cx.boot_ready(&BootPlan::rewind())?;
    checks::check_merged(cx, "attempt 2's boot merged attempt 1 away first", &rec, "the merge of attempt 1");
    check_armed_over_free_map(cx, "attempt 2 (the merged baseline is clean again)")?;
    let before = cow_used(&checks::status(cx)?);
    cx.exec_checked("dd if=/dev/urandom of=/data/media/video.bin bs=1M count=24 conv=notrunc,fsync 2>/dev/null; sync")?;
    let after = cow_used(&checks::status(cx)?);
    cx.check(
        "rewriting 24 MiB of baseline data in place copies it (used chunks stay protected)",
        after.saturating_sub(before) >= 24 << 20,
        format!("COW used {before} -> {after} bytes"),
    );
    cx.say("attempt 2: 24 MiB of baseline data rewritten in place; power cut");
    cx.target.power_cut()?;

    let cut = cx.boot_expect_end(
        &BootPlan::rewind().with_failure(Failure::power_cut_at(stage::MERGING)),
        BootEnd::HostPowerCut,
    )?;
    cx.say(&format!("final rollback: power cut after the merge started (stages {})", cut.stages.join(",")));
    let rec = cx.boot_ready(&BootPlan::rewind())?;
    cx.check("the boot after the cut prepares without errors", rec.errors.is_empty(), format!("{:?}", rec.errors));
    checks::check_phase(cx, "phase is rolled-back", "rolled-back")?;
    let now = checks::data_manifest(cx)?;
    cx.same_manifest("userdata is exactly the baseline (every file, checksummed)", &baseline, &now);
    checks::check_idle_stack(cx, "after the rollback")?;
    checks::fsck_after_umount(cx, "userdata fsck clean after the rollback")?;
    cx.shutdown()?;
    Ok(())
}

/// A baseline whose journal needs recovery (the old system lost power with
/// /data mounted, after the checkpoint was started): its bitmaps are not
/// proven current, so the attempt is armed as without the free map, every
/// chunk protected, and status says why; a new file is then copied like
/// any write, and the rollback ends at the baseline.
pub(super) fn unclean_baseline_protects_every_chunk(cx: &mut Ctx) -> Result<(), ScenarioError> {
    checks::set_rewindd_extra(cx, None)?;
    checks::begin_checkpoint(cx, 1, "e2e: unclean baseline")?;
    cx.exec_checked("echo written-before-the-cut > /data/before-cut.txt; sync")?;
    let baseline = checks::data_manifest(cx)?;
    cx.say("the old system loses power with /data mounted (its journal needs recovery)");
    cx.target.power_cut()?;

    cx.boot_ready(&BootPlan::rewind())?;
    let table = cx.exec_checked("dmsetup table rewind-userdata")?;
    cx.check(
        "attempt 1 is armed with one snapshot-origin line (no free map)",
        table.lines().count() == 1 && table.contains(" snapshot-origin "),
        table.trim().to_string(),
    );
    let st = checks::status(cx)?;
    let map = &st["partitions"][0]["free_map"];
    cx.check(
        "status says why the free map is not used (the journal needs recovery)",
        map["mapped"] == false && map["detail"].as_str().unwrap_or("").contains("journal needs recovery"),
        map.to_string(),
    );
    let before = cow_used(&st);
    cx.exec_checked("dd if=/dev/urandom of=/data/new-file.bin bs=1M count=8 conv=fsync 2>/dev/null; sync")?;
    let after = cow_used(&checks::status(cx)?);
    cx.check(
        "without the free map a new 8 MiB file is copied (the store grows by at least its size)",
        after.saturating_sub(before) >= 8 << 20,
        format!("COW used {before} -> {after} bytes"),
    );
    cx.shutdown()?;

    checks::boot_rolls_back_to(cx, "the next boot merged the attempt away", &baseline)?;
    checks::fsck_after_umount(cx, "userdata fsck clean after the rollback")?;
    cx.shutdown()?;
    Ok(())
}

/// `cow.last_rollback_in_background` (the default): the last rollback does
/// not hold the boot. Each attempt rewrites baseline data in place (all of
/// it copied) and is not committed; the next boot's PrepareUserdata
/// returns with the merge running, /data is mounted on the merging device
/// and already reads as the baseline, and rewindd ends the rollback when
/// the kernel is done. The same size rolled back with the merge waited for
/// (`false`) gives the "before" figure, side by side in one run, over
/// three sizes of changed data.
pub(super) fn last_rollback_in_background(cx: &mut Ctx) -> Result<(), ScenarioError> {
    const SIZES_MIB: [u64; 3] = [16, 48, 96];
    let ballast = SIZES_MIB[SIZES_MIB.len() - 1];
    // Half the free space for the store: the largest attempt fits.
    let extra =
        |background: bool| format!("[cow]\nfree_share_percent = 50\nlast_rollback_in_background = {background}\n");
    checks::set_rewindd_extra(cx, Some(&extra(true)))?;
    cx.boot_ready(&BootPlan::rewind())?;
    cx.run_baseline()?;
    checks::write_ballast(cx, ballast)?;
    // (MiB, background, power-on to data-mounted, to ready) per round.
    let mut figures: Vec<(u64, bool, f64, f64)> = Vec::new();
    for mib in SIZES_MIB {
        for background in [false, true] {
            let what = format!("{mib} MiB, background {background}");
            checks::start(cx, 1, &format!("e2e: last rollback, {what}"))?;
            let baseline = checks::data_manifest(cx)?;
            cx.shutdown()?;
            cx.boot_ready(&BootPlan::rewind())?;
            checks::rewrite_ballast(cx, mib)?;
            // The rollback boot reads the setting of this round.
            checks::set_rewindd_extra(cx, Some(&extra(background)))?;
            cx.shutdown()?;

            let rec = cx.boot_ready_merging(&BootPlan::rewind())?;
            let ms = |stage: &str| rec.reached_ms(stage).unwrap_or(0) as f64 / 1000.0;
            figures.push((mib, background, ms(stage::DATA_MOUNTED), ms(stage::READY)));
            let phase = checks::phase(&checks::status(cx)?);
            let now = checks::data_manifest(cx)?;
            cx.same_manifest(&format!("{what}: at ready /data reads as the baseline (phase {phase})"), &baseline, &now);
            cx.check(
                &format!(
                    "{what}: prepare-userdata {} the merge",
                    if background { "left running" } else { "waited for" }
                ),
                rec.reached(stage::MERGE_BACKGROUND) == background,
                format!("stages {}", rec.stages.join(",")),
            );
            cx.wait_background_merge(&rec)?;
            checks::check_phase(cx, &format!("{what}: phase is rolled-back"), "rolled-back")?;
            let h = checks::history(cx)?;
            let done = h
                .last_of(rewind_daemon::types::EventKind::RollbackFinished)
                .map(|e| e.detail.clone())
                .unwrap_or_default();
            cx.check(
                &format!("{what}: the history says how the merge ran"),
                done.contains("in the background") == background && done.contains("merged"),
                done,
            );
            checks::check_idle_stack(cx, &format!("{what}: after the rollback"))?;
            checks::check_cow_gone(cx, &format!("{what}: COW files removed"))?;
            let now = checks::data_manifest(cx)?;
            cx.same_manifest(&format!("{what}: userdata is exactly the baseline"), &baseline, &now);
        }
    }
    checks::fsck_after_umount(cx, "fsck clean after the last rollback")?;
    cx.shutdown()?;
    let curve: Vec<String> = SIZES_MIB
        .iter()
        .map(|&mib| {
            let of = |bg: bool| figures.iter().find(|f| f.0 == mib && f.1 == bg).copied().unwrap_or_default();
            let (w, b) = (of(false), of(true));
            format!(
                "{mib} MiB: data-mounted {:.1} s waited / {:.1} s background, ready {:.1} / {:.1} s",
                w.2, b.2, w.3, b.3
            )
        })
        .collect();
    cx.say(&format!("power-on after the last rollback (merge waited for / in the background): {}", curve.join("; ")));
    Ok(())
}
