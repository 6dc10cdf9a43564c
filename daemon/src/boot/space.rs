//! The space policy: what one poll of a snapshot's status means
//! ([`evaluate`], pure), and acting on it over the state record ([`watch`]).
//!
//! Thresholds (`space.thresholds_percent`) are reported once per attempt.
//! At `abort_at_percent` the configured policy acts before the store is
//! full: `abort` records and reboots so the attempt is discarded (the next
//! prepare merges it away); `commit` commits (data kept, protection ends),
//! recorded. If the snapshot is already dead (`Invalid`, `Overflow`,
//! `Merge failed`), the baseline cannot be restored whatever the policy:
//! rewind records that protection is lost (the origin and its data are
//! untouched) with the kernel's words ([`lost_text`]) and commits so the
//! stack is plain again — never silently, and never by merging the store.

use super::ctx::Ctx;
use crate::config::{OverflowPolicy, SpaceConfig};
use crate::dm::SnapshotStatus;
use crate::error::{Error, Result};
use crate::evidence::kmsg;
use crate::types::{EventKind, Phase};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    None,
    /// Usage reached abort_at_percent under the abort policy.
    Abort {
        percent: u32,
    },
    /// Usage reached abort_at_percent under the commit policy.
    Commit {
        percent: u32,
    },
    /// The snapshot is dead: protection is lost.
    Lost {
        word: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub percent: Option<u32>,
    /// Thresholds newly crossed (ascending).
    pub crossed: Vec<u32>,
    pub action: Action,
}

pub fn evaluate(status: &SnapshotStatus, cfg: &SpaceConfig, already: &[u32]) -> Decision {
    if status.is_lost() {
        return Decision {
            percent: None,
            crossed: Vec::new(),
            action: Action::Lost { word: status.word().unwrap_or("Invalid") },
        };
    }
    let Some(percent) = status.used_percent() else {
        return Decision { percent: None, crossed: Vec::new(), action: Action::None };
    };
    let mut crossed: Vec<u32> =
        cfg.thresholds_percent.iter().copied().filter(|t| percent >= *t && !already.contains(t)).collect();
    crossed.sort_unstable();
    crossed.dedup();
    let action = if percent >= cfg.abort_at_percent {
        match cfg.overflow_policy {
            OverflowPolicy::Abort => Action::Abort { percent },
            OverflowPolicy::Commit => Action::Commit { percent },
        }
    } else {
        Action::None
    };
    Decision { percent: Some(percent), crossed, action }
}

/// What a dead snapshot means, for status and the history: the kernel's
/// status word, what it stands for, and the kernel's own log lines about
/// it when they could be read. `Invalid` is not only a full store: an I/O
/// error on the COW device invalidates the snapshot too (`Invalidating
/// snapshot: Error reading/writing.`), and then the kernel cannot even mark
/// its header invalid (`write header failed`), so the store still looks
/// valid on disk: a later merge of it would restore only the chunks copied
/// before the error, a mix of the baseline and the attempt. Either way the
/// attempt's data is kept, and the store is never merged.
pub fn lost_text(name: &str, word: &str, kernel: &[String]) -> String {
    // dm-snapshot's reasons for invalidating (__invalidate_snapshot).
    let io = kernel.iter().any(|l| l.contains("Error reading/writing"));
    let full = kernel.iter().any(|l| l.contains("Unable to allocate exception"));
    let meaning = match word {
        "Overflow" => "the COW store overflowed",
        "Invalid" if io && !full => "the kernel invalidated it: an I/O error on the COW store",
        "Invalid" if full && !io => "the kernel invalidated it: the COW store overflowed",
        "Invalid" => "the kernel invalidated it: the COW store failed (an I/O error) or overflowed",
        _ => "the kernel stopped using it",
    };
    let said = if kernel.is_empty() { String::new() } else { format!("; the kernel said: {}", kernel.join(" / ")) };
    format!(
        "{name}: snapshot is '{word}' ({meaning}){said}: rollback protection lost, the baseline cannot be \
         restored; the data is untouched and kept (committed), the store is never merged"
    )
}

