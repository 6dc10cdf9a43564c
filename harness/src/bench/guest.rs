//! The benchmark's guests and what it reads in them: a QEMU guest with fio
//! and the session's rewindd config, commands with their own time limits,
//! the COW store's use from the snapshot's status, rewindd's memory and CPU.

use std::time::Duration;

use crate::guest::{GuestConfig, QemuGuest};
use crate::plan::FsType;
use crate::scenario::{Ctx, ScenarioError};
use crate::target::TargetError;

/// Host programs the benchmark's guests carry (with their libraries):
/// Debian's fio, bench-only (the scenarios do not need it).
pub const BENCH_GUEST_TOOLS: &[&str] = &["fio"];

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(
        "The benchmark needs {0} on the host (it goes into the guest with its libraries): ./dev setup installs it"
    )]
    MissingTool(&'static str),
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{what}: {detail}")]
    Unexpected { what: String, detail: String },
    #[error("Writing {path}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub fn unexpected(what: impl Into<String>, detail: impl Into<String>) -> BenchError {
    BenchError::Unexpected { what: what.into(), detail: detail.into() }
}

/// A guest for one session: `fs` userdata of `userdata_mib`, fio, and
/// `extra` appended to rewindd's config from the first boot on.
pub fn new_guest(name: &str, fs: FsType, userdata_mib: u64, extra: &str) -> Result<QemuGuest, BenchError> {
    let mut cfg = GuestConfig::new(name).with_fs(fs).with_userdata_mib(userdata_mib);
    cfg.show_command_line = false;
    for &tool in BENCH_GUEST_TOOLS {
        let path = crate::kit::host::find_program(tool).ok_or(BenchError::MissingTool(tool))?;
        cfg = cfg.with_guest_tool(path);
    }
    let guest = QemuGuest::new(cfg)?;
    let path = guest.share_dir().join("boot/rewindd.extra.toml");
    std::fs::write(&path, extra).map_err(|source| BenchError::Write { path, source })?;
    Ok(guest)
}

/// Runs `cmd` in the guest within `secs`; a non-zero exit is an error.
pub fn run(cx: &mut Ctx, cmd: &str, secs: u64) -> Result<String, BenchError> {
    let out = cx.target.exec_timeout(cmd, Duration::from_secs(secs))?;
    if !out.success() {
        return Err(TargetError::ExecFailed { command: cmd.to_string(), status: out.status, stderr: out.stderr }.into());
    }
    Ok(out.stdout)
}

/// A shell function `ms` printing the guest's monotonic clock in ms.
pub const MS_CLOCK: &str = "ms() { awk '/^now at/ { printf \"%d\", $3 / 1000000; exit }' /proc/timer_list; };";

/// `<allocated>/<total> <metadata>` of a dm-snapshot status line, in
/// sectors: (allocated, total).
pub fn parse_snapshot_status(line: &str) -> Option<(u64, u64)> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let i = w.iter().position(|x| *x == "snapshot")?;
    let (a, t) = w.get(i + 1)?.split_once('/')?;
    Some((a.parse().ok()?, t.parse().ok()?))
}

/// Bytes the COW store holds now and its size (after a sync), from the
/// kernel's own account (`dmsetup status rewind-userdata-snap`); None
/// when no snapshot exists (idle, f2fs).
pub fn cow_bytes(cx: &mut Ctx) -> Result<Option<(u64, u64)>, BenchError> {
    let out = run(cx, "sync; dmsetup status rewind-userdata-snap 2>/dev/null || true", 60)?;
    Ok(parse_snapshot_status(&out).map(|(a, t)| (a * 512, t * 512)))
}

/// f2fs's unusable bytes while checkpointing is off (sysfs; blocks of 4 KiB).
pub fn f2fs_unusable_bytes(cx: &mut Ctx) -> Result<Option<u64>, BenchError> {
    let out = run(
        cx,
        "sync; cat /sys/fs/f2fs/$(basename $(readlink -f /dev/block/by-name/userdata))/unusable 2>/dev/null || true",
        60,
    )?;
    Ok(out.trim().parse::<u64>().ok().map(|b| b * 4096))
}

/// rewindd's memory and CPU from /proc: resident and peak resident KiB,
/// user+system CPU seconds since it started, and its age in seconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, Default)]
pub struct ProcUsage {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub cpu_s: f64,
    pub age_s: f64,
}

pub fn rewindd_usage(cx: &mut Ctx) -> Result<ProcUsage, BenchError> {
    let out = run(
        cx,
        "p=$(pidof rewindd); grep -E '^Vm(RSS|HWM):' /proc/$p/status; \
         echo stat $(cut -d' ' -f14,15,22 /proc/$p/stat); echo hz $(getconf CLK_TCK 2>/dev/null || echo 100); \
         echo up $(cut -d' ' -f1 /proc/uptime)",
        30,
    )?;
    parse_usage(&out).ok_or_else(|| unexpected("rewindd's /proc entries", out))
}

pub fn parse_usage(out: &str) -> Option<ProcUsage> {
    let field = |key: &str| -> Option<Vec<f64>> {
        let line = out.lines().find(|l| l.starts_with(key))?;
        // Numbers only ("VmRSS:  5000 kB" gives [5000]).
        Some(line.split_whitespace().skip(1).filter_map(|x| x.parse::<f64>().ok()).collect())
    };
    let stat = field("stat")?;
    let hz = field("hz").and_then(|v| v.first().copied()).filter(|h| *h > 0.0).unwrap_or(100.0);
    let up = field("up")?.first().copied()?;
    Some(ProcUsage {
        rss_kib: field("VmRSS:")?.first().copied()? as u64,
        hwm_kib: field("VmHWM:")?.first().copied()? as u64,
        cpu_s: (stat.first()? + stat.get(1)?) / hz,
        age_s: up - stat.get(2)? / hz,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_status_and_proc_usage_parse() {
        assert_eq!(parse_snapshot_status("0 1048576 snapshot 24/16384 16\n"), Some((24, 16384)));
        assert_eq!(parse_snapshot_status("0 1048576 linear"), None);
        let out = "VmHWM:\t    9000 kB\nVmRSS:\t    5000 kB\nstat 150 50 1000\nhz 100\nup 30.00\n";
        let u = parse_usage(out).expect("parsed");
        assert_eq!((u.rss_kib, u.hwm_kib), (5000, 9000));
        assert!((u.cpu_s - 2.0).abs() < 1e-9 && (u.age_s - 20.0).abs() < 1e-9, "{u:?}");
    }
}
