//! rewindd's core on a real kernel (block mode): FIEMAP, the dm-snapshot
//! stack, rollback, commit, refusals, power cuts, overflow, Android's node
//! handling. The checks use witnesses rewindd does not share (filefrag,
//! lsattr, dmsetup, the host's view of the disk image, the guest's
//! manifest tool); `tests/guest_daemon.rs` runs each.

use std::time::{Duration, Instant};

use rewind_daemon::state::CowFile;
use rewind_daemon::types::EventKind::{Aborted, Committed, Overflow, Refused, RollbackFinished};

use super::checks::{self, check_phase, data_manifest, start, state, History};
use super::{Ctx, Needs, Scenario, ScenarioError};
use crate::failure::BootEnd;
use crate::plan::{stage, BootPlan, Failure, FsType};

/// Block mode (the dm-snapshot stack) only.
const BLOCK: Needs = Needs { fs: Some(FsType::Ext4), ..Needs::DAEMON };

pub static DAEMON: &[Scenario] = &[
    Scenario {
        name: "guest-fiemap-filefrag",
        summary: "The map rewindd records for each COW file is what filefrag reads; the files are immutable and zero-filled; a checkpoint cancelled before its first boot leaves no COW file",
        needs: BLOCK,
        run: fiemap_matches_filefrag,
    },
    Scenario {
        name: "guest-rollback-bytes",
        summary: "An attempt writes and dies; the next boot rolls back: every byte of the disk image outside the COW blocks is as when the checkpoint was armed, the tree equals the baseline",
        needs: BLOCK,
        run: rollback_restores_every_byte,
    },
    Scenario {
        name: "guest-commit",
        summary: "An attempt writes and commits live: every change stays, the stack is linear again without a reboot, the COW files are removed, the next boot is idle with the same data",
        needs: BLOCK,
        run: commit_keeps_changes,
    },
    Scenario {
        name: "guest-extents-changed",
        summary: "A COW file rewritten behind rewindd's back is detected before use: not armed, the refusal recorded and reported, /data still mounted",
        needs: BLOCK,
        run: changed_extents_are_refused,
    },
    Scenario {
        name: "guest-merge-power-cut",
        summary: "A power cut inside the final merge, which runs in the background after prepare-userdata (the default; /data left unmounted): the next boot finds the rollback intent, finishes the merge, and the image outside the COW blocks equals the baseline",
        needs: Needs { userdata_mib: Some(1024), ..BLOCK },
        run: background_merge_interrupted_by_power_cut,
    },
    Scenario {
        name: "guest-merge-power-cut-waited",
        summary: "guest-merge-power-cut with cow.last_rollback_in_background = false: the cut lands inside prepare-userdata's merge, the next boot finishes it, the image outside the COW blocks equals the baseline",
        needs: Needs { userdata_mib: Some(1024), ..BLOCK },
        run: waited_merge_interrupted_by_power_cut,
    },
    Scenario {
        name: "guest-cow-overflow",
        summary: "An attempt writes more than the COW store holds with no policy acting first: the kernel invalidates the snapshot, rewindd records that protection is lost and commits (every write kept)",
        needs: BLOCK,
        run: cow_overflow_is_detected,
    },
    Scenario {
        name: "guest-space-abort",
        summary: "The default space policy: 50 % and 80 % reported, an abort and reboot at 95 %; the next boot discards the attempt and arms the next, nothing it wrote survives",
        needs: BLOCK,
        run: space_abort_discards_the_attempt,
    },
    Scenario {
        name: "guest-ueventd-nodes",
        summary: "dev_nodes = \"ueventd\": a ueventd stand-in links /dev/mapper/<name> and rewindd waits for the links instead of making nodes; arm, cut, rollback to the baseline, links go with their devices",
        needs: BLOCK,
        run: ueventd_made_nodes_are_waited_for,
    },
];

/// The COW files the state record holds for the first partition.
fn recorded_cow_files(cx: &mut Ctx) -> Result<Vec<CowFile>, ScenarioError> {
    Ok(state(cx)?.partitions.first().map(|p| p.cow_files.clone()).unwrap_or_default())
}

