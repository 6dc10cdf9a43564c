//! Shared fixtures of the host integration tests: a fake core behind the
//! real gRPC service on a Unix socket in a temp dir, and helpers to run the
//! real binaries.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rewind_daemon::engine::Notice;
use rewind_daemon::error::{Error, Result};
use rewind_daemon::service::transport::{bind_unix, SocketFile};
use rewind_daemon::service::{server, CheckpointCore, CheckpointService, Policy};
use rewind_daemon::types::{
    AttemptEvidence, BackendKind, Budget, CommitFailureReport, ErrorKind, Event, EventKind, EvidenceFile,
    FreeMapReport, PartitionReport, Phase, PrepareOutcome, Progress, SlotState, StatusReport, Supports,
};
use tokio::sync::{broadcast, watch};

/// How long a spawned binary may take for one command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

pub fn error_of(kind: ErrorKind) -> Error {
    match kind {
        ErrorKind::InvalidArgument => Error::InvalidArgument("bad argument (fake)".into()),
        ErrorKind::WrongPhase => Error::WrongPhase { phase: "idle".into(), what: "fake".into() },
        ErrorKind::Unavailable => Error::Unavailable("no device-mapper (fake)".into()),
        ErrorKind::NoSpace => Error::NoSpace { partition: "userdata".into(), needed: 100, available: 1 },
        ErrorKind::Unsafe => Error::Unsafe("extents changed (fake)".into()),
        ErrorKind::PermissionDenied => Error::PermissionDenied("fake".into()),
        ErrorKind::Internal => Error::Internal("ioctl failed (fake)".into()),
    }
}

#[derive(Debug)]
struct FakeState {
    phase: Phase,
    attempt: u32,
    attempts: u32,
    unlimited: bool,
    history: Vec<Event>,
    /// The next mutating call fails with this kind.
    fail_next: Option<ErrorKind>,
    /// The boot slot is not marked successful.
    slot_unmarked: bool,
    /// The commit marks the slot (commit_command and slot_query_command).
    marks_slot: bool,
    /// Reboot reasons asked for.
    reboots: Vec<String>,
    /// ResetCheckpoint was called.
    reset: bool,
}

/// The evidence the fake core serves: attempt 2 kept one tombstone.
pub const FAKE_TOMBSTONE: &str = "data/tombstones/tombstone_00";
pub const FAKE_TOMBSTONE_TEXT: &str = "*** *** *** fake tombstone\n";

/// A core with vold-like phase rules, kept in memory.
pub struct FakeCore {
    state: Mutex<FakeState>,
    notices: broadcast::Sender<Notice>,
    evidence_dir: tempfile::TempDir,
}

impl FakeCore {
    pub fn new() -> Arc<FakeCore> {
        let (notices, _) = broadcast::channel(64);
        Arc::new(FakeCore {
            state: Mutex::new(FakeState {
                phase: Phase::Idle,
                attempt: 0,
                attempts: 0,
                unlimited: false,
                history: Vec::new(),
                fail_next: None,
                slot_unmarked: false,
                marks_slot: false,
                reboots: Vec::new(),
                reset: false,
            }),
            notices,
            evidence_dir: tempfile::tempdir().expect("evidence dir"),
        })
    }

    pub fn set_slot(&self, unmarked: bool, marks_slot: bool) {
        let mut s = self.state.lock().unwrap();
        s.slot_unmarked = unmarked;
        s.marks_slot = marks_slot;
    }

    pub fn reboots(&self) -> Vec<String> {
        self.state.lock().unwrap().reboots.clone()
    }

    pub fn was_reset(&self) -> bool {
        self.state.lock().unwrap().reset
    }

    pub fn budget(&self) -> (u32, bool) {
        let s = self.state.lock().unwrap();
        (s.attempts, s.unlimited)
    }

    fn outcome(s: &FakeState) -> PrepareOutcome {
        PrepareOutcome { phase: s.phase, attempt: s.attempt, attempts: s.attempts, unlimited: s.unlimited }
    }

