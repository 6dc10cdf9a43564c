//! A fixed-seed slice of the power-cut campaign (`rewind-harness
//! campaign`): trials of seed 1 that cut the attempt's writes, the merge
//! (twice in a row), the commit and the shutdown; each must end at the
//! baseline or the committed state exactly, fsck clean, and boot to ready.

/// Seed 1, trials 3 (attempt writes, then the merge), 6 (the merge, then
/// two more cuts), 9 (a commit) and 13 (the shutdown).
#[test]
fn guest_campaign_fixed_seed_ends_at_baseline_or_committed() {
    rewind_e2e::campaign(1, &[3, 6, 9, 13]);
}
