//! rewindd: the owner of userdata checkpoints. Parses flags, sets up
//! logging, loads the config, opens the engine and serves `rewind.v1` until
//! SIGTERM/SIGINT. All logic is in the library (keystore2's layout).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use rewind_daemon::config::{Config, Overrides, DEFAULT_CONFIG_PATH};
use rewind_daemon::dm::events;
use rewind_daemon::engine::Engine;
use rewind_daemon::logging;
use rewind_daemon::service::transport::{self, SocketFile};
use rewind_daemon::service::{server, CheckpointCore, CheckpointService, Policy};
use rewind_daemon::sys::dirlock::DirLock;
use rewind_daemon::types::error_chain;
use tokio::sync::{watch, Notify};

/// After a shutdown signal, open streams and calls get this long to end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Blocking core calls still running at exit get this long; the engine is
/// built to resume after a cut anyway.
const BLOCKING_GRACE: Duration = Duration::from_secs(2);

const EXAMPLES: &str = "\
Examples:
  # On a device, init starts it (android/rewindd.rc) with the socket in
  # ANDROID_SOCKET_rewindd and the config in /system/etc/rewindd.toml.
  rewindd

  # A test guest: explicit paths, gRPC also on TCP (callers trusted).
  rewindd --fstab /etc/fstab.rewind --metadata-dir /metadata/rewind \\
          --socket /dev/socket/rewindd --listen-tcp 0.0.0.0:50051 --log-level debug

  # Any machine (no device-mapper: status says why, checkpoint calls
  # answer UNAVAILABLE):
  rewindd --config ./rewindd.toml --socket /tmp/rewindd.sock --no-kmsg

Socket: the fd in ANDROID_SOCKET_rewindd if init set it, unless --socket is
given; else the config's `socket`. A stale socket file is replaced; rewindd
refuses to start if another rewindd answers on it. Keys of the config file:
daemon/CONFIG.md.";

#[derive(Debug, Parser)]
#[command(name = "rewindd", version, about = "Block-level userdata checkpoints for A/B updates (gRPC rewind.v1)", after_help = EXAMPLES)]
struct Args {
    /// TOML config file [default: /system/etc/rewindd.toml if it exists].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve on this Unix socket (wins over ANDROID_SOCKET_rewindd and the config).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// fs_mgr fstab naming the checkpointed partitions.
    #[arg(long, value_name = "FILE")]
    fstab: Option<PathBuf>,
    /// Directory of the state record (on /metadata).
    #[arg(long, value_name = "DIR")]
    metadata_dir: Option<PathBuf>,
    /// Also serve on TCP; its callers may mutate (test guests only).
    #[arg(long, value_name = "ADDR")]
    listen_tcp: Option<std::net::SocketAddr>,
    /// Log filter (error, warn, info, debug, trace, or RUST_LOG syntax) [default: RUST_LOG, else info].
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Do not also log to /dev/kmsg.
    #[arg(long)]
    no_kmsg: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let kmsg = match logging::init(args.log_level.as_deref(), !args.no_kmsg) {
        Ok(kmsg) => kmsg,
        Err(e) => {
            eprintln!("rewindd: {}", error_chain(&e));
            return ExitCode::from(2);
        }
    };
    logging::install_panic_hook();
    tracing::debug!("logging to stderr{}", if kmsg { " and /dev/kmsg" } else { "" });
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("rewindd failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let overrides = Overrides {
        fstab: args.fstab.clone(),
        metadata_dir: args.metadata_dir.clone(),
        socket: args.socket.clone(),
        listen_tcp: args.listen_tcp,
    };
    let (config, source) = Config::load(args.config.as_deref(), &overrides).context("Cannot load the configuration")?;
    tracing::info!(
        "rewindd {} starting: config {}, fstab {}, metadata {}",
        env!("CARGO_PKG_VERSION"),
        source
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("defaults ({DEFAULT_CONFIG_PATH} absent)")),
        config.fstab.display(),
        config.metadata_dir.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // Two workers are plenty for a handful of clients; the core's work
        // runs on the blocking pool.
        .worker_threads(2)
        .max_blocking_threads(16)
        .thread_name("rewindd")
        .enable_all()
        .build()
        .context("Cannot start the async runtime")?;
    let result = runtime.block_on(serve(config, args.socket.is_some()));
    runtime.shutdown_timeout(BLOCKING_GRACE);
    result
}

