//! What the log-writes run does on its one guest: the old system and its
//! checkpoint, the phase under dm-log-writes (the recording), then each
//! chosen point rebuilt onto the guest's own disks and booted normally,
//! judged by the campaign's verdict (settle, judge, end state).

use std::path::Path;
use std::time::Instant;

use crate::campaign::{check_end_state, judge, settle, Outcome};
use crate::plan::BootPlan;
use crate::scenario::{checks, Ctx, ScenarioError};
use crate::target::TargetError;

use super::log::{self, Log, Point};
use super::{
    replay_command, Config, Phase, PointResult, Recorded, Summary, COMMIT_BEGIN, COMMIT_END, GUEST_LOG_DEVICE,
    INITIAL_METADATA, INITIAL_USERDATA, LOG, RECORDED, SUMMARY,
};

/// The log disk the guest gets while recording (sparse; the phase with its
/// boot writes a few tens of MiB, each write once more as its header).
const LOG_MIB: u64 = 2048;
/// The file the QEMU guest attaches as the `logwrites` disk when present.
pub(crate) const GUEST_LOG_IMAGE: &str = "logwrites.img";
/// The stage guest init reports once the logged stack is up.
const LOG_UP_STAGE: &str = "log-writes-up";

fn other(e: impl std::fmt::Display) -> ScenarioError {
    ScenarioError::other(e.to_string())
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ScenarioError + '_ {
    move |e| ScenarioError::other(format!("{}: {e}", path.display()))
}

pub(super) fn run(cx: &mut Ctx) -> Result<(), ScenarioError> {
    let mut cfg = cx
        .options
        .log_writes
        .clone()
        .ok_or_else(|| ScenarioError::other("the log-writes run goes through `rewind-harness log-writes` only"))?;
    let started = Instant::now();
    let (dir, rec, record_ms) = match cfg.from.clone() {
        Some(dir) => {
            let p = dir.join(RECORDED);
            let text = std::fs::read_to_string(&p).map_err(io(&p))?;
            let rec: Recorded = serde_json::from_str(&text).map_err(|e| other(format!("{}: {e}", p.display())))?;
            (dir, rec, 0)
        }
        None => {
            let rec = record(cx, &cfg)?;
            (cfg.out.clone(), rec, started.elapsed().as_millis() as u64)
        }
    };
    cfg.phase = rec.phase;
    let log = Log::open(&dir.join(LOG)).map_err(other)?;
    let (open, close) = rec.phase.window();
    let marks = || format!("{:?}", log.marks());
    let begin = log.mark(open, 0).ok_or_else(|| other(format!("no mark {open:?} in the log (marks {})", marks())))?;
    // The last rollback's merge runs on after /data mounted (in the
    // background, the default): its window ends where the merge did.
    let background_end =
        if rec.phase == Phase::Merge { log.mark(crate::plan::stage::MERGE_ENDED, begin) } else { None };
    let end = background_end
        .or_else(|| log.mark(close, begin))
        .ok_or_else(|| other(format!("no mark {close:?} after {open:?} (marks {})", marks())))?;
    let in_phase = &log.entries[begin + 1..end];
    let writes_in_phase = in_phase.iter().filter(|e| e.is_write()).count();
    let (found, chosen) = log::choose(&log, begin, end, cfg.points, cfg.between, cfg.seed);
    let points = if cfg.only.is_empty() { chosen } else { cfg.only.clone() };
    let flush_points_replayed = points.iter().filter(|p| matches!(p, Point::Flush { .. })).count();
    let msg = format!(
        "{} phase: entries {begin}..{end} of {}, {writes_in_phase} writes, {found} flush/FUA points; replaying {} ({} between flushes)",
        rec.phase,
        log.entries.len(),
        points.len(),
        points.len() - flush_points_replayed
    );
    cx.say(&msg);
    cx.report.facts.insert("flush points".into(), format!("{found} found, {flush_points_replayed} replayed"));
    let mut summary = Summary {
        phase: rec.phase,
        seed: cfg.seed,
        dir: dir.clone(),
        entries: log.entries.len(),
        writes_in_phase,
        flush_points_found: found,
        flush_points_replayed,
        between_replayed: points.len() - flush_points_replayed,
        record_ms,
        // Only a recording made by this run has checks here (a replay of a
        // kept log starts with none).
        recording_problems: cx
            .report
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{} ({})", c.name, c.detail))
            .collect(),
        points: Vec::new(),
    };
    write_summary(&dir, &summary)?;
    for point in points {
        let r = replay_point(cx, &cfg, &dir, &log, &rec, point);
        cx.report.facts.insert(
            format!("point {point}"),
            format!("{} {}", r.outcome.map(|o| o.as_str()).unwrap_or("-"), if r.passed { "ok" } else { "FAILED" }),
        );
        summary.points.push(r);
        write_summary(&dir, &summary)?;
    }
    Ok(())
}

