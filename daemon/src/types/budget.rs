//! How many boots a checkpoint may use, and what the boot slot says.

/// The boots a checkpoint may use before it rolls back: a count, or
/// unlimited (vold's `startCheckpoint(-1)`: checkpoint every boot until a
/// commit or an abort, never an automatic rollback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Attempts(u32),
    Unlimited,
}

impl Budget {
    /// vold's retry count (`startCheckpoint N`): N >= 0 allows the first
    /// boot plus N retries, so N + 1 attempts (vold writes `N + 1` to its
    /// counter file and each boot decrements it, checkpointing while it is
    /// not 0); -1 is unlimited; below -1 is refused, as vold refuses it.
    pub fn from_vold_retry(retry: i64) -> Option<Budget> {
        match retry {
            -1 => Some(Budget::Unlimited),
            n if n >= 0 => u32::try_from(n).ok().and_then(|n| n.checked_add(1)).map(Budget::Attempts),
            _ => None,
        }
    }

    /// "3 attempts", "unlimited attempts (until commit or abort)".
    pub fn describe(self) -> String {
        match self {
            Budget::Attempts(1) => "1 attempt".to_string(),
            Budget::Attempts(n) => format!("{n} attempts"),
            Budget::Unlimited => "unlimited attempts (until commit or abort)".to_string(),
        }
    }
}

/// Whether the boot slot running now is marked successful, as the
/// configured slot query (`slot_query_command`, e.g. `bootctl
/// is-slot-marked-successful`) answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    Marked,
    /// A new slot's first boots: the bootloader falls back to the old slot
    /// unless someone marks it.
    Unmarked,
    /// The query failed (vold treats this as marked: no checkpoint).
    Unknown,
    /// No slot query is configured.
    NotQueried,
}

impl SlotState {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotState::Marked => "marked",
            SlotState::Unmarked => "unmarked",
            SlotState::Unknown => "unknown",
            SlotState::NotQueried => "not-queried",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checkpoint.cpp `cp_startCheckpoint`: refuses retry < -1, writes
    /// `retry + 1` (so N retries are N + 1 checkpointed boots, counted down
    /// by `cp_markBootAttempt`), and -1 checkpoints until commit.
    #[test]
    fn vold_retry_counts_map_to_budgets() {
        assert_eq!(Budget::from_vold_retry(0), Some(Budget::Attempts(1)));
        assert_eq!(Budget::from_vold_retry(2), Some(Budget::Attempts(3)));
        assert_eq!(Budget::from_vold_retry(-1), Some(Budget::Unlimited));
        assert_eq!(Budget::from_vold_retry(-2), None);
        assert_eq!(Budget::from_vold_retry(i64::from(u32::MAX)), None);
        assert_eq!(Budget::Attempts(3).describe(), "3 attempts");
        assert!(Budget::Unlimited.describe().contains("until commit"));
    }
}
