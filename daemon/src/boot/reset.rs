//! ResetCheckpoint, for userspace reboots (vold's `cp_resetCheckpoint`).
//!
//! A userspace reboot restarts Android above the kernel without a new
//! kernel boot: /data stays mounted, the dm devices stay, the boot_id stays.
//! vold forgets what it decided for this boot and init's userspace-reboot
//! sequence runs `markBootAttempt` again, so the restarted system counts as
//! another boot of the checkpoint. rewind counts an attempt once per boot_id
//! ("a second prepare in the same boot changes nothing"); the reset lifts
//! that once: the next prepare in this boot counts again ([`recount`]).
//!
//! Safely: nothing here ever merges (a merge under a mounted /data would
//! pull the data from under the filesystem), and nothing counts an attempt
//! that is not live:
//! - the attempt of this boot is live: the next attempt is counted on the
//!   same snapshot, which then carries both (a rollback discards both; a
//!   commit keeps both). With no attempt left, the checkpoint is marked to
//!   roll back at the next full boot instead (no_retry).
//! - the checkpoint is only armed (started in this boot): the next prepare
//!   arms it, as any prepare does, and counts attempt 1.
//! - anything else (the record says this boot's attempt is live but it is
//!   not) is refused, as prepare refuses it.

use super::ctx::Ctx;
use crate::error::{Error, Result};
use crate::types::{EventKind, Phase, PrepareOutcome};

pub fn reset(ctx: &mut Ctx<'_>) -> Result<()> {
    match ctx.state.phase {
        Phase::Armed | Phase::Checkpointing if !ctx.boot_id.is_empty() => {}
        Phase::Armed | Phase::Checkpointing => {
            return Err(Error::Unsafe("the boot id cannot be read: a reset could count one boot twice".into()))
        }
        // No checkpoint pending: nothing to count again (vold only clears
        // its memory then).
        _ => return Ok(()),
    }
    ctx.state.recount_boot_id = ctx.boot_id.to_string();
    ctx.record(EventKind::Reset, "", "userspace reboot: the next prepare in this boot counts an attempt again");
    ctx.save()
}

/// Whether a reset in this boot waits for its prepare.
pub(super) fn recount_pending(ctx: &Ctx<'_>) -> bool {
    !ctx.boot_id.is_empty() && ctx.state.recount_boot_id == ctx.boot_id
}

/// The prepare after a reset (module doc). `Ok(None)`: go on with the
/// ordinary prepare (an armed checkpoint is armed now).
pub(super) fn recount(ctx: &mut Ctx<'_>) -> Result<Option<PrepareOutcome>> {
    ctx.state.recount_boot_id.clear();
    match ctx.state.phase {
        Phase::Armed => Ok(None),
        Phase::Checkpointing if ctx.state.boot_id == ctx.boot_id => {
            for p in &ctx.state.partitions {
                if !ctx.backend.is_armed(p)? {
                    return Err(Error::Unsafe(format!(
                        "{}: attempt {} of this boot is not live; not counting it again",
                        p.name, ctx.state.attempt
                    )));
                }
            }
            let previous = ctx.state.attempt;
            if ctx.state.attempts_left() {
                ctx.state.attempt += 1;
                let detail = format!(
                    "{} counted after a userspace reboot; it continues attempt {previous}'s live snapshot \
                     (a rollback discards both)",
                    ctx.state.attempt_text()
                );
                ctx.record(EventKind::Attempt, "", detail);
            } else {
                ctx.state.no_retry = true;
                let detail = format!(
                    "userspace reboot after {}: no attempt left; the next full boot rolls back",
                    ctx.state.attempt_text()
                );
                ctx.record(EventKind::Aborted, "", detail);
            }
            ctx.save()?;
            Ok(Some(ctx.outcome()))
        }
        other => {
            ctx.save()?;
            Err(Error::WrongPhase {
                phase: format!("{other:?}"),
                what: "no attempt of this boot to count again after the reset".into(),
            })
        }
    }
}
