//! One trial of the power-cut campaign, derived from (seed, index) alone:
//! the phase of the update it cuts, the moment within it, and the cuts of
//! the boots that follow while rewind finishes. The generator is ChaCha8
//! (rand's named, portable algorithm, not `StdRng`, whose algorithm may
//! change between rand versions) seeded with the 64-bit seed and the
//! trial's index, so a trial is the same on every machine and in every
//! shard, and `--seed S --trial I` replays it alone.

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::plan::stage;

/// Where in an update the first power cut lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// `rewindctl start` on the old system (COW files, the first record).
    CheckpointStart,
    /// The attempt's own writes (the update workload on /data).
    AttemptWrites,
    /// The boot that arms the attempt (rewindd start, prepare-userdata,
    /// the mount of /data).
    ArmingAtBoot,
    /// The rollback's merge, at the boot after a failed attempt.
    Merge,
    /// `rewindctl commit` (the intent, the table reload, the record).
    Commit,
    /// A call whose disk work is the state record (abort or commit),
    /// cut within milliseconds of its start.
    StateRecord,
    /// The clean shutdown after the attempt (umount, power-off).
    Shutdown,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::CheckpointStart,
        Phase::AttemptWrites,
        Phase::ArmingAtBoot,
        Phase::Merge,
        Phase::Commit,
        Phase::StateRecord,
        Phase::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::CheckpointStart => "checkpoint-start",
            Phase::AttemptWrites => "attempt-writes",
            Phase::ArmingAtBoot => "arming-at-boot",
            Phase::Merge => "merge",
            Phase::Commit => "commit",
            Phase::StateRecord => "state-record",
            Phase::Shutdown => "shutdown",
        }
    }

    /// How long after the phase's start a cut may land, ms: about the
    /// phase's length under TCG (measured on the 2-core machine: workload
    /// 1.7-2.5 s, merging to userdata-prepared 0.2-0.9 s, the shutdown
    /// under 0.5 s), so the moment
    /// spans it.
    pub fn span_ms(self) -> u64 {
        match self {
            Phase::CheckpointStart => 1500,
            Phase::AttemptWrites => 3000,
            Phase::ArmingAtBoot => 1200,
            // A merge trial's attempt rewrites 48 MiB of baseline data in
            // place (steps.rs: MERGE_BALLAST_MIB): 0.3-0.6 s of merge under TCG.
            Phase::Merge => 700,
            Phase::Commit => 1500,
            // A record write is a few ms: the window is narrow on purpose.
            Phase::StateRecord => 60,
            // sync, umount, power-off: a few hundred ms once the attempt is idle.
            Phase::Shutdown => 400,
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stages of the arming boot a cut may follow.
pub const ARMING_STAGES: &[&str] = &[
    stage::METADATA_MOUNTED,
    stage::REWINDD_STARTED,
    stage::PREPARE_USERDATA,
    stage::USERDATA_PREPARED,
    stage::DATA_MOUNTED,
];

/// The stages of a recovery boot (rewind finishing the rollback or the
/// commit) a further cut may follow. `merging` exists only where a merge
/// runs (block mode); elsewhere the trial cuts at `prepare-userdata`.
pub const RECOVERY_STAGES: &[&str] = &[stage::PREPARE_USERDATA, stage::MERGING, stage::DATA_MOUNTED];

/// A cut: `delay_ms` after a stage marker of a boot, or (no stage) after
/// the phase's own start on the running guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut {
    pub stage: Option<String>,
    pub delay_ms: u64,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.stage {
            Some(s) => write!(f, "{s}+{}ms", self.delay_ms),
            None => write!(f, "+{}ms", self.delay_ms),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    pub seed: u64,
    pub index: u64,
    pub phase: Phase,
    /// The first cut, within the phase.
    pub cut: Cut,
    /// Cuts of the boots right after it (0-2), while rewind finishes.
    pub more_cuts: Vec<Cut>,
    /// state-record: the call is `commit` (else `abort`); shutdown: the
    /// attempt committed at boot-completed before the shutdown.
    pub commit: bool,
}

/// What userdata ends as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Baseline,
    Committed,
    /// Neither: some of the attempt's changes and not others. The bug.
    Mix,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Baseline => "baseline",
            Outcome::Committed => "committed",
            Outcome::Mix => "mix",
        }
    }
}

