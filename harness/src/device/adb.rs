//! Any Android device over adb (`--target adb [--serial S]`).
//!
//! Install: with `--android-bins DIR` the target runs `adb root` and
//! `adb remount` and pushes DIR's `rewindd`, `rewindctl`, `rewind-manifest`
//! (built for the device's ABI) to /system/bin, android/rewindd.rc to
//! /system/etc/init/ and android/rewindd.toml to /system/etc/: init starts
//! rewindd from /system/bin (rewindd.rc), so /data/local/tmp would not be
//! exercised by the boot contract at all. That needs a userdebug/eng build
//! with verity disabled (`adb disable-verity` once). Without the flag the
//! device must already have rewind in its build (PRODUCT_PACKAGES).
//! The scenario scripts go to /data/local/tmp/rewind-harness.
//!
//! rewindd's gRPC is reached through `adb forward tcp:0
//! localfilesystem:/dev/socket/rewindd` (adb prints the port it picked);
//! adbd connects to the socket as root after `adb root`.
//!
//! Failures: a kernel panic through `adb shell su 0 sh -c 'echo c >
//! /proc/sysrq-trigger'`, once the device is up (Android's init has no
//! stage hooks). A power cut on a physical device needs a hardware relay
//! and is not supported.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::profile::{self, Capabilities};
use super::{run_tool, sh_quote, DeviceSetupError, DEVICE_SCRIPT_DIR};
use crate::failure::BootEnd;
use crate::plan::{stage, BootPlan, Failure, FsType};
use crate::target::{io_err, BootRecord, ExecOutput, Target, TargetError};

/// The socket init creates for rewindd (rewindd.rc: `socket rewindd`).
pub const REWINDD_SOCKET: &str = "/dev/socket/rewindd";
/// How long a device may take from `adb reboot` to `sys.boot_completed=1`.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Host-side adb calls that are not device commands (push, forward, ...).
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// The adb command lines, in one place (unit-tested against adb's
/// documented syntax: `adb [-s SERIAL] COMMAND ...`).
#[derive(Debug, Clone)]
pub struct Adb {
    pub program: PathBuf,
    pub serial: String,
}

fn strings(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

impl Adb {
    fn with_serial(&self, rest: &[&str]) -> Vec<String> {
        let mut v = strings(&["-s", &self.serial]);
        v.extend(strings(rest));
        v
    }
    /// `adb devices -l` (no serial: lists them all).
    pub fn devices_args() -> Vec<String> {
        strings(&["devices", "-l"])
    }
    pub fn shell_args(&self, command: &str) -> Vec<String> {
        self.with_serial(&["shell", command])
    }
    /// As root through `su 0` (userdebug/eng builds), whatever adbd runs as.
    pub fn su_shell_args(&self, command: &str) -> Vec<String> {
        self.with_serial(&["shell", &format!("su 0 sh -c {}", sh_quote(command))])
    }
    pub fn root_args(&self) -> Vec<String> {
        self.with_serial(&["root"])
    }
    pub fn remount_args(&self) -> Vec<String> {
        self.with_serial(&["remount"])
    }
    pub fn push_args(&self, local: &Path, remote: &str) -> Vec<String> {
        self.with_serial(&["push", &local.display().to_string(), remote])
    }
    pub fn pull_args(&self, remote: &str, local: &Path) -> Vec<String> {
        self.with_serial(&["pull", remote, &local.display().to_string()])
    }
    /// `tcp:0` lets adb pick a free host port and print it.
    pub fn forward_args(&self) -> Vec<String> {
        self.with_serial(&["forward", "tcp:0", &format!("localfilesystem:{REWINDD_SOCKET}")])
    }
    pub fn forward_remove_args(&self, port: u16) -> Vec<String> {
        self.with_serial(&["forward", "--remove", &format!("tcp:{port}")])
    }
    pub fn reboot_args(&self) -> Vec<String> {
        self.with_serial(&["reboot"])
    }
    pub fn wait_for_device_args(&self) -> Vec<String> {
        self.with_serial(&["wait-for-device"])
    }
    pub fn get_state_args(&self) -> Vec<String> {
        self.with_serial(&["get-state"])
    }
    /// The whole logcat buffer, then exit (`-d`).
    pub fn logcat_args(&self) -> Vec<String> {
        self.with_serial(&["logcat", "-d"])
    }

    pub fn run(&self, step: &'static str, args: &[String], timeout: Duration) -> Result<ExecOutput, TargetError> {
        run_tool(step, &self.program, args, &[], timeout)
    }
    /// Runs and fails on a non-zero exit, naming the step.
    pub fn run_ok(&self, step: &'static str, args: &[String], timeout: Duration) -> Result<String, TargetError> {
        let out = self.run(step, args, timeout)?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(TargetError::Tool {
                step,
                command: super::display_command("adb", args),
                detail: format!("exit {}: {}", out.status, out.stderr.trim()),
            })
        }
    }
    pub fn getprop(&self, name: &str) -> Option<String> {
        self.run("getprop", &self.shell_args(&format!("getprop {name}")), Duration::from_secs(20))
            .ok()
            .filter(|o| o.success())
            .map(|o| o.stdout.trim().to_string())
    }
}

