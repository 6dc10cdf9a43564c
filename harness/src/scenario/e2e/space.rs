//! The space policy acts before the COW store (or f2fs's unusable
//! space) overflows: policy abort discards the attempt at 95 %, policy
//! commit commits early and says protection is lost.

use std::time::Duration;

use rewind_daemon::types::EventKind::{Aborted, Committed, Overflow, SpaceThreshold};

use crate::failure::BootEnd;
use crate::plan::BootPlan;
use crate::scenario::checks::{self, RAW};
use crate::scenario::{Ctx, ScenarioError};

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
pub(super) fn overflow_abort(cx: &mut Ctx) -> Result<(), ScenarioError> {
    checks::set_rewindd_extra(cx, Some(&small_store("abort")))?;
    checks::begin_checkpoint(cx, 2, "e2e: overflow abort")?;
    let st = checks::status(cx)?;
    let cow = st["partitions"][0]["cow_bytes"].as_u64().unwrap_or(0);
    let f2fs = cx.is_f2fs();
    if f2fs {
        // No store to size in f2fs mode ([cow] does not apply): the same
        // thresholds and policy act on unusable / (unusable + free).
        cx.check_eq("f2fs: no COW store (the watched space is f2fs's unusable space)", 0, cow);
    } else {
        cx.check("the COW store is the configured 32 MiB", cow > 0 && cow <= 32 << 20, format!("{cow} bytes"));
    }
    // f2fs: checkpointed data for the attempt to rewrite (see
    // f2fs_overflow_fill), 40 % of the free space, part of the baseline.
    // Block mode: baseline data to rewrite in place, more than the store
    // holds (writes into free space cost no COW with the free map).
    let ballast_mib = if f2fs {
        let (free, _) = checks::df_du(cx)?;
        (free >> 10) * 2 / 5
    } else {
        (cow >> 20) + 16
    };
    checks::write_ballast(cx, ballast_mib)?;
    let baseline = checks::data_manifest(cx)?;
    cx.shutdown()?;

    cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    if f2fs {
        checks::check_f2fs_armed(cx, "f2fs: attempt 1")?;
        f2fs_overflow_fill(cx, ballast_mib)?;
        let st = checks::status(cx)?;
        let unusable = st["partitions"][0]["unusable_bytes"].as_u64().unwrap_or(0);
        cx.check(
            "f2fs: status reports the rewritten checkpointed data as unusable space (at least half the ballast)",
            unusable >= (ballast_mib << 20) / 2,
            format!("unusable_bytes {unusable} after rewriting {ballast_mib} MiB; {}", st["partitions"][0]),
        );
    } else {
        checks::slow_fill(cx, ballast_mib)?;
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
            !checks::merge_ran(&rec),
            rec.stages.join(","),
        );
        checks::check_f2fs_armed(cx, "f2fs: attempt 2")?;
    } else {
        cx.check("the next boot discards the attempt by a merge", checks::merge_ran(&rec), rec.stages.join(","));
    }
    let st = checks::status(cx)?;
    cx.check_eq("the next attempt is armed (attempts remained)", 2, st["attempt"].as_u64().unwrap_or(0));
    cx.check_eq("protection was never lost", false, st["protection_lost"].as_bool().unwrap_or(true));
    let h = checks::history(cx)?;
    let ht = h.text();
    cx.check(
        "the 50 % and 80 % thresholds were reported",
        ht.contains("crossed 50%") && ht.contains("crossed 80%"),
        ht.clone(),
    );
    cx.check("the abort at 95 % was recorded", h.has_with(Aborted, "abort at 95%"), ht.clone());
    if f2fs {
        // The policy acted while the attempt could still write: 95-99 %,
        // and the fill never met ENOSPC.
        let at = h
            .position_with(Aborted, "abort at 95%")
            .and_then(|i| h.events()[i].detail.split("space ").nth(1)?.split('%').next()?.parse::<u32>().ok());
        let stop = cx.exec_checked("cat /metadata/fill.stop 2>/dev/null; rm -f /metadata/fill.stop")?;
        cx.check(
            "f2fs: the abort came before the attempt ran out of space (95-99 %, no ENOSPC)",
            matches!(at, Some(p) if (95..100).contains(&p)) && stop.trim().is_empty(),
            format!("aborted at {at:?} %; ENOSPC: {}", if stop.trim().is_empty() { "none" } else { stop.trim() }),
        );
        cx.check(
            "f2fs: the thresholds and the abort were on f2fs's unusable space",
            h.has(SpaceThreshold)
                && h.events().iter().filter(|e| e.is(SpaceThreshold)).all(|e| e.detail.contains("f2fs unusable space"))
                && h.events().iter().any(|e| {
                    e.is(Aborted) && e.detail.contains("abort at 95%") && e.detail.contains("f2fs unusable space")
                }),
            ht.clone(),
        );
    }
    cx.check("no overflow (snapshot never invalidated)", !h.has(Overflow), ht);
    if !f2fs {
        let dmesg = cx.exec_checked("dmesg")?;
        cx.check("the kernel never invalidated the snapshot", !dmesg.contains("Invalidating snapshot"), "");
    }
    let now = checks::data_manifest(cx)?;
    cx.same_manifest("userdata is the baseline (the attempt and its fill are gone)", &baseline, &now);
    checks::fsck_after_umount(cx, "userdata fsck clean (origin) after the discarded attempt")?;
    cx.shutdown()?;
    Ok(())
}

