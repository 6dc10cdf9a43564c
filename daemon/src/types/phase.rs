//! Where a checkpoint is in its life, and which backend serves a partition.

use serde::{Deserialize, Serialize};

/// Checkpoint phase, as recorded in the state record (architecture.md).
/// The serde names are the record's and `as_str`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Idle,
    /// Started; the first attempt has not been prepared yet.
    Armed,
    Checkpointing,
    RollingBack,
    Committing,
    /// Attempts used up (or aborted without retry): userdata is back at the
    /// baseline and NeedsRollback is true until the next StartCheckpoint or
    /// an explicit reset.
    RolledBack,
}

impl Phase {
    pub const ALL: [Phase; 6] =
        [Phase::Idle, Phase::Armed, Phase::Checkpointing, Phase::RollingBack, Phase::Committing, Phase::RolledBack];

    /// The phase's name for people, `rewind.phase` and rewindctl
    /// ("rolling-back"); the same words as the state record.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Armed => "armed",
            Phase::Checkpointing => "checkpointing",
            Phase::RollingBack => "rolling-back",
            Phase::Committing => "committing",
            Phase::RolledBack => "rolled-back",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a partition is checkpointed: dm-snapshot over COW files (block
/// mode) or f2fs's own `checkpoint=disable` (checkpoint=fs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    Snapshot,
    F2fs,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Snapshot => "snapshot",
            BackendKind::F2fs => "f2fs",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record's serde names and `as_str` are one spelling.
    #[test]
    fn phase_names_are_the_record_names() {
        for p in Phase::ALL {
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{}\"", p.as_str()));
        }
        for b in [BackendKind::Snapshot, BackendKind::F2fs] {
            assert_eq!(serde_json::to_string(&b).unwrap(), format!("\"{}\"", b.as_str()));
        }
    }
}
