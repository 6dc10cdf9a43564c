//! Deleting the COW files of finished checkpoints. They stay immutable and
//! recorded until their filesystem is mounted through rewind's top device
//! again (after a rollback or a commit finished at boot); failures are
//! logged and retried at the next poll.

use std::path::Path;

use super::ctx::Ctx;
use crate::cowstore;
use crate::fstab::CheckpointMode;
use crate::types::{error_chain, EventKind};

pub fn cleanup_pending(ctx: &mut Ctx<'_>) {
    if ctx.state.pending_cleanup.is_empty() {
        return;
    }
    let mut left = Vec::new();
    let mut removed = 0usize;
    for f in std::mem::take(&mut ctx.state.pending_cleanup) {
        // The block-mode partition whose filesystem holds the file.
        let owner = ctx
            .parts
            .iter()
            .filter(|p| p.mode == CheckpointMode::Block && Path::new(&f.path).starts_with(&p.mount_point))
            .max_by_key(|p| p.mount_point.len());
        let mounted = owner.is_some_and(|p| ctx.backend.check_mounted(p).is_ok());
        if !mounted {
            left.push(f);
            continue;
        }
        match cowstore::remove(std::slice::from_ref(&f)) {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(path = %f.path, error = %error_chain(&e), "COW file not removed yet");
                left.push(f);
            }
        }
    }
    ctx.state.pending_cleanup = left;
    if removed > 0 {
        ctx.record(EventKind::Cleanup, "", format!("{removed} COW files removed"));
        let _ = ctx.save();
    }
}
