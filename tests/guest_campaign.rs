//! A fixed-seed slice of the power-cut campaign (`rewind-harness
//! campaign`), about 3 minutes of guest time: seed 1's trial 6 (the
//! rollback's merge cut, then the next two boots cut too) and trial 9 (a
//! commit cut). Each must end at the baseline or the committed state
//! exactly, every block the baseline uses restored where it applies, fsck
//! clean, the next boot ready.
#[test]
fn guest_campaign_fixed_seed_ends_at_baseline_or_committed() {
    rewind_e2e::campaign(1, &[6, 9]);
}