/// Listeners, engine, space poll, signals, server.
async fn serve(config: Config, socket_flag: bool) -> Result<()> {
    // Bind before opening the engine: a second rewindd must stop here,
    // before it touches state or dm devices that the first one owns.
    let init_fd = transport::init_socket_fd().context("Cannot use init's socket")?;
    let (unix, socket_file): (_, Option<SocketFile>) = match init_fd {
        Some(fd) if !socket_flag => {
            tracing::info!("serving on init's socket (fd {fd})");
            (transport::adopt_init_socket(fd).context("Cannot adopt init's socket")?, None)
        }
        _ => {
            let (listener, file) =
                transport::bind_unix(&config.socket, config.socket_mode).context("Cannot open the Unix socket")?;
            tracing::info!("serving on {}", config.socket.display());
            (listener, Some(file))
        }
    };
    let tcp = match config.listen_tcp {
        Some(addr) => {
            let listener = transport::bind_tcp(addr).await.context("Cannot open the TCP listener")?;
            tracing::warn!(
                "also serving on TCP {addr} (test-only transport; TCP callers {} mutate)",
                if config.tcp_trusted { "may" } else { "may not" }
            );
            Some(listener)
        }
        None => None,
    };

    // Signals are handled from here on: one arriving while the engine
    // opens stops rewindd as cleanly as one arriving later.
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(rewind_daemon::sys::signals::handle(shutdown_tx));

    // One daemon per state record (the socket check above only sees the
    // same socket path). A lock that cannot be taken for another reason (a
    // read-only /metadata) is reported; the engine then says what it can
    // and cannot do, as it does today, rather than rewindd not serving.
    let _metadata_lock = match DirLock::acquire(&config.metadata_dir) {
        Ok(lock) => Some(lock),
        Err(e) if e.is_held() => return Err(e).context("Cannot own the metadata directory"),
        Err(e) => {
            tracing::warn!("{}; going on without the lock", error_chain(&e));
            None
        }
    };

    let poll_interval = Duration::from_millis(config.space.poll_interval_ms);
    let dm_prefix = config.dm_prefix.clone();
    let policy = Policy::from_config(&config);
    let engine = tokio::task::spawn_blocking(move || Engine::open(config))
        .await
        .context("Opening the engine panicked")?
        .context("Cannot open the engine")?;
    let core: Arc<dyn CheckpointCore> = Arc::new(engine);
    let status = {
        let core = Arc::clone(&core);
        tokio::task::spawn_blocking(move || core.status()).await.context("Reading the status panicked")?
    };
    match &status.unavailable_reason {
        Some(reason) => tracing::warn!("checkpointing unavailable: {reason}"),
        None => tracing::info!("ready: phase {:?}, attempt {} of {}", status.phase, status.attempt, status.attempts),
    }

    // A dm event on one of rewindd's devices (a snapshot invalidated, a
    // merge stopped) runs the space watch at once, not at its next tick:
    // the loss must reach /metadata before a power cut can hide it.
    let wake = Arc::new(Notify::new());
    let stop_events = {
        let wake = Arc::clone(&wake);
        let spawned = events::spawn(
            dm_prefix,
            move |names| {
                tracing::info!("dm event on {}: looking now", names.join(", "));
                wake.notify_one();
            },
            |end| match end {
                Ok(()) => {}
                Err(e) => tracing::info!(
                    "dm events not watched ({}): the space watch looks at its interval only",
                    error_chain(&e)
                ),
            },
        );
        match spawned {
            Ok(stop) => Some(stop),
            Err(e) => {
                tracing::warn!("cannot start the dm event watcher: {e}; the space watch looks at its interval only");
                None
            }
        }
    };
    tokio::spawn(poll_space(Arc::clone(&core), poll_interval, wake, shutdown_rx.clone()));

    let service = CheckpointService::new(core, policy, shutdown_rx.clone());
    let server = server::serve(service, unix, tcp, shutdown_rx.clone());
    tokio::pin!(server);
    let mut grace = shutdown_rx;
    tokio::select! {
        result = &mut server => result.context("The gRPC server stopped")?,
        _ = async {
            let _ = grace.wait_for(|stop| *stop).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!("connections still open {} s after the shutdown signal; exiting anyway", SHUTDOWN_GRACE.as_secs()),
    }
    if let Some(stop) = stop_events {
        stop.store(true, Ordering::Relaxed);
    }
    drop(socket_file);
    tracing::info!("rewindd stopped");
    Ok(())
}

/// The space watch: `poll_space` every interval on the blocking pool, and
/// at once when `wake` is notified (a dm event). A failure is logged when
/// it changes, not every second.
async fn poll_space(
    core: Arc<dyn CheckpointCore>,
    interval: Duration,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = wake.notified() => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
        let core = Arc::clone(&core);
        let message = match tokio::task::spawn_blocking(move || core.poll_space()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(error_chain(&e)),
            Err(join) => Some(format!("poll_space did not finish: {join}")),
        };
        if message != last_error {
            match &message {
                Some(m) => tracing::warn!("space watch: {m}"),
                None => tracing::info!("space watch: recovered"),
            }
            last_error = message;
        }
    }
}
