//! What Android's callers of vold see (android/INTEGRATION.md), in QEMU
//! guests: each test runs one scenario of `rewind_harness::scenario::vold`
//! (also `rewind-harness scenario NAME`).

/// startCheckpoint -1: three failed attempts are discarded, none rolls the
/// checkpoint back, attempt 4 commits and its changes stay.
#[test]
fn guest_unlimited_attempts_never_roll_back_until_the_commit() {
    rewind_e2e::run("unlimited-attempts");
}

/// An unmarked boot slot with no checkpoint recorded: needsCheckpoint is
/// true; the boot-completed commit marks the slot.
#[test]
fn guest_unmarked_slot_needs_a_checkpoint_until_rewinds_commit_marks_it() {
    rewind_e2e::run("slot-unmarked-needs-checkpoint");
}

/// abort --reboot: the next boot's reason is reboot,<reason>, in the
/// history; userdata is rolled back.
#[test]
fn guest_abort_reboot_gives_the_next_boot_its_reason() {
    rewind_e2e::run("abort-reboot-reason");
}

/// A failed attempt's tombstone and ANR trace survive its rollback in
/// /metadata/rewind/attempts/2/ while /data is at the baseline.
#[test]
fn guest_failed_attempts_evidence_survives_its_rollback() {
    rewind_e2e::run("evidence-survives-rollback");
}
