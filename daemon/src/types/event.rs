//! History events: what kind of thing happened, and the entry recorded.

use serde::{Deserialize, Serialize};

/// Every kind of history event rewindd records. The wire and the state
/// record carry the kind as a string ([`EventKind::as_str`]); a record
/// written by another version may hold kinds this one does not know, so
/// [`Event::kind`] stays a string and [`EventKind::parse`] may say `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// StartCheckpoint created and recorded the COW store.
    Started,
    /// An attempt was armed (counted) at boot.
    Attempt,
    RollbackBegun,
    RollbackFinished,
    /// A rollback's merge could not go on in this boot (the kernel's
    /// `Merge failed`, or the COW store unreadable): the intent stays, the
    /// partition is held back, the next boot resumes the merge.
    RollbackFailed,
    CommitBegun,
    Committed,
    /// The data commit of a begun commit failed (live or when finished at
    /// boot); the intent stays, so the commit is retried, and the count of
    /// these since the last `commit-begun` is what status reports.
    CommitFailed,
    /// The failed commits since the intent reached `commit_max_failures`:
    /// boots stop retrying the commit (a commit call still does).
    CommitStopped,
    /// The configured commit command ran (or failed, or is owed).
    CommitCommand,
    CommitCommandFailed,
    CommitCommandPending,
    Aborted,
    /// The COW store (or f2fs's unusable space) overflowed or the overflow
    /// policy acted.
    Overflow,
    SpaceThreshold,
    /// A check failed before anything was written: protection given up.
    Refused,
    RebootFailed,
    /// COW files of a finished checkpoint were deleted.
    Cleanup,
    /// The current state record was bad; the previous copy is in use.
    StateRecovered,
    /// StartCheckpoint while a checkpoint ran: its attempts were set anew
    /// (vold rewrites its retry count the same way).
    Renewed,
    /// ResetCheckpoint (a userspace reboot): the next prepare in this boot
    /// counts an attempt again.
    Reset,
    /// The reboot command ran, with the reason the next boot will carry.
    Reboot,
    /// What was kept of a finished attempt under /metadata/rewind/attempts.
    Evidence,
}

impl EventKind {
    pub const ALL: [EventKind; 23] = [
        EventKind::Started,
        EventKind::Attempt,
        EventKind::RollbackBegun,
        EventKind::RollbackFinished,
        EventKind::RollbackFailed,
        EventKind::CommitBegun,
        EventKind::Committed,
        EventKind::CommitFailed,
        EventKind::CommitStopped,
        EventKind::CommitCommand,
        EventKind::CommitCommandFailed,
        EventKind::CommitCommandPending,
        EventKind::Aborted,
        EventKind::Overflow,
        EventKind::SpaceThreshold,
        EventKind::Refused,
        EventKind::RebootFailed,
        EventKind::Cleanup,
        EventKind::StateRecovered,
        EventKind::Renewed,
        EventKind::Reset,
        EventKind::Reboot,
        EventKind::Evidence,
    ];

    /// The kind's word on the wire, in the record and in `rewindctl history`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Attempt => "attempt",
            EventKind::RollbackBegun => "rollback-begun",
            EventKind::RollbackFinished => "rollback-finished",
            EventKind::RollbackFailed => "rollback-failed",
            EventKind::CommitBegun => "commit-begun",
            EventKind::Committed => "committed",
            EventKind::CommitFailed => "commit-failed",
            EventKind::CommitStopped => "commit-stopped",
            EventKind::CommitCommand => "commit-command",
            EventKind::CommitCommandFailed => "commit-command-failed",
            EventKind::CommitCommandPending => "commit-command-pending",
            EventKind::Aborted => "aborted",
            EventKind::Overflow => "overflow",
            EventKind::SpaceThreshold => "space-threshold",
            EventKind::Refused => "refused",
            EventKind::RebootFailed => "reboot-failed",
            EventKind::Cleanup => "cleanup",
            EventKind::StateRecovered => "state-recovered",
            EventKind::Renewed => "renewed",
            EventKind::Reset => "reset",
            EventKind::Reboot => "reboot",
            EventKind::Evidence => "evidence",
        }
    }

    /// The kind a word names, if this version knows it.
    pub fn parse(word: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == word)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<EventKind> for str {
    fn eq(&self, other: &EventKind) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<EventKind> for String {
    fn eq(&self, other: &EventKind) -> bool {
        self.as_str() == other.as_str()
    }
}

/// One history entry (bounded list in the state record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub time_unix: u64,
    /// An [`EventKind`]'s word (kept as text: see [`EventKind`]).
    pub kind: String,
    pub attempt: u32,
    pub attempts: u32,
    pub partition: String,
    pub detail: String,
    pub boot_reason: String,
}

impl Event {
    /// Whether this entry is of `kind`.
    pub fn is(&self, kind: EventKind) -> bool {
        self.kind == kind.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_distinct_word_that_parses_back() {
        let mut words: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        words.sort_unstable();
        words.dedup();
        assert_eq!(words.len(), EventKind::ALL.len());
        assert_eq!(EventKind::parse("something-newer"), None);
        assert!(*"rollback-finished" == EventKind::RollbackFinished);
    }
}
