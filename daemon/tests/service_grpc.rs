//! The gRPC service over a real Unix socket, with a fake core: every RPC
//! round-trips, errors keep their codes on the wire, other uids are
//! refused, streams stream, reflection answers.

mod common;

use std::time::Duration;

use common::{FakeCore, TestServer};
use rewind_daemon::client::{connect, Target};
use rewind_daemon::service::mapping::ERROR_KIND_KEY;
use rewind_daemon::service::CheckpointCore;
use rewind_daemon::types::ErrorKind;
use rewind_proto::v1 as pb;

async fn client(server: &TestServer) -> pb::checkpoint_client::CheckpointClient<tonic::transport::Channel> {
    connect(&Target::Unix(server.socket.clone())).await.expect("connect")
}

/// Start, prepare (progress stream), query, commit, history, abort: each
/// answers as the fake core decided, through the real service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_round_trips_over_a_unix_socket() {
    let server = TestServer::start(TestServer::default_policy(), false).await;
    let mut c = client(&server).await;

    assert!(!c.needs_checkpoint(pb::NeedsCheckpointRequest::default()).await.unwrap().into_inner().value);
    let started = c
        .start_checkpoint(pb::StartCheckpointRequest { attempts: 3, reason: "ota 1234".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let status = started.status.expect("status in the answer");
    assert_eq!(status.phase(), pb::Phase::Armed);
    assert_eq!(status.attempts, 3);
    assert_eq!(status.partitions[0].cow_free_bytes, 48 << 20);
    assert!(c.needs_checkpoint(pb::NeedsCheckpointRequest::default()).await.unwrap().into_inner().value);
    assert!(!c.is_checkpointing(pb::IsCheckpointingRequest {}).await.unwrap().into_inner().value);

    let mut stream = c.prepare_userdata(pb::PrepareUserdataRequest {}).await.unwrap().into_inner();
    let mut messages = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        messages.push(m);
    }
    let last = messages.last().expect("a final message");
    assert!(last.done);
    assert_eq!(last.phase(), pb::Phase::Checkpointing);
    assert_eq!((last.attempt, last.attempts), (1, 3));
    assert_eq!(messages.iter().filter(|m| m.done).count(), 1, "only the last message is done");
    let progress: Vec<_> = messages.iter().filter(|m| !m.done).collect();
    assert_eq!(progress.len(), 3, "every progress report arrives: {messages:?}");
    assert_eq!(progress[1].step, "merging rewind-userdata");
    assert_eq!((progress[1].done_sectors, progress[1].total_sectors), (21 * 2048, 51 * 2048));

    assert!(c.is_checkpointing(pb::IsCheckpointingRequest {}).await.unwrap().into_inner().value);
    let status = c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.phase(), pb::Phase::Checkpointing);
    assert_eq!(status.partitions[0].name, "userdata");
    assert_eq!(status.partitions[0].backend(), pb::Backend::Snapshot);

    let supports = c.supports_checkpoint(pb::SupportsCheckpointRequest {}).await.unwrap().into_inner();
    assert_eq!((supports.block, supports.file), (true, false));

    let committed =
        c.commit_changes(pb::CommitChangesRequest { reason: "boot completed".into() }).await.unwrap().into_inner();
    assert_eq!(committed.duration_us, 1234);
    assert_eq!(committed.status.unwrap().phase(), pb::Phase::Idle);

    let history = c.get_history(pb::GetHistoryRequest {}).await.unwrap().into_inner();
    let kinds: Vec<_> = history.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["started", "attempt", "committed"]);
    assert_eq!(history.events[0].detail, "ota 1234");

    c.start_checkpoint(pb::StartCheckpointRequest { attempts: 1, reason: String::new(), ..Default::default() })
        .await
        .unwrap();
    let aborted = c
        .abort_changes(pb::AbortChangesRequest {
            reason: "health check".into(),
            keep_retrying: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(aborted.status.unwrap().phase(), pb::Phase::RolledBack);
    assert!(c.needs_rollback(pb::NeedsRollbackRequest {}).await.unwrap().into_inner().value);
    server.stop().await;
}

/// Each kind of core error arrives with its code, the kind tag and the
/// error's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_errors_keep_their_code_on_the_wire() {
    let server = TestServer::start(TestServer::default_policy(), false).await;
    let mut c = client(&server).await;
    for kind in ErrorKind::ALL {
        server.core.fail_next(kind);
        let status =
            c.start_checkpoint(pb::StartCheckpointRequest { attempts: 2, ..Default::default() }).await.unwrap_err();
        let expected = rewind_daemon::service::mapping::code_of(kind);
        assert_eq!(status.code(), expected, "{kind:?}");
        let tag = status.metadata().get(ERROR_KIND_KEY).unwrap().to_str().unwrap();
        assert_eq!(ErrorKind::from_name(tag), Some(kind));
        assert_eq!(status.message(), common::error_of(kind).to_string());
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_refused_before_the_core() {
    let server = TestServer::start(TestServer::default_policy(), false).await;
    let mut c = client(&server).await;
    let status = c
        .start_checkpoint(pb::StartCheckpointRequest { attempts: 0, reason: String::new(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let status = c
        .start_checkpoint(pb::StartCheckpointRequest { attempts: 3, reason: "x".repeat(5000), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(server.core.phase(), rewind_daemon::types::Phase::Idle, "the core was not called");
    server.stop().await;
}

/// WatchStatus: a status at once, the core's events as they happen, more
/// statuses every interval; the stream ends at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_status_streams_events_and_periodic_status() {
    let server = TestServer::start(TestServer::default_policy(), false).await;
    let mut c = client(&server).await;
    let mut stream = c.watch_status(pb::WatchStatusRequest { interval_ms: 100 }).await.unwrap().into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.message()).await.unwrap().unwrap().unwrap();
    assert!(matches!(first.kind, Some(pb::watch_event::Kind::Status(_))), "{first:?}");

    server.core.start_checkpoint(rewind_daemon::types::Budget::Attempts(3), "watched", false).unwrap();
    let mut saw_event = false;
    let mut statuses = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !(saw_event && statuses >= 2) {
        let msg = tokio::time::timeout_at(deadline, stream.message()).await.expect("events in time").unwrap().unwrap();
        match msg.kind {
            Some(pb::watch_event::Kind::Event(e)) => {
                assert_eq!(e.kind, "started");
                assert_eq!(e.detail, "watched");
                saw_event = true;
            }
            Some(pb::watch_event::Kind::Status(_)) => statuses += 1,
            None => panic!("empty WatchEvent"),
        }
    }

    server.shutdown();
    let end =
        tokio::time::timeout(Duration::from_secs(5), async { while let Ok(Some(_)) = stream.message().await {} }).await;
    assert!(end.is_ok(), "the watch stream ends at shutdown");
    server.stop().await;
}

/// interval_ms = 0: events only, no statuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_status_with_zero_interval_sends_only_events() {
    let server = TestServer::start(TestServer::default_policy(), false).await;
    let mut c = client(&server).await;
    let mut stream = c.watch_status(pb::WatchStatusRequest { interval_ms: 0 }).await.unwrap().into_inner();
    // The subscription exists once the call has answered.
    server.core.start_checkpoint(rewind_daemon::types::Budget::Attempts(2), "only events", false).unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), stream.message()).await.unwrap().unwrap().unwrap();
    assert!(matches!(msg.kind, Some(pb::watch_event::Kind::Event(ref e)) if e.kind == "started"), "{msg:?}");
    server.stop().await;
}

/// grpcurl-like clients can list the service without the .proto.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_checkpoint_service() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let server = TestServer::start(TestServer::default_policy(), false).await;
    let socket = server.socket.clone();
    let channel = tonic::transport::Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(socket).await?))
            }
        }))
        .await
        .unwrap();
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection.server_reflection_info(tokio_stream::iter(vec![request])).await.unwrap().into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else { panic!("{answer:?}") };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"rewind.v1.Checkpoint"), "{names:?}");
    server.stop().await;
}

