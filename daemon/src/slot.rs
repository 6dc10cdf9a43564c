//! Whether the running boot slot is marked successful, through the
//! configured query (`slot_query_command`). vold asks the boot HAL the same
//! question in `cp_needsCheckpoint`; rewind asks a command so that a device
//! can point it at `bootctl` (or its own tool) and a test guest at a file on
//! its share.
//!
//! What the answer means ([`interpret`]): exit 0 is marked, unless the
//! command printed exactly `0` (some bootctl builds print 1/0 and exit 0
//! either way); a non-zero exit that printed `0` or nothing at all is not
//! marked (bootctl's HIDL builds exit EX_SOFTWARE and print nothing for
//! "false"); a non-zero exit with an error on stderr, a signal, a timeout or
//! a command that cannot start is unknown. Unknown counts as marked for
//! NeedsCheckpoint, as vold's `value_or(true)` does, but a commit still runs
//! the commit command then (marking is idempotent; a slot left unmarked
//! makes the bootloader fall back).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::types::SlotState;

/// The boot HAL may still be starting when the query first runs.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the query; the string says why the answer is unknown.
pub fn query(argv: &[String]) -> (SlotState, Option<String>) {
    let Some((prog, args)) = argv.split_first() else {
        return (SlotState::NotQueried, None);
    };
    let mut child = match Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return (SlotState::Unknown, Some(format!("{prog}: {e}"))),
    };
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if started.elapsed() > QUERY_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return (
                    SlotState::Unknown,
                    Some(format!("{} did not answer within {QUERY_TIMEOUT:?}", argv.join(" "))),
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return (SlotState::Unknown, Some(format!("{prog}: {e}"))),
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    // Bounded: the answer is a word; a runaway tool must not grow rewindd.
    if let Some(o) = child.stdout.take() {
        let _ = o.take(4096).read_to_string(&mut out);
    }
    if let Some(e) = child.stderr.take() {
        let _ = e.take(4096).read_to_string(&mut err);
    }
    let state = interpret(status.code(), &out, &err);
    let why = (state == SlotState::Unknown).then(|| format!("{} ended with {status}: {}", argv.join(" "), err.trim()));
    (state, why)
}

/// The answer of one run (module doc). `code` is None for a signal.
pub fn interpret(code: Option<i32>, stdout: &str, stderr: &str) -> SlotState {
    let printed = stdout.trim();
    match code {
        Some(0) if printed == "0" => SlotState::Unmarked,
        Some(0) => SlotState::Marked,
        Some(_) if printed == "0" => SlotState::Unmarked,
        Some(_) if printed.is_empty() && stderr.trim().is_empty() => SlotState::Unmarked,
        _ => SlotState::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bootctl's `is-slot-marked-successful` in its generations: exit 0 (and
    /// maybe "1") for marked; EX_SOFTWARE (70) with nothing, or with "0",
    /// for not marked; EX_SOFTWARE with an error message for a HAL failure.
    #[test]
    fn bootctl_answers_are_read_in_every_form() {
        assert_eq!(interpret(Some(0), "", ""), SlotState::Marked);
        assert_eq!(interpret(Some(0), "1\n", ""), SlotState::Marked);
        assert_eq!(interpret(Some(0), "0\n", ""), SlotState::Unmarked);
        assert_eq!(interpret(Some(70), "", ""), SlotState::Unmarked);
        assert_eq!(interpret(Some(70), "0\n", ""), SlotState::Unmarked);
        assert_eq!(interpret(Some(1), "", ""), SlotState::Unmarked, "test(1)'s false");
        assert_eq!(interpret(Some(70), "", "Error calling isSlotMarkedSuccessful()\n"), SlotState::Unknown);
        assert_eq!(interpret(None, "", ""), SlotState::Unknown, "killed by a signal");
    }

    #[test]
    fn queries_run_the_command() {
        let sh = |script: &str| vec!["/bin/sh".to_string(), "-c".to_string(), script.to_string()];
        assert_eq!(query(&sh("exit 0")).0, SlotState::Marked);
        assert_eq!(query(&sh("exit 1")).0, SlotState::Unmarked);
        let (state, why) = query(&sh("echo 'no HAL' >&2; exit 70"));
        assert_eq!(state, SlotState::Unknown);
        assert!(why.expect("why").contains("no HAL"));
        let (state, why) = query(&["/nonexistent/bootctl".to_string()]);
        assert_eq!(state, SlotState::Unknown);
        assert!(why.expect("why").contains("/nonexistent/bootctl"));
        assert_eq!(query(&[]).0, SlotState::NotQueried);
    }
}
