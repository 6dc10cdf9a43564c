//! f2fs mount/write/commit figures on a running guest, shared by `rewind-harness bench --f2fs-checkpoint` and
//! the guest tests (tests/guest_f2fs.rs).
//!
//! `f2fs_checkpoint`: f2fs mode's costs, side by side in one guest, with
//! the same device and options: mount with `checkpoint=disable:0%` vs a
//! plain mount, 64 MiB written (new file, then rewritten in place) with
//! `conv=fsync` on each, the unusable blocks that leaves, and the commit (a
//! remount with `checkpoint=enable`). Under TCG only the ratios mean much.

use std::fmt;
use std::time::Duration;

use crate::target::{Target, TargetError};

/// Size written per step, MiB.
pub const WRITE_MIB: u64 = 64;

/// Medians over the rounds, milliseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct F2fsFigures {
    pub rounds: usize,
    /// Clock used in the guest ("ns": /proc/timer_list, or "10ms": /proc/uptime).
    pub clock: String,
    pub plain_mount_ms: u64,
    pub plain_write_ms: u64,
    pub plain_rewrite_ms: u64,
    pub disabled_mount_ms: u64,
    pub disabled_write_ms: u64,
    pub disabled_rewrite_ms: u64,
    /// Blocks f2fs hid as unusable after the rewrite (sysfs).
    pub unusable_blocks: u64,
    /// The commit: remount with checkpoint=enable after both writes.
    pub enable_remount_ms: u64,
    /// Every round as the guest printed it.
    pub raw: String,
}

fn mibs(ms: u64) -> f64 {
    if ms == 0 {
        0.0
    } else {
        WRITE_MIB as f64 * 1000.0 / ms as f64
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl fmt::Display for F2fsFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "f2fs checkpoint=disable vs plain mount, median of {} rounds (clock {}):",
            self.rounds, self.clock
        )?;
        writeln!(
            f,
            "  mount:       plain {} ms, checkpoint=disable:0% {} ms ({:.2}x)",
            self.plain_mount_ms,
            self.disabled_mount_ms,
            ratio(self.disabled_mount_ms, self.plain_mount_ms)
        )?;
        writeln!(
            f,
            "  write {WRITE_MIB} MiB (new file, conv=fsync): plain {} ms ({:.1} MiB/s), disabled {} ms ({:.1} MiB/s), throughput ratio {:.2}",
            self.plain_write_ms,
            mibs(self.plain_write_ms),
            self.disabled_write_ms,
            mibs(self.disabled_write_ms),
            ratio(self.plain_write_ms, self.disabled_write_ms)
        )?;
        writeln!(
            f,
            "  rewrite {WRITE_MIB} MiB in place (conv=notrunc,fsync): plain {} ms ({:.1} MiB/s), disabled {} ms ({:.1} MiB/s), throughput ratio {:.2}; unusable after it: {} blocks",
            self.plain_rewrite_ms,
            mibs(self.plain_rewrite_ms),
            self.disabled_rewrite_ms,
            mibs(self.disabled_rewrite_ms),
            ratio(self.plain_rewrite_ms, self.disabled_rewrite_ms),
            self.unusable_blocks
        )?;
        write!(f, "  commit (remount checkpoint=enable): {} ms", self.enable_remount_ms)
    }
}

/// The guest side. `ms` prints a millisecond clock: the kernel's
/// monotonic clock from /proc/timer_list when readable, else /proc/uptime
/// (10 ms). The rewrite in the disabled round overwrites a file the last
/// checkpoint holds, which is what f2fs must hide as unusable.
fn script(device: &str, options: &str, rounds: u32) -> String {
    format!(
        "set -e; D={device}; O={options}; M=/data; \
         if awk '/^now at/ {{ ok = 1 }} END {{ exit !ok }}' /proc/timer_list 2>/dev/null; then \
           echo clock ns; ms() {{ awk '/^now at/ {{ printf \"%d\", $3 / 1000000; exit }}' /proc/timer_list; }}; \
         else echo clock 10ms; ms() {{ awk '{{ printf \"%d\", $1 * 1000 }}' /proc/uptime; }}; fi; \
         dev=$(basename $(readlink -f $D)); cd /; umount $M 2>/dev/null || true; \
         w() {{ dd if=/dev/zero of=$M/$1 bs=1M count={WRITE_MIB} $2 2>/dev/null; }}; \
         r=1; while [ $r -le {rounds} ]; do \
           sync; echo 3 > /proc/sys/vm/drop_caches; \
           a=$(ms); mount -t f2fs -o $O $D $M; b=$(ms); w old.bin conv=fsync; c=$(ms); w old.bin conv=notrunc,fsync; d=$(ms); \
           umount $M; sync; echo 3 > /proc/sys/vm/drop_caches; \
           e=$(ms); mount -t f2fs -o $O,checkpoint=disable:0% $D $M; f=$(ms); w new.bin conv=fsync; g=$(ms); w old.bin conv=notrunc,fsync; h=$(ms); \
           u=$(cat /sys/fs/f2fs/$dev/unusable); \
           mount -o remount,$O,checkpoint=enable $M; i=$(ms); rm $M/old.bin $M/new.bin; umount $M; \
           echo round $r plain_mount $((b-a)) plain_write $((c-b)) plain_rewrite $((d-c)) \
             disabled_mount $((f-e)) disabled_write $((g-f)) disabled_rewrite $((h-g)) unusable_blocks $u enable_remount $((i-h)); \
           r=$((r+1)); \
         done; mount -t f2fs -o $O $D $M"
    )
}