/// A caller whose uid is not allowed gets PERMISSION_DENIED naming its uid
/// for every mutating call, and may still query. (Tests run as root; the
/// caller is rewindctl started as uid 12345.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_with_another_uid_is_refused_with_permission_denied() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to start a client as another uid");
        return;
    }
    let server = TestServer::start(TestServer::default_policy(), false).await;
    for args in [&["start", "--attempts", "3"][..], &["commit"], &["abort"], &["prepare-userdata"]] {
        let run = common::rewindctl(&server.socket, Some(12345), args).await;
        assert_eq!(run.code, rewind_daemon::client::exit::PERMISSION_DENIED, "{args:?}: {run:?}");
        assert!(run.stderr.contains("uid 12345"), "{args:?}: {run:?}");
        assert!(run.stderr.contains("PermissionDenied"), "{args:?}: {run:?}");
    }
    assert_eq!(server.core.phase(), rewind_daemon::types::Phase::Idle, "nothing reached the core");
    let run = common::rewindctl(&server.socket, Some(12345), &["status"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let run = common::rewindctl(&server.socket, Some(12345), &["needs-checkpoint"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    // The same command as root is allowed.
    let run = common::rewindctl(&server.socket, None, &["start", "--attempts", "3"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    server.stop().await;
}

/// TCP carries no uid: mutating calls only when tcp_trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_callers_mutate_only_when_trusted() {
    for trusted in [false, true] {
        let mut policy = TestServer::default_policy();
        policy.tcp_trusted = trusted;
        let server = TestServer::start(policy, true).await;
        let addr = server.tcp_addr.unwrap().to_string();
        let mut c = connect(&Target::Tcp(addr.clone())).await.expect("tcp connect");
        assert!(!c.needs_checkpoint(pb::NeedsCheckpointRequest::default()).await.unwrap().into_inner().value);
        let result = c.start_checkpoint(pb::StartCheckpointRequest { attempts: 2, ..Default::default() }).await;
        if trusted {
            result.expect("trusted TCP caller may start");
        } else {
            let status = result.unwrap_err();
            assert_eq!(status.code(), tonic::Code::PermissionDenied);
            assert!(status.message().contains("TCP"), "{}", status.message());
        }
        let run = common::run({
            let mut cmd = tokio::process::Command::new(common::rewindctl_path());
            cmd.args(["--tcp", &addr, "needs-checkpoint"]);
            cmd
        })
        .await;
        assert_eq!(run.code, if trusted { 0 } else { 1 }, "{run:?}");
        server.stop().await;
    }
}

/// A panic in the core answers INTERNAL for that call; the daemon lives on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_core_call_answers_internal() {
    struct Panicky(std::sync::Arc<FakeCore>);
    impl CheckpointCore for Panicky {
        fn start_checkpoint(
            &self,
            b: rewind_daemon::types::Budget,
            r: &str,
            n: bool,
        ) -> rewind_daemon::error::Result<rewind_daemon::types::StatusReport> {
            self.0.start_checkpoint(b, r, n)
        }
        fn needs_checkpoint(&self, _this_boot: bool) -> bool {
            panic!("core not ready")
        }
        fn needs_rollback(&self) -> bool {
            self.0.needs_rollback()
        }
        fn is_checkpointing(&self) -> bool {
            self.0.is_checkpointing()
        }
        fn commit(&self, r: &str) -> rewind_daemon::error::Result<Duration> {
            self.0.commit(r)
        }
        fn abort(&self, r: &str, k: bool, b: bool) -> rewind_daemon::error::Result<rewind_daemon::types::StatusReport> {
            self.0.abort(r, k, b)
        }
        fn mark_boot_attempt(&self) -> rewind_daemon::error::Result<rewind_daemon::types::PrepareOutcome> {
            self.0.mark_boot_attempt()
        }
        fn prepare_checkpoint(&self) -> rewind_daemon::error::Result<()> {
            self.0.prepare_checkpoint()
        }
        fn restore_checkpoint(
            &self,
            d: &str,
            p: &mut dyn FnMut(rewind_daemon::types::Progress),
        ) -> rewind_daemon::error::Result<rewind_daemon::types::PrepareOutcome> {
            self.0.restore_checkpoint(d, p)
        }
        fn reset_checkpoint(&self) -> rewind_daemon::error::Result<()> {
            self.0.reset_checkpoint()
        }
        fn seal_free_map(&self) -> rewind_daemon::error::Result<Vec<rewind_daemon::types::SealOutcome>> {
            self.0.seal_free_map()
        }
        fn evidence(&self) -> rewind_daemon::error::Result<Vec<rewind_daemon::types::AttemptEvidence>> {
            self.0.evidence()
        }
        fn attempt_evidence(
            &self,
            a: u32,
            p: bool,
        ) -> rewind_daemon::error::Result<rewind_daemon::types::AttemptEvidence> {
            self.0.attempt_evidence(a, p)
        }
        fn open_evidence(&self, a: u32, n: &str, p: bool) -> rewind_daemon::error::Result<std::fs::File> {
            self.0.open_evidence(a, n, p)
        }
        fn prepare_userdata(
            &self,
            p: &mut dyn FnMut(rewind_daemon::types::Progress),
        ) -> rewind_daemon::error::Result<rewind_daemon::types::PrepareOutcome> {
            self.0.prepare_userdata(p)
        }
        fn supports(&self) -> rewind_daemon::types::Supports {
            self.0.supports()
        }
        fn status(&self) -> rewind_daemon::types::StatusReport {
            self.0.status()
        }
        fn history(&self) -> Vec<rewind_daemon::types::Event> {
            self.0.history()
        }
        fn subscribe(&self) -> tokio::sync::broadcast::Receiver<rewind_daemon::engine::Notice> {
            self.0.subscribe()
        }
        fn poll_space(&self) -> rewind_daemon::error::Result<()> {
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s");
    let (unix, _file) = rewind_daemon::service::transport::bind_unix(&socket, 0o600).unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let service = rewind_daemon::service::CheckpointService::new(
        std::sync::Arc::new(Panicky(FakeCore::new())),
        TestServer::default_policy(),
        rx.clone(),
    );
    let task = tokio::spawn(rewind_daemon::service::server::serve(service, unix, None, rx));
    let mut c = connect(&Target::Unix(socket)).await.unwrap();
    let status = c.needs_checkpoint(pb::NeedsCheckpointRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Internal);
    assert!(c.get_status(pb::GetStatusRequest {}).await.is_ok(), "the service still answers");
    let _ = tx.send(true);
    task.await.unwrap().unwrap();
    let _ = ErrorKind::Internal;
}

/// The boot step runs to its end even when the client goes away midway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_userdata_finishes_when_the_client_leaves() {
    let server = TestServer::start(TestServer::default_policy(), false).await;
    let mut c = client(&server).await;
    c.start_checkpoint(pb::StartCheckpointRequest { attempts: 2, ..Default::default() }).await.unwrap();
    let mut stream = c.prepare_userdata(pb::PrepareUserdataRequest {}).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(!first.done);
    drop(stream);
    drop(c);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.core.phase() != rewind_daemon::types::Phase::Checkpointing {
        assert!(tokio::time::Instant::now() < deadline, "prepare did not finish without its client");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}
