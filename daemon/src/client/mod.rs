//! rewindctl: a thin, vdc-style client of rewindd. Flags, the connection
//! (Unix socket or TCP), output for people and `--json`, and the exit codes
//! scripts and init rely on ([`exit`]). `rewindctl checkpoint <cmd>` speaks
//! vdc's checkpoint commands with vdc's exit codes ([`vdc`]); `rewindctl
//! evidence` lists and extracts what was kept of an attempt ([`evidence`]).

mod bars;
mod evidence;
pub mod vdc;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hyper_util::rt::TokioIo;
use rewind_proto::v1 as pb;
use rewind_proto::v1::checkpoint_client::CheckpointClient;
use serde_json::{json, Value};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::service::mapping::{backend_name_i32, phase_name_i32, slot_name_i32, ERROR_KIND_KEY};
use crate::types::ErrorKind;

/// rewindctl's exit statuses. Booleans: 0 = true, 1 = false, which is the
/// opposite of `vdc checkpoint` (vdc returns 1 for true); shell `if` reads
/// them naturally: `if rewindctl needs-rollback; then ...`.
pub mod exit {
    pub const OK: i32 = 0;
    /// A boolean query answered false.
    pub const FALSE: i32 = 1;
    /// Bad command line (clap), or the daemon found an argument invalid.
    pub const USAGE: i32 = 2;
    /// Cannot connect to rewindd (not running, wrong socket), or the
    /// connection broke.
    pub const CONNECT: i32 = 3;
    pub const PERMISSION_DENIED: i32 = 4;
    /// The call does not fit the current phase (e.g. commit with no
    /// checkpoint).
    pub const WRONG_PHASE: i32 = 5;
    /// Checkpointing is unavailable on this machine (no device-mapper, no
    /// checkpointed partition, ...).
    pub const UNAVAILABLE: i32 = 6;
    pub const NO_SPACE: i32 = 7;
    /// rewindd refused to protect data (a safety check failed).
    pub const UNSAFE: i32 = 8;
    /// Anything else (internal error in rewindd, unexpected answer).
    pub const OTHER: i32 = 9;
}

pub const DEFAULT_SOCKET: &str = "/dev/socket/rewindd";

const EXAMPLES: &str = "\
Examples:
  rewindctl start --attempts 3 --reason 'ota build 1234'
  rewindctl start --unlimited --reason 'ota'   # until commit or abort
  rewindctl --wait 10 prepare-userdata    # init, before mount_all /data
  rewindctl commit --reason boot-completed
  rewindctl abort --reason apexd_initiated --reboot   # next boot: reboot,apexd_initiated
  if rewindctl needs-rollback; then echo 'fall back to the old slot'; fi
  rewindctl status --json
  rewindctl --timeout 10 status   # give up after 10 s (default 120) if rewindd does not answer
  rewindctl watch --until-phase idle
  umount /data && rewindctl seal-free-map   # shutdown before attempt 1, metadata encryption
  rewindctl seal-free-map --after-unmount 30 # the same, started before init unmounts /data
  rewindctl --tcp 127.0.0.1:50051 history
  rewindctl evidence 2 --extract /data/local/tmp/attempt-2
  rewindctl checkpoint startCheckpoint -1      # vdc's commands, vdc's exit codes
  rewindctl checkpoint needsCheckpoint; echo $?   # 1 = true, as vdc

Exit status:
  0 success, or true for needs-checkpoint / needs-rollback / is-checkpointing /
    supports (note: the opposite of vdc, where 1 means true)
  1 false for those queries
  2 usage error (bad flags, or rewindd found an argument invalid)
  3 cannot connect to rewindd (not running? wrong --socket?)
  4 permission denied (mutating calls: root and system only by default)
  5 wrong phase (e.g. commit while no checkpoint runs)
  6 checkpointing unavailable on this machine
  7 not enough space for the COW store
  8 refused for safety (a check that protects userdata failed)
  9 other error
`rewindctl checkpoint <cmd>` uses vdc's codes instead: 1 = true, 0 = false
or success, 22 bad arguments or rewindd unreachable, 25 the call failed
(`rewindctl checkpoint --help` lists the commands).";

