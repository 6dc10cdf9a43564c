//! Issue 4's end-to-end outcomes: what a phone sees across the boots of an
//! update, checked on the data itself (the guest's manifest of every file,
//! `e2fsck -fn` on the unmounted device) and on witnesses rewindd does not
//! share (dmsetup, df, the raw partition in a boot without rewind). The
//! "new system" is harness/workloads/update.sh (many small files, renames,
//! deletes, hard links, symlinks, xattrs, a large file rewritten in place,
//! directories created and removed; `/data/attempt-N` marks each attempt).
//!
//! f2fs mode (`--fs f2fs`, checkpoint=fs) runs the same scenarios: no dm
//! device and no COW file exists there, so the block-mode witnesses
//! (dmsetup stack, COW files, merges, fsck of the dm top device) become
//! f2fs's own: no dm device at all, /data mounted from the raw partition
//! with `checkpoint=disable` while an attempt runs and without it once
//! idle (/proc/mounts), status `unusable_bytes`, the history, and
//! fsck.f2fs of the unmounted raw partition.
//!
//! Per-scenario rewindd settings (COW size, space policy, a commit hook)
//! go in `share/boot/rewindd.extra.toml`, which the guest init appends to
//! rewindd's config at every boot ([`set_rewindd_extra`]).

use std::time::Duration;

use serde_json::Value;

use super::checks::{check_phase, status};
use super::{checks, Ctx, Scenario, ScenarioError};
use crate::failure::BootEnd;
use crate::manifest::{self, Manifest};
use crate::plan::{stage, BootPlan, Failure, FsType};
use crate::target::TargetError;

pub static E2E: &[Scenario] = &[
    Scenario {
        name: "good-boot-commits",
        summary: "The attempt migrates /data and reaches boot-completed (commit): two more boots keep every change; no snapshot/COW device, no COW file, the COW space is free again",
        needs_daemon: true,
        run: good_boot_commits,
    },
    Scenario {
        name: "fail-then-succeed",
        summary: "Attempt 1 panics, attempt 2 commits: userdata is the baseline plus attempt 2's changes only, and stays so across a reboot",
        needs_daemon: true,
        run: fail_then_succeed,
    },
    Scenario {
        name: "power-cut-during-rollback",
        summary: "The final rollback's merge is cut early, early again (twice in a row), in the middle and late: userdata ends at the baseline, fsck clean",
        needs_daemon: true,
        run: power_cut_during_rollback,
    },
    Scenario {
        name: "power-cut-during-commit",
        summary: "Power cut after the commit intent, before the commit ends: the next boot rolls forward (every change kept, idle, no snapshot)",
        needs_daemon: true,
        run: power_cut_during_commit,
    },
    Scenario {
        name: "abort",
        summary: "AbortChanges without retry during an attempt, reboot: rolled back to the baseline, NeedsRollback, history shows the abort and the rollback",
        needs_daemon: true,
        run: abort,
    },
    Scenario {
        name: "no-checkpoint",
        summary: "Ordinary boots without a checkpoint: linear passthrough, no COW, data kept; rewindd's boot overhead vs a raw boot",
        needs_daemon: true,
        run: no_checkpoint,
    },
    Scenario {
        name: "overflow",
        summary: "An attempt writes more than a small COW store holds (policy abort): recorded at 95 %, reboot, attempt discarded, baseline intact, fsck clean",
        needs_daemon: true,
        run: overflow_abort,
    },
    Scenario {
        name: "overflow-commit",
        summary: "An attempt writes more than a small COW store holds (policy commit): committed early, protection_lost reported, every write kept, fsck clean",
        needs_daemon: true,
        run: overflow_commit,
    },
    Scenario {
        name: "extents-tampered",
        summary: "A COW file is rewritten (its blocks move) in a boot without rewind: rewindd refuses to arm, names the file, userdata unchanged, fsck clean",
        needs_daemon: true,
        run: extents_tampered,
    },
];

/// The COW store lives in /data/rewind; it is rewindd's, not user data.
const EXCLUDE: &[&str] = &["rewind"];
/// The fstab's /data device in block mode (always present).
const TOP: &str = "/dev/block/mapper/rewind-userdata";
const RAW: &str = "/dev/block/by-name/userdata";

fn is_f2fs(cx: &Ctx) -> bool {
    cx.target.fs() == FsType::F2fs
}

/// /data as /proc/mounts shows it: (source device, resolved; options;
/// the raw partition, resolved).
fn data_mount(cx: &mut Ctx) -> Result<(String, String, String), ScenarioError> {
    let out = cx.exec_checked(&format!(
        "l=$(awk '$2 == \"/data\" {{ print $1, $4 }}' /proc/mounts | tail -n 1); \
         echo \"$(readlink -f ${{l%% *}})\"; echo \"${{l#* }}\"; readlink -f {RAW}"
    ))?;
    let mut it = out.lines().map(|l| l.trim().to_string());
    Ok((it.next().unwrap_or_default(), it.next().unwrap_or_default(), it.next().unwrap_or_default()))
}

/// f2fs mode: /data is mounted with checkpoint=disable (an attempt runs).
fn check_f2fs_armed(cx: &mut Ctx, what: &str) -> Result<bool, ScenarioError> {
    let (dev, opts, raw) = data_mount(cx)?;
    Ok(cx.check(
        &format!("{what}: /data is the raw partition mounted with checkpoint=disable"),
        dev == raw && opts.contains("checkpoint=disable"),
        format!("/data from {dev} (raw {raw}) with {opts}"),
    ))
}

fn other(msg: String) -> ScenarioError {
    ScenarioError::Target(TargetError::Other(msg))
}

