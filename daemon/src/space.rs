//! COW space watch: what one poll of a snapshot's status means.
//!
//! Thresholds (`space.thresholds_percent`) are reported once per attempt.
//! At `abort_at_percent` the configured policy acts before the store is
//! full: `abort` records and reboots so the attempt is discarded (the next
//! prepare merges it away); `commit` commits (data kept, protection ends),
//! recorded. If the snapshot is already dead (`Invalid`, `Overflow`,
//! `Merge failed`), the baseline cannot be restored whatever the policy:
//! rewind records that protection is lost (the origin and its data are
//! untouched) and commits so the stack is plain again — never silently.

use crate::config::{OverflowPolicy, SpaceConfig};
use crate::dm::SnapshotStatus;

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
