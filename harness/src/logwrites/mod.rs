//! Lost volatile write caches (`rewind-harness log-writes`, issue 12 item
//! 2). One guest boots with its userdata and metadata disks under the
//! kernel's dm-log-writes (concatenated by dm-linear, logged as one
//! ordered stream onto a third disk, split again for rewind: guest init,
//! `/host/boot/log-writes`) while a phase runs: a commit, the arming boot
//! of an attempt, or a rollback's merge. Each chosen point of that phase
//! (every flush/FUA point when few, else a seeded sample, plus points
//! between flushes where the cache kept a seeded subset of the writes) is
//! rebuilt on the host from the disks as they were when logging began plus
//! the log ([`log`]), booted normally, and must end exactly at the
//! baseline or exactly committed ([`steps`], the campaign's verdict).

pub mod log;
mod steps;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use log::{Log, LogError, Point};
pub(crate) use steps::GUEST_LOG_IMAGE;

use crate::campaign::Outcome;
use crate::manifest::Manifest;
use crate::scenario::{self, Needs, Options, RunError, Scenario};

/// The phases a log covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// `rewindctl commit` of an attempt that booted.
    Commit,
    /// The boot that arms an attempt (prepare-userdata to /data mounted).
    Arm,
    /// The rollback's merge at the boot after a failed attempt.
    Merge,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Commit => "commit",
            Phase::Arm => "arm",
            Phase::Merge => "merge",
        }
    }

    /// The marks that open and close the phase in the log: the host's own
    /// around the commit call; the stage markers of guest init (each
    /// stage is a mark while logging) around prepare-userdata otherwise;
    /// a merge that ran on in the background closes at `merge-ended`
    /// instead, when the log has it.
    pub fn window(self) -> (&'static str, &'static str) {
        match self {
            Phase::Commit => (COMMIT_BEGIN, COMMIT_END),
            Phase::Arm | Phase::Merge => (crate::plan::stage::PREPARE_USERDATA, crate::plan::stage::DATA_MOUNTED),
        }
    }

    /// A commit cut anywhere may go either way; an arm or a merge ends at
    /// the baseline.
    pub fn allowed(self) -> &'static [Outcome] {
        match self {
            Phase::Commit => &[Outcome::Baseline, Outcome::Committed],
            Phase::Arm | Phase::Merge => &[Outcome::Baseline],
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "commit" => Ok(Phase::Commit),
            "arm" => Ok(Phase::Arm),
            "merge" => Ok(Phase::Merge),
            _ => Err(format!("phase {s:?}: expected commit, arm or merge")),
        }
    }
}

pub const COMMIT_BEGIN: &str = "commit-begin";
pub const COMMIT_END: &str = "commit-end";
/// The guest's logged device (the mark messages go to it).
pub const GUEST_LOG_DEVICE: &str = "lw-log";

/// A log-writes run.
#[derive(Debug, Clone)]
pub struct Config {
    pub phase: Phase,
    pub seed: u64,
    /// Flush/FUA points to replay at most (all when there are no more).
    pub points: usize,
    /// Points between flushes to replay.
    pub between: usize,
    /// Where the log and the disks as logging began are kept.
    pub out: PathBuf,
    /// Replay a kept log instead of recording one.
    pub from: Option<PathBuf>,
    /// Only these points (a replay); else those chosen from the seed.
    pub only: Vec<Point>,
    /// Keep the log and the guest's run directory even when all passed.
    pub keep: bool,
}

/// What the run found, written as `summary.json` in the output directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub phase: Phase,
    pub seed: u64,
    pub dir: PathBuf,
    pub entries: usize,
    /// Writes logged inside the phase's window.
    pub writes_in_phase: usize,
    pub flush_points_found: usize,
    pub flush_points_replayed: usize,
    pub between_replayed: usize,
    /// Guest time of the recording, ms (0 when replaying a kept log).
    pub record_ms: u64,
    /// Checks of the recording itself that failed (the logged boot ran
    /// over dm-log-writes, logging never stopped, the whole log replays
    /// to the disks the guest left): a log that fails them cannot vouch
    /// for its points, so the run fails too.
    #[serde(default)]
    pub recording_problems: Vec<String>,
    pub points: Vec<PointResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PointResult {
    pub point: Point,
    pub outcome: Option<Outcome>,
    pub phase: String,
    pub passed: bool,
    pub duration_ms: u64,
    /// The failed checks or the error.
    pub problems: Vec<String>,
    /// The one command that replays this point.
    pub replay: String,
}

impl Summary {
    pub fn passed(&self) -> bool {
        self.recording_problems.is_empty() && !self.points.is_empty() && self.points.iter().all(|p| p.passed)
    }

    pub fn render(&self) -> String {
        let mut s = format!(
            "log-writes {} (seed {}): {} entries, {} writes in the phase, {} flush/FUA points found, \
             {} replayed, {} between flushes; recorded in {:.0} s\n",
            self.phase,
            self.seed,
            self.entries,
            self.writes_in_phase,
            self.flush_points_found,
            self.flush_points_replayed,
            self.between_replayed,
            self.record_ms as f64 / 1000.0
        );
        for problem in &self.recording_problems {
            s += &format!("  recording FAILED: {problem}\n");
        }
        for p in &self.points {
            s += &format!(
                "  {:<22} {:<9} phase {:<11} {:>4.0} s  {}\n",
                p.point.to_string(),
                p.outcome.map(|o| o.as_str()).unwrap_or("-"),
                p.phase,
                p.duration_ms as f64 / 1000.0,
                if p.passed { "ok" } else { "FAILED" }
            );
            for problem in &p.problems {
                s += &format!("      {problem}\n");
            }
            if !p.passed {
                s += &format!("      replay: {}\n", p.replay);
            }
        }
        let passed = self.points.iter().filter(|p| p.passed).count();
        s += &format!("{passed}/{} points passed\n", self.points.len());
        s
    }
}

