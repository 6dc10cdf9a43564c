//! A Cuttlefish virtual device (`--target cuttlefish [--cvd-dir DIR]`):
//! started with `launch_cvd --daemon`, driven over adb like any device
//! (`adb::AdbTarget`), power-cut with `stop_cvd` and powered on again with
//! `launch_cvd --daemon`.
//!
//! Why stop_cvd for a power cut: source.android.com's "Cuttlefish: Restart
//! and reset" says `stop_cvd` performs an unclean shutdown, and a later
//! `launch_cvd` resumes from the disks of the last session unless
//! `--resume=false` is given. `powerwash_cvd` is NOT usable: it resets the
//! disks to their first-boot state, which would erase the very userdata
//! rewind protects. `restart_cvd` (the unclean restart) would do for a cut
//! followed by a boot, but stop + launch lets the harness tell "cut" and
//! "power on" apart as the Target trait does.
//!
//! The host tools take their runtime directory from $HOME; `--cvd-dir` is
//! that directory (where the host package is unpacked: `bin/launch_cvd`).
//! Instance N's adb serial is `0.0.0.0:<6520 + N - 1>` and its logs are in
//! `cuttlefish/instances/cvd-N/` (`kernel.log`, `launcher.log`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::adb::{Adb, PowerControl};
use super::{run_tool, DeviceSetupError};
use crate::target::TargetError;

/// The first instance's adb port (Cuttlefish's default; + N - 1 for N).
pub const BASE_ADB_PORT: u16 = 6520;
/// launch_cvd --daemon returns once the device booted (or failed to).
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(900);
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// The Cuttlefish host tools' command lines, in one place.
#[derive(Debug, Clone)]
pub struct Cvd {
    /// Runtime/home directory (holds `bin/launch_cvd`).
    pub dir: PathBuf,
    /// `--base_instance_num` (1 unless several devices share the host).
    pub instance: u32,
}

impl Cvd {
    pub fn launch_cvd(&self) -> PathBuf {
        self.dir.join("bin").join("launch_cvd")
    }
    pub fn stop_cvd(&self) -> PathBuf {
        self.dir.join("bin").join("stop_cvd")
    }
    /// `launch_cvd --daemon --base_instance_num=N`: in the background, and
    /// resuming the last session's disks (launch_cvd's default).
    pub fn launch_args(&self) -> Vec<String> {
        vec!["--daemon".into(), format!("--base_instance_num={}", self.instance)]
    }
    /// stop_cvd stops the instances of the $HOME it runs with.
    pub fn stop_args(&self) -> Vec<String> {
        Vec::new()
    }
    /// The tools read HOME for their runtime directory; CUTTLEFISH_INSTANCE
    /// selects the instance for the tools that act on one.
    pub fn envs(&self) -> Vec<(String, String)> {
        vec![("HOME".into(), self.dir.display().to_string()), ("CUTTLEFISH_INSTANCE".into(), self.instance.to_string())]
    }
    pub fn adb_serial(&self) -> String {
        format!("0.0.0.0:{}", BASE_ADB_PORT as u32 + self.instance - 1)
    }
    pub fn instance_dir(&self) -> PathBuf {
        self.dir.join("cuttlefish").join("instances").join(format!("cvd-{}", self.instance))
    }
    pub fn kernel_log(&self) -> PathBuf {
        self.instance_dir().join("kernel.log")
    }
    pub fn launcher_log(&self) -> PathBuf {
        self.instance_dir().join("launcher.log")
    }

