//! Free-space-aware arming (`cow.free_map = true`): the chunks a cleanly
//! unmounted ext4 baseline leaves free are mapped `linear` while armed, so
//! an attempt's new files cost no COW, and the rollback still ends at the
//! baseline, checked on the data (manifest of every file, fsck).

use serde_json::Value;

use crate::plan::BootPlan;
use crate::scenario::{checks, Ctx, ScenarioError};

const NEW_FILE_MIB: u64 = 64;

fn cow_used(st: &Value) -> u64 {
    st["partitions"][0]["cow_used_bytes"].as_u64().unwrap_or(0)
}

/// An attempt writes a 64 MiB new file (free space) after the usual
/// update workload (renames, deletes, rewrites in place, a database): the
/// new file adds less than 1 % of its size to the store; a clean shutdown
/// without a commit ends the only attempt, and the next boot rolls back to
/// the exact baseline.
pub(super) fn free_space_not_copied(cx: &mut Ctx) -> Result<(), ScenarioError> {
    checks::set_rewindd_extra(cx, Some("[cow]\nfree_map = true\n"))?;
    let baseline = checks::prepare_checkpoint(cx, 1, "e2e: free map")?;
    cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    let table = cx.exec_checked("dmsetup table rewind-userdata")?;
    let linear = table.lines().filter(|l| l.contains(" linear ")).count();
    let origin = table.lines().filter(|l| l.contains(" snapshot-origin ")).count();
    cx.check(
        "armed over the free map: linear lines over free chunks, snapshot-origin over used ones",
        linear > 0 && origin > 0,
        format!("{} lines: {linear} linear, {origin} snapshot-origin", table.lines().count()),
    );
    let log = cx.exec("dmesg 2>/dev/null | grep 'free map' | tail -n 3")?;
    cx.say(&format!("rewindd: {}", log.stdout.trim()));

    cx.exec_checked("sync")?;
    let before = cow_used(&checks::status(cx)?);
    cx.exec_checked(&format!(
        "dd if=/dev/urandom of=/data/new-file.bin bs=1M count={NEW_FILE_MIB} conv=fsync 2>/dev/null; sync"
    ))?;
    let after = cow_used(&checks::status(cx)?);
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
    let changed = checks::data_manifest(cx)?;
    cx.changed_manifest("the attempt changed userdata", &baseline, &changed);
    cx.shutdown()?;

    let rec = cx.boot_ready(&BootPlan::rewind())?;
    checks::check_merged(cx, "the next boot merged the attempt away", &rec, "the rollback merge");
    checks::check_phase(cx, "phase is rolled-back", "rolled-back")?;
    let now = checks::data_manifest(cx)?;
    cx.same_manifest("userdata is exactly the baseline (every file, checksummed)", &baseline, &now);
    cx.check("the new file is gone", now.get("new-file.bin").is_none(), "");
    checks::check_idle_stack(cx, "after the rollback")?;
    checks::fsck_after_umount(cx, "userdata fsck clean after the rollback")?;
    cx.shutdown()?;
    Ok(())
}
