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

/// Reboots with `reason` as vold's abort does (`android_reboot` with the
/// message: the next boot's reason reads `reboot,<reason>`), through the
/// configured reboot command (`{reason}` in it becomes the reason's word).
/// Recorded before it runs, so the history says why the boot ended even if
/// the reboot is immediate; a failure is recorded and returned.
pub fn reboot(
    ctx: &mut Ctx<'_>,
    reason: &str,
    run: &mut dyn FnMut(&[String]) -> std::result::Result<(), String>,
) -> Result<()> {
    let argv = ctx.config.reboot_argv(reason);
    let word = crate::config::reboot_reason_word(reason);
    ctx.record(EventKind::Reboot, "", format!("reboot,{word} ({})", argv.join(" ")));
    ctx.save()?;
    if let Err(e) = run(&argv) {
        ctx.record(EventKind::RebootFailed, "", e.clone());
        ctx.save()?;
        return Err(Error::Internal(format!("reboot command failed: {e}")));
    }
    Ok(())
}
