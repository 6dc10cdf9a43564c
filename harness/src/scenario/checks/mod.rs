//! Independent witnesses a scenario uses, one helper per job: the guest's
//! own manifest tool and fsck of the unmounted device (`data`), the dm
//! stack and /data's mount (`stack`), rewindd's status, state record,
//! config and logs (`rewindd`), its history read as `EventKind`s
//! (`history`), and the COW store's blocks on the host (`blocks`). None
//! of them trusts rewindd's own account where another witness exists.

mod blocks;
mod data;
mod history;
mod rewindd;
mod stack;

pub use blocks::{
    check_blocks_restored, image_hash_outside, parse_filefrag, userdata_image, BaselineBlocks, BlockDigest,
};
pub use data::{
    attempt_artifacts, ballast_sums, check_commit_kept, check_cow_gone, cow_files_left, data_manifest, df_du, fsck,
    fsck_after_umount, fsck_clean, fsck_command, manifest, rewrite_ballast, slow_fill, wait_cow_gone, write_ballast,
    BALLAST, COW_DIR,
};
pub use history::{check_boot_reasons_after_attempts, check_three_attempts_rolled_back, history, History};
pub use rewindd::{
    begin_checkpoint, boot_log, boot_rolls_back_to, check_merged, check_phase, merge_bytes, merge_log, merge_progress,
    merge_ran, merge_summary, phase, prepare_checkpoint, prepare_log, restart_rewindd, secs, set_boot_file,
    set_rewindd_extra, start, start_as, state, status,
};
pub use stack::{
    check_f2fs_armed, check_idle_stack, data_mount, dm_stack, dmsetup, sectors, userdata_device, DataMount, DmStack,
    RAW, TOP, TOP_NAME,
};

#[cfg(test)]
mod tests {
    use super::super::Ctx;
    use super::*;
    use crate::device::adb::{fake_adb, fake_adb_with_script, AdbConfig, AdbTarget, NoPowerControl};
    use crate::target::Target;

    /// A fake device, booted, whose `rewindctl status --json` prints
    /// `dir/status.json`.
    fn status_device(dir: &std::path::Path) -> AdbTarget {
        let arms = format!(
            r#"  shell)
    case "$2" in
      "getprop sys.boot_completed") echo 1;;
      "getprop init.svc.rewindd") echo running;;
      "getprop rewind.defer_commit") echo true;;
      *"status --json"*) cat {status};;
      *) :;;
    esac
    exit 0;;
"#,
            status = dir.join("status.json").display()
        );
        let cfg = AdbConfig { artifacts: dir.join("artifacts"), ..AdbConfig::default() };
        let adb = fake_adb_with_script(dir, &arms, "FAKE03");
        let mut t = AdbTarget::new(adb, Box::new(NoPowerControl), cfg).expect("fake device");
        t.no_settle();
        t.boot(&crate::plan::BootPlan::rewind()).expect("boot");
        t
    }

    #[test]
    fn check_phase_compares_the_phase_and_returns_the_whole_status() {
        let dir = tempfile::tempdir().expect("tmp");
        let status = dir.path().join("status.json");
        let mut t = status_device(dir.path());
        let mut cx = Ctx::new(&mut t, "test", super::super::Options::default());
        std::fs::write(&status, r#"{"phase":"rolled-back","attempt":2}"#).expect("write");
        let st = check_phase(&mut cx, "phase is rolled-back", "rolled-back").expect("status");
        assert_eq!(st["attempt"].as_u64(), Some(2));
        check_phase(&mut cx, "phase is idle", "idle").expect("status");
        // No phase field: the check fails, the scenario goes on.
        std::fs::write(&status, r#"{"attempt":0}"#).expect("write");
        check_phase(&mut cx, "phase is idle (no field)", "idle").expect("status");
        // Not JSON: an error, not a check that passes or fails.
        std::fs::write(&status, "rewindd is not running").expect("write");
        assert!(check_phase(&mut cx, "unread", "idle").is_err());
        let c: Vec<(&str, bool, &str)> =
            cx.report.checks.iter().map(|c| (c.name.as_str(), c.passed, c.detail.as_str())).collect();
        assert_eq!(
            c,
            vec![
                ("phase is rolled-back", true, r#""rolled-back""#),
                ("phase is idle", false, r#"expected "idle", got "rolled-back""#),
                ("phase is idle (no field)", false, r#"expected "idle", got """#),
            ]
        );
    }

    #[test]
    fn same_and_changed_manifest_are_opposite_checks_on_one_diff() {
        let data = tempfile::tempdir().expect("tmp");
        std::fs::write(data.path().join("f"), "one").expect("write");
        let before = crate::manifest::scan(data.path()).expect("scan");
        std::fs::write(data.path().join("f"), "two").expect("write");
        let after = crate::manifest::scan(data.path()).expect("scan");
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = AdbConfig { artifacts: dir.path().join("artifacts"), ..AdbConfig::default() };
        let mut t = AdbTarget::new(fake_adb(dir.path(), "true"), Box::new(NoPowerControl), cfg).expect("fake device");
        let mut cx = Ctx::new(&mut t, "test", super::super::Options::default());
        assert!(cx.same_manifest("same", &before, &before));
        assert!(!cx.same_manifest("same, but changed", &before, &after));
        assert!(cx.changed_manifest("changed", &before, &after));
        assert!(!cx.changed_manifest("changed, but same", &before, &before));
        let c = &cx.report.checks;
        assert_eq!(c.iter().map(|c| c.passed).collect::<Vec<_>>(), vec![true, false, true, false]);
        assert!(c[1].detail.contains("changed: f (content)"), "{}", c[1].detail);
        assert_eq!(c[2].detail, "0 added, 0 removed, 1 changed, 0 chmod-ed");
    }
}