fn write_summary(dir: &Path, s: &Summary) -> Result<(), ScenarioError> {
    let p = dir.join(SUMMARY);
    let text = serde_json::to_string_pretty(s).map_err(other)?;
    std::fs::write(&p, text).map_err(io(&p))
}

/// The old system, then the phase under dm-log-writes; keeps the disks as
/// logging began, the log and the manifests in `cfg.out`.
fn record(cx: &mut Ctx, cfg: &Config) -> Result<Recorded, ScenarioError> {
    std::fs::create_dir_all(&cfg.out).map_err(io(&cfg.out))?;
    cx.say(&format!("recording the {} phase under dm-log-writes into {}", cfg.phase, cfg.out.display()));
    cx.boot_ready(&BootPlan::rewind())?;
    cx.run_baseline()?;
    cx.exec_checked("sync")?;
    let baseline = checks::data_manifest(cx)?;
    checks::start(cx, 1, "log-writes")?;
    cx.shutdown()?;
    let attempt = BootPlan::rewind().with_workload(1);
    if cfg.phase == Phase::Merge {
        // The attempt dies after its writes (a power cut); the next boot,
        // the logged one, merges it away.
        cx.boot_ready(&attempt)?;
        cx.exec_checked("sync")?;
        cx.target.power_cut()?;
    }

    // The disks as logging begins: what every replay starts from.
    let run = cx.target.artifacts_dir();
    let (ud, md) = (run.join("userdata.img"), run.join("metadata.img"));
    let (iu, im) = (cfg.out.join(INITIAL_USERDATA), cfg.out.join(INITIAL_METADATA));
    copy_sparse(&ud, &iu)?;
    copy_sparse(&md, &im)?;
    let log_img = run.join(GUEST_LOG_IMAGE);
    std::fs::File::create(&log_img).and_then(|f| f.set_len(LOG_MIB << 20)).map_err(io(&log_img))?;

    let mut committed = None;
    let rec = match cfg.phase {
        Phase::Commit => cx.boot_ready(&attempt)?,
        Phase::Arm | Phase::Merge => cx.boot_ready(&BootPlan::rewind())?,
    };
    cx.require(
        "the logged boot runs over dm-log-writes",
        rec.stages.iter().any(|s| s == LOG_UP_STAGE),
        format!("stages {:?}", rec.stages),
    )?;
    if cfg.phase == Phase::Commit {
        cx.exec_checked("sync")?;
        committed = Some(checks::data_manifest(cx)?);
        mark(cx, COMMIT_BEGIN)?;
        cx.exec_checked("rewindctl commit --reason log-writes")?;
        // The commit's last writes reach the log only with a flush.
        cx.exec_checked("sync")?;
        mark(cx, COMMIT_END)?;
    }
    let status = cx.exec_checked(&format!("dmsetup status {GUEST_LOG_DEVICE}"))?;
    cx.check("dm-log-writes kept logging", !status.contains("logging_disabled"), status.trim().to_string());
    cx.shutdown()?;
    let log_path = cfg.out.join(LOG);
    if std::fs::rename(&log_img, &log_path).is_err() {
        // --out on another filesystem than the run directory.
        copy_sparse(&log_img, &log_path)?;
        std::fs::remove_file(&log_img).map_err(io(&log_img))?;
    }
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).map_err(io(p));
    let rec =
        Recorded { phase: cfg.phase, baseline, committed, userdata_bytes: size(&iu)?, metadata_bytes: size(&im)? };
    check_whole_log(cx, &cfg.out, &rec, [&ud, &md])?;
    let p = cfg.out.join(RECORDED);
    std::fs::write(&p, serde_json::to_string(&rec).map_err(other)?).map_err(io(&p))?;
    Ok(rec)
}

