//! The gRPC edge of rewindd (`rewind.v1.Checkpoint`). Each handler: a
//! deadline watch, the caller check for mutating calls, one call into the
//! core on tokio's blocking pool, the mapping. No dm, file or mount code
//! here: that is the engine's.
//!
//! The service talks to the core through [`CheckpointCore`], which
//! [`Engine`] implements; tests put a fake behind it.

pub mod admission;
pub mod authority;
pub mod deadline;
pub mod mapping;
pub mod server;
pub mod transport;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use rewind_proto::v1 as pb;
use rewind_proto::v1::checkpoint_server::Checkpoint;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{TcpConnectInfo, UdsConnectInfo};
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::engine::{Engine, Notice};
use crate::error::{Error, Result};
use crate::types::ErrorKind;
use crate::types::{AttemptEvidence, Budget, Event, PrepareOutcome, Progress, SealOutcome, StatusReport, Supports};
use deadline::WatchPoint;
use mapping::{status_for, to_status};

/// Largest `attempts` accepted by StartCheckpoint. Each attempt is a full
/// boot; more than this is a mistake (a byte count, a negative number).
pub const MAX_ATTEMPTS: u32 = 100;
/// Longest `reason` accepted: reasons are kept in the bounded history of
/// the state record on /metadata, which is small.
pub const MAX_REASON_BYTES: usize = 1024;
/// WatchStatus periods below this are raised to it: each status is a call
/// into the core.
pub const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// ReadEvidence sends a kept file in chunks of this size.
pub const EVIDENCE_CHUNK: usize = 64 << 10;

/// What the service needs from the core: [`Engine`]'s API, as a trait so the
/// service can be tested against a fake. Blocking, thread-safe.
pub trait CheckpointCore: Send + Sync + 'static {
    fn start_checkpoint(&self, budget: Budget, reason: &str, renew: bool) -> Result<StatusReport>;
    fn needs_checkpoint(&self, this_boot: bool) -> bool;
    fn needs_rollback(&self) -> bool;
    fn is_checkpointing(&self) -> bool;
    fn commit(&self, reason: &str) -> Result<Duration>;
    fn abort(&self, reason: &str, keep_retrying: bool, reboot: bool) -> Result<StatusReport>;
    fn prepare_userdata(&self, progress: &mut dyn FnMut(Progress)) -> Result<PrepareOutcome>;
    fn mark_boot_attempt(&self) -> Result<PrepareOutcome>;
    fn prepare_checkpoint(&self) -> Result<()>;
    fn restore_checkpoint(&self, device: &str, progress: &mut dyn FnMut(Progress)) -> Result<PrepareOutcome>;
    fn reset_checkpoint(&self) -> Result<()>;
    fn seal_free_map(&self) -> Result<Vec<SealOutcome>>;
    fn supports(&self) -> Supports;
    fn status(&self) -> StatusReport;
    /// A WatchStatus tick's status: may reuse a recent reading of costly
    /// counters (the bytes written into free space), since ticks come as
    /// often as every 100 ms.
    fn watch_status(&self) -> StatusReport {
        self.status()
    }
    fn history(&self) -> Vec<Event>;
    /// What is kept of this checkpoint's attempts, for GetHistory.
    fn evidence(&self) -> Result<Vec<AttemptEvidence>>;
    fn attempt_evidence(&self, attempt: u32, previous: bool) -> Result<AttemptEvidence>;
    fn open_evidence(&self, attempt: u32, name: &str, previous: bool) -> Result<std::fs::File>;
    fn subscribe(&self) -> broadcast::Receiver<Notice>;
    fn poll_space(&self) -> Result<()>;
}

