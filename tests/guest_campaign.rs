//! A fixed-seed slice of the power-cut campaign (`rewind-harness
//! campaign`), about 4 minutes of guest time: seed 1's trial 6 (the
//! rollback's merge cut, then the next two boots cut too), trial 9 (a
//! commit cut) and trial 2 (the attempt's writes cut). Each must end at the
//! baseline or the committed state exactly, every block the baseline uses
//! restored where it applies, fsck clean, the next boot ready.
//!
//! Trial 2 runs after trial 9 and starts from the old system trial 9 booted
//! and saved (the campaign's default): its rollback must be as exact from
//! the restored disks, block for block, as from freshly booted ones.
#[test]
fn guest_campaign_fixed_seed_ends_at_baseline_or_committed() {
    let report = rewind_e2e::campaign(1, &[6, 9, 2]);
    let by_index = |i: u64| {
        report.results.iter().find(|r| r.trial.index == i).unwrap_or_else(|| panic!("trial {i} not in the report"))
    };
    let (merge, commit, writes) = (by_index(6), by_index(9), by_index(2));
    assert!(merge.old_system.starts_with("booted by this trial"), "trial 6: {}", merge.old_system);
    assert!(commit.old_system.starts_with("booted by this trial, saved"), "trial 9: {}", commit.old_system);
    assert_eq!(writes.old_system, "restored (booted by trial 9)");
    assert_eq!(writes.blocks, "equal", "trial 2 rolled back from a restored old system");
}
