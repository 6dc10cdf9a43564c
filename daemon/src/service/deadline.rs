//! A deadline watch for RPC handlers (keystore2's watchdog idea): a guard
//! made when a call starts. If the call is still running at its deadline, a
//! timer task logs it once ("still running"), so a hung call shows up in the
//! log while it hangs; when the guard drops, a call that overran logs its
//! total time. Cheap: one sleeping tokio task per call.

use std::time::{Duration, Instant};

/// Queries and the live commit: constant-time work.
pub const QUICK: Duration = Duration::from_millis(500);
/// StartCheckpoint writes the COW store (real zeroes, fsync): seconds per GiB.
pub const START: Duration = Duration::from_secs(30);
/// AbortChanges may reload tables and write the record.
pub const ABORT: Duration = Duration::from_secs(5);
/// Calls that may run the slot query or the commit command (the boot HAL
/// may still be starting; the query itself gives up after 10 s).
pub const SLOT: Duration = Duration::from_secs(12);
/// PrepareUserdata may run a whole merge.
pub const PREPARE: Duration = Duration::from_secs(120);

pub struct WatchPoint {
    name: &'static str,
    deadline: Duration,
    start: Instant,
    timer: Option<tokio::task::JoinHandle<()>>,
}

impl WatchPoint {
    /// Must be called inside a tokio runtime (every handler is).
    pub fn new(name: &'static str, deadline: Duration) -> WatchPoint {
        let timer = tokio::runtime::Handle::try_current().ok().map(|rt| {
            rt.spawn(async move {
                tokio::time::sleep(deadline).await;
                tracing::warn!(
                    "{name}: still running after {} ms (deadline {} ms)",
                    deadline.as_millis(),
                    deadline.as_millis()
                );
            })
        });
        WatchPoint { name, deadline, start: Instant::now(), timer }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

impl Drop for WatchPoint {
    fn drop(&mut self) {
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
        let took = self.start.elapsed();
        if took > self.deadline {
            tracing::warn!("{}: took {} ms (deadline {} ms)", self.name, took.as_millis(), self.deadline.as_millis());
        } else {
            tracing::debug!("{}: took {} us", self.name, took.as_micros());
        }
    }
}
