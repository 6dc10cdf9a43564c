//! A failing COW device (issue 12 item 3): the COW store's device-mapper
//! device (`rewind-userdata-cow`, linear over the store's extents) is
//! reloaded, inside the guest, so every segment goes through dm-flakey with
//! `error_writes` (reads work, every write fails with EIO), once while an
//! attempt writes and once while the rollback's merge runs. What the
//! kernel does then was first observed by hand in a guest (Debian 6.1):
//!
//! - during an attempt the snapshot goes `Invalid` ("device-mapper:
//!   snapshots: Invalidating snapshot: Error reading/writing."), and the
//!   kernel cannot mark its header invalid either ("device-mapper:
//!   persistent snapshot: write header failed"): once the device works
//!   again the store reads as valid, and merging it gives neither the
//!   baseline nor the attempt (checked by hand: three different hashes).
//!   So the safe end is the attempt's data, kept and committed, the
//!   checkpoint reported lost in the kernel's words, the store never
//!   merged;
//! - during a merge the merge stops, `Merge failed` ("device-mapper:
//!   snapshots: Write error in exception store: shutting down merge");
//!   that merge target cannot be restarted (a resume finds "exception for
//!   block 0 is on disk but not in memory", a new merge table is refused
//!   while it exists), but a merge loaded anew from the store on disk, as
//!   the next boot does, ends at the exact baseline.

use rewind_daemon::types::EventKind::{Attempt, Committed, Overflow, RollbackBegun, RollbackFailed, RollbackFinished};

use std::time::{Duration, Instant};

use crate::plan::{stage, BootPlan, Failure};
use crate::scenario::checks::{self, History};
use crate::scenario::{Ctx, ScenarioError};

/// The COW store's device.
const COW: &str = "rewind-userdata-cow";

/// `space.poll_interval_ms` in the attempt scenario: far beyond its run.
const SLOW_POLL_MS: u64 = 600_000;
/// How soon after the failing writes the loss must be in the history: the
/// history is read every 0.5 s over the guest agent, each read a few
/// hundred ms under TCG.
const EVENT_LIMIT: Duration = Duration::from_secs(10);

/// Shell that reloads [`COW`] with each linear segment wrapped in dm-flakey
/// (up 0 s, down 1 s: always down; `error_writes`: writes fail with EIO,
/// reads are served), suspended around the load as the kernel asks.
fn fail_cow_writes() -> String {
    format!(
        "t=$(dmsetup table {COW}) || exit 1; \
         echo \"$t\" | awk '$3 == \"linear\" {{ print $1, $2, \"flakey\", $4, $5, 0, 1, 1, \"error_writes\" }}' > /tmp/flakey.table; \
         dmsetup suspend {COW} && dmsetup load {COW} /tmp/flakey.table && dmsetup resume {COW} || exit 1; \
         echo \"{COW} now:\"; dmsetup table {COW}"
    )
}

