//! WatchStatus: the core's notices (history events as they are recorded,
//! threshold crossings, status pushes) plus a status every interval, until
//! the client goes away or rewindd shuts down.

use std::sync::Arc;
use std::time::Duration;

use rewind_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc, watch};
use tonic::Status;

use super::{mapping, run_blocking, CheckpointCore};
use crate::engine::Notice;

type Item = Result<pb::WatchEvent, Status>;

fn status_event(report: &crate::types::StatusReport) -> pb::WatchEvent {
    pb::WatchEvent { kind: Some(pb::watch_event::Kind::Status(mapping::status_to_pb(report))) }
}

fn notice_event(notice: &Notice) -> pb::WatchEvent {
    match notice {
        Notice::Event(e) => pb::WatchEvent { kind: Some(pb::watch_event::Kind::Event(mapping::event_to_pb(e))) },
        Notice::Status(s) => status_event(s),
    }
}

async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn next_notice(notices: &mut Option<broadcast::Receiver<Notice>>) -> Result<Notice, broadcast::error::RecvError> {
    match notices {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Starts the task feeding one WatchStatus stream.
pub(super) fn spawn(
    core: Arc<dyn CheckpointCore>,
    notices: broadcast::Receiver<Notice>,
    interval: Option<Duration>,
    mut shutdown: watch::Receiver<bool>,
) -> mpsc::Receiver<Item> {
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(async move {
        // The first tick fires at once: a watcher sees the state right away.
        let mut ticker = interval.map(|period| {
            let mut t = tokio::time::interval(period);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            t
        });
        // None once the core's sender is gone: statuses may still follow.
        let mut notices = Some(notices);
        loop {
            if *shutdown.borrow() || (notices.is_none() && ticker.is_none()) {
                break;
            }
            let item = tokio::select! {
                _ = tx.closed() => break,
                changed = shutdown.changed() => {
                    if changed.is_err() { break; }
                    continue;
                }
                _ = tick(&mut ticker) => {
                    match run_blocking("WatchStatus", Arc::clone(&core), |core| core.watch_status()).await {
                        Ok(report) => Ok(status_event(&report)),
                        Err(status) => Err(status),
                    }
                }
                notice = next_notice(&mut notices) => match notice {
                    Ok(notice) => Ok(notice_event(&notice)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // Too slow a reader: say so in the log; the next
                        // periodic status brings it back in step.
                        tracing::warn!("WatchStatus: a watcher missed {missed} notices");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        notices = None;
                        continue;
                    }
                },
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
        tracing::debug!("WatchStatus: stream closed");
    });
    rx
}
