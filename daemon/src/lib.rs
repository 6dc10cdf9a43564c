//! rewind-daemon: all of rewindd's logic. The binaries in `src/bin` only
//! parse flags, set up logging and call into here (keystore2's layout).

pub mod backend;
pub mod boot;
pub mod client;
pub mod config;
pub mod cowstore;
pub mod dm;
pub mod engine;
pub mod error;
pub mod ext4map;
pub mod fiemap;
pub mod fstab;
pub mod logging;
pub mod service;
pub mod space;
pub mod state;
pub mod sys;