/// Writes (or with None removes) the TOML the guest init appends to
/// rewindd's config from the next boot on. Top-level keys first: what
/// follows a `[table]` header belongs to that table.
fn set_rewindd_extra(cx: &mut Ctx, toml: Option<&str>) -> Result<(), ScenarioError> {
    let path = cx.target.artifacts_dir().join("share/boot/rewindd.extra.toml");
    let res = match toml {
        Some(t) => std::fs::write(&path, t),
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        },
    };
    res.map_err(|e| other(format!("{}: {e}", path.display())))
}

fn start(cx: &mut Ctx, attempts: u32, reason: &str) -> Result<(), ScenarioError> {
    let out = cx.exec(&format!("rewindctl start --attempts {attempts} --reason '{reason}'"))?;
    cx.require("rewindctl start succeeds", out.success(), format!("{}{}", out.stdout, out.stderr))
}

/// (kind, detail) of every history event, oldest first.
fn history(cx: &mut Ctx) -> Result<Vec<(String, String)>, ScenarioError> {
    let out = cx.exec_checked("rewindctl history --json")?;
    let v: Value = serde_json::from_str(&out).map_err(|e| other(format!("history --json: {e}: {out}")))?;
    let events = v.as_array().or_else(|| v["events"].as_array()).cloned().unwrap_or_default();
    Ok(events
        .iter()
        .map(|e| (e["kind"].as_str().unwrap_or("").to_string(), e["detail"].as_str().unwrap_or("").to_string()))
        .collect())
}

fn history_text(h: &[(String, String)]) -> String {
    h.iter().map(|(k, d)| format!("{k}: {d}")).collect::<Vec<_>>().join(" | ")
}

fn kinds(h: &[(String, String)]) -> Vec<&str> {
    h.iter().map(|(k, _)| k.as_str()).collect()
}

fn data_manifest(cx: &mut Ctx) -> Result<Manifest, ScenarioError> {
    checks::manifest(cx.target, "/data", EXCLUDE)
}

/// dm devices other than the top one, and whether the top is linear.
fn dm_stack(cx: &mut Ctx) -> Result<(Vec<String>, bool, String), ScenarioError> {
    let ls = checks::dmsetup(cx.target, "ls")?;
    let names: Vec<String> =
        ls.lines().filter_map(|l| l.split_whitespace().next()).filter(|n| *n != "No").map(str::to_string).collect();
    let table = checks::dmsetup(cx.target, "table rewind-userdata")?;
    let linear = table.lines().count() == 1 && table.split_whitespace().nth(2) == Some("linear");
    let others = names.into_iter().filter(|n| n != "rewind-userdata").collect();
    Ok((others, linear, format!("ls: {} | table: {}", ls.trim().replace('\n', ", "), table.trim())))
}

/// The idle stack: only rewind-userdata, linear. f2fs mode: no dm device
/// at all, /data mounted from the raw partition without checkpoint=disable.
fn check_idle_stack(cx: &mut Ctx, when: &str) -> Result<(), ScenarioError> {
    if is_f2fs(cx) {
        let ls = checks::dmsetup(cx.target, "ls")?;
        let (dev, opts, raw) = data_mount(cx)?;
        cx.check(
            &format!("{when}: no dm device; /data is the raw partition without checkpoint=disable"),
            ls.trim() == "No devices found" && dev == raw && !opts.contains("checkpoint=disable"),
            format!("dmsetup ls: {} | /data from {dev} (raw {raw}) with {opts}", ls.trim()),
        );
        return Ok(());
    }
    let (others, linear, detail) = dm_stack(cx)?;
    cx.check(
        &format!("{when}: only rewind-userdata (linear), no snapshot or COW device"),
        others.is_empty() && linear,
        detail,
    );
    Ok(())
}

/// Unmounts /data and fscks `device` (read-only); records the check.
/// f2fs mode: fsck.f2fs of the raw partition (there is no dm device).
fn fsck_after_umount(cx: &mut Ctx, device: &str, what: &str) -> Result<(), ScenarioError> {
    let device = if is_f2fs(cx) { RAW } else { device };
    cx.exec_checked("sync; umount /data")?;
    let fs = cx.target.fs();
    let (clean, out) = checks::fsck(cx.target, fs, device)?;
    cx.check(&format!("userdata fsck clean {what}"), clean, out);
    Ok(())
}

/// Free KiB of /data and KiB used by its files (du), as the guest sees.
fn df_du(cx: &mut Ctx) -> Result<(u64, u64), ScenarioError> {
    let out = cx.exec_checked("sync; df -P -k /data | tail -n 1 | awk '{print $4}'; du -sk /data | cut -f1")?;
    let v: Vec<u64> = out.split_whitespace().filter_map(|s| s.parse().ok()).collect();
    match v.as_slice() {
        [free, used] => Ok((*free, *used)),
        _ => Err(other(format!("df/du printed {out:?}"))),
    }
}

fn secs(ms: Option<u64>) -> String {
    ms.map(|m| format!("{:.2} s", m as f64 / 1000.0)).unwrap_or_else(|| "not reached".into())
}

/// Boot, baseline, checkpoint with `attempts`, baseline manifest, power off.
fn prepare_checkpoint(cx: &mut Ctx, attempts: u32, reason: &str) -> Result<Manifest, ScenarioError> {
    cx.boot_ready(&BootPlan::rewind())?;
    cx.run_baseline()?;
    start(cx, attempts, reason)?;
    let baseline = data_manifest(cx)?;
    cx.shutdown()?;
    Ok(baseline)
}

