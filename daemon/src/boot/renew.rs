//! StartCheckpoint while a checkpoint is already pending, as vold answers
//! it: `cp_startCheckpoint` simply writes a new retry count over the old
//! one, so a staged install started during an update's checkpoint renews
//! its budget instead of failing. Nothing on the devices changes: the store
//! and, in this boot, the live snapshot stay; only the count does.
//!
//! Armed (no attempt counted yet): the new budget counts from the next
//! boot. Checkpointing (this boot is attempt k): vold's new count covers
//! the boots after this one, so the budget becomes k + n (or unlimited).
//! An abort without retry recorded earlier is cleared, as vold's rewrite
//! clears its "0".

use super::ctx::Ctx;
use crate::error::{Error, Result};
use crate::types::{Budget, EventKind, Phase};

pub fn renew(ctx: &mut Ctx<'_>, budget: Budget, reason: &str) -> Result<()> {
    let after = match ctx.state.phase {
        Phase::Armed => "from the next boot",
        Phase::Checkpointing => "after this boot",
        other => {
            return Err(Error::WrongPhase {
                phase: format!("{other:?}"),
                what: "renew: no checkpoint is pending (start one instead)".into(),
            })
        }
    };
    let counted = if ctx.state.phase == Phase::Checkpointing { ctx.state.attempt } else { 0 };
    let new = match budget {
        Budget::Attempts(n) => Budget::Attempts(counted.saturating_add(n)),
        Budget::Unlimited => Budget::Unlimited,
    };
    let before = ctx.state.budget();
    ctx.state.set_budget(new);
    ctx.state.no_retry = false;
    let detail = format!("{reason}: {} {after} (was {})", budget.describe(), before.describe());
    ctx.record(EventKind::Renewed, "", detail);
    ctx.save()
}
