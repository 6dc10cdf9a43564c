//! f2fs mode (`checkpoint=fs`) on a real kernel: rewindd mounts /data with
//! f2fs's `checkpoint=disable:N%` while an attempt runs, any crash drops
//! the attempt, a commit remounts with `checkpoint=enable` and keeps it.
//! Witnesses rewindd does not share: /proc/mounts, the guest's manifest
//! tool, fsck.f2fs on the unmounted partition, f2fs's own sysfs and its
//! last checkpoint in the host's image. `tests/guest_f2fs.rs` runs each.

use rewind_daemon::backend::f2fs::{last_checkpoint_flags, CP_DISABLED_FLAG};
use rewind_daemon::types::EventKind::{Attempt, Committed};

use super::checks::{self, check_phase, data_manifest, data_mount, start, RAW};
use super::{Ctx, Needs, Scenario, ScenarioError};
use crate::plan::{BootPlan, FsType};

/// f2fs userdata, with rewindd.
const F2FS_MODE: Needs = Needs { fs: Some(FsType::F2fs), ..Needs::DAEMON };

pub static F2FS: &[Scenario] = &[
    Scenario {
        name: "guest-f2fs-crash",
        summary: "f2fs mode: the attempt writes (with fsync) and the power is cut: the next boot has none of it, arms the next attempt with checkpoint=disable, fsck.f2fs clean",
        needs: F2FS_MODE,
        run: crash_drops_the_attempt,
    },
    Scenario {
        name: "guest-f2fs-commit",
        summary: "f2fs mode: a live commit (remount checkpoint=enable, other options kept), then a power cut: every change survives, the next boot is idle",
        needs: F2FS_MODE,
        run: commit_keeps_changes,
    },
    Scenario {
        name: "guest-f2fs-exhausted",
        summary: "f2fs mode: two attempts fail (a power cut, a shutdown without commit): NeedsRollback, /data mounted normally and exactly the baseline",
        needs: F2FS_MODE,
        run: attempts_exhausted_need_rollback,
    },
    Scenario {
        name: "guest-f2fs-bench",
        summary: "f2fs checkpoint=disable:0% vs a plain mount, side by side: mount, 64 MiB written with fsync, the commit remount (printed; `bench --f2fs-checkpoint`)",
        needs: Needs { fs: Some(FsType::F2fs), ..Needs::NOTHING },
        run: bench_mount_commit_write,
    },
    Scenario {
        name: "guest-f2fs-eagain",
        summary: "f2fs mode on a nearly full, fragmented f2fs: checkpoint=disable refused with EAGAIN is retried with a larger share until armed, counted once, and a crash still drops the attempt",
        needs: F2FS_MODE,
        run: fragmented_userdata_still_arms,
    },
    Scenario {
        name: "guest-f2fs-commit-cut",
        summary: "f2fs mode: a power cut while the commit's hook runs (after the checkpoint=enable remount): the next boot finishes the commit and says the changes were kept",
        needs: F2FS_MODE,
        run: commit_cut_during_the_hook_keeps_the_attempt,
    },
];

/// Changes no attempt may leave behind: fsync'd writes (f2fs roll-forward
/// must not bring them back), a rewrite in place, deletions, a rename.
const ATTEMPT_WRITES: &str = "set -e; \
    dd if=/dev/urandom of=/data/attempt.bin bs=1M count=16 conv=fsync 2>/dev/null; \
    echo fsynced > /data/fsynced.txt; dd if=/data/fsynced.txt of=/data/fsynced.copy conv=fsync 2>/dev/null; \
    dd if=/dev/urandom of=/data/db/app.db bs=4096 seek=10 count=64 conv=notrunc,fsync 2>/dev/null; \
    rm -rf /data/app/com.example.app2; mv /data/media /data/media.moved; sync";

/// ckpt_flags of the last checkpoint in the host's userdata image (the
/// guest must be stopped), read with rewindd's own reader.
fn checkpoint_flags(cx: &Ctx) -> Result<u32, String> {
    last_checkpoint_flags(&checks::userdata_image(cx)).map_err(|e| e.to_string())
}

/// /data's mount options.
fn data_options(cx: &mut Ctx) -> Result<String, ScenarioError> {
    Ok(data_mount(cx)?.options)
}

