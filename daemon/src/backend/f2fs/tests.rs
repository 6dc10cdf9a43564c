//! f2fs mode on a host: the option fallback (EAGAIN/EINVAL) and the
//! backend's steps against a fake mount syscall.

use super::*;
use crate::testing::{f2fs_part, fstab_entry};
use crate::types::Budget;
use std::sync::{Arc, Mutex};

/// Shared view of what the fake kernel did, for the assertions.
#[derive(Default)]
pub struct Kernel {
    /// Every mount(2) call: (flags, data).
    pub calls: Vec<(MsFlags, String)>,
    /// Answers for the next mount calls, in order; empty = success.
    pub answers: Vec<Errno>,
    /// What is mounted on /data (super options), if anything.
    pub mounted: Option<Vec<String>>,
    pub unmounts: usize,
    pub unusable: u64,
    pub free: u64,
    pub size: u64,
    pub cp_flags: u32,
}

#[derive(Clone, Default)]
pub struct FakeF2fs(pub Arc<Mutex<Kernel>>);

impl FakeF2fs {
    pub fn k(&self) -> std::sync::MutexGuard<'_, Kernel> {
        self.0.lock().expect("fake kernel")
    }
}

impl F2fsSys for FakeF2fs {
    fn mount(&mut self, _source: &str, _target: &str, flags: MsFlags, data: &str) -> std::result::Result<(), Errno> {
        let mut k = self.k();
        k.calls.push((flags, data.to_string()));
        if !k.answers.is_empty() {
            return Err(k.answers.remove(0));
        }
        let opts: Vec<String> =
            data.split(',')
                .filter(|s| !s.is_empty())
                .map(|o| {
                    if o.starts_with("checkpoint=disable") {
                        "checkpoint=disable:0".to_string()
                    } else {
                        o.to_string()
                    }
                })
                .filter(|o| o != "checkpoint=enable")
                .collect();
        k.mounted = Some(opts);
        Ok(())
    }
    fn umount(&mut self, _target: &str) -> std::result::Result<(), Errno> {
        let mut k = self.k();
        k.mounted = None;
        k.unmounts += 1;
        Ok(())
    }
    fn live(&self, _mount_point: &str) -> Option<LiveMount> {
        self.k().mounted.clone().map(|s| LiveMount {
            device: "253:0".into(),
            fs_type: "f2fs".into(),
            mount_options: vec!["rw".into(), "nosuid".into(), "nodev".into(), "noatime".into()],
            super_options: s,
        })
    }
    fn device_number(&self, _device: &str) -> std::result::Result<String, F2fsError> {
        Ok("253:0".into())
    }
    fn device_size(&self, _device: &str) -> std::result::Result<u64, F2fsError> {
        Ok(self.k().size)
    }
    fn space(&self, _mount_point: &str) -> std::result::Result<F2fsSpace, F2fsError> {
        let k = self.k();
        Ok(F2fsSpace { unusable_bytes: k.unusable, free_bytes: k.free })
    }
    fn checkpoint_flags(&self, _device: &str) -> std::result::Result<u32, F2fsError> {
        Ok(self.k().cp_flags)
    }
}

fn data_opts(k: &Kernel) -> Vec<String> {
    k.calls.iter().map(|(_, d)| d.clone()).collect()
}

#[test]
fn first_try_is_zero_percent() {
    let mut f = FakeF2fs::default();
    let opt =
        disable_checkpoint(&mut f, "/dev/vda", "/data", MsFlags::MS_NOATIME, &["discard".into()]).expect("mounts");
    assert_eq!(opt, "checkpoint=disable:0%");
    assert_eq!(data_opts(&f.k()), vec!["discard,checkpoint=disable:0%"]);
    assert_eq!(f.k().calls[0].0, MsFlags::MS_NOATIME);
}

#[test]
fn eagain_raises_the_share_by_ten() {
    let mut f = FakeF2fs::default();
    f.k().answers = vec![Errno::EAGAIN, Errno::EAGAIN, Errno::EAGAIN];
    let opt = disable_checkpoint(&mut f, "/dev/vda", "/data", MsFlags::empty(), &[]).expect("mounts");
    assert_eq!(opt, "checkpoint=disable:30%");
    assert_eq!(
        data_opts(&f.k()),
        vec!["checkpoint=disable:0%", "checkpoint=disable:10%", "checkpoint=disable:20%", "checkpoint=disable:30%"]
    );
}