/// The map rewindd recorded for each COW file is what filefrag reads, the
/// files are immutable and zero-filled, and the record's checksum holds.
fn fiemap_matches_filefrag(cx: &mut Ctx) -> Result<(), ScenarioError> {
    cx.boot_ready(&BootPlan::rewind())?;
    start(cx, 1, "guest-test")?;
    let st = state(cx)?;
    let files = st.partitions.first().map(|p| p.cow_files.clone()).unwrap_or_default();
    cx.require("a COW file is recorded", !files.is_empty(), format!("{st:?}"))?;
    for f in &files {
        let ff = cx.exec_checked(&format!("filefrag -v -b4096 {}", f.path))?;
        let theirs = checks::parse_filefrag(&ff);
        let ours: Vec<(u64, u64, u64)> =
            f.extents.iter().map(|e| (e.logical / 4096, e.physical / 4096, e.length / 4096)).collect();
        cx.check_eq(&format!("{}: recorded extents equal filefrag's", f.path), theirs, ours);
        let attrs = cx.exec_checked(&format!("lsattr {}", f.path))?;
        cx.check(
            &format!("{} is immutable", f.path),
            attrs.split_whitespace().next().unwrap_or("").contains('i'),
            attrs,
        );
        let head = cx.exec_checked(&format!("dd if={} bs=4096 count=1 2>/dev/null | od -An -tx1 | sort -u", f.path))?;
        cx.check_eq(
            &format!("{}: first 4 KiB are zero", f.path),
            "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 *".to_string(),
            head.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" "),
        );
    }
    // Cancel before the first boot: the files go away at once.
    cx.exec_checked("rewindctl commit --reason cancel")?;
    let left = checks::cow_files_left(cx.target)?;
    cx.check("cancelled checkpoint leaves no COW file", left.is_empty(), left.join(" "));
    cx.shutdown()?;
    Ok(())
}

/// start -> the new system writes and dies -> the next boot rolls back:
/// every block the baseline filesystem uses (outside the COW store's
/// blocks) is as it was when the checkpoint was armed (host-side image
/// hash; dumpe2fs says which blocks the baseline uses), the file tree
/// equals the baseline, and the COW files are gone once /data is mounted.
fn rollback_restores_every_byte(cx: &mut Ctx) -> Result<(), ScenarioError> {
    checks::begin_checkpoint(cx, 1, "guest-test")?;
    let cow = recorded_cow_files(cx)?;
    let baseline = data_manifest(cx)?;
    cx.shutdown()?;
    let image = checks::userdata_image(cx);
    let used = checks::BaselineBlocks::of(&image, &cow)?;
    let before = used.digest(&image)?;

    cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    cx.exec_checked("dd if=/dev/urandom of=/data/extra.bin bs=1M count=20 2>/dev/null; sync")?;
    let changed = data_manifest(cx)?;
    cx.changed_manifest("the attempt changed userdata", &baseline, &changed);
    cx.target.power_cut()?;

    // Rollback without mounting /data: the raw disk must be the baseline.
    cx.boot_ready(&BootPlan::rewind().without_data())?;
    let needs = cx.exec("rewindctl needs-rollback")?;
    cx.check_eq("needs-rollback is true", 0, needs.status);
    cx.shutdown()?;
    checks::check_blocks_restored(
        cx,
        "every block the baseline filesystem uses (COW blocks aside) is byte-identical to the baseline",
        &used,
        &before,
    )?;

    cx.boot_ready(&BootPlan::rewind())?;
    // rewindd deletes the COW files once /data is mounted; wait, so the
    // manifest does not race the deletion.
    checks::check_cow_gone(cx, "COW files removed after the final rollback")?;
    let now = data_manifest(cx)?;
    cx.same_manifest("userdata is exactly the baseline", &baseline, &now);
    check_phase(cx, "phase is rolled-back", "rolled-back")?;
    cx.shutdown()?;
    Ok(())
}

/// The "NN ms" a live commit took, from its history entry ("... live, NN ms ...").
fn commit_latency(h: &History) -> Option<String> {
    let detail = &h.last_of(Committed)?.detail;
    Some(detail.split("live, ").nth(1)?.split(' ').next()?.to_string())
}

