//! `rewind-harness bench`: what a checkpoint costs, measured side by side
//! in one run (issue 10). One guest session per configuration (the idle
//! stack, block mode at several chunk sizes with and without the free
//! map, f2fs's checkpoint=disable beside its plain mount), fio in the
//! guest; then commit and rollback over changed data, the stack's build
//! over a fragmented store, rewindd's memory and CPU, binary sizes. Every
//! figure is printed with its ratio to the idle stack of the same run;
//! nothing is asserted about a timing.
//!
//! `f2fs_mount` keeps the older f2fs mount/write/commit figures
//! (`bench --f2fs-checkpoint`, the guest-f2fs-bench scenario).

pub mod f2fs_mount;
pub mod fio;
pub mod guest;
pub mod html;
pub mod lifecycle;
pub mod matrix;
pub mod plan;
pub mod plot;
pub mod report;
pub mod scale;
pub mod stats;
pub mod tables;

use std::path::{Path, PathBuf};
use std::time::Instant;

pub use f2fs_mount::{f2fs_checkpoint, parse_f2fs, F2fsFigures, WRITE_MIB};
pub use guest::BenchError;
pub use plan::{Config, Plan};
pub use report::BenchReport;

/// Runs the whole benchmark (`plan`), one guest at a time.
pub fn run(plan: &Plan) -> Result<BenchReport, BenchError> {
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut ota = Vec::new();
    let mut notes = Vec::new();
    let mut free_map_read_ms = None;
    let mut session_rollbacks = Vec::new();
    // REWIND_BENCH_SECTIONS=matrix,lifecycle,scale (default all): a part
    // alone, while working on it; the report then lacks the others.
    // "tables" alone runs the scale session's table loads without its
    // fragmented stores.
    let sections = std::env::var("REWIND_BENCH_SECTIONS").unwrap_or_else(|_| "matrix,lifecycle,scale".into());
    let want = |s: &str| sections.split(',').any(|x| x.trim() == s);
    let configs: Vec<Config> = plan.configs.iter().copied().filter(|_| want("matrix")).collect();
    let scale_session = want("scale") || want("tables");
    let sessions = configs.len() + usize::from(want("lifecycle")) + usize::from(scale_session);
    let mut progress = crate::progress::Progress::new(sessions as u64, "session");
    for config in configs {
        progress.begin(&config.label());
        let out = matrix::session(plan, config)?;
        samples.extend(out.samples);
        ota.extend(out.ota);
        notes.extend(out.notes);
        free_map_read_ms = free_map_read_ms.or(out.free_map_read_ms);
        session_rollbacks.extend(out.rollback);
    }
    let lifecycle = if want("lifecycle") {
        progress.begin("commit and rollback");
        lifecycle::session(plan)?
    } else {
        Default::default()
    };
    let scale = if scale_session {
        progress.begin("stack build over fragmented stores, table loads");
        scale::session(plan, if want("scale") { &plan.extents } else { &[] })?
    } else {
        Default::default()
    };
    progress.finish();
    let mut r = BenchReport {
        date: date(),
        machine: machine(),
        plan: plan.clone(),
        duration_s: started.elapsed().as_secs_f64(),
        rows: report::rows(&samples),
        ota: report::ota_rows(&ota),
        lifecycle,
        scale,
        free_map_read_ms,
        session_rollbacks,
        binaries: binaries(),
        targets: Vec::new(),
        notes,
        samples,
    };
    r.targets = report::targets(&r);
    Ok(r)
}

fn host_output(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn date() -> String {
    host_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
}

/// "2 x AMD EPYC ..., QEMU TCG": the host's CPU and how guests run.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let accel = std::env::var("REWIND_ACCEL").unwrap_or_else(|_| "tcg (no KVM on this host)".into());
    format!("{cpus} x {model}, guests 1 vCPU, {accel}")
}

/// Sizes of rewindd and rewindctl: the release build when there is one
/// (`cargo build --release -p rewind-daemon`), and the stripped debug
/// build the guests run.
fn binaries() -> Vec<BinarySize> {
    let target = crate::paths::workspace_root().join("target/x86_64-unknown-linux-gnu");
    let mut out = Vec::new();
    for name in ["rewindd", "rewindctl"] {
        for (dir, build) in [("release", "release (static, not stripped)"), ("debug", "debug (static, not stripped)")] {
            let p: PathBuf = target.join(dir).join(name);
            if let Ok(m) = std::fs::metadata(&p) {
                out.push(BinarySize { name: name.into(), build: build.into(), bytes: m.len() });
            }
        }
    }
    out
}

use report::BinarySize;

/// Writes the JSON report.
pub fn write_json(r: &BenchReport, path: &Path) -> Result<(), BenchError> {
    let text =
        serde_json::to_string_pretty(r).map_err(|e| guest::unexpected("serializing the report", e.to_string()))?;
    std::fs::write(path, text).map_err(|source| BenchError::Write { path: path.to_path_buf(), source })
}