#[test]
fn eagain_up_to_one_hundred_then_refused() {
    let mut f = FakeF2fs::default();
    f.k().answers = vec![Errno::EAGAIN; 11];
    let e = disable_checkpoint(&mut f, "/dev/vda", "/data", MsFlags::empty(), &[]).expect_err("refused");
    let calls = data_opts(&f.k());
    assert_eq!(calls.len(), 11, "0..=100 in steps of 10");
    assert_eq!(calls.last().map(String::as_str), Some("checkpoint=disable:100%"));
    assert!(matches!(e, F2fsError::CheckpointRefused { ref tried, .. } if tried.len() == 11));
    assert_eq!(e.kind(), crate::types::ErrorKind::Unsafe);
}

#[test]
fn einval_falls_back_to_plain_disable() {
    let mut f = FakeF2fs::default();
    f.k().answers = vec![Errno::EINVAL];
    let opt = disable_checkpoint(&mut f, "/dev/vda", "/data", MsFlags::empty(), &["discard".into()]).expect("mounts");
    assert_eq!(opt, "checkpoint=disable");
    assert_eq!(data_opts(&f.k()), vec!["discard,checkpoint=disable:0%", "discard,checkpoint=disable"]);
}

#[test]
fn eagain_then_einval_falls_back_too() {
    let mut f = FakeF2fs::default();
    f.k().answers = vec![Errno::EAGAIN, Errno::EINVAL];
    assert_eq!(
        disable_checkpoint(&mut f, "/dev/vda", "/data", MsFlags::empty(), &[]).expect("mounts"),
        "checkpoint=disable"
    );
    assert_eq!(data_opts(&f.k()).len(), 3);
}

#[test]
fn both_forms_refused_is_reported_plainly() {
    let mut f = FakeF2fs::default();
    f.k().answers = vec![Errno::EINVAL, Errno::EINVAL];
    let e = disable_checkpoint(&mut f, "/dev/vda", "/data", MsFlags::empty(), &[]).expect_err("refused");
    let msg = e.to_string();
    assert!(msg.contains("refused checkpoint=disable"), "{msg}");
    assert!(msg.contains("checkpoint=disable:0%: Invalid argument"), "{msg}");
    assert!(msg.contains("checkpoint=disable: Invalid argument"), "{msg}");
    assert_eq!(e.kind(), crate::types::ErrorKind::Unsafe);
}

#[test]
fn other_errors_are_plain_mount_failures() {
    let mut f = FakeF2fs::default();
    f.k().answers = vec![Errno::ENOENT];
    let e = disable_checkpoint(&mut f, "/dev/vda", "/data", MsFlags::empty(), &[]).expect_err("fails");
    assert!(matches!(e, F2fsError::Mount { source: Errno::ENOENT, .. }));
    assert_eq!(e.kind(), crate::types::ErrorKind::Internal);
    assert_eq!(f.k().calls.len(), 1, "no retries for errors that are not about the option");
}

#[test]
fn fstab_options_split_into_flags_and_data() {
    let opts: Vec<String> = "noatime,nosuid,nodev,discard,reserve_root=32768,checkpoint=disable,inlinecrypt"
        .split(',')
        .map(str::to_string)
        .collect();
    let (flags, data) = split_options(&opts);
    assert_eq!(flags, MsFlags::MS_NOATIME | MsFlags::MS_NOSUID | MsFlags::MS_NODEV);
    assert_eq!(data, vec!["discard", "reserve_root=32768", "inlinecrypt"]);
}

