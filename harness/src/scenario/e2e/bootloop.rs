//! Boot loops are impossible (issue 12 item 6a): once an attempt is
//! committed, power cuts during the early boots that follow (before
//! rewindd runs, while it starts, inside prepare-userdata, right after it)
//! never roll the system back, however many come in a row.

use rewind_daemon::types::EventKind::{Committed, RollbackBegun};

use crate::failure::BootEnd;
use crate::plan::{stage, BootPlan, Failure};
use crate::scenario::{checks, Ctx, ScenarioError};

/// Where the power goes out in the boots after the commit; prepare-userdata
/// twice in a row, as a flaky battery would.
const CUTS: &[&str] = &[
    stage::METADATA_MOUNTED,
    stage::REWINDD_STARTED,
    stage::PREPARE_USERDATA,
    stage::PREPARE_USERDATA,
    stage::USERDATA_PREPARED,
    stage::DATA_MOUNTED,
];

pub(super) fn power_cuts_after_commit(cx: &mut Ctx) -> Result<(), ScenarioError> {
    cx.boot_ready(&BootPlan::rewind())?;
    cx.run_baseline()?;
    checks::start(cx, 2, "e2e: commit, then early power cuts")?;
    let baseline = checks::data_manifest(cx)?;
    cx.shutdown()?;

    let rec = cx.boot_ready(&BootPlan::rewind().with_workload(1).with_commit())?;
    cx.check(
        "the attempt commits",
        rec.reached(stage::COMMITTED) && rec.errors.is_empty(),
        format!("stages {}; errors {:?}", rec.stages.join(","), rec.errors),
    );
    let committed = checks::data_manifest(cx)?;
    cx.changed_manifest("the attempt changed userdata", &baseline, &committed);
    cx.shutdown()?;

    for at in CUTS {
        let rec =
            cx.boot_expect_end(&BootPlan::rewind().with_failure(Failure::power_cut_at(at)), BootEnd::HostPowerCut)?;
        cx.check_eq(&format!("boot {}: the power is cut at {at}", rec.index), *at, rec.last_stage());
    }

    cx.boot_ready(&BootPlan::rewind())?;
    checks::check_commit_kept(cx, &format!("after {} early power cuts", CUTS.len()), &committed)?;
    checks::check_idle_stack(cx, "after the early power cuts")?;
    checks::check_phase(cx, "phase is idle after the early power cuts", "idle")?;
    let h = checks::history(cx)?;
    cx.check(
        "history: committed, and no rollback begun after the commit",
        matches!(h.rposition(Committed), Some(c) if h.rposition(RollbackBegun).is_none_or(|r| r < c)),
        h.text(),
    );
    checks::fsck_after_umount(cx, "userdata fsck clean after the early power cuts")?;
    cx.shutdown()?;
    Ok(())
}