    fn run(&self, step: &'static str, program: &Path, args: &[String], timeout: Duration) -> Result<(), TargetError> {
        let out = run_tool(step, program, args, &self.envs(), timeout)?;
        if out.success() {
            Ok(())
        } else {
            Err(TargetError::Tool {
                step,
                command: super::display_command(&program.display().to_string(), args),
                detail: format!("exit {}: {}", out.status, last_lines(&out.stderr, 5)),
            })
        }
    }
    pub fn launch(&self) -> Result<(), TargetError> {
        self.run("launch_cvd", &self.launch_cvd(), &self.launch_args(), LAUNCH_TIMEOUT)
    }
    pub fn stop(&self) -> Result<(), TargetError> {
        self.run("stop_cvd", &self.stop_cvd(), &self.stop_args(), STOP_TIMEOUT)
    }
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.trim().lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// The cvd directory: `--cvd-dir`, else $HOME (the tools' own default).
/// Errors in one line when launch_cvd is not there.
pub fn find_cvd(dir: Option<&Path>, instance: u32) -> Result<Cvd, DeviceSetupError> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default(),
    };
    let cvd = Cvd { dir, instance };
    if !cvd.launch_cvd().is_file() {
        return Err(DeviceSetupError::NoLaunchCvd { looked: cvd.launch_cvd().display().to_string() });
    }
    Ok(cvd)
}

/// Starts the device and returns its adb handle (adb must be on PATH:
/// the host package has one in bin/ as well, used when PATH has none).
pub fn start(cvd: &Cvd) -> Result<Adb, DeviceSetupError> {
    let program = super::which("adb")
        .or_else(|| Some(cvd.dir.join("bin").join("adb")).filter(|p| p.is_file()))
        .ok_or(DeviceSetupError::NoAdb)?;
    let adb = Adb { program, serial: cvd.adb_serial() };
    // A device already up (launched by hand) is used as it is: a second
    // launch_cvd for the same instance would fail.
    let running = adb
        .run("list devices", &Adb::devices_args(), Duration::from_secs(30))
        .map(|o| super::adb::parse_devices(&o.stdout).iter().any(|d| d.serial == adb.serial && d.state == "device"))
        .unwrap_or(false);
    if !running {
        cvd.launch().map_err(|e| DeviceSetupError::Target(Box::new(e)))?;
    }
    Ok(adb)
}

pub struct CvdPower {
    pub cvd: Cvd,
    /// stop_cvd ran: the next boot must launch_cvd. After a panic the
    /// device reboots by itself (the launcher restarts the VM) and a second
    /// launch_cvd would clash with the running one.
    stopped: bool,
}

impl CvdPower {
    pub fn new(cvd: Cvd) -> Self {
        CvdPower { cvd, stopped: false }
    }
}

