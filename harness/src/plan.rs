//! What one boot of a guest does: the boot plan. The host writes it as a
//! shell-sourceable file (`/host/boot/plan.env`) that the guest init reads.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// Stage markers printed by the guest init (`@@REWIND-STAGE name@@`), in
/// boot order. Failures are injected at a named stage.
pub mod stage {
    pub const MODULES_LOADED: &str = "modules-loaded";
    pub const HOST_MOUNTED: &str = "host-mounted";
    pub const WATCHDOG_ARMED: &str = "watchdog-armed";
    pub const NETWORK_UP: &str = "network-up";
    pub const METADATA_MOUNTED: &str = "metadata-mounted";
    pub const REWINDD_STARTING: &str = "rewindd-starting";
    pub const REWINDD_STARTED: &str = "rewindd-started";
    /// Printed just before `rewindctl prepare-userdata` runs (a rollback
    /// merge runs inside it).
    pub const PREPARE_USERDATA: &str = "prepare-userdata";
    /// Printed at prepare-userdata's first "merging" progress line: a
    /// rollback merge is running now (only boots that roll back get it).
    pub const MERGING: &str = "merging";
    /// Printed once this boot's merge (its own total: a resumed merge
    /// counts from where it resumed) passed 25, 50, 75 % (progress lines
    /// come every 200 ms, so a stage can be printed well past its number).
    pub const MERGE_25: &str = "merge-25";
    pub const MERGE_50: &str = "merge-50";
    pub const MERGE_75: &str = "merge-75";
    /// The stages a merge passes, waited-for or in the background.
    pub const MERGE_STAGES: &[&str] = &[MERGING, MERGE_25, MERGE_50, MERGE_75];
    pub const USERDATA_PREPARED: &str = "userdata-prepared";
    /// The last rollback's merge goes on after prepare-userdata returned
    /// (`cow.last_rollback_in_background`): the guest follows it, and its
    /// `merging` and merge-NN stages come after this one, often after
    /// ready.
    pub const MERGE_BACKGROUND: &str = "merge-background";
    /// The background merge is over and rewindd recorded the rollback.
    pub const MERGE_ENDED: &str = "merge-ended";
    /// Metadata-encryption guests only: the dm-crypt layer /data is mounted
    /// from is up (the init's stand-in for vold's dm-default-key).
    pub const CRYPT_UP: &str = "crypt-up";
    /// Printed just before the init mounts /data itself (a mount writes
    /// the superblock before it returns, so a cut after this marker may
    /// leave that write even without `data-mounted`).
    pub const DATA_MOUNTING: &str = "data-mounting";
    pub const DATA_MOUNTED: &str = "data-mounted";
    pub const WORKLOAD_START: &str = "workload-start";
    pub const WORKLOAD_DONE: &str = "workload-done";
    pub const COMMITTED: &str = "committed";
    pub const BOOT_COMPLETED: &str = "boot-completed";
    /// The agent runs: the host can exec commands.
    pub const READY: &str = "ready";

    pub const ALL: &[&str] = &[
        MODULES_LOADED,
        HOST_MOUNTED,
        WATCHDOG_ARMED,
        NETWORK_UP,
        METADATA_MOUNTED,
        REWINDD_STARTING,
        REWINDD_STARTED,
        PREPARE_USERDATA,
        MERGING,
        MERGE_25,
        MERGE_50,
        MERGE_75,
        USERDATA_PREPARED,
        MERGE_BACKGROUND,
        CRYPT_UP,
        DATA_MOUNTING,
        DATA_MOUNTED,
        WORKLOAD_START,
        WORKLOAD_DONE,
        COMMITTED,
        BOOT_COMPLETED,
        READY,
        MERGE_ENDED,
    ];
}

/// How userdata is brought up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// No rewind at all: /data is mounted straight from the raw partition.
    Raw,
    /// The boot contract: rewindd, prepare-userdata, /data from the fstab.
    Rewind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FsType {
    #[default]
    Ext4,
    F2fs,
}

impl FsType {
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::F2fs => "f2fs",
        }
    }
}