#[test]
fn mountinfo_shows_the_checkpoint_state() {
    let mi = "\
22 1 0:2 / / rw shared:1 - rootfs rootfs rw
40 22 254:0 / /data rw,nosuid,nodev,noatime shared:2 - f2fs /dev/block/by-name/userdata rw,lazytime,background_gc=on,checkpoint=disable:0,active_logs=6
";
    let l = live_mount_from(mi, "/data").expect("mounted");
    assert_eq!(l.device, "254:0");
    assert_eq!(l.fs_type, "f2fs");
    assert!(l.checkpoint_disabled());
    assert_eq!(l.vfs_flags(), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOATIME | MsFlags::MS_LAZYTIME);
    let enabled = mi.replace("checkpoint=disable:0,", "");
    assert!(!live_mount_from(&enabled, "/data").expect("mounted").checkpoint_disabled());
    assert!(live_mount_from(mi, "/metadata").is_none());
}

#[test]
fn unusable_share_is_a_usage_for_the_space_watch() {
    let s = F2fsSpace { unusable_bytes: 90 << 20, free_bytes: 10 << 20 };
    assert_eq!(s.as_status().used_percent(), Some(90));
    assert_eq!(F2fsSpace { unusable_bytes: 0, free_bytes: 0 }.as_status().used_percent(), Some(0));
}

pub fn entry() -> CheckpointedPartition {
    fstab_entry(
        CheckpointMode::Fs,
        "/dev/block/by-name/userdata",
        "/dev/block/by-name/userdata",
        &["noatime", "nosuid", "nodev", "discard"],
    )
}

fn part_state() -> PartitionState {
    f2fs_part("/dev/block/by-name/userdata", 1 << 30)
}

#[test]
fn arm_mounts_commit_remounts_with_the_same_options() {
    let f = FakeF2fs::default();
    f.k().size = 1 << 30;
    let mut b = F2fsBackend::new(vec![entry()], Box::new(f.clone()));
    let p = part_state();
    b.verify_store(&p).expect("same device");
    assert!(!b.is_armed(&p).expect("state"));
    b.arm(&p, 1).expect("armed");
    assert!(b.is_armed(&p).expect("state"));
    {
        let k = f.k();
        assert_eq!(k.calls[0].1, "discard,checkpoint=disable:0%");
        assert_eq!(k.calls[0].0, MsFlags::MS_NOATIME | MsFlags::MS_NOSUID | MsFlags::MS_NODEV);
    }
    // Armed again in the same boot: no second mount.
    b.arm(&p, 1).expect("idempotent");
    assert_eq!(f.k().calls.len(), 1);
    b.commit_live(&p).expect("committed");
    {
        let k = f.k();
        let (flags, data) = &k.calls[1];
        // The live mount's options given back (the fake shows what was mounted).
        assert_eq!(data, "discard,checkpoint=enable");
        assert!(flags.contains(MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOATIME));
    }
    assert!(!b.is_armed(&p).expect("state"));
    b.commit_live(&p).expect("repeated commit is a no-op");
    assert_eq!(f.k().calls.len(), 2);
}

#[test]
fn merge_drops_a_still_mounted_attempt_and_is_a_no_op_otherwise() {
    let f = FakeF2fs::default();
    let mut b = F2fsBackend::new(vec![entry()], Box::new(f.clone()));
    let p = part_state();
    assert_eq!(b.merge(&p, &mut |_| {}).expect("nothing"), Merged::Nothing);
    assert_eq!(f.k().unmounts, 0);
    b.arm(&p, 1).expect("armed");
    assert_eq!(b.merge(&p, &mut |_| {}).expect("dropped"), Merged::Nothing);
    assert_eq!(f.k().unmounts, 1);
    assert!(f.k().mounted.is_none());
}

#[test]
fn a_different_device_size_is_refused() {
    let f = FakeF2fs::default();
    f.k().size = 2 << 30;
    let mut b = F2fsBackend::new(vec![entry()], Box::new(f));
    let e = b.verify_store(&part_state()).expect_err("refused");
    assert_eq!(e.kind(), crate::types::ErrorKind::Unsafe);
}

#[test]
fn start_needs_a_mounted_f2fs_with_checkpoints_on() {
    let f = FakeF2fs::default();
    f.k().size = 1 << 30;
    let b = F2fsBackend::new(vec![entry()], Box::new(f.clone()));
    let r = entry();
    assert_eq!(b.check_mounted(&r).expect_err("not mounted").kind(), crate::types::ErrorKind::Unavailable);
    f.k().mounted = Some(vec!["rw".into()]);
    assert_eq!(b.check_mounted(&r).expect("mounted"), 1 << 30);
    f.k().mounted = Some(vec!["checkpoint=disable:0".into()]);
    assert_eq!(b.check_mounted(&r).expect_err("disabled").kind(), crate::types::ErrorKind::WrongPhase);
}

