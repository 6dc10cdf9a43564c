//! What differs on Android: system properties, read and written through
//! `/system/bin/getprop` / `setprop`. bionic's `__system_property_get/set`
//! would need bindings this crate does not have (libc's Rust crate binds
//! them only for some targets); the tools are on every Android build and
//! the property service checks the caller's label the same way
//! (sepolicy: rewindd may set `rewind_prop`).
//!
//! Only the process calls are Android-only; their inputs and outputs are
//! plain strings, parsed by host-tested functions.

use std::process::Command;

pub const GETPROP: &str = "/system/bin/getprop";
pub const SETPROP: &str = "/system/bin/setprop";

#[derive(Debug, thiserror::Error)]
pub enum PropError {
    #[error("Cannot run {tool} for {name}")]
    Spawn {
        tool: &'static str,
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} {name} exited with {status}: {stderr}")]
    Failed { tool: &'static str, name: String, status: String, stderr: String },
}

/// A property's value; empty when unset (getprop prints an empty line).
pub fn getprop(name: &str) -> Result<String, PropError> {
    let out = Command::new(GETPROP).arg(name).output().map_err(|source| PropError::Spawn {
        tool: GETPROP,
        name: name.to_string(),
        source,
    })?;
    if !out.status.success() {
        return Err(PropError::Failed {
            tool: GETPROP,
            name: name.to_string(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn setprop(name: &str, value: &str) -> Result<(), PropError> {
    let out = Command::new(SETPROP).arg(name).arg(value).output().map_err(|source| PropError::Spawn {
        tool: SETPROP,
        name: name.to_string(),
        source,
    })?;
    if !out.status.success() {
        return Err(PropError::Failed {
            tool: SETPROP,
            name: name.to_string(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}