/// One line of `adb devices -l`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEntry {
    pub serial: String,
    /// `device`, `offline`, `unauthorized`, `recovery`, ...
    pub state: String,
    /// `model:Pixel_7`, `product:...`, `transport_id:3`, ...
    pub props: Vec<(String, String)>,
}

impl DeviceEntry {
    pub fn prop(&self, key: &str) -> Option<&str> {
        self.props.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Parses `adb devices -l`: a header, then `SERIAL STATE key:value ...`.
/// Daemon start-up lines (`* daemon started successfully`) are skipped.
pub fn parse_devices(text: &str) -> Vec<DeviceEntry> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('*') && !l.starts_with("List of devices"))
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let serial = words.next()?.to_string();
            let mut state = words.next()?.to_string();
            // "no permissions (user in plugdev group; ...)" spans words.
            if state == "no" {
                state = "no permissions".into();
            }
            let props = words.filter_map(|w| w.split_once(':')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
            Some(DeviceEntry { serial, state, props })
        })
        .collect()
}

/// Picks the device: `serial` if given (must be listed), else the only one.
pub fn pick_device(devices: &[DeviceEntry], serial: Option<&str>) -> Result<DeviceEntry, DeviceSetupError> {
    let listed = || devices.iter().map(|d| format!("{} {}", d.serial, d.state)).collect::<Vec<_>>().join(", ");
    let found = match serial {
        Some(s) => devices.iter().find(|d| d.serial == s).cloned().ok_or_else(|| {
            if devices.is_empty() {
                DeviceSetupError::NoDevice
            } else {
                DeviceSetupError::NoSuchSerial { serial: s.to_string(), attached: listed() }
            }
        })?,
        None => match devices {
            [] => return Err(DeviceSetupError::NoDevice),
            [one] => one.clone(),
            many => return Err(DeviceSetupError::Ambiguous { count: many.len(), attached: listed() }),
        },
    };
    if found.state != "device" {
        let hint = match found.state.as_str() {
            "unauthorized" => "accept the USB debugging prompt on the device",
            "offline" => "reconnect it or run `adb kill-server`",
            "no permissions" => "fix the udev rules for the device (see adb's docs)",
            _ => "boot it into Android",
        };
        return Err(DeviceSetupError::NotReady { serial: found.serial, state: found.state, hint: hint.into() });
    }
    Ok(found)
}

/// Finds adb and the device; the one-line errors of `DeviceSetupError`.
pub fn find_device(serial: Option<&str>) -> Result<Adb, DeviceSetupError> {
    let program = super::which("adb").ok_or(DeviceSetupError::NoAdb)?;
    let out = run_tool("list devices", &program, &Adb::devices_args(), &[], TOOL_TIMEOUT)
        .map_err(|e| DeviceSetupError::Adb(Box::new(e)))?;
    let entry = pick_device(&parse_devices(&out.stdout), serial)?;
    Ok(Adb { program, serial: entry.serial })
}

/// How the target gets power-cut and how its boots are started: a physical
/// device has neither; Cuttlefish supplies both (`cuttlefish.rs`).
pub trait PowerControl {
    /// "a physical device", "cuttlefish cvd-1".
    fn name(&self) -> String;
    /// Whether `power_cut` can do anything (asked before a boot's plan).
    fn can_cut(&self) -> bool;
    /// Cuts the power (None: cannot).
    fn power_cut(&mut self) -> Option<Result<(), TargetError>>;
    /// Powers the device on after a cut (no-op for a device that reboots).
    fn power_on(&mut self) -> Result<(), TargetError>;
    /// Extra console text (Cuttlefish's kernel.log / launcher.log).
    fn console(&self) -> Option<String>;
    /// The cut goes through the running system (adb), so it can only land
    /// once the device is up, not at a delay into the boot.
    fn cuts_only_when_up(&self) -> bool {
        false
    }
}

/// A physical device's stand-in for a power cut: sysrq `b`, the kernel's
/// immediate hard reset, without syncing or unmounting. Dirty page-cache
/// data is lost and /data is left mounted, as in a cut; unlike a real cut
/// the storage chip keeps power, so its own volatile cache may still reach
/// flash. It needs root (`su`, userdebug) and a running system, so it can
/// land at `ready` only; cuts during a boot need Cuttlefish or a relay.
pub struct SysrqReset {
    adb: Adb,
    /// Pause after the reset before the next boot waits for the device.
    settle: Duration,
}