#[test]
fn usage_reports_unusable_only_while_armed() {
    let f = FakeF2fs::default();
    f.k().unusable = 50 << 20;
    f.k().free = 50 << 20;
    let mut b = F2fsBackend::new(vec![entry()], Box::new(f.clone()));
    let p = part_state();
    assert_eq!(b.usage(&p).expect("usage"), None);
    b.arm(&p, 1).expect("armed");
    assert_eq!(b.usage(&p).expect("usage").and_then(|s| s.used_percent()), Some(50));
    assert!(b.stack("userdata")[0].contains("checkpoint=disable"), "{:?}", b.stack("userdata"));
}

// The life cycle through the engine, f2fs partition only, no dm.
mod engine_cycle {
    use super::*;
    use crate::backend::routed;
    use crate::config::Config;
    use crate::engine::{checkpointed_partitions, Engine};
    use crate::testing::HostDirs;
    use crate::types::Phase;

    struct Host {
        _dirs: HostDirs,
        config: Config,
        kernel: FakeF2fs,
    }

    fn host() -> Host {
        let dirs = HostDirs::new(
            "/dev/block/by-name/userdata {data} f2fs noatime,nosuid,nodev,discard wait,check,checkpoint=fs",
        );
        let config = dirs.config.clone();
        let kernel = FakeF2fs::default();
        kernel.k().size = 1 << 30;
        // Mounted normally when the checkpoint is started.
        kernel.k().mounted = Some(vec!["rw".into()]);
        Host { _dirs: dirs, config, kernel }
    }

    /// A boot: rewindd starts afresh; /data is not mounted yet.
    fn boot(h: &Host, id: &str) -> Engine {
        let fstab = checkpointed_partitions(&h.config);
        let routed =
            routed::select(&fstab, Err("device-mapper is not available: test".into()), Box::new(h.kernel.clone()))
                .expect("f2fs needs no dm");
        Engine::open_with(h.config.clone(), fstab, Ok(routed), id.to_string(), "reboot,test".into())
    }

    fn power_cut(h: &Host) {
        h.kernel.k().mounted = None;
    }

    #[test]
    fn supports_answers_file_from_the_fstab() {
        let h = host();
        let e = boot(&h, "b0");
        let s = e.supports();
        assert!(s.file && !s.block, "{s:?}");
        assert_eq!(e.status().unavailable_reason, None);
    }

    #[test]
    fn failed_attempts_are_counted_once_each_then_rolled_back() {
        let h = host();
        let e = boot(&h, "b0");
        e.start_checkpoint(Budget::Attempts(2), "ota", false).expect("started");
        assert_eq!(e.status().phase, Phase::Armed);
        assert_eq!(e.status().partitions[0].backend, BackendKind::F2fs);
        assert_eq!(h.kernel.k().calls.len(), 0, "start mounts nothing");
        power_cut(&h);

        for (n, id) in [(1, "b1"), (2, "b2")] {
            let e = boot(&h, id);
            let out = e.prepare_userdata(&mut |_| {}).expect("armed");
            assert_eq!((out.phase, out.attempt), (Phase::Checkpointing, n));
            assert_eq!(
                h.kernel.k().calls.last().map(|c| c.1.clone()).as_deref(),
                Some("discard,checkpoint=disable:0%")
            );
            // A second prepare in the same boot changes nothing.
            let again = e.prepare_userdata(&mut |_| {}).expect("same boot");
            assert_eq!(again.attempt, n);
            assert_eq!(h.kernel.k().calls.len(), n as usize);
            h.kernel.k().unusable = 8 << 20;
            h.kernel.k().free = 24 << 20;
            assert_eq!(e.status().partitions[0].unusable_bytes, 8 << 20);
            assert!(e.is_checkpointing() && !e.needs_rollback());
            power_cut(&h);
        }

        let e = boot(&h, "b3");
        let out = e.prepare_userdata(&mut |_| {}).expect("rolled back");
        assert_eq!(out.phase, Phase::RolledBack);
        assert!(e.needs_rollback());
        assert_eq!(h.kernel.k().calls.len(), 2, "no attempt left: init mounts /data normally");
        let kinds: Vec<String> = e.history().iter().map(|ev| ev.kind.clone()).collect();
        assert_eq!(kinds.iter().filter(|k| *k == "attempt").count(), 2, "{kinds:?}");
        assert!(kinds.contains(&"rollback-finished".to_string()));
    }

