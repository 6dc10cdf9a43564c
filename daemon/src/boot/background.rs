//! The last rollback in the background (`cow.last_rollback_in_background`):
//! PrepareUserdata started the merge and returned, so the old system runs
//! on the merging device; each pass of rewindd's poll looks at the merge
//! once and, when the kernel is done, ends the rollback as a waited-for
//! merge would have (idle table, store released, RolledBack recorded).
//! A power cut before that leaves phase RollingBack with its final intent:
//! the next PrepareUserdata resumes the same merge.

use super::ctx::Ctx;
use crate::backend::Merged;
use crate::error::Result;
use crate::state::Intent;
use crate::types::{EventKind, Phase, Progress};

/// One look at every partition's merge. Returns true once the rollback is
/// over and recorded (or nothing is left to finish).
pub fn finish_background_rollback(ctx: &mut Ctx<'_>, progress: &mut dyn FnMut(Progress)) -> Result<bool> {
    if ctx.state.phase != Phase::RollingBack || !matches!(ctx.state.intent, Some(Intent::Rollback { final_: true, .. }))
    {
        return Ok(true);
    }
    let mut merged = 0u64;
    for p in ctx.state.partitions.clone() {
        match ctx.backend.poll_background_merge(&p, progress)? {
            None => return Ok(false),
            Some(Merged::Merged { sectors }) => merged += sectors,
            Some(Merged::Nothing) => {}
        }
    }
    let detail = format!(
        "merged {} MiB in the background while the old system ran; no attempt left: userdata is at the baseline",
        (merged * 512) >> 20
    );
    ctx.record(EventKind::RollbackFinished, "", detail);
    ctx.state.intent = None;
    ctx.retire_partitions();
    ctx.state.phase = Phase::RolledBack;
    ctx.save()?;
    Ok(true)
}