impl SysrqReset {
    pub fn new(adb: Adb) -> Self {
        SysrqReset { adb, settle: REBOOT_SETTLE }
    }
    /// No pause after the reset (fake devices in tests).
    #[cfg(test)]
    pub(crate) fn no_settle(mut self) -> Self {
        self.settle = Duration::ZERO;
        self
    }
}

impl PowerControl for SysrqReset {
    fn name(&self) -> String {
        "a physical device, hard reset by sysrq b".into()
    }
    fn can_cut(&self) -> bool {
        true
    }
    fn power_cut(&mut self) -> Option<Result<(), TargetError>> {
        // The shell dies with the kernel: its exit status says nothing.
        let _ = self.adb.run(
            "hard reset",
            &self.adb.su_shell_args("echo b > /proc/sysrq-trigger"),
            Duration::from_secs(30),
        );
        std::thread::sleep(self.settle);
        Some(Ok(()))
    }
    fn power_on(&mut self) -> Result<(), TargetError> {
        // The reset reboots the device by itself.
        Ok(())
    }
    fn console(&self) -> Option<String> {
        None
    }
    fn cuts_only_when_up(&self) -> bool {
        true
    }
}

/// A physical device: no power control.
pub struct NoPowerControl;
impl PowerControl for NoPowerControl {
    fn name(&self) -> String {
        "a physical device".into()
    }
    fn can_cut(&self) -> bool {
        false
    }
    fn power_cut(&mut self) -> Option<Result<(), TargetError>> {
        None
    }
    fn power_on(&mut self) -> Result<(), TargetError> {
        Ok(())
    }
    fn console(&self) -> Option<String> {
        None
    }
}

/// Configuration of an adb target (from the CLI).
#[derive(Debug, Clone, Default)]
pub struct AdbConfig {
    /// rewindd, rewindctl, rewind-manifest built for the device.
    pub android_bins: Option<PathBuf>,
    pub baseline: Option<PathBuf>,
    pub workload: Option<PathBuf>,
    /// Host directory for logs (logcat, dmesg per boot).
    pub artifacts: PathBuf,
}

pub struct AdbTarget {
    adb: Adb,
    power: Box<dyn PowerControl>,
    cfg: AdbConfig,
    fs: FsType,
    boots: Vec<BootRecord>,
    /// The device is up (a boot is running).
    up: bool,
    forwarded: Option<u16>,
    /// Pause after `adb reboot` before waiting for the device again.
    settle: Duration,
}

/// adbd goes away only during the shutdown: waiting right after `adb
/// reboot` could still reach the old boot and its boot_completed=1.
const REBOOT_SETTLE: Duration = Duration::from_secs(5);

impl AdbTarget {
    /// Sets the device up for scenarios: root, install (with
    /// `android_bins`), the scripts, userdata's filesystem.
    pub fn new(adb: Adb, power: Box<dyn PowerControl>, cfg: AdbConfig) -> Result<Self, TargetError> {
        std::fs::create_dir_all(&cfg.artifacts).map_err(io_err(&cfg.artifacts))?;
        let mut t = AdbTarget {
            adb,
            power,
            cfg,
            fs: FsType::Ext4,
            boots: Vec::new(),
            up: true,
            forwarded: None,
            settle: REBOOT_SETTLE,
        };
        t.root()?;
        if let Some(dir) = t.cfg.android_bins.clone() {
            t.install(&dir)?;
        }
        t.adb.run_ok("mkdir", &t.adb.shell_args(&format!("mkdir -p {DEVICE_SCRIPT_DIR}")), TOOL_TIMEOUT)?;
        let scripts = [
            (t.cfg.baseline.clone(), crate::guest::DEFAULT_BASELINE, "baseline.sh"),
            (t.cfg.workload.clone(), crate::guest::DEFAULT_WORKLOAD, "workload.sh"),
        ];
        for (custom, default, name) in scripts {
            let local = match custom {
                Some(p) => p,
                None => {
                    let p = t.cfg.artifacts.join(name);
                    std::fs::write(&p, default).map_err(io_err(&p))?;
                    p
                }
            };
            t.push(&local, &format!("{DEVICE_SCRIPT_DIR}/{name}"))?;
        }
        let mounts = t.exec_checked("cat /proc/mounts")?;
        if data_fs(&mounts) == Some("f2fs") {
            t.fs = FsType::F2fs;
        }
        Ok(t)
    }

    pub fn adb(&self) -> &Adb {
        &self.adb
    }

    /// `adb root` restarts adbd as root: wait for it to come back.
    fn root(&mut self) -> Result<(), TargetError> {
        self.adb.run_ok("adb root", &self.adb.root_args(), TOOL_TIMEOUT)?;
        self.adb.run_ok("wait-for-device", &self.adb.wait_for_device_args(), BOOT_TIMEOUT)?;
        Ok(())
    }

