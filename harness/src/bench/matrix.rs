//! The throughput and space matrix: one guest session per configuration.
//! The old system writes the baseline (a region per write workload and
//! repetition, a read region, the databases), a checkpoint is started
//! (none for the idle stack), and after a reboot the attempt runs every
//! fio workload on new files, on the baseline (first write) and on the
//! same blocks again, then the first-boot-after-an-update workload.

use serde::Serialize;

use super::fio::{self, FioResult, Job, Variant, Workload};
use super::guest::{self, run, unexpected, BenchError};
use super::plan::{Config, Plan};
use crate::plan::{BootPlan, FsType};
use crate::scenario::{Ctx, Options};

const DIR: &str = "/data/bench";

/// One fio run.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub config: Config,
    pub workload: Workload,
    pub variant: Variant,
    pub rep: u32,
    pub fio: FioResult,
    /// Growth of the COW store (block mode) or of f2fs's unusable space.
    pub space_bytes: Option<u64>,
}

/// The first boot after an update, once per session.
#[derive(Debug, Clone, Serialize)]
pub struct OtaSample {
    pub config: Config,
    pub new_bytes: u64,
    pub database_bytes: u64,
    pub runtime_ms: u64,
    pub space_bytes: Option<u64>,
    /// The store's size (block mode).
    pub store_bytes: Option<u64>,
}

/// The rollback of a block session's attempt (every matrix workload and
/// the first-boot model): the same attempt in each block configuration,
/// so the merge it costs compares across chunk sizes and the free map.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRollback {
    pub config: Config,
    /// The store's use when the attempt ended (the kernel's account).
    pub cow_used_bytes: u64,
    /// rewindd's "merged N MiB in S s".
    pub merged_mib: u64,
    pub merge_s: f64,
    /// Power on to /data mounted in the boot that merged.
    pub data_mounted_s: f64,
}

/// What a session measured, with the armed table's shape.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SessionOut {
    pub samples: Vec<Sample>,
    pub ota: Vec<OtaSample>,
    pub notes: Vec<String>,
    /// With the free map: how long the arm took to read it (status's
    /// "read in N ms").
    pub free_map_read_ms: Option<u64>,
    pub rollback: Option<SessionRollback>,
}

/// "(read in 102 ms)" of the free map's detail in `rewindctl status --json`.
pub fn parse_read_ms(status: &str) -> Option<u64> {
    let i = status.find("read in ")?;
    status[i + 8..].split_whitespace().next()?.parse().ok()
}

fn base_file(w: Workload, rep: u32) -> String {
    format!("{DIR}/base-{}-{rep}", w.as_str())
}

fn write_workloads() -> impl Iterator<Item = Workload> {
    Workload::ALL.into_iter().filter(|w| *w != Workload::RandRead)
}

/// The baseline: zero-filled regions written with dd and synced.
fn write_baseline(cx: &mut Ctx, plan: &Plan) -> Result<(), BenchError> {
    let mut files: Vec<(String, u64)> = Vec::new();
    for rep in 0..plan.reps {
        files.extend(write_workloads().map(|w| (base_file(w, rep), plan.size(w).region)));
    }
    files.push((base_file(Workload::RandRead, 0), plan.read.region));
    files.extend((0..plan.ota.databases).map(|i| (format!("{DIR}/db-{i}"), plan.ota.database_bytes)));
    let dds: Vec<String> =
        files.iter().map(|(f, b)| format!("dd if=/dev/zero of={f} bs=1M count={} 2>/dev/null", b >> 20)).collect();
    run(cx, &format!("set -e; mkdir -p {DIR}; {}; sync", dds.join("; ")), 900)?;
    Ok(())
}

/// Space used now: the COW store (block mode) or f2fs's unusable bytes.
fn space(cx: &mut Ctx, config: Config) -> Result<Option<u64>, BenchError> {
    Ok(match config {
        Config::Block { .. } => guest::cow_bytes(cx)?.map(|(used, _)| used),
        Config::F2fsDisabled => guest::f2fs_unusable_bytes(cx)?,
        _ => None,
    })
}

