//! The power-cut campaign (`rewind-harness campaign`): trials derived from
//! a seed ([`trial`]), each cutting the power in one phase of an update,
//! sometimes again on the boots after, then checking that userdata ends
//! exactly at the baseline or exactly committed ([`steps`], a scenario run
//! by the one run loop), with JSON/JUnit reports that shards merge
//! ([`report`]).

pub mod html;
mod report;
mod steps;
mod trial;

use std::path::PathBuf;

pub use report::{merge, read, CampaignReport, PhaseCounts, Spec, TrialResult};
pub use trial::{Cut, Outcome, Phase, Shard, Trial};
// The verdict the dm-log-writes replays share (`logwrites`).
pub(crate) use steps::{check_end_state, judge, settle};

use crate::plan::FsType;
use crate::scenario::{self, Needs, Options, RunError, Scenario};

#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error("Running campaign trial {index}")]
    Run {
        index: u64,
        #[source]
        source: Box<RunError>,
    },
    #[error("Encoding the campaign report")]
    Encode(#[source] serde_json::Error),
    #[error("Creating {path}, where the trials' old systems are kept")]
    OldSystems {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Reading campaign report {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a campaign report (rewind-harness campaign --report)")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} is another campaign ({theirs:?}, not {ours:?}): only shards of one campaign merge")]
    OtherCampaign { path: PathBuf, theirs: Box<Spec>, ours: Box<Spec> },
    #[error("Trial {index} is in both {first} and {second}: the shards overlap")]
    TrialTwice { index: u64, first: PathBuf, second: PathBuf },
    #[error(transparent)]
    Write(#[from] crate::report::ReportError),
    #[error("No report to merge")]
    NothingToMerge,
}

/// The trial, as a scenario (not in the registry: it needs its trial in
/// `Options::trial`, which only the campaign sets).
pub static TRIAL: Scenario = Scenario {
    name: "campaign-trial",
    summary: "One power-cut campaign trial: a phase of an update cut, rewind finishes, userdata is the baseline or committed exactly",
    needs: Needs::DAEMON,
    run: steps::run_trial,
};

/// A campaign run (or one shard of it, or one trial).
#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    pub trials: u64,
    pub fs: FsType,
    pub metadata_encryption: bool,
    pub shard: Shard,
    /// Only these trials (a replay, a fixed subset); when empty, the
    /// shard's slice of `0..trials`.
    pub only: Vec<u64>,
    pub keep: bool,
    /// Boot every trial's old system instead of restoring the one the
    /// run's first trial saved (`--fresh`).
    pub fresh: bool,
}

impl Config {
    pub fn spec(&self) -> Spec {
        Spec {
            seed: self.seed,
            trials: self.trials,
            fs: self.fs.as_str().into(),
            metadata_encryption: self.metadata_encryption,
        }
    }

    /// The trial indices this run takes.
    pub fn indices(&self) -> Vec<u64> {
        if self.only.is_empty() {
            self.shard.indices(self.trials).collect()
        } else {
            self.only.clone()
        }
    }
}

/// The trials `cfg` would run, one line each (`campaign --list`).
pub fn list(cfg: &Config) -> String {
    cfg.indices().into_iter().map(|i| format!("{i:>5}  {}\n", Trial::derive(cfg.seed, i).describe())).collect()
}

/// Runs the trials of `cfg`, one guest each, one after the other; a line
/// per trial (and the replay command of each failure) as they end.
pub fn run(cfg: &Config) -> Result<CampaignReport, CampaignError> {
    run_each(cfg, |_| Ok(()))
}

/// [`run`], handing the report so far to `after` when each trial ends (the
/// CLI rewrites its report files, so a campaign stopped midway keeps the
/// trials it ran, and its shard still merges).
pub fn run_each(
    cfg: &Config,
    mut after: impl FnMut(&CampaignReport) -> Result<(), CampaignError>,
) -> Result<CampaignReport, CampaignError> {
    let spec = cfg.spec();
    let shard = if cfg.only.is_empty() {
        cfg.shard.to_string()
    } else {
        format!("trials {}", cfg.only.iter().map(u64::to_string).collect::<Vec<_>>().join(","))
    };
    let indices = cfg.indices();
    let old_systems = if cfg.fresh { None } else { Some(OldSystems::create()?) };
    let mut progress = crate::progress::Progress::new(indices.len() as u64, "trial");
    let mut results = Vec::new();
    for index in indices {
        let trial = Trial::derive(cfg.seed, index);
        let options = Options {
            fs: cfg.fs,
            metadata_encryption: cfg.metadata_encryption,
            keep: cfg.keep,
            trial: Some(trial.clone()),
            old_systems: old_systems.as_ref().map(|o| o.0.clone()),
            ..Options::default()
        };
        let report =
            scenario::run_scenario(&TRIAL, &options).map_err(|e| CampaignError::Run { index, source: Box::new(e) })?;
        let result = TrialResult::new(&spec, trial, &report)?;
        if !result.passed {
            progress.print(&report.summary());
            progress.print(&format!("replay: {}\n", result.replay));
        }
        progress.inc(&result.line());
        results.push(result);
        after(&CampaignReport::new(spec.clone(), vec![shard.clone()], results.clone()))?;
    }
    progress.finish();
    Ok(CampaignReport::new(spec, vec![shard], results))
}

/// The run's saved old systems (`steps::old_system`), removed when the run
/// ends. Named like a guest's run directory (stamp, pid), so that one a
/// killed campaign left is removed by the next guest's sweep.
struct OldSystems(PathBuf);

impl OldSystems {
    fn create() -> Result<OldSystems, CampaignError> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let dir = crate::paths::runs_dir().join(format!("campaign-old-systems-{stamp}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|source| CampaignError::OldSystems { path: dir.clone(), source })?;
        Ok(OldSystems(dir))
    }
}

impl Drop for OldSystems {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