#[derive(Debug, Parser)]
#[command(name = "rewindctl", version, about = "Control rewindd: block-level userdata checkpoints across A/B updates", after_help = EXAMPLES)]
pub struct Cli {
    /// rewindd's Unix socket.
    #[arg(long, global = true, env = "REWIND_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
    /// Talk to rewindd over TCP instead (test guests: rewindd --listen-tcp).
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub tcp: Option<String>,
    /// Keep trying to connect for up to this many seconds (init: rewindd may
    /// still be starting when the next command runs).
    #[arg(long, global = true, default_value_t = 0, value_name = "SECS")]
    pub wait: u64,
    /// Give up on a call rewindd has not answered within this many seconds
    /// (a streamed call, such as prepare-userdata's progress, must start
    /// within it). A stuck daemon never hangs the caller, or the boot.
    #[arg(long, global = true, default_value_t = DEFAULT_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..=86_400), value_name = "SECS")]
    pub timeout: u64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a checkpoint: the next `attempts` boots are discarded unless one commits.
    Start {
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100), required_unless_present = "unlimited", conflicts_with = "unlimited")]
        attempts: Option<u32>,
        /// Checkpoint every boot until a commit or an abort: never roll back by count.
        #[arg(long)]
        unlimited: bool,
        /// If a checkpoint is already pending, give it this budget (counted
        /// after the current boot) instead of failing.
        #[arg(long)]
        renew: bool,
        /// Recorded in the history.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Exit 0 if a checkpoint is pending (armed or checkpointing) or the boot
    /// slot is not marked successful, else 1.
    NeedsCheckpoint,
    /// Exit 0 if userdata was rolled back and the old slot should boot, else 1.
    NeedsRollback,
    /// Exit 0 if this boot is a checkpointed attempt, else 1.
    IsCheckpointing,
    /// Keep this boot's changes (live, constant time).
    Commit {
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Discard this attempt; without --keep-retrying the next boot rolls back.
    Abort {
        #[arg(long, default_value = "")]
        reason: String,
        /// Leave the remaining attempts (only this one is discarded).
        #[arg(long)]
        keep_retrying: bool,
        /// Then reboot, with the reason as the next boot's reason (reboot,<reason>).
        #[arg(long)]
        reboot: bool,
    },
    /// The boot-time step (init, before /data is mounted); prints merge progress.
    PrepareUserdata,
    /// At the clean shutdown before the first attempt, once /data is
    /// unmounted (metadata encryption): read the baseline's free map
    /// through the crypt layer and seal it, so the arms can use it.
    SealFreeMap {
        /// First wait up to SECS for --mount-point to be unmounted or
        /// remounted read-only (init's `on shutdown` starts this before it
        /// unmounts /data); outside the shutdown before the first attempt
        /// there is then nothing to do, and that is success.
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
        after_unmount: Option<u64>,
        /// The mount point --after-unmount waits for.
        #[arg(long, default_value = "/data", value_name = "DIR")]
        mount_point: PathBuf,
    },
    /// Show the checkpoint state.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Follow events and status until Ctrl-C (or --until-phase).
    Watch {
        /// Period of status lines, milliseconds (0: events only).
        #[arg(long, default_value_t = 1000)]
        interval_ms: u32,
        /// Exit 0 as soon as the status shows this phase.
        #[arg(long, value_parser = ["idle", "armed", "checkpointing", "rolling-back", "committing", "rolled-back"])]
        until_phase: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show the recorded events.
    History {
        #[arg(long)]
        json: bool,
    },
    /// Which checkpoint kinds the fstab asks for; exit 0 if any, else 1.
    Supports {
        #[arg(long)]
        json: bool,
    },
    /// List (or extract) what was kept of an attempt under /metadata/rewind/attempts/<n>.
    Evidence {
        /// The attempt's number (as `rewindctl history` shows it).
        attempt: u32,
        /// The previous checkpoint's attempts instead of this one's.
        #[arg(long)]
        previous: bool,
        /// Copy the kept files into this directory (created), under their names.
        #[arg(long, value_name = "DIR")]
        extract: Option<PathBuf>,
        /// Only this kept file (with --extract; `-` as DIR writes it to stdout).
        #[arg(long, value_name = "NAME", requires = "extract")]
        file: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// vdc's checkpoint commands, with vdc's exit codes (1 = true, 0 = false
    /// or success, 22 bad arguments or rewindd unreachable, 25 the call
    /// failed): supportsCheckpoint, supportsBlockCheckpoint,
    /// supportsFileCheckpoint, startCheckpoint N (-1: until commit),
    /// needsCheckpoint, needsRollback, isCheckpointing, markBootAttempt,
    /// prepareCheckpoint, restoreCheckpoint DEVICE, commitChanges,
    /// abortChanges MSG RETRY, resetCheckpoint.
    #[command(after_help = vdc::HELP)]
    Checkpoint {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND [ARGS]")]
        args: Vec<String>,
    },
}

/// Where rewindd is.
#[derive(Debug, Clone)]
pub enum Target {
    Unix(PathBuf),
    Tcp(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Unix(path) => write!(f, "{}", path.display()),
            Target::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

/// An error answer of rewindd, as received.
#[derive(Debug)]
pub struct Refusal {
    pub code: tonic::Code,
    /// The daemon's error kind, when the answer came from rewindd itself
    /// (transport failures carry none).
    pub kind: Option<ErrorKind>,
    pub message: String,
}

impl Refusal {
    pub fn from_status(status: &tonic::Status) -> Refusal {
        let kind = status.metadata().get(ERROR_KIND_KEY).and_then(|v| v.to_str().ok()).and_then(ErrorKind::from_name);
        Refusal { code: status.code(), kind, message: status.message().to_string() }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            Some(kind) => write!(f, "rewindd answered {:?} ({}): {}", self.code, kind.as_str(), self.message),
            None => write!(f, "{:?}: {}", self.code, self.message),
        }
    }
}

impl std::error::Error for Refusal {}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("Cannot connect to rewindd at {target}")]
    Connect {
        target: Target,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{rpc} failed")]
    Rpc {
        rpc: &'static str,
        #[source]
        refusal: Refusal,
    },
    #[error("rewindd ended the stream before {what} (shutting down?)")]
    StreamEnded { what: String },
    #[error("Cannot start the client runtime")]
    Runtime(#[source] std::io::Error),
    #[error("Cannot write the extracted evidence")]
    Local(#[source] std::io::Error),
}

impl ClientError {
    fn rpc(rpc: &'static str, status: tonic::Status) -> ClientError {
        ClientError::Rpc { rpc, refusal: Refusal::from_status(&status) }
    }

    /// The exit status for this error (see [`exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Connect { .. } | ClientError::StreamEnded { .. } => exit::CONNECT,
            ClientError::Runtime(_) | ClientError::Local(_) => exit::OTHER,
            ClientError::Rpc { refusal, .. } => exit_code_of(refusal),
        }
    }

    /// What to do about it, for people.
    pub fn hint(&self) -> Option<String> {
        match self {
            ClientError::Connect { target: Target::Unix(path), .. } => Some(format!(
                "Is rewindd running? On Android: `start rewindd`; elsewhere: `rewindd --socket {}`. \
                 Another socket: --socket PATH or REWIND_SOCKET.",
                path.display()
            )),
            ClientError::Connect { target: Target::Tcp(addr), .. } => {
                Some(format!("Is rewindd running with `--listen-tcp {addr}`?"))
            }
            _ => None,
        }
    }
}

/// Exit status of an error answer: by the daemon's kind when it sent one,
/// else by the gRPC code (an UNAVAILABLE without a kind is the transport:
/// the connection failed or broke).
pub fn exit_code_of(refusal: &Refusal) -> i32 {
    if let Some(kind) = refusal.kind {
        return match kind {
            ErrorKind::InvalidArgument => exit::USAGE,
            ErrorKind::WrongPhase => exit::WRONG_PHASE,
            ErrorKind::Unavailable => exit::UNAVAILABLE,
            ErrorKind::NoSpace => exit::NO_SPACE,
            ErrorKind::Unsafe => exit::UNSAFE,
            ErrorKind::PermissionDenied => exit::PERMISSION_DENIED,
            ErrorKind::Internal => exit::OTHER,
        };
    }
    match refusal.code {
        tonic::Code::InvalidArgument => exit::USAGE,
        tonic::Code::PermissionDenied => exit::PERMISSION_DENIED,
        tonic::Code::FailedPrecondition => exit::WRONG_PHASE,
        tonic::Code::ResourceExhausted => exit::NO_SPACE,
        tonic::Code::DataLoss => exit::UNSAFE,
        tonic::Code::Unavailable => exit::CONNECT,
        _ => exit::OTHER,
    }
}

/// Prints the numbered cause chain (cloud-hypervisor style) to stderr.
pub fn print_error(err: &ClientError) {
    let mut lines = vec![err.to_string()];
    let mut cur = std::error::Error::source(err);
    while let Some(cause) = cur {
        lines.push(cause.to_string());
        cur = cause.source();
    }
    eprintln!("rewindctl: error:");
    for (i, line) in lines.iter().enumerate() {
        eprintln!("  {i}: {line}");
    }
    if let Some(hint) = err.hint() {
        eprintln!("{hint}");
    }
}

/// rewindctl's default `--timeout`: far above any unary call (the slowest,
/// creating the COW files, takes seconds), far below a boot watchdog.
pub const DEFAULT_TIMEOUT_SECS: u64 = 120;

/// Connects to rewindd with the default call timeout.
pub async fn connect(target: &Target) -> Result<CheckpointClient<Channel>, ClientError> {
    connect_with_timeout(target, Duration::from_secs(DEFAULT_TIMEOUT_SECS)).await
}

/// Connects to rewindd; every call on the client has `timeout` as its
/// deadline (sent as grpc-timeout too, so rewindd drops work no one waits
/// for).
pub async fn connect_with_timeout(
    target: &Target,
    timeout: Duration,
) -> Result<CheckpointClient<Channel>, ClientError> {
    let connect_err =
        |source: Box<dyn std::error::Error + Send + Sync>| ClientError::Connect { target: target.clone(), source };
    let channel = match target {
        Target::Unix(path) => {
            // Probe first: the plain io error ("No such file or directory",
            // "Connection refused") says more than the transport's wrapper.
            tokio::net::UnixStream::connect(path).await.map_err(|e| connect_err(Box::new(e)))?;
            let path = path.clone();
            // The URI is required by the API and unused: the connector
            // dials the socket.
            Endpoint::from_static("http://[::]:50051")
                .timeout(timeout)
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
                }))
                .await
                .map_err(|e| connect_err(Box::new(e)))?
        }
        Target::Tcp(addr) => Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| connect_err(Box::new(e)))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            .connect()
            .await
            .map_err(|e| connect_err(Box::new(e)))?,
    };
    Ok(CheckpointClient::new(channel))
}

