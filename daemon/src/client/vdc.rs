//! `rewindctl checkpoint <cmd>`: vdc's checkpoint commands, one for one,
//! with vdc's exit codes, over rewindd's gRPC API. A device maker points
//! vold's checkpoint functions (and fs_mgr's `vdc checkpoint` calls) at
//! these commands; android/INTEGRATION.md says which call goes where.
//!
//! vdc's conventions (system/vold `vdc.cpp`), kept here:
//! - a boolean answer is the exit status: 1 = true, 0 = false;
//! - 0 = the call succeeded;
//! - 22 (EINVAL): a word that should be a number is not, an unknown
//!   command or a wrong number of arguments, or the service cannot be
//!   reached (vdc: "Failed to obtain vold Binder");
//! - 25 (ENOTTY): the service answered with an error (vdc's checkStatus);
//! - 5: no command at all (vdc's usage exit).
//!
//! What each command means is rewind's reading of the matching
//! `Checkpoint.cpp` function (the tests below cite them); where rewind
//! differs it says so in [`HELP`].

use rewind_proto::v1 as pb;
use rewind_proto::v1::checkpoint_client::CheckpointClient;
use tonic::transport::Channel;

use super::{connect_waiting, print_error, ClientError, Dial, Refusal, Target};
use crate::types::{Budget, ErrorKind};

/// vdc's exit statuses.
pub mod code {
    pub const FALSE: i32 = 0;
    pub const OK: i32 = 0;
    pub const TRUE: i32 = 1;
    /// No command given (vdc's `usage(); exit(5)`).
    pub const USAGE: i32 = 5;
    /// EINVAL: bad arguments, or the service is not reachable.
    pub const EINVAL: i32 = 22;
    /// ENOTTY: the call failed.
    pub const ENOTTY: i32 = 25;
}

pub const HELP: &str = "\
Commands (vdc checkpoint <cmd> reads the same; exit 1 = true, 0 = false or ok):
  supportsCheckpoint        1 when rewind checkpoints a partition AND its commit marks the
                            boot slot (commit_command + slot_query_command): only then may
                            update_verifier leave the marking to rewind
  supportsBlockCheckpoint   1 when a checkpoint=block partition is served
  supportsFileCheckpoint    1 when a checkpoint=fs (f2fs) partition is served
  startCheckpoint N         N retries = N+1 attempts; -1 = every boot until commit or abort;
                            a pending checkpoint gets the new budget (vold rewrites its count)
  needsCheckpoint           1 when this boot's writes are checkpointed, or the boot slot is
                            not marked successful (no record needed)
  isCheckpointing           the same answer (vold returns one flag for both)
  needsRollback             1 when the attempts are used up or an abort left none: userdata
                            is the baseline and the old slot should boot
  markBootAttempt           ok when this boot's attempt was counted (at prepare-userdata),
                            or no checkpoint is pending; after resetCheckpoint it counts again
  prepareCheckpoint         ok when this boot's armed snapshot is live, or the boot is no attempt
  restoreCheckpoint DEVICE  runs prepare-userdata for DEVICE's partition while it is not mounted
                            (rewind's rollback happens there); a mounted one is left alone
  commitChanges             commit; with no checkpoint and an unmarked slot, mark the slot;
                            nothing to commit is ok
  abortChanges MSG RETRY    discard this attempt (RETRY 0: no attempt left) and reboot with MSG
                            as the reason (reboot,MSG); nothing to abort is ok, no reboot
  resetCheckpoint           userspace reboot: the next prepare or markBootAttempt in this
                            boot counts an attempt again (never merges)
Exit: 0/1 as above, 22 bad arguments or rewindd unreachable, 25 the call failed, 5 no command.";

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    SupportsCheckpoint,
    SupportsBlockCheckpoint,
    SupportsFileCheckpoint,
    StartCheckpoint(i64),
    NeedsCheckpoint,
    IsCheckpointing,
    NeedsRollback,
    MarkBootAttempt,
    PrepareCheckpoint,
    RestoreCheckpoint(String),
    RestoreCheckpointPart(String, i64),
    CommitChanges,
    AbortChanges { message: String, retry: bool },
    ResetCheckpoint,
}

/// vdc's `ParseInt`: an optional sign and decimal digits, nothing else.
fn parse_int(word: &str) -> Option<i64> {
    let digits = word.strip_prefix('-').or_else(|| word.strip_prefix('+')).unwrap_or(word);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    word.parse::<i64>().ok().filter(|n| i32::try_from(*n).is_ok())
}