    fn fake_evidence(&self) -> AttemptEvidence {
        AttemptEvidence {
            attempt: 2,
            dir: "/metadata/rewind/attempts/2".into(),
            files: vec![EvidenceFile {
                name: FAKE_TOMBSTONE.into(),
                source: "/data/tombstones/tombstone_00".into(),
                bytes: FAKE_TOMBSTONE_TEXT.len() as u64,
                truncated: false,
                copied_unix: 1_795_477_846,
            }],
            boot_reason: "kernel_panic".into(),
            dropped: Vec::new(),
        }
    }

    pub fn fail_next(&self, kind: ErrorKind) {
        self.state.lock().unwrap().fail_next = Some(kind);
    }

    pub fn phase(&self) -> Phase {
        self.state.lock().unwrap().phase
    }

    /// Puts the fake in a phase directly (a commit that failed leaves
    /// `Committing`, which no fake call reaches).
    pub fn set_phase(&self, phase: Phase) {
        self.state.lock().unwrap().phase = phase;
    }

    /// How many WatchStatus streams are subscribed right now (tests wait
    /// for a watcher instead of sleeping and hoping).
    pub fn watchers(&self) -> usize {
        self.notices.receiver_count()
    }

    fn take_failure(state: &mut FakeState) -> Result<()> {
        match state.fail_next.take() {
            Some(kind) => Err(error_of(kind)),
            None => Ok(()),
        }
    }

    fn record(&self, state: &mut FakeState, kind: EventKind, detail: &str) {
        let event = Event {
            time_unix: 1_795_477_846,
            kind: kind.as_str().to_string(),
            attempt: state.attempt,
            attempts: state.attempts,
            partition: "userdata".into(),
            detail: detail.to_string(),
            boot_reason: String::new(),
        };
        state.history.push(event.clone());
        let _ = self.notices.send(Notice::Event(event));
    }

    fn report(state: &FakeState) -> StatusReport {
        StatusReport {
            phase: state.phase,
            attempt: state.attempt,
            attempts: state.attempts,
            partitions: vec![PartitionReport {
                name: "userdata".into(),
                mount_point: "/data".into(),
                backend: BackendKind::Snapshot,
                raw_device: "/dev/block/by-name/userdata".into(),
                device_stack: vec!["rewind-userdata: linear".into()],
                cow_bytes: 64 << 20,
                cow_used_bytes: 16 << 20,
                chunk_sectors: 8,
                merge_done_sectors: 0,
                merge_total_sectors: 0,
                snapshot_state: None,
                unusable_bytes: 0,
                free_map: (state.phase != Phase::Idle).then(|| FreeMapReport {
                    mapped: true,
                    chunks: 262144,
                    linear_chunks: 180000,
                    segments: 14,
                    detail: "taken from the ext4 block bitmaps at attempt 1 (read in 45 ms)".into(),
                    free_written_bytes: Some(64 << 20),
                    free_written_unknown: None,
                    free_written_segments: 14,
                    free_written_chunks: 180000,
                }),
            }],
            unavailable_reason: None,
            protection_lost: None,
            unlimited: state.unlimited,
            slot: if state.slot_unmarked { SlotState::Unmarked } else { SlotState::NotQueried },
            commit_failure: (state.phase == Phase::Committing).then(|| CommitFailureReport {
                failures: 3,
                limit: 3,
                last_error: "dm remove rewind-userdata-snap: Device or resource busy".into(),
                retried_at_boot: false,
                fix: "a process holds a rewind device open".into(),
            }),
            rollback_failure: None,
        }
    }
}

