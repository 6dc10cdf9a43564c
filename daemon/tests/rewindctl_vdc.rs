//! `rewindctl checkpoint <cmd>` as vold and fs_mgr would call it: vdc's
//! command words and exit statuses (1 = true, 0 = false or ok, 22 bad
//! arguments or no service, 25 the call failed), against the real service
//! with a fake core. What each call means on a device is pinned in the
//! engine's tests (engine/vold_tests.rs); this is the command line.

mod common;

use common::{rewindctl, TestServer, FAKE_TOMBSTONE, FAKE_TOMBSTONE_TEXT};
use rewind_daemon::client::vdc::code;
use rewind_daemon::types::Phase;

async fn vdc(server: &TestServer, words: &[&str]) -> common::Run {
    let mut args = vec!["checkpoint"];
    args.extend_from_slice(words);
    rewindctl(&server.socket, None, &args).await
}

/// vdc's supports* answer 1 for true: supportsCheckpoint only when the
/// commit marks the boot slot (so update_verifier may defer to rewind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supports_commands_answer_by_exit_status() {
    let server = TestServer::start(TestServer::default_policy(), false).await;
    assert_eq!(vdc(&server, &["supportsBlockCheckpoint"]).await.code, code::TRUE);
    assert_eq!(vdc(&server, &["supportsFileCheckpoint"]).await.code, code::FALSE);
    let run = vdc(&server, &["supportsCheckpoint"]).await;
    assert_eq!(run.code, code::FALSE, "no slot marking configured: {run:?}");
    server.core.set_slot(false, true);
    assert_eq!(vdc(&server, &["supportsCheckpoint"]).await.code, code::TRUE);
    server.stop().await;
}

/// startCheckpoint N: N + 1 attempts, -1 unlimited, a pending checkpoint
/// renewed; a count below -1 is the call's refusal (25), a word that is no
/// number vdc's parse error (22).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_checkpoint_takes_vold_retry_counts() {
    let server = TestServer::start(TestServer::default_policy(), false).await;
    assert_eq!(vdc(&server, &["startCheckpoint", "-1"]).await.code, code::OK);
    assert_eq!(server.core.budget(), (0, true));
    assert_eq!(server.core.phase(), Phase::Armed);
    let run = vdc(&server, &["startCheckpoint", "2"]).await;
    assert_eq!(run.code, code::OK, "renewed, not refused: {run:?}");
    assert_eq!(server.core.budget(), (3, false));
    let run = vdc(&server, &["startCheckpoint", "-2"]).await;
    assert_eq!(run.code, code::ENOTTY, "{run:?}");
    assert!(run.stderr.contains("-1 or more"), "{run:?}");
    assert_eq!(vdc(&server, &["startCheckpoint", "two"]).await.code, code::EINVAL);
    assert_eq!(vdc(&server, &["startCheckpoint"]).await.code, code::EINVAL);
    server.stop().await;
}

/// The boot's questions and steps: needsCheckpoint / isCheckpointing (1
/// only once this boot is an attempt), needsRollback, markBootAttempt (25
/// before prepare), prepareCheckpoint, restoreCheckpoint, commitChanges
/// (nothing to commit is ok).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_commands_follow_the_attempt() {
    let server = TestServer::start(TestServer::default_policy(), false).await;
    let s = &server.socket;
    assert_eq!(vdc(&server, &["needsCheckpoint"]).await.code, code::FALSE);
    assert_eq!(rewindctl(s, None, &["start", "--attempts", "2"]).await.code, 0);
    assert_eq!(vdc(&server, &["needsCheckpoint"]).await.code, code::FALSE, "armed for the next boot");
    assert_eq!(vdc(&server, &["markBootAttempt"]).await.code, code::ENOTTY, "not prepared in this boot");
    let run = vdc(&server, &["restoreCheckpoint", "/dev/block/by-name/system"]).await;
    assert_eq!(run.code, code::ENOTTY, "{run:?}");
    assert_eq!(vdc(&server, &["restoreCheckpoint", "/dev/block/by-name/userdata"]).await.code, code::OK);
    assert_eq!(server.core.phase(), Phase::Checkpointing, "restore ran the prepare");
    assert_eq!(vdc(&server, &["markBootAttempt"]).await.code, code::OK);
    assert_eq!(vdc(&server, &["prepareCheckpoint"]).await.code, code::OK);
    assert_eq!(vdc(&server, &["needsCheckpoint"]).await.code, code::TRUE);
    assert_eq!(vdc(&server, &["isCheckpointing"]).await.code, code::TRUE);
    assert_eq!(vdc(&server, &["needsRollback"]).await.code, code::FALSE);
    assert_eq!(vdc(&server, &["commitChanges"]).await.code, code::OK);
    assert_eq!(server.core.phase(), Phase::Idle);
    assert_eq!(vdc(&server, &["commitChanges"]).await.code, code::OK, "nothing to commit: ok, as vold");
    assert_eq!(vdc(&server, &["resetCheckpoint"]).await.code, code::OK);
    assert!(server.core.was_reset());
    server.stop().await;
}

