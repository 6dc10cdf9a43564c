//! rewindd's core on a real kernel (QEMU guest, Debian 6.1, TCG): FIEMAP,
//! the dm-snapshot stack, rollback, commit, refusals, power cuts, overflow.
//! Each test runs one scenario of `rewind_harness::scenario::daemon` (also
//! `rewind-harness scenario NAME`) and passes only if every check did; the
//! checks use witnesses rewindd does not share (filefrag, lsattr, dmsetup,
//! the host's view of the disk image, the guest's manifest tool).

/// The map rewindd recorded for each COW file is what filefrag reads, the
/// files are immutable and zero-filled, and the record's checksum holds.
#[test]
fn guest_fiemap_map_matches_filefrag() {
    rewind_e2e::run("guest-fiemap-filefrag");
}

/// start -> the new system writes and dies -> the next boot rolls back:
/// every byte of the disk outside the COW store's blocks is as it was when
/// the checkpoint was armed (host-side image hash), the file tree equals
/// the baseline, and the COW files are gone once /data is mounted.
#[test]
fn guest_rollback_restores_every_byte() {
    rewind_e2e::run("guest-rollback-bytes");
}

/// start -> the new system writes and commits (live): every change stays,
/// the stack is back to linear without a reboot, the COW files are
/// removed, and the next boot is idle with the same data.
#[test]
fn guest_commit_keeps_changes_and_removes_cow_files() {
    rewind_e2e::run("guest-commit");
}

/// A COW file whose blocks moved between boots (rewritten behind rewindd's
/// back) is detected before use: the attempt is not armed, the refusal is
/// recorded and reported, and the device still boots with /data mounted.
#[test]
fn guest_changed_extents_are_refused() {
    rewind_e2e::run("guest-extents-changed");
}

/// A power cut in the middle of the final merge: the next boot finds the
/// rollback intent, finishes the merge and ends at the baseline, byte for
/// byte outside the COW blocks. The cut is timed from the prepare-userdata
/// marker; a cut that missed the merge (before or after it) is retried
/// with a new checkpoint and another delay.
#[test]
fn guest_merge_interrupted_by_power_cut_resumes() {
    rewind_e2e::run("guest-merge-power-cut");
}

/// The same with the last rollback's merge waited for inside
/// prepare-userdata (`cow.last_rollback_in_background = false`).
#[test]
fn guest_waited_merge_interrupted_by_power_cut_resumes() {
    rewind_e2e::run("guest-merge-power-cut-waited");
}

/// The attempt writes more than the COW store holds: the kernel invalidates
/// the snapshot, rewindd detects it, records that protection is lost and
/// commits (the origin kept every write), never silently.
#[test]
fn guest_cow_overflow_is_detected_and_reported() {
    rewind_e2e::run("guest-cow-overflow");
}

/// The default space policy: the COW store fills slowly; rewindd reports
/// the 50 % and 80 % thresholds, and at 95 % records an abort and reboots
/// (before protection could be lost). The next boot discards the attempt
/// (merge) and arms the next one; nothing the attempt wrote survives.
#[test]
fn guest_space_abort_policy_reboots_and_discards_the_attempt() {
    rewind_e2e::run("guest-space-abort");
}

/// Android's node handling (`dev_nodes = "ueventd"`, what
/// android/rewindd.toml sets): a ueventd stand-in (busybox `uevent` in the
/// guest init) links /dev/mapper/<name> to devtmpfs's dm-N and rewindd
/// must wait for those links instead of making nodes. A checkpoint arms,
/// the attempt is cut, the rollback merges, and userdata is the baseline;
/// links of removed devices are gone with them.
#[test]
fn guest_ueventd_made_nodes_are_waited_for() {
    rewind_e2e::run("guest-ueventd-nodes");
}