/// start -> the new system writes and commits (live): every change stays,
/// the stack is back to linear without a reboot, the COW files are
/// removed, and the next boot is idle with the same data.
fn commit_keeps_changes(cx: &mut Ctx) -> Result<(), ScenarioError> {
    checks::begin_checkpoint(cx, 2, "guest-test")?;
    cx.shutdown()?;
    cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    let table = checks::dmsetup(cx.target, "table")?;
    cx.check("the attempt runs on snapshot-origin", table.contains("snapshot-origin"), table);
    cx.exec_checked("dd if=/dev/urandom of=/data/extra.bin bs=1M count=8 2>/dev/null; sync")?;
    let out = cx.exec("rewindctl commit --reason guest-test")?;
    cx.require("commit succeeds", out.success(), format!("{}{}", out.stdout, out.stderr))?;
    let changed = data_manifest(cx)?;
    let table = checks::dmsetup(cx.target, "table")?;
    cx.check(
        "after the live commit only rewind-userdata (linear) is left",
        table.lines().filter(|l| l.starts_with("rewind-")).count() == 1 && table.contains("linear"),
        table,
    );
    let left = checks::cow_files_left(cx.target)?;
    cx.check("COW files removed by the commit", left.is_empty(), left.join(" "));
    let h = checks::history(cx)?;
    cx.check("history records the commit", h.has(Committed), h.text());
    if let Some(ms) = commit_latency(&h) {
        cx.say(&format!("commit latency: {ms} ms"));
    }
    cx.shutdown()?;
    cx.boot_ready(&BootPlan::rewind())?;
    let now = data_manifest(cx)?;
    cx.same_manifest("committed data survives the reboot", &changed, &now);
    check_phase(cx, "phase is idle", "idle")?;
    cx.shutdown()?;
    Ok(())
}

/// A COW file whose blocks moved between boots (rewritten behind rewindd's
/// back) is detected before use: the attempt is not armed, the refusal is
/// recorded and reported, and the device still boots with /data mounted.
fn changed_extents_are_refused(cx: &mut Ctx) -> Result<(), ScenarioError> {
    cx.boot_ready(&BootPlan::rewind())?;
    start(cx, 2, "guest-test")?;
    let f = "/data/rewind/cow.0000";
    cx.exec_checked(&format!("chattr -i {f} && cp {f} {f}.new && rm {f} && mv {f}.new {f} && chattr +i {f} && sync"))?;
    cx.shutdown()?;
    let rec = cx.boot(&BootPlan::rewind())?;
    cx.require("the device still boots", rec.is_ready(), format!("last stage {}", rec.last_stage()))?;
    cx.check("prepare-userdata reported an error", !rec.errors.is_empty(), format!("{:?}", rec.errors));
    let st = check_phase(cx, "phase is idle (not armed)", "idle")?;
    let lost = st["protection_lost_reason"].as_str().unwrap_or("").to_string();
    cx.check("status reports the changed map", lost.contains("changed"), lost);
    let h = checks::history(cx)?;
    cx.check("history records the refusal", h.has(Refused), h.text());
    let table = checks::dmsetup(cx.target, "table")?;
    cx.check("no snapshot was loaded", !table.contains("snapshot"), table);
    let mounted = cx.exec_checked("cat /proc/mounts")?;
    cx.check("/data is mounted", mounted.contains(" /data "), "");
    cx.shutdown()?;
    Ok(())
}

fn background_merge_interrupted_by_power_cut(cx: &mut Ctx) -> Result<(), ScenarioError> {
    merge_interrupted_by_power_cut(cx, true)
}

fn waited_merge_interrupted_by_power_cut(cx: &mut Ctx) -> Result<(), ScenarioError> {
    merge_interrupted_by_power_cut(cx, false)
}

