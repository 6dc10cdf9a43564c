//! What rewindd does with each signal it can be sent, on purpose.
//!
//! A signal left at its default action kills the daemon without its
//! shutdown: a stray `kill -HUP` (a terminal closing, a log rotator, a
//! tool that "reloads" daemons) would take rewindd down in the middle of a
//! call and leave its socket file behind. So every signal whose default is
//! to terminate is either a request to stop (graceful shutdown) or logged
//! and ignored. Fault signals (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT,
//! SIGTRAP, SIGSYS) keep their default: a fault must not be survived.
//! SIGPIPE is already ignored by Rust's runtime (a closed client shows up
//! as EPIPE on the write, handled per connection).

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Init's stop (SIGTERM), ^C, ^\: finish calls, remove the socket, exit 0.
    Shutdown,
    /// Logged at warn with its name, otherwise nothing happens.
    Ignore,
}

/// Every terminating signal, with what rewindd does on it.
pub const SIGNALS: &[(libc::c_int, &str, Disposition)] = &[
    (libc::SIGTERM, "SIGTERM", Disposition::Shutdown),
    (libc::SIGINT, "SIGINT", Disposition::Shutdown),
    (libc::SIGQUIT, "SIGQUIT", Disposition::Shutdown),
    (libc::SIGHUP, "SIGHUP", Disposition::Ignore),
    (libc::SIGUSR1, "SIGUSR1", Disposition::Ignore),
    (libc::SIGUSR2, "SIGUSR2", Disposition::Ignore),
    (libc::SIGALRM, "SIGALRM", Disposition::Ignore),
    (libc::SIGVTALRM, "SIGVTALRM", Disposition::Ignore),
    (libc::SIGPROF, "SIGPROF", Disposition::Ignore),
    (libc::SIGXCPU, "SIGXCPU", Disposition::Ignore),
    (libc::SIGXFSZ, "SIGXFSZ", Disposition::Ignore),
    (libc::SIGIO, "SIGIO", Disposition::Ignore),
    (libc::SIGPWR, "SIGPWR", Disposition::Ignore),
    (libc::SIGSTKFLT, "SIGSTKFLT", Disposition::Ignore),
];

/// Installs a handler for every signal in [`SIGNALS`] and runs until a
/// Shutdown one arrives, then sends `true` on `shutdown`. A handler that
/// cannot be installed is logged; the rest still are.
pub async fn handle(shutdown: watch::Sender<bool>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(&'static str, Disposition)>();
    for &(number, name, disposition) in SIGNALS {
        match signal(SignalKind::from_raw(number)) {
            Ok(stream) => {
                tokio::spawn(forward(stream, name, disposition, tx.clone()));
            }
            Err(e) => tracing::error!("cannot install a handler for {name}: {e}; it keeps its default action"),
        }
    }
    drop(tx);
    while let Some((name, disposition)) = rx.recv().await {
        match disposition {
            Disposition::Ignore => tracing::warn!("{name} received and ignored (rewindd stops on SIGTERM)"),
            Disposition::Shutdown => {
                tracing::info!("{name}: shutting down");
                let _ = shutdown.send(true);
                return;
            }
        }
    }
}

async fn forward(
    mut stream: Signal,
    name: &'static str,
    disposition: Disposition,
    tx: tokio::sync::mpsc::UnboundedSender<(&'static str, Disposition)>,
) {
    while stream.recv().await.is_some() {
        if tx.send((name, disposition)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every signal whose default action terminates the process (signal(7)),
    /// except the faults and SIGPIPE, is in the table exactly once.
    #[test]
    fn every_terminating_signal_has_a_disposition() {
        let terminating = [
            libc::SIGHUP,
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGALRM,
            libc::SIGTERM,
            libc::SIGSTKFLT,
            libc::SIGVTALRM,
            libc::SIGPROF,
            libc::SIGXCPU,
            libc::SIGXFSZ,
            libc::SIGIO,
            libc::SIGPWR,
        ];
        for s in terminating {
            assert_eq!(SIGNALS.iter().filter(|(n, _, _)| *n == s).count(), 1, "signal {s}");
        }
        assert_eq!(SIGNALS.len(), terminating.len());
        for (n, name, _) in SIGNALS {
            assert_eq!(nix::sys::signal::Signal::try_from(*n).expect("valid").as_str(), *name);
        }
    }
}
