//! f2fs mode (`checkpoint=fs`) on a real kernel (QEMU guest, Debian 6.1,
//! TCG): rewindd mounts /data with f2fs's `checkpoint=disable:N%` while an
//! attempt runs, any crash drops the attempt, a commit remounts with
//! `checkpoint=enable` and keeps it. Witnesses rewindd does not share:
//! /proc/mounts, the guest's manifest tool, fsck.f2fs on the unmounted
//! partition, and f2fs's own sysfs.

use rewind_daemon::backend::f2fs::{last_checkpoint_flags, CP_DISABLED_FLAG};
use rewind_harness::scenario::{checks, Ctx, Options, ScenarioError};
use rewind_harness::{BootPlan, FsType};

/// f2fs mode keeps nothing of rewind's on /data.
const EXCLUDE: &[&str] = &[];
const DATA_DEV: &str = "/dev/block/by-name/userdata";

fn run(name: &str, body: impl FnOnce(&mut Ctx) -> Result<(), ScenarioError>) {
    let options = Options { fs: FsType::F2fs, ..Options::default() };
    let report = rewind_harness::scenario::run_fn(name, &options, body).expect("guest kit and disks");
    eprint!("{}", report.summary());
    if !report.passed {
        panic!("{}", report.summary());
    }
}

fn start(cx: &mut Ctx, attempts: u32) -> Result<(), ScenarioError> {
    let out = cx.exec(&format!("rewindctl start --attempts {attempts} --reason guest-test"))?;
    cx.require("rewindctl start succeeds", out.success(), format!("{}{}", out.stdout, out.stderr))
}

/// The /data line of /proc/mounts (options column).
fn data_options(cx: &mut Ctx) -> Result<String, ScenarioError> {
    Ok(cx.exec_checked("awk '$2 == \"/data\" { print $3, $4 }' /proc/mounts")?.trim().to_string())
}

/// Changes no attempt may leave behind: fsync'd writes (f2fs roll-forward
/// must not bring them back), a rewrite in place, deletions, a rename.
const ATTEMPT_WRITES: &str = "set -e; \
    dd if=/dev/urandom of=/data/attempt.bin bs=1M count=16 conv=fsync 2>/dev/null; \
    echo fsynced > /data/fsynced.txt; dd if=/data/fsynced.txt of=/data/fsynced.copy conv=fsync 2>/dev/null; \
    dd if=/dev/urandom of=/data/db/app.db bs=4096 seek=10 count=64 conv=notrunc,fsync 2>/dev/null; \
    rm -rf /data/app/com.example.app2; mv /data/media /data/media.moved; sync";

/// ckpt_flags of the last checkpoint in the host's userdata image (the
/// guest must be stopped).
fn checkpoint_flags(cx: &mut Ctx) -> Result<u32, String> {
    let image = cx.target.artifacts_dir().join("userdata.img");
    last_checkpoint_flags(&image).map_err(|e| e.to_string())
}

fn fsck_clean(cx: &mut Ctx, what: &str) -> Result<(), ScenarioError> {
    let (clean, out) = checks::fsck(cx.target, FsType::F2fs, DATA_DEV)?;
    cx.check(&format!("fsck.f2fs clean {what}"), clean, out);
    Ok(())
}

/// start -> the attempt writes (with fsync) -> power cut -> next boot: the
/// changes are gone (the manifest equals the baseline), the next attempt is
/// armed with checkpoint=disable, and fsck.f2fs finds the partition clean.
#[test]
fn guest_f2fs_crash_drops_the_attempt() {
    run("guest-f2fs-crash", |cx| {
        cx.boot_ready(&BootPlan::rewind())?;
        let opts = data_options(cx)?;
        cx.check("no checkpoint: init mounted /data normally", !opts.contains("checkpoint=disable"), opts);
        cx.run_baseline()?;
        start(cx, 3)?;
        let baseline = checks::manifest(cx.target, "/data", EXCLUDE)?;
        cx.shutdown()?;

        cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
        let opts = data_options(cx)?;
        cx.require("attempt 1: /data is mounted with checkpoint=disable", opts.contains("checkpoint=disable"), opts)?;
        checks::check_phase(cx, "phase is checkpointing", "checkpointing")?;
        cx.exec_checked(ATTEMPT_WRITES)?;
        let changed = checks::manifest(cx.target, "/data", EXCLUDE)?;
        cx.changed_manifest("the attempt changed userdata", &baseline, &changed);
        let unusable =
            cx.exec_checked("cat /sys/fs/f2fs/$(basename $(readlink -f /dev/block/by-name/userdata))/unusable")?;
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
        let now = checks::manifest(cx.target, "/data", EXCLUDE)?;
        cx.same_manifest("userdata is exactly the baseline after the crash", &baseline, &now);
        let st = checks::status(cx)?;
        cx.check_eq("attempt 2 of 3", 2, st["attempt"].as_u64().unwrap_or(0));
        cx.exec_checked("umount /data")?;
        fsck_clean(cx, "after the crash")?;
        cx.shutdown()?;
        Ok(())
    });
}

