//! Targets that are real Android: any device over adb (`adb::AdbTarget`)
//! and a Cuttlefish virtual device (`cuttlefish::CuttlefishTarget`, launched
//! and stopped with the Cuttlefish host tools, driven over adb).
//!
//! None of this runs in CI: these machines have neither a device nor
//! `launch_cvd`. The command lines are unit-tested against the tools'
//! documented flags; the behaviour on a device is not verified.
//!
//! What a device can and cannot do for a scenario, compared with the QEMU
//! guest: the QEMU guest init prints stage markers and injects a failure at
//! any stage (`plan::stage`); Android's init does not, so a device only
//! knows "booted" (`sys.boot_completed=1`) and can only inject failures
//! once it is up (a panic through sysrq, a Cuttlefish power cut through
//! `stop_cvd`). Plans that need more return `TargetError::Unsupported`
//! naming what is missing; `profile` holds that rule, and the same rule
//! restricts the QEMU guest in device profile, which is how the `device-*`
//! scenarios (`scenario::device`) are verified in CI without a device.

pub mod adb;
pub mod cuttlefish;
pub mod profile;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::target::{ExecOutput, TargetError};

/// Where the harness's scripts go on a device. Under /data (the only
/// writable place a shell can use on a user build too); they are pushed
/// before the baseline, so they are part of it and survive a rollback.
pub const DEVICE_SCRIPT_DIR: &str = "/data/local/tmp/rewind-harness";

/// Quotes one word for the device's shell (`adb shell` joins its arguments
/// with spaces and hands the line to `sh -c` on the device).
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A command line for logs and errors: program and arguments, quoted.
pub fn display_command(program: &str, args: &[String]) -> String {
    std::iter::once(program.to_string()).chain(args.iter().map(|a| sh_quote(a))).collect::<Vec<_>>().join(" ")
}

/// Runs a host program with a time limit; its output is collected by two
/// reader threads so a chatty program cannot block on a full pipe.
pub fn run_tool(
    step: &'static str,
    program: &Path,
    args: &[String],
    envs: &[(String, String)],
    timeout: Duration,
) -> Result<ExecOutput, TargetError> {
    let shown = display_command(&program.display().to_string(), args);
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| TargetError::Tool { step, command: shown.clone(), detail: e.to_string() })?;
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out_t = reader(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err_t = reader(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                // Our own child, by its pid: nothing else is signalled.
                let _ = child.kill();
                let _ = child.wait();
                return Err(TargetError::ExecTimeout { command: shown, waited: timeout });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(TargetError::Tool { step, command: shown, detail: e.to_string() }),
        }
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    Ok(ExecOutput {
        // A signal-killed tool has no code; -1 keeps it non-zero.
        status: status.code().unwrap_or(-1),
        stdout,
        stderr,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// `program` as found on PATH (or as given, when it has a slash).
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

/// Errors of setting up a device target before any scenario runs: each
/// says in one line what is missing and how to get it.
#[derive(Debug, thiserror::Error)]
pub enum DeviceSetupError {
    #[error("adb not found on PATH: install Android's platform-tools (https://developer.android.com/tools/releases/platform-tools, or `apt-get install adb`) and put adb on PATH")]
    NoAdb,
    #[error("no Android device attached (`adb devices -l` lists none): connect one with USB debugging on, or use --target qemu")]
    NoDevice,
    #[error("no device with serial {serial:?} (attached: {attached}): pass one of them to --serial")]
    NoSuchSerial { serial: String, attached: String },
    #[error("{count} devices attached ({attached}): pick one with --serial")]
    Ambiguous { count: usize, attached: String },
    #[error("device {serial} is {state}, not ready for adb: {hint}")]
    NotReady { serial: String, state: String, hint: String },
    #[error("launch_cvd not found ({looked}): install the Cuttlefish host package (https://source.android.com/docs/devices/cuttlefish/get-started) and pass its directory with --cvd-dir")]
    NoLaunchCvd { looked: String },
    #[error("Listing devices with adb")]
    Adb(#[source] Box<TargetError>),
    #[error("Setting up the device")]
    Target(#[source] Box<TargetError>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_for_the_device_shell() {
        assert_eq!(sh_quote("/data/local/tmp"), "/data/local/tmp");
        assert_eq!(sh_quote("echo c > /proc/sysrq-trigger"), "'echo c > /proc/sysrq-trigger'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
    }

    #[test]
    fn run_tool_reports_status_and_times_out() {
        let sh = PathBuf::from("/bin/sh");
        let out = run_tool("test", &sh, &["-c".into(), "echo hi; exit 3".into()], &[], Duration::from_secs(10))
            .expect("sh runs");
        assert_eq!(out.status, 3);
        assert_eq!(out.stdout, "hi\n");
        let slow = run_tool("test", &sh, &["-c".into(), "sleep 5".into()], &[], Duration::from_millis(200));
        assert!(matches!(slow, Err(TargetError::ExecTimeout { .. })), "{slow:?}");
        let missing = run_tool("test", Path::new("/nonexistent/adb"), &[], &[], Duration::from_secs(1));
        assert!(matches!(missing, Err(TargetError::Tool { .. })));
    }
}
