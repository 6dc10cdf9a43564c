//! Commit (live), and finishing a commit a power cut interrupted.
//!
//! The intent is written first; a cut after that finishes the commit at
//! the next prepare. The configured commit command (e.g. mark the boot slot
//! successful) is a logged step whose order against the data commit is the
//! backend's rule ([`crate::backend::Traits::commit_data_first`]).

use std::time::{Duration, Instant};

use super::ctx::Ctx;
use crate::error::{Error, Result};
use crate::state::Intent;
use crate::types::{error_chain, CommitFailureReport, EventKind, Phase};

/// Commit (live). Writes the intent first; a cut after that finishes the
/// commit at the next prepare. `hook` is the configured commit command,
/// run after the intent (idempotent, e.g. mark the slot successful).
pub fn commit(ctx: &mut Ctx<'_>, reason: &str, hook: &mut dyn FnMut() -> Result<()>) -> Result<Duration> {
    let started = Instant::now();
    match ctx.state.phase {
        Phase::Checkpointing | Phase::Committing => {}
        // A commit finished at boot after a cut left its command to run now
        // (see finish_at_boot); the data is already committed.
        Phase::Idle if ctx.state.commit_command_pending => {
            run_commit_command(ctx, hook)?;
            ctx.save()?;
            return Ok(started.elapsed());
        }
        Phase::Armed => {
            // No attempt has run yet: committing cancels the checkpoint.
            ctx.record(EventKind::Committed, "", format!("checkpoint cancelled before its first boot: {reason}"));
            ctx.retire_partitions();
            ctx.state.phase = Phase::Idle;
            ctx.save()?;
            return Ok(started.elapsed());
        }
        other => {
            return Err(Error::WrongPhase {
                phase: format!("{other:?}"),
                what: "commit: no checkpoint is running".into(),
            })
        }
    }
    if ctx.state.phase == Phase::Checkpointing {
        ctx.state.intent = Some(Intent::Commit { reason: reason.to_string() });
        ctx.state.phase = Phase::Committing;
        ctx.record(EventKind::CommitBegun, "", reason);
        ctx.save()?;
    }
    // Where the data survives a cut only once it is committed (f2fs: until
    // the checkpoint=enable remount has taken, a power cut drops the
    // attempt whatever the intent says), the hook (which may mark the slot
    // successful) must not run before the data is kept. Block mode keeps
    // its order: its data survives a cut at any point.
    let data_first = ctx.state.partitions.iter().any(|p| ctx.backend.traits(&p.name).commit_data_first);
    if data_first {
        for p in ctx.state.partitions.clone() {
            commit_data(ctx, &p, "live")?;
        }
    }
    if ctx.has_commit_command() {
        run_commit_command(ctx, hook)?;
    }
    if !data_first {
        for p in ctx.state.partitions.clone() {
            commit_data(ctx, &p, "live")?;
        }
    }
    let took = started.elapsed();
    ctx.record(EventKind::Committed, "", format!("{reason} (live, {} ms)", took.as_millis()));
    ctx.retire_partitions();
    ctx.state.phase = Phase::Idle;
    ctx.state.no_retry = false;
    ctx.save()?;
    Ok(took)
}

