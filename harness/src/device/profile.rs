//! What a real Android device can do for a scenario, in one place: the
//! adb/Cuttlefish target refuses everything else, and [`DeviceProfile`]
//! wraps any other target (the QEMU guest in CI) so it refuses exactly the
//! same plans with exactly the same errors. A scenario that passes on QEMU
//! in device profile therefore asks nothing of a device that a device
//! cannot do; that is how the `device-*` scenarios are verified without a
//! device on the CI machines.
//!
//! A device, compared with the QEMU guest: Android's init has no stage
//! hooks, so failures can be injected only once the device is up (a panic
//! through sysrq at `ready`/`boot-completed`; a power cut only with a relay,
//! which Cuttlefish's `stop_cvd` is and a physical device lacks); every
//! boot runs the boot contract with rewindd and mounts /data itself; and
//! rewindd.rc commits at `sys.boot_completed` unless the build defers the
//! commit (`ro.rewind.defer_commit=true`), so only then can a boot reach
//! ready without committing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::plan::{stage, BootPlan, Failure, FsType, Mode};
use crate::target::{BootRecord, ExecOutput, Target, TargetError};

/// Why a power cut is refused on a target without power control.
pub const NO_RELAY: &str = "a power cut on a physical device needs a hardware relay (use --target cuttlefish)";
/// Why a cut at a delay into a boot is refused when the cut goes through adb.
pub const NO_CUT_DURING_BOOT: &str = "a hard reset through adb lands only once the device is up (at ready); a cut during the boot needs --target cuttlefish or a relay";
/// Why a stage failure is refused.
pub const NO_STAGE_HOOKS: &str = "Android's init has no stage hooks: failures can be injected only once the device has booted (panic or Cuttlefish power cut at ready); stage failures need the QEMU guest";
/// Why a boot without a commit is refused when the device commits itself.
pub const COMMITS_AT_BOOT_COMPLETED: &str =
    "rewindd.rc commits at sys.boot_completed unless the build sets ro.rewind.defer_commit=true";

/// What the device can do beyond the basics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The host can cut its power once the device is up (Cuttlefish's
    /// stop_cvd; a phone's sysrq-b hard reset through adb).
    pub can_cut: bool,
    /// The cut can also land at a delay into a boot, before adb is up
    /// (stop_cvd can; a reset through adb cannot).
    pub cut_during_boot: bool,
    /// The build sets `ro.rewind.defer_commit=true`: a boot completes
    /// without committing unless the harness commits.
    pub defer_commit: bool,
}

impl Capabilities {
    /// A phone on a userdebug build that defers its commit: what the
    /// scenarios with failed attempts need, and what CI verifies them as.
    /// Its power cut is the sysrq-b hard reset at ready.
    pub const PHYSICAL_DEFER_COMMIT: Capabilities =
        Capabilities { can_cut: true, cut_during_boot: false, defer_commit: true };
}

/// A plan a device cannot carry out: what it asks for, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub what: String,
    pub why: String,
}

impl Refused {
    fn new(what: impl Into<String>, why: &str) -> Self {
        Refused { what: what.into(), why: why.into() }
    }

    /// The target's error, naming the target (`describe()`).
    pub fn into_error(self, target: String) -> TargetError {
        TargetError::Unsupported { target, what: self.what, why: self.why }
    }
}

/// Whether a device with `caps` can boot with `plan`; the first thing it
/// cannot do otherwise.
pub fn check(plan: &BootPlan, caps: Capabilities) -> Result<(), Refused> {
    if plan.mode == Mode::Raw {
        return Err(Refused::new(
            "boot without rewindd (BootPlan::raw)",
            "a device always boots its own init with rewindd.rc; raw boots are the QEMU guest's",
        ));
    }
    if !plan.mount_data {
        return Err(Refused::new(
            "boot without mounting /data",
            "Android's init mounts /data (mount_all); only the QEMU guest init can skip it",
        ));
    }
    if let Some(f) = &plan.failure {
        let after_boot = matches!(f.stage(), Some(stage::READY) | Some(stage::BOOT_COMPLETED));
        let is_cut = matches!(f, Failure::HostPowerCut { .. } | Failure::HostPowerCutAfter { .. });
        let ok = match f {
            Failure::Panic { .. } => after_boot,
            Failure::HostPowerCut { delay, .. } => after_boot && delay.is_zero() && caps.can_cut,
            Failure::HostPowerCutAfter { .. } => caps.can_cut && caps.cut_during_boot,
            _ => false,
        };
        if !ok {
            let why = if is_cut && !caps.can_cut {
                NO_RELAY
            } else if matches!(f, Failure::HostPowerCutAfter { .. }) {
                NO_CUT_DURING_BOOT
            } else {
                NO_STAGE_HOOKS
            };
            return Err(Refused::new(format!("inject {f}"), why));
        }
    }
    if !plan.commit && !caps.defer_commit {
        return Err(Refused::new("boot to completion without committing", COMMITS_AT_BOOT_COMPLETED));
    }
    Ok(())
}

