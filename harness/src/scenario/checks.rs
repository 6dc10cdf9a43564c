//! Independent witnesses a scenario uses: the guest's own manifest tool,
//! fsck on the unmounted device, dmsetup (never used by rewindd).

use crate::manifest::Manifest;
use crate::plan::{shell_quote, FsType};
use crate::target::Target;

use super::ScenarioError;

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
        ScenarioError::Target(crate::target::TargetError::Other(format!(
            "blockdev --getsz {device} printed {out:?}"
        )))
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
