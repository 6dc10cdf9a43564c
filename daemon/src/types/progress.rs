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
    /// The checkpoint runs until commit or abort (`attempts` is 0).
    pub unlimited: bool,
}

/// Which checkpoint modes this machine can give (vold's
/// supportsBlockCheckpoint / supportsFileCheckpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Supports {
    pub block: bool,
    pub file: bool,
    /// rewind's commit marks the boot slot successful: a commit command
    /// and a slot query are configured. Only then may update_verifier
    /// leave the marking to rewind (the vold-compatible
    /// `supportsCheckpoint` answers true only with it).
    pub marks_slot: bool,
}