    fn install(&mut self, dir: &Path) -> Result<(), TargetError> {
        self.adb.run_ok("adb remount", &self.adb.remount_args(), TOOL_TIMEOUT)?;
        for bin in ["rewindd", "rewindctl", "rewind-manifest"] {
            self.push(&dir.join(bin), &format!("/system/bin/{bin}"))?;
        }
        let android = crate::paths::workspace_root().join("android");
        self.push(&android.join("rewindd.rc"), "/system/etc/init/rewindd.rc")?;
        self.push(&android.join("rewindd.toml"), "/system/etc/rewindd.toml")?;
        Ok(())
    }

    fn boot_dir(&self, index: u32) -> PathBuf {
        self.cfg.artifacts.join("boots").join(index.to_string())
    }

    /// Polls `sys.boot_completed` (set by the framework at the end of boot).
    fn wait_boot_completed(&mut self, started: Instant) -> Result<(), TargetError> {
        self.adb.run_ok("wait-for-device", &self.adb.wait_for_device_args(), BOOT_TIMEOUT)?;
        loop {
            if self.adb.getprop("sys.boot_completed").as_deref() == Some("1") {
                return Ok(());
            }
            if started.elapsed() > BOOT_TIMEOUT {
                return Err(TargetError::BootTimeout {
                    boot: self.boots.len() as u32 + 1,
                    stage: "sys.boot_completed=1".into(),
                    last_stage: "adb wait-for-device".into(),
                    waited: BOOT_TIMEOUT,
                });
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// What this target cannot do for `plan`, if anything: the device's
    /// capabilities (`profile::check`, shared with the QEMU guest's device
    /// profile), with the commit policy this build latched at boot.
    fn check_plan(&mut self, plan: &BootPlan, defer_commit: bool) -> Result<(), TargetError> {
        let caps = Capabilities {
            can_cut: self.can_cut(),
            cut_during_boot: self.can_cut() && !self.power.cuts_only_when_up(),
            defer_commit,
        };
        profile::check(plan, caps).map_err(|r| r.into_error(self.describe()))
    }

    fn can_cut(&self) -> bool {
        self.power.can_cut()
    }

    fn collect_logs(&mut self, index: u32) {
        let dir = self.boot_dir(index);
        let _ = std::fs::create_dir_all(&dir);
        if let Ok(o) = self.adb.run("logcat", &self.adb.logcat_args(), TOOL_TIMEOUT) {
            let _ = std::fs::write(dir.join("logcat.txt"), o.stdout);
        }
        // dmesg as root (adbd is root after `adb root`); last_kmsg /
        // pstore hold the previous boot's kernel log where the device has one.
        let cmd = "dmesg; for f in /proc/last_kmsg /sys/fs/pstore/console-ramoops-0 /sys/fs/pstore/console-ramoops; do [ -r $f ] && { echo \"==== $f\"; cat $f; }; done";
        if let Ok(o) = self.adb.run("dmesg", &self.adb.shell_args(cmd), TOOL_TIMEOUT) {
            let _ = std::fs::write(dir.join("console.log"), o.stdout);
        }
    }

    fn forward(&mut self) -> Result<(), TargetError> {
        if let Some(port) = self.forwarded.take() {
            let _ = self.adb.run("forward --remove", &self.adb.forward_remove_args(port), TOOL_TIMEOUT);
        }
        let out = self.adb.run_ok("adb forward", &self.adb.forward_args(), TOOL_TIMEOUT)?;
        self.forwarded = Some(out.trim().parse().map_err(|_| TargetError::Tool {
            step: "adb forward",
            command: super::display_command("adb", &self.adb.forward_args()),
            detail: format!("expected the port adb picked, got {:?}", out.trim()),
        })?);
        Ok(())
    }

    fn last_mut(&mut self) -> Result<&mut BootRecord, TargetError> {
        self.boots.last_mut().ok_or(TargetError::NotRunning)
    }

    fn end_boot(&mut self, end: BootEnd) -> Result<BootRecord, TargetError> {
        self.up = false;
        self.forwarded = None;
        let rec = self.last_mut()?;
        rec.ended = Some(end);
        Ok(rec.clone())
    }
}

/// userdata's filesystem from /proc/mounts.
pub fn data_fs(mounts: &str) -> Option<&str> {
    mounts.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        (w.len() >= 3 && w[1] == "/data").then_some(w[2])
    })
}

impl Target for AdbTarget {
    fn describe(&self) -> String {
        format!("adb {} ({})", self.adb.serial, self.power.name())
    }
    fn fs(&self) -> FsType {
        self.fs
    }