/// The command words after `checkpoint`; `Err` is the exit status.
pub fn parse(args: &[String]) -> Result<Verb, i32> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let verb = match words.as_slice() {
        [] => return Err(code::USAGE),
        ["supportsCheckpoint"] => Verb::SupportsCheckpoint,
        ["supportsBlockCheckpoint"] => Verb::SupportsBlockCheckpoint,
        ["supportsFileCheckpoint"] => Verb::SupportsFileCheckpoint,
        ["startCheckpoint", n] => Verb::StartCheckpoint(parse_int(n).ok_or(code::EINVAL)?),
        ["needsCheckpoint"] => Verb::NeedsCheckpoint,
        ["isCheckpointing"] => Verb::IsCheckpointing,
        ["needsRollback"] => Verb::NeedsRollback,
        ["markBootAttempt"] => Verb::MarkBootAttempt,
        ["prepareCheckpoint"] => Verb::PrepareCheckpoint,
        ["restoreCheckpoint", dev] => Verb::RestoreCheckpoint(dev.to_string()),
        ["restoreCheckpointPart", dev, n] => {
            Verb::RestoreCheckpointPart(dev.to_string(), parse_int(n).ok_or(code::EINVAL)?)
        }
        ["commitChanges"] => Verb::CommitChanges,
        ["abortChanges", msg, retry] => {
            Verb::AbortChanges { message: msg.to_string(), retry: parse_int(retry).ok_or(code::EINVAL)? != 0 }
        }
        // vdc takes any arguments after resetCheckpoint.
        ["resetCheckpoint", ..] => Verb::ResetCheckpoint,
        _ => return Err(code::EINVAL),
    };
    Ok(verb)
}

fn bool_code(value: bool) -> i32 {
    println!("{value}");
    if value {
        code::TRUE
    } else {
        code::FALSE
    }
}

/// A failed call: the chain on stderr, vdc's status.
fn failed(err: &ClientError) -> i32 {
    print_error(err);
    match err {
        ClientError::Connect { .. } => code::EINVAL,
        _ => code::ENOTTY,
    }
}

/// Runs one command; returns vdc's exit status.
pub async fn run(target: &Target, dial: Dial, args: &[String]) -> i32 {
    let verb = match parse(args) {
        Ok(v) => v,
        Err(c) => {
            eprintln!(
                "rewindctl checkpoint: {}: see `rewindctl checkpoint --help`",
                match c {
                    code::USAGE => "no command given".to_string(),
                    _ => format!("cannot read {:?}", args.join(" ")),
                }
            );
            return c;
        }
    };
    let mut client = match connect_waiting(target, dial).await {
        Ok(c) => c,
        Err(e) => return failed(&e),
    };
    match call(&mut client, verb).await {
        Ok(code) => code,
        Err(e) => failed(&e),
    }
}

/// Whether an error answer is vold's quiet no-op (nothing pending).
fn nothing_pending(status: &tonic::Status) -> bool {
    Refusal::from_status(status).kind == Some(ErrorKind::WrongPhase)
}

