//! Independent witnesses a scenario uses: the guest's own manifest tool,
//! fsck on the unmounted device, dmsetup (never used by rewindd).

use rewind_proto::v1 as pb;

use crate::manifest::Manifest;
use crate::plan::{shell_quote, FsType};
use crate::target::Target;

use super::{Ctx, ScenarioError};

/// Manifest of `root` in the guest, minus the `exclude` subtrees.
pub fn manifest(target: &mut dyn Target, root: &str, exclude: &[&str]) -> Result<Manifest, ScenarioError> {
    let mut cmd = format!("rewind-manifest {}", shell_quote(root));
    for e in exclude {
        cmd += &format!(" --exclude {}", shell_quote(e));
    }
    let json = target.exec_checked(&cmd)?;
    Ok(Manifest::from_json(&json)?)
}

/// The fsck command that only reads: e2fsck -fn / fsck.f2fs (no fix).
pub fn fsck_command(fs: FsType, device: &str) -> String {
    match fs {
        FsType::Ext4 => format!("e2fsck -fn {}", shell_quote(device)),
        FsType::F2fs => format!("fsck.f2fs {}", shell_quote(device)),
    }
}

/// fsck of an unmounted device: (clean, output).
pub fn fsck(target: &mut dyn Target, fs: FsType, device: &str) -> Result<(bool, String), ScenarioError> {
    let out = target.exec(&fsck_command(fs, device))?;
    let text = format!("{}{}", out.stdout, out.stderr);
    let clean = match fs {
        FsType::Ext4 => out.status == 0,
        // fsck.f2fs exits 0 even on some findings; its summary says [Ok..].
        FsType::F2fs => out.status == 0 && !text.contains("[Fail]") && !text.contains("Fix "),
    };
    Ok((clean, text))
}

/// `dmsetup table` / `dmsetup status` as text (udev-less guest).
pub fn dmsetup(target: &mut dyn Target, args: &str) -> Result<String, ScenarioError> {
    Ok(target.exec_checked(&format!("dmsetup {args}"))?)
}

/// Size of a block device in 512-byte sectors.
pub fn sectors(target: &mut dyn Target, device: &str) -> Result<u64, ScenarioError> {
    let out = target.exec_checked(&format!("blockdev --getsz {}", shell_quote(device)))?;
    out.trim().parse().map_err(|_| {
        ScenarioError::Target(crate::target::TargetError::Other(format!("blockdev --getsz {device} printed {out:?}")))
    })
}

/// What is left in /data/rewind, rewindd's COW directory (empty when it
/// does not exist).
pub fn cow_files_left(target: &mut dyn Target) -> Result<Vec<String>, ScenarioError> {
    let out = target.exec("ls -A /data/rewind 2>/dev/null || true")?;
    Ok(out.stdout.split_whitespace().map(str::to_string).collect())
}

