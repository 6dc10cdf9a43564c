//! The last rollback in the background (`cow.last_rollback_in_background`):
//! PrepareUserdata started the merge and returned, so the old system runs
//! on the merging device; each pass of rewindd's poll looks at the merge
//! once and, when the kernel is done, ends the rollback as a waited-for
//! merge would have (idle table, store released, RolledBack recorded).
//! A power cut before that leaves phase RollingBack with its final intent:
//! the next PrepareUserdata resumes the same merge.
//!
//! A merge the kernel stops (`Merge failed`: the COW store's device returned
//! an I/O error) cannot be restarted in this boot, and /data is already
//! mounted on it, so unlike prepare's failed merge nothing is held back:
//! the failure is recorded once with the kernel's words, the poll stops
//! looking, and the intent stays for the next boot, which loads the merge
//! anew from the store.

use super::ctx::Ctx;
use crate::backend::Merged;
use crate::error::Result;
use crate::evidence::kmsg;
use crate::state::{Intent, PartitionState};
use crate::types::{error_chain, EventKind, Phase, Progress};

/// One look at every partition's merge. Returns true once nothing is left
/// for this boot's poll to do: the rollback is over and recorded, or its
/// merge stopped and the failure is recorded for the next boot to resume.
pub fn finish_background_rollback(ctx: &mut Ctx<'_>, progress: &mut dyn FnMut(Progress)) -> Result<bool> {
    if ctx.state.phase != Phase::RollingBack || !matches!(ctx.state.intent, Some(Intent::Rollback { final_: true, .. }))
    {
        return Ok(true);
    }
    let mut merged = 0u64;
    for p in ctx.state.partitions.clone() {
        let look = match ctx.backend.poll_background_merge(&p, progress) {
            Ok(look) => look,
            Err(e) => {
                stopped(ctx, &p, &error_chain(&e))?;
                return Ok(true);
            }
        };
        match look {
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

/// Records that `part`'s background merge cannot go on in this boot.
fn stopped(ctx: &mut Ctx<'_>, part: &PartitionState, words: &str) -> Result<()> {
    let kernel = kmsg::snapshot_lines(&ctx.config.evidence.kmsg, 3);
    let said = if kernel.is_empty() { String::new() } else { format!("; the kernel said: {}", kernel.join(" / ")) };
    let why = format!(
        "{}: the background merge stopped: {words}{said}; /data stays on the merging device in this boot; phase \
         stays rolling-back and the next boot loads the merge again from the store and finishes it. Fix: the COW \
         store's device returns I/O errors (see the device-mapper lines of the kernel log); reboot once the storage \
         works again",
        part.name
    );
    tracing::error!(partition = %part.name, "{why}");
    ctx.state.rollback_failure = Some(why.clone());
    ctx.record(EventKind::RollbackFailed, &part.name, why);
    ctx.save()
}