/// start -> the attempt writes (with fsync) -> power cut -> next boot: the
/// changes are gone (the manifest equals the baseline), the next attempt is
/// armed with checkpoint=disable, and fsck.f2fs finds the partition clean.
fn crash_drops_the_attempt(cx: &mut Ctx) -> Result<(), ScenarioError> {
    cx.boot_ready(&BootPlan::rewind())?;
    let opts = data_options(cx)?;
    cx.check("no checkpoint: init mounted /data normally", !opts.contains("checkpoint=disable"), opts);
    cx.run_baseline()?;
    start(cx, 3, "guest-test")?;
    let baseline = data_manifest(cx)?;
    cx.shutdown()?;

    cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    let opts = data_options(cx)?;
    cx.require("attempt 1: /data is mounted with checkpoint=disable", opts.contains("checkpoint=disable"), opts)?;
    check_phase(cx, "phase is checkpointing", "checkpointing")?;
    cx.exec_checked(ATTEMPT_WRITES)?;
    let changed = data_manifest(cx)?;
    cx.changed_manifest("the attempt changed userdata", &baseline, &changed);
    let unusable = cx.exec_checked(&format!("cat /sys/fs/f2fs/$(basename $(readlink -f {RAW}))/unusable"))?;
    let st = checks::status(cx)?;
    cx.say(&format!("f2fs unusable blocks (sysfs) {}; status {}", unusable.trim(), st["partitions"][0]));
    cx.target.power_cut()?;
    let flags = checkpoint_flags(cx);
    cx.check(
        "on disk, the last checkpoint is the one written with checkpointing off",
        flags.clone().is_ok_and(|f| f & CP_DISABLED_FLAG != 0),
        format!("{flags:x?}"),
    );

    cx.boot_ready(&BootPlan::rewind())?;
    let opts = data_options(cx)?;
    cx.check("attempt 2 is armed again with checkpoint=disable", opts.contains("checkpoint=disable"), opts);
    let now = data_manifest(cx)?;
    cx.same_manifest("userdata is exactly the baseline after the crash", &baseline, &now);
    let st = checks::status(cx)?;
    cx.check_eq("attempt 2 of 3", 2, st["attempt"].as_u64().unwrap_or(0));
    checks::fsck_after_umount(cx, "fsck.f2fs clean after the crash")?;
    cx.shutdown()?;
    Ok(())
}

/// start -> the attempt writes -> commit (live remount with
/// checkpoint=enable) -> power cut: every change survives, and the next
/// boot is idle with /data mounted normally.
fn commit_keeps_changes(cx: &mut Ctx) -> Result<(), ScenarioError> {
    checks::begin_checkpoint(cx, 2, "guest-test")?;
    cx.shutdown()?;
    cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    cx.exec_checked(ATTEMPT_WRITES)?;
    let armed_opts = data_options(cx)?;
    let out = cx.exec("rewindctl commit --reason guest-test")?;
    cx.require("commit succeeds", out.success(), format!("{}{}", out.stdout, out.stderr))?;
    let opts = data_options(cx)?;
    cx.check("after the commit checkpointing is on again (live)", !opts.contains("checkpoint=disable"), opts.clone());
    cx.check(
        "the remount kept nosuid,nodev,noatime",
        ["nosuid", "nodev", "noatime"].iter().all(|o| opts.contains(o)),
        opts.clone(),
    );
    let without_cp: String =
        armed_opts.split(',').filter(|o| !o.starts_with("checkpoint=disable")).collect::<Vec<_>>().join(",");
    cx.check_eq("the remount kept every other mount option", without_cp, opts);
    let changed = data_manifest(cx)?;
    let h = checks::history(cx)?;
    cx.check("history records the commit", h.has(Committed), h.text());
    if let Some(ms) = h.last_of(Committed).and_then(|e| e.detail.split("live, ").nth(1)?.split(' ').next()) {
        cx.say(&format!("commit (remount checkpoint=enable) latency: {ms} ms"));
    }
    // A power cut right after the commit: the remount wrote the checkpoint.
    cx.target.power_cut()?;
    let flags = checkpoint_flags(cx);
    cx.check(
        "on disk, the last checkpoint was written with checkpointing on",
        flags.clone().is_ok_and(|f| f & CP_DISABLED_FLAG == 0),
        format!("{flags:x?}"),
    );
    cx.boot_ready(&BootPlan::rewind())?;
    let opts = data_options(cx)?;
    cx.check("next boot: /data mounted normally", !opts.contains("checkpoint=disable"), opts);
    let now = data_manifest(cx)?;
    cx.same_manifest("committed data survives a power cut and reboot", &changed, &now);
    check_phase(cx, "phase is idle", "idle")?;
    checks::fsck_after_umount(cx, "fsck.f2fs clean after the commit")?;
    cx.shutdown()?;
    Ok(())
}