/// What the recording leaves for the replays (`recorded.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Recorded {
    phase: Phase,
    baseline: Manifest,
    committed: Option<Manifest>,
    userdata_bytes: u64,
    metadata_bytes: u64,
}

const RECORDED: &str = "recorded.json";
const SUMMARY: &str = "summary.json";
const LOG: &str = "log.img";
const INITIAL_USERDATA: &str = "initial-userdata.img";
const INITIAL_METADATA: &str = "initial-metadata.img";

#[derive(Debug, thiserror::Error)]
pub enum LogWritesError {
    #[error("Running the log-writes guest")]
    Run(#[source] Box<RunError>),
    #[error("The log-writes run left no summary in {path} ({error})")]
    NoSummary { path: PathBuf, error: String },
}

/// The scenario (not in the registry: it needs `Options::log_writes`).
pub static SCENARIO: Scenario = Scenario {
    name: "log-writes",
    summary: "A phase under dm-log-writes, replayed at its flush points (and between them) onto copies; each ends at the baseline or committed exactly",
    needs: Needs::DAEMON,
    run: steps::run,
};

/// Records (or takes the kept) log and replays its points in one guest;
/// the summary, passed or not. The output directory is removed when every
/// point passed, unless kept.
pub fn run(cfg: &Config) -> Result<Summary, LogWritesError> {
    let options = Options { keep: cfg.keep, log_writes: Some(cfg.clone()), ..Options::default() };
    let report = scenario::run_scenario(&SCENARIO, &options).map_err(|e| LogWritesError::Run(Box::new(e)))?;
    let dir = cfg.from.clone().unwrap_or_else(|| cfg.out.clone());
    let path = dir.join(SUMMARY);
    let mut summary: Summary = std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        .map_err(|error| LogWritesError::NoSummary {
            path: path.clone(),
            error: report.error.clone().unwrap_or(error),
        })?;
    if let Some(e) = &report.error {
        // A step outside any point (the recording) stopped the run.
        summary.points.push(PointResult {
            point: Point::Flush { entry: 0 },
            outcome: None,
            phase: String::new(),
            passed: false,
            duration_ms: 0,
            problems: vec![e.clone()],
            replay: replay_command(cfg, None),
        });
    }
    if summary.passed() && !cfg.keep && cfg.from.is_none() {
        let _ = std::fs::remove_dir_all(&cfg.out);
    }
    Ok(summary)
}

/// The command that replays `point` of this run's kept log (or the whole
/// run from its seed, when no log was kept).
pub fn replay_command(cfg: &Config, point: Option<&Point>) -> String {
    let dir = cfg.from.as_deref().unwrap_or(&cfg.out);
    match point {
        Some(p) => format!("rewind-harness log-writes --from {} --point {p}", shell_path(dir)),
        None => format!(
            "rewind-harness log-writes --phase {} --seed {} --points {} --between {}",
            cfg.phase, cfg.seed, cfg.points, cfg.between
        ),
    }
}

fn shell_path(p: &Path) -> String {
    crate::plan::shell_quote(&p.display().to_string())
}

/// The default output directory: under the runs directory, named for the
/// phase, seed and time.
pub fn default_out(phase: Phase, seed: u64) -> PathBuf {
    let stamp =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    crate::paths::kit_dir().join("log-writes").join(format!("{phase}-seed{seed}-{stamp}"))
}

/// The phase a kept log was recorded in.
pub fn recorded_phase(dir: &Path) -> Option<Phase> {
    let text = std::fs::read_to_string(dir.join(RECORDED)).ok()?;
    serde_json::from_str::<Recorded>(&text).ok().map(|r| r.phase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_parse_and_name_their_windows() {
        for p in [Phase::Commit, Phase::Arm, Phase::Merge] {
            assert_eq!(p.as_str().parse::<Phase>(), Ok(p));
        }
        assert!("shutdown".parse::<Phase>().is_err());
        assert_eq!(Phase::Commit.window(), (COMMIT_BEGIN, COMMIT_END));
        assert_eq!(Phase::Merge.allowed(), &[Outcome::Baseline]);
        assert_eq!(Phase::Commit.allowed(), &[Outcome::Baseline, Outcome::Committed]);
    }

    #[test]
    fn a_failed_point_names_the_command_that_replays_it() {
        let cfg = Config {
            phase: Phase::Commit,
            seed: 3,
            points: 4,
            between: 2,
            out: PathBuf::from("/k/log writes"),
            from: None,
            only: vec![],
            keep: false,
        };
        assert_eq!(
            replay_command(&cfg, Some(&Point::Between { entry: 12, seed: 7 })),
            "rewind-harness log-writes --from '/k/log writes' --point between@12:7"
        );
        assert_eq!(
            replay_command(&cfg, None),
            "rewind-harness log-writes --phase commit --seed 3 --points 4 --between 2"
        );
    }
}
