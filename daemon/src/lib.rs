//! rewind-daemon: all of rewindd's logic. The binaries in `src/bin` only
//! parse flags, set up logging and call into here (keystore2's layout).
//!
//! Dependencies point one way, down this list (ARCHITECTURE.md draws it;
//! `tests/module_graph.rs` checks it): `types` (the shared vocabulary, a
//! leaf) ← the system and format modules (`sys`, `fiemap`, `dm`, `config`,
//! `fstab`, `ext4map`, `slot`, `evidence`) ← `state` ← `cowstore` ← `error` ← `backend` ←
//! `boot` (the life cycle) ← `engine` ← `service` ← `client`.

pub mod backend;
pub mod boot;
pub mod client;
pub mod config;
pub mod cowstore;
pub mod dm;
pub mod engine;
pub mod error;
pub mod evidence;
pub mod ext4map;
pub mod fiemap;
pub mod fstab;
pub mod logging;
pub mod service;
pub mod slot;
pub mod state;
pub mod sys;
pub mod types;

#[cfg(test)]
mod testing;