fn fio_run(cx: &mut Ctx, job: &Job) -> Result<FioResult, BenchError> {
    let out = run(cx, &job.command(), 900)?;
    fio::parse(&out).map_err(|e| unexpected(format!("fio {}", job.command()), e.to_string()))
}

/// Every workload and variant, `plan.reps` times, in the running attempt.
fn run_matrix(cx: &mut Ctx, plan: &Plan, config: Config, out: &mut SessionOut) -> Result<(), BenchError> {
    for rep in 0..plan.reps {
        for w in Workload::ALL {
            let size = plan.size(w);
            for &variant in w.variants() {
                let file = match variant {
                    Variant::NewFile => format!("{DIR}/new-{}-{rep}", w.as_str()),
                    Variant::Baseline => base_file(w, 0),
                    Variant::Overwrite | Variant::Rewrite => base_file(w, rep),
                };
                let job = Job { workload: w, file, region: size.region, io: size.io };
                run(cx, "sync", 60)?;
                let before = space(cx, config)?;
                let fio = fio_run(cx, &job)?;
                let after = space(cx, config)?;
                let space_bytes = before.zip(after).map(|(b, a)| a.saturating_sub(b));
                crate::progress::log(&format!(
                    "[bench] {:<20} {:<19} {:<9} rep {rep}: {:7.2} MiB/s{}",
                    config.label(),
                    w.as_str(),
                    variant.as_str(),
                    fio.mib_s(),
                    space_bytes.map(|b| format!(", +{} KiB", b >> 10)).unwrap_or_default()
                ));
                out.samples.push(Sample { config, workload: w, variant, rep, fio, space_bytes });
            }
        }
    }
    Ok(())
}

/// The first boot after an update, scaled down: many small new files
/// (app caches and data), fewer large ones (dexopt output), and pages of
/// the databases rewritten with an fsync each.
fn run_ota(cx: &mut Ctx, plan: &Plan, config: Config, out: &mut SessionOut) -> Result<(), BenchError> {
    let o = plan.ota;
    run(cx, &format!("mkdir -p {DIR}/ota-small {DIR}/ota-large; sync"), 60)?;
    let before = space(cx, config)?;
    let files = |dir: &str, n: u64, bytes: u64| {
        format!(
            "fio --name=ota --directory={DIR}/{dir} --nrfiles={n} --filesize={bytes} --size={} --rw=write \
             --bs={} --file_service_type=sequential --openfiles=32 --end_fsync=1 --ioengine=psync --output-format=json",
            n * bytes,
            bytes.min(1 << 20)
        )
    };
    let dbs: Vec<String> = (0..o.databases).map(|i| format!("{DIR}/db-{i}")).collect();
    let db_job = format!(
        "fio --name=db --filename={} --size={} --io_size={} --rw=randwrite --bs=4k --fsync=1 --ioengine=psync \
         --randrepeat=1 --randseed=7 --output-format=json",
        dbs.join(":"),
        o.databases * o.database_bytes,
        o.databases * o.database_io
    );
    let mut runtime_ms = 0;
    let mut database_bytes = 0;
    for cmd in [
        files("ota-small", o.small_files, o.small_file_bytes),
        files("ota-large", o.large_files, o.large_file_bytes),
        db_job,
    ] {
        let r = fio::parse(&run(cx, &cmd, 900)?).map_err(|e| unexpected(format!("fio {cmd}"), e.to_string()))?;
        runtime_ms += r.runtime_ms;
        if cmd.contains("--name=db") {
            database_bytes = r.write_bytes;
        }
    }
    let after = space(cx, config)?;
    let store_bytes = match config {
        Config::Block { .. } => guest::cow_bytes(cx)?.map(|(_, total)| total),
        _ => None,
    };
    let space_bytes = before.zip(after).map(|(b, a)| a.saturating_sub(b));
    out.ota.push(OtaSample { config, new_bytes: o.new_bytes(), database_bytes, runtime_ms, space_bytes, store_bytes });
    Ok(())
}