/// One pass of the space watch while an attempt of this boot runs:
/// reads each partition's usage, records threshold crossings once per
/// attempt, and applies the overflow policy. `reboot_requested` is the
/// daemon's memory that the abort policy already asked for a reboot in this
/// run (asking again would only repeat the same abort); `reboot` runs the
/// configured reboot command.
pub fn watch(
    ctx: &mut Ctx<'_>,
    reboot_requested: &mut bool,
    reboot: &mut dyn FnMut() -> std::result::Result<(), String>,
) -> Result<()> {
    if ctx.state.phase != Phase::Checkpointing || ctx.state.boot_id != ctx.boot_id {
        return Ok(());
    }
    let mut actions = Vec::new();
    for p in &ctx.state.partitions {
        if let Some(st) = ctx.backend.usage(p)? {
            // What the usage measures (COW store, f2fs unusable space).
            let what = ctx.backend.traits(&p.name).usage.name();
            actions.push((p.name.clone(), what, evaluate(&st, &ctx.config.space, &ctx.state.thresholds_hit)));
        }
    }
    for (name, what, d) in actions {
        if !d.crossed.is_empty() {
            let pct = d.percent.unwrap_or(0);
            for t in &d.crossed {
                ctx.record(EventKind::SpaceThreshold, &name, format!("{what} {pct}% used (crossed {t}%)"));
                ctx.state.thresholds_hit.push(*t);
            }
            ctx.save()?;
        }
        match d.action {
            Action::None => {}
            Action::Lost { word } => {
                let kernel = kmsg::snapshot_lines(&ctx.config.evidence.kmsg, 3);
                let why = lost_text(&name, word, &kernel);
                ctx.state.protection_lost = Some(why.clone());
                ctx.record(EventKind::Overflow, &name, why.clone());
                ctx.save()?;
                super::commit::commit(ctx, &format!("protection lost: the snapshot is '{word}'"), &mut || Ok(()))?;
                super::cleanup::cleanup_pending(ctx);
                return Ok(());
            }
            Action::Commit { percent } => {
                let why = format!("{what} {percent}% used; overflow policy commit");
                ctx.state.protection_lost = Some(format!("{name}: committed early: {why}"));
                ctx.record(EventKind::Overflow, &name, why.clone());
                super::commit::commit(ctx, &why, &mut || Ok(()))?;
                super::cleanup::cleanup_pending(ctx);
                return Ok(());
            }
            Action::Abort { percent } => {
                if *reboot_requested {
                    continue;
                }
                *reboot_requested = true;
                let why = format!(
                    "{what} {percent}% used (abort at {}%): rebooting to discard this attempt",
                    ctx.config.space.abort_at_percent
                );
                super::abort::abort(ctx, &why, true)?;
                if let Err(e) = reboot() {
                    ctx.record(EventKind::RebootFailed, &name, e.clone());
                    ctx.save()?;
                    return Err(Error::Internal(format!("reboot command failed: {e}")));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(allocated: u64, total: u64) -> SnapshotStatus {
        SnapshotStatus::Usage { allocated, total, metadata: 16.min(allocated) }
    }

    #[test]
    fn thresholds_are_reported_once_and_in_order() {
        let cfg = SpaceConfig::default();
        let d = evaluate(&usage(850, 1000), &cfg, &[]);
        assert_eq!(d.crossed, vec![50, 80]);
        assert_eq!(d.percent, Some(85));
        assert_eq!(d.action, Action::None);
        assert!(evaluate(&usage(850, 1000), &cfg, &[50, 80]).crossed.is_empty());
        assert_eq!(evaluate(&usage(100, 1000), &cfg, &[]).crossed, Vec::<u32>::new());
    }

    #[test]
    fn policy_acts_at_abort_percent() {
        let mut cfg = SpaceConfig::default();
        assert_eq!(evaluate(&usage(950, 1000), &cfg, &[]).action, Action::Abort { percent: 95 });
        cfg.overflow_policy = OverflowPolicy::Commit;
        assert_eq!(evaluate(&usage(990, 1000), &cfg, &[]).action, Action::Commit { percent: 99 });
        assert_eq!(evaluate(&usage(940, 1000), &cfg, &[]).action, Action::None);
    }

    #[test]
    fn a_lost_snapshot_is_told_in_the_kernels_words() {
        let io = lost_text(
            "userdata",
            "Invalid",
            &["device-mapper: snapshots: Invalidating snapshot: Error reading/writing.".to_string()],
        );
        assert!(io.contains("snapshot is 'Invalid'"), "{io}");
        assert!(io.contains("an I/O error"), "{io}");
        assert!(
            io.contains("the kernel said: device-mapper: snapshots: Invalidating snapshot: Error reading/writing."),
            "{io}"
        );
        assert!(!io.contains("overflowed"), "an I/O error is not an overflow: {io}");
        let full = lost_text("userdata", "Overflow", &[]);
        assert!(full.contains("'Overflow' (the COW store overflowed)") && !full.contains("kernel said"), "{full}");
        let full = lost_text(
            "userdata",
            "Invalid",
            &["device-mapper: snapshots: Invalidating snapshot: Unable to allocate exception.".to_string()],
        );
        assert!(full.contains("invalidated it: the COW store overflowed"), "{full}");
        assert!(lost_text("userdata", "Invalid", &[]).contains("an I/O error) or overflowed"));
    }

    #[test]
    fn dead_snapshots_are_lost_whatever_the_policy() {
        for pol in [OverflowPolicy::Abort, OverflowPolicy::Commit] {
            let cfg = SpaceConfig { overflow_policy: pol, ..SpaceConfig::default() };
            assert_eq!(evaluate(&SnapshotStatus::Invalid, &cfg, &[]).action, Action::Lost { word: "Invalid" });
            assert_eq!(evaluate(&SnapshotStatus::Overflow, &cfg, &[]).action, Action::Lost { word: "Overflow" });
            assert_eq!(evaluate(&SnapshotStatus::MergeFailed, &cfg, &[]).action, Action::Lost { word: "Merge failed" });
        }
        assert_eq!(evaluate(&SnapshotStatus::Unknown, &SpaceConfig::default(), &[]).action, Action::None);
    }
}
