//! The real `rewind-harness` binary on a host without a device: the
//! device targets must say in one line what is missing and exit non-zero.

use std::process::Command;

fn harness() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rewind-harness"))
}

/// The stderr lines that are not empty.
fn lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr).lines().filter(|l| !l.trim().is_empty()).map(String::from).collect()
}

#[test]
fn adb_target_without_adb_on_path_is_one_line_and_fails() {
    let empty = tempfile::tempdir().expect("tmp");
    let out = harness()
        .args(["scenario", "dm-witness", "--target", "adb", "--serial", "emulator-5554"])
        .env("PATH", empty.path())
        .output()
        .expect("run rewind-harness");
    assert!(!out.status.success(), "exit {:?}", out.status);
    let err = lines(&out.stderr);
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(err[0].contains("adb not found on PATH") && err[0].contains("platform-tools"), "{err:?}");
}

#[test]
fn adb_target_with_no_device_attached_is_one_line_and_fails() {
    // A fake adb whose device list is empty (what a host without a device sees).
    let dir = tempfile::tempdir().expect("tmp");
    let adb = dir.path().join("adb");
    std::fs::write(&adb, "#!/bin/sh\necho 'List of devices attached'\necho\n").expect("write");
    let mut perms = std::fs::metadata(&adb).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&adb, perms).expect("chmod");
    let path = format!("{}:/bin:/usr/bin", dir.path().display());
    let out = harness()
        .args(["scenario", "dm-witness", "--target", "adb"])
        .env("PATH", &path)
        .output()
        .expect("run rewind-harness");
    assert!(!out.status.success());
    let err = lines(&out.stderr);
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(err[0].contains("no Android device attached"), "{err:?}");
    let out = harness()
        .args(["scenario", "dm-witness", "--target", "adb", "--serial", "XYZ"])
        .env("PATH", &path)
        .output()
        .expect("run rewind-harness");
    assert!(!out.status.success());
    assert_eq!(lines(&out.stderr).len(), 1, "{:?}", lines(&out.stderr));
}

#[test]
fn cuttlefish_target_without_launch_cvd_is_one_line_and_fails() {
    let empty = tempfile::tempdir().expect("tmp");
    let out = harness()
        .args(["scenario", "dm-witness", "--target", "cuttlefish", "--cvd-dir"])
        .arg(empty.path())
        .output()
        .expect("run rewind-harness");
    assert!(!out.status.success());
    let err = lines(&out.stderr);
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(err[0].contains("launch_cvd not found") && err[0].contains("--cvd-dir"), "{err:?}");
}
