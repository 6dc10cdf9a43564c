//! Device-mapper: target tables (`target`), status lines (`status`) and the
//! one place where dm ioctls happen (`control`), on devicemapper-rs's
//! TargetParams/TargetTable pattern. The crate has no snapshot targets; they
//! are defined here.

// The armed top table over a free map: origin over used chunks, linear over free.
pub mod armed;
pub mod control;
pub mod events;
pub mod stats;
pub mod status;
pub mod target;

pub use control::{DmControl, DmOpError, Freeze, KernelDm};
pub use status::SnapshotStatus;
pub use target::{Persistence, Table, Target};

#[cfg(test)]
pub mod fake;