/// Runs one command; returns the exit status.
pub fn run(cli: Cli) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            print_error(&ClientError::Runtime(e));
            return exit::OTHER;
        }
    };
    let target = match &cli.tcp {
        Some(addr) => Target::Tcp(addr.clone()),
        None => Target::Unix(cli.socket.clone()),
    };
    let dial = Dial { wait: Duration::from_secs(cli.wait), timeout: Duration::from_secs(cli.timeout) };
    if let Command::Checkpoint { args } = cli.command {
        return runtime.block_on(vdc::run(&target, dial, &args));
    }
    match runtime.block_on(execute(&target, dial, cli.command)) {
        Ok(code) => code,
        Err(err) => {
            print_error(&err);
            err.exit_code()
        }
    }
}

fn bool_exit(value: bool) -> i32 {
    println!("{value}");
    if value {
        exit::OK
    } else {
        exit::FALSE
    }
}

/// How rewindctl reaches rewindd: how long to keep trying to connect, and
/// each call's deadline.
#[derive(Debug, Clone, Copy)]
pub struct Dial {
    pub wait: Duration,
    pub timeout: Duration,
}

/// [`connect_with_timeout`], retried every 100 ms until `wait` has passed.
pub async fn connect_waiting(target: &Target, dial: Dial) -> Result<CheckpointClient<Channel>, ClientError> {
    let deadline = tokio::time::Instant::now() + dial.wait;
    loop {
        match connect_with_timeout(target, dial.timeout).await {
            Ok(client) => return Ok(client),
            Err(err) if tokio::time::Instant::now() >= deadline => return Err(err),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Calls of PrepareUserdata made at most: the first and the ones after
/// rewindd died under it.
const PREPARE_CALLS: u32 = 4;

/// `prepare-userdata`, surviving a rewindd that dies during the call. init
/// restarts rewindd (rewindd.rc), and PrepareUserdata may be called again
/// in the same boot (it rolls forward what the dead call left and changes
/// nothing twice), so a call rewindd did not answer (the stream broke or
/// ended without the outcome) is made again on a new connection, waiting
/// up to `--wait` for the restarted daemon. Returning instead would let
/// init mount /data over whatever the dead call left half done.
async fn prepare_userdata(
    target: &Target,
    dial: Dial,
    mut client: CheckpointClient<Channel>,
) -> Result<i32, ClientError> {
    let mut call = 1;
    loop {
        match prepare_userdata_once(&mut client).await {
            Err(e) if call < PREPARE_CALLS && daemon_went_away(&e) => {
                call += 1;
                eprintln!(
                    "rewindd went away during prepare-userdata ({}); calling again (call {call} of {PREPARE_CALLS})",
                    printable(&error_text(&e))
                );
                client = connect_waiting(target, dial).await?;
            }
            r => return r,
        }
    }
}

/// Whether an error means rewindd stopped answering (killed, crashed)
/// rather than answered: transport failures carry no error kind of
/// rewindd's. A deadline of the caller's own is not retried.
fn daemon_went_away(e: &ClientError) -> bool {
    match e {
        ClientError::StreamEnded { .. } => true,
        ClientError::Rpc { refusal, .. } => refusal.kind.is_none() && refusal.code != tonic::Code::DeadlineExceeded,
        _ => false,
    }
}

/// An error with its sources, on one line.
fn error_text(e: &ClientError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn prepare_userdata_once(client: &mut CheckpointClient<Channel>) -> Result<i32, ClientError> {
    let mut stream = client
        .prepare_userdata(pb::PrepareUserdataRequest {})
        .await
        .map_err(|s| ClientError::rpc("PrepareUserdata", s))?
        .into_inner();
    let mut last_line = String::new();
    loop {
        match stream.message().await.map_err(|s| ClientError::rpc("PrepareUserdata", s))? {
            Some(msg) if msg.done => {
                println!("{}", prepare_outcome_line(&msg));
                return Ok(exit::OK);
            }
            Some(msg) => {
                // Merges report often; print only what changed.
                let line = progress_line(&msg);
                if line != last_line {
                    println!("{line}");
                    last_line = line;
                }
            }
            None => return Err(ClientError::StreamEnded { what: "the final message".into() }),
        }
    }
}

async fn execute(target: &Target, dial: Dial, command: Command) -> Result<i32, ClientError> {
    let mut client = connect_waiting(target, dial).await?;
    match command {
        Command::Start { attempts, unlimited, renew, reason } => {
            let attempts = if unlimited { 0 } else { attempts.unwrap_or(0) };
            let resp = client
                .start_checkpoint(pb::StartCheckpointRequest { attempts, reason, unlimited, renew })
                .await
                .map_err(|s| ClientError::rpc("StartCheckpoint", s))?
                .into_inner();
            if unlimited {
                println!("checkpoint started: every boot until a commit or an abort, counted from the next boot");
            } else {
                println!("checkpoint started: {attempts} attempt(s), counted from the next boot");
            }
            if let Some(status) = resp.status {
                println!("{}", status_summary(&status));
            }
            Ok(exit::OK)
        }
        Command::NeedsCheckpoint => {
            let v = client
                .needs_checkpoint(pb::NeedsCheckpointRequest { this_boot: false })
                .await
                .map_err(|s| ClientError::rpc("NeedsCheckpoint", s))?;
            Ok(bool_exit(v.into_inner().value))
        }
        Command::NeedsRollback => {
            let v = client
                .needs_rollback(pb::NeedsRollbackRequest {})
                .await
                .map_err(|s| ClientError::rpc("NeedsRollback", s))?;
            Ok(bool_exit(v.into_inner().value))
        }
        Command::IsCheckpointing => {
            let v = client
                .is_checkpointing(pb::IsCheckpointingRequest {})
                .await
                .map_err(|s| ClientError::rpc("IsCheckpointing", s))?;
            Ok(bool_exit(v.into_inner().value))
        }
        Command::Commit { reason } => {
            let resp = match client.commit_changes(pb::CommitChangesRequest { reason }).await {
                Ok(r) => r.into_inner(),
                Err(s) => {
                    // init runs `rewindctl commit` at every boot_completed, as
                    // vold's commitChanges: with no checkpoint running there
                    // is nothing to commit, and that is success, not an error.
                    let refusal = Refusal::from_status(&s);
                    if refusal.kind == Some(ErrorKind::WrongPhase) {
                        let status = client
                            .get_status(pb::GetStatusRequest {})
                            .await
                            .map_err(|s| ClientError::rpc("GetStatus", s))?
                            .into_inner();
                        if nothing_to_commit(status.phase) {
                            println!("nothing to commit: {}", status_summary(&status));
                            return Ok(exit::OK);
                        }
                    }
                    return Err(ClientError::rpc("CommitChanges", s));
                }
            };
            println!("committed in {:.3} ms", resp.duration_us as f64 / 1000.0);
            if let Some(status) = resp.status {
                println!("{}", status_summary(&status));
            }
            Ok(exit::OK)
        }
        Command::Abort { reason, keep_retrying, reboot } => {
            let resp = client
                .abort_changes(pb::AbortChangesRequest { reason, keep_retrying, reboot })
                .await
                .map_err(|s| ClientError::rpc("AbortChanges", s))?
                .into_inner();
            println!(
                "aborted{}{}",
                if keep_retrying { " (remaining attempts kept)" } else { "" },
                if reboot { "; rebooting" } else { "" }
            );
            if let Some(status) = resp.status {
                println!("{}", status_summary(&status));
            }
            Ok(exit::OK)
        }
        Command::SealFreeMap { after_unmount, mount_point } => {
            if let Some(secs) = after_unmount {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
                while crate::sys::linux::mounted_writable_from(
                    &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
                    &mount_point,
                ) {
                    if std::time::Instant::now() >= deadline {
                        eprintln!(
                            "{} is still mounted read-write after {secs} s: the free map is not sealed",
                            mount_point.display()
                        );
                        return Ok(exit::OTHER);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
            let r = match client.seal_free_map(pb::SealFreeMapRequest {}).await {
                Ok(r) => r.into_inner(),
                Err(s) => {
                    let refusal = Refusal::from_status(&s);
                    if after_unmount.is_some() && refusal.kind == Some(ErrorKind::WrongPhase) {
                        println!("nothing to seal: {}", refusal.message);
                        return Ok(exit::OK);
                    }
                    return Err(ClientError::rpc("SealFreeMap", s));
                }
            };
            for p in r.partitions {
                let word = if p.sealed { "free map sealed" } else { "free map not sealed" };
                println!("{}: {word}: {}", p.name, p.detail);
            }
            Ok(exit::OK)
        }
        Command::PrepareUserdata => prepare_userdata(target, dial, client).await,
        Command::Status { json } => {
            let status = client
                .get_status(pb::GetStatusRequest {})
                .await
                .map_err(|s| ClientError::rpc("GetStatus", s))?
                .into_inner();
            if json {
                println!("{}", serde_json::to_string_pretty(&status_json(&status)).unwrap_or_default());
            } else {
                print!("{}", status_table(&status));
            }
            Ok(exit::OK)
        }
        Command::Watch { interval_ms, until_phase, json } => {
            let mut stream = client
                .watch_status(pb::WatchStatusRequest { interval_ms })
                .await
                .map_err(|s| ClientError::rpc("WatchStatus", s))?
                .into_inner();
            let mut rates = MergeRates::default();
            // A person at a terminal gets a bar per running merge.
            let mut bars = (!json && bars::wanted()).then(bars::MergeBars::new);
            let say = |bars: &Option<bars::MergeBars>, line: &str| match bars {
                Some(b) => b.println(line),
                None => println!("{line}"),
            };
            while let Some(msg) = stream.message().await.map_err(|s| ClientError::rpc("WatchStatus", s))? {
                let Some(kind) = msg.kind else { continue };
                match &kind {
                    pb::watch_event::Kind::Status(s) => {
                        if json {
                            println!("{}", json!({ "status": status_json(s) }));
                        } else {
                            let mut line = status_summary(s);
                            for p in &s.partitions {
                                let rate = rates.sample(&p.name, p.merge_done_sectors, p.merge_total_sectors);
                                if let Some(rate) = &rate {
                                    line.push_str(&format!("; {} {rate}", printable(&p.name)));
                                }
                                if let Some(b) = bars.as_mut() {
                                    b.update(&p.name, p.merge_done_sectors, p.merge_total_sectors, rate.as_deref());
                                }
                            }
                            say(&bars, &format!("{} {line}", clock(now_unix())));
                        }
                        if until_phase.as_deref() == Some(phase_name_i32(s.phase).as_str()) {
                            return Ok(exit::OK);
                        }
                    }
                    pb::watch_event::Kind::Event(e) => {
                        if json {
                            println!("{}", json!({ "event": event_json(e) }));
                        } else {
                            say(&bars, &format!("{} event {}", clock(e.time_unix), event_line(e)));
                        }
                    }
                }
            }
            match until_phase {
                Some(phase) => Err(ClientError::StreamEnded { what: format!("phase {phase}") }),
                None => Ok(exit::OK),
            }
        }
        Command::History { json } => {
            let history = client
                .get_history(pb::GetHistoryRequest {})
                .await
                .map_err(|s| ClientError::rpc("GetHistory", s))?
                .into_inner();
            if json {
                let events: Vec<Value> = history.events.iter().map(event_json).collect();
                let kept: Vec<Value> = history.evidence.iter().map(evidence::attempt_json).collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "events": events, "evidence": kept })).unwrap_or_default()
                );
            } else {
                print!("{}", history_table(&history));
                print!("{}", evidence::kept_summary(&history.evidence));
            }
            Ok(exit::OK)
        }
        Command::Evidence { attempt, previous, extract, file, json } => {
            evidence::run(&mut client, attempt, previous, extract, file, json).await
        }
        Command::Checkpoint { .. } => unreachable!("run() sends checkpoint commands to vdc::run"),
        Command::Supports { json } => {
            let s = client
                .supports_checkpoint(pb::SupportsCheckpointRequest {})
                .await
                .map_err(|s| ClientError::rpc("SupportsCheckpoint", s))?
                .into_inner();
            if json {
                println!("{}", json!({ "block": s.block, "file": s.file, "marks_slot": s.marks_slot }));
            } else {
                println!("block: {}\nfile: {}\nmarks slot: {}", s.block, s.file, s.marks_slot);
            }
            Ok(if s.block || s.file { exit::OK } else { exit::FALSE })
        }
    }
}

/// "21 MiB": binary units, integers from 10 up, one decimal below.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value >= 10.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn percent(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        0
    } else {
        (u128::from(part) * 100 / u128::from(whole)) as u64
    }
}

/// "merging rewind-userdata: 41% (21 MiB/51 MiB)".
pub fn progress_line(p: &pb::PrepareUserdataProgress) -> String {
    let step = if p.step.is_empty() { p.partition.clone() } else { p.step.clone() };
    if p.total_sectors == 0 {
        return step;
    }
    format!(
        "{step}: {}% ({}/{})",
        percent(p.done_sectors, p.total_sectors),
        human_bytes(p.done_sectors.saturating_mul(512)),
        human_bytes(p.total_sectors.saturating_mul(512))
    )
}

fn attempt_text(phase: i32, attempt: u32, attempts: u32, unlimited: bool) -> String {
    let name = phase_name_i32(phase);
    if unlimited {
        if attempt == 0 {
            format!("{name} (unlimited attempts)")
        } else {
            format!("{name} (attempt {attempt}, unlimited)")
        }
    } else if attempts == 0 {
        name
    } else if attempt == 0 {
        format!("{name} ({attempts} attempt(s))")
    } else {
        format!("{name} (attempt {attempt} of {attempts})")
    }
}

pub fn prepare_outcome_line(p: &pb::PrepareUserdataProgress) -> String {
    format!("userdata prepared: {}", attempt_text(p.phase, p.attempt, p.attempts, p.unlimited))
}

/// One line: phase, attempts and COW use of each partition.
/// Phases in which a commit has nothing to do: no checkpoint, or one that
/// already ended in a rollback (NeedsRollback stays true).
fn nothing_to_commit(phase: i32) -> bool {
    phase == pb::Phase::Idle as i32 || phase == pb::Phase::RolledBack as i32
}

/// Merge speed per partition from successive WatchStatus samples: the rate
/// since the first sample that showed the merge running, and the time left
/// at that rate.
#[derive(Default)]
pub struct MergeRates {
    first: std::collections::HashMap<String, (std::time::Instant, u64)>,
}

impl MergeRates {
    pub fn sample(&mut self, name: &str, done: u64, total: u64) -> Option<String> {
        self.sample_at(name, done, total, std::time::Instant::now())
    }

    fn sample_at(&mut self, name: &str, done: u64, total: u64, now: std::time::Instant) -> Option<String> {
        if total == 0 || done >= total {
            self.first.remove(name);
            return None;
        }
        let (t0, d0) = *self.first.entry(name.to_string()).or_insert((now, done));
        let secs = now.duration_since(t0).as_secs_f64();
        if secs <= 0.0 || done <= d0 {
            return None;
        }
        let per_sec = (done - d0) as f64 * 512.0 / secs;
        let left = (total - done) as f64 * 512.0 / per_sec;
        Some(format!("merging {:.1} MiB/s, about {:.0} s left", per_sec / (1024.0 * 1024.0), left))
    }
}

pub fn status_summary(s: &pb::Status) -> String {
    let mut line = attempt_text(s.phase, s.attempt, s.attempts, s.unlimited);
    for p in &s.partitions {
        if p.cow_bytes > 0 {
            line.push_str(&format!(
                "; {} cow {}% ({}/{})",
                p.name,
                percent(p.cow_used_bytes, p.cow_bytes),
                human_bytes(p.cow_used_bytes),
                human_bytes(p.cow_bytes)
            ));
        }
        if p.merge_total_sectors > 0 && p.merge_done_sectors < p.merge_total_sectors {
            // The bytes as prepare-userdata's progress lines give them:
            // a follower of a background merge reads the same figures.
            line.push_str(&format!(
                "; {} merge {}% ({}/{})",
                p.name,
                percent(p.merge_done_sectors, p.merge_total_sectors),
                human_bytes(p.merge_done_sectors.saturating_mul(512)),
                human_bytes(p.merge_total_sectors.saturating_mul(512))
            ));
        }
        if !p.snapshot_state.is_empty() {
            line.push_str(&format!("; {} snapshot {}", p.name, p.snapshot_state));
        }
    }
    if s.protection_lost {
        line.push_str(&format!("; PROTECTION LOST: {}", s.protection_lost_reason));
    }
    if let Some(c) = &s.commit_failure {
        line.push_str(&format!("; commit failed {} times", c.failures));
    }
    if !s.rollback_failure.is_empty() {
        line.push_str(&format!("; ROLLBACK PENDING: {}", s.rollback_failure));
    }
    if !s.unavailable_reason.is_empty() {
        line.push_str(&format!("; unavailable: {}", s.unavailable_reason));
    }
    printable(&line).into_owned()
}

/// Left-aligned columns.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| printable(c).into_owned()).collect()).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: Vec<String>| {
        let last = cells.len() - 1;
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push('\n');
    };
    push_row(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        push_row(row);
    }
    out
}