/// Boot, phase Committing: a power cut (or a failed data commit) stopped a
/// commit after its intent; finish it the same way. Returns false when the
/// commit was not tried because it has failed `commit_max_failures` times:
/// the partitions are made usable and the intent stays for a commit call.
///
/// Nothing in the committing phase rolls back (abort and prepare only go
/// forward from it), so whatever happens here userdata is the committed
/// data: on the raw device in block mode (snapshot-origin wrote through),
/// and the COW files are only kept until the commit is done.
pub(super) fn finish_at_boot(ctx: &mut Ctx<'_>) -> Result<bool> {
    let failed = failed_commits(ctx.state);
    let limit = ctx.config.commit_max_failures as usize;
    if failed >= limit {
        // A commit that failed this often would most likely fail again, and
        // retrying it at every boot is the loop this bound exists to stop;
        // the history already says so (commit-stopped), so nothing is
        // recorded here either: a boot adds no event.
        tracing::warn!(
            failed,
            limit,
            "commit not retried at boot: it failed {failed} times since the intent (commit_max_failures {limit}); `rewindctl commit` retries"
        );
        make_usable(ctx)?;
        return Ok(false);
    }
    let mut notes = Vec::new();
    for p in ctx.state.partitions.clone() {
        // f2fs: a cut before checkpoint=enable took loses the attempt
        // whatever the intent says; the history must say which it was.
        if let Some(n) = ctx.backend.interrupted_commit_note(&p) {
            notes.push(format!("{}: {n}", p.name));
        }
        if let Err(e) = commit_data(ctx, &p, "at boot") {
            // The boot goes on to mount /data whatever prepare answers:
            // give it a device if one can be made.
            if let Err(u) = make_usable(ctx) {
                tracing::error!(error = %error_chain(&u), "no usable device after a failed commit at boot");
            }
            return Err(e);
        }
    }
    let mut detail = "commit finished at boot after an interruption".to_string();
    for n in notes {
        detail.push_str("; ");
        detail.push_str(&n);
    }
    ctx.record(EventKind::Committed, "", detail);
    // The commit command (e.g. marking the slot successful) may or may not
    // have run before the cut. It is not run here: at early-fs the services
    // it talks to (the boot HAL) are not up yet, and a failure could not be
    // reported to anyone. It runs at the next commit call instead, which
    // init makes at boot completed on every boot (rewindd.rc); it must be
    // idempotent anyway.
    if ctx.has_commit_command() {
        ctx.state.commit_command_pending = true;
        ctx.record(
            EventKind::CommitCommandPending,
            "",
            "the commit command runs at the next commit call (boot completed)",
        );
    }
    ctx.retire_partitions();
    ctx.state.phase = Phase::Idle;
    ctx.save()?;
    Ok(true)
}

/// A commit that did not finish at boot: every partition gets its plain
/// device over the (committed) data so /data mounts, except one whose
/// armed stack is live in this boot (rewindd restarted after a failed live
/// commit): that one is mounted already and stays as it is.
fn make_usable(ctx: &mut Ctx<'_>) -> Result<()> {
    for p in ctx.parts {
        if let Some(rec) = ctx.state.partitions.iter().find(|r| r.name == p.name) {
            if ctx.backend.is_armed(rec)? {
                continue;
            }
        }
        ctx.backend.ensure_idle(p)?;
    }
    Ok(())
}

/// The data commit of one partition. A failure is recorded in the history
/// (`commit-failed`, with the count of failed commits since the intent)
/// and saved before the error goes back, so a commit that keeps failing is
/// visible in `rewindctl history` instead of only in a log that a reboot
/// may lose. The intent stays: the next commit call retries, and so does
/// the next boot until the count reaches `commit_max_failures`
/// (`commit-stopped` is recorded then, once).
fn commit_data(ctx: &mut Ctx<'_>, p: &crate::state::PartitionState, when: &str) -> Result<()> {
    match ctx.backend.commit_live(p) {
        Ok(()) => Ok(()),
        Err(e) => {
            let n = failed_commits(ctx.state) + 1;
            let why = error_chain(&e);
            ctx.record(EventKind::CommitFailed, &p.name, format!("{when}, failed commit {n} since the intent: {why}"));
            let limit = ctx.config.commit_max_failures as usize;
            if n == limit {
                let detail = format!(
                    "failed {n} times since the intent (commit_max_failures {limit}): boots no longer retry it, \
                     `rewindctl commit` does; fix: {}",
                    fix_hint(&why)
                );
                ctx.record(EventKind::CommitStopped, &p.name, detail);
            }
            // The commit's own error is the one the caller must see; a
            // failed save is logged (the record stays what was last saved).
            if let Err(s) = ctx.save() {
                tracing::error!(error = %error_chain(&s), "recording a failed commit");
            }
            Err(e)
        }
    }
}