impl CheckpointCore for FakeCore {
    fn start_checkpoint(&self, budget: Budget, reason: &str, renew: bool) -> Result<StatusReport> {
        let mut s = self.state.lock().unwrap();
        Self::take_failure(&mut s)?;
        let running = matches!(s.phase, Phase::Armed | Phase::Checkpointing);
        if running && !renew {
            return Err(Error::WrongPhase { phase: format!("{:?}", s.phase), what: "start".into() });
        }
        if !running {
            s.phase = Phase::Armed;
            s.attempt = 0;
        }
        (s.attempts, s.unlimited) = match budget {
            Budget::Attempts(n) => (s.attempt + n, false),
            Budget::Unlimited => (0, true),
        };
        self.record(&mut s, if running { EventKind::Renewed } else { EventKind::Started }, reason);
        Ok(Self::report(&s))
    }
    fn needs_checkpoint(&self, this_boot: bool) -> bool {
        let s = self.state.lock().unwrap();
        s.slot_unmarked
            || match s.phase {
                Phase::Checkpointing => true,
                Phase::Armed => !this_boot,
                _ => false,
            }
    }
    fn needs_rollback(&self) -> bool {
        self.phase() == Phase::RolledBack
    }
    fn is_checkpointing(&self) -> bool {
        self.phase() == Phase::Checkpointing
    }
    fn commit(&self, reason: &str) -> Result<Duration> {
        let mut s = self.state.lock().unwrap();
        Self::take_failure(&mut s)?;
        if s.phase == Phase::Idle && s.slot_unmarked && s.marks_slot {
            s.slot_unmarked = false;
            self.record(&mut s, EventKind::CommitCommand, reason);
            return Ok(Duration::from_micros(1234));
        }
        if s.phase != Phase::Checkpointing {
            return Err(Error::WrongPhase { phase: format!("{:?}", s.phase), what: "commit".into() });
        }
        s.phase = Phase::Idle;
        self.record(&mut s, EventKind::Committed, reason);
        s.attempt = 0;
        s.attempts = 0;
        Ok(Duration::from_micros(1234))
    }
    fn abort(&self, reason: &str, keep_retrying: bool, reboot: bool) -> Result<StatusReport> {
        let mut s = self.state.lock().unwrap();
        Self::take_failure(&mut s)?;
        let running = matches!(s.phase, Phase::Armed | Phase::Checkpointing);
        if !(running || reboot && s.slot_unmarked) {
            return Err(Error::WrongPhase { phase: format!("{:?}", s.phase), what: "abort".into() });
        }
        if running && !keep_retrying {
            s.phase = Phase::RolledBack;
        }
        self.record(&mut s, EventKind::Aborted, reason);
        if reboot {
            s.reboots.push(reason.to_string());
            self.record(&mut s, EventKind::Reboot, reason);
        }
        Ok(Self::report(&s))
    }
    fn mark_boot_attempt(&self) -> Result<PrepareOutcome> {
        let mut s = self.state.lock().unwrap();
        Self::take_failure(&mut s)?;
        if s.phase == Phase::Armed {
            return Err(Error::WrongPhase { phase: "armed".into(), what: "no attempt armed in this boot".into() });
        }
        Ok(Self::outcome(&s))
    }
    fn prepare_checkpoint(&self) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        Self::take_failure(&mut s)
    }
    fn restore_checkpoint(&self, device: &str, progress: &mut dyn FnMut(Progress)) -> Result<PrepareOutcome> {
        if device != "/dev/block/by-name/userdata" {
            return Err(Error::InvalidArgument(format!("{device} is not checkpointed")));
        }
        self.prepare_userdata(progress)
    }
    fn reset_checkpoint(&self) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        Self::take_failure(&mut s)?;
        s.reset = true;
        if matches!(s.phase, Phase::Armed | Phase::Checkpointing) {
            self.record(&mut s, EventKind::Reset, "");
        }
        Ok(())
    }
    fn seal_free_map(&self) -> Result<Vec<rewind_daemon::types::SealOutcome>> {
        let mut s = self.state.lock().unwrap();
        Self::take_failure(&mut s)?;
        if s.phase != Phase::Armed {
            return Err(Error::WrongPhase { phase: s.phase.as_str().into(), what: "seal the free map".into() });
        }
        Ok(vec![rewind_daemon::types::SealOutcome {
            partition: "userdata".into(),
            sealed: false,
            detail: "no crypt layer sits on rewind-userdata".into(),
        }])
    }
    fn evidence(&self) -> Result<Vec<AttemptEvidence>> {
        Ok(vec![self.fake_evidence()])
    }
    fn attempt_evidence(&self, attempt: u32, _previous: bool) -> Result<AttemptEvidence> {
        if attempt != 2 {
            return Err(Error::InvalidArgument(format!("no evidence of attempt {attempt}")));
        }
        Ok(self.fake_evidence())
    }
    fn open_evidence(&self, attempt: u32, name: &str, _previous: bool) -> Result<std::fs::File> {
        if attempt != 2 || name != FAKE_TOMBSTONE {
            return Err(Error::InvalidArgument(format!("no kept file {name:?} of attempt {attempt}")));
        }
        let path = self.evidence_dir.path().join("tombstone");
        std::fs::write(&path, FAKE_TOMBSTONE_TEXT).map_err(|e| Error::io("fake evidence", e))?;
        std::fs::File::open(&path).map_err(|e| Error::io("fake evidence", e))
    }
    fn prepare_userdata(&self, progress: &mut dyn FnMut(Progress)) -> Result<PrepareOutcome> {
        {
            let mut s = self.state.lock().unwrap();
            Self::take_failure(&mut s)?;
        }
        for done in [0, 21 * 2048, 51 * 2048] {
            progress(Progress {
                step: "merging rewind-userdata".into(),
                partition: "userdata".into(),
                done_sectors: done,
                total_sectors: 51 * 2048,
            });
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut s = self.state.lock().unwrap();
        if s.phase == Phase::Armed {
            s.phase = Phase::Checkpointing;
            s.attempt = 1;
            self.record(&mut s, EventKind::Attempt, "");
        }
        Ok(Self::outcome(&s))
    }
    fn supports(&self) -> Supports {
        Supports { block: true, file: false, marks_slot: self.state.lock().unwrap().marks_slot }
    }
    fn status(&self) -> StatusReport {
        Self::report(&self.state.lock().unwrap())
    }
    fn history(&self) -> Vec<Event> {
        self.state.lock().unwrap().history.clone()
    }
    fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }
    fn poll_space(&self) -> Result<()> {
        Ok(())
    }
}

