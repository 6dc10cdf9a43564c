//! rewind-harness

pub mod android_rc;