/// 1. A good boot commits; the changes stay; the stack and the store are gone.
fn good_boot_commits(cx: &mut Ctx) -> Result<(), ScenarioError> {
    cx.boot_ready(&BootPlan::rewind())?;
    cx.run_baseline()?;
    let (free_before, du_before) = df_du(cx)?;
    start(cx, 2, "e2e: good boot")?;
    let (free_armed, _) = df_du(cx)?;
    let baseline = data_manifest(cx)?;
    if is_f2fs(cx) {
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
    let committed = data_manifest(cx)?;
    cx.changed_manifest("the attempt changed userdata", &baseline, &committed);
    cx.check("the attempt's marker is there", committed.get("attempt-1").is_some(), "");
    let st = check_phase(cx, "phase is idle after the commit", "idle")?;
    let h = history(cx)?;
    cx.check("history records the commit", kinds(&h).contains(&"committed"), history_text(&h));
    if is_f2fs(cx) {
        // The commit remounted /data live with checkpoint=enable.
        check_idle_stack(cx, "f2fs: after the commit (live remount)")?;
        let unusable = st["partitions"][0]["unusable_bytes"].as_u64();
        cx.check_eq("f2fs: status reports no unusable space after the commit", Some(0), unusable);
        cx.check(
            "f2fs: history shows the attempt armed, then committed live",
            matches!(
                (h.iter().position(|(k, _)| k == "attempt"), h.iter().rposition(|(k, d)| k == "committed" && d.contains("live"))),
                (Some(a), Some(c)) if a < c
            ),
            history_text(&h),
        );
    }
    cx.shutdown()?;

    for n in 1..=2 {
        cx.boot_ready(&BootPlan::rewind())?;
        checks::check_commit_kept(cx, &format!("reboot {n}"), &committed, EXCLUDE)?;
        check_idle_stack(cx, &format!("reboot {n}"))?;
        check_phase(cx, &format!("reboot {n}: phase is idle"), "idle")?;
        if n == 2 {
            // The store's space is free again: free space moved by what the
            // attempt's files added (du), within 2 MiB (directory blocks,
            // the journal's own accounting).
            let (free_after, du_after) = df_du(cx)?;
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
            fsck_after_umount(cx, TOP, "after the commit and two reboots")?;
        }
        cx.shutdown()?;
    }
    Ok(())
}

/// Paths attempt `n` of update.sh leaves behind.
fn attempt_artifacts(n: u32) -> Vec<String> {
    vec![
        format!("attempt-{n}"),
        format!("app/com.example.new{n}"),
        format!("app/com.example.new{n}/files/n0"),
        format!("user/0/video.hardlink.{n}"),
        format!("misc/empty.{n}"),
        format!("cache/tmp{n}/a"),
    ]
}

/// 2. Attempt 1 fails, attempt 2 commits: only attempt 2's changes.
fn fail_then_succeed(cx: &mut Ctx) -> Result<(), ScenarioError> {
    let baseline = prepare_checkpoint(cx, 2, "e2e: fail then succeed")?;
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
        secs(rec.reached_ms(stage::DATA_MOUNTED)),
        if rec.reached(stage::MERGING) { "seen" } else { "not seen" }
    ));
    if is_f2fs(cx) {
        // f2fs mode: no merge; attempt 1's panic dropped it (no checkpoint
        // was written), and prepare-userdata recorded its rollback before
        // arming attempt 2.
        let h = history(cx)?;
        let first = h.iter().position(|(k, _)| k == "attempt");
        let rolled = h.iter().position(|(k, _)| k == "rollback-finished");
        let second = h.iter().rposition(|(k, _)| k == "attempt");
        cx.check(
            "f2fs: attempt 2's boot recorded attempt 1's rollback before arming attempt 2 (no merge)",
            !rec.reached(stage::MERGING)
                && matches!((first, rolled, second), (Some(a), Some(r), Some(b)) if a < r && r < b),
            history_text(&h),
        );
    } else {
        let merged = merge_summary(cx, rec.index);
        cx.check(
            "attempt 2's boot merged attempt 1 away first",
            rec.reached(stage::MERGING),
            format!(
                "power-on to data-mounted {} with the merge of attempt 1 vs {} in boot 1 (no checkpoint); prepare-userdata: {merged}",
                secs(rec.reached_ms(stage::DATA_MOUNTED)),
                secs(cx.target.boots().first().and_then(|b| b.reached_ms(stage::DATA_MOUNTED))),
            ),
        );
    }
    let committed = data_manifest(cx)?;
    for p in attempt_artifacts(1) {
        cx.check(&format!("nothing of attempt 1 survives: {p} is absent"), committed.get(&p).is_none(), "");
    }
    for p in attempt_artifacts(2) {
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
    let left = checks::wait_cow_gone(cx.target)?;
    cx.check("no COW file left", left.is_empty(), left.join(" "));
    let now = data_manifest(cx)?;
    cx.same_manifest("after a reboot userdata equals attempt 2's committed state", &committed, &now);
    check_idle_stack(cx, "after the reboot")?;
    let h = history(cx)?;
    let k = kinds(&h);
    cx.check(
        "history: attempt 1, its rollback, attempt 2, committed",
        k.iter().filter(|x| **x == "attempt").count() == 2
            && k.contains(&"rollback-finished")
            && k.contains(&"committed"),
        history_text(&h),
    );
    fsck_after_umount(cx, TOP, "after the commit")?;
    cx.shutdown()?;
    Ok(())
}

/// Last "NN% (a/b)" progress of a prepare-userdata log, and whether the
/// prepare finished.
fn merge_progress(log: &str) -> (Option<(u32, String)>, bool) {
    let last = log
        .lines()
        .rev()
        .filter(|l| l.starts_with("merg") && l.contains('%'))
        .filter_map(|l| {
            let rest = l.split_once(": ")?.1;
            let (pct, tail) = rest.split_once('%')?;
            Some((pct.trim().parse::<u32>().ok()?, tail.trim().to_string()))
        })
        .next();
    (last, log.contains("userdata prepared"))
}

/// "(21 MiB/51 MiB)" -> (done, total) in bytes (rewindctl's human_bytes).
fn merge_bytes(tail: &str) -> Option<(u64, u64)> {
    let inner = tail.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (a, b) = inner.split_once('/')?;
    let bytes = |s: &str| -> Option<u64> {
        let (num, unit) = s.trim().split_once(' ')?;
        let v: f64 = num.parse().ok()?;
        let mul = match unit {
            "B" => 1u64,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => return None,
        };
        Some((v * mul as f64) as u64)
    };
    Some((bytes(a)?, bytes(b)?))
}