impl PowerControl for CvdPower {
    fn name(&self) -> String {
        format!("cuttlefish cvd-{}", self.cvd.instance)
    }
    fn can_cut(&self) -> bool {
        true
    }
    fn power_cut(&mut self) -> Option<Result<(), TargetError>> {
        let r = self.cvd.stop();
        self.stopped = r.is_ok();
        Some(r)
    }
    fn power_on(&mut self) -> Result<(), TargetError> {
        if self.stopped {
            self.cvd.launch()?;
            self.stopped = false;
        }
        Ok(())
    }
    fn console(&self) -> Option<String> {
        let mut s = String::new();
        for p in [self.cvd.launcher_log(), self.cvd.kernel_log()] {
            if let Ok(text) = std::fs::read_to_string(&p) {
                // The tail: the logs cover every boot of the instance.
                let tail: Vec<&str> = text.lines().rev().take(400).collect();
                s += &format!("==== {}\n", p.display());
                for l in tail.iter().rev() {
                    s += l;
                    s.push('\n');
                }
            }
        }
        (!s.is_empty()).then_some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the Cuttlefish docs: `launch_cvd --daemon` runs the device
    /// in the background; `--base_instance_num` picks the first instance's
    /// number (ports and directories follow it); `stop_cvd` takes no
    /// arguments for the instances of its HOME; the runtime directory is
    /// $HOME/cuttlefish/instances/cvd-N; adb for instance 1 is on 6520.
    #[test]
    fn cuttlefish_command_lines_follow_the_documented_flags() {
        let cvd = Cvd { dir: "/srv/cf".into(), instance: 1 };
        assert_eq!(cvd.launch_cvd(), PathBuf::from("/srv/cf/bin/launch_cvd"));
        assert_eq!(cvd.stop_cvd(), PathBuf::from("/srv/cf/bin/stop_cvd"));
        assert_eq!(cvd.launch_args(), ["--daemon", "--base_instance_num=1"]);
        assert!(cvd.stop_args().is_empty());
        assert!(cvd.envs().contains(&("HOME".into(), "/srv/cf".into())));
        assert_eq!(cvd.adb_serial(), "0.0.0.0:6520");
        assert_eq!(cvd.kernel_log(), PathBuf::from("/srv/cf/cuttlefish/instances/cvd-1/kernel.log"));
        assert_eq!(cvd.launcher_log(), PathBuf::from("/srv/cf/cuttlefish/instances/cvd-1/launcher.log"));
        let third = Cvd { instance: 3, ..cvd };
        assert_eq!(third.launch_args(), ["--daemon", "--base_instance_num=3"]);
        assert_eq!(third.adb_serial(), "0.0.0.0:6522");
        // Never powerwash: it would reset userdata to its first boot.
        assert!(!third.launch_args().iter().any(|a| a.contains("resume") || a.contains("powerwash")));
    }

    /// Fake host tools that log their calls (with HOME), and a fake adb.
    #[test]
    fn power_cuts_stop_cvd_and_the_next_boot_launches_again() {
        use crate::device::adb::{fake_adb, AdbConfig, AdbTarget};
        use crate::failure::BootEnd;
        use crate::plan::{stage, BootPlan, Failure};
        use crate::target::Target;
        let dir = tempfile::tempdir().expect("tmp");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        let log = dir.path().join("cvd.log");
        for tool in ["launch_cvd", "stop_cvd"] {
            let p = bin.join(tool);
            std::fs::write(&p, format!("#!/bin/sh\necho \"{tool} $* HOME=$HOME\" >> {}\n", log.display()))
                .expect("write");
            let mut perms = std::fs::metadata(&p).expect("stat").permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
            std::fs::set_permissions(&p, perms).expect("chmod");
        }
        let cvd = find_cvd(Some(dir.path()), 1).expect("launch_cvd is there");
        let cfg = AdbConfig { artifacts: dir.path().join("artifacts"), ..AdbConfig::default() };
        let mut t = AdbTarget::new(fake_adb(dir.path(), "true"), Box::new(CvdPower::new(cvd)), cfg).expect("set up");
        t.no_settle();
        let cut = t
            .boot(&BootPlan::rewind().with_commit().with_failure(Failure::power_cut_at(stage::READY)))
            .expect("boot 1");
        assert_eq!(cut.ended, Some(BootEnd::HostPowerCut));
        let rec = t.boot(&BootPlan::rewind().with_commit()).expect("boot 2");
        assert!(rec.is_ready());
        assert_eq!(t.power_cut().expect("cut").ended, Some(BootEnd::HostPowerCut));
        let calls = std::fs::read_to_string(&log).expect("log");
        let home = format!("HOME={}", dir.path().display());
        let want = [
            format!("stop_cvd  {home}"),
            format!("launch_cvd --daemon --base_instance_num=1 {home}"),
            format!("stop_cvd  {home}"),
        ];
        assert_eq!(calls.lines().collect::<Vec<_>>(), want.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(t.describe().contains("cuttlefish cvd-1"));
    }

    #[test]
    fn missing_launch_cvd_is_one_line_naming_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let e = find_cvd(Some(dir.path()), 1).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, DeviceSetupError::NoLaunchCvd { .. }));
        assert!(msg.contains("launch_cvd") && msg.contains("--cvd-dir") && !msg.contains('\n'), "{msg}");
    }
}
