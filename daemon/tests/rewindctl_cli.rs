//! rewindctl as scripts and init see it: output and exit statuses against
//! the real service with a fake core (so every error kind can be provoked).

mod common;

use common::{rewindctl, TestServer};
use rewind_daemon::client::exit;
use rewind_daemon::types::ErrorKind;

/// Booleans: 0 = true, 1 = false (the opposite of vdc).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boolean_queries_exit_zero_for_true_and_one_for_false() {
    let server = TestServer::start(TestServer::default_policy(), false).await;
    let s = &server.socket;
    let run = rewindctl(s, None, &["needs-checkpoint"]).await;
    assert_eq!((run.code, run.stdout.trim()), (exit::FALSE, "false"), "{run:?}");
    assert_eq!(rewindctl(s, None, &["is-checkpointing"]).await.code, exit::FALSE);
    assert_eq!(rewindctl(s, None, &["needs-rollback"]).await.code, exit::FALSE);
    let run = rewindctl(s, None, &["start", "--attempts", "3", "--reason", "ota"]).await;
    assert_eq!(run.code, exit::OK, "{run:?}");
    assert!(run.stdout.contains("3 attempt(s)"), "{run:?}");
    let run = rewindctl(s, None, &["needs-checkpoint"]).await;
    assert_eq!((run.code, run.stdout.trim()), (exit::OK, "true"), "{run:?}");
    let run = rewindctl(s, None, &["supports"]).await;
    assert_eq!(run.code, exit::OK, "{run:?}");
    assert!(run.stdout.contains("block: true"), "{run:?}");
    server.stop().await;
}

/// prepare-userdata prints merge progress lines, then the outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_userdata_prints_progress_then_outcome() {
    let server = TestServer::start(TestServer::default_policy(), false).await;
    let s = &server.socket;
    assert_eq!(rewindctl(s, None, &["start", "--attempts", "2"]).await.code, exit::OK);
    let run = rewindctl(s, None, &["prepare-userdata"]).await;
    assert_eq!(run.code, exit::OK, "{run:?}");
    assert!(run.stdout.contains("merging rewind-userdata: 41% (21 MiB/51 MiB)"), "{run:?}");
    assert!(run.stdout.contains("merging rewind-userdata: 100% (51 MiB/51 MiB)"), "{run:?}");
    assert!(run.stdout.trim_end().ends_with("userdata prepared: checkpointing (attempt 1 of 2)"), "{run:?}");
    assert_eq!(rewindctl(s, None, &["is-checkpointing"]).await.code, exit::OK);
    let run = rewindctl(s, None, &["commit", "--reason", "boot ok"]).await;
    assert_eq!(run.code, exit::OK, "{run:?}");
    assert!(run.stdout.contains("committed in 1.234 ms"), "{run:?}");
    server.stop().await;
}

