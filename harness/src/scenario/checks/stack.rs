//! The device stack under /data as witnesses rewindd does not share see
//! it: dmsetup (udev-less guest), blockdev, /proc/mounts.

use crate::plan::{shell_quote, FsType};
use crate::target::Target;

use super::super::{Ctx, ScenarioError};

/// The raw userdata partition.
pub const RAW: &str = "/dev/block/by-name/userdata";
/// The fstab's /data device in block mode (always present).
pub const TOP: &str = "/dev/block/mapper/rewind-userdata";
/// Its device-mapper name.
pub const TOP_NAME: &str = "rewind-userdata";

/// The device /data is mounted from in rewind mode: the dm top device in
/// block mode (ext4), the raw partition in f2fs mode (checkpoint=fs).
pub fn userdata_device(fs: FsType) -> &'static str {
    match fs {
        FsType::Ext4 => TOP,
        FsType::F2fs => RAW,
    }
}

/// `dmsetup table` / `dmsetup status` as text (udev-less guest).
pub fn dmsetup(target: &mut dyn Target, args: &str) -> Result<String, ScenarioError> {
    Ok(target.exec_checked(&format!("dmsetup {args}"))?)
}

/// Size of a block device in 512-byte sectors.
pub fn sectors(target: &mut dyn Target, device: &str) -> Result<u64, ScenarioError> {
    let out = target.exec_checked(&format!("blockdev --getsz {}", shell_quote(device)))?;
    out.trim().parse().map_err(|_| ScenarioError::other(format!("blockdev --getsz {device} printed {out:?}")))
}

/// The dm devices beside rewind-userdata, and what rewind-userdata is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmStack {
    /// Devices other than rewind-userdata and the ones the caller expects.
    pub others: Vec<String>,
    /// rewind-userdata's target when its table is one line ("linear",
    /// "snapshot-origin"), else "N lines".
    pub top: String,
    /// `dmsetup ls` and rewind-userdata's table, for details.
    pub ls: String,
    pub table: String,
}

impl DmStack {
    /// Idle: rewind-userdata linear, no snapshot, COW or verify device.
    pub fn is_idle(&self) -> bool {
        self.others.is_empty() && self.top == "linear"
    }

    pub fn detail(&self) -> String {
        format!("ls: {} | table: {}", self.ls.trim().replace('\n', ", "), self.table.trim())
    }
}

/// The dm stack, with `expected` devices (a crypt layer on top) not
/// counted among the others.
pub fn dm_stack(target: &mut dyn Target, expected: &[&str]) -> Result<DmStack, ScenarioError> {
    let ls = dmsetup(target, "ls")?;
    let others = ls
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        // "No devices found"
        .filter(|n| *n != "No" && *n != TOP_NAME && !expected.contains(n))
        .map(str::to_string)
        .collect();
    let table = dmsetup(target, &format!("table {TOP_NAME}"))?;
    let lines = table.trim().lines().count();
    let top =
        if lines == 1 { table.split_whitespace().nth(2).unwrap_or("").to_string() } else { format!("{lines} lines") };
    Ok(DmStack { others, top, ls, table })
}

/// /data as /proc/mounts shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataMount {
    /// The source device, resolved ("" when /data is not mounted).
    pub device: String,
    /// The mount options.
    pub options: String,
    /// The raw partition, resolved.
    pub raw: String,
}

impl DataMount {
    /// Mounted straight from the raw partition (f2fs mode, a raw boot).
    pub fn is_raw(&self) -> bool {
        self.device == self.raw
    }

    /// f2fs with checkpointing off: an attempt runs.
    pub fn checkpoint_disabled(&self) -> bool {
        self.options.contains("checkpoint=disable")
    }

    pub fn detail(&self) -> String {
        format!("/data from {} (raw {}) with {}", self.device, self.raw, self.options)
    }
}

pub fn data_mount(cx: &mut Ctx) -> Result<DataMount, ScenarioError> {
    let out = cx.exec_checked(&format!(
        "l=$(awk '$2 == \"/data\" {{ print $1, $4 }}' /proc/mounts | tail -n 1); \
         echo \"$(readlink -f ${{l%% *}})\"; echo \"${{l#* }}\"; readlink -f {RAW}"
    ))?;
    let mut it = out.lines().map(|l| l.trim().to_string());
    Ok(DataMount {
        device: it.next().unwrap_or_default(),
        options: it.next().unwrap_or_default(),
        raw: it.next().unwrap_or_default(),
    })
}

/// f2fs mode: /data is mounted with checkpoint=disable (an attempt runs).
pub fn check_f2fs_armed(cx: &mut Ctx, what: &str) -> Result<bool, ScenarioError> {
    let m = data_mount(cx)?;
    Ok(cx.check(
        &format!("{what}: /data is the raw partition mounted with checkpoint=disable"),
        m.is_raw() && m.checkpoint_disabled(),
        m.detail(),
    ))
}

/// The idle stack: only rewind-userdata, linear. f2fs mode: no dm device
/// at all, /data mounted from the raw partition without checkpoint=disable.
pub fn check_idle_stack(cx: &mut Ctx, when: &str) -> Result<(), ScenarioError> {
    if cx.is_f2fs() {
        let ls = dmsetup(cx.target, "ls")?;
        let m = data_mount(cx)?;
        cx.check(
            &format!("{when}: no dm device; /data is the raw partition without checkpoint=disable"),
            ls.trim() == "No devices found" && m.is_raw() && !m.checkpoint_disabled(),
            format!("dmsetup ls: {} | {}", ls.trim(), m.detail()),
        );
        return Ok(());
    }
    let stack = dm_stack(cx.target, &[])?;
    cx.check(
        &format!("{when}: only rewind-userdata (linear), no snapshot or COW device"),
        stack.is_idle(),
        stack.detail(),
    );
    Ok(())
}
