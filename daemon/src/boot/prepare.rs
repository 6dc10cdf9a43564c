//! PrepareUserdata (architecture.md, boot contract): roll forward what a
//! power cut interrupted, count this attempt once, merge the previous
//! uncommitted attempt away, then arm a fresh snapshot or end rolled back.

use std::time::Instant;

use super::ctx::Ctx;
use crate::backend::Merged;
use crate::error::{Error, Result};
use crate::evidence::kmsg;
use crate::state::{Intent, PartitionState};
use crate::types::{error_chain, ErrorKind, EventKind, Phase, PrepareOutcome, Progress};

/// PrepareUserdata (architecture.md, boot contract).
pub fn prepare(ctx: &mut Ctx<'_>, progress: &mut dyn FnMut(Progress)) -> Result<PrepareOutcome> {
    // A ResetCheckpoint in this boot (userspace reboot): count again,
    // without merging (boot/reset.rs).
    if super::reset::recount_pending(ctx) {
        if let Some(outcome) = super::reset::recount(ctx)? {
            return Ok(outcome);
        }
    }
    // Already prepared in this boot: change nothing. dm devices do not
    // survive a reboot, so a live armed stack means "this boot" even if the
    // boot id could not be read; merging it now would pull the data from
    // under a mounted filesystem.
    if ctx.state.phase == Phase::Checkpointing {
        let mut live = 0;
        for p in &ctx.state.partitions {
            if ctx.backend.is_armed(p)? {
                live += 1;
            }
        }
        let same_boot = ctx.state.boot_id == ctx.boot_id && !ctx.boot_id.is_empty();
        if live > 0 && live == ctx.state.partitions.len() {
            return Ok(ctx.outcome());
        }
        if live > 0 || same_boot {
            return Err(Error::Unsafe(format!(
                "attempt {} was armed in this boot but {} of {} snapshots are live; not touching them",
                ctx.state.attempt,
                live,
                ctx.state.partitions.len()
            )));
        }
    }

    // Roll forward what a power cut interrupted.
    let phase = ctx.state.phase;
    match phase {
        // Stopped after too many failures: the partitions are usable and
        // the intent waits for a commit call.
        Phase::Committing if !super::commit::finish_at_boot(ctx)? => return Ok(ctx.outcome()),
        Phase::Committing => {}
        Phase::RollingBack => {
            let final_ = matches!(ctx.state.intent, Some(Intent::Rollback { final_: true, .. }));
            if let Some(done) = rollback(ctx, final_, progress)? {
                return done;
            }
        }
        _ => {}
    }

    match ctx.state.phase {
        Phase::Idle | Phase::RolledBack => {
            ctx.ensure_idle_all()?;
            Ok(ctx.outcome())
        }
        Phase::Armed => {
            if ctx.state.no_retry || !ctx.state.attempts_left() {
                // Nothing was written under a snapshot: nothing to merge.
                ctx.record(EventKind::RollbackFinished, "", "no attempt left before arming; nothing to undo");
                ctx.retire_partitions();
                ctx.state.phase = Phase::RolledBack;
                ctx.save()?;
                ctx.ensure_idle_all()?;
                return Ok(ctx.outcome());
            }
            arm_next(ctx, false)
        }
        Phase::Checkpointing => {
            // The previous attempt booted and was not committed: keep what
            // is known of how it ended, then discard it.
            super::keep::keep_evidence(ctx, ctx.state.attempt);
            let final_ = ctx.state.no_retry || !ctx.state.attempts_left();
            let reason = format!(
                "{} not committed{}",
                ctx.state.attempt_text(),
                if ctx.state.no_retry { " (aborted without retry)" } else { "" }
            );
            ctx.state.intent = Some(Intent::Rollback { reason: reason.clone(), final_ });
            ctx.state.phase = Phase::RollingBack;
            ctx.record(EventKind::RollbackBegun, "", reason);
            ctx.save()?;
            if let Some(done) = rollback(ctx, final_, progress)? {
                return done;
            }
            match ctx.state.phase {
                Phase::Armed => arm_next(ctx, true),
                _ => {
                    ctx.ensure_idle_all()?;
                    Ok(ctx.outcome())
                }
            }
        }
        Phase::Committing | Phase::RollingBack => {
            Err(Error::Internal(format!("phase {:?} left after rolling forward", ctx.state.phase)))
        }
    }
}