/// Failed data commits recorded since the last `commit-begun` (the count
/// is bounded by the history limit, which keeps the newest events; the
/// config keeps `commit_max_failures` within it).
pub fn failed_commits(state: &crate::state::State) -> usize {
    state
        .history
        .iter()
        .rev()
        .take_while(|e| !e.is(EventKind::CommitBegun))
        .filter(|e| e.is(EventKind::CommitFailed))
        .count()
}

/// The state of a begun commit that has failed (phase committing), for
/// status: None when no commit is pending or none of its tries failed.
pub fn failure_report(state: &crate::state::State, limit: u32) -> Option<CommitFailureReport> {
    if state.phase != Phase::Committing {
        return None;
    }
    let failures = failed_commits(state);
    let last = state.history.iter().rev().find(|e| e.is(EventKind::CommitFailed))?;
    if failures == 0 {
        return None;
    }
    let last_error = match last.detail.split_once(" since the intent: ") {
        Some((_, why)) => why.to_string(),
        None => last.detail.clone(),
    };
    Some(CommitFailureReport {
        failures: u32::try_from(failures).unwrap_or(u32::MAX),
        limit,
        retried_at_boot: failures < limit as usize,
        fix: fix_hint(&last_error).to_string(),
        last_error,
    })
}

/// What to do about a failed commit, from its error's words.
fn fix_hint(why: &str) -> &'static str {
    if why.contains("busy") || why.contains("EBUSY") {
        "a process holds a rewind device open (the table swap or the removal of the snapshot needs it closed): \
         find it with `fuser -v /dev/mapper/rewind-*` or `lsof`, stop it, then run `rewindctl commit`"
    } else {
        "remove the cause the error names, then run `rewindctl commit`; until then the data stays the committed \
         data and the COW files stay on /data"
    }
}

/// Runs the configured commit command as a logged step: its outcome goes
/// into the history either way, and `commit_command_pending` is cleared
/// only by a success.
fn run_commit_command(ctx: &mut Ctx<'_>, hook: &mut dyn FnMut() -> Result<()>) -> Result<()> {
    let started = Instant::now();
    match hook() {
        Ok(()) => {
            ctx.state.commit_command_pending = false;
            ctx.record(EventKind::CommitCommand, "", format!("ran ({} ms)", started.elapsed().as_millis()));
            Ok(())
        }
        Err(e) => {
            ctx.record(EventKind::CommitCommandFailed, "", error_chain(&e));
            // The failure must be on disk even though the caller errors out.
            ctx.save()?;
            Err(e)
        }
    }
}

/// Commit with no checkpoint recorded while the boot slot is not marked
/// successful (vold's `cp_commitChanges` marks the slot whenever its
/// boot-time answer was "checkpointing", slot included): the configured
/// commit command marks it. On a device whose update_verifier defers to
/// rewind (vold-compatible `supportsCheckpoint` true), this is the only
/// place the new slot gets marked when no rewind checkpoint was started.
pub fn mark_slot(ctx: &mut Ctx<'_>, reason: &str, hook: &mut dyn FnMut() -> Result<()>) -> Result<Duration> {
    let started = Instant::now();
    if ctx.state.phase != Phase::Idle && ctx.state.phase != Phase::RolledBack {
        return Err(Error::WrongPhase {
            phase: format!("{:?}", ctx.state.phase),
            what: "mark slot: a checkpoint is pending; commit it instead".into(),
        });
    }
    if !ctx.has_commit_command() {
        return Err(Error::Unavailable("no commit_command is configured to mark the boot slot".into()));
    }
    let ran = hook();
    match ran {
        Ok(()) => {
            ctx.state.commit_command_pending = false;
            let detail = format!(
                "ran ({} ms): no checkpoint was pending; the boot slot was not marked successful ({reason})",
                started.elapsed().as_millis()
            );
            ctx.record(EventKind::CommitCommand, "", detail);
            ctx.save()?;
            Ok(started.elapsed())
        }
        Err(e) => {
            ctx.record(EventKind::CommitCommandFailed, "", format!("marking the boot slot: {}", error_chain(&e)));
            ctx.save()?;
            Err(e)
        }
    }
}