impl CheckpointCore for Engine {
    fn start_checkpoint(&self, budget: Budget, reason: &str, renew: bool) -> Result<StatusReport> {
        Engine::start_checkpoint(self, budget, reason, renew)
    }
    fn needs_checkpoint(&self, this_boot: bool) -> bool {
        Engine::needs_checkpoint(self, this_boot)
    }
    fn needs_rollback(&self) -> bool {
        Engine::needs_rollback(self)
    }
    fn is_checkpointing(&self) -> bool {
        Engine::is_checkpointing(self)
    }
    fn commit(&self, reason: &str) -> Result<Duration> {
        Engine::commit(self, reason)
    }
    fn abort(&self, reason: &str, keep_retrying: bool, reboot: bool) -> Result<StatusReport> {
        Engine::abort(self, reason, keep_retrying, reboot)
    }
    fn prepare_userdata(&self, progress: &mut dyn FnMut(Progress)) -> Result<PrepareOutcome> {
        Engine::prepare_userdata(self, progress)
    }
    fn mark_boot_attempt(&self) -> Result<PrepareOutcome> {
        Engine::mark_boot_attempt(self)
    }
    fn prepare_checkpoint(&self) -> Result<()> {
        Engine::prepare_checkpoint(self)
    }
    fn restore_checkpoint(&self, device: &str, progress: &mut dyn FnMut(Progress)) -> Result<PrepareOutcome> {
        Engine::restore_checkpoint(self, device, progress)
    }
    fn reset_checkpoint(&self) -> Result<()> {
        Engine::reset_checkpoint(self)
    }
    fn seal_free_map(&self) -> Result<Vec<SealOutcome>> {
        Engine::seal_free_map(self)
    }
    fn evidence(&self) -> Result<Vec<AttemptEvidence>> {
        Engine::evidence(self, false)
    }
    fn attempt_evidence(&self, attempt: u32, previous: bool) -> Result<AttemptEvidence> {
        Engine::attempt_evidence(self, attempt, previous)
    }
    fn open_evidence(&self, attempt: u32, name: &str, previous: bool) -> Result<std::fs::File> {
        Engine::open_evidence(self, attempt, name, previous)
    }
    fn supports(&self) -> Supports {
        Engine::supports(self)
    }
    fn status(&self) -> StatusReport {
        Engine::status(self)
    }
    fn watch_status(&self) -> StatusReport {
        Engine::watch_status(self)
    }
    fn history(&self) -> Vec<Event> {
        Engine::history(self)
    }
    fn subscribe(&self) -> broadcast::Receiver<Notice> {
        Engine::subscribe(self)
    }
    fn poll_space(&self) -> Result<()> {
        Engine::poll_space(self)
    }
}

/// Who may call mutating RPCs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Unix-socket callers whose SO_PEERCRED uid is in this list.
    pub allowed_uids: Vec<u32>,
    /// TCP callers (no uid; test guests only).
    pub tcp_trusted: bool,
}

impl Policy {
    pub fn from_config(config: &Config) -> Policy {
        Policy { allowed_uids: config.allowed_uids.clone(), tcp_trusted: config.tcp_trusted }
    }
}

/// The caller of one request, from the connection it came on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Unix socket with peer credentials.
    Uid(u32),
    /// TCP: no credentials.
    Tcp(Option<std::net::SocketAddr>),
    /// Neither (a transport without connect info): never trusted.
    Unknown,
}

impl Caller {
    pub fn of<T>(request: &Request<T>) -> Caller {
        if let Some(info) = request.extensions().get::<UdsConnectInfo>() {
            return match info.peer_cred {
                Some(cred) => Caller::Uid(cred.uid()),
                None => Caller::Unknown,
            };
        }
        if let Some(info) = request.extensions().get::<TcpConnectInfo>() {
            return Caller::Tcp(info.remote_addr());
        }
        Caller::Unknown
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Uid(uid) => write!(f, "uid {uid}"),
            Caller::Tcp(Some(addr)) => write!(f, "TCP caller {addr}"),
            Caller::Tcp(None) => write!(f, "TCP caller"),
            Caller::Unknown => write!(f, "caller without credentials"),
        }
    }
}