/// Text from the record or a caller (reasons, details, names) made safe
/// for a terminal: control characters are shown escaped (`\n`, `\u{1b}`),
/// so a reason can neither forge a line of output nor send escape
/// sequences to the terminal. Text without any is returned as it is.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

pub fn status_table(s: &pb::Status) -> String {
    let mut out = format!("phase:       {}\n", attempt_text(s.phase, s.attempt, s.attempts, s.unlimited));
    out.push_str(&format!("boot slot:   {}\n", slot_name_i32(s.slot)));
    out.push_str(&format!(
        "available:   {}\n",
        if s.unavailable_reason.is_empty() {
            "yes".to_string()
        } else {
            format!("no: {}", printable(&s.unavailable_reason))
        }
    ));
    out.push_str(&format!(
        "protection:  {}\n",
        if s.protection_lost { format!("LOST: {}", printable(&s.protection_lost_reason)) } else { "ok".to_string() }
    ));
    if let Some(c) = &s.commit_failure {
        out.push_str(&format!("commit:      {}\n", commit_failure_text(c)));
    }
    if !s.rollback_failure.is_empty() {
        out.push_str(&format!("rollback:    PENDING: {}\n", printable(&s.rollback_failure)));
    }
    if s.partitions.is_empty() {
        out.push_str("partitions:  none\n");
        return out;
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = s
        .partitions
        .iter()
        .map(|p| {
            let merge = if p.merge_total_sectors == 0 {
                "-".to_string()
            } else {
                format!("{}%", percent(p.merge_done_sectors, p.merge_total_sectors))
            };
            vec![
                p.name.clone(),
                p.mount_point.clone(),
                backend_name_i32(p.backend),
                if p.cow_bytes == 0 { "-".into() } else { human_bytes(p.cow_bytes) },
                if p.cow_bytes == 0 {
                    "-".into()
                } else {
                    format!("{} ({}%)", human_bytes(p.cow_used_bytes), percent(p.cow_used_bytes, p.cow_bytes))
                },
                if p.chunk_sectors == 0 { "-".into() } else { p.chunk_sectors.to_string() },
                merge,
                if p.snapshot_state.is_empty() { "-".into() } else { p.snapshot_state.clone() },
                p.raw_device.clone(),
            ]
        })
        .collect();
    out.push_str(&table(&["PARTITION", "MOUNT", "BACKEND", "COW", "USED", "CHUNK", "MERGE", "STATE", "DEVICE"], &rows));
    for p in &s.partitions {
        if !p.device_stack.is_empty() {
            out.push_str(&format!("\n{} device stack:\n", p.name));
            for line in &p.device_stack {
                out.push_str(&format!("  {line}\n"));
            }
        }
        if p.unusable_bytes > 0 {
            out.push_str(&format!(
                "{} unusable (f2fs checkpoint=disable): {}\n",
                p.name,
                human_bytes(p.unusable_bytes)
            ));
        }
        if let Some(m) = &p.free_map {
            out.push_str(&free_map_line(&p.name, m));
        }
    }
    out
}

/// A begun commit that failed: how often against the bound, the kernel's
/// words, whether boots still retry it, and the fix.
fn commit_failure_text(c: &pb::CommitFailureStatus) -> String {
    let retry = if c.retried_at_boot {
        format!("the next boot retries it (boots stop at {})", c.limit)
    } else {
        format!("boots no longer retry it (limit {} reached); `rewindctl commit` does", c.limit)
    };
    format!(
        "failed {} times since the intent: {}; {retry}; userdata is the committed data; fix: {}",
        c.failures,
        printable(&c.last_error),
        printable(&c.fix)
    )
}

/// One line on how free space is mapped: the figures a device maker asks
/// about (how much of the device is never copied) and the reason when none.
fn free_map_line(name: &str, m: &pb::FreeMapStatus) -> String {
    let mut line = if m.mapped {
        format!(
            "{name} free space: {} of {} chunks ({}%) mapped linear in {} runs, never copied; {}\n",
            m.linear_chunks,
            m.chunks,
            percent(m.linear_chunks, m.chunks),
            m.segments,
            printable(&m.detail)
        )
    } else {
        format!("{name} free space: not mapped, every chunk protected: {}\n", printable(&m.detail))
    };
    if m.free_written_known && m.free_written_segments < m.segments {
        // Only the longest runs have counters (cow.free_counted_runs).
        line.push_str(&format!(
            "{name} free space: at least {} written into free space this boot, not copied; counted in the {} longest \
             of {} linear runs ({}% of the free chunks), writes into the others are not counted\n",
            human_bytes(m.free_written_bytes),
            m.free_written_segments,
            m.segments,
            percent(m.free_written_chunks, m.linear_chunks)
        ));
    } else if m.free_written_known {
        line.push_str(&format!(
            "{name} free space: {} written into free space this boot, not copied\n",
            human_bytes(m.free_written_bytes)
        ));
    } else if !m.free_written_unknown.is_empty() {
        line.push_str(&format!(
            "{name} free space: bytes written into free space this boot unknown: {}\n",
            printable(&m.free_written_unknown)
        ));
    }
    line
}

pub fn status_json(s: &pb::Status) -> Value {
    let partitions: Vec<Value> = s
        .partitions
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "mount_point": p.mount_point,
                "backend": backend_name_i32(p.backend),
                "raw_device": p.raw_device,
                "device_stack": p.device_stack,
                "cow_bytes": p.cow_bytes,
                "cow_used_bytes": p.cow_used_bytes,
                "cow_free_bytes": p.cow_free_bytes,
                "chunk_sectors": p.chunk_sectors,
                "merge_done_sectors": p.merge_done_sectors,
                "merge_total_sectors": p.merge_total_sectors,
                "snapshot_state": p.snapshot_state,
                "unusable_bytes": p.unusable_bytes,
                "free_map": p.free_map.as_ref().map(|m| json!({
                    "mapped": m.mapped,
                    "chunks": m.chunks,
                    "linear_chunks": m.linear_chunks,
                    "segments": m.segments,
                    "detail": m.detail,
                    "free_written_bytes": m.free_written_known.then_some(m.free_written_bytes),
                    "free_written_unknown": (!m.free_written_unknown.is_empty()).then_some(&m.free_written_unknown),
                    // What the figure covers: a lower bound when fewer
                    // runs are counted than mapped.
                    "free_written_segments": m.free_written_known.then_some(m.free_written_segments),
                    "free_written_chunks": m.free_written_known.then_some(m.free_written_chunks),
                    "free_written_lower_bound": m.free_written_known.then_some(m.free_written_segments < m.segments),
                })),
            })
        })
        .collect();
    json!({
        "phase": phase_name_i32(s.phase),
        "attempt": s.attempt,
        "attempts": s.attempts,
        "unlimited": s.unlimited,
        "slot": slot_name_i32(s.slot),
        "unavailable_reason": s.unavailable_reason,
        "protection_lost": s.protection_lost,
        "protection_lost_reason": s.protection_lost_reason,
        "commit_failure": s.commit_failure.as_ref().map(|c| json!({
            "failures": c.failures,
            "limit": c.limit,
            "last_error": c.last_error,
            "retried_at_boot": c.retried_at_boot,
            "fix": c.fix,
        })),
        "rollback_failure": (!s.rollback_failure.is_empty()).then_some(&s.rollback_failure),
        "partitions": partitions,
    })
}

