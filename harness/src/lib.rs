//! rewind-harness
