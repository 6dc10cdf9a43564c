//! AbortChanges: record the abort; without retry no attempt is left, so
//! the next prepare rolls back for good. The caller reboots.

use super::ctx::Ctx;
use crate::error::{Error, Result};
use crate::types::{EventKind, Phase};

pub fn abort(ctx: &mut Ctx<'_>, reason: &str, keep_retrying: bool) -> Result<()> {
    match ctx.state.phase {
        Phase::Armed | Phase::Checkpointing => {}
        other => {
            return Err(Error::WrongPhase {
                phase: format!("{other:?}"),
                what: "abort: no checkpoint is running".into(),
            })
        }
    }
    if !keep_retrying {
        ctx.state.no_retry = true;
    }
    let detail = format!("{reason}{}", if keep_retrying { "" } else { " (no retry: next boot rolls back)" });
    ctx.record(EventKind::Aborted, "", detail);
    ctx.save()
}
