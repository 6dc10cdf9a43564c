//! The checkpoint's life cycle over the state record: PrepareUserdata (the
//! boot contract), Commit and Abort. This module decides from the record;
//! a [`Backend`] acts on the devices.
//!
//! Every step that changes what "the data" is writes the record first (an
//! intent), so a power cut anywhere rolls the same way forward at the next
//! prepare:
//! - `Committing` (intent Commit): finish the commit.
//! - `RollingBack` (intent Rollback{final}): finish the merge, then arm the
//!   next attempt or end in `RolledBack`.
//!
//! An attempt is counted exactly once, in the same record write that marks
//! it armed (`Checkpointing`): a power cut during prepare (merge, arming)
//! does not use up an attempt, and a second prepare in the same boot
//! (same boot_id) changes nothing.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::backend::{Backend, PartRef};
use crate::engine::{Event, Phase, PrepareOutcome, Progress};
use crate::error::{Error, ErrorKind, Result};
use crate::state::{Intent, State, Store};

/// Everything the life-cycle steps work with.
pub struct Ctx<'a> {
    pub backend: &'a mut dyn Backend,
    pub store: &'a mut Store,
    pub state: &'a mut State,
    /// Block-mode partitions from the fstab (for the idle stack).
    pub parts: &'a [PartRef],
    pub history_limit: usize,
    pub boot_id: &'a str,
    pub boot_reason: &'a str,
    /// Whether a commit command is configured (`commit_command`): a commit
    /// finished at boot leaves it pending for the next commit call.
    pub has_commit_command: bool,
    /// Called with each event as it is recorded (WatchStatus).
    pub notify: &'a dyn Fn(&Event),
}

pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Ctx<'_> {
    /// Adds an event to the history (saved with the next `save`).
    pub fn record(&mut self, kind: &str, partition: &str, detail: impl Into<String>) {
        let e = Event {
            time_unix: now_unix(),
            kind: kind.to_string(),
            attempt: self.state.attempt,
            attempts: self.state.attempts,
            partition: partition.to_string(),
            detail: detail.into(),
            boot_reason: self.boot_reason.to_string(),
        };
        tracing::info!(kind, partition, detail = %e.detail, attempt = e.attempt, attempts = e.attempts, "event");
        (self.notify)(&e);
        self.state.push_event(e, self.history_limit);
    }

    pub fn save(&mut self) -> Result<()> {
        self.state.seq += 1;
        self.store.save(self.state)?;
        Ok(())
    }

    fn outcome(&self) -> PrepareOutcome {
        PrepareOutcome { phase: self.state.phase, attempt: self.state.attempt, attempts: self.state.attempts }
    }

    fn ensure_idle_all(&mut self) -> Result<()> {
        for p in self.parts {
            self.backend.ensure_idle(p)?;
        }
        Ok(())
    }

    /// The checkpoint is over: its files wait for deletion until the
    /// filesystem is mounted again.
    fn retire_partitions(&mut self) {
        for p in std::mem::take(&mut self.state.partitions) {
            self.state.pending_cleanup.extend(p.cow_files);
        }
        self.state.intent = None;
        self.state.thresholds_hit.clear();
    }

    /// A check failed before anything was written: give up protection
    /// rather than write through a map we cannot trust, keep the data as it
    /// is, make the partition usable, record and report.
    fn refuse(&mut self, partition: &str, err: Error) -> Result<PrepareOutcome> {
        let why = error_chain(&err);
        self.record("refused", partition, format!("rollback protection given up: {why}"));
        self.state.protection_lost = Some(why);
        self.retire_partitions();
        self.state.phase = Phase::Idle;
        self.save()?;
        self.ensure_idle_all()?;
        Err(err)
    }
}

/// "a: b: c" from an error and its sources.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}