    fn boot(&mut self, plan: &BootPlan) -> Result<BootRecord, TargetError> {
        let defer = self.adb.getprop("rewind.defer_commit");
        self.check_plan(plan, defer.as_deref() == Some("true"))?;
        let index = self.boots.len() as u32 + 1;
        let started = Instant::now();
        let command_line;
        if self.up {
            // A fresh boot for every plan: an orderly reboot.
            command_line = super::display_command("adb", &self.adb.reboot_args());
            self.adb.run_ok("adb reboot", &self.adb.reboot_args(), TOOL_TIMEOUT)?;
            std::thread::sleep(self.settle);
        } else {
            command_line = "power on".into();
            self.power.power_on()?;
        }
        self.up = true;
        let dir = self.boot_dir(index);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut rec = BootRecord::new(index, plan, dir.join("console.log"), dir.join("logcat.txt"), command_line);
        if let Some(Failure::HostPowerCutAfter { after }) = &plan.failure {
            std::thread::sleep(*after);
            self.boots.push(rec);
            if let Some(r) = self.power.power_cut() {
                r?;
            }
            return self.end_boot(BootEnd::HostPowerCut);
        }
        self.wait_boot_completed(started)?;
        self.root()?;
        rec.stages.push(stage::BOOT_COMPLETED.into());
        rec.stage_ms.push(started.elapsed().as_millis() as u64);
        if self.adb.getprop("init.svc.rewindd").as_deref() == Some("running") {
            rec.stages.insert(0, stage::REWINDD_STARTED.into());
            rec.stage_ms.insert(0, rec.stage_ms[0]);
        } else {
            rec.errors.push("init.svc.rewindd is not running".into());
        }
        if plan.run_workload {
            // Before the harness's commit, as in the QEMU guest (where it
            // runs before boot completes): the workload's writes belong to
            // the attempt. A device that commits by itself at
            // boot_completed (no defer) may commit before or while it runs.
            let cmd = format!(
                "REWIND_DATA={} REWIND_ATTEMPT={} sh {}",
                sh_quote(&plan.data_dir),
                plan.attempt,
                self.workload_script()
            );
            let out = self.exec_timeout(&cmd, Duration::from_secs(600))?;
            rec.stages.push(stage::WORKLOAD_DONE.into());
            rec.stage_ms.push(started.elapsed().as_millis() as u64);
            if !out.success() {
                rec.errors.push(format!("workload: exit {}: {}", out.status, out.stderr.trim()));
            }
        }
        if plan.commit && defer.as_deref() == Some("true") {
            // The device defers the commit to a health check: be it.
            let out = self.exec("rewindctl --wait 10 commit --reason boot-completed")?;
            if out.success() {
                rec.stages.push(stage::COMMITTED.into());
                rec.stage_ms.push(started.elapsed().as_millis() as u64);
            } else {
                rec.errors.push(format!("rewindctl commit: exit {}: {}", out.status, out.stderr.trim()));
            }
        }
        self.forward()?;
        let ready = started.elapsed().as_millis() as u64;
        rec.stages.push(stage::READY.into());
        rec.stage_ms.push(ready);
        rec.ready_ms = Some(ready);
        rec.duration_ms = ready;
        self.boots.push(rec);
        self.collect_logs(index);
        match &plan.failure {
            Some(Failure::Panic { .. }) => {
                // The shell dies with the kernel: the exit status says nothing.
                let _ = self.adb.run(
                    "panic",
                    &self.adb.su_shell_args("echo c > /proc/sysrq-trigger"),
                    Duration::from_secs(30),
                );
                self.end_boot(BootEnd::Panic)
            }
            Some(Failure::HostPowerCut { .. }) => {
                if let Some(r) = self.power.power_cut() {
                    r?;
                }
                self.end_boot(BootEnd::HostPowerCut)
            }
            _ => Ok(self.boots.last().cloned().ok_or(TargetError::NotRunning)?),
        }
    }

    fn exec_timeout(&mut self, command: &str, timeout: Duration) -> Result<ExecOutput, TargetError> {
        if !self.up {
            return Err(TargetError::NotRunning);
        }
        self.adb.run("adb shell", &self.adb.shell_args(command), timeout)
    }

    fn power_cut(&mut self) -> Result<BootRecord, TargetError> {
        match self.power.power_cut() {
            Some(r) => {
                r?;
                self.end_boot(BootEnd::HostPowerCut)
            }
            None => Err(TargetError::Unsupported {
                target: self.describe(),
                what: "cut the power".into(),
                why: profile::NO_RELAY.into(),
            }),
        }
    }

    /// An orderly `adb reboot` (init unmounts and syncs): recorded as the
    /// clean shutdown; the next `boot` waits for the device to come back.
    fn shutdown(&mut self) -> Result<BootRecord, TargetError> {
        if !self.up {
            return Err(TargetError::NotRunning);
        }
        if let Some(i) = self.boots.last().map(|b| b.index) {
            self.collect_logs(i);
        }
        self.adb.run_ok("adb reboot", &self.adb.reboot_args(), TOOL_TIMEOUT)?;
        std::thread::sleep(self.settle);
        self.end_boot(BootEnd::CleanShutdown)
    }

