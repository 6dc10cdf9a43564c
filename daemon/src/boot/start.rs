//! StartCheckpoint: create and record each partition's store (phase
//! Armed); the next prepare arms attempt 1. Nothing is recorded unless
//! every store was made, and no store is left behind unless recorded.

use super::ctx::Ctx;
use crate::error::{Error, Result};
use crate::evidence::Evidence;
use crate::state::{PartitionState, State};
use crate::sys;
use crate::types::{error_chain, Budget, EventKind, Phase};

pub fn start(ctx: &mut Ctx<'_>, budget: Budget, reason: &str) -> Result<()> {
    match ctx.state.phase {
        Phase::Idle | Phase::RolledBack => {}
        other => {
            return Err(Error::WrongPhase {
                phase: format!("{other:?}"),
                what: "start: a checkpoint is already running".into(),
            })
        }
    }
    let chunk = ctx.config.cow.chunk_sectors;
    if chunk < 8 || !chunk.is_power_of_two() {
        return Err(Error::Unavailable(format!("cow.chunk_sectors {chunk} is not a power of two >= 8")));
    }
    super::cleanup::cleanup_pending(ctx);
    let mut made: Vec<PartitionState> = Vec::new();
    let parts = ctx.parts;
    for fp in parts {
        let created =
            ctx.backend.check_mounted(fp).and_then(|raw_size| ctx.backend.create_store(fp, &ctx.config.cow, raw_size));
        match created {
            Ok(part) => made.push(part),
            Err(e) => {
                for p in &made {
                    ctx.backend.discard_store(p);
                }
                return Err(e);
            }
        }
    }
    let prev_history = std::mem::take(&mut ctx.state.history);
    let pending = std::mem::take(&mut ctx.state.pending_cleanup);
    *ctx.state = State {
        seq: ctx.state.seq,
        phase: Phase::Armed,
        reason: reason.to_string(),
        started_unix: sys::now_unix(),
        partitions: made.clone(),
        pending_cleanup: pending,
        // An earlier commit's command still owed stays owed.
        commit_command_pending: ctx.state.commit_command_pending,
        history: prev_history,
        ..State::default()
    };
    ctx.state.set_budget(budget);
    let cow: u64 = made.iter().map(|p| p.cow_bytes()).sum();
    let files: usize = made.iter().map(|p| p.cow_files.len()).sum();
    let detail = format!("{reason} ({}, COW store {} MiB in {files} files)", budget.describe(), cow >> 20);
    ctx.record(EventKind::Started, "", detail);
    if let Err(e) = ctx.save() {
        // Not recorded: the checkpoint does not exist; do not leave its
        // files behind.
        for p in &made {
            ctx.backend.discard_store(p);
        }
        ctx.state.phase = Phase::Idle;
        ctx.state.partitions.clear();
        return Err(e);
    }
    // Attempt numbers name this checkpoint's boots from now on; the last
    // checkpoint's evidence stays one generation (attempts.previous).
    if let Err(e) = Evidence::new(&ctx.config.metadata_dir, &ctx.config.evidence).rotate() {
        tracing::warn!(error = %error_chain(&e), "the last checkpoint's evidence was not moved aside");
    }
    Ok(())
}