/// Two attempts, both fail (one power cut, one clean shutdown without a
/// commit): the third boot has no attempt left, NeedsRollback is true,
/// init mounts /data normally and it is exactly the baseline.
fn attempts_exhausted_need_rollback(cx: &mut Ctx) -> Result<(), ScenarioError> {
    let baseline = checks::prepare_checkpoint(cx, 2, "guest-test")?;
    cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    cx.target.power_cut()?;
    cx.boot_ready(&BootPlan::rewind().with_workload(2))?;
    let st = checks::status(cx)?;
    cx.check_eq("attempt 2 of 2", 2, st["attempt"].as_u64().unwrap_or(0));
    // A clean unmount without commit drops the attempt too.
    cx.shutdown()?;
    cx.boot_ready(&BootPlan::rewind())?;
    let needs = cx.exec("rewindctl needs-rollback")?;
    cx.check_eq("needs-rollback is true", 0, needs.status);
    check_phase(cx, "phase is rolled-back", "rolled-back")?;
    let opts = data_options(cx)?;
    cx.check(
        "/data mounted normally (no attempt left)",
        !opts.is_empty() && !opts.contains("checkpoint=disable"),
        opts,
    );
    let now = data_manifest(cx)?;
    cx.same_manifest("userdata is exactly the baseline", &baseline, &now);
    let h = checks::history(cx)?;
    cx.check_eq("two attempts counted", 2, h.count(Attempt));
    checks::fsck_after_umount(cx, "fsck.f2fs clean after the rollback")?;
    cx.shutdown()?;
    Ok(())
}

/// Figures, side by side in one guest (TCG, so only the ratios mean
/// much): mount with checkpoint=disable:0% vs a plain mount, 64 MiB with
/// conv=fsync (new file, then rewritten in place) on each, the commit
/// (remount checkpoint=enable). The same code as `rewind-harness bench
/// --f2fs-checkpoint`; printed on stderr.
fn bench_mount_commit_write(cx: &mut Ctx) -> Result<(), ScenarioError> {
    cx.boot_ready(&BootPlan::raw())?;
    cx.run_baseline()?;
    let f = crate::bench::f2fs_checkpoint(cx.target, 3)?;
    cx.say(&format!("{f}\n{}", f.raw));
    cx.check_eq("three rounds measured", 3, f.rounds);
    cx.check(
        "every step was timed",
        [f.plain_mount_ms, f.plain_write_ms, f.disabled_mount_ms, f.disabled_write_ms, f.enable_remount_ms]
            .iter()
            .all(|ms| *ms > 0),
        f.raw.clone(),
    );
    cx.check(
        "the in-place rewrite left unusable blocks while checkpointing was off",
        f.unusable_blocks > 0,
        f.raw.clone(),
    );
    cx.exec_checked("umount /data")?;
    checks::fsck_clean(cx, RAW, "fsck.f2fs clean after the bench")?;
    cx.shutdown()?;
    Ok(())
}