/// The `rewind.v1.Checkpoint` service.
#[derive(Clone)]
pub struct CheckpointService {
    core: Arc<dyn CheckpointCore>,
    policy: Arc<Policy>,
    /// Becomes true at shutdown: long streams end so the server can stop.
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl CheckpointService {
    pub fn new(core: Arc<dyn CheckpointCore>, policy: Policy, shutdown: tokio::sync::watch::Receiver<bool>) -> Self {
        CheckpointService { core, policy: Arc::new(policy), shutdown }
    }

    /// PERMISSION_DENIED naming the caller unless the policy allows it.
    fn authorize(&self, rpc: &str, caller: &Caller) -> std::result::Result<(), Status> {
        let allowed = match caller {
            Caller::Uid(uid) => self.policy.allowed_uids.contains(uid),
            Caller::Tcp(_) => self.policy.tcp_trusted,
            Caller::Unknown => false,
        };
        if allowed {
            return Ok(());
        }
        let why = match caller {
            Caller::Uid(_) => format!("allowed uids: {:?}", self.policy.allowed_uids),
            Caller::Tcp(_) => "TCP callers are not trusted: tcp_trusted = false".to_string(),
            Caller::Unknown => "the connection carries no peer credentials".to_string(),
        };
        Err(to_status(rpc, &Error::PermissionDenied(format!("{caller} may not call {rpc} ({why})"))))
    }

    /// Runs `f` with the core on the blocking pool. A panic in the core
    /// becomes INTERNAL for this call instead of taking the daemon down.
    async fn blocking<R, F>(&self, rpc: &'static str, f: F) -> std::result::Result<R, Status>
    where
        R: Send + 'static,
        F: FnOnce(&dyn CheckpointCore) -> R + Send + 'static,
    {
        let core = Arc::clone(&self.core);
        run_blocking(rpc, core, f).await
    }
}

async fn run_blocking<R, F>(rpc: &'static str, core: Arc<dyn CheckpointCore>, f: F) -> std::result::Result<R, Status>
where
    R: Send + 'static,
    F: FnOnce(&dyn CheckpointCore) -> R + Send + 'static,
{
    tokio::task::spawn_blocking(move || f(core.as_ref())).await.map_err(|join| {
        tracing::error!("{rpc}: the core call did not finish: {join}");
        status_for(ErrorKind::Internal, format!("{rpc}: the core call did not finish: {join}"))
    })
}

fn check_reason(rpc: &str, reason: &str) -> std::result::Result<(), Status> {
    if reason.len() > MAX_REASON_BYTES {
        let err = Error::InvalidArgument(format!("reason is {} bytes, at most {MAX_REASON_BYTES}", reason.len()));
        return Err(to_status(rpc, &err));
    }
    Ok(())
}

type RpcResult<T> = std::result::Result<Response<T>, Status>;

#[tonic::async_trait]
impl Checkpoint for CheckpointService {
    async fn start_checkpoint(
        &self,
        request: Request<pb::StartCheckpointRequest>,
    ) -> RpcResult<pb::StartCheckpointResponse> {
        const RPC: &str = "StartCheckpoint";
        let _watch = WatchPoint::new(RPC, deadline::START);
        let caller = Caller::of(&request);
        self.authorize(RPC, &caller)?;
        let req = request.into_inner();
        let budget = match (req.unlimited, req.attempts) {
            (true, 0) => Budget::Unlimited,
            (true, n) => {
                let err = Error::InvalidArgument(format!("attempts must be 0 with unlimited, got {n}"));
                return Err(to_status(RPC, &err));
            }
            (false, n) if n == 0 || n > MAX_ATTEMPTS => {
                let err = Error::InvalidArgument(format!("attempts must be in 1..={MAX_ATTEMPTS}, got {n}"));
                return Err(to_status(RPC, &err));
            }
            (false, n) => Budget::Attempts(n),
        };
        check_reason(RPC, &req.reason)?;
        tracing::info!("{RPC}: {caller}: {} renew {} reason {:?}", budget.describe(), req.renew, req.reason);
        let report = self
            .blocking(RPC, move |core| core.start_checkpoint(budget, &req.reason, req.renew))
            .await?
            .map_err(|e| to_status(RPC, &e))?;
        Ok(Response::new(pb::StartCheckpointResponse { status: Some(mapping::status_to_pb(&report)) }))
    }

    async fn needs_checkpoint(&self, request: Request<pb::NeedsCheckpointRequest>) -> RpcResult<pb::BoolResponse> {
        const RPC: &str = "NeedsCheckpoint";
        // The slot query may wait for the boot HAL.
        let _watch = WatchPoint::new(RPC, deadline::SLOT);
        let this_boot = request.into_inner().this_boot;
        let value = self.blocking(RPC, move |core| core.needs_checkpoint(this_boot)).await?;
        Ok(Response::new(pb::BoolResponse { value }))
    }

    async fn needs_rollback(&self, _request: Request<pb::NeedsRollbackRequest>) -> RpcResult<pb::BoolResponse> {
        const RPC: &str = "NeedsRollback";
        let _watch = WatchPoint::new(RPC, deadline::QUICK);
        let value = self.blocking(RPC, |core| core.needs_rollback()).await?;
        Ok(Response::new(pb::BoolResponse { value }))
    }

    async fn is_checkpointing(&self, _request: Request<pb::IsCheckpointingRequest>) -> RpcResult<pb::BoolResponse> {
        const RPC: &str = "IsCheckpointing";
        let _watch = WatchPoint::new(RPC, deadline::QUICK);
        let value = self.blocking(RPC, |core| core.is_checkpointing()).await?;
        Ok(Response::new(pb::BoolResponse { value }))
    }

    async fn commit_changes(&self, request: Request<pb::CommitChangesRequest>) -> RpcResult<pb::CommitChangesResponse> {
        const RPC: &str = "CommitChanges";
        // The live swap is quick; the commit command (the boot HAL) may not be.
        let _watch = WatchPoint::new(RPC, deadline::SLOT);
        let caller = Caller::of(&request);
        self.authorize(RPC, &caller)?;
        let req = request.into_inner();
        check_reason(RPC, &req.reason)?;
        tracing::info!("{RPC}: {caller}: reason {:?}", req.reason);
        let (took, report) = self
            .blocking(RPC, move |core| core.commit(&req.reason).map(|took| (took, core.status())))
            .await?
            .map_err(|e| to_status(RPC, &e))?;
        Ok(Response::new(pb::CommitChangesResponse {
            duration_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            status: Some(mapping::status_to_pb(&report)),
        }))
    }

    async fn abort_changes(&self, request: Request<pb::AbortChangesRequest>) -> RpcResult<pb::AbortChangesResponse> {
        const RPC: &str = "AbortChanges";
        let _watch = WatchPoint::new(RPC, deadline::ABORT);
        let caller = Caller::of(&request);
        self.authorize(RPC, &caller)?;
        let req = request.into_inner();
        check_reason(RPC, &req.reason)?;
        tracing::info!(
            "{RPC}: {caller}: keep_retrying {} reboot {} reason {:?}",
            req.keep_retrying,
            req.reboot,
            req.reason
        );
        let report = self
            .blocking(RPC, move |core| core.abort(&req.reason, req.keep_retrying, req.reboot))
            .await?
            .map_err(|e| to_status(RPC, &e))?;
        Ok(Response::new(pb::AbortChangesResponse { status: Some(mapping::status_to_pb(&report)) }))
    }

    type PrepareUserdataStream = ReceiverStream<std::result::Result<pb::PrepareUserdataProgress, Status>>;

    async fn prepare_userdata(
        &self,
        request: Request<pb::PrepareUserdataRequest>,
    ) -> RpcResult<Self::PrepareUserdataStream> {
        const RPC: &str = "PrepareUserdata";
        let caller = Caller::of(&request);
        self.authorize(RPC, &caller)?;
        tracing::info!("{RPC}: {caller}");
        // Progress is lossy (try_send: a slow reader must never stall the
        // boot step); the final message or error is always delivered while
        // the client listens. The step runs to its end even if the client
        // goes away: the boot contract needs it finished, not watched.
        let (tx, rx) = mpsc::channel(32);
        let core = Arc::clone(&self.core);
        tokio::spawn(async move {
            let _watch = WatchPoint::new(RPC, deadline::PREPARE);
            let progress_tx = tx.clone();
            let result = run_blocking(RPC, core, move |core| {
                core.prepare_userdata(&mut |p: Progress| {
                    tracing::debug!("{RPC}: {} {}: {}/{}", p.step, p.partition, p.done_sectors, p.total_sectors);
                    let _ = progress_tx.try_send(Ok(mapping::progress_to_pb(&p)));
                })
            })
            .await;
            let last = match result {
                Ok(Ok(outcome)) => {
                    tracing::info!(
                        "{RPC}: done: {:?} attempt {} of {}",
                        outcome.phase,
                        outcome.attempt,
                        outcome.attempts
                    );
                    Ok(mapping::outcome_to_pb(&outcome))
                }
                Ok(Err(err)) => Err(to_status(RPC, &err)),
                Err(status) => Err(status),
            };
            // The client may be gone; the outcome is logged above.
            let _ = tx.send(last).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn supports_checkpoint(
        &self,
        _request: Request<pb::SupportsCheckpointRequest>,
    ) -> RpcResult<pb::SupportsCheckpointResponse> {
        const RPC: &str = "SupportsCheckpoint";
        let _watch = WatchPoint::new(RPC, deadline::QUICK);
        let supports = self.blocking(RPC, |core| core.supports()).await?;
        Ok(Response::new(mapping::supports_to_pb(supports)))
    }

    async fn get_status(&self, _request: Request<pb::GetStatusRequest>) -> RpcResult<pb::Status> {
        const RPC: &str = "GetStatus";
        let _watch = WatchPoint::new(RPC, deadline::QUICK);
        let report = self.blocking(RPC, |core| core.status()).await?;
        Ok(Response::new(mapping::status_to_pb(&report)))
    }

    type WatchStatusStream = ReceiverStream<std::result::Result<pb::WatchEvent, Status>>;

    async fn watch_status(&self, request: Request<pb::WatchStatusRequest>) -> RpcResult<Self::WatchStatusStream> {
        const RPC: &str = "WatchStatus";
        let caller = Caller::of(&request);
        let req = request.into_inner();
        let interval = match req.interval_ms {
            0 => None,
            ms => Some(Duration::from_millis(u64::from(ms)).max(MIN_WATCH_INTERVAL)),
        };
        tracing::debug!("{RPC}: {caller}: interval {interval:?}");
        // Subscribe before answering so no event recorded after the call
        // returns is missed.
        let notices = self.blocking(RPC, |core| core.subscribe()).await?;
        let rx = watch::spawn(Arc::clone(&self.core), notices, interval, self.shutdown.clone());
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_history(&self, _request: Request<pb::GetHistoryRequest>) -> RpcResult<pb::History> {
        const RPC: &str = "GetHistory";
        let _watch = WatchPoint::new(RPC, deadline::QUICK);
        let (events, evidence) = self.blocking(RPC, |core| (core.history(), core.evidence())).await?;
        // The history is the record's; evidence that cannot be listed must
        // not hide it.
        let evidence = evidence.unwrap_or_else(|e| {
            tracing::warn!("{RPC}: evidence not listed: {}", crate::types::error_chain(&e));
            Vec::new()
        });
        Ok(Response::new(pb::History {
            events: events.iter().map(mapping::event_to_pb).collect(),
            evidence: evidence.iter().map(mapping::evidence_to_pb).collect(),
        }))
    }

    async fn mark_boot_attempt(&self, request: Request<pb::MarkBootAttemptRequest>) -> RpcResult<pb::AttemptResponse> {
        const RPC: &str = "MarkBootAttempt";
        // After a reset this counts again: a prepare without a merge.
        let _watch = WatchPoint::new(RPC, deadline::ABORT);
        let caller = Caller::of(&request);
        self.authorize(RPC, &caller)?;
        tracing::info!("{RPC}: {caller}");
        let outcome = self.blocking(RPC, |core| core.mark_boot_attempt()).await?.map_err(|e| to_status(RPC, &e))?;
        Ok(Response::new(mapping::attempt_to_pb(&outcome)))
    }

    async fn prepare_checkpoint(&self, request: Request<pb::PrepareCheckpointRequest>) -> RpcResult<pb::Status> {
        const RPC: &str = "PrepareCheckpoint";
        let _watch = WatchPoint::new(RPC, deadline::QUICK);
        let caller = Caller::of(&request);
        self.authorize(RPC, &caller)?;
        tracing::info!("{RPC}: {caller}");
        let report = self
            .blocking(RPC, |core| core.prepare_checkpoint().map(|()| core.status()))
            .await?
            .map_err(|e| to_status(RPC, &e))?;
        Ok(Response::new(mapping::status_to_pb(&report)))
    }

    type RestoreCheckpointStream = ReceiverStream<std::result::Result<pb::PrepareUserdataProgress, Status>>;

    async fn restore_checkpoint(
        &self,
        request: Request<pb::RestoreCheckpointRequest>,
    ) -> RpcResult<Self::RestoreCheckpointStream> {
        const RPC: &str = "RestoreCheckpoint";
        let caller = Caller::of(&request);
        self.authorize(RPC, &caller)?;
        let device = request.into_inner().device;
        check_reason(RPC, &device)?;
        tracing::info!("{RPC}: {caller}: {device:?}");
        let (tx, rx) = mpsc::channel(32);
        let core = Arc::clone(&self.core);
        // As PrepareUserdata: runs to its end even if the client leaves.
        tokio::spawn(async move {
            let _watch = WatchPoint::new(RPC, deadline::PREPARE);
            let progress_tx = tx.clone();
            let result = run_blocking(RPC, core, move |core| {
                core.restore_checkpoint(&device, &mut |p: Progress| {
                    let _ = progress_tx.try_send(Ok(mapping::progress_to_pb(&p)));
                })
            })
            .await;
            let last = match result {
                Ok(Ok(outcome)) => Ok(mapping::outcome_to_pb(&outcome)),
                Ok(Err(err)) => Err(to_status(RPC, &err)),
                Err(status) => Err(status),
            };
            let _ = tx.send(last).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn reset_checkpoint(&self, request: Request<pb::ResetCheckpointRequest>) -> RpcResult<pb::Status> {
        const RPC: &str = "ResetCheckpoint";
        let _watch = WatchPoint::new(RPC, deadline::QUICK);
        let caller = Caller::of(&request);
        self.authorize(RPC, &caller)?;
        tracing::info!("{RPC}: {caller}");
        let report = self
            .blocking(RPC, |core| core.reset_checkpoint().map(|()| core.status()))
            .await?
            .map_err(|e| to_status(RPC, &e))?;
        Ok(Response::new(mapping::status_to_pb(&report)))
    }

    async fn seal_free_map(&self, request: Request<pb::SealFreeMapRequest>) -> RpcResult<pb::SealFreeMapResponse> {
        const RPC: &str = "SealFreeMap";
        // Reads the allocation records and the journal twice: seconds.
        let _watch = WatchPoint::new(RPC, deadline::START);
        let caller = Caller::of(&request);
        self.authorize(RPC, &caller)?;
        tracing::info!("{RPC}: {caller}");
        let outcomes = self.blocking(RPC, |core| core.seal_free_map()).await?.map_err(|e| to_status(RPC, &e))?;
        Ok(Response::new(pb::SealFreeMapResponse {
            partitions: outcomes
                .into_iter()
                .map(|o| pb::SealedPartition { name: o.partition, sealed: o.sealed, detail: o.detail })
                .collect(),
        }))
    }

    async fn get_evidence(&self, request: Request<pb::GetEvidenceRequest>) -> RpcResult<pb::AttemptEvidence> {
        const RPC: &str = "GetEvidence";
        let _watch = WatchPoint::new(RPC, deadline::QUICK);
        let caller = Caller::of(&request);
        self.authorize(RPC, &caller)?;
        let req = request.into_inner();
        let kept = self
            .blocking(RPC, move |core| core.attempt_evidence(req.attempt, req.previous))
            .await?
            .map_err(|e| to_status(RPC, &e))?;
        Ok(Response::new(mapping::evidence_to_pb(&kept)))
    }

    type ReadEvidenceStream = ReceiverStream<std::result::Result<pb::EvidenceChunk, Status>>;

    async fn read_evidence(&self, request: Request<pb::ReadEvidenceRequest>) -> RpcResult<Self::ReadEvidenceStream> {
        const RPC: &str = "ReadEvidence";
        let caller = Caller::of(&request);
        self.authorize(RPC, &caller)?;
        let req = request.into_inner();
        check_reason(RPC, &req.name)?;
        tracing::info!("{RPC}: {caller}: attempt {} {:?}", req.attempt, req.name);
        let file = self
            .blocking(RPC, move |core| core.open_evidence(req.attempt, &req.name, req.previous))
            .await?
            .map_err(|e| to_status(RPC, &e))?;
        let (tx, rx) = mpsc::channel(4);
        // Plain file reads on the blocking pool; the engine is not held.
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut file = file;
            let mut buf = vec![0u8; EVIDENCE_CHUNK];
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx.blocking_send(Ok(pb::EvidenceChunk { data: buf[..n].to_vec() })).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let err = Error::io("read a kept evidence file", e);
                        let _ = tx.blocking_send(Err(to_status(RPC, &err)));
                        break;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