impl std::str::FromStr for FsType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ext4" => Ok(FsType::Ext4),
            "f2fs" => Ok(FsType::F2fs),
            other => Err(format!("unknown filesystem {other:?} (ext4 or f2fs)")),
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure injected into one boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Failure {
    /// Kernel panic (`echo c > /proc/sysrq-trigger`) at a stage.
    Panic { at: String },
    /// The boot wedges at a stage: watchdog feeding stops, init spins; the
    /// i6300esb resets the machine.
    Hang { at: String },
    /// Guest-initiated immediate reset (`echo b > /proc/sysrq-trigger`).
    GuestReset { at: String },
    /// Clean power-off requested by the guest at a stage.
    Poweroff { at: String },
    /// The host kills QEMU (SIGKILL) when the stage marker appears, after
    /// `delay`. With a zero delay the guest holds at that stage until the
    /// cut (exactly there); with a delay it goes on running (a cut while a
    /// merge or the workload runs).
    HostPowerCut {
        at: String,
        #[serde(with = "duration_ms")]
        delay: Duration,
    },
    /// The guest SIGKILLs rewindd `delay` after the stage marker (and,
    /// when `after_log` is not empty, after rewindd's log shows that text:
    /// a point inside a call no stage marks), then starts it again as init
    /// restarts a service that died (rewindd.rc: not oneshot); the boot
    /// goes on.
    KillRewindd {
        at: String,
        after_log: String,
        #[serde(with = "duration_ms")]
        delay: Duration,
    },
    /// The guest runs `script` (sh) beside the boot from the stage on; the
    /// boot goes on. For faults below rewind that a boot must meet while it
    /// runs (a COW device made to fail while prepare-userdata merges).
    /// Its output goes to the boot's `fail-script.log`.
    GuestScript { at: String, script: String },
    /// The host kills QEMU `after` this long from QEMU's start.
    HostPowerCutAfter {
        #[serde(with = "duration_ms")]
        after: Duration,
    },
}

mod duration_ms {
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

impl Failure {
    pub fn panic_at(stage: &str) -> Self {
        Failure::Panic { at: stage.into() }
    }
    pub fn hang_at(stage: &str) -> Self {
        Failure::Hang { at: stage.into() }
    }
    pub fn guest_reset_at(stage: &str) -> Self {
        Failure::GuestReset { at: stage.into() }
    }
    pub fn poweroff_at(stage: &str) -> Self {
        Failure::Poweroff { at: stage.into() }
    }
    pub fn power_cut_at(stage: &str) -> Self {
        Failure::HostPowerCut { at: stage.into(), delay: Duration::ZERO }
    }
    pub fn power_cut_at_after(stage: &str, delay: Duration) -> Self {
        Failure::HostPowerCut { at: stage.into(), delay }
    }
    pub fn kill_rewindd_at(stage: &str, delay: Duration) -> Self {
        Failure::KillRewindd { at: stage.into(), after_log: String::new(), delay }
    }
    /// [`Failure::kill_rewindd_at`], counting `delay` from the moment
    /// rewindd's log shows `text`.
    pub fn kill_rewindd_after_log(stage: &str, text: &str, delay: Duration) -> Self {
        Failure::KillRewindd { at: stage.into(), after_log: text.into(), delay }
    }

    /// [`Failure::GuestScript`]: `script` runs in the guest from `stage` on.
    pub fn guest_script_at(stage: &str, script: &str) -> Self {
        Failure::GuestScript { at: stage.into(), script: script.into() }
    }

    /// The stage the failure is tied to, if any.
    pub fn stage(&self) -> Option<&str> {
        match self {
            Failure::Panic { at }
            | Failure::Hang { at }
            | Failure::GuestReset { at }
            | Failure::Poweroff { at }
            | Failure::KillRewindd { at, .. }
            | Failure::GuestScript { at, .. }
            | Failure::HostPowerCut { at, .. } => Some(at),
            Failure::HostPowerCutAfter { .. } => None,
        }
    }

    /// Whether the boot ends by it (every failure but a killed rewindd,
    /// after which the boot goes on to ready).
    pub fn ends_boot(&self) -> bool {
        !matches!(self, Failure::KillRewindd { .. } | Failure::GuestScript { .. })
    }