    fn wait_end(&mut self, timeout: Duration) -> Result<BootRecord, TargetError> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            let gone = self
                .adb
                .run("get-state", &self.adb.get_state_args(), Duration::from_secs(10))
                .map(|o| !o.success())
                .unwrap_or(true);
            if gone {
                return self.end_boot(BootEnd::Unexplained { detail: "the device left adb by itself".into() });
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        Err(TargetError::ExecTimeout { command: "waiting for the device to go away".into(), waited: timeout })
    }

    fn boots(&self) -> &[BootRecord] {
        &self.boots
    }

    fn console(&self) -> String {
        let own = self.boots.last().and_then(|b| std::fs::read_to_string(&b.console_log).ok()).unwrap_or_default();
        match self.power.console() {
            Some(c) => format!("{c}\n==== adb dmesg\n{own}"),
            None => own,
        }
    }

    fn grpc_endpoint(&self) -> Option<String> {
        self.forwarded.map(|p| format!("http://127.0.0.1:{p}"))
    }

    fn push(&mut self, local: &Path, guest_path: &str) -> Result<(), TargetError> {
        self.adb.run_ok("adb push", &self.adb.push_args(local, guest_path), TOOL_TIMEOUT).map(|_| ())
    }

    fn pull(&mut self, guest_path: &str, local: &Path) -> Result<(), TargetError> {
        self.adb.run_ok("adb pull", &self.adb.pull_args(guest_path, local), TOOL_TIMEOUT).map(|_| ())
    }

    fn baseline_script(&self) -> String {
        format!("{DEVICE_SCRIPT_DIR}/baseline.sh")
    }
    fn workload_script(&self) -> String {
        format!("{DEVICE_SCRIPT_DIR}/workload.sh")
    }
    fn artifacts_dir(&self) -> PathBuf {
        self.cfg.artifacts.clone()
    }
}

#[cfg(test)]
impl AdbTarget {
    /// No pause after reboot (fake devices reboot at once).
    pub(crate) fn no_settle(&mut self) {
        self.settle = Duration::ZERO;
    }
}

#[cfg(test)]
/// A fake `adb` (a shell script) standing in for a device: records
/// every call, answers getprop, runs `shell` commands against stubs.
pub(crate) fn fake_adb(dir: &Path, defer_commit: &str) -> Adb {
    let arms = format!(
        r#"  logcat) echo "I rewindd: armed"; exit 0;;
  shell)
getprop() {{ case "$1" in sys.boot_completed) echo 1;; init.svc.rewindd) echo running;; rewind.defer_commit) echo {defer_commit};; *) echo;; esac; }}
mkdir() {{ :; }}
rewindctl() {{ echo "rewindctl $*"; }}
dmesg() {{ echo "[    0.000000] Linux version"; }}
cat() {{ echo "/dev/block/mapper/rewind-userdata /data ext4 rw 0 0"; }}
sh() {{ echo "ran $*"; }}
su() {{ echo "su $*"; }}
eval "$2";;
"#
    );
    fake_adb_with_script(dir, &arms, "FAKE01")
}