/// "last progress, prepared" of a boot's prepare-userdata, for details.
fn merge_summary(cx: &mut Ctx, boot: u32) -> String {
    let log = prepare_log(cx, boot);
    let (last, prepared) = merge_progress(&log);
    format!(
        "merge {}{}",
        last.map(|(p, t)| format!("{p}% {t}")).unwrap_or_else(|| "none".into()),
        if prepared { ", prepared" } else { ", not prepared" }
    )
}

fn prepare_log(cx: &mut Ctx, boot: u32) -> String {
    std::fs::read_to_string(cx.target.artifacts_dir().join(format!("share/logs/boot-{boot}/prepare-userdata.log")))
        .unwrap_or_default()
}

/// 3. Power cuts at several points of the final rollback's merge.
fn power_cut_during_rollback(cx: &mut Ctx) -> Result<(), ScenarioError> {
    // Half the free space for the COW store, so an attempt can dirty enough
    // chunks (~170 MiB on the default 512 MiB disk) for a merge of seconds.
    set_rewindd_extra(cx, Some("[cow]\nfree_share_percent = 50\n"))?;
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
    for round in 1..=3 {
        if landed.iter().all(Option::is_some) {
            break;
        }
        start(cx, 1, &format!("e2e: rollback cuts, round {round}"))?;
        let st = status(cx)?;
        let cow = st["partitions"][0]["cow_bytes"].as_u64().unwrap_or(0);
        let base = data_manifest(cx)?;
        if let Some(b) = &baseline {
            cx.same_manifest(&format!("round {round} starts from the baseline"), b, &base);
        }
        baseline.get_or_insert(base);
        let (free, _) = df_du(cx)?;
        cx.shutdown()?;
        cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
        let mib = ((cow * 3 / 4) >> 20).min((free >> 10).saturating_sub(32));
        cx.exec_checked(&format!("dd if=/dev/zero of=/data/big.bin bs=1M count={mib} 2>/dev/null; sync"))?;
        cx.say(&format!("round {round}: COW store {} MiB, attempt dirtied {mib} MiB more; power cut", cow >> 20));
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
            let log = prepare_log(cx, n);
            let (last, prepared) = merge_progress(&log);
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
            let bytes = last.as_ref().and_then(|(_, t)| merge_bytes(t));
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
        let log = prepare_log(cx, rec.index);
        cx.say(&format!(
            "round {round}: final boot {}: data-mounted at {} (resumed merge: {})",
            rec.index,
            secs(rec.reached_ms(stage::DATA_MOUNTED)),
            merge_progress(&log).0.map(|(p, t)| format!("{p}% {t}")).unwrap_or_else(|| "none left".into())
        ));
        let needs = cx.exec("rewindctl needs-rollback")?;
        cx.check_eq(&format!("round {round}: needs-rollback is true"), 0, needs.status);
        let left = checks::wait_cow_gone(cx.target)?;
        cx.check(&format!("round {round}: COW files removed"), left.is_empty(), left.join(" "));
        let now = data_manifest(cx)?;
        cx.same_manifest(
            &format!("round {round}: userdata is exactly the baseline"),
            baseline.as_ref().expect("set above"),
            &now,
        );
        check_idle_stack(cx, &format!("round {round}"))?;
    }
    for (i, (label, lo, hi)) in points.iter().enumerate() {
        cx.check(
            &format!("a power cut landed inside the merge: {label} ({lo}-{hi} % of the rollback)"),
            landed[i].is_some(),
            landed[i].clone().unwrap_or_else(|| "never landed inside the merge".into()),
        );
    }
    fsck_after_umount(cx, TOP, "after the interrupted rollbacks")?;
    cx.shutdown()?;
    Ok(())
}