    /// (guest kind word, stage) when the guest injects it itself.
    pub fn guest_side(&self) -> Option<(&'static str, &str)> {
        match self {
            Failure::Panic { at } => Some(("panic", at)),
            Failure::Hang { at } => Some(("hang", at)),
            Failure::GuestReset { at } => Some(("reset", at)),
            Failure::Poweroff { at } => Some(("poweroff", at)),
            Failure::KillRewindd { at, .. } => Some(("kill-rewindd", at)),
            Failure::GuestScript { at, .. } => Some(("script", at)),
            Failure::HostPowerCut { .. } | Failure::HostPowerCutAfter { .. } => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Panic { at } => write!(f, "panic@{at}"),
            Failure::Hang { at } => write!(f, "hang@{at}"),
            Failure::GuestReset { at } => write!(f, "guest-reset@{at}"),
            Failure::Poweroff { at } => write!(f, "poweroff@{at}"),
            Failure::HostPowerCut { at, delay } if delay.is_zero() => write!(f, "power-cut@{at}"),
            Failure::HostPowerCut { at, delay } => write!(f, "power-cut@{at}+{}ms", delay.as_millis()),
            Failure::HostPowerCutAfter { after } => write!(f, "power-cut@+{}ms", after.as_millis()),
            Failure::KillRewindd { at, after_log, delay } if after_log.is_empty() => {
                write!(f, "kill-rewindd@{at}+{}ms", delay.as_millis())
            }
            Failure::KillRewindd { at, after_log, delay } => {
                write!(f, "kill-rewindd@{at}+log {after_log:?}+{}ms", delay.as_millis())
            }
            Failure::GuestScript { at, .. } => write!(f, "script@{at}"),
        }
    }
}

/// One boot's plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BootPlan {
    pub mode: Mode,
    /// 1-based attempt number handed to the workload (REWIND_ATTEMPT).
    pub attempt: u32,
    /// Run the scenario's workload script after /data is mounted.
    pub run_workload: bool,
    /// Run `rewindctl commit` at boot completed.
    pub commit: bool,
    pub mount_data: bool,
    pub failure: Option<Failure>,
    /// i6300esb timeout the guest arms (seconds).
    pub watchdog_secs: u32,
    /// The directory the workload owns (`REWIND_DATA`): all of /data on
    /// the QEMU guest; on a device only a directory inside /data
    /// ([`DEVICE_DATA_DIR`]), since logs and apps change the rest of /data
    /// all the time.
    pub data_dir: String,
}

/// The workload's directory by default: the whole of /data.
pub const DEFAULT_DATA_DIR: &str = "/data";
/// The workload's directory for scenarios that run on a device: writable
/// by adb's shell on any build and inside /data, so a rollback covers it.
pub const DEVICE_DATA_DIR: &str = "/data/local/tmp/rewind-data";

impl BootPlan {
    /// /data straight from the raw partition; no rewindd.
    pub fn raw() -> Self {
        BootPlan {
            mode: Mode::Raw,
            attempt: 0,
            run_workload: false,
            commit: false,
            mount_data: true,
            failure: None,
            watchdog_secs: crate::timeouts::WATCHDOG_SECS,
            data_dir: DEFAULT_DATA_DIR.into(),
        }
    }

    /// The boot contract with rewindd.
    pub fn rewind() -> Self {
        BootPlan { mode: Mode::Rewind, ..Self::raw() }
    }

    pub fn with_failure(mut self, failure: Failure) -> Self {
        self.failure = Some(failure);
        self
    }
    pub fn with_workload(mut self, attempt: u32) -> Self {
        self.run_workload = true;
        self.attempt = attempt;
        self
    }
    pub fn with_commit(mut self) -> Self {
        self.commit = true;
        self
    }
    pub fn without_data(mut self) -> Self {
        self.mount_data = false;
        self
    }
    /// The workload runs on `dir` (`REWIND_DATA`) instead of all of /data.
    pub fn with_data_dir(mut self, dir: &str) -> Self {
        self.data_dir = dir.into();
        self
    }

    /// The plan as `plan.env` for the guest init. `workload` is the guest
    /// path of the workload script, when there is one.
    pub fn to_env(&self, boot: u32, fs: FsType, workload: Option<&str>) -> String {
        let mut vars: Vec<(&str, String)> = vec![
            (
                "REWIND_MODE",
                match self.mode {
                    Mode::Raw => "raw",
                    Mode::Rewind => "rewind",
                }
                .into(),
            ),
            ("REWIND_FS", fs.as_str().into()),
            ("REWIND_BOOT", boot.to_string()),
            ("REWIND_ATTEMPT", self.attempt.to_string()),
            ("REWIND_MOUNT_DATA", u8::from(self.mount_data).to_string()),
            ("REWIND_COMMIT", u8::from(self.commit).to_string()),
            ("REWIND_WATCHDOG_SECS", self.watchdog_secs.to_string()),
            (
                "REWIND_WORKLOAD",
                if self.run_workload { workload.unwrap_or_default().to_string() } else { String::new() },
            ),
            ("REWIND_DATA_DIR", self.data_dir.clone()),
        ];
        if let Some((kind, at)) = self.failure.as_ref().and_then(Failure::guest_side) {
            vars.push(("REWIND_FAIL_KIND", kind.into()));
            vars.push(("REWIND_FAIL_AT", at.into()));
        }
        if let Some(Failure::KillRewindd { delay, after_log, .. }) = &self.failure {
            vars.push(("REWIND_FAIL_DELAY_MS", delay.as_millis().to_string()));
            vars.push(("REWIND_FAIL_AFTER_LOG", after_log.clone()));
        }
        if let Some(Failure::GuestScript { script, .. }) = &self.failure {
            vars.push(("REWIND_FAIL_SCRIPT", script.clone()));
        }
        if let Some(Failure::HostPowerCut { at, delay }) = &self.failure {
            if delay.is_zero() {
                vars.push(("REWIND_HOLD_AT", at.clone()));
            }
        }
        let mut s = String::from("# Written by rewind-harness for one boot.\n");
        for (k, v) in vars {
            s += &format!("{k}={}\n", shell_quote(&v));
        }
        s
    }
}

