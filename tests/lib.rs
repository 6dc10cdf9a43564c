//! Shared helpers for the end-to-end tests (guest_*.rs): each test is one
//! line naming a registered scenario (`rewind_harness::scenario::all`), so
//! the CLI and the tests run the very same code; what a scenario needs (an
//! f2fs userdata, the crypt layer, the device profile, ...) is its own
//! `Needs`, not the test's. Guests are never skipped: a missing QEMU or kit fails
//! the test (and under CI=true that is what must happen).

use rewind_harness::scenario::{self, Options};
use rewind_harness::FsType;

/// Runs a registered scenario on ext4 (unless it needs f2fs) and panics
/// with its report (the console of the last boot is already printed
/// between `==== console` markers) unless every check passed.
pub fn run(name: &str) {
    run_with(name, Options::default());
}

/// Same on f2fs.
pub fn run_f2fs(name: &str) {
    run_with(name, Options { fs: FsType::F2fs, ..Options::default() });
}

/// Runs a registered scenario with `options` (its needs override them).
pub fn run_with(name: &str, options: Options) {
    let report = match scenario::run(name, &options) {
        Ok(r) => r,
        Err(e) => panic!("scenario {name} could not run: {}", scenario::error_chain(&e)),
    };
    eprint!("{}", report.summary());
    assert!(report.passed, "scenario {name} failed:\n{}", report.summary());
}

/// Runs campaign trials `indices` of `seed` (ext4) and panics with the
/// campaign's table and each failure's replay command unless all passed.
pub fn campaign(seed: u64, indices: &[u64]) -> rewind_harness::campaign::CampaignReport {
    use rewind_harness::campaign::{self, Config, Shard};
    let cfg = Config {
        seed,
        trials: indices.iter().max().map(|i| i + 1).unwrap_or(0),
        fs: FsType::Ext4,
        metadata_encryption: false,
        shard: Shard::ALL,
        only: indices.to_vec(),
        keep: false,
        fresh: false,
    };
    let report = match campaign::run(&cfg) {
        Ok(r) => r,
        Err(e) => panic!("campaign seed {seed} could not run: {}", scenario::error_chain(&e)),
    };
    eprint!("{}", report.render());
    assert!(report.passed(), "campaign seed {seed} failed:\n{}", report.render());
    report
}

/// A `rewind-harness log-writes` run of `phase` (seed, flush points,
/// points between flushes) that panics with its table and each failure's
/// replay command unless every point passed.
pub fn log_writes(phase: rewind_harness::logwrites::Phase, seed: u64, points: usize, between: usize) {
    use rewind_harness::logwrites::{self, Config};
    let cfg = Config {
        phase,
        seed,
        points,
        between,
        out: logwrites::default_out(phase, seed),
        from: None,
        only: Vec::new(),
        keep: false,
    };
    let summary = match logwrites::run(&cfg) {
        Ok(s) => s,
        Err(e) => panic!("log-writes {phase} could not run: {}", scenario::error_chain(&e)),
    };
    eprint!("{}", summary.render());
    assert!(summary.flush_points_found > 0, "no flush point in the {phase} phase:\n{}", summary.render());
    assert!(summary.passed(), "log-writes {phase} failed:\n{}", summary.render());
}
