//! vold's boot-time calls after /data is mounted, as rewind answers them.
//! rewind counts and arms the attempt before /data is mounted (prepare, at
//! early-fs); these calls confirm it and never change the devices:
//!
//! - `markBootAttempt` (init, post-fs): vold counts this boot here
//!   (`cp_markBootAttempt` decrements its retry counter). For rewind the
//!   count happened at prepare; this answers whether it did. After a
//!   ResetCheckpoint (a userspace reboot, where init runs markBootAttempt
//!   again) it is the prepare that counts again.
//! - `prepareCheckpoint` (init, post-fs-data): vold switches dm-bow to
//!   tracking and starts its space daemon when the boot is checkpointed
//!   (`cp_prepareCheckpoint`, a no-op otherwise). rewind's snapshot tracks
//!   from the moment it is armed and its space watch always runs, so this
//!   checks that the armed stack is live.

use super::ctx::Ctx;
use crate::error::{Error, Result};
use crate::types::{Phase, PrepareOutcome, Progress};

fn not_armed(ctx: &Ctx<'_>) -> Error {
    Error::WrongPhase {
        phase: format!("{:?}", ctx.state.phase),
        what: format!(
            "no attempt was armed in this boot ({} recorded): prepare-userdata did not run or failed before /data \
             was mounted, so this boot's writes are not protected (rewindctl status, rewindctl history)",
            ctx.state.attempt_text()
        ),
    }
}

pub fn mark_boot_attempt(ctx: &mut Ctx<'_>, progress: &mut dyn FnMut(Progress)) -> Result<PrepareOutcome> {
    if super::reset::recount_pending(ctx) {
        return super::prepare::prepare(ctx, progress);
    }
    match ctx.state.phase {
        Phase::Idle | Phase::RolledBack => Ok(ctx.outcome()),
        Phase::Checkpointing if ctx.state.boot_id == ctx.boot_id && !ctx.boot_id.is_empty() => Ok(ctx.outcome()),
        _ => Err(not_armed(ctx)),
    }
}

pub fn prepare_checkpoint(ctx: &mut Ctx<'_>) -> Result<()> {
    match ctx.state.phase {
        Phase::Checkpointing if ctx.state.boot_id == ctx.boot_id && !ctx.boot_id.is_empty() => {
            for p in &ctx.state.partitions {
                if !ctx.backend.is_armed(p)? {
                    return Err(Error::Unsafe(format!(
                        "{}: the record says attempt {} is armed in this boot, but its snapshot is not live",
                        p.name, ctx.state.attempt
                    )));
                }
            }
            Ok(())
        }
        Phase::Checkpointing => Err(not_armed(ctx)),
        // Not a checkpointed boot: nothing to prepare, as in vold.
        _ => Ok(()),
    }
}
