//! The campaign's reports: JSON (every trial, with its scenario report)
//! and JUnit (one test case per trial), the per-phase summary, and the
//! merge of shards' JSON reports into one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::report::ScenarioReport;

use super::trial::{Outcome, Phase, Trial};
use super::CampaignError;

/// What a campaign is: the same for every shard of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub seed: u64,
    pub trials: u64,
    pub fs: String,
    pub metadata_encryption: bool,
}

impl Spec {
    /// The command that replays trial `index` alone.
    pub fn replay(&self, index: u64) -> String {
        let mut s = format!("rewind-harness campaign --seed {} --trial {index}", self.seed);
        if self.fs != "ext4" {
            s += &format!(" --fs {}", self.fs);
        }
        if self.metadata_encryption {
            s += " --metadata-encryption";
        }
        s
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrialResult {
    pub trial: Trial,
    pub passed: bool,
    /// What userdata ended as; None when the trial stopped before the
    /// verdict (an error: see `error`).
    pub outcome: Option<Outcome>,
    /// Where the first cut landed.
    pub landed: String,
    /// rewindd's phase at the end.
    pub final_phase: String,
    /// The host's block compare: equal, differ, not compared (why).
    pub blocks: String,
    /// commit and state-record: whether the cut call reached the history
    /// ("yes"/"no"; empty for other phases).
    #[serde(default)]
    pub call_recorded: String,
    /// Where the old system came from: booted by this trial, or restored
    /// from the one an earlier trial of the run saved (`campaign --fresh`).
    #[serde(default)]
    pub old_system: String,
    pub boots: usize,
    pub duration_ms: u64,
    pub failed_checks: Vec<String>,
    pub error: Option<String>,
    pub replay: String,
    /// The trial's whole scenario report (boots, checks, console paths).
    pub report: serde_json::Value,
}

impl TrialResult {
    pub fn new(spec: &Spec, trial: Trial, r: &ScenarioReport) -> Result<TrialResult, CampaignError> {
        let fact = |k: &str| r.facts.get(k).cloned().unwrap_or_default();
        let outcome = match fact("outcome").as_str() {
            "baseline" => Some(Outcome::Baseline),
            "committed" => Some(Outcome::Committed),
            "mix" => Some(Outcome::Mix),
            _ => None,
        };
        Ok(TrialResult {
            replay: spec.replay(trial.index),
            trial,
            passed: r.passed,
            outcome,
            landed: fact("landed"),
            final_phase: fact("phase"),
            blocks: fact("blocks"),
            call_recorded: fact("call recorded"),
            old_system: match fact(super::steps::OLD_SYSTEM_FACT).as_str() {
                "restored" => format!("restored (booted by trial {})", fact("old system booted by")),
                other => other.to_string(),
            },
            boots: r.boots.len(),
            duration_ms: r.duration_ms,
            failed_checks: r.failed_checks().iter().map(|c| format!("{}: {}", c.name, first_line(&c.detail))).collect(),
            error: r.error.clone(),
            report: serde_json::to_value(r).map_err(CampaignError::Encode)?,
        })
    }

    /// One line for the progress and the log.
    pub fn line(&self) -> String {
        format!(
            "trial {} {}: {} -> {} ({}, {} boots, {:.0} s)",
            self.trial.index,
            if self.passed { "passed" } else { "FAILED" },
            self.trial.describe(),
            self.outcome.map(Outcome::as_str).unwrap_or("no verdict"),
            self.landed,
            self.boots,
            self.duration_ms as f64 / 1000.0
        )
    }
}

/// Trials of one phase, by how they ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseCounts {
    pub run: u64,
    pub passed: u64,
    pub baseline: u64,
    pub committed: u64,
    pub mix: u64,
    /// Stopped before the verdict (a boot that did not reach ready, a
    /// step that could not run).
    pub no_verdict: u64,
    /// Cut more than once.
    pub repeated_cuts: u64,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CampaignReport {
    pub spec: Spec,
    /// The shards this report holds ("2/4"; "1/1" for a whole campaign,
    /// "trial 7" for a replay).
    pub shards: Vec<String>,
    pub results: Vec<TrialResult>,
    /// Per phase, from `results` (recomputed by a merge).
    pub phases: BTreeMap<Phase, PhaseCounts>,
}

impl CampaignReport {
    pub fn new(spec: Spec, shards: Vec<String>, mut results: Vec<TrialResult>) -> CampaignReport {
        results.sort_by_key(|r| r.trial.index);
        let mut phases: BTreeMap<Phase, PhaseCounts> = BTreeMap::new();
        for r in &results {
            let c = phases.entry(r.trial.phase).or_default();
            c.run += 1;
            c.passed += r.passed as u64;
            match r.outcome {
                Some(Outcome::Baseline) => c.baseline += 1,
                Some(Outcome::Committed) => c.committed += 1,
                Some(Outcome::Mix) => c.mix += 1,
                None => c.no_verdict += 1,
            }
            c.repeated_cuts += !r.trial.more_cuts.is_empty() as u64;
            c.duration_ms += r.duration_ms;
        }
        CampaignReport { spec, shards, results, phases }
    }

    pub fn passed(&self) -> bool {
        self.results.iter().all(|r| r.passed)
    }

    /// The table and the failures with their replay commands.
    pub fn render(&self) -> String {
        let mut s = format!(
            "campaign seed {} ({}{}), shards {}: {} of {} trials\n",
            self.spec.seed,
            self.spec.fs,
            if self.spec.metadata_encryption { ", metadata encryption" } else { "" },
            self.shards.join(" "),
            self.results.len(),
            self.spec.trials
        );
        s += &format!(
            "{:<17} {:>4} {:>6} {:>8} {:>9} {:>4} {:>10} {:>8} {:>7}\n",
            "phase", "run", "passed", "baseline", "committed", "mix", "no-verdict", "repeated", "mean s"
        );
        let mut total = PhaseCounts::default();
        for (p, c) in &self.phases {
            s += &row(p.as_str(), c);
            total.run += c.run;
            total.passed += c.passed;
            total.baseline += c.baseline;
            total.committed += c.committed;
            total.mix += c.mix;
            total.no_verdict += c.no_verdict;
            total.repeated_cuts += c.repeated_cuts;
            total.duration_ms += c.duration_ms;
        }
        s += &row("all", &total);
        if total.duration_ms > 0 {
            s += &format!(
                "guest time {:.1} min: {:.0} trials per hour on one guest\n",
                total.duration_ms as f64 / 60_000.0,
                total.run as f64 * 3_600_000.0 / total.duration_ms as f64
            );
        }
        for r in self.results.iter().filter(|r| !r.passed) {
            s += &format!("FAILED {}\n", r.line());
            for c in &r.failed_checks {
                s += &format!("  check failed: {c}\n");
            }
            if let Some(e) = &r.error {
                s += &format!("  error: {e}\n");
            }
            s += &format!("  replay: {}\n", r.replay);
        }
        s
    }

    pub fn to_json(&self) -> Result<String, CampaignError> {
        serde_json::to_string_pretty(self).map_err(CampaignError::Encode)
    }

    /// JUnit: one suite, one test case per trial (its replay command in
    /// the failure text).
    pub fn to_junit(&self) -> String {
        let failures = self.results.iter().filter(|r| !r.passed).count();
        let secs: f64 = self.results.iter().map(|r| r.duration_ms as f64 / 1000.0).sum();
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
        x += &format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" time=\"{secs:.1}\">\n",
            esc(&format!("campaign seed {} {}", self.spec.seed, self.spec.fs)),
            self.results.len()
        );
        for r in &self.results {
            x += &format!(
                "    <testcase classname=\"campaign.{}\" name=\"{}\" time=\"{:.1}\"",
                r.trial.phase,
                esc(&format!("trial {}: {}", r.trial.index, r.trial.describe())),
                r.duration_ms as f64 / 1000.0
            );
            if r.passed {
                x += "/>\n";
                continue;
            }
            let mut text = r.failed_checks.join("\n");
            if let Some(e) = &r.error {
                text += &format!("\nerror: {e}");
            }
            text += &format!("\nreplay: {}", r.replay);
            x += &format!(
                ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                esc(&format!("replay: {}", r.replay)),
                esc(&text)
            );
        }
        x += "  </testsuite>\n</testsuites>\n";
        x
    }
}

fn row(name: &str, c: &PhaseCounts) -> String {
    format!(
        "{:<17} {:>4} {:>6} {:>8} {:>9} {:>4} {:>10} {:>8} {:>7.1}\n",
        name,
        c.run,
        c.passed,
        c.baseline,
        c.committed,
        c.mix,
        c.no_verdict,
        c.repeated_cuts,
        if c.run > 0 { c.duration_ms as f64 / 1000.0 / c.run as f64 } else { 0.0 }
    )
}

fn first_line(s: &str) -> &str {
    s.trim().lines().next().unwrap_or("")
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// Reads a campaign JSON report.
pub fn read(path: &Path) -> Result<CampaignReport, CampaignError> {
    let text = std::fs::read_to_string(path).map_err(|e| CampaignError::Read { path: path.into(), source: e })?;
    serde_json::from_str(&text).map_err(|e| CampaignError::Decode { path: path.into(), source: e })
}

/// Merges shards' reports of one campaign: the same spec, no trial twice.
pub fn merge(reports: Vec<(PathBuf, CampaignReport)>) -> Result<CampaignReport, CampaignError> {
    let mut it = reports.into_iter();
    let (first_path, first) = it.next().ok_or(CampaignError::NothingToMerge)?;
    let spec = first.spec.clone();
    let mut shards = first.shards;
    let mut results = first.results;
    let mut from: BTreeMap<u64, PathBuf> = results.iter().map(|r| (r.trial.index, first_path.clone())).collect();
    for (path, r) in it {
        if r.spec != spec {
            return Err(CampaignError::OtherCampaign { path, theirs: Box::new(r.spec), ours: Box::new(spec) });
        }
        for t in r.results {
            if let Some(other) = from.insert(t.trial.index, path.clone()) {
                return Err(CampaignError::TrialTwice { index: t.trial.index, first: other, second: path });
            }
            results.push(t);
        }
        shards.extend(r.shards);
    }
    Ok(CampaignReport::new(spec, shards, results))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec { seed: 9, trials: 6, fs: "ext4".into(), metadata_encryption: false }
    }

    fn result(index: u64, passed: bool, outcome: Option<Outcome>) -> TrialResult {
        let trial = Trial::derive(9, index);
        TrialResult {
            replay: spec().replay(index),
            trial,
            passed,
            outcome,
            landed: "cut +10 ms".into(),
            final_phase: "rolled-back".into(),
            blocks: "equal".into(),
            call_recorded: String::new(),
            old_system: String::new(),
            boots: 5,
            duration_ms: 40_000,
            failed_checks: if passed { vec![] } else { vec!["userdata is exactly ...: mix".into()] },
            error: None,
            report: serde_json::Value::Null,
        }
    }

    fn shard(k: u64, m: u64) -> CampaignReport {
        let results = super::super::Shard { k, m }
            .indices(6)
            .map(|i| result(i, i != 4, Some(if i == 4 { Outcome::Mix } else { Outcome::Baseline })))
            .collect();
        CampaignReport::new(spec(), vec![format!("{k}/{m}")], results)
    }

    #[test]
    fn shards_merge_into_the_whole_campaign() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut read_back = Vec::new();
        for k in 1..=3 {
            let path = dir.path().join(format!("s{k}.json"));
            std::fs::write(&path, shard(k, 3).to_json().expect("json")).expect("write");
            read_back.push((path.clone(), read(&path).expect("read")));
        }
        let all = merge(read_back).expect("merge");
        assert_eq!(all.results.iter().map(|r| r.trial.index).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(all.shards, vec!["1/3", "2/3", "3/3"]);
        let total: u64 = all.phases.values().map(|c| c.run).sum();
        let mixes: u64 = all.phases.values().map(|c| c.mix).sum();
        assert_eq!((total, mixes), (6, 1));
        assert!(!all.passed());
        let text = all.render();
        assert!(text.contains("replay: rewind-harness campaign --seed 9 --trial 4"), "{text}");
        let junit = all.to_junit();
        assert!(junit.contains("tests=\"6\" failures=\"1\""), "{junit}");
        assert!(junit.contains("replay: rewind-harness campaign --seed 9 --trial 4"), "{junit}");
    }

    #[test]
    fn merge_refuses_overlaps_and_other_campaigns() {
        let a = (PathBuf::from("a.json"), shard(1, 2));
        let b = (PathBuf::from("b.json"), shard(1, 2));
        assert!(matches!(merge(vec![a.clone(), b]), Err(CampaignError::TrialTwice { index: 0, .. })));
        let mut other = shard(2, 2);
        other.spec.seed = 10;
        assert!(matches!(merge(vec![a, (PathBuf::from("c.json"), other)]), Err(CampaignError::OtherCampaign { .. })));
        assert!(matches!(merge(vec![]), Err(CampaignError::NothingToMerge)));
        assert!(matches!(read(Path::new("/nonexistent/x.json")), Err(CampaignError::Read { .. })));
    }

    #[test]
    fn replay_names_the_options_that_change_the_trial() {
        let mut s = spec();
        assert_eq!(s.replay(3), "rewind-harness campaign --seed 9 --trial 3");
        s.fs = "f2fs".into();
        s.metadata_encryption = true;
        assert_eq!(s.replay(3), "rewind-harness campaign --seed 9 --trial 3 --fs f2fs --metadata-encryption");
    }
}