fn median(rounds: &[Vec<(String, u64)>], key: &str) -> u64 {
    let mut v: Vec<u64> = rounds.iter().filter_map(|r| r.iter().find(|(k, _)| k == key).map(|(_, x)| *x)).collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// Parses the guest's output ("clock ..." then "round N key value ...").
pub fn parse_f2fs(out: &str) -> F2fsFigures {
    let rounds: Vec<Vec<(String, u64)>> = out
        .lines()
        .filter(|l| l.starts_with("round "))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().skip(2).collect();
            w.chunks(2).filter_map(|c| Some((c[0].to_string(), c.get(1)?.parse().ok()?))).collect()
        })
        .collect();
    F2fsFigures {
        rounds: rounds.len(),
        clock: out.lines().find_map(|l| l.strip_prefix("clock ")).unwrap_or("?").to_string(),
        plain_mount_ms: median(&rounds, "plain_mount"),
        plain_write_ms: median(&rounds, "plain_write"),
        plain_rewrite_ms: median(&rounds, "plain_rewrite"),
        disabled_mount_ms: median(&rounds, "disabled_mount"),
        disabled_write_ms: median(&rounds, "disabled_write"),
        disabled_rewrite_ms: median(&rounds, "disabled_rewrite"),
        unusable_blocks: median(&rounds, "unusable_blocks"),
        enable_remount_ms: median(&rounds, "enable_remount"),
        raw: out.lines().filter(|l| l.starts_with("round ")).collect::<Vec<_>>().join("\n"),
    }
}

/// Runs the f2fs comparison on a running guest whose userdata is f2fs and
/// not under a checkpoint (a raw boot). Leaves /data mounted plainly.
pub fn f2fs_checkpoint(target: &mut dyn Target, rounds: u32) -> Result<F2fsFigures, TargetError> {
    let cmd = script("/dev/block/by-name/userdata", "noatime,nosuid,nodev", rounds.max(1));
    let out = target.exec_timeout(&cmd, Duration::from_secs(120 + 60 * u64::from(rounds)))?;
    if !out.success() {
        return Err(TargetError::ExecFailed { command: cmd, status: out.status, stderr: out.stderr });
    }
    Ok(parse_f2fs(&out.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_medians_of_the_rounds() {
        let out = "clock ns\n\
            round 1 plain_mount 40 plain_write 900 plain_rewrite 800 disabled_mount 30 disabled_write 950 disabled_rewrite 1000 unusable_blocks 16384 enable_remount 100\n\
            round 2 plain_mount 50 plain_write 1000 plain_rewrite 700 disabled_mount 35 disabled_write 900 disabled_rewrite 1100 unusable_blocks 16384 enable_remount 120\n\
            round 3 plain_mount 45 plain_write 1300 plain_rewrite 750 disabled_mount 40 disabled_write 1250 disabled_rewrite 1200 unusable_blocks 16390 enable_remount 130\n";
        let f = parse_f2fs(out);
        assert_eq!(f.rounds, 3);
        assert_eq!(f.clock, "ns");
        assert_eq!((f.plain_mount_ms, f.disabled_mount_ms, f.enable_remount_ms), (45, 35, 120));
        assert_eq!((f.plain_write_ms, f.disabled_write_ms), (1000, 950));
        assert_eq!((f.plain_rewrite_ms, f.disabled_rewrite_ms, f.unusable_blocks), (750, 1100, 16384));
        assert!(f.to_string().contains("throughput ratio"));
    }
}
