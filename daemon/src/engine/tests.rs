//! The engine on a host: without device-mapper it opens and reports why;
//! with a recording backend, the full cycle runs on real COW files in a
//! temporary directory (real fallocate, zeroes, FIEMAP, immutable flag).

use super::*;
use crate::backend::fake::FakeBackend;
use crate::testing::HostDirs;
use crate::types::ErrorKind;

type Host = HostDirs;

fn host() -> Host {
    let mut h = HostDirs::new(
        "/dev/block/mapper/rewind-userdata {data} ext4 noatime wait,check,checkpoint=block,rewind_raw=/dev/vdb",
    );
    h.config.cow.min_bytes = 1 << 20;
    h.config.cow.max_bytes = 4 << 20;
    h.config.cow.file_max_bytes = 2 << 20;
    h
}

fn engine(h: &Host, boot: &str) -> Engine {
    Engine::open_with(
        h.config.clone(),
        checkpointed_partitions(&h.config),
        Ok(Box::new(FakeBackend::default())),
        boot.to_string(),
        "reboot,test".into(),
    )
}

#[test]
fn opens_without_device_mapper_and_refuses_to_act() {
    let h = host();
    let e = Engine::open_with(
        h.config.clone(),
        checkpointed_partitions(&h.config),
        Err("device-mapper is not available: no control node".into()),
        "b".into(),
        String::new(),
    );
    let s = e.status();
    assert!(s.unavailable_reason.as_deref().unwrap_or("").contains("device-mapper"));
    assert_eq!(s.phase, Phase::Idle);
    assert_eq!(
        e.start_checkpoint(Budget::Attempts(3), "x", false).expect_err("unavailable").kind(),
        ErrorKind::Unavailable
    );
    assert_eq!(e.prepare_userdata(&mut |_| {}).expect_err("unavailable").kind(), ErrorKind::Unavailable);
    assert_eq!(e.commit("x").expect_err("unavailable").kind(), ErrorKind::Unavailable);
    assert!(!e.supports().block);
    assert!(!e.needs_checkpoint(false) && !e.needs_rollback() && !e.is_checkpointing());
    e.poll_space().expect("no-op");
}

#[test]
fn missing_fstab_is_a_reason_not_a_failure() {
    let mut h = host();
    h.config.fstab = "/nonexistent/fstab".into();
    let e = engine(&h, "b");
    assert!(e.status().unavailable_reason.as_deref().unwrap_or("").contains("fstab"));
    assert!(!e.supports().block);
}

#[test]
fn broken_state_record_refuses_every_mutation() {
    let h = host();
    std::fs::create_dir_all(&h.config.metadata_dir).expect("dir");
    std::fs::write(h.config.metadata_dir.join("state"), b"rewind-state v1 sha256=00\n{}").expect("w");
    let e = engine(&h, "b");
    assert!(e.status().unavailable_reason.as_deref().unwrap_or("").contains("state record"));
    assert_eq!(e.start_checkpoint(Budget::Attempts(3), "x", false).expect_err("unsafe").kind(), ErrorKind::Unsafe);
    assert_eq!(e.prepare_userdata(&mut |_| {}).expect_err("unsafe").kind(), ErrorKind::Unsafe);
}