/// Single-quotes a value for sh.
pub fn shell_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_env_carries_the_guest_side_failure() {
        let plan = BootPlan::rewind().with_workload(2).with_failure(Failure::panic_at(stage::DATA_MOUNTED));
        let env = plan.to_env(3, FsType::F2fs, Some("/host/scripts/workload.sh"));
        assert!(env.contains("REWIND_MODE='rewind'\n"));
        assert!(env.contains("REWIND_FS='f2fs'\n"));
        assert!(env.contains("REWIND_BOOT='3'\n"));
        assert!(env.contains("REWIND_ATTEMPT='2'\n"));
        assert!(env.contains("REWIND_FAIL_KIND='panic'\n"));
        assert!(env.contains("REWIND_FAIL_AT='data-mounted'\n"));
        assert!(env.contains("REWIND_WORKLOAD='/host/scripts/workload.sh'\n"));
        assert!(env.contains("REWIND_DATA_DIR='/data'\n"), "the whole of /data by default");
    }

    #[test]
    fn the_workload_directory_reaches_the_guest() {
        let plan = BootPlan::rewind().with_workload(1).with_data_dir(DEVICE_DATA_DIR);
        let env = plan.to_env(1, FsType::Ext4, Some("/host/scripts/workload.sh"));
        assert!(env.contains("REWIND_DATA_DIR='/data/local/tmp/rewind-data'\n"), "{env}");
    }

    #[test]
    fn host_side_failures_stay_on_the_host() {
        let plan = BootPlan::raw().with_failure(Failure::power_cut_at(stage::READY));
        let env = plan.to_env(1, FsType::Ext4, None);
        assert!(!env.contains("REWIND_FAIL"));
        assert!(env.contains("REWIND_HOLD_AT='ready'\n"), "an exact cut holds the guest there");
        let later = BootPlan::raw().with_failure(Failure::power_cut_at_after(stage::READY, Duration::from_secs(1)));
        assert!(!later.to_env(1, FsType::Ext4, None).contains("REWIND_HOLD_AT"));
        assert!(env.contains("REWIND_WORKLOAD=''\n"));
    }

    #[test]
    fn a_guest_script_reaches_the_guest_quoted_and_the_boot_goes_on() {
        let f = Failure::guest_script_at(stage::PREPARE_USERDATA, "dmsetup table 'x'\necho done");
        assert_eq!(f.to_string(), "script@prepare-userdata");
        assert!(!f.ends_boot());
        let env = BootPlan::rewind().with_failure(f).to_env(2, FsType::Ext4, None);
        assert!(env.contains("REWIND_FAIL_KIND='script'\n"), "{env}");
        assert!(env.contains("REWIND_FAIL_AT='prepare-userdata'\n"), "{env}");
        assert!(env.contains("REWIND_FAIL_SCRIPT='dmsetup table '\\''x'\\''\necho done'\n"), "{env}");
    }

    #[test]
    fn a_rewindd_kill_carries_its_delay() {
        let f = Failure::kill_rewindd_at(stage::MERGING, Duration::from_millis(400));
        assert_eq!(f.to_string(), "kill-rewindd@merging+400ms");
        assert!(!f.ends_boot(), "the boot goes on after the kill");
        assert!(Failure::panic_at(stage::READY).ends_boot());
        let env = BootPlan::rewind().with_failure(f).to_env(2, FsType::Ext4, None);
        assert!(env.contains("REWIND_FAIL_KIND='kill-rewindd'\n"), "{env}");
        assert!(env.contains("REWIND_FAIL_AT='merging'\n"), "{env}");
        assert!(env.contains("REWIND_FAIL_DELAY_MS='400'\n"), "{env}");
        let f = Failure::kill_rewindd_after_log(stage::PREPARE_USERDATA, "PrepareUserdata: uid", Duration::ZERO);
        assert_eq!(f.to_string(), "kill-rewindd@prepare-userdata+log \"PrepareUserdata: uid\"+0ms");
        let env = BootPlan::rewind().with_failure(f).to_env(2, FsType::Ext4, None);
        assert!(env.contains("REWIND_FAIL_AFTER_LOG='PrepareUserdata: uid'\n"), "{env}");
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }

    #[test]
    fn failures_print_compactly() {
        assert_eq!(Failure::hang_at("ready").to_string(), "hang@ready");
        assert_eq!(
            Failure::power_cut_at_after("prepare-userdata", Duration::from_millis(300)).to_string(),
            "power-cut@prepare-userdata+300ms"
        );
    }
}
