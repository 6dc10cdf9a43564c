//! What is on /data, by witnesses rewindd does not share: the guest's own
//! manifest tool, fsck of the unmounted device, df/du, the COW directory.

use std::time::{Duration, Instant};

use crate::manifest::Manifest;
use crate::plan::{shell_quote, FsType};
use crate::target::Target;

use super::super::{Ctx, ScenarioError};
use super::stack::userdata_device;

/// rewindd's COW directory under /data (block mode): its, not user data.
pub const COW_DIR: &str = "rewind";

/// Manifest of `root` in the guest, minus the `exclude` subtrees.
pub fn manifest(target: &mut dyn Target, root: &str, exclude: &[&str]) -> Result<Manifest, ScenarioError> {
    let mut cmd = format!("rewind-manifest {}", shell_quote(root));
    for e in exclude {
        cmd += &format!(" --exclude {}", shell_quote(e));
    }
    let json = target.exec_checked(&cmd)?;
    Ok(Manifest::from_json(&json)?)
}

/// Manifest of the user data: /data minus rewindd's COW directory in
/// block mode; f2fs mode keeps nothing of rewind's on /data, so there
/// nothing is left out.
pub fn data_manifest(cx: &mut Ctx) -> Result<Manifest, ScenarioError> {
    let exclude: &[&str] = if cx.is_f2fs() { &[] } else { &[COW_DIR] };
    manifest(cx.target, "/data", exclude)
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

/// Checks (as `name`) that the unmounted `device` holds a clean
/// filesystem of the target's type.
pub fn fsck_clean(cx: &mut Ctx, device: &str, name: &str) -> Result<bool, ScenarioError> {
    let fs = cx.fs();
    let (clean, out) = fsck(cx.target, fs, device)?;
    Ok(cx.check(name, clean, out))
}

/// Unmounts /data and checks (as `name`) the device it came from in
/// rewind mode: the dm top device, or the raw partition in f2fs mode.
pub fn fsck_after_umount(cx: &mut Ctx, name: &str) -> Result<bool, ScenarioError> {
    cx.exec_checked("sync; umount /data")?;
    fsck_clean(cx, userdata_device(cx.fs()), name)
}

/// What is left in /data/rewind, rewindd's COW directory (empty when it
/// does not exist).
pub fn cow_files_left(target: &mut dyn Target) -> Result<Vec<String>, ScenarioError> {
    let out = target.exec(&format!("ls -A /data/{COW_DIR} 2>/dev/null || true"))?;
    Ok(out.stdout.split_whitespace().map(str::to_string).collect())
}

/// Waits (up to 30 s) until rewindd removed the COW files: after a rollback
/// it does so once /data is mounted through rewind-userdata, on its next
/// space poll, so manifests and checks must not race it. Returns what is
/// still there when it gives up (empty = gone).
pub fn wait_cow_gone(target: &mut dyn Target) -> Result<Vec<String>, ScenarioError> {
    let t = Instant::now();
    loop {
        let left = cow_files_left(target)?;
        if left.is_empty() || t.elapsed() > Duration::from_secs(30) {
            return Ok(left);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Checks (as `name`) that rewindd removed its COW files (waiting for its
/// space poll, see [`wait_cow_gone`]).
pub fn check_cow_gone(cx: &mut Ctx, name: &str) -> Result<bool, ScenarioError> {
    let left = wait_cow_gone(cx.target)?;
    Ok(cx.check(name, left.is_empty(), left.join(" ")))
}

/// After a reboot (`when`) of a committed checkpoint: rewindd removed its
/// COW files, and the user data is exactly `committed`.
pub fn check_commit_kept(cx: &mut Ctx, when: &str, committed: &Manifest) -> Result<(), ScenarioError> {
    check_cow_gone(cx, &format!("{when}: /data/rewind is empty or absent"))?;
    let now = data_manifest(cx)?;
    cx.same_manifest(&format!("{when}: every committed change is kept"), committed, &now);
    Ok(())
}

/// Free KiB of /data and KiB used by its files (du), as the guest sees.
pub fn df_du(cx: &mut Ctx) -> Result<(u64, u64), ScenarioError> {
    let out = cx.exec_checked("sync; df -P -k /data | tail -n 1 | awk '{print $4}'; du -sk /data | cut -f1")?;
    let v: Vec<u64> = out.split_whitespace().filter_map(|s| s.parse().ok()).collect();
    match v.as_slice() {
        [free, used] => Ok((*free, *used)),
        _ => Err(ScenarioError::other(format!("df/du printed {out:?}"))),
    }
}

/// Baseline data for an attempt to rewrite. Writes into blocks the
/// baseline leaves free cost no COW (`cow.free_map`, on by default), so a
/// scenario that must fill the store rewrites data the baseline holds:
/// `mib` MiB of random bytes, synced, written before the checkpoint is
/// armed (it is then part of the baseline).
pub const BALLAST: &str = "/data/ballast.bin";

pub fn write_ballast(cx: &mut Ctx, mib: u64) -> Result<(), ScenarioError> {
    cx.exec_checked(&format!("dd if=/dev/urandom of={BALLAST} bs=1M count={mib} conv=fsync 2>/dev/null; sync"))?;
    let size = cx.exec_checked(&format!("stat -c %s {BALLAST}"))?;
    if size.trim() != (mib << 20).to_string() {
        return Err(ScenarioError::other(format!("{BALLAST} is {} bytes, not {mib} MiB (disk full?)", size.trim())));
    }
    Ok(())
}

/// Rewrites the first `mib` MiB of the ballast in place (every chunk is
/// copied on its first write), synced.
pub fn rewrite_ballast(cx: &mut Ctx, mib: u64) -> Result<(), ScenarioError> {
    cx.exec_checked(&format!("dd if=/dev/urandom of={BALLAST} bs=1M count={mib} conv=notrunc 2>/dev/null; sync"))?;
    Ok(())
}

/// sha256 of each MiB of the ballast's first `mib` MiB, read from the
/// disk (caches dropped): which of them an attempt rewrote.
pub fn ballast_sums(cx: &mut Ctx, mib: u64) -> Result<Vec<String>, ScenarioError> {
    let out = cx.exec_checked(&format!(
        "echo 3 > /proc/sys/vm/drop_caches; i=0; while [ $i -lt {mib} ]; do \
         dd if={BALLAST} bs=1M skip=$i count=1 2>/dev/null | sha256sum; i=$((i+1)); done"
    ))?;
    let sums: Vec<String> = out.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect();
    if sums.len() as u64 != mib {
        return Err(ScenarioError::other(format!("{} sums of {BALLAST} for {mib} MiB", sums.len())));
    }
    Ok(sums)
}

/// Rewrites the ballast in place in the background, 1 MiB at a time at
/// ~1.5-2 MiB/s (synced), so the space watch sees the store fill; leaves
/// /data/fill.done when it got through `mib` MiB.
pub fn slow_fill(cx: &mut Ctx, mib: u64) -> Result<(), ScenarioError> {
    cx.exec_checked(&format!(
        "setsid sh -c 'i=0; while [ $i -lt {mib} ]; do dd if=/dev/urandom of={BALLAST} bs=1M seek=$i count=1 conv=notrunc 2>/dev/null; sync; usleep 500000; i=$((i+1)); done; echo done > /data/fill.done' > /dev/null 2>&1 < /dev/null &"
    ))?;
    Ok(())
}

/// Paths attempt `n` of update.sh (the default workload) leaves behind,
/// relative to its data directory.
pub fn attempt_artifacts(n: u32) -> Vec<String> {
    vec![
        format!("attempt-{n}"),
        format!("app/com.example.new{n}"),
        format!("app/com.example.new{n}/files/n0"),
        format!("user/0/video.hardlink.{n}"),
        format!("misc/empty.{n}"),
        format!("cache/tmp{n}/a"),
    ]
}