/// Waits (up to 30 s) until rewindd removed the COW files: after a rollback
/// it does so once /data is mounted through rewind-userdata, on its next
/// space poll, so manifests and checks must not race it. Returns what is
/// still there when it gives up (empty = gone).
pub fn wait_cow_gone(target: &mut dyn Target) -> Result<Vec<String>, ScenarioError> {
    let t = std::time::Instant::now();
    loop {
        let left = cow_files_left(target)?;
        if left.is_empty() || t.elapsed() > std::time::Duration::from_secs(30) {
            return Ok(left);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// After a reboot (`when`) of a committed checkpoint: rewindd removed its
/// COW files, and /data (its manifest minus `exclude`) is exactly
/// `committed`.
pub fn check_commit_kept(
    cx: &mut Ctx,
    when: &str,
    committed: &Manifest,
    exclude: &[&str],
) -> Result<(), ScenarioError> {
    let left = wait_cow_gone(cx.target)?;
    cx.check(&format!("{when}: /data/rewind is empty or absent"), left.is_empty(), left.join(" "));
    let now = manifest(cx.target, "/data", exclude)?;
    cx.same_manifest(&format!("{when}: every committed change is kept"), committed, &now);
    Ok(())
}

/// rewindd's status as `rewindctl status --json` prints it.
pub fn status(cx: &mut Ctx) -> Result<serde_json::Value, ScenarioError> {
    let out = cx.exec_checked("rewindctl status --json")?;
    serde_json::from_str(&out).map_err(|e| {
        ScenarioError::Target(crate::target::TargetError::Other(format!("rewindctl status --json: {e}: {out}")))
    })
}

/// The phase of a status ("" when the field is missing, so the check
/// comparing it fails rather than the scenario stopping).
pub fn phase(st: &serde_json::Value) -> String {
    st["phase"].as_str().unwrap_or("").to_string()
}

/// Checks rewindd's phase (`rewindctl status --json`) is `expected`;
/// returns the whole status for callers that read more of it.
pub fn check_phase(cx: &mut Ctx, name: &str, expected: &str) -> Result<serde_json::Value, ScenarioError> {
    let st = status(cx)?;
    cx.check_eq(name, expected.to_string(), phase(&st));
    Ok(st)
}

/// One event of rewindd's history as the checks read it: (kind, attempt).
pub type Event = (String, u64);

/// The (kind, attempt) of the events gRPC's GetHistory returned.
pub fn grpc_events(events: &[pb::HistoryEvent]) -> Vec<Event> {
    events.iter().map(|e| (e.kind.clone(), u64::from(e.attempt))).collect()
}

/// "kind#attempt ...": a history as a check's detail.
pub fn story(h: &[Event]) -> String {
    h.iter().map(|(k, a)| format!("{k}#{a}")).collect::<Vec<_>>().join(" ")
}

/// The attempt number of every `attempt` event, in order.
pub fn attempts_counted(h: &[Event]) -> Vec<u64> {
    h.iter().filter(|(k, _)| k == "attempt").map(|(_, a)| *a).collect()
}

/// The history after three failed attempts used up the checkpoint: each
/// attempt counted once, each discarded, the last rollback after attempt 3
/// (a rollback before it would leave attempt 3 running on its data).
pub fn check_three_attempts_rolled_back(cx: &mut Ctx, h: &[Event]) {
    cx.check_eq("history counts attempts 1, 2 and 3, once each", vec![1, 2, 3], attempts_counted(h));
    let rollbacks = h.iter().filter(|(k, _)| k == "rollback-finished").count();
    let last_attempt = h.iter().rposition(|(k, _)| k == "attempt");
    let last_rollback = h.iter().rposition(|(k, _)| k == "rollback-finished");
    cx.check(
        "history shows every attempt rolled back, the last after attempt 3",
        rollbacks >= 3 && matches!((last_attempt, last_rollback), (Some(a), Some(r)) if r > a),
        story(h),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::adb::{fake_adb, fake_adb_with_script, AdbConfig, AdbTarget, NoPowerControl};

    fn events(story: &str) -> Vec<Event> {
        story
            .split_whitespace()
            .map(|e| {
                let (k, a) = e.split_once('#').expect("kind#attempt");
                (k.to_string(), a.parse().expect("attempt"))
            })
            .collect()
    }

    /// (counted once each, rolled back) as the two checks record them.
    fn three_attempts(story: &str) -> (bool, bool) {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = AdbConfig { artifacts: dir.path().join("artifacts"), ..AdbConfig::default() };
        let mut t = AdbTarget::new(fake_adb(dir.path(), "true"), Box::new(NoPowerControl), cfg).expect("fake device");
        let mut cx = Ctx::new(&mut t, "test", super::super::Options::default());
        check_three_attempts_rolled_back(&mut cx, &events(story));
        let c = &cx.report.checks;
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].name, "history counts attempts 1, 2 and 3, once each");
        assert_eq!(c[1].name, "history shows every attempt rolled back, the last after attempt 3");
        assert_eq!(c[1].detail, story);
        (c[0].passed, c[1].passed)
    }

    #[test]
    fn three_attempts_each_rolled_back_and_nothing_else_passes() {
        let r = "rollback-begun#1 rollback-finished#1";
        let good = format!("started#0 attempt#1 {r} attempt#2 {r} attempt#3 {r}");
        assert_eq!(three_attempts(&good), (true, true));
        // Attempt 3 still running on its data: not rolled back after it.
        let open = format!("started#0 attempt#1 {r} attempt#2 {r} {r} attempt#3");
        assert_eq!(three_attempts(&open), (true, false));
        // An attempt counted twice, or one missing.
        let twice = format!("attempt#1 {r} attempt#1 {r} attempt#2 {r} attempt#3 {r}");
        assert_eq!(three_attempts(&twice), (false, true));
        let two = format!("attempt#1 {r} attempt#2 {r} {r}");
        assert_eq!(three_attempts(&two), (false, true));
        // Fewer than three rollbacks.
        let short = format!("attempt#1 attempt#2 attempt#3 {r}");
        assert_eq!(three_attempts(&short), (true, false));
    }

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

    #[test]
    fn grpc_events_keep_kind_attempt_and_order() {
        let ev = |kind: &str, attempt| pb::HistoryEvent { kind: kind.into(), attempt, ..Default::default() };
        let h = grpc_events(&[ev("attempt", 1), ev("rollback-finished", 1)]);
        assert_eq!(story(&h), "attempt#1 rollback-finished#1");
        assert_eq!(attempts_counted(&h), vec![1]);
    }
}