/// Verifies and merges every partition. Returns `Some(result)` when the
/// prepare is finished (a refusal), `None` to continue with the new phase
/// (Armed to arm the next attempt, or RolledBack).
fn rollback(
    ctx: &mut Ctx<'_>,
    final_: bool,
    progress: &mut dyn FnMut(Progress),
) -> Result<Option<Result<PrepareOutcome>>> {
    let started = Instant::now();
    let mut merged = 0u64;
    // The last rollback need not hold the boot: nothing is armed after it,
    // so the old system may run on the merging device (boot/background.rs).
    let background = final_ && ctx.config.cow.last_rollback_in_background;
    let mut running = 0;
    for p in ctx.state.partitions.clone() {
        if let Err(e) = ctx.backend.verify_store(&p) {
            if e.kind() == ErrorKind::Unsafe {
                return Ok(Some(ctx.refuse(&p.name, e)));
            }
            return Err(cannot_go_on(ctx, &p, e));
        }
        let result = if background {
            ctx.backend.merge_in_background(&p).map(|m| m.ok_or(()))
        } else {
            ctx.backend.merge(&p, progress).map(Ok)
        };
        match result {
            Ok(Err(())) => running += 1,
            Ok(Ok(Merged::Merged { sectors })) => merged += sectors,
            Ok(Ok(Merged::Nothing)) => {}
            // Refused before writing anything.
            Err(e) if e.kind() == ErrorKind::Unsafe => return Ok(Some(ctx.refuse(&p.name, e))),
            // Mid-merge: the intent stays; the next boot resumes it.
            Err(e) => return Err(cannot_go_on(ctx, &p, e)),
        }
    }
    if running > 0 {
        // Phase and intent stay RollingBack/final (saved before the merge
        // began): a cut from here on resumes the same merge at the next
        // boot. rewindd's poll records the end.
        tracing::info!(partitions = running, "last rollback: the merge continues in the background; /data may mount");
        return Ok(Some(Ok(ctx.outcome())));
    }
    let secs = started.elapsed().as_secs_f64();
    let detail = format!(
        "merged {} MiB in {:.1} s{}",
        (merged * 512) >> 20,
        secs,
        if final_ { "; no attempt left: userdata is at the baseline" } else { "" }
    );
    ctx.record(EventKind::RollbackFinished, "", detail);
    ctx.state.intent = None;
    ctx.state.rollback_failure = None;
    if final_ {
        ctx.retire_partitions();
        ctx.state.phase = Phase::RolledBack;
    } else {
        ctx.state.phase = Phase::Armed;
    }
    ctx.save()?;
    Ok(None)
}

/// The rollback of `part` cannot go on in this boot: its merge failed
/// (the kernel's `Merge failed`: an I/O error on the COW store stopped
/// it), or the store could not be read or loaded. The raw partition is
/// then neither the baseline nor the attempt for certain (a merge may have
/// run part way, in this boot or an earlier one), so it is held back
/// (`Backend::hold_back`: no device to mount) rather than left linear; the
/// intent stays RollingBack, so the next boot builds the stack again and
/// resumes the merge from what is on disk (dm-snapshot commits each merged
/// run to the store's metadata after copying it, so a run copied again is
/// copied with the same baseline data). Recorded with the kernel's words
/// once per failure, and kept for status until the rollback finishes.
fn cannot_go_on(ctx: &mut Ctx<'_>, part: &PartitionState, err: Error) -> Error {
    let words = error_chain(&err);
    let kernel = kmsg::snapshot_lines(&ctx.config.evidence.kmsg, 3);
    let said = if kernel.is_empty() { String::new() } else { format!("; the kernel said: {}", kernel.join(" / ")) };
    let held = match ctx.backend.hold_back(part) {
        Ok(()) => "userdata is held back in this boot (its device is not created, so nothing mounts it half merged)"
            .to_string(),
        Err(e) => format!("userdata could not be held back ({})", error_chain(&e)),
    };
    let why = format!(
        "{}: the rollback cannot go on: {words}{said}; {held}; phase stays rolling-back and the next boot resumes \
         the merge. Fix: the COW store's device returns I/O errors (see the device-mapper lines of the kernel log); \
         reboot once the storage works again",
        part.name
    );
    tracing::error!(partition = %part.name, "{why}");
    ctx.state.rollback_failure = Some(why.clone());
    ctx.record(EventKind::RollbackFailed, &part.name, why.clone());
    if let Err(e) = ctx.save() {
        return e;
    }
    Error::Unavailable(why)
}

/// Arms attempt `attempt + 1`; counts it in the same record write.
fn arm_next(ctx: &mut Ctx<'_>, verified: bool) -> Result<PrepareOutcome> {
    for p in ctx.state.partitions.clone() {
        if !verified {
            if let Err(e) = ctx.backend.verify_store(&p) {
                if e.kind() == ErrorKind::Unsafe {
                    return ctx.refuse(&p.name, e);
                }
                return Err(e);
            }
        }
        match ctx.backend.arm(&p, ctx.state.attempt + 1) {
            // Saved with the attempt below: a cut before that save re-arms
            // from the same record.
            Ok(free_map) => {
                if let Some(rec) = ctx.state.partitions.iter_mut().find(|r| r.name == p.name) {
                    rec.free_map = free_map;
                }
            }
            // The backend says an Unsafe refusal here would recur at every
            // boot (f2fs: the kernel refused checkpoint=disable in every
            // form), so give protection up now, recorded and reported,
            // rather than stay armed in name only.
            Err(e) if ctx.backend.traits(&p.name).arm_refusal_is_final && e.kind() == ErrorKind::Unsafe => {
                return ctx.refuse(&p.name, e);
            }
            Err(e) => return Err(e),
        }
    }
    ctx.state.attempt += 1;
    ctx.state.phase = Phase::Checkpointing;
    ctx.state.boot_id = ctx.boot_id.to_string();
    ctx.state.thresholds_hit.clear();
    let detail = format!("{} armed", ctx.state.attempt_text());
    ctx.record(EventKind::Attempt, "", detail);
    ctx.save()?;
    // Partitions not under this checkpoint still get their idle device.
    let armed: Vec<String> = ctx.state.partitions.iter().map(|p| p.name.clone()).collect();
    for p in ctx.parts.iter().filter(|p| !armed.contains(&p.name)) {
        ctx.backend.ensure_idle(p)?;
    }
    Ok(ctx.outcome())
}