#[test]
fn bad_arguments_and_phases() {
    let h = host();
    let e = engine(&h, "b");
    assert_eq!(
        e.start_checkpoint(Budget::Attempts(0), "x", false).expect_err("zero").kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(e.commit("x").expect_err("idle").kind(), ErrorKind::WrongPhase);
    assert_eq!(e.abort("x", true, false).expect_err("idle").kind(), ErrorKind::WrongPhase);
}

fn cow_files(h: &Host) -> Vec<std::path::PathBuf> {
    crate::cowstore::stray_files(&h.data, "rewind")
}

/// start -> prepare (attempt 1) -> commit: COW files made, recorded,
/// then removed; history complete; events broadcast.
#[test]
fn full_cycle_on_real_files() {
    let h = host();
    let e = engine(&h, "boot-1");
    let mut rx = e.subscribe();
    let s = match e.start_checkpoint(Budget::Attempts(3), "ota", false) {
        Ok(s) => s,
        Err(err) if matches!(&err, Error::Cow(crate::cowstore::CowError::Sys { .. })) => {
            eprintln!("no inode flags on this host ({err}); skipped");
            return;
        }
        Err(err) => panic!("{}", error_chain(&err)),
    };
    assert_eq!(s.phase, Phase::Armed);
    assert_eq!(s.partitions[0].cow_bytes, 4 << 20);
    assert_eq!(cow_files(&h).len(), 2);
    assert!(e.needs_checkpoint(false) && !e.is_checkpointing());
    assert_eq!(
        e.start_checkpoint(Budget::Attempts(3), "again", false).expect_err("running").kind(),
        ErrorKind::WrongPhase
    );
    drop(e);

    // Reboot: the record is read back from disk.
    let e = engine(&h, "boot-2");
    let o = e.prepare_userdata(&mut |_| {}).expect("prepare");
    assert_eq!((o.phase, o.attempt, o.attempts), (Phase::Checkpointing, 1, 3));
    assert!(e.is_checkpointing());
    assert_eq!(e.status().attempt, 1);
    let took = e.commit("boot completed").expect("commit");
    assert!(took < Duration::from_secs(5));
    assert_eq!(e.status().phase, Phase::Idle);
    assert!(cow_files(&h).is_empty(), "COW files removed after commit");
    let kinds: Vec<String> = e.history().iter().map(|x| x.kind.clone()).collect();
    assert_eq!(kinds, ["started", "attempt", "commit-begun", "committed", "cleanup"]);
    let mut got = 0;
    while let Ok(n) = rx.try_recv() {
        if matches!(n, Notice::Event(_)) {
            got += 1;
        }
    }
    assert_eq!(got, 1, "the first engine broadcast 'started'");
}

#[test]
fn abort_without_retry_then_prepare_rolls_back_and_cleans_up_when_mounted() {
    let h = host();
    let e = engine(&h, "boot-1");
    if e.start_checkpoint(Budget::Attempts(2), "ota", false).is_err() {
        eprintln!("cannot create COW files here; skipped");
        return;
    }
    drop(e);
    let e = engine(&h, "boot-2");
    e.prepare_userdata(&mut |_| {}).expect("attempt 1");
    let s = e.abort("health check failed", false, false).expect("abort");
    assert_eq!(s.phase, Phase::Checkpointing);
    assert!(e.needs_rollback());
    drop(e);
    let e = engine(&h, "boot-3");
    let o = e.prepare_userdata(&mut |_| {}).expect("rollback");
    assert_eq!(o.phase, Phase::RolledBack);
    assert!(e.needs_rollback());
    assert_eq!(cow_files(&h).len(), 2, "kept until the filesystem is mounted");
    e.poll_space().expect("poll");
    assert!(cow_files(&h).is_empty(), "removed by the space watch once mounted");
    // A new checkpoint can start after a rollback.
    e.start_checkpoint(Budget::Attempts(1), "retry the update", false).expect("start again");
}

#[test]
fn status_reports_bytes_written_into_free_space_only_while_this_boots_attempt_is_armed() {
    use crate::backend::fake::FreeWrittenProbe;
    use std::sync::{Arc, Mutex};
    let h = host();
    let e = engine(&h, "boot-1");
    if e.start_checkpoint(Budget::Attempts(2), "ota", false).is_err() {
        eprintln!("cannot create COW files here; skipped");
        return;
    }
    drop(e);
    let runs = vec![(10u64, 5u64), (40, 2)];
    // A map the record accepts: chunks cover the fake's raw size.
    let chunk_bytes = u64::from(h.config.cow.chunk_sectors) * 512;
    let map = FreeMap::Mapped {
        chunk_bytes,
        chunks: (1u64 << 50).div_ceil(chunk_bytes),
        free_chunks_found: 7,
        runs_sha256: crate::state::runs_hash(&runs),
        runs,
        taken_at_attempt: 1,
        read_ms: 1,
        sealed_at_unix: None,
    };
    let probe = Arc::new(Mutex::new(FreeWrittenProbe::default()));
    let open = |boot: &str| {
        let fake = FakeBackend { free_map: Some(map.clone()), free_written: Arc::clone(&probe), ..Default::default() };
        Engine::open_with(
            h.config.clone(),
            checkpointed_partitions(&h.config),
            Ok(Box::new(fake)),
            boot.to_string(),
            String::new(),
        )
    };
    let probe_set = |answer: std::result::Result<u64, String>| probe.lock().expect("probe").answer = answer;
    let reads = || probe.lock().expect("probe").reads;
    let written = |s: &StatusReport| {
        let m = s.partitions[0].free_map.clone().expect("free map reported");
        (m.free_written_bytes, m.free_written_unknown)
    };

    let e = open("boot-2");
    e.prepare_userdata(&mut |_| {}).expect("attempt 1");
    probe_set(Ok(64 << 20));
    assert_eq!(written(&e.status()), (Some(64 << 20), None));
    // Both runs fit under cow.free_counted_runs: the figure covers all.
    let m = e.status().partitions[0].free_map.clone().expect("free map");
    assert_eq!((m.segments, m.free_written_segments, m.free_written_chunks), (2, 2, 7));
    // The space watch publishes a report every poll: it reuses the last
    // reading instead of reading every region again.
    let before = reads();
    probe_set(Ok(65 << 20));
    e.poll_space().expect("poll");
    assert_eq!(reads(), before, "the space watch does not read the counters");
    assert_eq!(written(&e.status()), (Some(65 << 20), None), "status reads anew");
    assert_eq!(reads(), before + 1);
    // A WatchStatus tick reuses a reading younger than ten times what it
    // took (here 30 ms: reused for 300 ms); GetStatus reads anyway.
    probe.lock().expect("probe").delay = Duration::from_millis(30);
    e.status();
    let before = reads();
    probe_set(Ok(66 << 20));
    assert_eq!(written(&e.watch_status()), (Some(65 << 20), None), "a tick reuses the fresh reading");
    assert_eq!(reads(), before);
    assert_eq!(written(&e.status()), (Some(66 << 20), None));
    std::thread::sleep(Duration::from_millis(400));
    probe_set(Ok(67 << 20));
    assert_eq!(written(&e.watch_status()), (Some(67 << 20), None), "an old reading is read again");
    probe.lock().expect("probe").delay = Duration::ZERO;
    // A failed read is "unknown" with the reason, never 0.
    probe_set(Err("no dm-stats regions".into()));
    assert_eq!(written(&e.status()), (None, Some("no dm-stats regions".into())));
    let m = e.status().partitions[0].free_map.clone().expect("free map");
    assert_eq!((m.free_written_segments, m.free_written_chunks), (0, 0), "no figure, nothing covered");
    drop(e);

    // A later boot before its prepare: the armed attempt is not this
    // boot's, so nothing is reported (and nothing asked).
    let e = open("boot-3");
    let before = reads();
    assert_eq!(written(&e.status()), (None, None));
    assert_eq!(reads(), before);
    // After a commit, nothing either.
    e.prepare_userdata(&mut |_| {}).expect("attempt 2");
    probe_set(Ok(1 << 20));
    assert_eq!(written(&e.status()), (Some(1 << 20), None));
    e.commit("boot completed").expect("commit");
    let s = e.status();
    assert!(s.partitions[0].free_map.as_ref().is_none_or(|m| m.free_written_bytes.is_none()), "{s:?}");
}
