//! The checkpoint's whole life cycle over the state record, one file per
//! step: [`start`] (StartCheckpoint), [`prepare`] (PrepareUserdata, the boot
//! contract), [`commit`], [`abort`], the space policy ([`space`]) and the
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
//! (same boot_id) changes nothing.

mod abort;
mod cleanup;
mod commit;
mod ctx;
mod prepare;
pub mod space;
mod start;

pub use abort::abort;
pub use cleanup::cleanup_pending;
pub use commit::commit;
pub use ctx::Ctx;
pub use prepare::prepare;
pub use start::start;

#[cfg(test)]
mod tests;