async fn call(c: &mut CheckpointClient<Channel>, verb: Verb) -> Result<i32, ClientError> {
    let rpc = |name: &'static str| move |s: tonic::Status| ClientError::rpc(name, s);
    match verb {
        Verb::SupportsCheckpoint | Verb::SupportsBlockCheckpoint | Verb::SupportsFileCheckpoint => {
            let s = c
                .supports_checkpoint(pb::SupportsCheckpointRequest {})
                .await
                .map_err(rpc("SupportsCheckpoint"))?
                .into_inner();
            Ok(bool_code(match verb {
                Verb::SupportsCheckpoint => (s.block || s.file) && s.marks_slot,
                Verb::SupportsBlockCheckpoint => s.block,
                _ => s.file,
            }))
        }
        Verb::StartCheckpoint(retry) => {
            let Some(budget) = Budget::from_vold_retry(retry) else {
                // vold refuses it in the call (exit 25), not in parsing.
                eprintln!("rewindctl checkpoint: startCheckpoint {retry}: the retry count must be -1 or more");
                return Ok(code::ENOTTY);
            };
            let (attempts, unlimited) = match budget {
                Budget::Attempts(n) => (n, false),
                Budget::Unlimited => (0, true),
            };
            c.start_checkpoint(pb::StartCheckpointRequest {
                attempts,
                unlimited,
                renew: true,
                reason: format!("startCheckpoint {retry}"),
            })
            .await
            .map_err(rpc("StartCheckpoint"))?;
            Ok(code::OK)
        }
        Verb::NeedsCheckpoint | Verb::IsCheckpointing => {
            let v = c
                .needs_checkpoint(pb::NeedsCheckpointRequest { this_boot: true })
                .await
                .map_err(rpc("NeedsCheckpoint"))?;
            Ok(bool_code(v.into_inner().value))
        }
        Verb::NeedsRollback => {
            let v = c.needs_rollback(pb::NeedsRollbackRequest {}).await.map_err(rpc("NeedsRollback"))?;
            Ok(bool_code(v.into_inner().value))
        }
        Verb::MarkBootAttempt => {
            c.mark_boot_attempt(pb::MarkBootAttemptRequest {}).await.map_err(rpc("MarkBootAttempt"))?;
            Ok(code::OK)
        }
        Verb::PrepareCheckpoint => {
            c.prepare_checkpoint(pb::PrepareCheckpointRequest {}).await.map_err(rpc("PrepareCheckpoint"))?;
            Ok(code::OK)
        }
        Verb::RestoreCheckpoint(device) => {
            let mut stream = c
                .restore_checkpoint(pb::RestoreCheckpointRequest { device })
                .await
                .map_err(rpc("RestoreCheckpoint"))?
                .into_inner();
            loop {
                match stream.message().await.map_err(rpc("RestoreCheckpoint"))? {
                    Some(msg) if msg.done => return Ok(code::OK),
                    Some(_) => {}
                    None => return Err(ClientError::StreamEnded { what: "the final message".into() }),
                }
            }
        }
        Verb::RestoreCheckpointPart(device, n) => {
            // vold's test hook restores n log entries and stops; a merge
            // cannot stop half-way on request.
            eprintln!(
                "rewindctl checkpoint: restoreCheckpointPart {device} {n}: rewind restores whole merges only \
                 (use restoreCheckpoint)"
            );
            Ok(code::ENOTTY)
        }
        Verb::CommitChanges => {
            match c.commit_changes(pb::CommitChangesRequest { reason: "commitChanges".into() }).await {
                Ok(_) => Ok(code::OK),
                // vold: not checkpointing, nothing to commit, ok.
                Err(s) if nothing_pending(&s) => Ok(code::OK),
                Err(s) => Err(ClientError::rpc("CommitChanges", s)),
            }
        }
        Verb::AbortChanges { message, retry } => {
            let req = pb::AbortChangesRequest { reason: message, keep_retrying: retry, reboot: true };
            match c.abort_changes(req).await {
                Ok(_) => Ok(code::OK),
                // vold: no checkpoint needed, nothing done (no reboot), ok.
                Err(s) if nothing_pending(&s) => Ok(code::OK),
                Err(s) => Err(ClientError::rpc("AbortChanges", s)),
            }
        }
        Verb::ResetCheckpoint => {
            c.reset_checkpoint(pb::ResetCheckpointRequest {}).await.map_err(rpc("ResetCheckpoint"))?;
            Ok(code::OK)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(words: &[&str]) -> Result<Verb, i32> {
        parse(&words.iter().map(|w| w.to_string()).collect::<Vec<_>>())
    }

    /// vdc.cpp's argument rules: exact argument counts per command, ParseInt
    /// for numbers (failure: exit EINVAL before any call), unknown commands
    /// EINVAL ("Raw commands are no longer supported"), no command: 5.
    #[test]
    fn commands_parse_as_vdc_parses_them() {
        assert_eq!(p(&["startCheckpoint", "-1"]), Ok(Verb::StartCheckpoint(-1)));
        assert_eq!(p(&["startCheckpoint", "2"]), Ok(Verb::StartCheckpoint(2)));
        assert_eq!(p(&["startCheckpoint", "two"]), Err(code::EINVAL));
        assert_eq!(p(&["startCheckpoint", "2x"]), Err(code::EINVAL));
        assert_eq!(p(&["startCheckpoint", "99999999999"]), Err(code::EINVAL), "not an int");
        assert_eq!(p(&["startCheckpoint"]), Err(code::EINVAL), "wrong argument count");
        assert_eq!(
            p(&["abortChanges", "apexd_initiated", "0"]),
            Ok(Verb::AbortChanges { message: "apexd_initiated".into(), retry: false })
        );
        assert_eq!(p(&["abortChanges", "x", "1"]), Ok(Verb::AbortChanges { message: "x".into(), retry: true }));
        assert_eq!(p(&["abortChanges", "x", "yes"]), Err(code::EINVAL));
        assert_eq!(p(&["abortChanges", "x"]), Err(code::EINVAL));
        assert_eq!(
            p(&["restoreCheckpoint", "/dev/block/by-name/userdata"]),
            Ok(Verb::RestoreCheckpoint("/dev/block/by-name/userdata".into()))
        );
        assert_eq!(p(&["restoreCheckpointPart", "/dev/x", "n"]), Err(code::EINVAL));
        assert_eq!(p(&["resetCheckpoint", "anything"]), Ok(Verb::ResetCheckpoint));
        assert_eq!(p(&["needsCheckpoint", "extra"]), Err(code::EINVAL));
        assert_eq!(p(&["fstrim"]), Err(code::EINVAL));
        assert_eq!(p(&[]), Err(code::USAGE));
        for (word, verb) in [
            ("supportsCheckpoint", Verb::SupportsCheckpoint),
            ("supportsBlockCheckpoint", Verb::SupportsBlockCheckpoint),
            ("supportsFileCheckpoint", Verb::SupportsFileCheckpoint),
            ("needsCheckpoint", Verb::NeedsCheckpoint),
            ("isCheckpointing", Verb::IsCheckpointing),
            ("needsRollback", Verb::NeedsRollback),
            ("markBootAttempt", Verb::MarkBootAttempt),
            ("prepareCheckpoint", Verb::PrepareCheckpoint),
            ("commitChanges", Verb::CommitChanges),
        ] {
            assert_eq!(p(&[word]), Ok(verb));
        }
    }
}
