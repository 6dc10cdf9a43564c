//! The scenarios a real Android device can run (`device-*`,
//! harness/src/scenario/device.rs), on the QEMU guest restricted to
//! exactly what a device can do (`rewind_harness::device::profile`: rewind
//! boots only, a panic at ready, no power cut, the commit deferred; the
//! workload and the checks in /data/local/tmp/rewind-data). A plan a device
//! could not carry out fails the test as "cannot". The same scenarios run
//! on a device with `rewind-harness scenario --target adb NAME`.

/// Three attempts panic at ready; the next boot is rolled back: the data
/// dir is exactly the baseline, the history shows 3 attempts rolled back.
#[test]
fn guest_device_three_failed_boots_roll_back() {
    rewind_e2e::run("device-three-failed-boots");
}

/// Attempt 1 panics; attempt 2 starts from the baseline and commits; a
/// reboot keeps exactly attempt 2's data.
#[test]
fn guest_device_fail_then_commit_keeps_only_the_second_attempt() {
    rewind_e2e::run("device-fail-then-commit");
}

/// One attempt commits; two more boots keep exactly its data.
#[test]
fn guest_device_good_boot_commits_keeps_every_change() {
    rewind_e2e::run("device-good-boot-commits");
}
