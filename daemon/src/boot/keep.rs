//! The boot after an uncommitted attempt keeps what is known of how it
//! ended, before the rollback erases /data: the boot reason (this boot's,
//! which says how the last one stopped) and pstore, next to the files the
//! copier kept while the attempt ran (`evidence`). Never fatal: evidence is
//! worth less than the rollback it must not hold up.

use super::ctx::Ctx;
use crate::evidence::Evidence;
use crate::types::{error_chain, EventKind};

pub(super) fn keep_evidence(ctx: &mut Ctx<'_>, attempt: u32) {
    let ev = Evidence::new(&ctx.config.metadata_dir, &ctx.config.evidence);
    if !ev.enabled() {
        return;
    }
    match ev.finish(attempt, ctx.boot_reason) {
        Ok(kept) => {
            let mut names: Vec<&str> = kept.files.iter().map(|f| f.name.as_str()).collect();
            names.truncate(12);
            let more = kept.files.len().saturating_sub(names.len());
            let detail = format!(
                "attempt {attempt}: {} files, {} bytes kept in {} (boot reason {}){}: {}{}",
                kept.files.len(),
                kept.bytes(),
                kept.dir,
                if kept.boot_reason.is_empty() { "unknown" } else { &kept.boot_reason },
                if kept.dropped.is_empty() { String::new() } else { format!("; {} not kept", kept.dropped.len()) },
                names.join(", "),
                if more > 0 { format!(" and {more} more") } else { String::new() },
            );
            ctx.record(EventKind::Evidence, "", detail);
        }
        Err(e) => {
            let why = error_chain(&e);
            tracing::warn!(attempt, %why, "evidence of the attempt not finished");
            ctx.record(EventKind::Evidence, "", format!("attempt {attempt}: evidence not finished: {why}"));
        }
    }
}