/// A power cut in the middle of the final merge: the next boot finds the
/// rollback intent, finishes the merge and ends at the baseline, byte for
/// byte outside the COW blocks. The cut is timed from the prepare-userdata
/// marker; a cut that missed the merge (before or after it) is retried
/// with a new checkpoint and another delay. `background`: the merge runs
/// after prepare-userdata returned (`cow.last_rollback_in_background`);
/// the boots that merge leave /data unmounted either way, because a mount
/// during a background merge is the old system writing its own data
/// (superblock, journal), which the block compare would count.
fn merge_interrupted_by_power_cut(cx: &mut Ctx, background: bool) -> Result<(), ScenarioError> {
    checks::set_rewindd_extra(cx, Some(&format!("[cow]\nlast_rollback_in_background = {background}\n")))?;
    cx.boot_ready(&BootPlan::rewind())?;
    cx.run_baseline()?;
    let mut interrupted = None;
    for delay_ms in [1800u64, 2400, 1300, 3000, 900] {
        // A fresh checkpoint for each try (the guest is running, /data
        // mounted, phase idle or rolled back).
        start(cx, 1, "guest-test")?;
        let cow = recorded_cow_files(cx)?;
        let cow_mib = cow.iter().map(|f| f.size_bytes).sum::<u64>() >> 20;
        // Enough changed chunks for the merge to take seconds under TCG:
        // baseline data, rewritten in place by the attempt (writes into
        // free space are not copied, so they would not be merged).
        let mib = cow_mib * 3 / 4;
        checks::write_ballast(cx, mib)?;
        let baseline = data_manifest(cx)?;
        cx.shutdown()?;
        let used = checks::BaselineBlocks::of(&checks::userdata_image(cx), &cow)?;
        let before = used.digest(&checks::userdata_image(cx))?;
        cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
        checks::rewrite_ballast(cx, mib)?;
        cx.target.power_cut()?;
        let rec = cx.boot(
            &BootPlan::rewind()
                .without_data()
                .with_failure(Failure::power_cut_at_after(stage::PREPARE_USERDATA, Duration::from_millis(delay_ms))),
        )?;
        // The merge runs inside prepare-userdata, or (the last rollback)
        // after it returned, in the background.
        let log = checks::merge_log(cx, rec.index);
        cx.say(&format!("cut at +{delay_ms} ms; merge log: {}", log.trim().replace('\n', " | ")));
        // Whether the cut boot had loaded the merge: the background merge
        // is announced before it runs; a waited-for one by its first
        // progress line.
        let loaded = rec.reached(if background { stage::MERGE_BACKGROUND } else { stage::MERGING });
        if rec.reached(stage::MERGING) || rec.reached(stage::MERGE_BACKGROUND) {
            cx.check_eq(
                &format!("cut at +{delay_ms} ms: the merge runs in the background: {background}"),
                background,
                rec.reached(stage::MERGE_BACKGROUND),
            );
        }
        // Whether the cut landed inside the merge is what the next boot
        // finds on /metadata, not the cut boot's log: progress lines come
        // every 200 ms, so a merge can end (and be recorded) after the last
        // line and before the cut. This boot leaves /data unmounted either
        // way: it finishes what the cut left, so the raw disk is comparable.
        let next = cx.boot_ready(&BootPlan::rewind().without_data())?;
        let rlog = checks::boot_log(cx, next.index, "rewindd.log");
        let found = rlog.lines().find(|l| l.contains("ready: phase")).unwrap_or("").to_string();
        if loaded && found.contains("phase RollingBack") {
            interrupted = Some((delay_ms, found, before, used, baseline));
            break;
        }
        // Missed (before the merge was loaded, or after it was recorded):
        // this boot finished the rollback; mount /data and try another delay.
        cx.say(&format!("cut at +{delay_ms} ms missed the merge (loaded: {loaded}; the next boot: {found})"));
        cx.shutdown()?;
        cx.boot_ready(&BootPlan::rewind())?;
    }
    let landed = interrupted.as_ref().map_or_else(
        || "no delay hit the merge".to_string(),
        |(d, found, ..)| format!("the cut at +{d} ms; the next boot: {found}"),
    );
    cx.require("a power cut landed inside the merge", interrupted.is_some(), landed)?;
    let Some((_, _, before, used, baseline)) = interrupted else { return Ok(()) };
    if let Some(e) = checks::history(cx)?.last_of(RollbackFinished) {
        cx.say(&format!("resumed merge: {} {}/{}: {}", e.kind, e.attempt, e.attempts, e.detail));
    }
    check_phase(cx, "phase is rolled-back", "rolled-back")?;
    cx.shutdown()?;
    checks::check_blocks_restored(
        cx,
        "every block the baseline filesystem uses (COW blocks aside) equals the baseline",
        &used,
        &before,
    )?;
    cx.boot_ready(&BootPlan::rewind())?;
    checks::check_cow_gone(cx, "COW files removed after the final rollback")?;
    let now = data_manifest(cx)?;
    cx.same_manifest("userdata is exactly the baseline", &baseline, &now);
    checks::fsck_after_umount(cx, "fsck clean after the resumed merge")?;
    cx.shutdown()?;
    Ok(())
}

