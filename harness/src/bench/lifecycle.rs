//! Commit and rollback over changed data, in one block-mode session (4 KiB
//! chunks, free map off: every changed byte is copied, the worst case for
//! the merge). Per amount: a checkpoint with two attempts; attempt 1
//! overwrites that much baseline data and ends without a commit; the boot
//! of attempt 2 merges it away before /data is mounted (timed from power
//! on) and re-arms; attempt 2 overwrites it again and commits (timed). The
//! device's own sequential write bandwidth and rewindd's memory and CPU
//! are measured in the same guest.

use serde::Serialize;

use super::guest::{self, run, unexpected, BenchError, ProcUsage, MS_CLOCK};
use super::plan::{Config, Plan};
use crate::plan::{stage, BootPlan, FsType};
use crate::scenario::{checks, Ctx, Options};

const BIG: &str = "/data/bench/big";

#[derive(Debug, Clone, Serialize)]
pub struct CommitPoint {
    pub changed_mib: u64,
    /// `rewindctl commit` in the guest, its own clock.
    pub rewindctl_ms: u64,
    /// The live table swap as rewindd records it in its history.
    pub rewindd_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RollbackPoint {
    pub changed_mib: u64,
    /// COW bytes the attempt used (the kernel's account), MiB.
    pub cow_mib: f64,
    /// rewindd's "merged N MiB in S s".
    pub merged_mib: u64,
    pub merge_s: f64,
    /// Power on to /data mounted, with the merge (and the re-arm).
    pub data_mounted_s: f64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct LifecycleOut {
    /// fio sequential write (1 MiB, direct) on the idle stack, MiB/s.
    pub device_write_mib_s: f64,
    /// Power on to /data mounted with no checkpoint.
    pub idle_data_mounted_s: f64,
    pub commits: Vec<CommitPoint>,
    pub rollbacks: Vec<RollbackPoint>,
    /// rewindd with nothing to do (measured over 5 s).
    pub idle: ProcUsage,
    pub idle_cpu_percent: f64,
    /// rewindd after the boot that merged the largest amount: its peak
    /// memory covers the merge, its CPU the whole boot through it.
    pub merge: ProcUsage,
}

pub(super) fn data_mounted_s(rec: &crate::target::BootRecord) -> f64 {
    rec.reached_ms(stage::DATA_MOUNTED).map(|ms| ms as f64 / 1000.0).unwrap_or(0.0)
}

/// "merged 64 MiB in 2.1 s" from rewindd's history (the last one).
pub fn parse_merged(history: &str) -> Option<(u64, f64)> {
    let i = history.rfind("merged ")?;
    let w: Vec<&str> = history[i..].split_whitespace().collect();
    Some((w.get(1)?.parse().ok()?, w.get(4)?.parse().ok()?))
}

/// "(live, 12 ms)" of the last commit in the history.
pub fn parse_live_ms(history: &str) -> Option<u64> {
    let i = history.rfind("live, ")?;
    history[i + 6..].split_whitespace().next()?.parse().ok()
}

fn overwrite(cx: &mut Ctx, mib: u64) -> Result<(), BenchError> {
    run(cx, &format!("dd if=/dev/urandom of={BIG} bs=1M count={mib} conv=notrunc,fsync 2>/dev/null; sync"), 1800)?;
    Ok(())
}

pub fn session(plan: &Plan) -> Result<LifecycleOut, BenchError> {
    let largest = plan.changed_mib.iter().copied().max().unwrap_or(16);
    // The store must hold the largest amount: half the free space beside
    // a baseline of that size.
    let userdata_mib = (largest * 4).max(plan.userdata_mib);
    let config = Config::Block { chunk_kib: 4, free_map: false };
    let mut g = guest::new_guest("bench-lifecycle", FsType::Ext4, userdata_mib, &config.rewindd_extra())?;
    let mut cx = Ctx::new(&mut g, "bench-lifecycle", Options::default());
    let mut out = LifecycleOut::default();

    cx.boot_ready(&BootPlan::rewind())?;
    run(
        &mut cx,
        &format!("mkdir -p /data/bench; dd if=/dev/zero of={BIG} bs=1M count={largest} 2>/dev/null; sync"),
        1800,
    )?;
    cx.shutdown()?;
    // The reference: a boot like the ones that merge (not the first, which
    // also makes the filesystems' first mount).
    let rec = cx.boot_ready(&BootPlan::rewind())?;
    out.idle_data_mounted_s = data_mounted_s(&rec);
    let a = guest::rewindd_usage(&mut cx)?;
    run(&mut cx, "sleep 5", 30)?;
    let b = guest::rewindd_usage(&mut cx)?;
    out.idle = b;
    out.idle_cpu_percent = (b.cpu_s - a.cpu_s) / (b.age_s - a.age_s).max(0.001) * 100.0;
    let dev = run(
        &mut cx,
        &format!(
            "fio --name=dev --filename=/data/bench/dev --rw=write --bs=1M --size={}M --direct=1 \
             --end_fsync=1 --ioengine=psync --output-format=json; rm -f /data/bench/dev",
            plan.device_write_mib
        ),
        900,
    )?;
    out.device_write_mib_s =
        super::fio::parse(&dev).map_err(|e| unexpected("fio device write", e.to_string()))?.mib_s();

    for &mib in &plan.changed_mib {
        checks::start(&mut cx, 2, "bench lifecycle")?;
        cx.shutdown()?;
        cx.boot_ready(&BootPlan::rewind())?;
        overwrite(&mut cx, mib)?;
        let cow = guest::cow_bytes(&mut cx)?.map(|(used, _)| used as f64 / (1 << 20) as f64).unwrap_or(0.0);
        cx.shutdown()?;
        let rec = cx.boot_ready(&BootPlan::rewind())?;
        let history = run(&mut cx, "rewindctl history", 60)?;
        let (merged_mib, merge_s) =
            parse_merged(&history).ok_or_else(|| unexpected("rewindd's history has no merge", history.clone()))?;
        out.rollbacks.push(RollbackPoint {
            changed_mib: mib,
            cow_mib: cow,
            merged_mib,
            merge_s,
            data_mounted_s: data_mounted_s(&rec),
        });
        if mib == largest {
            out.merge = guest::rewindd_usage(&mut cx)?;
        }
        overwrite(&mut cx, mib)?;
        let t = run(
            &mut cx,
            &format!("{MS_CLOCK} a=$(ms); rewindctl commit --reason bench >/dev/null; b=$(ms); echo $((b-a))"),
            300,
        )?;
        let history = run(&mut cx, "rewindctl history", 60)?;
        let rewindctl_ms = t.trim().parse().map_err(|_| unexpected("commit timing", t.clone()))?;
        out.commits.push(CommitPoint { changed_mib: mib, rewindctl_ms, rewindd_ms: parse_live_ms(&history) });
        crate::progress::log(&format!(
            "[bench] lifecycle {mib} MiB: merge {merged_mib} MiB in {merge_s:.1} s, /data at {:.2} s; commit {rewindctl_ms} ms",
            data_mounted_s(&rec)
        ));
        checks::wait_cow_gone(cx.target)?;
    }
    cx.shutdown()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_details_parse() {
        let h = "2026-12-03 rollback-finished merged 3 MiB in 0.5 s\n... rollback-finished merged 64 MiB in 2.1 s; no attempt left\n";
        assert_eq!(parse_merged(h), Some((64, 2.1)));
        assert_eq!(parse_live_ms("committed bench (live, 12 ms)\n"), Some(12));
        assert_eq!(parse_live_ms("nothing"), None);
    }
}