/// 7b. More than the store holds, policy commit.
pub(super) fn overflow_commit(cx: &mut Ctx) -> Result<(), ScenarioError> {
    checks::set_rewindd_extra(cx, Some(&small_store("commit")))?;
    checks::begin_checkpoint(cx, 2, "e2e: overflow commit")?;
    let st = checks::status(cx)?;
    let cow = st["partitions"][0]["cow_bytes"].as_u64().unwrap_or(0);
    cx.check("the COW store is the configured 32 MiB", cow > 0 && cow <= 32 << 20, format!("{cow} bytes"));
    // Baseline data to rewrite in place, more than the store holds.
    let mib = (cow >> 20) + 16;
    checks::write_ballast(cx, mib)?;
    let baseline_sums = checks::ballast_sums(cx, mib)?;
    cx.shutdown()?;

    cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    checks::slow_fill(cx, mib)?;
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
    let st = checks::check_phase(cx, "phase is idle (committed early)", "idle")?;
    cx.check_eq("status: protection_lost", true, st["protection_lost"].as_bool().unwrap_or(false));
    let reason = st["protection_lost_reason"].as_str().unwrap_or("").to_string();
    cx.check("status names the overflow policy commit", reason.contains("overflow policy commit"), reason);
    let h = checks::history(cx)?;
    let ht = h.text();
    let o = h.position(Overflow);
    let c = h.rposition(Committed);
    cx.check("history: overflow (policy commit), then committed", matches!((o, c), (Some(o), Some(c)) if o < c), ht);
    checks::check_idle_stack(cx, "after the early commit")?;
    let now_sums = checks::ballast_sums(cx, mib)?;
    let rewritten = baseline_sums.iter().zip(&now_sums).filter(|(a, b)| a != b).count() as u64;
    cx.check_eq(
        "every write of the attempt is kept (each rewritten MiB of the ballast reads back changed)",
        mib,
        rewritten,
    );
    let kept = checks::data_manifest(cx)?;
    cx.shutdown()?;

    cx.boot_ready(&BootPlan::rewind())?;
    let now = checks::data_manifest(cx)?;
    cx.same_manifest("the committed data stays across a reboot", &kept, &now);
    checks::check_phase(cx, "phase idle after the reboot", "idle")?;
    checks::fsck_after_umount(cx, "userdata fsck clean after the early commit")?;
    cx.shutdown()?;
    Ok(())
}