/// The attempt is not committed: the next boot (no attempt left) merges
/// it away inside prepare-userdata; its time comes from rewindd's history.
fn roll_back(cx: &mut Ctx, config: Config) -> Result<SessionRollback, BenchError> {
    let cow_used_bytes = guest::cow_bytes(cx)?.map(|(used, _)| used).unwrap_or(0);
    cx.shutdown()?;
    let rec = cx.boot_ready(&BootPlan::rewind())?;
    let history = run(cx, "rewindctl history", 60)?;
    let (merged_mib, merge_s) = super::lifecycle::parse_merged(&history)
        .ok_or_else(|| unexpected(format!("{}: rewindd's history has no merge", config.label()), history.clone()))?;
    let data_mounted_s = super::lifecycle::data_mounted_s(&rec);
    Ok(SessionRollback { config, cow_used_bytes, merged_mib, merge_s, data_mounted_s })
}

/// The armed top table's shape, for the report's notes.
fn table_note(cx: &mut Ctx, config: Config) -> Result<String, BenchError> {
    let table = run(cx, "dmsetup table rewind-userdata 2>/dev/null || true", 30)?;
    let count = |kind: &str| table.lines().filter(|l| l.contains(kind)).count();
    Ok(format!(
        "{}: rewind-userdata has {} lines ({} snapshot-origin, {} linear)",
        config.label(),
        table.lines().count(),
        count(" snapshot-origin "),
        count(" linear ")
    ))
}

/// One session: a fresh guest, the baseline, the checkpoint (for an armed
/// configuration), and the matrix in the attempt. f2fs runs two
/// configurations in its session: the plain mount first, then the
/// attempt with checkpoint=disable over the same baseline.
pub fn session(plan: &Plan, config: Config) -> Result<SessionOut, BenchError> {
    let fs = if matches!(config, Config::F2fsPlain | Config::F2fsDisabled) { FsType::F2fs } else { FsType::Ext4 };
    // QEMU's -name takes letters, digits and dashes safely.
    let slug: String =
        config.label().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect::<String>();
    let name = format!("bench-{}", slug.split('-').filter(|w| !w.is_empty()).collect::<Vec<_>>().join("-"));
    let mut guest = guest::new_guest(&name, fs, plan.userdata_mib, &config.rewindd_extra())?;
    let mut cx = Ctx::new(&mut guest, &name, Options::default());
    let mut out = SessionOut::default();
    cx.boot_ready(&BootPlan::rewind())?;
    write_baseline(&mut cx, plan)?;
    if config == Config::F2fsDisabled {
        run_matrix(&mut cx, plan, Config::F2fsPlain, &mut out)?;
        run_ota(&mut cx, plan, Config::F2fsPlain, &mut out)?;
        // The plain round's new files go; its rewrites stay baseline data.
        run(&mut cx, &format!("rm -rf {DIR}/new-* {DIR}/ota-*; sync"), 120)?;
    }
    if config != Config::Idle {
        crate::scenario::checks::start(&mut cx, 1, "bench")?;
    }
    cx.shutdown()?;
    cx.boot_ready(&BootPlan::rewind())?;
    if let Config::Block { .. } = config {
        let note = table_note(&mut cx, config)?;
        out.notes.push(note);
        if let Config::Block { free_map: true, .. } = config {
            let st = run(&mut cx, "rewindctl status --json", 60)?;
            out.free_map_read_ms = parse_read_ms(&st);
        }
    }
    run_matrix(&mut cx, plan, config, &mut out)?;
    run_ota(&mut cx, plan, config, &mut out)?;
    if let Config::Block { .. } = config {
        out.rollback = Some(roll_back(&mut cx, config)?);
    }
    cx.shutdown()?;
    if let Some(c) = cx.report.checks.iter().find(|c| !c.passed) {
        out.notes.push(format!("{}: check failed: {}: {}", config.label(), c.name, c.detail));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_free_maps_read_time_comes_from_status() {
        let st = r#"{"free_map":{"detail":"taken from the ext4 block bitmaps at attempt 1 (read in 102 ms); 57 free chunks"}}"#;
        assert_eq!(super::parse_read_ms(st), Some(102));
        assert_eq!(super::parse_read_ms("{}"), None);
    }
}
