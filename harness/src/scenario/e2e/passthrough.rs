//! Without a checkpoint rewind is a passthrough: the linear top device
//! over the whole partition (or f2fs mounted plainly), data kept, and
//! rewindd's boot overhead measured against a raw boot.

use crate::plan::{stage, BootPlan};
use crate::scenario::{checks, Ctx, ScenarioError};

/// 6. No checkpoint: passthrough, data kept, and rewindd's boot overhead.
pub(super) fn no_checkpoint(cx: &mut Ctx) -> Result<(), ScenarioError> {
    cx.boot_ready(&BootPlan::rewind())?;
    cx.run_baseline()?;
    let written = checks::data_manifest(cx)?;
    cx.shutdown()?;
    let mut rewind_ms = Vec::new();
    for n in 1..=2 {
        let rec = cx.boot_ready(&BootPlan::rewind())?;
        cx.check(
            &format!("boot {}: no merge, no errors", rec.index),
            !checks::merge_ran(&rec) && rec.errors.is_empty(),
            format!("{:?}", rec.errors),
        );
        rewind_ms.push(rec.reached_ms(stage::DATA_MOUNTED));
        if cx.is_f2fs() {
            // f2fs mode: init mounts the raw partition; no dm device.
            checks::check_idle_stack(cx, &format!("reboot {n}"))?;
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
            checks::check_idle_stack(cx, &format!("reboot {n}"))?;
            let sectors = checks::sectors(cx.target, checks::RAW)?;
            let table = checks::dmsetup(cx.target, "table rewind-userdata")?;
            cx.check(
                &format!("reboot {n}: the top is linear over the whole raw partition at offset 0"),
                table.trim().starts_with(&format!("0 {sectors} linear ")) && table.trim().ends_with(" 0"),
                table.trim().to_string(),
            );
        }
        let left = checks::cow_files_left(cx.target)?;
        cx.check(&format!("reboot {n}: no COW file"), left.is_empty(), left.join(" "));
        checks::check_phase(cx, &format!("reboot {n}: phase idle"), "idle")?;
        let now = checks::data_manifest(cx)?;
        cx.same_manifest(&format!("reboot {n}: data kept"), &written, &now);
        if n == 2 {
            checks::fsck_after_umount(cx, "userdata fsck clean after ordinary boots")?;
        }
        cx.shutdown()?;
    }
    let rec = cx.boot_ready(&BootPlan::raw())?;
    let raw_ms = rec.reached_ms(stage::DATA_MOUNTED);
    let now = checks::data_manifest(cx)?;
    cx.same_manifest("the raw partition holds the same data", &written, &now);
    cx.shutdown()?;
    let with = rewind_ms.iter().flatten().copied().min();
    let detail = match (with, raw_ms) {
        (Some(w), Some(r)) => format!(
            "power-on to /data mounted: with rewindd {} (boots: {}), raw {}: ratio {:.2}, +{} ms",
            checks::secs(Some(w)),
            rewind_ms.iter().map(|m| checks::secs(*m)).collect::<Vec<_>>().join(", "),
            checks::secs(Some(r)),
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