/// start -> the attempt writes -> commit (live remount with
/// checkpoint=enable) -> power cut: every change survives, and the next
/// boot is idle with /data mounted normally.
#[test]
fn guest_f2fs_commit_keeps_changes() {
    run("guest-f2fs-commit", |cx| {
        cx.boot_ready(&BootPlan::rewind())?;
        cx.run_baseline()?;
        start(cx, 2)?;
        cx.shutdown()?;
        cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
        cx.exec_checked(ATTEMPT_WRITES)?;
        let armed_opts = data_options(cx)?;
        let out = cx.exec("rewindctl commit --reason guest-test")?;
        cx.require("commit succeeds", out.success(), format!("{}{}", out.stdout, out.stderr))?;
        let opts = data_options(cx)?;
        cx.check(
            "after the commit checkpointing is on again (live)",
            !opts.contains("checkpoint=disable"),
            opts.clone(),
        );
        cx.check(
            "the remount kept nosuid,nodev,noatime",
            ["nosuid", "nodev", "noatime"].iter().all(|o| opts.contains(o)),
            opts.clone(),
        );
        let without_cp: String =
            armed_opts.split(',').filter(|o| !o.starts_with("checkpoint=disable")).collect::<Vec<_>>().join(",");
        cx.check_eq("the remount kept every other mount option", without_cp, opts);
        let changed = checks::manifest(cx.target, "/data", EXCLUDE)?;
        let hist = cx.exec_checked("rewindctl history")?;
        cx.check("history records the commit", hist.contains("committed"), hist.clone());
        if let Some(ms) = hist.split("live, ").nth(1).and_then(|s| s.split(' ').next()) {
            eprintln!("[guest-f2fs-commit] commit (remount checkpoint=enable) latency: {ms} ms");
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
        let now = checks::manifest(cx.target, "/data", EXCLUDE)?;
        cx.same_manifest("committed data survives a power cut and reboot", &changed, &now);
        checks::check_phase(cx, "phase is idle", "idle")?;
        cx.exec_checked("umount /data")?;
        fsck_clean(cx, "after the commit")?;
        cx.shutdown()?;
        Ok(())
    });
}

/// Two attempts, both fail (one power cut, one clean shutdown without a
/// commit): the third boot has no attempt left, NeedsRollback is true,
/// init mounts /data normally and it is exactly the baseline.
#[test]
fn guest_f2fs_attempts_exhausted_needs_rollback() {
    run("guest-f2fs-exhausted", |cx| {
        cx.boot_ready(&BootPlan::rewind())?;
        cx.run_baseline()?;
        start(cx, 2)?;
        let baseline = checks::manifest(cx.target, "/data", EXCLUDE)?;
        cx.shutdown()?;
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
        checks::check_phase(cx, "phase is rolled-back", "rolled-back")?;
        let opts = data_options(cx)?;
        cx.check(
            "/data mounted normally (no attempt left)",
            !opts.is_empty() && !opts.contains("checkpoint=disable"),
            opts,
        );
        let now = checks::manifest(cx.target, "/data", EXCLUDE)?;
        cx.same_manifest("userdata is exactly the baseline", &baseline, &now);
        let hist = cx.exec_checked("rewindctl history")?;
        cx.check_eq(
            "two attempts counted",
            2,
            hist.lines().filter(|l| l.contains("attempt ") && l.contains("armed")).count(),
        );
        cx.exec_checked("umount /data")?;
        fsck_clean(cx, "after the rollback")?;
        cx.shutdown()?;
        Ok(())
    });
}

/// Figures, side by side in one guest (TCG, so only the ratios mean
/// much): mount with checkpoint=disable:0% vs a plain mount, 64 MiB with
/// conv=fsync (new file, then rewritten in place) on each, the commit
/// (remount checkpoint=enable). The same code as `rewind-harness bench
/// --f2fs-checkpoint`; printed on stderr (`--nocapture`).
#[test]
fn guest_f2fs_bench_mount_commit_write() {
    run("guest-f2fs-bench", |cx| {
        cx.boot_ready(&BootPlan::raw())?;
        cx.run_baseline()?;
        let f = rewind_harness::bench::f2fs_checkpoint(cx.target, 3)?;
        eprintln!("[guest-f2fs-bench] {f}\n{}", f.raw);
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
        fsck_clean(cx, "after the bench")?;
        cx.shutdown()?;
        Ok(())
    });
}

/// A nearly full, fragmented f2fs (90 % of the free space written as
/// 256 KiB files, every other one deleted since the last checkpoint): `checkpoint=disable:0%` can be refused with EAGAIN when
/// f2fs's GC cannot clean the holes within its time limit. rewindd then
/// raises the share by 10 until the kernel accepts, the attempt is armed
/// and counted once, and a crash still drops it.
#[test]
fn guest_f2fs_fragmented_userdata_still_arms() {
    run("guest-f2fs-eagain", |cx| {
        cx.boot_ready(&BootPlan::rewind())?;
        cx.run_baseline()?;
        let frag = cx.exec_checked(
            "set -e; dev=$(basename $(readlink -f /dev/block/by-name/userdata)); mkdir -p /data/frag; \
             n=$(df -k /data | tail -1 | awk '{ print int($(NF-2) * 0.9 / 256) }'); \
             i=0; while [ $i -lt $n ]; do dd if=/dev/zero of=/data/frag/f$i bs=256k count=1 2>/dev/null; i=$((i+1)); done; sync; \
             i=0; while [ $i -lt $n ]; do rm /data/frag/f$i; i=$((i+2)); done; sync; \
             echo unusable_if_disabled $(cat /sys/fs/f2fs/$dev/unusable); df -k /data | tail -1",
        )?;
        cx.say(&format!("fragmented: {}", frag.replace('\n', " | ")));
        start(cx, 2)?;
        let baseline = checks::manifest(cx.target, "/data", EXCLUDE)?;
        cx.shutdown()?;
        let rec = cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
        let n = rec.index;
        let log = std::fs::read_to_string(cx.target.artifacts_dir().join(format!("share/logs/boot-{n}/rewindd.log")))
            .unwrap_or_default();
        let tried: Vec<&str> =
            log.lines().filter(|l| l.contains("f2fs: EAGAIN") || l.contains("attempt armed")).collect();
        cx.say(&format!("rewindd arming: {}", tried.join(" | ")));
        let opts = data_options(cx)?;
        cx.require("the attempt is armed with checkpoint=disable", opts.contains("checkpoint=disable"), opts)?;
        let eagains = log.lines().filter(|l| l.contains("f2fs: EAGAIN")).count();
        eprintln!("[guest-f2fs-eagain] EAGAIN answers before the kernel accepted: {eagains}");
        let st = checks::status(cx)?;
        cx.check_eq("attempt 1 of 2", 1, st["attempt"].as_u64().unwrap_or(0));
        cx.exec_checked(ATTEMPT_WRITES)?;
        cx.target.power_cut()?;
        cx.boot_ready(&BootPlan::rewind())?;
        let now = checks::manifest(cx.target, "/data", EXCLUDE)?;
        cx.same_manifest("userdata is exactly the baseline after the crash", &baseline, &now);
        cx.exec_checked("umount /data")?;
        fsck_clean(cx, "after the crash")?;
        cx.shutdown()?;
        Ok(())
    });
}

/// A power cut in the middle of a commit, while its hook runs (held by a
/// slow commit hook): in f2fs mode the checkpoint=enable remount comes
/// before the hook, so the attempt's changes are already kept. The next
/// boot finishes the commit, and the history says (from f2fs's last
/// checkpoint on disk) that the changes were kept. (A cut before the
/// remount took loses them; that path is host-tested with a fake kernel:
/// backend::f2fs::tests::interrupted_commit_says_whether_the_attempt_survived.)
#[test]
fn guest_f2fs_commit_cut_during_the_hook_keeps_the_attempt() {
    run("guest-f2fs-commit-cut", |cx| {
        cx.boot_ready(&BootPlan::rewind())?;
        cx.run_baseline()?;
        start(cx, 2)?;
        cx.shutdown()?;
        cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
        cx.exec_checked(ATTEMPT_WRITES)?;
        let changed = checks::manifest(cx.target, "/data", EXCLUDE)?;
        // rewindd again, with a commit hook that holds the commit.
        cx.exec_checked(
            "printf '%s\\n' 'fstab = \"/etc/fstab.rewind\"' 'metadata_dir = \"/metadata/rewind\"' \
             'socket = \"/dev/socket/rewindd\"' 'reboot_command = [\"true\"]' 'commit_command = [\"sleep\", \"60\"]' \
             > /tmp/slow-commit.toml",
        )?;
        cx.exec_checked("kill $(pidof rewindd); sleep 1; rm -f /dev/socket/rewindd")?;
        cx.exec_checked("setsid rewindd --config /tmp/slow-commit.toml > /tmp/rewindd-slow.log 2>&1 < /dev/null &")?;
        cx.exec_checked("i=0; while [ ! -S /dev/socket/rewindd ] && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done; test -S /dev/socket/rewindd")?;
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
        let hist = cx.exec_checked("rewindctl history")?;
        let line = hist.lines().rev().find(|l| l.contains("committed")).unwrap_or("").to_string();
        cx.check("history says the attempt's changes were kept", line.contains("changes are kept"), hist.clone());
        checks::check_phase(cx, "phase is idle", "idle")?;
        let now = checks::manifest(cx.target, "/data", EXCLUDE)?;
        cx.same_manifest("userdata keeps the committed attempt", &changed, &now);
        cx.exec_checked("umount /data")?;
        fsck_clean(cx, "after the interrupted commit")?;
        cx.shutdown()?;
        Ok(())
    });
}
