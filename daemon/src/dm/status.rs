//! Status lines of `snapshot` and `snapshot-merge` targets.
//!
//! The kernel prints a word instead of the counters when the snapshot is
//! unusable: `Invalid` (invalidated, e.g. the COW store filled up),
//! `Merge failed`, `Overflow` (PO store full), or `Unknown` (no usage
//! information). Otherwise: `<allocated>/<total> <metadata>` in sectors.
//! Words are checked before numbers, so a dead snapshot is never read as
//! an empty one.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotStatus {
    Usage { allocated: u64, total: u64, metadata: u64 },
    Invalid,
    Overflow,
    MergeFailed,
    Unknown,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Unparsable snapshot status '{line}': {problem}")]
pub struct StatusParseError {
    pub line: String,
    pub problem: &'static str,
}

impl SnapshotStatus {
    pub fn parse(line: &str) -> Result<SnapshotStatus, StatusParseError> {
        let t = line.trim();
        let err = |problem| StatusParseError { line: line.to_string(), problem };
        if t.starts_with("Invalid") {
            return Ok(SnapshotStatus::Invalid);
        }
        if t.starts_with("Merge failed") {
            return Ok(SnapshotStatus::MergeFailed);
        }
        if t.starts_with("Overflow") {
            return Ok(SnapshotStatus::Overflow);
        }
        if t.starts_with("Unknown") {
            return Ok(SnapshotStatus::Unknown);
        }
        let mut w = t.split_whitespace();
        let (Some(frac), Some(meta), None) = (w.next(), w.next(), w.next()) else {
            return Err(err("expected '<allocated>/<total> <metadata>'"));
        };
        let (a, tot) = frac.split_once('/').ok_or_else(|| err("no '/' in the usage"))?;
        let allocated: u64 = a.parse().map_err(|_| err("allocated is not a number"))?;
        let total: u64 = tot.parse().map_err(|_| err("total is not a number"))?;
        let metadata: u64 = meta.parse().map_err(|_| err("metadata is not a number"))?;
        if allocated > total || metadata > allocated {
            return Err(err("counters out of range"));
        }
        Ok(SnapshotStatus::Usage { allocated, total, metadata })
    }

    /// A word that replaced the counters, for reports.
    pub fn word(&self) -> Option<&'static str> {
        match self {
            SnapshotStatus::Usage { .. } => None,
            SnapshotStatus::Invalid => Some("Invalid"),
            SnapshotStatus::Overflow => Some("Overflow"),
            SnapshotStatus::MergeFailed => Some("Merge failed"),
            SnapshotStatus::Unknown => Some("Unknown"),
        }
    }

    /// Rollback protection is gone (the baseline can no longer be restored).
    pub fn is_lost(&self) -> bool {
        matches!(self, SnapshotStatus::Invalid | SnapshotStatus::Overflow | SnapshotStatus::MergeFailed)
    }

    /// Merge finished: every exception copied back (allocated == metadata).
    pub fn merge_done(&self) -> bool {
        matches!(self, SnapshotStatus::Usage { allocated, metadata, .. } if allocated == metadata)
    }

    /// Percent of the COW store in use (0..=100).
    pub fn used_percent(&self) -> Option<u32> {
        match *self {
            SnapshotStatus::Usage { allocated, total, .. } if total > 0 => {
                Some(((allocated as u128 * 100) / total as u128) as u32)
            }
            SnapshotStatus::Usage { .. } => Some(0),
            _ => None,
        }
    }
}

impl fmt::Display for SnapshotStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotStatus::Usage { allocated, total, metadata } => write!(f, "{allocated}/{total} {metadata}"),
            other => f.write_str(other.word().unwrap_or("")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters() {
        let s = SnapshotStatus::parse("16/2097152 16").expect("parse");
        assert_eq!(s, SnapshotStatus::Usage { allocated: 16, total: 2097152, metadata: 16 });
        assert_eq!(s.used_percent(), Some(0));
        assert!(s.merge_done());
        assert!(!s.is_lost());
        let s = SnapshotStatus::parse("1048576/2097152 2056\n").expect("parse");
        assert_eq!(s.used_percent(), Some(50));
        assert!(!s.merge_done());
        assert_eq!(s.to_string(), "1048576/2097152 2056");
    }

    #[test]
    fn words_replace_counters() {
        for (text, want) in [
            ("Invalid", SnapshotStatus::Invalid),
            ("Overflow", SnapshotStatus::Overflow),
            ("Merge failed", SnapshotStatus::MergeFailed),
            ("Unknown", SnapshotStatus::Unknown),
            (" Invalid ", SnapshotStatus::Invalid),
        ] {
            let s = SnapshotStatus::parse(text).expect(text);
            assert_eq!(s, want);
            assert_eq!(s.used_percent(), None);
            assert!(!s.merge_done(), "{text} must never read as a finished merge");
        }
        assert!(SnapshotStatus::Invalid.is_lost());
        assert!(SnapshotStatus::Overflow.is_lost());
        assert!(SnapshotStatus::MergeFailed.is_lost());
        assert!(!SnapshotStatus::Unknown.is_lost());
        assert_eq!(SnapshotStatus::MergeFailed.to_string(), "Merge failed");
    }

    #[test]
    fn garbage_is_an_error() {
        for text in ["", "16/32", "16 32 8", "a/32 8", "16/b 8", "16/32 c", "16/32 8 9", "64/32 8", "16/32 24"] {
            assert!(SnapshotStatus::parse(text).is_err(), "accepted '{text}'");
        }
    }

    #[test]
    fn empty_store_is_zero_percent() {
        assert_eq!(SnapshotStatus::parse("0/0 0").expect("parse").used_percent(), Some(0));
    }
}