impl Trial {
    /// Trial `index` of the campaign with `seed`.
    pub fn derive(seed: u64, index: u64) -> Trial {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&index.to_le_bytes());
        let mut rng = ChaCha8Rng::from_seed(key);
        let phase = Phase::ALL[rng.random_range(0..Phase::ALL.len())];
        let delay_ms = rng.random_range(0..=phase.span_ms());
        let stage = match phase {
            Phase::ArmingAtBoot => Some(ARMING_STAGES[rng.random_range(0..ARMING_STAGES.len())].to_string()),
            Phase::AttemptWrites => Some(stage::WORKLOAD_START.to_string()),
            Phase::Merge => Some(stage::MERGING.to_string()),
            _ => None,
        };
        let commit = rng.random_bool(0.5);
        // Half the trials cut once; a third twice, a sixth three times.
        let more = match rng.random_range(0..6u32) {
            0..=2 => 0,
            3 | 4 => 1,
            _ => 2,
        };
        let more_cuts = (0..more)
            .map(|_| Cut {
                stage: Some(RECOVERY_STAGES[rng.random_range(0..RECOVERY_STAGES.len())].to_string()),
                delay_ms: rng.random_range(0..=1500),
            })
            .collect();
        Trial { seed, index, phase, cut: Cut { stage, delay_ms }, more_cuts, commit }
    }

    /// The outcomes this trial allows: the baseline unless a commit was
    /// asked for; a cut commit may go either way; a commit that finished
    /// before the cut must stay.
    pub fn allowed(&self) -> &'static [Outcome] {
        match self.phase {
            Phase::Commit => &[Outcome::Baseline, Outcome::Committed],
            Phase::StateRecord if self.commit => &[Outcome::Baseline, Outcome::Committed],
            Phase::Shutdown if self.commit => &[Outcome::Committed],
            _ => &[Outcome::Baseline],
        }
    }

    /// "merge at merging+812ms, then prepare-userdata+90ms".
    pub fn describe(&self) -> String {
        let mut s = format!("{} at {}", self.phase, self.cut);
        match self.phase {
            Phase::StateRecord => s += if self.commit { " (commit)" } else { " (abort)" },
            Phase::Shutdown if self.commit => s += " (after a commit)",
            _ => {}
        }
        for c in &self.more_cuts {
            s += &format!(", then {c}");
        }
        s
    }
}

/// `K/M`: the K-th (1-based) of M disjoint slices of a campaign's trials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub k: u64,
    pub m: u64,
}

impl Shard {
    pub const ALL: Shard = Shard { k: 1, m: 1 };

