//! The checkpoint's whole life cycle over the state record, one file per
//! step: [`start`] (StartCheckpoint) and [`renew`] (StartCheckpoint while
//! one runs), [`prepare`] (PrepareUserdata, the boot contract), [`commit`]
//! (and [`mark_slot`] with no checkpoint), [`abort`] and [`reboot`],
//! [`reset`] (userspace reboots), the vold-compatible confirmations
//! ([`mark_boot_attempt`], [`prepare_checkpoint`]), the evidence kept of an
//! attempt at the next boot (`keep`), the space policy ([`space`]) and the
//! deletion of finished stores ([`cleanup_pending`]). This module decides
//! from the record; a [`crate::backend::Backend`] acts on the devices, and
//! the engine above only locks, publishes and delegates.
//!
//! Every step that changes what "the data" is writes the record first (an
//! intent), so a power cut anywhere rolls the same way forward at the next
//! prepare:
//! - `Committing` (intent Commit): finish the commit.
//! - `RollingBack` (intent Rollback{final}): finish the merge, then arm the
//!   next attempt or end in `RolledBack`.
//!
//! An attempt is counted exactly once, in the same record write that marks
//! it armed (`Checkpointing`): a power cut during prepare (merge, arming)
//! does not use up an attempt, and a second prepare in the same boot
//! (same boot_id) changes nothing, unless a ResetCheckpoint (a userspace
//! reboot) asked for the count again.

mod abort;
mod background;
mod cleanup;
mod commit;
mod confirm;
mod ctx;
mod keep;
mod prepare;
mod renew;
mod reset;
mod seal;
pub mod space;
mod start;

pub use abort::{abort, reboot};
pub use background::finish_background_rollback;
pub use cleanup::cleanup_pending;
pub use commit::{commit, failure_report as commit_failure_report, mark_slot};
pub use confirm::{mark_boot_attempt, prepare_checkpoint};
pub use ctx::Ctx;
pub use prepare::prepare;
pub use renew::renew;
pub use reset::reset;
pub use seal::seal_free_map;
pub use start::start;

#[cfg(test)]
mod tests;