    #[test]
    fn commit_remounts_with_checkpoints_on_and_ends_the_checkpoint() {
        let h = host();
        boot(&h, "b0").start_checkpoint(Budget::Attempts(3), "ota", false).expect("started");
        power_cut(&h);
        let e = boot(&h, "b1");
        e.prepare_userdata(&mut |_| {}).expect("armed");
        e.commit("boot-completed").expect("committed");
        let k = h.kernel.k();
        let (flags, data) = k.calls.last().cloned().expect("remount");
        assert_eq!(data, "discard,checkpoint=enable");
        assert!(flags.contains(MsFlags::MS_REMOUNT));
        drop(k);
        assert_eq!(e.status().phase, Phase::Idle);
        assert!(!e.needs_rollback());
        // Next boot: idle, nothing mounted by rewind.
        let e = boot(&h, "b2");
        assert_eq!(e.prepare_userdata(&mut |_| {}).expect("idle").phase, Phase::Idle);
    }

    #[test]
    fn unusable_space_crosses_thresholds_then_the_abort_policy_acts() {
        let mut h = host();
        h.config.reboot_command = vec!["true".into()];
        boot(&h, "b0").start_checkpoint(Budget::Attempts(3), "ota", false).expect("started");
        power_cut(&h);
        let e = boot(&h, "b1");
        e.prepare_userdata(&mut |_| {}).expect("armed");
        h.kernel.k().unusable = 85 << 20;
        h.kernel.k().free = 15 << 20;
        e.poll_space().expect("poll");
        let details: Vec<String> =
            e.history().iter().filter(|ev| ev.kind == "space-threshold").map(|ev| ev.detail.clone()).collect();
        assert_eq!(
            details,
            vec!["f2fs unusable space 85% used (crossed 50%)", "f2fs unusable space 85% used (crossed 80%)"]
        );
        assert_eq!(e.status().partitions[0].unusable_bytes, 85 << 20);
        h.kernel.k().unusable = 96 << 20;
        h.kernel.k().free = 4 << 20;
        e.poll_space().expect("poll");
        let ab = e.history().into_iter().find(|ev| ev.kind == "aborted").expect("aborted");
        assert!(ab.detail.contains("f2fs unusable space 96% used"), "{}", ab.detail);
        // The reboot (here `true`) drops the attempt; the next boot arms attempt 2.
        power_cut(&h);
        let out = boot(&h, "b2").prepare_userdata(&mut |_| {}).expect("next attempt");
        assert_eq!(out.attempt, 2);
    }

    /// A power cut between the commit intent and the remount: the next
    /// boot finishes the commit and says whether f2fs had checkpointed.
    #[test]
    fn interrupted_commit_says_whether_the_attempt_survived() {
        for (flags, says) in [(CP_DISABLED_FLAG, "changes are lost"), (0x1, "changes are kept")] {
            let h = host();
            boot(&h, "b0").start_checkpoint(Budget::Attempts(3), "ota", false).expect("started");
            power_cut(&h);
            let e = boot(&h, "b1");
            e.prepare_userdata(&mut |_| {}).expect("armed");
            // The remount fails as if the cut came in the middle of it.
            h.kernel.k().answers = vec![Errno::EIO; 3];
            e.commit("boot-completed").expect_err("cut");
            assert_eq!(e.status().phase, Phase::Committing);
            power_cut(&h);
            h.kernel.k().cp_flags = flags;
            let e = boot(&h, "b2");
            assert_eq!(e.prepare_userdata(&mut |_| {}).expect("finished").phase, Phase::Idle);
            let c = e.history().into_iter().rev().find(|ev| ev.kind == "committed").expect("committed");
            assert!(c.detail.contains(says), "{}", c.detail);
        }
    }