/// The attempt writes more than the COW store holds: the kernel invalidates
/// the snapshot, rewindd detects it, records that protection is lost and
/// commits (the origin kept every write), never silently.
fn cow_overflow_is_detected(cx: &mut Ctx) -> Result<(), ScenarioError> {
    cx.boot_ready(&BootPlan::rewind())?;
    start(cx, 2, "guest-test")?;
    let cow_bytes = state(cx)?.partitions.first().map(|p| p.cow_bytes()).unwrap_or(0);
    // Baseline data to rewrite in place, more than the store holds.
    let mib = cow_bytes / (1 << 20) + 64;
    checks::write_ballast(cx, mib)?;
    cx.shutdown()?;
    cx.boot_ready(&BootPlan::rewind())?;
    // rewindd with a policy that never acts before the store is full, so
    // the overflow itself is what gets detected.
    checks::restart_rewindd(cx, "overflow", &["[space]", "abort_at_percent = 100", "poll_interval_ms = 200"])?;
    // Zeros over the random ballast: afterwards every byte of it shows
    // whether the write was kept.
    cx.exec_checked(&format!(
        "dd if=/dev/zero of={} bs=1M count={mib} conv=notrunc 2>/dev/null; sync",
        checks::BALLAST
    ))?;
    let t = Instant::now();
    let mut h = History::default();
    while t.elapsed() < Duration::from_secs(30) {
        h = checks::history(cx)?;
        if h.has(Overflow) && h.has(Committed) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    cx.check("history records the overflow", h.has(Overflow), h.text());
    let st = checks::status(cx)?;
    let lost = st["protection_lost_reason"].as_str().unwrap_or("").to_string();
    cx.check("status reports protection lost", lost.contains("overflow"), lost);
    cx.check_eq("phase is idle (committed)", "idle".to_string(), checks::phase(&st));
    let dmesg = cx.exec_checked("dmesg")?;
    cx.check("the kernel invalidated the snapshot", dmesg.contains("Invalidating snapshot"), "");
    let sums = cx.exec_checked(&format!(
        "echo 3 > /proc/sys/vm/drop_caches; sha256sum < {}; dd if=/dev/zero bs=1M count={mib} 2>/dev/null | sha256sum",
        checks::BALLAST
    ))?;
    let sums: Vec<&str> = sums.lines().map(|l| l.split_whitespace().next().unwrap_or("")).collect();
    cx.check(
        "the origin kept every write (the rewritten ballast reads back as the zeros written)",
        sums.len() == 2 && sums[0] == sums[1],
        format!("{sums:?}"),
    );
    cx.shutdown()?;
    Ok(())
}

/// The default space policy: the COW store fills slowly; rewindd reports
/// the 50 % and 80 % thresholds, and at 95 % records an abort and reboots
/// (before protection could be lost). The next boot discards the attempt
/// (merge) and arms the next one; nothing the attempt wrote survives.
fn space_abort_discards_the_attempt(cx: &mut Ctx) -> Result<(), ScenarioError> {
    checks::begin_checkpoint(cx, 3, "guest-test")?;
    let cow_bytes = state(cx)?.partitions.first().map(|p| p.cow_bytes()).unwrap_or(0);
    let mib = cow_bytes / (1 << 20) + 32;
    checks::write_ballast(cx, mib)?;
    let baseline = data_manifest(cx)?;
    cx.shutdown()?;
    cx.boot_ready(&BootPlan::rewind())?;
    // ~2 MiB/s, synced: the 95-100 % window lasts ~3 s, seen by a 1 s poll.
    checks::slow_fill(cx, mib)?;
    let rec = cx.target.wait_end(Duration::from_secs(240))?;
    cx.check_eq("rewindd rebooted the attempt", Some(BootEnd::GuestReset), rec.ended.clone());
    cx.boot_ready(&BootPlan::rewind())?;
    let st = checks::status(cx)?;
    cx.check_eq("the next attempt is armed", 2, st["attempt"].as_u64().unwrap_or(0));
    let h = checks::history(cx)?;
    let text = h.text();
    cx.check("the 50 % threshold was reported", text.contains("crossed 50%"), text.clone());
    cx.check("the 80 % threshold was reported", text.contains("crossed 80%"), text.clone());
    cx.check("the abort at 95 % was recorded", h.has_with(Aborted, "abort at 95%"), text.clone());
    cx.check("protection was never lost", !h.has(Overflow), text);
    let now = data_manifest(cx)?;
    cx.same_manifest("the aborted attempt left nothing behind", &baseline, &now);
    cx.shutdown()?;
    Ok(())
}

/// `rewind-*` entries of /dev/mapper as ("link"|"node"|"other", name).
fn mapper_entries(cx: &mut Ctx) -> Result<Vec<(String, String)>, ScenarioError> {
    let out = cx.exec_checked(
        "for f in /dev/mapper/rewind-*; do [ -e \"$f\" ] || [ -L \"$f\" ] || continue; \
         if [ -L \"$f\" ]; then k=link; elif [ -b \"$f\" ]; then k=node; else k=other; fi; \
         echo \"$k ${f##*/}\"; done",
    )?;
    Ok(out.lines().filter_map(|l| l.split_once(' ').map(|(k, n)| (k.to_string(), n.to_string()))).collect())
}

/// Every rewind device present is reachable through a link the ueventd
/// stand-in made (none is a node of rewindd's), and exactly `names` exist.
fn check_ueventd_links(cx: &mut Ctx, when: &str, names: &[&str]) -> Result<(), ScenarioError> {
    let entries = mapper_entries(cx)?;
    let detail = format!("{entries:?}");
    cx.check(
        &format!("{when}: every /dev/mapper/rewind-* entry is ueventd's link, none rewindd's node"),
        !entries.is_empty() && entries.iter().all(|(k, _)| k == "link"),
        detail,
    );
    let mut got: Vec<&str> = entries.iter().map(|(_, n)| n.as_str()).collect();
    got.sort_unstable();
    let mut want = names.to_vec();
    want.sort_unstable();
    cx.check_eq(&format!("{when}: rewind devices present"), want, got);
    Ok(())
}

/// Android's node handling (`dev_nodes = "ueventd"`, what
/// android/rewindd.toml sets): a ueventd stand-in (busybox `uevent` in the
/// guest init) links /dev/mapper/<name> to devtmpfs's dm-N and rewindd
/// must wait for those links instead of making nodes. A checkpoint arms,
/// the attempt is cut, the rollback merges, and userdata is the baseline;
/// links of removed devices are gone with them.
fn ueventd_made_nodes_are_waited_for(cx: &mut Ctx) -> Result<(), ScenarioError> {
    checks::set_boot_file(cx, "ueventd", Some(""))?;
    checks::set_rewindd_extra(cx, Some("dev_nodes = \"ueventd\"\n"))?;

    cx.boot_ready(&BootPlan::rewind())?;
    let conf = cx.exec_checked("cat /system/etc/rewindd.toml")?;
    cx.require("rewindd runs with dev_nodes = \"ueventd\"", conf.contains("dev_nodes = \"ueventd\""), conf)?;
    check_ueventd_links(cx, "idle", &["rewind-userdata"])?;
    cx.run_baseline()?;
    start(cx, 1, "guest-test")?;
    let baseline = data_manifest(cx)?;
    cx.shutdown()?;

    cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    check_ueventd_links(cx, "attempt 1", &["rewind-userdata", "rewind-userdata-cow", "rewind-userdata-snap"])?;
    let changed = data_manifest(cx)?;
    cx.changed_manifest("the attempt changed userdata", &baseline, &changed);
    cx.target.power_cut()?;

    cx.boot_ready(&BootPlan::rewind())?;
    checks::check_cow_gone(cx, "COW files removed after the rollback")?;
    check_phase(cx, "phase is rolled-back", "rolled-back")?;
    let now = data_manifest(cx)?;
    cx.same_manifest("userdata is exactly the baseline", &baseline, &now);
    check_ueventd_links(cx, "after the rollback", &["rewind-userdata"])?;
    cx.shutdown()?;
    Ok(())
}
