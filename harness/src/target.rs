//! The seam between scenarios and the machine they run on. QEMU guests
//! implement it (guest::QemuGuest), and so do Android devices over adb and
//! Cuttlefish (device::adb::AdbTarget: boot = adb reboot + boot_completed;
//! exec = adb shell; power cut = stop_cvd; console = dmesg / kernel.log).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::failure::BootEnd;
use crate::plan::{BootPlan, FsType};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("Guest is not running (boot it first)")]
    NotRunning,
    #[error("Guest is already running boot {boot}")]
    AlreadyRunning { boot: u32 },
    #[error("Boot {boot} did not reach {stage} within {waited:?} (last stage: {last_stage})")]
    BootTimeout { boot: u32, stage: String, last_stage: String, waited: Duration },
    #[error("Boot {boot} ended ({end}) while {doing}")]
    GuestEnded { boot: u32, end: BootEnd, doing: String },
    #[error("Command timed out after {waited:?} in the guest: {command}")]
    ExecTimeout { command: String, waited: Duration },
    #[error("Command failed in the guest (exit {status}): {command}\nstderr: {stderr}")]
    ExecFailed { command: String, status: i32, stderr: String },
    #[error("QEMU did not start: {detail}")]
    Start { detail: String },
    #[error("Creating the disk image {path}: {detail}")]
    Disk { path: PathBuf, detail: String },
    #[error("I/O on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Preparing the guest kit")]
    Kit(#[from] crate::kit::KitError),
    #[error("Waiting for a guest slot")]
    Slot(#[from] crate::lock::LockError),
    #[error("QMP")]
    Qmp(#[from] crate::qmp::QmpError),
    /// The target cannot do what the scenario asks (a QEMU-only stage
    /// hook, a power cut without a relay, ...): names the missing piece.
    #[error("{target} cannot {what}: {why}")]
    Unsupported { target: String, what: String, why: String },
    /// An adb / launch_cvd / stop_cvd step failed on the host.
    #[error("{step} failed: `{command}`: {detail}")]
    Tool { step: &'static str, command: String, detail: String },
    #[error("{0}")]
    Other(String),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TargetError + '_ {
    move |source| TargetError::Io { path: path.to_path_buf(), source }
}

/// Result of one command in the guest.
#[derive(Debug, Clone, Serialize)]
pub struct ExecOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: u64,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// What one boot did: the report's per-boot entry.
#[derive(Debug, Clone, Serialize)]
pub struct BootRecord {
    /// 1-based boot number within the scenario.
    pub index: u32,
    pub plan: BootPlan,
    /// The failure injected ("panic@data-mounted"), if any.
    pub failure: Option<String>,
    /// Stage markers seen, in order.
    pub stages: Vec<String>,
    /// Milliseconds from QEMU's start to each stage.
    pub stage_ms: Vec<u64>,
    /// `@@REWIND-ERROR ...@@` lines from the guest init.
    pub errors: Vec<String>,
    /// How the boot ended; None while the guest is still running.
    pub ended: Option<BootEnd>,
    /// Time from QEMU's start to `ready`, if reached.
    pub ready_ms: Option<u64>,
    /// Time from QEMU's start to its end (or until now while running).
    pub duration_ms: u64,
    pub console_log: PathBuf,
    pub qmp_log: PathBuf,
    pub command_line: String,
    /// The boot reason this boot was given (`androidboot.bootreason`, how
    /// the previous boot ended), when the target sets one.
    pub boot_reason: Option<String>,
    /// rewindd's WatchStatus over the boot (COW use, merge progress), when
    /// the target followed it (`sampler`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub status_samples: Vec<crate::sampler::StatusSample>,
}

impl BootRecord {
    /// A boot that has just been started: nothing reached, nothing ended;
    /// the failure text comes from the plan.
    pub fn new(index: u32, plan: &BootPlan, console_log: PathBuf, qmp_log: PathBuf, command_line: String) -> Self {
        BootRecord {
            index,
            plan: plan.clone(),
            failure: plan.failure.as_ref().map(|f| f.to_string()),
            stages: Vec::new(),
            stage_ms: Vec::new(),
            errors: Vec::new(),
            ended: None,
            ready_ms: None,
            duration_ms: 0,
            console_log,
            qmp_log,
            command_line,
            boot_reason: None,
            status_samples: Vec::new(),
        }
    }
    pub fn last_stage(&self) -> &str {
        self.stages.last().map(String::as_str).unwrap_or("none")
    }
    pub fn reached(&self, stage: &str) -> bool {
        self.stages.iter().any(|s| s == stage)
    }
    pub fn is_ready(&self) -> bool {
        self.ended.is_none() && self.reached(crate::plan::stage::READY)
    }
    /// Milliseconds from QEMU's start to `stage`, if it was reached.
    pub fn reached_ms(&self, stage: &str) -> Option<u64> {
        let i = self.stages.iter().position(|s| s == stage)?;
        self.stage_ms.get(i).copied()
    }
}

/// A machine the scenarios drive: disks that persist across its boots, one
/// boot at a time.
pub trait Target {
    /// "qemu (tcg)", "cuttlefish cvd-1", ...
    fn describe(&self) -> String;
    /// Filesystem of userdata on this target.
    fn fs(&self) -> FsType;
    /// Boots with `plan` and returns when the guest is ready for commands,
    /// or when the boot ended (an injected failure); check `ended`.
    fn boot(&mut self, plan: &BootPlan) -> Result<BootRecord, TargetError>;
    /// Runs a shell command in the running guest.
    fn exec(&mut self, command: &str) -> Result<ExecOutput, TargetError> {
        self.exec_timeout(command, crate::timeouts::EXEC_TIMEOUT)
    }
    /// `exec` with its own time limit (a long merge, a big fill).
    fn exec_timeout(&mut self, command: &str, timeout: Duration) -> Result<ExecOutput, TargetError>;
    /// Like `exec`, but a non-zero exit is an error; returns stdout.
    fn exec_checked(&mut self, command: &str) -> Result<String, TargetError> {
        let out = self.exec(command)?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(TargetError::ExecFailed { command: command.to_string(), status: out.status, stderr: out.stderr })
        }
    }
    /// Cuts the power now (host side).
    fn power_cut(&mut self) -> Result<BootRecord, TargetError>;
    /// Clean power-off from the guest (unmounts, sync).
    fn shutdown(&mut self) -> Result<BootRecord, TargetError>;
    /// Waits for the running boot to end by itself.
    fn wait_end(&mut self, timeout: Duration) -> Result<BootRecord, TargetError>;
    /// Every boot so far (the last one may still be running).
    fn boots(&self) -> &[BootRecord];
    /// Console text of the last boot.
    fn console(&self) -> String;
    /// The console for a failure report, between `==== console` markers
    /// (the last boot's; a QEMU guest adds every boot whose init reported
    /// an error).
    fn framed_console(&self) -> String {
        format!("==== console of the last boot ({})\n{}\n==== end of console\n", self.describe(), self.console())
    }
    /// gRPC endpoint of rewindd in the running guest ("http://127.0.0.1:PORT").
    fn grpc_endpoint(&self) -> Option<String>;
    /// Copies a host file into the guest.
    fn push(&mut self, local: &Path, guest_path: &str) -> Result<(), TargetError>;
    /// Copies a guest file to the host.
    fn pull(&mut self, guest_path: &str, local: &Path) -> Result<(), TargetError>;
    /// Guest path of the scenario's baseline / workload scripts.
    fn baseline_script(&self) -> String;
    fn workload_script(&self) -> String;
    /// Where this target keeps images and logs (named in the report).
    fn artifacts_dir(&self) -> PathBuf;
    /// Where the images and logs stay after the run, if they do (a QEMU
    /// guest removes its run directory unless kept; a device's stay).
    fn kept_artifacts(&self) -> Option<PathBuf> {
        Some(self.artifacts_dir())
    }
    /// The disk images among the kept artifacts (a QEMU guest's userdata
    /// and metadata; a device has none).
    fn disk_images(&self) -> Vec<PathBuf> {
        Vec::new()
    }
    /// The scenario is over: make the boot records final. A QEMU guest
    /// still running is cut (it is thrown away next); a device is left as
    /// it is, which is the default.
    fn finish_run(&mut self) {}
    /// Saves into `dir` everything the next boot of this powered-off
    /// target starts from (a QEMU guest: its disks, the bootloader's files
    /// on its share and the boot reason), for [`Target::start_from`]. A
    /// device cannot: its disks are its own (the default).
    fn save_powered_off(&self, dir: &Path) -> Result<(), TargetError> {
        let _ = dir;
        Err(TargetError::Unsupported {
            target: self.describe(),
            what: "save its disks".into(),
            why: "only a QEMU guest's disks are files the harness can copy".into(),
        })
    }
    /// Before its first boot: makes this target's next boot start from what
    /// [`Target::save_powered_off`] left in `dir`, as if the boots that made
    /// it had run here.
    fn start_from(&mut self, dir: &Path) -> Result<(), TargetError> {
        let _ = dir;
        Err(TargetError::Unsupported {
            target: self.describe(),
            what: "start from saved disks".into(),
            why: "only a QEMU guest's disks are files the harness can copy".into(),
        })
    }
}

/// Targets for host tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use super::{BootRecord, ExecOutput, Target, TargetError};
    use crate::plan::{stage, BootPlan, FsType};

    /// A target that boots every plan to ready and counts what it did.
    #[derive(Default)]
    pub struct Recorder {
        pub boots: Vec<BootRecord>,
        pub cuts: u32,
    }

    impl Target for Recorder {
        fn describe(&self) -> String {
            "recorder".into()
        }
        fn fs(&self) -> FsType {
            FsType::Ext4
        }
        fn boot(&mut self, plan: &BootPlan) -> Result<BootRecord, TargetError> {
            let mut rec =
                BootRecord::new(self.boots.len() as u32 + 1, plan, PathBuf::new(), PathBuf::new(), String::new());
            rec.stages = vec![stage::READY.into()];
            rec.stage_ms = vec![0];
            rec.ready_ms = Some(0);
            self.boots.push(rec.clone());
            Ok(rec)
        }
        fn exec_timeout(&mut self, command: &str, _: Duration) -> Result<ExecOutput, TargetError> {
            Ok(ExecOutput { status: 0, stdout: command.into(), stderr: String::new(), duration_ms: 0 })
        }
        fn power_cut(&mut self) -> Result<BootRecord, TargetError> {
            self.cuts += 1;
            self.boots.last().cloned().ok_or(TargetError::NotRunning)
        }
        fn shutdown(&mut self) -> Result<BootRecord, TargetError> {
            self.boots.last().cloned().ok_or(TargetError::NotRunning)
        }
        fn wait_end(&mut self, _: Duration) -> Result<BootRecord, TargetError> {
            self.shutdown()
        }
        fn boots(&self) -> &[BootRecord] {
            &self.boots
        }
        fn console(&self) -> String {
            String::new()
        }
        fn grpc_endpoint(&self) -> Option<String> {
            None
        }
        fn push(&mut self, _: &Path, _: &str) -> Result<(), TargetError> {
            Ok(())
        }
        fn pull(&mut self, _: &str, _: &Path) -> Result<(), TargetError> {
            Ok(())
        }
        fn baseline_script(&self) -> String {
            "/b.sh".into()
        }
        fn workload_script(&self) -> String {
            "/w.sh".into()
        }
        fn artifacts_dir(&self) -> PathBuf {
            PathBuf::new()
        }
    }
}