    #[test]
    fn kernel_refusing_checkpoint_disable_is_recorded_and_not_counted() {
        let h = host();
        boot(&h, "b0").start_checkpoint(Budget::Attempts(3), "ota", false).expect("started");
        power_cut(&h);
        h.kernel.k().answers = vec![Errno::EINVAL, Errno::EINVAL];
        let e = boot(&h, "b1");
        let err = e.prepare_userdata(&mut |_| {}).expect_err("refused");
        assert_eq!(err.kind(), crate::types::ErrorKind::Unsafe);
        let s = e.status();
        assert_eq!(s.phase, Phase::Idle);
        assert!(s.protection_lost.as_deref().unwrap_or("").contains("refused checkpoint=disable"), "{s:?}");
        assert!(e.history().iter().any(|ev| ev.kind == "refused"));
        assert!(e.history().iter().all(|ev| ev.kind != "attempt"));
    }
}

#[test]
fn commit_gives_back_the_live_options_then_fewer() {
    let live = LiveMount {
        device: "254:0".into(),
        fs_type: "f2fs".into(),
        mount_options: vec!["rw".into(), "nosuid".into(), "nodev".into(), "noatime".into()],
        super_options: "rw,lazytime,background_gc=on,discard,alloc_mode=reuse,checkpoint=disable:0,checkpoint_merge"
            .split(',')
            .map(str::to_string)
            .collect(),
    };
    let mut f = FakeF2fs::default();
    let opt = enable_checkpoint(&mut f, "/dev/vda", "/data", &live, &["discard".into()]).expect("remounted");
    assert_eq!(opt, "background_gc=on,discard,alloc_mode=reuse,checkpoint_merge,checkpoint=enable");
    assert!(f.k().calls[0].0.contains(MsFlags::MS_REMOUNT | MsFlags::MS_LAZYTIME | MsFlags::MS_NOSUID));

    let mut f = FakeF2fs::default();
    f.k().answers = vec![Errno::EINVAL];
    assert_eq!(
        enable_checkpoint(&mut f, "/dev/vda", "/data", &live, &["discard".into()]).expect("fstab form"),
        "discard,checkpoint=enable"
    );

    let mut f = FakeF2fs::default();
    f.k().answers = vec![Errno::EINVAL, Errno::EINVAL];
    assert_eq!(
        enable_checkpoint(&mut f, "/dev/vda", "/data", &live, &["discard".into()]).expect("bare"),
        "checkpoint=enable"
    );

    let mut f = FakeF2fs::default();
    f.k().answers = vec![Errno::EIO; 3];
    let e = enable_checkpoint(&mut f, "/dev/vda", "/data", &live, &["discard".into()]).expect_err("fails");
    assert!(matches!(e, F2fsError::Remount { source: Errno::EIO, .. }));
    assert_eq!(f.k().calls.len(), 3);
}

/// The on-disk reader against a real mkfs.f2fs image (skipped when the
/// host has no mkfs.f2fs): a fresh filesystem's last checkpoint was
/// written with checkpointing on.
#[test]
fn checkpoint_flags_of_a_fresh_image() {
    let dir = tempfile::tempdir().expect("tmp");
    let img = dir.path().join("f2fs.img");
    std::fs::File::create(&img).and_then(|f| f.set_len(128 << 20)).expect("image");
    let Ok(st) = std::process::Command::new("mkfs.f2fs").arg("-q").arg("-f").arg(&img).status() else {
        eprintln!("no mkfs.f2fs here; skipped");
        return;
    };
    assert!(st.success(), "mkfs.f2fs failed");
    let flags = last_checkpoint_flags(&img).expect("readable");
    assert_eq!(flags & CP_DISABLED_FLAG, 0, "flags {flags:#x}");
    // mkfs writes a clean-unmount checkpoint.
    assert_ne!(flags & 0x1, 0, "CP_UMOUNT_FLAG expected in {flags:#x}");
    let junk = dir.path().join("junk.img");
    std::fs::write(&junk, vec![0u8; 8192]).expect("junk");
    assert!(matches!(last_checkpoint_flags(&junk), Err(F2fsError::Parse { .. })));
}
