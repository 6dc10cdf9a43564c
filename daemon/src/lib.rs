//! rewind-daemon: all of rewindd's logic. The binaries in `src/bin` only
//! parse flags, set up logging and call into here (keystore2's layout).

pub mod client;
pub mod config;
pub mod engine;
pub mod error;
pub mod logging;
pub mod service;
