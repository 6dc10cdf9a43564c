//! What rewindd kept of a failed attempt (`/metadata/rewind/attempts/<n>/`).

use serde::{Deserialize, Serialize};

/// One file kept of an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceFile {
    /// Path inside the attempt's directory ("data/tombstones/tombstone_00",
    /// "kmsg.tail", "boot-reason", "pstore/console-ramoops-0"); made of
    /// printable ASCII only (other bytes are written `%XX`).
    pub name: String,
    /// Where it came from, for people (control characters escaped).
    pub source: String,
    pub bytes: u64,
    /// Only the file's last `bytes` were kept (it was larger than the cap).
    pub truncated: bool,
    pub copied_unix: u64,
}

/// Everything kept of one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AttemptEvidence {
    pub attempt: u32,
    /// The attempt's directory.
    pub dir: String,
    pub files: Vec<EvidenceFile>,
    /// How the attempt's boot ended, as the next boot's reason says
    /// (empty until that boot).
    pub boot_reason: String,
    /// Files dropped or not kept (caps, a full /metadata), with why.
    pub dropped: Vec<String>,
}

impl AttemptEvidence {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}
