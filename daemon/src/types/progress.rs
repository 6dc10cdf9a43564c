//! What a long call reports while it runs, and what PrepareUserdata and
//! SupportsCheckpoint answer.

use super::Phase;

/// Progress while PrepareUserdata runs (merge progress, steps).
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub step: String,
    pub partition: String,
    pub done_sectors: u64,
    pub total_sectors: u64,
}

/// What PrepareUserdata decided for this boot.
#[derive(Debug, Clone, PartialEq)]
pub struct PrepareOutcome {
    pub phase: Phase,
    pub attempt: u32,
    pub attempts: u32,
}

/// Which checkpoint modes this machine can give (vold's
/// supportsBlockCheckpoint / supportsFileCheckpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Supports {
    pub block: bool,
    pub file: bool,
}