/// Another target (the QEMU guest) restricted to what a device with `caps`
/// can do: every plan goes through [`check`] first, and a power cut without
/// a relay is refused, with the errors the adb target gives. Everything
/// else is forwarded unchanged.
pub struct DeviceProfile<'a, T: Target + ?Sized> {
    inner: &'a mut T,
    caps: Capabilities,
}

impl<'a, T: Target + ?Sized> DeviceProfile<'a, T> {
    pub fn new(inner: &'a mut T, caps: Capabilities) -> Self {
        DeviceProfile { inner, caps }
    }

    pub fn caps(&self) -> Capabilities {
        self.caps
    }

    fn refuse(&self, refused: Refused) -> TargetError {
        refused.into_error(self.describe())
    }
}

impl<T: Target + ?Sized> Target for DeviceProfile<'_, T> {
    fn describe(&self) -> String {
        format!(
            "{} in device profile ({}, defer_commit={})",
            self.inner.describe(),
            if self.caps.can_cut { "power cut at ready" } else { "no power cut" },
            self.caps.defer_commit
        )
    }
    fn fs(&self) -> FsType {
        self.inner.fs()
    }
    fn boot(&mut self, plan: &BootPlan) -> Result<BootRecord, TargetError> {
        check(plan, self.caps).map_err(|r| self.refuse(r))?;
        self.inner.boot(plan)
    }
    fn exec_timeout(&mut self, command: &str, timeout: Duration) -> Result<ExecOutput, TargetError> {
        self.inner.exec_timeout(command, timeout)
    }
    fn power_cut(&mut self) -> Result<BootRecord, TargetError> {
        if !self.caps.can_cut {
            return Err(self.refuse(Refused::new("cut the power", NO_RELAY)));
        }
        self.inner.power_cut()
    }
    fn shutdown(&mut self) -> Result<BootRecord, TargetError> {
        self.inner.shutdown()
    }
    fn wait_end(&mut self, timeout: Duration) -> Result<BootRecord, TargetError> {
        self.inner.wait_end(timeout)
    }
    fn boots(&self) -> &[BootRecord] {
        self.inner.boots()
    }
    fn console(&self) -> String {
        self.inner.console()
    }
    fn framed_console(&self) -> String {
        self.inner.framed_console()
    }
    fn grpc_endpoint(&self) -> Option<String> {
        self.inner.grpc_endpoint()
    }
    fn push(&mut self, local: &Path, guest_path: &str) -> Result<(), TargetError> {
        self.inner.push(local, guest_path)
    }
    fn pull(&mut self, guest_path: &str, local: &Path) -> Result<(), TargetError> {
        self.inner.pull(guest_path, local)
    }
    fn baseline_script(&self) -> String {
        self.inner.baseline_script()
    }
    fn workload_script(&self) -> String {
        self.inner.workload_script()
    }
    fn artifacts_dir(&self) -> PathBuf {
        self.inner.artifacts_dir()
    }
    fn kept_artifacts(&self) -> Option<PathBuf> {
        self.inner.kept_artifacts()
    }
    fn disk_images(&self) -> Vec<PathBuf> {
        self.inner.disk_images()
    }
    fn finish_run(&mut self) {
        self.inner.finish_run()
    }
    fn save_powered_off(&self, dir: &Path) -> Result<(), TargetError> {
        self.inner.save_powered_off(dir)
    }
    fn start_from(&mut self, dir: &Path) -> Result<(), TargetError> {
        self.inner.start_from(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::adb::{fake_adb, AdbConfig, AdbTarget, NoPowerControl};
    use crate::target::testing::Recorder;

    fn unsupported(r: Result<BootRecord, TargetError>) -> (String, String) {
        match r {
            Err(TargetError::Unsupported { what, why, .. }) => (what, why),
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    /// Everything a device cannot do, for both commit policies.
    fn refused_plans() -> Vec<(BootPlan, bool)> {
        let mut v = Vec::new();
        for defer in [false, true] {
            v.push((BootPlan::raw(), defer));
            v.push((BootPlan::rewind().with_commit().without_data(), defer));
            for at in [stage::DATA_MOUNTED, stage::WORKLOAD_DONE, stage::PREPARE_USERDATA] {
                v.push((BootPlan::rewind().with_commit().with_failure(Failure::panic_at(at)), defer));
            }
            v.push((BootPlan::rewind().with_commit().with_failure(Failure::hang_at(stage::READY)), defer));
            v.push((BootPlan::rewind().with_commit().with_failure(Failure::guest_reset_at(stage::READY)), defer));
            v.push((BootPlan::rewind().with_commit().with_failure(Failure::poweroff_at(stage::READY)), defer));
            v.push((BootPlan::rewind().with_commit().with_failure(Failure::power_cut_at(stage::READY)), defer));
            v.push((
                BootPlan::rewind()
                    .with_commit()
                    .with_failure(Failure::HostPowerCutAfter { after: Duration::from_secs(3) }),
                defer,
            ));
        }
        v.push((BootPlan::rewind(), false));
        v.push((BootPlan::rewind().with_workload(1).with_failure(Failure::panic_at(stage::READY)), false));
        v
    }

    #[test]
    fn the_profile_refuses_what_the_adb_target_refuses_with_the_same_words() {
        let dir = tempfile::tempdir().expect("tmp");
        for defer in [false, true] {
            let sub = dir.path().join(format!("defer-{defer}"));
            std::fs::create_dir_all(&sub).expect("mkdir");
            let cfg = AdbConfig { artifacts: sub.join("artifacts"), ..AdbConfig::default() };
            let mut adb =
                AdbTarget::new(fake_adb(&sub, if defer { "true" } else { "false" }), Box::new(NoPowerControl), cfg)
                    .expect("fake device");
            adb.no_settle();
            let mut inner = Recorder::default();
            let caps = Capabilities { can_cut: false, cut_during_boot: false, defer_commit: defer };
            let mut profiled = DeviceProfile::new(&mut inner, caps);
            for (plan, d) in refused_plans().into_iter().filter(|(_, d)| *d == defer) {
                let on_device = unsupported(adb.boot(&plan));
                let in_profile = unsupported(profiled.boot(&plan));
                assert_eq!(on_device, in_profile, "plan {plan:?} (defer {d})");
            }
            assert_eq!(unsupported(adb.power_cut()), unsupported(profiled.power_cut()));
            assert!(inner.boots.is_empty(), "a refused plan never reaches the inner target");
            assert_eq!(inner.cuts, 0);
        }
    }

    #[test]
    fn the_profile_forwards_what_a_device_can_do() {
        let mut inner = Recorder::default();
        let mut profiled = DeviceProfile::new(&mut inner, Capabilities::PHYSICAL_DEFER_COMMIT);
        let allowed = [
            BootPlan::rewind(),
            BootPlan::rewind().with_commit(),
            BootPlan::rewind().with_workload(1).with_data_dir(crate::plan::DEVICE_DATA_DIR),
            BootPlan::rewind().with_workload(2).with_failure(Failure::panic_at(stage::READY)),
            BootPlan::rewind().with_failure(Failure::panic_at(stage::BOOT_COMPLETED)),
        ];
        for plan in &allowed {
            profiled.boot(plan).expect("a device can do this");
        }
        assert!(profiled.describe().contains("device profile"), "{}", profiled.describe());
        assert_eq!(profiled.exec_checked("echo hi").expect("exec"), "echo hi");
        assert_eq!(inner.boots.len(), allowed.len());

        // A Cuttlefish-like profile: a power cut at ready or after a delay.
        let cvd = Capabilities { can_cut: true, cut_during_boot: true, defer_commit: true };
        let mut inner = Recorder::default();
        let mut profiled = DeviceProfile::new(&mut inner, cvd);
        profiled.boot(&BootPlan::rewind().with_failure(Failure::power_cut_at(stage::READY))).expect("cut at ready");
        let (what, why) =
            unsupported(profiled.boot(
                &BootPlan::rewind().with_failure(Failure::power_cut_at_after(stage::READY, Duration::from_secs(1))),
            ));
        assert!(what.contains("power-cut@ready+1000ms") && why.contains("stage hooks"), "{what}: {why}");
        profiled.power_cut().expect("cuttlefish cuts");
        assert_eq!(inner.cuts, 1);
    }

    #[test]
    fn refusals_name_the_target_and_the_missing_piece() {
        let r = check(&BootPlan::raw(), Capabilities::PHYSICAL_DEFER_COMMIT).expect_err("raw");
        let e = r.into_error("adb X (a physical device)".into()).to_string();
        assert!(e.starts_with("adb X (a physical device) cannot boot without rewindd"), "{e}");
        let r =
            check(&BootPlan::rewind(), Capabilities { can_cut: false, cut_during_boot: false, defer_commit: false })
                .expect_err("no commit");
        assert!(r.why.contains("ro.rewind.defer_commit=true"), "{r:?}");
    }
}