pub fn event_json(e: &pb::HistoryEvent) -> Value {
    json!({
        "time_unix": e.time_unix,
        "time": iso_time(e.time_unix),
        "kind": e.kind,
        "attempt": e.attempt,
        "attempts": e.attempts,
        "partition": e.partition,
        "detail": e.detail,
        "boot_reason": e.boot_reason,
    })
}

fn event_line(e: &pb::HistoryEvent) -> String {
    let mut line = e.kind.clone();
    if e.attempts > 0 {
        line.push_str(&format!(" {}/{}", e.attempt, e.attempts));
    }
    if !e.partition.is_empty() {
        line.push_str(&format!(" {}", e.partition));
    }
    if !e.detail.is_empty() {
        line.push_str(&format!(": {}", e.detail));
    }
    printable(&line).into_owned()
}

pub fn history_table(h: &pb::History) -> String {
    if h.events.is_empty() {
        return "no events recorded\n".to_string();
    }
    let rows: Vec<Vec<String>> = h
        .events
        .iter()
        .map(|e| {
            vec![
                iso_time(e.time_unix),
                e.kind.clone(),
                match (e.attempt, e.attempts) {
                    (0, 0) => "-".into(),
                    // An unlimited checkpoint has no count.
                    (k, 0) => format!("{k}/∞"),
                    (k, n) => format!("{k}/{n}"),
                },
                if e.partition.is_empty() { "-".into() } else { e.partition.clone() },
                if e.boot_reason.is_empty() { "-".into() } else { e.boot_reason.clone() },
                e.detail.clone(),
            ]
        })
        .collect();
    table(&["TIME (UTC)", "EVENT", "ATTEMPT", "PARTITION", "BOOT REASON", "DETAIL"], &rows)
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// "2026-11-23T23:50:46Z" from Unix seconds (days-to-civil, proleptic
/// Gregorian; no time-zone database on a device at early boot).
pub fn iso_time(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

fn clock(unix: u64) -> String {
    let secs = unix % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_free_written_figure_says_when_it_is_a_lower_bound() {
        let mut m = pb::FreeMapStatus {
            mapped: true,
            chunks: 1000,
            linear_chunks: 400,
            segments: 2047,
            free_written_bytes: 8 << 20,
            free_written_known: true,
            free_written_segments: 128,
            free_written_chunks: 300,
            ..Default::default()
        };
        let text = free_map_line("userdata", &m);
        assert!(
            text.contains("at least 8.0 MiB written into free space this boot, not copied; counted in the 128 longest of 2047 linear runs (75% of the free chunks)"),
            "{text}"
        );
        let json = status_json(&pb::Status {
            partitions: vec![pb::PartitionStatus { free_map: Some(m.clone()), ..Default::default() }],
            ..Default::default()
        });
        let j = &json["partitions"][0]["free_map"];
        assert_eq!(
            (j["free_written_segments"].as_u64(), j["free_written_lower_bound"].as_bool()),
            (Some(128), Some(true))
        );
        m.free_written_segments = 2047;
        m.free_written_chunks = 400;
        let text = free_map_line("userdata", &m);
        assert!(
            text.contains("userdata free space: 8.0 MiB written into free space this boot, not copied\n"),
            "{text}"
        );
        assert!(!text.contains("at least"), "{text}");
    }

    #[test]
    fn control_characters_in_recorded_text_never_reach_the_terminal_raw() {
        assert_eq!(printable("ota build 7"), "ota build 7");
        assert_eq!(printable("a\nforged line"), "a\\nforged line");
        assert_eq!(printable("\u{1b}[2Jwiped"), "\\u{1b}[2Jwiped");
        assert_eq!(printable("tab\there\u{7f}"), "tab\\there\\u{7f}");
        let h = pb::History {
            events: vec![pb::HistoryEvent {
                kind: "aborted".into(),
                detail: "evil\n2026-01-01T00:00:00Z  committed\u{1b}]0;title\u{7}".into(),
                boot_reason: "reboot,\u{1b}[31m".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let out = history_table(&h);
        assert_eq!(out.lines().count(), 2, "one header and one row, no forged line: {out}");
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
        assert!(!event_line(&h.events[0]).chars().any(char::is_control));
    }

    use super::*;

    /// prepare-userdata calls again only when rewindd stopped answering
    /// (the stream broke with no error kind of rewindd's, or ended without
    /// the outcome), never when rewindd answered or the caller's deadline
    /// passed.
    #[test]
    fn prepare_calls_again_only_when_rewindd_went_away() {
        let broken = tonic::Status::unknown("h2 protocol error: error reading a body from connection");
        assert!(daemon_went_away(&ClientError::rpc("PrepareUserdata", broken)));
        assert!(daemon_went_away(&ClientError::StreamEnded { what: "the final message".into() }));
        let mut answered = tonic::Status::failed_precondition("not arming");
        answered.metadata_mut().insert(ERROR_KIND_KEY, tonic::metadata::MetadataValue::from_static("unsafe"));
        assert!(!daemon_went_away(&ClientError::rpc("PrepareUserdata", answered)));
        let late = tonic::Status::deadline_exceeded("timeout");
        assert!(!daemon_went_away(&ClientError::rpc("PrepareUserdata", late)));
    }

    #[test]
    fn cli_parses_the_documented_commands() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["rewindctl", "start", "--attempts", "3", "--reason", "ota"]).unwrap();
        assert!(matches!(cli.command, Command::Start { attempts: Some(3), unlimited: false, .. }));
        assert!(Cli::try_parse_from(["rewindctl", "start", "--attempts", "0"]).is_err());
        assert!(Cli::try_parse_from(["rewindctl", "start"]).is_err(), "a budget is required");
        assert!(Cli::try_parse_from(["rewindctl", "start", "--attempts", "2", "--unlimited"]).is_err());
        let cli = Cli::try_parse_from(["rewindctl", "start", "--unlimited"]).unwrap();
        assert!(matches!(cli.command, Command::Start { attempts: None, unlimited: true, .. }));
        let cli = Cli::try_parse_from(["rewindctl", "abort", "--reason", "x", "--reboot"]).unwrap();
        assert!(matches!(cli.command, Command::Abort { reboot: true, .. }));
        let cli = Cli::try_parse_from(["rewindctl", "checkpoint", "startCheckpoint", "-1"]).unwrap();
        assert!(matches!(&cli.command, Command::Checkpoint { args } if args == &["startCheckpoint", "-1"]));
        let cli = Cli::try_parse_from(["rewindctl", "evidence", "2", "--extract", "/tmp/x"]).unwrap();
        assert!(matches!(cli.command, Command::Evidence { attempt: 2, .. }));
        assert!(Cli::try_parse_from(["rewindctl", "evidence", "2", "--file", "kmsg.tail"]).is_err());
        let cli = Cli::try_parse_from(["rewindctl", "--tcp", "127.0.0.1:1", "abort", "--keep-retrying"]).unwrap();
        assert_eq!(cli.tcp.as_deref(), Some("127.0.0.1:1"));
        assert!(matches!(cli.command, Command::Abort { keep_retrying: true, .. }));
        assert!(Cli::try_parse_from(["rewindctl", "watch", "--until-phase", "bogus"]).is_err());
    }

    #[test]
    fn merge_rate_and_time_left_from_samples() {
        let t0 = std::time::Instant::now();
        let mut r = MergeRates::default();
        let total = 100 * 2048; // 100 MiB in sectors
        assert_eq!(r.sample_at("userdata", 0, total, t0), None);
        let t1 = t0 + std::time::Duration::from_secs(10);
        assert_eq!(
            r.sample_at("userdata", 20 * 2048, total, t1).as_deref(),
            Some("merging 2.0 MiB/s, about 40 s left")
        );
        assert_eq!(r.sample_at("userdata", total, total, t1), None);
        assert_eq!(r.sample_at("userdata", 0, 0, t1), None);
    }

    #[test]
    fn exit_codes_follow_the_kind_then_the_code() {
        let r = |code, kind| Refusal { code, kind, message: String::new() };
        use tonic::Code;
        assert_eq!(exit_code_of(&r(Code::FailedPrecondition, Some(ErrorKind::WrongPhase))), exit::WRONG_PHASE);
        assert_eq!(exit_code_of(&r(Code::FailedPrecondition, Some(ErrorKind::Unsafe))), exit::UNSAFE);
        assert_eq!(exit_code_of(&r(Code::Unavailable, Some(ErrorKind::Unavailable))), exit::UNAVAILABLE);
        assert_eq!(exit_code_of(&r(Code::Unavailable, None)), exit::CONNECT);
        assert_eq!(
            exit_code_of(&r(Code::PermissionDenied, Some(ErrorKind::PermissionDenied))),
            exit::PERMISSION_DENIED
        );
        assert_eq!(exit_code_of(&r(Code::ResourceExhausted, Some(ErrorKind::NoSpace))), exit::NO_SPACE);
        assert_eq!(exit_code_of(&r(Code::InvalidArgument, Some(ErrorKind::InvalidArgument))), exit::USAGE);
        assert_eq!(exit_code_of(&r(Code::Internal, Some(ErrorKind::Internal))), exit::OTHER);
        assert_eq!(exit_code_of(&r(Code::Unknown, None)), exit::OTHER);
    }

    #[test]
    fn progress_line_reads_like_the_design() {
        let p = pb::PrepareUserdataProgress {
            step: "merging rewind-userdata".into(),
            done_sectors: 21 * 2048,
            total_sectors: 51 * 2048,
            ..Default::default()
        };
        assert_eq!(progress_line(&p), "merging rewind-userdata: 41% (21 MiB/51 MiB)");
        let p = pb::PrepareUserdataProgress { step: "arming".into(), ..Default::default() };
        assert_eq!(progress_line(&p), "arming");
    }

    #[test]
    fn bytes_and_times_are_human() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(16 << 30), "16 GiB");
        assert_eq!(iso_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_time(1_795_477_846), "2026-11-23T23:50:46Z");
        assert_eq!(iso_time(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn status_table_shows_unavailable_reason() {
        let s = pb::Status {
            phase: pb::Phase::Idle as i32,
            unavailable_reason: "device-mapper control node /dev/mapper/control not found".into(),
            ..Default::default()
        };
        let t = status_table(&s);
        assert!(t.contains("phase:       idle"), "{t}");
        assert!(t.contains("no: device-mapper control node"), "{t}");
        assert_eq!(status_json(&s)["phase"], "idle");
    }
}