/// PrepareUserdata (architecture.md, boot contract).
pub fn prepare(ctx: &mut Ctx<'_>, progress: &mut dyn FnMut(Progress)) -> Result<PrepareOutcome> {
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
    match ctx.state.phase {
        Phase::Committing => finish_commit_at_boot(ctx)?,
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
            if ctx.state.no_retry || ctx.state.attempt >= ctx.state.attempts {
                // Nothing was written under a snapshot: nothing to merge.
                ctx.record("rollback-finished", "", "no attempt left before arming; nothing to undo");
                ctx.retire_partitions();
                ctx.state.phase = Phase::RolledBack;
                ctx.save()?;
                ctx.ensure_idle_all()?;
                return Ok(ctx.outcome());
            }
            arm_next(ctx, false)
        }
        Phase::Checkpointing => {
            // The previous attempt booted and was not committed: discard it.
            let final_ = ctx.state.no_retry || ctx.state.attempt >= ctx.state.attempts;
            let reason = format!(
                "attempt {} of {} not committed{}",
                ctx.state.attempt,
                ctx.state.attempts,
                if ctx.state.no_retry { " (aborted without retry)" } else { "" }
            );
            ctx.state.intent = Some(Intent::Rollback { reason: reason.clone(), final_ });
            ctx.state.phase = Phase::RollingBack;
            ctx.record("rollback-begun", "", reason);
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
    for p in ctx.state.partitions.clone() {
        if let Err(e) = ctx.backend.verify_store(&p) {
            if e.kind() == ErrorKind::Unsafe {
                return Ok(Some(ctx.refuse(&p.name, e)));
            }
            return Err(e);
        }
        match ctx.backend.merge(&p, progress) {
            Ok(crate::backend::Merged::Merged { sectors }) => merged += sectors,
            Ok(crate::backend::Merged::Nothing) => {}
            // Refused before writing anything.
            Err(e) if e.kind() == ErrorKind::Unsafe => return Ok(Some(ctx.refuse(&p.name, e))),
            // Mid-merge: the intent stays; the next prepare resumes it.
            Err(e) => return Err(e),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let detail = format!(
        "merged {} MiB in {:.1} s{}",
        (merged * 512) >> 20,
        secs,
        if final_ { "; no attempt left: userdata is at the baseline" } else { "" }
    );
    ctx.record("rollback-finished", "", detail);
    ctx.state.intent = None;
    if final_ {
        ctx.retire_partitions();
        ctx.state.phase = Phase::RolledBack;
    } else {
        ctx.state.phase = Phase::Armed;
    }
    ctx.save()?;
    Ok(None)
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
        if let Err(e) = ctx.backend.arm(&p) {
            // f2fs: the kernel refused checkpoint=disable in every form. It
            // would refuse at every boot, so give protection up now,
            // recorded and reported, rather than stay armed in name only.
            if p.backend == crate::engine::BackendKind::F2fs && e.kind() == ErrorKind::Unsafe {
                return ctx.refuse(&p.name, e);
            }
            return Err(e);
        }
    }
    ctx.state.attempt += 1;
    ctx.state.phase = Phase::Checkpointing;
    ctx.state.boot_id = ctx.boot_id.to_string();
    ctx.state.thresholds_hit.clear();
    let detail = format!("attempt {} of {} armed", ctx.state.attempt, ctx.state.attempts);
    ctx.record("attempt", "", detail);
    ctx.save()?;
    // Partitions not under this checkpoint still get their idle device.
    let armed: Vec<String> = ctx.state.partitions.iter().map(|p| p.name.clone()).collect();
    for p in ctx.parts.iter().filter(|p| !armed.contains(&p.name)) {
        ctx.backend.ensure_idle(p)?;
    }
    Ok(ctx.outcome())
}

fn finish_commit_at_boot(ctx: &mut Ctx<'_>) -> Result<()> {
    let mut notes = Vec::new();
    for p in ctx.state.partitions.clone() {
        // f2fs: a cut before checkpoint=enable took loses the attempt
        // whatever the intent says; the history must say which it was.
        if let Some(n) = ctx.backend.interrupted_commit_note(&p) {
            notes.push(format!("{}: {n}", p.name));
        }
        ctx.backend.commit_live(&p)?;
    }
    let mut detail = "commit finished at boot after an interruption".to_string();
    for n in notes {
        detail.push_str("; ");
        detail.push_str(&n);
    }
    ctx.record("committed", "", detail);
    // The commit command (e.g. marking the slot successful) may or may not
    // have run before the cut. It is not run here: at early-fs the services
    // it talks to (the boot HAL) are not up yet, and a failure could not be
    // reported to anyone. It runs at the next commit call instead, which
    // init makes at boot completed on every boot (rewindd.rc); it must be
    // idempotent anyway.
    if ctx.has_commit_command {
        ctx.state.commit_command_pending = true;
        ctx.record("commit-command-pending", "", "the commit command runs at the next commit call (boot completed)");
    }
    ctx.retire_partitions();
    ctx.state.phase = Phase::Idle;
    ctx.save()
}

/// Runs the configured commit command as a logged step: its outcome goes
/// into the history either way, and `commit_command_pending` is cleared
/// only by a success.
fn run_commit_command(ctx: &mut Ctx<'_>, hook: &mut dyn FnMut() -> Result<()>) -> Result<()> {
    let started = Instant::now();
    match hook() {
        Ok(()) => {
            ctx.state.commit_command_pending = false;
            ctx.record("commit-command", "", format!("ran ({} ms)", started.elapsed().as_millis()));
            Ok(())
        }
        Err(e) => {
            ctx.record("commit-command-failed", "", error_chain(&e));
            // The failure must be on disk even though the caller errors out.
            ctx.save()?;
            Err(e)
        }
    }
}

/// Commit (live). Writes the intent first; a cut after that finishes the
/// commit at the next prepare. `hook` is the configured commit command,
/// run after the intent (idempotent, e.g. mark the slot successful).
pub fn commit(ctx: &mut Ctx<'_>, reason: &str, hook: &mut dyn FnMut() -> Result<()>) -> Result<Duration> {
    let started = Instant::now();
    match ctx.state.phase {
        Phase::Checkpointing | Phase::Committing => {}
        // A commit finished at boot after a cut left its command to run now
        // (see finish_commit_at_boot); the data is already committed.
        Phase::Idle if ctx.state.commit_command_pending => {
            run_commit_command(ctx, hook)?;
            ctx.save()?;
            return Ok(started.elapsed());
        }
        Phase::Armed => {
            // No attempt has run yet: committing cancels the checkpoint.
            ctx.record("committed", "", format!("checkpoint cancelled before its first boot: {reason}"));
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
        ctx.record("commit-begun", "", reason);
        ctx.save()?;
    }
    // f2fs: until the checkpoint=enable remount has taken, a power cut
    // drops the attempt whatever the intent says; the hook (which may mark
    // the slot successful) must not run before the data is kept. Block
    // mode keeps its order: its data survives a cut at any point.
    let data_first = ctx.state.partitions.iter().any(|p| p.backend == crate::engine::BackendKind::F2fs);
    if data_first {
        for p in ctx.state.partitions.clone() {
            ctx.backend.commit_live(&p)?;
        }
    }
    if ctx.has_commit_command {
        run_commit_command(ctx, hook)?;
    }
    if !data_first {
        for p in ctx.state.partitions.clone() {
            ctx.backend.commit_live(&p)?;
        }
    }
    let took = started.elapsed();
    ctx.record("committed", "", format!("{reason} (live, {} ms)", took.as_millis()));
    ctx.retire_partitions();
    ctx.state.phase = Phase::Idle;
    ctx.state.no_retry = false;
    ctx.save()?;
    Ok(took)
}

/// AbortChanges: record; without retry, no attempt is left, so the next
/// prepare rolls back for good. The caller reboots.
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
    ctx.record("aborted", "", detail);
    ctx.save()
}

#[cfg(test)]
mod tests;