/// The witness of the layering and the replayer: every entry of the log
/// replayed onto the disks as logging began gives, byte for byte, the
/// disks the guest left (its clean shutdown flushed everything it wrote).
fn check_whole_log(cx: &mut Ctx, out: &Path, rec: &Recorded, left: [&Path; 2]) -> Result<(), ScenarioError> {
    let log = Log::open(&out.join(LOG)).map_err(other)?;
    let (cu, cm) = (out.join("whole-log-userdata.img"), out.join("whole-log-metadata.img"));
    copy_sparse(&out.join(INITIAL_USERDATA), &cu)?;
    copy_sparse(&out.join(INITIAL_METADATA), &cm)?;
    let all: Vec<usize> = (0..log.entries.len()).collect();
    log.apply(&all, &[(cu.clone(), rec.userdata_bytes), (cm.clone(), rec.metadata_bytes)]).map_err(other)?;
    let du = differing_mib(&cu, left[0])?;
    let dm = differing_mib(&cm, left[1])?;
    let _ = std::fs::remove_file(&cu);
    let _ = std::fs::remove_file(&cm);
    cx.check(
        "the whole log replayed onto the disks as logging began equals the disks the guest left",
        du.is_empty() && dm.is_empty(),
        format!("{} entries; MiB that differ: userdata {du:?}, metadata {dm:?}", log.entries.len()),
    );
    Ok(())
}

/// The 1 MiB chunks (by index) in which two images differ.
fn differing_mib(a: &Path, b: &Path) -> Result<Vec<u64>, ScenarioError> {
    let (mut fa, mut fb) = (std::fs::File::open(a).map_err(io(a))?, std::fs::File::open(b).map_err(io(b))?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut out = Vec::new();
    for i in 0.. {
        let na = crate::sparse::read_full(&mut fa, &mut ba).map_err(io(a))?;
        let nb = crate::sparse::read_full(&mut fb, &mut bb).map_err(io(b))?;
        if na == 0 && nb == 0 {
            break;
        }
        if na != nb || ba[..na] != bb[..nb] {
            out.push(i);
        }
    }
    Ok(out)
}

/// A mark in the guest's log (between the writes before and after it).
fn mark(cx: &mut Ctx, name: &str) -> Result<(), ScenarioError> {
    cx.exec_checked(&format!("dmsetup message {GUEST_LOG_DEVICE} 0 mark {name}"))?;
    Ok(())
}

/// [`crate::sparse::copy`], as a scenario error naming the files.
fn copy_sparse(from: &Path, to: &Path) -> Result<(), ScenarioError> {
    crate::sparse::copy(from, to)
        .map_err(|e| ScenarioError::other(format!("Copying {} to {}: {e}", from.display(), to.display())))
}

/// One point: the disks rebuilt as a power cut there leaves them, booted
/// until rewind settles, then the campaign's verdict.
fn replay_point(cx: &mut Ctx, cfg: &Config, dir: &Path, log: &Log, rec: &Recorded, point: Point) -> PointResult {
    let started = Instant::now();
    let checks_before = cx.report.checks.len();
    let result = replay_steps(cx, dir, log, rec, point);
    if result.is_err() {
        // Leave the guest off for the next point.
        match cx.target.power_cut() {
            Ok(_) | Err(TargetError::NotRunning) => {}
            Err(e) => cx.say(&format!("powering off after {point}: {e}")),
        }
    }
    let mut problems: Vec<String> = cx.report.checks[checks_before..]
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{}: {}", c.name, c.detail.lines().next().unwrap_or("")))
        .collect();
    let (outcome, phase) = match result {
        Ok((o, p)) => (Some(o), p),
        Err(e) => {
            problems.push(crate::scenario::error_chain(&e));
            (None, String::new())
        }
    };
    PointResult {
        point,
        outcome,
        phase,
        passed: problems.is_empty(),
        duration_ms: started.elapsed().as_millis() as u64,
        problems,
        replay: replay_command(cfg, Some(&point)),
    }
}

fn replay_steps(
    cx: &mut Ctx,
    dir: &Path,
    log: &Log,
    rec: &Recorded,
    point: Point,
) -> Result<(Outcome, String), ScenarioError> {
    let run = cx.target.artifacts_dir();
    let (ud, md) = (run.join("userdata.img"), run.join("metadata.img"));
    copy_sparse(&dir.join(INITIAL_USERDATA), &ud)?;
    copy_sparse(&dir.join(INITIAL_METADATA), &md)?;
    let state = log.state(&point);
    log.apply(&state, &[(ud, rec.userdata_bytes), (md, rec.metadata_bytes)]).map_err(other)?;
    let dropped = (point.entry() + 1).saturating_sub(state.len());
    cx.say(&format!("point {point}: {} entries replayed, {dropped} left out (lost in the cache)", state.len()));
    let phase = settle(cx)?;
    let outcome = judge(cx, &rec.baseline, rec.committed.as_ref(), rec.phase.allowed(), &phase)?;
    check_end_state(cx)?;
    cx.shutdown()?;
    Ok((outcome, phase))
}
