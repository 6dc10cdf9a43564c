//! rewind under Android's metadata encryption, emulated in the QEMU guest:
//! dm-crypt (aes-xts-plain64) stacked on rewind-userdata, /data mounted
//! from it, the raw partition holding only ciphertext and rewindd never
//! holding the key (`rewind_harness::scenario::encrypted`; also
//! `rewind-harness scenario metadata-encryption`).

/// Start, three failed attempts, rollback: /data is the baseline exactly,
/// fsck clean through the crypt layer, the COW map verified from raw
/// blocks without a mount.
#[test]
fn guest_metadata_encryption_rolls_back_to_the_baseline() {
    rewind_e2e::run("metadata-encryption");
}

/// Start, an attempt that commits at boot-completed: two more boots keep
/// its data.
#[test]
fn guest_metadata_encryption_commit_keeps_the_attempt() {
    rewind_e2e::run("metadata-encryption-commit");
}

/// The free map sealed at the clean shutdown after start (read through
/// the crypt layer): the attempt is armed over it from ciphertext, a new
/// file costs < 1 % in COW, the rollback is exact; a baseline mounted again
/// after its seal is armed protecting every chunk, and rolls back exactly.
#[test]
fn guest_metadata_encryption_free_map_is_sealed_and_refused_when_broken() {
    rewind_e2e::run("metadata-encryption-free-map");
}