/// Waits (up to 60 s) for the history to hold every kind of `kinds`.
fn wait_history(
    cx: &mut Ctx,
    kinds: &[rewind_daemon::types::EventKind],
    limit: Duration,
) -> Result<History, ScenarioError> {
    let t = Instant::now();
    loop {
        let h = checks::history(cx)?;
        if kinds.iter().all(|k| h.has(*k)) || t.elapsed() > limit {
            return Ok(h);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Seconds into the day of a tracing line's timestamp
/// ("2026-12-07T01:30:37.632438Z  INFO ...").
fn log_seconds(line: &str) -> Option<f64> {
    let clock = line.split_whitespace().next()?.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = clock.split(':');
    let (h, m, s): (f64, f64, f64) =
        (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    Some(h * 3600.0 + m * 60.0 + s)
}

/// The kernel's line, as dmesg has it (for the details).
fn dmesg_line(dmesg: &str, words: &str) -> String {
    dmesg.lines().find(|l| l.contains(words)).unwrap_or("").trim().to_string()
}

/// The COW device fails while an attempt writes: the snapshot goes
/// `Invalid`; rewindd reports the checkpoint lost with the kernel's words
/// (status and history), keeps the attempt's data and commits, so the store
/// is never merged; the next boot comes up idle on exactly that data
/// (manifest of every file), fsck clean.
pub(super) fn cow_fails_during_attempt(cx: &mut Ctx) -> Result<(), ScenarioError> {
    // The space watch's ticks ten minutes apart: the loss can reach the
    // history within this scenario's limits only through the dm event the
    // invalidation raises (rewindd's dm::events), which is what shrinks
    // the window in which a power cut could hide it.
    checks::set_rewindd_extra(cx, Some(&format!("[space]\npoll_interval_ms = {SLOW_POLL_MS}\n")))?;
    cx.boot_ready(&BootPlan::rewind())?;
    cx.run_baseline()?;
    checks::write_ballast(cx, 32)?;
    checks::start(cx, 2, "e2e: the COW device fails during an attempt")?;
    let baseline = checks::data_manifest(cx)?;
    cx.shutdown()?;

    cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    checks::check_phase(cx, "attempt 1 runs", "checkpointing")?;
    let out = cx.exec_checked(&fail_cow_writes())?;
    cx.require("the COW device now fails every write (dm-flakey error_writes)", out.contains("error_writes"), out)?;
    // The attempt goes on writing over baseline data: each chunk needs a
    // copy into the store, which fails.
    checks::rewrite_ballast(cx, 8)?;
    let written = Instant::now();
    let h = wait_history(cx, &[Overflow, Committed], Duration::from_secs(60))?;
    let took = written.elapsed();
    cx.report.facts.insert("loss recorded after the writes".into(), format!("{} ms", took.as_millis()));
    cx.check(
        &format!("the loss is recorded on the dm event, not at the next tick ({} s away)", SLOW_POLL_MS / 1000),
        h.has(Overflow) && took < EVENT_LIMIT,
        format!("{} ms after the failing writes returned (limit {} s)", took.as_millis(), EVENT_LIMIT.as_secs()),
    );
    let boot = cx.target.boots().last().map(|b| b.index).unwrap_or(0);
    let log =
        cx.exec(&format!("grep -h -e 'dm event on' -e 'kind=\"overflow\"' /host/logs/boot-{boot}/rewindd.log"))?.stdout;
    let woken = log.lines().find(|l| l.contains("dm event on rewind-userdata")).unwrap_or("");
    let recorded = log.lines().find(|l| l.contains("kind=\"overflow\"")).unwrap_or("");
    let latency = match (log_seconds(woken), log_seconds(recorded)) {
        (Some(a), Some(b)) => format!("{:.0} ms from the event to the record", (b - a).rem_euclid(86_400.0) * 1000.0),
        _ => "no timestamps".to_string(),
    };
    cx.report.facts.insert("event to record (rewindd's log)".into(), latency.clone());
    cx.check(
        "rewindd's log: the watch was woken by the snapshot's dm event",
        !woken.is_empty(),
        format!("{latency}: {} | {}", woken.trim(), recorded.trim()),
    );
    let dmesg = cx.exec_checked("dmesg")?;
    let invalidated = dmesg_line(&dmesg, "Invalidating snapshot: Error reading/writing.");
    cx.check("the kernel invalidated the snapshot on the write error", !invalidated.is_empty(), invalidated);
    cx.check(
        "the kernel could not mark the store invalid on disk",
        dmesg.contains("persistent snapshot: write header failed"),
        dmesg_line(&dmesg, "write header failed"),
    );
    let st = checks::status(cx)?;
    let lost = st["protection_lost_reason"].as_str().unwrap_or("").to_string();
    cx.check(
        "status: protection lost, in the kernel's words",
        st["protection_lost"].as_bool() == Some(true)
            && lost.contains("snapshot is 'Invalid'")
            && lost.contains("an I/O error on the COW store")
            && lost.contains("Invalidating snapshot: Error reading/writing.")
            && lost.contains("never merged"),
        lost.clone(),
    );
    cx.check_eq("phase idle: committed on the attempt's data", "idle".to_string(), checks::phase(&st));
    let event = h.last_of(Overflow).map(|e| e.detail.clone()).unwrap_or_default();
    cx.check(
        "history: the loss recorded with the kernel's words, then committed",
        event.contains("Invalidating snapshot: Error reading/writing.")
            && matches!((h.rposition(Overflow), h.rposition(Committed)), (Some(o), Some(c)) if o < c),
        h.text(),
    );
    checks::check_idle_stack(cx, "after the COW device failed")?;
    let ls = checks::dmsetup(cx.target, "ls")?;
    cx.check(&format!("the failing {COW} is gone with the commit"), !ls.contains(COW), ls);
    let kept = checks::data_manifest(cx)?;
    cx.changed_manifest("the attempt's writes (also those after the failure) are on userdata", &baseline, &kept);
    cx.shutdown()?;

    // The next boot (the device rebuilt, working): nothing rolls back.
    cx.boot_ready(&BootPlan::rewind())?;
    checks::check_commit_kept(cx, "the boot after the COW failure", &kept)?;
    checks::check_idle_stack(cx, "the boot after the COW failure")?;
    let st = checks::check_phase(cx, "still idle", "idle")?;
    cx.check(
        "status still says why protection was lost",
        st["protection_lost_reason"].as_str().unwrap_or("").contains("Error reading/writing"),
        st.to_string(),
    );
    let h = checks::history(cx)?;
    cx.check("history: no rollback of attempt 1 ever began", h.has(Attempt) && !h.has(RollbackBegun), h.text());
    checks::fsck_after_umount(cx, "userdata fsck clean after the COW failure")?;
    cx.shutdown()?;
    Ok(())
}

/// Guest shell run from prepare-userdata's stage: waits for the rollback's
/// merge to be loaded on the top device, then makes the COW store's
/// writes fail under it.
fn fail_cow_writes_once_merging() -> String {
    format!(
        "i=0; while [ $i -lt 3000 ]; do \
           case \"$(dmsetup table rewind-userdata 2>/dev/null)\" in *snapshot-merge*) break ;; esac; \
           usleep 20000; i=$((i + 1)); done; \
         echo \"merge seen after $((i * 20)) ms: $(dmsetup status rewind-userdata)\"; {}; \
         sleep 2; echo \"then: $(dmsetup status rewind-userdata 2>&1)\"",
        fail_cow_writes()
    )
}

/// Ballast rewritten by the attempt: what the merge copies back (a COW
/// store of 25 % of the free space holds it below the 95 % abort). Large
/// enough that the merge is still running when the fault lands (the
/// guest script sees the merge table within 20 ms, the merge runs at
/// 40-150 MiB/s under TCG).
const MERGE_MIB: u64 = 120;

/// The COW device fails while the last rollback's merge runs: the kernel
/// stops the merge (`Merge failed`); the boot still reaches ready, with
/// userdata held back (no device to mount half merged), phase
/// rolling-back, and the kernel's words and the fix in status and history.
/// The next boot, the device working again, merges what is left from the
/// store on disk: exactly the baseline (manifest of every file), idle,
/// fsck clean. The merge is the one prepare-userdata waits for
/// (`cow.last_rollback_in_background = false`); a background merge the
/// kernel stops is recorded by rewindd's poll instead (boot/background.rs,
/// host test only).
pub(super) fn cow_fails_during_merge(cx: &mut Ctx) -> Result<(), ScenarioError> {
    checks::set_rewindd_extra(cx, Some("[cow]\nlast_rollback_in_background = false\n"))?;
    cx.boot_ready(&BootPlan::rewind())?;
    cx.run_baseline()?;
    checks::write_ballast(cx, MERGE_MIB)?;
    checks::start(cx, 1, "e2e: the COW device fails during the merge")?;
    let baseline = checks::data_manifest(cx)?;
    cx.shutdown()?;

    cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    checks::rewrite_ballast(cx, MERGE_MIB)?;
    let now = checks::data_manifest(cx)?;
    cx.changed_manifest("the attempt changed userdata", &baseline, &now);
    cx.shutdown()?;

    let plan = BootPlan::rewind()
        .with_failure(Failure::guest_script_at(stage::PREPARE_USERDATA, &fail_cow_writes_once_merging()));
    let rec = cx.boot_ready(&plan)?;
    let script = checks::boot_log(cx, rec.index, "fail-script.log");
    cx.check(
        "the COW device's writes failed while the merge ran",
        script.contains("error_writes") && script.contains("snapshot-merge"),
        script.trim().to_string(),
    );
    let dmesg = cx.exec_checked("dmesg")?;
    let stopped = dmesg_line(&dmesg, "shutting down merge");
    cx.check("the kernel stopped the merge", !stopped.is_empty(), stopped);
    cx.check(
        "prepare-userdata failed and said why",
        rec.errors.iter().any(|e| e.contains("prepare-userdata")),
        format!("{:?}; {}", rec.errors, checks::prepare_log(cx, rec.index).trim()),
    );
    let st = checks::status(cx)?;
    let why = st["rollback_failure"].as_str().unwrap_or("").to_string();
    cx.check_eq("phase stays rolling-back", "rolling-back".to_string(), checks::phase(&st));
    cx.check(
        "status: the rollback is pending, in the kernel's words, with the fix",
        why.contains("Merge failed") && why.contains("shutting down merge") && why.contains("Fix:"),
        why.clone(),
    );
    let text = cx.exec_checked("rewindctl status")?;
    cx.check("rewindctl status shows the pending rollback", text.contains("rollback:    PENDING"), text);
    let h = checks::history(cx)?;
    cx.check(
        "history: rollback-failed with the kernel's words, not finished",
        h.last_of(RollbackFailed).is_some_and(|e| e.detail.contains("shutting down merge")) && !h.has(RollbackFinished),
        h.text(),
    );
    let mounts = cx.exec_checked("grep ' /data ' /proc/mounts || echo 'not mounted'")?;
    let ls = checks::dmsetup(cx.target, "ls")?;
    cx.check(
        "userdata is held back: no top device, /data not mounted over a half merge",
        mounts.contains("not mounted") && !ls.lines().any(|l| l.starts_with("rewind-userdata\t")),
        format!("{}; {}", mounts.trim(), ls.trim()),
    );
    cx.shutdown()?;

    // The device works again (the next boot builds it anew): the merge
    // resumes from the store and ends at the baseline.
    let rec = cx.boot_ready(&BootPlan::rewind())?;
    checks::check_merged(cx, "the next boot resumes the merge", &rec, "the rest of the merge");
    let st = checks::check_phase(cx, "rolled back", "rolled-back")?;
    cx.check("no rollback failure reported once it finished", st["rollback_failure"].is_null(), st.to_string());
    let now = checks::data_manifest(cx)?;
    cx.same_manifest("userdata is exactly the baseline after the failed merge", &baseline, &now);
    checks::check_idle_stack(cx, "after the resumed merge")?;
    let h = checks::history(cx)?;
    cx.check(
        "history: rollback-failed, then rollback-finished",
        matches!((h.rposition(RollbackFailed), h.rposition(RollbackFinished)), (Some(f), Some(d)) if f < d),
        h.text(),
    );
    checks::fsck_after_umount(cx, "userdata fsck clean after the resumed merge")?;
    cx.shutdown()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::log_seconds;

    #[test]
    fn a_tracing_timestamp_reads_as_seconds_into_the_day() {
        let s = log_seconds("2026-12-07T01:30:37.632438Z  INFO dm event on rewind-userdata-snap: looking now");
        assert_eq!(s.map(|s| (s * 1e6).round() as u64), Some(5_437_632_438));
        assert_eq!(log_seconds(""), None);
        assert_eq!(log_seconds("not a timestamp at all"), None);
    }
}