/// The real service with a fake core, on a socket in a temp dir that any
/// uid can reach (the uid tests connect as an unprivileged user).
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub core: Arc<FakeCore>,
    pub tcp_addr: Option<std::net::SocketAddr>,
    shutdown: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    _file: SocketFile,
}

impl TestServer {
    /// Must run inside a multi-thread tokio runtime.
    pub async fn start(policy: Policy, with_tcp: bool) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("rewindd.sock");
        let (unix, file) = bind_unix(&socket, 0o666).expect("bind test socket");
        let tcp =
            if with_tcp { Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind tcp")) } else { None };
        let tcp_addr = tcp.as_ref().map(|l| l.local_addr().unwrap());
        let core = FakeCore::new();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let service = CheckpointService::new(core.clone() as Arc<dyn CheckpointCore>, policy, shutdown_rx.clone());
        let task = tokio::spawn(async move {
            server::serve(service, unix, tcp, shutdown_rx).await.expect("server runs");
        });
        TestServer { dir, socket, core, tcp_addr, shutdown, task: Some(task), _file: file }
    }

    pub fn default_policy() -> Policy {
        Policy { allowed_uids: vec![0, 1000], tcp_trusted: false }
    }

    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task).await.expect("server stops within 10 s").unwrap();
        }
    }

    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

/// Output of a finished binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n==== stdout ====\n{}==== stderr ====\n{}====", self.code, self.stdout, self.stderr)
    }
}

pub fn rewindctl_path() -> &'static str {
    env!("CARGO_BIN_EXE_rewindctl")
}

pub fn rewindd_path() -> &'static str {
    env!("CARGO_BIN_EXE_rewindd")
}

/// Runs rewindctl against `socket` (optionally as another uid).
pub async fn rewindctl(socket: &Path, uid: Option<u32>, args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(rewindctl_path());
    cmd.arg("--socket").arg(socket).args(args).env_remove("REWIND_SOCKET").kill_on_drop(true);
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    run(cmd).await
}

pub async fn run(mut cmd: tokio::process::Command) -> Run {
    let out = tokio::time::timeout(COMMAND_TIMEOUT, cmd.output())
        .await
        .expect("command finished in time")
        .expect("command spawned");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
