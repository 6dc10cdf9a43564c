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