/// Each error kind has its own documented exit status, and the numbered
/// cause chain goes to stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_kinds_have_distinct_exit_codes() {
    let server = TestServer::start(TestServer::default_policy(), false).await;
    let s = &server.socket;
    let table = [
        (ErrorKind::InvalidArgument, exit::USAGE),
        (ErrorKind::WrongPhase, exit::WRONG_PHASE),
        (ErrorKind::Unavailable, exit::UNAVAILABLE),
        (ErrorKind::NoSpace, exit::NO_SPACE),
        (ErrorKind::Unsafe, exit::UNSAFE),
        (ErrorKind::PermissionDenied, exit::PERMISSION_DENIED),
        (ErrorKind::Internal, exit::OTHER),
    ];
    for (kind, code) in table {
        server.core.fail_next(kind);
        let run = rewindctl(s, None, &["start", "--attempts", "3"]).await;
        assert_eq!(run.code, code, "{kind:?}: {run:?}");
        assert!(run.stderr.contains("  0: StartCheckpoint failed"), "{kind:?}: {run:?}");
        assert!(run.stderr.contains("  1: rewindd answered"), "{kind:?}: {run:?}");
        assert!(run.stderr.contains(&common::error_of(kind).to_string()), "{kind:?}: {run:?}");
    }
    // A real wrong-phase refusal: abort with no checkpoint.
    let run = rewindctl(s, None, &["abort"]).await;
    assert_eq!(run.code, exit::WRONG_PHASE, "{run:?}");
    // Commit with no checkpoint is init's every-boot case: nothing to do,
    // success (vold's commitChanges answers the same).
    let run = rewindctl(s, None, &["commit"]).await;
    assert_eq!(run.code, exit::OK, "{run:?}");
    assert!(run.stdout.contains("nothing to commit"), "{run:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_history_have_json_forms() {
    let server = TestServer::start(TestServer::default_policy(), false).await;
    let s = &server.socket;
    assert_eq!(rewindctl(s, None, &["start", "--attempts", "3", "--reason", "ota 7"]).await.code, exit::OK);
    let run = rewindctl(s, None, &["status", "--json"]).await;
    assert_eq!(run.code, exit::OK, "{run:?}");
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("status --json is JSON");
    assert_eq!(v["phase"], "armed");
    assert_eq!(v["attempts"], 3);
    assert_eq!(v["partitions"][0]["name"], "userdata");
    assert_eq!(v["partitions"][0]["free_map"]["linear_chunks"], 180000);
    assert_eq!(v["partitions"][0]["free_map"]["mapped"], true);
    assert_eq!(v["partitions"][0]["free_map"]["free_written_bytes"], 64 << 20);
    assert_eq!(v["partitions"][0]["free_map"]["free_written_unknown"], serde_json::Value::Null);
    assert_eq!(v["partitions"][0]["free_map"]["free_written_segments"], 14);
    assert_eq!(v["partitions"][0]["free_map"]["free_written_lower_bound"], false, "every run counted");
    let run = rewindctl(s, None, &["status"]).await;
    assert!(run.stdout.contains("PARTITION") && run.stdout.contains("userdata"), "{run:?}");
    assert!(
        run.stdout
            .contains("userdata free space: 180000 of 262144 chunks (68%) mapped linear in 14 runs, never copied"),
        "{run:?}"
    );
    assert!(
        run.stdout.contains("userdata free space: 64 MiB written into free space this boot, not copied"),
        "{run:?}"
    );
    assert!(v["commit_failure"].is_null(), "no failed commit: {v}");
    assert!(!run.stdout.contains("commit:"), "{run:?}");
    // A commit whose data commit failed up to the bound.
    server.core.set_phase(rewind_daemon::types::Phase::Committing);
    let run = rewindctl(s, None, &["status", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("status --json is JSON");
    assert_eq!(v["commit_failure"]["failures"], 3);
    assert_eq!(v["commit_failure"]["limit"], 3);
    assert_eq!(v["commit_failure"]["retried_at_boot"], false);
    assert_eq!(v["commit_failure"]["last_error"], "dm remove rewind-userdata-snap: Device or resource busy");
    let run = rewindctl(s, None, &["status"]).await;
    assert!(
        run.stdout.contains(
            "commit:      failed 3 times since the intent: dm remove rewind-userdata-snap: Device or resource busy; \
             boots no longer retry it (limit 3 reached); `rewindctl commit` does; userdata is the committed data; \
             fix: a process holds a rewind device open"
        ),
        "{run:?}"
    );
    server.core.set_phase(rewind_daemon::types::Phase::Armed);
    let run = rewindctl(s, None, &["history", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("history --json is JSON");
    assert_eq!(v["events"][0]["kind"], "started");
    assert_eq!(v["events"][0]["detail"], "ota 7");
    let run = rewindctl(s, None, &["history"]).await;
    assert!(run.stdout.contains("started") && run.stdout.contains("2026-11-23T23:50:46Z"), "{run:?}");
    server.stop().await;
}

/// watch --until-phase returns 0 once the phase shows up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_until_phase_exits_when_reached() {
    let server = TestServer::start(TestServer::default_policy(), false).await;
    let socket = server.socket.clone();
    let watcher = tokio::spawn(async move {
        rewindctl(&socket, None, &["watch", "--interval-ms", "100", "--until-phase", "armed"]).await
    });
    // Start only once the watcher's stream is subscribed: under load the
    // rewindctl process can take longer than any fixed sleep to connect.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.core.watchers() == 0 {
        assert!(std::time::Instant::now() < deadline, "rewindctl watch never subscribed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(rewindctl(&server.socket, None, &["start", "--attempts", "1"]).await.code, exit::OK);
    let run = watcher.await.unwrap();
    assert_eq!(run.code, exit::OK, "{run:?}");
    assert!(run.stdout.contains("event started"), "{run:?}");
    assert!(run.stdout.contains("armed"), "{run:?}");
    server.stop().await;
}

/// No daemon: exit 3, naming the socket and how to start rewindd.
#[tokio::test]
async fn missing_daemon_exits_three_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody-home");
    let run = rewindctl(&socket, None, &["status"]).await;
    assert_eq!(run.code, exit::CONNECT, "{run:?}");
    assert!(run.stderr.contains(&socket.display().to_string()), "{run:?}");
    assert!(run.stderr.contains("Is rewindd running?"), "{run:?}");
}

#[tokio::test]
async fn usage_errors_exit_two_and_help_has_examples() {
    let run = common::run({
        let mut cmd = tokio::process::Command::new(common::rewindctl_path());
        cmd.arg("frobnicate");
        cmd
    })
    .await;
    assert_eq!(run.code, exit::USAGE, "{run:?}");
    let run = common::run({
        let mut cmd = tokio::process::Command::new(common::rewindctl_path());
        cmd.args(["start", "--attempts", "0"]);
        cmd
    })
    .await;
    assert_eq!(run.code, exit::USAGE, "{run:?}");
    let run = common::run({
        let mut cmd = tokio::process::Command::new(common::rewindctl_path());
        cmd.arg("--help");
        cmd
    })
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("Examples:") && run.stdout.contains("Exit status:"), "{run:?}");
}

/// --wait retries the connection: a daemon that comes up late is reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_reaches_a_daemon_that_starts_late() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("late.sock");
    let client_socket = socket.clone();
    let started = std::time::Instant::now();
    let client =
        tokio::spawn(async move { rewindctl(&client_socket, None, &["--wait", "20", "needs-checkpoint"]).await });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // Serve the fake on that path now.
    let (unix, _file) = rewind_daemon::service::transport::bind_unix(&socket, 0o600).unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let service = rewind_daemon::service::CheckpointService::new(
        common::FakeCore::new(),
        TestServer::default_policy(),
        rx.clone(),
    );
    let server = tokio::spawn(rewind_daemon::service::server::serve(service, unix, None, rx));
    let run = client.await.unwrap();
    assert_eq!(run.code, exit::FALSE, "{run:?}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(500));
    let _ = tx.send(true);
    server.await.unwrap().unwrap();
}

/// A daemon that accepts and then never answers (stuck, or not rewindd at
/// all) does not hang the caller: every call has a deadline (`--timeout`),
/// and the error says what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_times_out_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = listener.accept().await {
            conns.push(c);
        }
    });
    let started = std::time::Instant::now();
    let run = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        common::rewindctl(&socket, None, &["--timeout", "2", "status"]),
    )
    .await
    .expect("rewindctl returned");
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.to_lowercase().contains("timeout") || run.stderr.contains("deadline"), "{run:?}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(2), "waited its timeout first");
    held.abort();
}
