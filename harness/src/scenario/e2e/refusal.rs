//! A COW map that changed behind rewindd's back is refused before use:
//! no arm, no merge over a stale map, userdata untouched.

use rewind_daemon::types::EventKind::Refused;

use crate::plan::BootPlan;
use crate::scenario::{checks, Ctx, ScenarioError};

/// 8. The COW file's blocks move between boots: refuse to arm.
pub(super) fn extents_tampered(cx: &mut Ctx) -> Result<(), ScenarioError> {
    let baseline = checks::prepare_checkpoint(cx, 2, "e2e: extents")?;
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
    cx.check("no merge ran over a stale map", !checks::merge_ran(&rec), rec.stages.join(","));
    let st = checks::check_phase(cx, "phase is idle (not armed)", "idle")?;
    cx.check_eq("status: protection_lost", true, st["protection_lost"].as_bool().unwrap_or(false));
    let reason = st["protection_lost_reason"].as_str().unwrap_or("").to_string();
    cx.check("status says why, naming the file", reason.contains("cow.0000"), reason);
    let h = checks::history(cx)?;
    cx.check("history records a refused event naming the file", h.has_with(Refused, "cow.0000"), h.text());
    checks::check_idle_stack(cx, "after the refusal")?;
    let now = checks::data_manifest(cx)?;
    cx.same_manifest("userdata is unchanged by the refusal", &baseline, &now);
    checks::fsck_after_umount(cx, "userdata fsck clean after the refusal")?;
    cx.shutdown()?;
    Ok(())
}
