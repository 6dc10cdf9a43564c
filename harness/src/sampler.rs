//! COW use and merge progress over a boot, as rewindd reports them: a host
//! thread follows WatchStatus through the boot's forwarded gRPC port and
//! keeps each status with the time since QEMU started (the clock of the
//! boot's stage markers). rewindd is not up for the first seconds of a
//! boot, and a boot may end at any moment, so the thread connects again
//! until it is stopped; what it gathered is the boot's samples.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rewind_proto::v1 as pb;
use rewind_proto::v1::checkpoint_client::CheckpointClient;
use serde::Serialize;
use tonic::transport::Endpoint;

/// Period of the samples: a TCG guest's rollback merge of tens of MiB
/// takes about a second, so coarser would miss it.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// One WatchStatus status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusSample {
    /// Milliseconds since QEMU started this boot.
    pub ms: u64,
    /// rewindd's phase ("checkpointing", "rolling-back", ...).
    pub phase: String,
    pub partitions: Vec<PartitionSample>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionSample {
    pub name: String,
    pub cow_used_bytes: u64,
    pub cow_bytes: u64,
    pub merge_done_sectors: u64,
    pub merge_total_sectors: u64,
}

impl StatusSample {
    pub fn from_status(ms: u64, s: &pb::Status) -> Self {
        StatusSample {
            ms,
            phase: rewind_daemon::service::mapping::phase_name_i32(s.phase),
            partitions: s
                .partitions
                .iter()
                .map(|p| PartitionSample {
                    name: p.name.clone(),
                    cow_used_bytes: p.cow_used_bytes,
                    cow_bytes: p.cow_bytes,
                    merge_done_sectors: p.merge_done_sectors,
                    merge_total_sectors: p.merge_total_sectors,
                })
                .collect(),
        }
    }
}

/// The thread following one boot.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<StatusSample>>>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Follows `endpoint` ("http://127.0.0.1:PORT"); times are from `started`.
    pub fn start(endpoint: String, started: Instant) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s, out) = (stop.clone(), samples.clone());
        let thread = std::thread::Builder::new()
            .name("status-sampler".into())
            .spawn(move || follow(&endpoint, started, &s, &out))
            .ok();
        Sampler { stop, samples, thread }
    }

    /// Stops following and returns the samples, oldest first.
    pub fn finish(mut self) -> Vec<StatusSample> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut v = self.samples.lock().map(|mut s| std::mem::take(&mut *s)).unwrap_or_default();
        v.sort_by_key(|s| s.ms);
        v
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn follow(endpoint: &str, started: Instant, stop: &AtomicBool, out: &Mutex<Vec<StatusSample>>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    let Ok(ep) = Endpoint::from_shared(endpoint.to_string()) else { return };
    let ep = ep.connect_timeout(Duration::from_secs(1));
    // How often the stop flag is looked at while a stream is quiet.
    let poll = Duration::from_millis(200);
    rt.block_on(async {
        while !stop.load(Ordering::SeqCst) {
            let Ok(channel) = ep.connect().await else {
                tokio::time::sleep(poll).await;
                continue;
            };
            let mut client = CheckpointClient::new(channel);
            let req = pb::WatchStatusRequest { interval_ms: INTERVAL.as_millis() as u32 };
            let Ok(resp) = tokio::time::timeout(Duration::from_secs(2), client.watch_status(req)).await else {
                continue;
            };
            let Ok(resp) = resp else {
                tokio::time::sleep(poll).await;
                continue;
            };
            let mut stream = resp.into_inner();
            while !stop.load(Ordering::SeqCst) {
                match tokio::time::timeout(poll, stream.message()).await {
                    Err(_) => {}
                    Ok(Ok(Some(ev))) => {
                        if let Some(pb::watch_event::Kind::Status(s)) = ev.kind {
                            let ms = started.elapsed().as_millis() as u64;
                            if let Ok(mut v) = out.lock() {
                                v.push(StatusSample::from_status(ms, &s));
                            }
                        }
                    }
                    // The stream ended or broke (rewindd restarted, the
                    // boot is ending): connect again while not stopped.
                    Ok(_) => break,
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_becomes_a_sample() {
        let s = pb::Status {
            phase: pb::Phase::RollingBack as i32,
            partitions: vec![pb::PartitionStatus {
                name: "userdata".into(),
                cow_bytes: 64 << 20,
                cow_used_bytes: 3 << 20,
                merge_done_sectors: 10,
                merge_total_sectors: 40,
                ..Default::default()
            }],
            ..Default::default()
        };
        let x = StatusSample::from_status(1500, &s);
        assert_eq!(x.ms, 1500);
        assert_eq!(x.phase, "rolling-back");
        assert_eq!(
            x.partitions,
            vec![PartitionSample {
                name: "userdata".into(),
                cow_used_bytes: 3 << 20,
                cow_bytes: 64 << 20,
                merge_done_sectors: 10,
                merge_total_sectors: 40
            }]
        );
    }

    #[test]
    fn nothing_listening_gives_no_samples_and_stops_at_once() {
        // A port nothing listens on: connections are refused, no sample.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        drop(l);
        let s = Sampler::start(format!("http://127.0.0.1:{port}"), Instant::now());
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        assert!(s.finish().is_empty());
        assert!(t.elapsed() < Duration::from_secs(3), "stopped in {:?}", t.elapsed());
    }
}