/// 4. A power cut between the commit's intent and its end rolls forward.
fn power_cut_during_commit(cx: &mut Ctx) -> Result<(), ScenarioError> {
    // The configured commit command runs after the Committing intent is on
    // /metadata and before the table reload (daemon/src/boot.rs, commit):
    // it announces itself on the console and waits, so the host's power
    // cut lands between the two.
    set_rewindd_extra(
        cx,
        Some("commit_command = [\"sh\", \"-c\", \"echo '@@REWIND-STAGE commit-intent@@' > /dev/console; sleep 60\"]\n"),
    )?;
    let baseline = prepare_checkpoint(cx, 2, "e2e: commit cut")?;
    let rec = cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    cx.check("the attempt ran its workload", rec.reached(stage::WORKLOAD_DONE), rec.stages.join(","));
    cx.exec_checked("sync")?;
    let attempt = data_manifest(cx)?;
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
    if is_f2fs(cx) {
        // f2fs mode remounts with checkpoint=enable before the hook: the
        // commit's effect on the data is done when the power goes.
        let (dev, opts, raw) = data_mount(cx)?;
        cx.check(
            "f2fs: /data was already remounted without checkpoint=disable (before the hook)",
            dev == raw && !opts.contains("checkpoint=disable"),
            format!("/data from {dev} (raw {raw}) with {opts}"),
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
    set_rewindd_extra(cx, Some("commit_command = [\"sh\", \"-c\", \"echo ran >> /metadata/commit-command.log\"]\n"))?;

    let rec = cx.boot_ready(&BootPlan::rewind())?;
    cx.check("the next boot prepares without errors", rec.errors.is_empty(), format!("{:?}", rec.errors));
    cx.check("the next boot did not merge (never back)", !rec.reached(stage::MERGING), rec.stages.join(","));
    check_phase(cx, "phase is idle (rolled forward)", "idle")?;
    let h = history(cx)?;
    cx.check(
        "history: commit begun, then committed at boot, no rollback",
        kinds(&h).contains(&"commit-begun")
            && h.iter().any(|(k, d)| k == "committed" && d.contains("interruption"))
            && !kinds(&h).iter().any(|k| k.starts_with("rollback")),
        history_text(&h),
    );
    if is_f2fs(cx) {
        // Read from f2fs's last checkpoint on disk at the next boot.
        cx.check(
            "f2fs: the roll-forward says the attempt's changes were kept",
            h.iter().any(|(k, d)| k == "committed" && d.contains("changes are kept")),
            history_text(&h),
        );
    }
    let left = checks::wait_cow_gone(cx.target)?;
    cx.check("no COW file left", left.is_empty(), left.join(" "));
    let now = data_manifest(cx)?;
    cx.same_manifest("every change of the attempt is there (manifest == the attempt's)", &attempt, &now);
    check_idle_stack(cx, "after the roll-forward")?;
    let needs = cx.exec("rewindctl needs-rollback")?;
    cx.check_eq("needs-rollback is false", 1, needs.status);
    check_pending_commit_command(cx)?;
    fsck_after_umount(cx, TOP, "after the rolled-forward commit")?;
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
    let h = history(cx)?;
    cx.check(
        "history: the commit command is pending after the roll-forward",
        kinds(&h).contains(&"commit-command-pending"),
        history_text(&h),
    );
    let n = runs(cx)?;
    cx.check_eq("the roll-forward at boot did not run the commit command", 0, n);
    let out = cx.exec("rewindctl commit --reason 'e2e: boot completed'")?;
    cx.check_eq("rewindctl commit (boot completed) succeeds", 0, out.status);
    let n = runs(cx)?;
    cx.check_eq("it ran the owed commit command once", 1, n);
    let h = history(cx)?;
    cx.check(
        "history: the commit command ran as a logged step",
        kinds(&h).last() == Some(&"commit-command"),
        history_text(&h),
    );
    let out = cx.exec("rewindctl commit --reason 'e2e: boot completed'")?;
    cx.check(
        "a second commit call has nothing to commit and does not run the command again",
        out.status == 0 && out.stdout.contains("nothing to commit"),
        format!("exit {}: {}", out.status, out.stdout.trim()),
    );
    let n = runs(cx)?;
    cx.check_eq("the command ran exactly once", 1, n);
    set_rewindd_extra(cx, None)
}

/// 5. AbortChanges without retry: the next boot rolls back for good.
fn abort(cx: &mut Ctx) -> Result<(), ScenarioError> {
    let baseline = prepare_checkpoint(cx, 3, "e2e: abort")?;
    cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    let changed = data_manifest(cx)?;
    cx.changed_manifest("the attempt changed userdata", &baseline, &changed);
    if is_f2fs(cx) {
        check_f2fs_armed(cx, "f2fs: during the attempt")?;
    }
    let out = cx.exec("rewindctl abort --reason 'e2e: health check failed'")?;
    cx.require("rewindctl abort succeeds", out.success(), format!("{}{}", out.stdout, out.stderr))?;
    cx.shutdown()?;

    let rec = cx.boot_ready(&BootPlan::rewind())?;
    cx.check("the boot after the abort prepares without errors", rec.errors.is_empty(), format!("{:?}", rec.errors));
    if !is_f2fs(cx) {
        // (f2fs mode has no merge: the shutdown without a commit dropped
        // the attempt; the history and the manifest below are the checks.)
        let merged = merge_summary(cx, rec.index);
        cx.check(
            "the boot after the abort merged the attempt away",
            rec.reached(stage::MERGING),
            format!(
                "power-on to data-mounted {} with the rollback merge vs {} in boot 1 (no checkpoint); prepare-userdata: {merged}",
                secs(rec.reached_ms(stage::DATA_MOUNTED)),
                secs(cx.target.boots().first().and_then(|b| b.reached_ms(stage::DATA_MOUNTED))),
            ),
        );
    }
    cx.say(&format!(
        "boot after abort (rollback merge before /data): data-mounted at {}",
        secs(rec.reached_ms(stage::DATA_MOUNTED))
    ));
    let needs = cx.exec("rewindctl needs-rollback")?;
    cx.check_eq("needs-rollback is true (exit 0)", 0, needs.status);
    check_phase(cx, "phase is rolled-back", "rolled-back")?;
    let h = history(cx)?;
    let aborted = h.iter().position(|(k, d)| k == "aborted" && d.contains("health check failed"));
    let rolled = h.iter().rposition(|(k, _)| k == "rollback-finished");
    cx.check(
        "history: aborted (with the reason), then the rollback",
        matches!((aborted, rolled), (Some(a), Some(r)) if a < r),
        history_text(&h),
    );
    cx.check(
        "no further attempt was armed after the abort",
        h.iter().filter(|(k, _)| k == "attempt").count() == 1,
        history_text(&h),
    );
    let left = checks::wait_cow_gone(cx.target)?;
    cx.check("COW files removed", left.is_empty(), left.join(" "));
    let now = data_manifest(cx)?;
    cx.same_manifest("userdata is exactly the baseline", &baseline, &now);
    check_idle_stack(cx, "after the rollback")?;
    fsck_after_umount(cx, TOP, "after the rollback")?;
    cx.shutdown()?;
    Ok(())
}

/// 6. No checkpoint: passthrough, data kept, and rewindd's boot overhead.
fn no_checkpoint(cx: &mut Ctx) -> Result<(), ScenarioError> {
    cx.boot_ready(&BootPlan::rewind())?;
    cx.run_baseline()?;
    let written = data_manifest(cx)?;
    cx.shutdown()?;
    let mut rewind_ms = Vec::new();
    for n in 1..=2 {
        let rec = cx.boot_ready(&BootPlan::rewind())?;
        cx.check(
            &format!("boot {}: no merge, no errors", rec.index),
            !rec.reached(stage::MERGING) && rec.errors.is_empty(),
            format!("{:?}", rec.errors),
        );
        rewind_ms.push(rec.reached_ms(stage::DATA_MOUNTED));
        if is_f2fs(cx) {
            // f2fs mode: init mounts the raw partition; no dm device.
            check_idle_stack(cx, &format!("reboot {n}"))?;
        } else {
            let mounts = cx.exec_checked("grep ' /data ' /proc/mounts")?;
            cx.check(
                &format!("reboot {n}: /data is mounted from the dm top device"),
                mounts
                    .split_whitespace()
                    .next()
                    .is_some_and(|d| d.contains("rewind-userdata") || d.starts_with("/dev/dm-")),
                mounts.trim().to_string(),
            );
            check_idle_stack(cx, &format!("reboot {n}"))?;
            let sectors = checks::sectors(cx.target, RAW)?;
            let table = checks::dmsetup(cx.target, "table rewind-userdata")?;
            cx.check(
                &format!("reboot {n}: the top is linear over the whole raw partition at offset 0"),
                table.trim().starts_with(&format!("0 {sectors} linear ")) && table.trim().ends_with(" 0"),
                table.trim().to_string(),
            );
        }
        let left = checks::cow_files_left(cx.target)?;
        cx.check(&format!("reboot {n}: no COW file"), left.is_empty(), left.join(" "));
        check_phase(cx, &format!("reboot {n}: phase idle"), "idle")?;
        let now = data_manifest(cx)?;
        cx.same_manifest(&format!("reboot {n}: data kept"), &written, &now);
        if n == 2 {
            fsck_after_umount(cx, TOP, "after ordinary boots")?;
        }
        cx.shutdown()?;
    }
    let rec = cx.boot_ready(&BootPlan::raw())?;
    let raw_ms = rec.reached_ms(stage::DATA_MOUNTED);
    let now = data_manifest(cx)?;
    cx.same_manifest("the raw partition holds the same data", &written, &now);
    cx.shutdown()?;
    let with = rewind_ms.iter().flatten().copied().min();
    let detail = match (with, raw_ms) {
        (Some(w), Some(r)) => format!(
            "power-on to /data mounted: with rewindd {} (boots: {}), raw {}: ratio {:.2}, +{} ms",
            secs(Some(w)),
            rewind_ms.iter().map(|m| secs(*m)).collect::<Vec<_>>().join(", "),
            secs(Some(r)),
            w as f64 / r.max(1) as f64,
            w as i64 - r as i64
        ),
        _ => format!("data-mounted not reached: rewind {rewind_ms:?}, raw {raw_ms:?}"),
    };
    cx.say(&detail);
    // Under TCG the whole boot is seconds; rewindd's start and an idle
    // prepare must not add more than 5 s.
    cx.check(
        "rewindd's boot overhead (data-mounted, rewind vs raw) is under 5 s",
        matches!((with, raw_ms), (Some(w), Some(r)) if w < r + 5000),
        detail,
    );
    Ok(())
}

/// Fills /data in the background at ~1.5 MiB/s (synced), so the space watch
/// sees the store fill.
fn slow_fill(cx: &mut Ctx, mib: u64) -> Result<(), ScenarioError> {
    cx.exec_checked(&format!(
        "setsid sh -c 'i=0; while [ $i -lt {mib} ]; do dd if=/dev/urandom of=/data/fill.$i bs=1M count=1 2>/dev/null; sync; usleep 500000; i=$((i+1)); done; echo done > /data/fill.done' > /dev/null 2>&1 < /dev/null &"
    ))?;
    Ok(())
}

/// f2fs mode's "COW" is the space f2fs hides as unusable while
/// checkpointing is off: blocks valid at the last checkpoint that the
/// attempt overwrote or deleted (f2fs reuses at once what the attempt
/// itself wrote and freed: measured, a write-two-delete-one fill of 350 MiB
/// left unusable at 9 MiB while free fell to 0). rewind applies the block
/// thresholds to unusable / (unusable + free), so the share reaches 95 %
/// only when the free space left is under 1/19 of the unusable space: an
/// attempt that only adds data builds no unusable space and meets ENOSPC
/// first (at 100 %, as without rewind). The meaningful overflow is an
/// attempt that rewrites much checkpointed data: `ballast_mib` of the
/// baseline's ballast.bin is rewritten in place (out of place on disk),
/// then new 1 MiB files are added (synced, ~3 MiB/s) until the boot ends.
/// Each step logs f2fs's unusable blocks and df to the console; a write
/// error (ENOSPC) stops the fill and leaves /metadata/fill.stop (kept
/// across the reboot).
fn f2fs_overflow_fill(cx: &mut Ctx, ballast_mib: u64) -> Result<(), ScenarioError> {
    cx.exec_checked("rm -f /metadata/fill.stop; sync")?;
    cx.exec_checked(&format!(
        "dd if=/dev/zero of=/data/ballast.bin bs=1M count={ballast_mib} conv=notrunc,fsync 2>/dev/null"
    ))?;
    cx.exec_checked(&format!(
        "setsid sh -c 'dev=$(basename $(readlink -f {RAW})); i=0; while :; do \
           dd if=/dev/zero of=/data/fill.$i bs=1M count=1 conv=fsync 2>/dev/null || \
             {{ echo \"step $i: $(df -k /data | tail -n 1)\" > /metadata/fill.stop; sync; exit; }}; \
           echo \"fill $i: unusable $(cat /sys/fs/f2fs/$dev/unusable) blocks; df $(df -k /data | tail -n 1)\" > /dev/console; \
           usleep 300000; i=$((i+1)); done' > /dev/null 2>&1 < /dev/null &"
    ))?;
    Ok(())
}

/// A 32 MiB store, polled every 200 ms.
fn small_store(policy: &str) -> String {
    format!(
        "[cow]\nmin_bytes = {}\nmax_bytes = {}\n[space]\noverflow_policy = \"{policy}\"\npoll_interval_ms = 200\n",
        8 << 20,
        32 << 20
    )
}

/// 7. More than the store holds, policy abort (the default).
fn overflow_abort(cx: &mut Ctx) -> Result<(), ScenarioError> {
    set_rewindd_extra(cx, Some(&small_store("abort")))?;
    cx.boot_ready(&BootPlan::rewind())?;
    cx.run_baseline()?;
    start(cx, 2, "e2e: overflow abort")?;
    let st = status(cx)?;
    let cow = st["partitions"][0]["cow_bytes"].as_u64().unwrap_or(0);
    let f2fs = is_f2fs(cx);
    if f2fs {
        // No store to size in f2fs mode ([cow] does not apply): the same
        // thresholds and policy act on unusable / (unusable + free).
        cx.check_eq("f2fs: no COW store (the watched space is f2fs's unusable space)", 0, cow);
    } else {
        cx.check("the COW store is the configured 32 MiB", cow > 0 && cow <= 32 << 20, format!("{cow} bytes"));
    }
    // f2fs: checkpointed data for the attempt to rewrite (see
    // f2fs_overflow_fill), 40 % of the free space, part of the baseline.
    let mut ballast_mib = 0;
    if f2fs {
        let (free, _) = df_du(cx)?;
        ballast_mib = (free >> 10) * 2 / 5;
        cx.exec_checked(&format!(
            "dd if=/dev/urandom of=/data/ballast.bin bs=1M count={ballast_mib} conv=fsync 2>/dev/null"
        ))?;
    }
    let baseline = data_manifest(cx)?;
    cx.shutdown()?;

    cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    if f2fs {
        check_f2fs_armed(cx, "f2fs: attempt 1")?;
        f2fs_overflow_fill(cx, ballast_mib)?;
        let st = status(cx)?;
        let unusable = st["partitions"][0]["unusable_bytes"].as_u64().unwrap_or(0);
        cx.check(
            "f2fs: status reports the rewritten checkpointed data as unusable space (at least half the ballast)",
            unusable >= (ballast_mib << 20) / 2,
            format!("unusable_bytes {unusable} after rewriting {ballast_mib} MiB; {}", st["partitions"][0]),
        );
    } else {
        let mib = (cow >> 20) + 16;
        slow_fill(cx, mib)?;
    }
    let rec = match cx.target.wait_end(Duration::from_secs(300)) {
        Ok(rec) => rec,
        Err(e) if f2fs => {
            // Say where the space watch stood when the fill gave up.
            let st = cx.exec("cat /metadata/fill.stop; rewindctl status --json; df -k /data; rewindctl history")?;
            cx.check(
                "f2fs: the fill drove unusable space to the abort threshold",
                false,
                format!("{e}: {}{}", st.stdout, st.stderr),
            );
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    cx.check_eq("rewindd rebooted the attempt (reboot -f)", Some(BootEnd::GuestReset), rec.ended.clone());

    let rec = cx.boot_ready(&BootPlan::rewind())?;
    if f2fs {
        // The reboot dropped the attempt (no checkpoint since it was armed).
        cx.check(
            "f2fs: no merge (the reboot itself discarded the attempt)",
            !rec.reached(stage::MERGING),
            rec.stages.join(","),
        );
        check_f2fs_armed(cx, "f2fs: attempt 2")?;
    } else {
        cx.check("the next boot discards the attempt by a merge", rec.reached(stage::MERGING), rec.stages.join(","));
    }
    let st = status(cx)?;
    cx.check_eq("the next attempt is armed (attempts remained)", 2, st["attempt"].as_u64().unwrap_or(0));
    cx.check_eq("protection was never lost", false, st["protection_lost"].as_bool().unwrap_or(true));
    let h = history(cx)?;
    let ht = history_text(&h);
    cx.check(
        "the 50 % and 80 % thresholds were reported",
        ht.contains("crossed 50%") && ht.contains("crossed 80%"),
        ht.clone(),
    );
    cx.check(
        "the abort at 95 % was recorded",
        h.iter().any(|(k, d)| k == "aborted" && d.contains("abort at 95%")),
        ht.clone(),
    );
    if f2fs {
        // The policy acted while the attempt could still write: 95-99 %,
        // and the fill never met ENOSPC.
        let at = h
            .iter()
            .find(|(k, d)| k == "aborted" && d.contains("abort at 95%"))
            .and_then(|(_, d)| d.split("space ").nth(1)?.split('%').next()?.parse::<u32>().ok());
        let stop = cx.exec_checked("cat /metadata/fill.stop 2>/dev/null; rm -f /metadata/fill.stop")?;
        cx.check(
            "f2fs: the abort came before the attempt ran out of space (95-99 %, no ENOSPC)",
            matches!(at, Some(p) if (95..100).contains(&p)) && stop.trim().is_empty(),
            format!("aborted at {at:?} %; ENOSPC: {}", if stop.trim().is_empty() { "none" } else { stop.trim() }),
        );
        cx.check(
            "f2fs: the thresholds and the abort were on f2fs's unusable space",
            h.iter().any(|(k, _)| k == "space-threshold")
                && h.iter().filter(|(k, _)| k == "space-threshold").all(|(_, d)| d.contains("f2fs unusable space"))
                && h.iter()
                    .any(|(k, d)| k == "aborted" && d.contains("abort at 95%") && d.contains("f2fs unusable space")),
            ht.clone(),
        );
    }
    cx.check("no overflow (snapshot never invalidated)", !kinds(&h).contains(&"overflow"), ht);
    if !f2fs {
        let dmesg = cx.exec_checked("dmesg")?;
        cx.check("the kernel never invalidated the snapshot", !dmesg.contains("Invalidating snapshot"), "");
    }
    let now = data_manifest(cx)?;
    cx.same_manifest("userdata is the baseline (the attempt and its fill are gone)", &baseline, &now);
    fsck_after_umount(cx, TOP, "(origin) after the discarded attempt")?;
    cx.shutdown()?;
    Ok(())
}

/// 7b. More than the store holds, policy commit.
fn overflow_commit(cx: &mut Ctx) -> Result<(), ScenarioError> {
    set_rewindd_extra(cx, Some(&small_store("commit")))?;
    cx.boot_ready(&BootPlan::rewind())?;
    cx.run_baseline()?;
    start(cx, 2, "e2e: overflow commit")?;
    let st = status(cx)?;
    let cow = st["partitions"][0]["cow_bytes"].as_u64().unwrap_or(0);
    cx.check("the COW store is the configured 32 MiB", cow > 0 && cow <= 32 << 20, format!("{cow} bytes"));
    cx.shutdown()?;

    cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    let mib = (cow >> 20) + 16;
    slow_fill(cx, mib)?;
    let t = std::time::Instant::now();
    let mut done = false;
    while t.elapsed() < Duration::from_secs(300) {
        if cx.exec("test -e /data/fill.done")?.success() {
            done = true;
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    cx.require("the fill finished (the attempt kept running)", done, "")?;
    let st = check_phase(cx, "phase is idle (committed early)", "idle")?;
    cx.check_eq("status: protection_lost", true, st["protection_lost"].as_bool().unwrap_or(false));
    let reason = st["protection_lost_reason"].as_str().unwrap_or("").to_string();
    cx.check("status names the overflow policy commit", reason.contains("overflow policy commit"), reason);
    let h = history(cx)?;
    let ht = history_text(&h);
    let o = h.iter().position(|(k, _)| k == "overflow");
    let c = h.iter().rposition(|(k, _)| k == "committed");
    cx.check("history: overflow (policy commit), then committed", matches!((o, c), (Some(o), Some(c)) if o < c), ht);
    check_idle_stack(cx, "after the early commit")?;
    let sizes = cx.exec_checked("cat /data/fill.* | wc -c; ls /data/fill.* | grep -vc done")?;
    let v: Vec<u64> = sizes.split_whitespace().filter_map(|s| s.parse().ok()).collect();
    cx.check_eq("every write of the attempt is kept", vec![(mib << 20) + 5, mib], v);
    let kept = data_manifest(cx)?;
    cx.shutdown()?;

    cx.boot_ready(&BootPlan::rewind())?;
    let now = data_manifest(cx)?;
    cx.same_manifest("the committed data stays across a reboot", &kept, &now);
    check_phase(cx, "phase idle after the reboot", "idle")?;
    fsck_after_umount(cx, TOP, "after the early commit")?;
    cx.shutdown()?;
    Ok(())
}

/// 8. The COW file's blocks move between boots: refuse to arm.
fn extents_tampered(cx: &mut Ctx) -> Result<(), ScenarioError> {
    let baseline = prepare_checkpoint(cx, 2, "e2e: extents")?;
    // A boot without rewind (raw partition on /data): move cow.0000's blocks.
    cx.boot_ready(&BootPlan::raw())?;
    let f = "/data/rewind/cow.0000";
    let before = cx.exec_checked(&format!("filefrag -v {f} | sed -n 4p"))?;
    cx.exec_checked(&format!("chattr -i {f} && cp {f} {f}.new && mv -f {f}.new {f} && chattr +i {f} && sync"))?;
    let after = cx.exec_checked(&format!("filefrag -v {f} | sed -n 4p"))?;
    cx.check(
        "the file's first extent moved",
        before != after,
        format!("before: {} | after: {}", before.trim(), after.trim()),
    );
    cx.shutdown()?;

    let rec = cx.boot(&BootPlan::rewind())?;
    cx.require("the device still boots to ready", rec.is_ready(), format!("last stage {}", rec.last_stage()))?;
    cx.check("prepare-userdata reported the refusal", !rec.errors.is_empty(), format!("{:?}", rec.errors));
    cx.check("no merge ran over a stale map", !rec.reached(stage::MERGING), rec.stages.join(","));
    let st = check_phase(cx, "phase is idle (not armed)", "idle")?;
    cx.check_eq("status: protection_lost", true, st["protection_lost"].as_bool().unwrap_or(false));
    let reason = st["protection_lost_reason"].as_str().unwrap_or("").to_string();
    cx.check("status says why, naming the file", reason.contains("cow.0000"), reason);
    let h = history(cx)?;
    cx.check(
        "history records a refused event naming the file",
        h.iter().any(|(k, d)| k == "refused" && d.contains("cow.0000")),
        history_text(&h),
    );
    check_idle_stack(cx, "after the refusal")?;
    let now = data_manifest(cx)?;
    cx.same_manifest("userdata is unchanged by the refusal", &baseline, &now);
    fsck_after_umount(cx, TOP, "after the refusal")?;
    cx.shutdown()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_progress_reads_the_last_line_and_the_end() {
        let log = "arming\nmerging rewind-userdata: 0% (0 B/167 MiB)\nmerging rewind-userdata: 55% (82 MiB/148 MiB)\n";
        assert_eq!(merge_progress(log), (Some((55, "(82 MiB/148 MiB)".to_string())), false));
        assert!(merge_progress("merging rewind-userdata: 100% (10 MiB/10 MiB)\nuserdata prepared\n").1);
        assert_eq!(merge_progress("userdata prepared\n"), (None, true));
    }

    #[test]
    fn merge_bytes_reads_human_units() {
        assert_eq!(merge_bytes("(82 MiB/148 MiB)"), Some((82 << 20, 148 << 20)));
        assert_eq!(merge_bytes("(0 B/1.5 GiB)"), Some((0, 3 << 29)));
        assert_eq!(merge_bytes("82 MiB/148 MiB"), None);
    }

    #[test]
    fn every_scenario_name_is_unique_across_registries() {
        let mut names: Vec<&str> = super::super::all().map(|s| s.name).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(n, names.len());
        for s in E2E {
            assert!(super::super::find(s.name).is_some(), "{} is found by name", s.name);
        }
    }
}
