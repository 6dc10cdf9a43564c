//! The daemon's shared vocabulary: phases, backend kinds, event kinds,
//! attempt budgets and the boot slot's state, progress and outcomes, the
//! status reports, what was kept of a failed attempt and the error kinds.
//!
//! This is a leaf: it imports nothing of the crate, and every other module
//! imports downward into it (stratisd keeps its `engine/types/` the same
//! way). The on-disk record, the life cycle, the backends and the gRPC edge
//! all speak these types; the strings on the wire and on disk come from the
//! `as_str` of each enum, so there is one spelling of each word.

mod budget;
mod error_kind;
mod event;
mod evidence;
mod phase;
mod progress;
mod report;

pub use budget::{Budget, SlotState};
pub use error_kind::{error_chain, ErrorKind};
pub use event::{Event, EventKind};
pub use evidence::{AttemptEvidence, EvidenceFile};
pub use phase::{BackendKind, Phase};
pub use progress::{PrepareOutcome, Progress, Supports};
pub use report::{CommitFailureReport, FreeMapReport, PartitionReport, SealOutcome, StatusReport};