#[cfg(test)]
/// Installs a fake `adb` in `dir` for every fake device of the tests: it
/// appends each call to `dir/calls.log`, drops `-s SERIAL`, answers
/// `forward tcp:0` with a port, and otherwise runs `arms` (`case "$1"`
/// arms, each ending in `;;`; a command no arm matches exits 0).
pub(crate) fn fake_adb_with_script(dir: &Path, arms: &str, serial: &str) -> Adb {
    let script = format!(
        r#"#!/bin/sh
echo "$*" >> {log}
[ "$1" = -s ] && shift 2
case "$1" in
  forward) [ "$2" = tcp:0 ] && echo 40123; exit 0;;
{arms}  *) exit 0;;
esac
"#,
        log = dir.join("calls.log").display()
    );
    let path = dir.join("adb");
    std::fs::write(&path, script).expect("write fake adb");
    let mut perms = std::fs::metadata(&path).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms).expect("chmod");
    Adb { program: path, serial: serial.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adb() -> Adb {
        Adb { program: "adb".into(), serial: "emulator-5554".into() }
    }

    /// Every command line against adb's documented syntax (`adb help`:
    /// global `-s SERIAL` first; `forward LOCAL REMOTE` with `tcp:<port>`,
    /// `tcp:0` to pick a port, `localfilesystem:<name>`; `forward --remove
    /// LOCAL`; `push LOCAL... REMOTE`; `pull REMOTE... LOCAL`; `logcat -d`
    /// dumps and exits; `wait-for-device`; `get-state`; `reboot`; `root`;
    /// `remount`; `devices -l`).
    #[test]
    fn adb_command_lines_follow_the_documented_syntax() {
        let a = adb();
        assert_eq!(Adb::devices_args(), ["devices", "-l"]);
        assert_eq!(
            a.shell_args("getprop sys.boot_completed"),
            ["-s", "emulator-5554", "shell", "getprop sys.boot_completed"]
        );
        assert_eq!(
            a.su_shell_args("echo c > /proc/sysrq-trigger"),
            ["-s", "emulator-5554", "shell", "su 0 sh -c 'echo c > /proc/sysrq-trigger'"]
        );
        assert_eq!(a.root_args(), ["-s", "emulator-5554", "root"]);
        assert_eq!(a.remount_args(), ["-s", "emulator-5554", "remount"]);
        assert_eq!(
            a.push_args(Path::new("/tmp/bin/rewindd"), "/system/bin/rewindd"),
            ["-s", "emulator-5554", "push", "/tmp/bin/rewindd", "/system/bin/rewindd"]
        );
        assert_eq!(a.pull_args("/data/x", Path::new("/tmp/x")), ["-s", "emulator-5554", "pull", "/data/x", "/tmp/x"]);
        assert_eq!(
            a.forward_args(),
            ["-s", "emulator-5554", "forward", "tcp:0", "localfilesystem:/dev/socket/rewindd"]
        );
        assert_eq!(a.forward_remove_args(40123), ["-s", "emulator-5554", "forward", "--remove", "tcp:40123"]);
        assert_eq!(a.reboot_args(), ["-s", "emulator-5554", "reboot"]);
        assert_eq!(a.wait_for_device_args(), ["-s", "emulator-5554", "wait-for-device"]);
        assert_eq!(a.get_state_args(), ["-s", "emulator-5554", "get-state"]);
        assert_eq!(a.logcat_args(), ["-s", "emulator-5554", "logcat", "-d"]);
    }

    #[test]
    fn adb_devices_l_is_parsed() {
        let text = "* daemon not running; starting now at tcp:5037\n\
                    * daemon started successfully\n\
                    List of devices attached\n\
                    0.0.0.0:6520           device product:aosp_cf_x86_64_phone model:Cuttlefish_x86_64_phone device:vsoc_x86_64 transport_id:1\n\
                    1A2B3C4D               unauthorized usb:1-1 transport_id:2\n\
                    emulator-5556          offline\n\
                    ZX1G22                 no permissions (user in plugdev group; are your udev rules wrong?); see [http://developer.android.com/tools/device.html] usb:1-2\n\n";
        let d = parse_devices(text);
        assert_eq!(d.len(), 4, "{d:?}");
        assert_eq!(d[0].serial, "0.0.0.0:6520");
        assert_eq!(d[0].state, "device");
        assert_eq!(d[0].prop("model"), Some("Cuttlefish_x86_64_phone"));
        assert_eq!(d[0].prop("transport_id"), Some("1"));
        assert_eq!(d[1].state, "unauthorized");
        assert_eq!(d[2].state, "offline");
        assert_eq!(d[3].state, "no permissions");
        assert!(parse_devices("List of devices attached\n\n").is_empty());
    }

    #[test]
    fn the_device_is_picked_or_the_error_says_why() {
        let d = parse_devices("List of devices attached\nA device\nB unauthorized\n");
        assert_eq!(pick_device(&d, Some("A")).expect("A").serial, "A");
        assert!(matches!(pick_device(&d, None), Err(DeviceSetupError::Ambiguous { count: 2, .. })));
        assert!(matches!(pick_device(&d, Some("C")), Err(DeviceSetupError::NoSuchSerial { .. })));
        assert!(matches!(pick_device(&d, Some("B")), Err(DeviceSetupError::NotReady { .. })));
        assert!(matches!(pick_device(&[], None), Err(DeviceSetupError::NoDevice)));
        assert!(matches!(pick_device(&[], Some("A")), Err(DeviceSetupError::NoDevice)));
        let one = parse_devices("List of devices attached\nonly device usb:1\n");
        assert_eq!(pick_device(&one, None).expect("only").serial, "only");
        // Every setup error is one line.
        let e = pick_device(&d, Some("C")).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(!DeviceSetupError::NoAdb.to_string().contains('\n'));
    }

    fn fake_target(dir: &Path, defer_commit: &str) -> AdbTarget {
        let cfg = AdbConfig { artifacts: dir.join("artifacts"), ..AdbConfig::default() };
        let mut t = AdbTarget::new(fake_adb(dir, defer_commit), Box::new(NoPowerControl), cfg).expect("set up");
        t.settle = Duration::ZERO;
        t
    }

    #[test]
    fn a_boot_on_a_fake_device_runs_the_documented_adb_steps() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut t = fake_target(dir.path(), "true");
        assert_eq!(t.fs(), FsType::Ext4);
        let rec = t.boot(&BootPlan::rewind().with_commit().with_workload(1)).expect("boot");
        assert!(rec.is_ready(), "{rec:?}");
        assert!(rec.reached(stage::REWINDD_STARTED) && rec.reached(stage::COMMITTED), "{rec:?}");
        assert!(rec.errors.is_empty(), "{:?}", rec.errors);
        assert_eq!(t.grpc_endpoint().as_deref(), Some("http://127.0.0.1:40123"));
        assert_eq!(t.exec_checked("echo hi").expect("exec"), "hi\n");
        assert!(t.console().contains("Linux version"));
        let panic =
            t.boot(&BootPlan::rewind().with_commit().with_failure(Failure::panic_at(stage::READY))).expect("boot 2");
        assert_eq!(panic.ended, Some(BootEnd::Panic));
        assert!(matches!(t.exec("true"), Err(TargetError::NotRunning)));
        let calls = std::fs::read_to_string(dir.path().join("calls.log")).expect("log");
        for want in [
            "-s FAKE01 root",
            "-s FAKE01 wait-for-device",
            "-s FAKE01 push",
            "-s FAKE01 reboot",
            "-s FAKE01 shell getprop sys.boot_completed",
            "-s FAKE01 forward tcp:0 localfilesystem:/dev/socket/rewindd",
            "-s FAKE01 logcat -d",
            "-s FAKE01 shell rewindctl --wait 10 commit --reason boot-completed",
            "-s FAKE01 shell su 0 sh -c 'echo c > /proc/sysrq-trigger'",
        ] {
            assert!(calls.contains(want), "no `{want}` in:\n{calls}");
        }
    }

    #[test]
    fn what_a_device_cannot_do_is_unsupported_naming_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut t = fake_target(dir.path(), "false");
        let msg = |r: Result<BootRecord, TargetError>| match r {
            Err(e @ TargetError::Unsupported { .. }) => e.to_string(),
            other => panic!("expected Unsupported, got {other:?}"),
        };
        assert!(msg(t.boot(&BootPlan::raw())).contains("raw"));
        assert!(msg(t.boot(&BootPlan::rewind().without_data())).contains("/data"));
        let m = msg(t.boot(&BootPlan::rewind().with_commit().with_failure(Failure::panic_at(stage::DATA_MOUNTED))));
        assert!(m.contains("panic@data-mounted") && m.contains("QEMU"), "{m}");
        let m = msg(t.boot(&BootPlan::rewind().with_commit().with_failure(Failure::power_cut_at(stage::READY))));
        assert!(m.contains("hardware relay"), "{m}");
        let m = msg(t.boot(&BootPlan::rewind()));
        assert!(m.contains("ro.rewind.defer_commit"), "{m}");
        assert!(msg(t.power_cut()).contains("hardware relay"));
    }

    /// `--target adb`'s power cut: sysrq b through `su`, then the next boot
    /// waits for the device as after a panic; a cut at a delay into the boot
    /// is refused because adb is not up then.
    #[test]
    fn a_physical_device_is_cut_by_a_sysrq_hard_reset() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = AdbConfig { artifacts: dir.path().join("artifacts"), ..AdbConfig::default() };
        let adb = fake_adb(dir.path(), "true");
        let power = SysrqReset::new(adb.clone()).no_settle();
        let mut t = AdbTarget::new(adb, Box::new(power), cfg).expect("set up");
        t.settle = Duration::ZERO;
        let rec = t.boot(&BootPlan::rewind().with_failure(Failure::power_cut_at(stage::READY))).expect("boot");
        assert_eq!(rec.ended, Some(BootEnd::HostPowerCut));
        let calls = std::fs::read_to_string(dir.path().join("calls.log")).expect("log");
        assert!(calls.contains("-s FAKE01 shell su 0 sh -c 'echo b > /proc/sysrq-trigger'"), "{calls}");
        let rec = t.boot(&BootPlan::rewind().with_commit()).expect("boot after the reset");
        assert!(rec.is_ready(), "{rec:?}");
        t.power_cut().expect("a cut of the running device");
        let m = match t
            .boot(&BootPlan::rewind().with_failure(Failure::HostPowerCutAfter { after: Duration::from_secs(3) }))
        {
            Err(e @ TargetError::Unsupported { .. }) => e.to_string(),
            other => panic!("expected Unsupported, got {other:?}"),
        };
        assert!(m.contains("only once the device is up") && m.contains("cuttlefish"), "{m}");
    }

    #[test]
    fn data_filesystem_from_proc_mounts() {
        let m = "/dev/block/dm-5 / ext4 ro 0 0\n/dev/block/mapper/rewind-userdata /data f2fs rw 0 0\n";
        assert_eq!(data_fs(m), Some("f2fs"));
        assert_eq!(data_fs("tmpfs /dev tmpfs rw 0 0\n"), None);
    }
}