/// A nearly full, fragmented f2fs (90 % of the free space written as
/// 256 KiB files, every other one deleted since the last checkpoint):
/// `checkpoint=disable:0%` can be refused with EAGAIN when f2fs's GC cannot
/// clean the holes within its time limit. rewindd then raises the share by
/// 10 until the kernel accepts, the attempt is armed and counted once, and
/// a crash still drops it.
fn fragmented_userdata_still_arms(cx: &mut Ctx) -> Result<(), ScenarioError> {
    cx.boot_ready(&BootPlan::rewind())?;
    cx.run_baseline()?;
    let frag = cx.exec_checked(&format!(
        "set -e; dev=$(basename $(readlink -f {RAW})); mkdir -p /data/frag; \
         n=$(df -k /data | tail -1 | awk '{{ print int($(NF-2) * 0.9 / 256) }}'); \
         i=0; while [ $i -lt $n ]; do dd if=/dev/zero of=/data/frag/f$i bs=256k count=1 2>/dev/null; i=$((i+1)); done; sync; \
         i=0; while [ $i -lt $n ]; do rm /data/frag/f$i; i=$((i+2)); done; sync; \
         echo unusable_if_disabled $(cat /sys/fs/f2fs/$dev/unusable); df -k /data | tail -1"
    ))?;
    cx.say(&format!("fragmented: {}", frag.replace('\n', " | ")));
    start(cx, 2, "guest-test")?;
    let baseline = data_manifest(cx)?;
    cx.shutdown()?;
    let rec = cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    let log = checks::boot_log(cx, rec.index, "rewindd.log");
    let tried: Vec<&str> = log.lines().filter(|l| l.contains("f2fs: EAGAIN") || l.contains("attempt armed")).collect();
    cx.say(&format!("rewindd arming: {}", tried.join(" | ")));
    let opts = data_options(cx)?;
    cx.require("the attempt is armed with checkpoint=disable", opts.contains("checkpoint=disable"), opts)?;
    let eagains = log.lines().filter(|l| l.contains("f2fs: EAGAIN")).count();
    cx.say(&format!("EAGAIN answers before the kernel accepted: {eagains}"));
    let st = checks::status(cx)?;
    cx.check_eq("attempt 1 of 2", 1, st["attempt"].as_u64().unwrap_or(0));
    cx.exec_checked(ATTEMPT_WRITES)?;
    cx.target.power_cut()?;
    cx.boot_ready(&BootPlan::rewind())?;
    let now = data_manifest(cx)?;
    cx.same_manifest("userdata is exactly the baseline after the crash", &baseline, &now);
    checks::fsck_after_umount(cx, "fsck.f2fs clean after the crash")?;
    cx.shutdown()?;
    Ok(())
}

/// A power cut in the middle of a commit, while its hook runs (held by a
/// slow commit hook): in f2fs mode the checkpoint=enable remount comes
/// before the hook, so the attempt's changes are already kept. The next
/// boot finishes the commit, and the history says (from f2fs's last
/// checkpoint on disk) that the changes were kept. (A cut before the
/// remount took loses them; that path is host-tested with a fake kernel:
/// backend::f2fs::tests::interrupted_commit_says_whether_the_attempt_survived.)
fn commit_cut_during_the_hook_keeps_the_attempt(cx: &mut Ctx) -> Result<(), ScenarioError> {
    checks::begin_checkpoint(cx, 2, "guest-test")?;
    cx.shutdown()?;
    cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    cx.exec_checked(ATTEMPT_WRITES)?;
    let changed = data_manifest(cx)?;
    // rewindd again, with a commit hook that holds the commit.
    checks::restart_rewindd(cx, "slow-commit", &["commit_command = [\"sleep\", \"60\"]"])?;
    cx.exec_checked("setsid rewindctl commit --reason guest-test > /tmp/commit.log 2>&1 < /dev/null &")?;
    // The record on /metadata, not status (which serves its cached copy
    // while the commit holds the engine).
    let rec = cx.exec(
        "i=0; until pidof sleep > /dev/null || [ $i -gt 300 ]; do usleep 100000; i=$((i+1)); done; \
         grep -o '\\\"phase\\\": *\\\"[a-z-]*\\\"' /metadata/rewind/state; pidof sleep",
    )?;
    cx.require(
        "the commit intent is recorded and the hook runs",
        rec.stdout.contains("committing") && rec.success(),
        rec.stdout.clone(),
    )?;
    let opts = data_options(cx)?;
    cx.check("the remount came before the hook", !opts.contains("checkpoint=disable"), opts);
    cx.target.power_cut()?;

    cx.boot_ready(&BootPlan::rewind())?;
    let h = checks::history(cx)?;
    let kept = h.last_of(Committed).is_some_and(|e| e.detail.contains("changes are kept"));
    cx.check("history says the attempt's changes were kept", kept, h.text());
    check_phase(cx, "phase is idle", "idle")?;
    let now = data_manifest(cx)?;
    cx.same_manifest("userdata keeps the committed attempt", &changed, &now);
    checks::fsck_after_umount(cx, "fsck.f2fs clean after the interrupted commit")?;
    cx.shutdown()?;
    Ok(())
}
