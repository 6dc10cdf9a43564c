//! The guest kit and the QEMU harness themselves: boots, device-mapper,
//! the manifest witness, and every failure kind observed as what it is.
//! No rewindd involved (raw plans).

/// A raw guest boots to ready with disks by name, the modules and tools,
/// and commands return their status, stdout and stderr.
#[test]
fn guest_boots_to_ready_and_runs_commands() {
    rewind_e2e::run("boot-to-ready");
}

/// dm targets exist in the guest and a linear device reads back its table.
#[test]
fn guest_device_mapper_linear_works() {
    rewind_e2e::run("dm-witness");
}

/// The manifest lists exactly what changed, was added, removed, chmod-ed.
#[test]
fn guest_manifest_detects_changed_added_removed_chmod() {
    rewind_e2e::run("manifest-detects-changes");
}

/// A kernel panic is observed as a panic (QMP + console), not a reset.
#[test]
fn guest_panic_is_observed_as_panic() {
    rewind_e2e::run("failure-panic");
}

/// A hung boot is reset by the i6300esb watchdog and observed as such.
#[test]
fn guest_watchdog_reset_is_observed() {
    rewind_e2e::run("failure-watchdog");
}

/// The host's power cut mid-workload is observed as a power cut; ext4
/// recovers and fsck is clean.
#[test]
fn guest_power_cut_is_observed() {
    rewind_e2e::run("failure-power-cut");
}

/// A guest-initiated reset (sysrq b) is observed as a guest reset.
#[test]
fn guest_reset_is_observed_as_guest_reset() {
    rewind_e2e::run("failure-guest-reset");
}

/// Bring your own workload: a custom baseline script, a custom per-boot
/// workload (with REWIND_ATTEMPT) and a host tool with its shared libraries
/// all reach the guest.
#[test]
fn guest_runs_custom_baseline_workload_and_tool() {
    rewind_e2e::run("custom-scripts");
}

/// The same on an f2fs userdata (fsck.f2fs clean after a clean shutdown).
#[test]
fn guest_boots_to_ready_on_f2fs() {
    rewind_e2e::run_f2fs("boot-to-ready");
}

/// The demo: a checkpoint with 3 attempts, three failed boots of the new
/// system (power cut, panic, watchdog), then userdata is exactly the
/// baseline (the guest's manifest), NeedsRollback is true over gRPC from
/// the host, fsck is clean.
#[test]
fn guest_demo_rolls_userdata_back_after_three_failed_boots() {
    rewind_e2e::run("three-failed-boots");
}

/// A boot that completes runs android/rewindd.rc's boot-completed step
/// (rewindctl commit): the checkpoint ends and the changes stay.
#[test]
fn guest_boot_completed_commits_and_keeps_changes() {
    rewind_e2e::run("boot-completed-commits");
}

/// The power is cut while the rollback merge runs (the guest's `merging`
/// stage, from prepare-userdata's progress); the next boot finishes the
/// merge: userdata is exactly the baseline, fsck clean.
#[test]
fn guest_power_cut_mid_merge_still_rolls_back() {
    rewind_e2e::run("power-cut-mid-merge");
}

/// The demo on f2fs userdata (checkpoint=fs: f2fs's own checkpoint=disable).
#[test]
fn guest_demo_rolls_userdata_back_on_f2fs() {
    rewind_e2e::run_f2fs("three-failed-boots");
}
