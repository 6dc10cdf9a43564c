//! Platform calls. Android is Linux for everything the core does (the dm
//! control node path differs and devicemapper-rs handles it), so there is
//! one implementation; an `android` module joins here when a call differs
//! (crosvm's `sys/{linux,...}` pattern).

pub mod linux;
// Property tools: compiled everywhere (plain process calls), used on
// Android only (`linux::publish_phase`, `linux::boot_reason`).
pub mod android;

pub use linux::*;
// sysfs block-device facts, O_DIRECT I/O, the crypt-layer check.
pub mod blockdev;
// Reading trusted small files: no symlinks, no FIFOs, capped sizes.
pub mod files;
// Every terminating signal: a graceful stop or logged and ignored.
pub mod signals;
// One rewindd per metadata directory.
pub mod dirlock;