    /// The trial indices of `0..trials` in this shard: every M-th, from
    /// K-1, so each shard mixes the phases like the whole campaign.
    pub fn indices(self, trials: u64) -> impl Iterator<Item = u64> {
        (self.k - 1..trials).step_by(self.m as usize)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("shard {s:?}: expected K/M with 1 <= K <= M (e.g. 2/4)");
        let (k, m) = s.split_once('/').ok_or_else(bad)?;
        let (k, m): (u64, u64) = (k.trim().parse().map_err(|_| bad())?, m.trim().parse().map_err(|_| bad())?);
        if k == 0 || m == 0 || k > m || m > usize::MAX as u64 {
            return Err(bad());
        }
        Ok(Shard { k, m })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.k, self.m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn a_trial_is_a_function_of_seed_and_index() {
        for i in 0..50 {
            assert_eq!(Trial::derive(7, i), Trial::derive(7, i));
        }
        let a: Vec<Trial> = (0..50).map(|i| Trial::derive(7, i)).collect();
        let b: Vec<Trial> = (0..50).map(|i| Trial::derive(8, i)).collect();
        assert_ne!(a, b, "another seed, other trials");
        // Fixed values: the derivation must not change under a campaign's
        // feet (a replay command printed last week still means the same).
        assert_eq!(Trial::derive(1, 0).describe(), "commit at +1394ms, then data-mounted+1430ms");
        assert_eq!(
            Trial::derive(1, 6).describe(),
            "merge at merging+674ms, then data-mounted+1213ms, then prepare-userdata+234ms"
        );
        assert_eq!(Trial::derive(1, 29).describe(), "state-record at +2ms (abort), then merging+750ms");
    }

    #[test]
    fn trials_cover_every_phase_and_stay_inside_their_spans() {
        let trials: Vec<Trial> = (0..700).map(|i| Trial::derive(42, i)).collect();
        let phases: BTreeSet<Phase> = trials.iter().map(|t| t.phase).collect();
        assert_eq!(phases.len(), Phase::ALL.len(), "{phases:?}");
        for t in &trials {
            assert!(t.cut.delay_ms <= t.phase.span_ms(), "{t:?}");
            assert!(t.more_cuts.len() <= 2);
            assert!(t
                .more_cuts
                .iter()
                .all(|c| c.delay_ms <= 1500 && c.stage.as_deref().is_some_and(|s| RECOVERY_STAGES.contains(&s))));
            match t.phase {
                Phase::ArmingAtBoot => {
                    assert!(ARMING_STAGES.contains(&t.cut.stage.as_deref().unwrap_or("")))
                }
                Phase::CheckpointStart | Phase::Commit | Phase::StateRecord | Phase::Shutdown => {
                    assert_eq!(t.cut.stage, None)
                }
                _ => assert!(t.cut.stage.is_some()),
            }
        }
        let repeated = trials.iter().filter(|t| !t.more_cuts.is_empty()).count();
        assert!(repeated > 200 && repeated < 500, "{repeated} of 700 cut more than once");
    }

    #[test]
    fn shards_are_disjoint_and_cover_the_campaign() {
        for trials in [0u64, 1, 7, 30, 101] {
            for m in 1..=6u64 {
                let mut seen = Vec::new();
                for k in 1..=m {
                    seen.extend(Shard { k, m }.indices(trials));
                }
                let n = seen.len();
                seen.sort_unstable();
                seen.dedup();
                assert_eq!(seen.len(), n, "{trials} trials, {m} shards: disjoint");
                assert_eq!(seen, (0..trials).collect::<Vec<_>>(), "{trials} trials, {m} shards: covering");
            }
        }
    }

    #[test]
    fn shard_parses_k_of_m_and_refuses_the_rest() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { k: 2, m: 4 }));
        assert_eq!("1/1".parse::<Shard>(), Ok(Shard::ALL));
        for bad in ["0/4", "5/4", "1/0", "2", "a/b", "-1/3", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert_eq!(Shard { k: 3, m: 8 }.to_string(), "3/8");
    }

    #[test]
    fn allowed_outcomes_follow_the_commit() {
        let mut t = Trial::derive(1, 0);
        t.phase = Phase::AttemptWrites;
        assert_eq!(t.allowed(), &[Outcome::Baseline]);
        t.phase = Phase::Commit;
        assert_eq!(t.allowed(), &[Outcome::Baseline, Outcome::Committed]);
        t.phase = Phase::Shutdown;
        t.commit = true;
        assert_eq!(t.allowed(), &[Outcome::Committed]);
        t.commit = false;
        assert_eq!(t.allowed(), &[Outcome::Baseline]);
        t.phase = Phase::StateRecord;
        assert_eq!(t.allowed(), &[Outcome::Baseline]);
        assert!(t.describe().starts_with("state-record at +"), "{}", t.describe());
    }
}