/// abortChanges MSG RETRY: with nothing pending nothing happens (ok, no
/// reboot); with a checkpoint it aborts and reboots with MSG; RETRY must be
/// a number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_changes_reboots_with_the_message() {
    let server = TestServer::start(TestServer::default_policy(), false).await;
    assert_eq!(vdc(&server, &["abortChanges", "apexd_initiated", "0"]).await.code, code::OK);
    assert!(server.core.reboots().is_empty(), "nothing pending: no reboot");
    assert_eq!(rewindctl(&server.socket, None, &["start", "--attempts", "2"]).await.code, 0);
    assert_eq!(vdc(&server, &["abortChanges", "apexd_initiated", "no"]).await.code, code::EINVAL);
    assert_eq!(vdc(&server, &["abortChanges", "apexd_initiated", "0"]).await.code, code::OK);
    assert_eq!(server.core.reboots(), ["apexd_initiated"]);
    assert_eq!(vdc(&server, &["needsRollback"]).await.code, code::TRUE);
    server.stop().await;
}

/// vdc's usage and failure statuses: no command 5, an unknown command 22,
/// rewindd not reachable 22 (vdc: no vold binder), a failing call 25.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_and_failures_use_vdc_statuses() {
    let server = TestServer::start(TestServer::default_policy(), false).await;
    assert_eq!(vdc(&server, &[]).await.code, code::USAGE);
    assert_eq!(vdc(&server, &["fstrim"]).await.code, code::EINVAL);
    server.core.fail_next(rewind_daemon::types::ErrorKind::Internal);
    let run = vdc(&server, &["resetCheckpoint"]).await;
    assert_eq!(run.code, code::ENOTTY, "{run:?}");
    assert!(run.stderr.contains("ResetCheckpoint failed"), "{run:?}");
    let gone = server.dir.path().join("nobody.sock");
    let run = rewindctl(&gone, None, &["checkpoint", "needsCheckpoint"]).await;
    assert_eq!(run.code, code::EINVAL, "{run:?}");
    server.stop().await;
}

/// `rewindctl abort --reboot` asks rewindd to reboot with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_reboot_passes_the_reason() {
    let server = TestServer::start(TestServer::default_policy(), false).await;
    let s = &server.socket;
    assert_eq!(rewindctl(s, None, &["start", "--attempts", "2"]).await.code, 0);
    let run = rewindctl(s, None, &["abort", "--reason", "health-check", "--reboot"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("rebooting"), "{run:?}");
    assert_eq!(server.core.reboots(), ["health-check"]);
    server.stop().await;
}

/// history names what was kept; evidence lists it and extracts it, by the
/// names the index gives (as root/system only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_is_listed_and_extracted() {
    let server = TestServer::start(TestServer::default_policy(), false).await;
    let s = &server.socket;
    let run = rewindctl(s, None, &["history"]).await;
    assert!(run.stdout.contains("evidence kept") && run.stdout.contains(FAKE_TOMBSTONE), "{run:?}");
    let run = rewindctl(s, None, &["evidence", "2"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("boot reason: kernel_panic") && run.stdout.contains(FAKE_TOMBSTONE), "{run:?}");
    let out = server.dir.path().join("extracted");
    let run = rewindctl(s, None, &["evidence", "2", "--extract", out.to_str().expect("utf8")]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(std::fs::read_to_string(out.join(FAKE_TOMBSTONE)).expect("extracted"), FAKE_TOMBSTONE_TEXT);
    let run = rewindctl(s, None, &["evidence", "2", "--extract", "-", "--file", FAKE_TOMBSTONE]).await;
    assert_eq!(run.stdout, FAKE_TOMBSTONE_TEXT, "{run:?}");
    let run = rewindctl(s, None, &["evidence", "7"]).await;
    assert_eq!(run.code, rewind_daemon::client::exit::USAGE, "{run:?}");
    let run = rewindctl(s, Some(12345), &["evidence", "2"]).await;
    assert_eq!(run.code, rewind_daemon::client::exit::PERMISSION_DENIED, "{run:?}");
    server.stop().await;
}
