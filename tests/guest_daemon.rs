//! rewindd's core on a real kernel (QEMU guest, Debian 6.1, TCG): FIEMAP,
//! the dm-snapshot stack, rollback, commit, refusals, power cuts, overflow.
//! Each test states its outcome; the checks use witnesses rewindd does not
//! share (filefrag, lsattr, dmsetup, the host's view of the disk image,
//! the guest's manifest tool).

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use rewind_daemon::state::{decode, CowFile, State};
use rewind_harness::scenario::{checks, Ctx, Options, ScenarioError};
use rewind_harness::{stage, BootPlan, Failure};

/// The COW store lives in /data/rewind; it is rewindd's, not user data.
const EXCLUDE: &[&str] = &["rewind"];

/// Runs `body` on a fresh guest (the harness prints the console between
/// markers on failure) and panics with the report if a check failed.
fn run(name: &str, body: impl FnOnce(&mut Ctx) -> Result<(), ScenarioError>) {
    let report = rewind_harness::scenario::run_fn(name, &Options::default(), body).expect("guest kit and disks");
    if !report.passed {
        panic!("{}", report.summary());
    }
    eprint!("{}", report.summary());
}

/// The state record, read and checked with rewindd's own decoder (header,
/// checksum, consistency).
fn state(cx: &mut Ctx) -> Result<State, ScenarioError> {
    let text = cx.exec_checked("cat /metadata/rewind/state")?;
    decode(text.as_bytes()).map_err(|e| other(format!("state record: {e}")))
}

fn other(msg: String) -> ScenarioError {
    ScenarioError::Target(rewind_harness::TargetError::Other(msg))
}

fn history(cx: &mut Ctx) -> Result<String, ScenarioError> {
    Ok(cx.exec("rewindctl history")?.stdout)
}

fn start(cx: &mut Ctx, attempts: u32) -> Result<(), ScenarioError> {
    let out = cx.exec(&format!("rewindctl start --attempts {attempts} --reason guest-test"))?;
    cx.require("rewindctl start succeeds", out.success(), format!("{}{}", out.stdout, out.stderr))
}

/// `filefrag -v -b4096` rows as (logical, physical, length) in blocks,
/// contiguous rows merged.
fn parse_filefrag(text: &str) -> Vec<(u64, u64, u64)> {
    let mut out: Vec<(u64, u64, u64)> = Vec::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split(':').map(str::trim).collect();
        if cols.len() < 4 || cols[0].parse::<u64>().is_err() {
            continue;
        }
        let l = cols[1].split("..").next().and_then(|s| s.trim().parse::<u64>().ok());
        let p = cols[2].split("..").next().and_then(|s| s.trim().parse::<u64>().ok());
        let n = cols[3].parse::<u64>().ok();
        if let (Some(l), Some(p), Some(n)) = (l, p, n) {
            match out.last_mut() {
                Some(x) if x.0 + x.2 == l && x.1 + x.2 == p => x.2 += n,
                _ => out.push((l, p, n)),
            }
        }
    }
    out
}

/// sha256 of the userdata image with the COW files' blocks zeroed (they
/// hold the store's own data, which is not userdata).
fn image_hash_outside(image: &Path, cow: &[CowFile]) -> String {
    use sha2::{Digest, Sha256};
    let mut ranges: Vec<(u64, u64)> =
        cow.iter().flat_map(|f| f.extents.iter().map(|e| (e.physical, e.physical + e.length))).collect();
    ranges.sort_unstable();
    let mut f = std::fs::File::open(image).expect("image");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    loop {
        let n = f.read(&mut buf).expect("read image");
        if n == 0 {
            break;
        }
        for (a, b) in &ranges {
            let (s, e) = ((*a).max(pos), (*b).min(pos + n as u64));
            if s < e {
                buf[(s - pos) as usize..(e - pos) as usize].fill(0);
            }
        }
        h.update(&buf[..n]);
        pos += n as u64;
    }
    hex::encode(h.finalize())
}

fn userdata_image(cx: &mut Ctx) -> std::path::PathBuf {
    cx.target.artifacts_dir().join("userdata.img")
}

/// The map rewindd recorded for each COW file is what filefrag reads, the
/// files are immutable and zero-filled, and the record's checksum holds.
#[test]
fn guest_fiemap_map_matches_filefrag() {
    run("guest-fiemap-filefrag", |cx| {
        cx.boot_ready(&BootPlan::rewind())?;
        start(cx, 1)?;
        let st = state(cx)?;
        let files = st.partitions.first().map(|p| p.cow_files.clone()).unwrap_or_default();
        cx.require("a COW file is recorded", !files.is_empty(), format!("{st:?}"))?;
        for f in &files {
            let ff = cx.exec_checked(&format!("filefrag -v -b4096 {}", f.path))?;
            let theirs = parse_filefrag(&ff);
            let ours: Vec<(u64, u64, u64)> =
                f.extents.iter().map(|e| (e.logical / 4096, e.physical / 4096, e.length / 4096)).collect();
            cx.check_eq(&format!("{}: recorded extents equal filefrag's", f.path), theirs, ours);
            let attrs = cx.exec_checked(&format!("lsattr {}", f.path))?;
            cx.check(
                &format!("{} is immutable", f.path),
                attrs.split_whitespace().next().unwrap_or("").contains('i'),
                attrs,
            );
            let head =
                cx.exec_checked(&format!("dd if={} bs=4096 count=1 2>/dev/null | od -An -tx1 | sort -u", f.path))?;
            cx.check_eq(
                &format!("{}: first 4 KiB are zero", f.path),
                "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 *".to_string(),
                head.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" "),
            );
        }
        // Cancel before the first boot: the files go away at once.
        cx.exec_checked("rewindctl commit --reason cancel")?;
        let left = checks::cow_files_left(cx.target)?.len();
        cx.check_eq("cancelled checkpoint leaves no COW file", 0, left);
        cx.shutdown()?;
        Ok(())
    });
}

/// start -> the new system writes and dies -> the next boot rolls back:
/// every byte of the disk outside the COW store's blocks is as it was when
/// the checkpoint was armed (host-side image hash), the file tree equals
/// the baseline, and the COW files are gone once /data is mounted.
#[test]
fn guest_rollback_restores_every_byte() {
    run("guest-rollback-bytes", |cx| {
        cx.boot_ready(&BootPlan::rewind())?;
        cx.run_baseline()?;
        start(cx, 1)?;
        let cow = state(cx)?.partitions.first().map(|p| p.cow_files.clone()).unwrap_or_default();
        let baseline = checks::manifest(cx.target, "/data", EXCLUDE)?;
        cx.shutdown()?;
        let image = userdata_image(cx);
        let before = image_hash_outside(&image, &cow);

        cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
        cx.exec_checked("dd if=/dev/urandom of=/data/extra.bin bs=1M count=20 2>/dev/null; sync")?;
        let changed = checks::manifest(cx.target, "/data", EXCLUDE)?;
        cx.changed_manifest("the attempt changed userdata", &baseline, &changed);
        cx.target.power_cut()?;

        // Rollback without mounting /data: the raw disk must be the baseline.
        cx.boot_ready(&BootPlan::rewind().without_data())?;
        let needs = cx.exec("rewindctl needs-rollback")?;
        cx.check_eq("needs-rollback is true", 0, needs.status);
        cx.shutdown()?;
        let after = image_hash_outside(&image, &cow);
        cx.check_eq("disk image outside the COW blocks is byte-identical to the baseline", before, after);

        cx.boot_ready(&BootPlan::rewind())?;
        // rewindd deletes the COW files once /data is mounted; wait, so the
        // manifest does not race the deletion.
        let left = checks::wait_cow_gone(cx.target)?.len();
        cx.check_eq("COW files removed after the final rollback", 0, left);
        let now = checks::manifest(cx.target, "/data", EXCLUDE)?;
        cx.same_manifest("userdata is exactly the baseline", &baseline, &now);
        checks::check_phase(cx, "phase is rolled-back", "rolled-back")?;
        cx.shutdown()?;
        Ok(())
    });
}

/// start -> the new system writes and commits (live): every change stays,
/// the stack is back to linear without a reboot, the COW files are
/// removed, and the next boot is idle with the same data.
#[test]
fn guest_commit_keeps_changes_and_removes_cow_files() {
    run("guest-commit", |cx| {
        cx.boot_ready(&BootPlan::rewind())?;
        cx.run_baseline()?;
        start(cx, 2)?;
        cx.shutdown()?;
        cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
        let table = checks::dmsetup(cx.target, "table")?;
        cx.check("the attempt runs on snapshot-origin", table.contains("snapshot-origin"), table);
        cx.exec_checked("dd if=/dev/urandom of=/data/extra.bin bs=1M count=8 2>/dev/null; sync")?;
        let out = cx.exec("rewindctl commit --reason guest-test")?;
        cx.require("commit succeeds", out.success(), format!("{}{}", out.stdout, out.stderr))?;
        let changed = checks::manifest(cx.target, "/data", EXCLUDE)?;
        let table = checks::dmsetup(cx.target, "table")?;
        cx.check(
            "after the live commit only rewind-userdata (linear) is left",
            table.lines().filter(|l| l.starts_with("rewind-")).count() == 1 && table.contains("linear"),
            table,
        );
        let left = checks::cow_files_left(cx.target)?.len();
        cx.check_eq("COW files removed by the commit", 0, left);
        let hist = history(cx)?;
        cx.check("history records the commit", hist.contains("committed"), hist.clone());
        if let Some(ms) = hist.split("live, ").nth(1).and_then(|s| s.split(' ').next()) {
            eprintln!("[guest-commit] commit latency: {ms} ms");
        }
        cx.shutdown()?;
        cx.boot_ready(&BootPlan::rewind())?;
        let now = checks::manifest(cx.target, "/data", EXCLUDE)?;
        cx.same_manifest("committed data survives the reboot", &changed, &now);
        checks::check_phase(cx, "phase is idle", "idle")?;
        cx.shutdown()?;
        Ok(())
    });
}

/// A COW file whose blocks moved between boots (rewritten behind rewindd's
/// back) is detected before use: the attempt is not armed, the refusal is
/// recorded and reported, and the device still boots with /data mounted.
#[test]
fn guest_changed_extents_are_refused() {
    run("guest-extents-changed", |cx| {
        cx.boot_ready(&BootPlan::rewind())?;
        start(cx, 2)?;
        let f = "/data/rewind/cow.0000";
        cx.exec_checked(&format!(
            "chattr -i {f} && cp {f} {f}.new && rm {f} && mv {f}.new {f} && chattr +i {f} && sync"
        ))?;
        cx.shutdown()?;
        let rec = cx.boot(&BootPlan::rewind())?;
        cx.require("the device still boots", rec.is_ready(), format!("last stage {}", rec.last_stage()))?;
        cx.check("prepare-userdata reported an error", !rec.errors.is_empty(), format!("{:?}", rec.errors));
        let st = checks::check_phase(cx, "phase is idle (not armed)", "idle")?;
        let lost = st["protection_lost_reason"].as_str().unwrap_or("").to_string();
        cx.check("status reports the changed map", lost.contains("changed"), lost);
        let hist = history(cx)?;
        cx.check("history records the refusal", hist.contains("refused"), hist);
        let table = checks::dmsetup(cx.target, "table")?;
        cx.check("no snapshot was loaded", !table.contains("snapshot"), table);
        let mounted = cx.exec_checked("cat /proc/mounts")?;
        cx.check("/data is mounted", mounted.contains(" /data "), "");
        cx.shutdown()?;
        Ok(())
    });
}

/// A power cut in the middle of the final merge: the next boot finds the
/// rollback intent, finishes the merge and ends at the baseline, byte for
/// byte outside the COW blocks. The cut is timed from the prepare-userdata
/// marker; a cut that missed the merge (before or after it) is retried
/// with a new checkpoint and another delay.
#[test]
fn guest_merge_interrupted_by_power_cut_resumes() {
    let options = Options { userdata_mib: Some(1024), ..Options::default() };
    let report = rewind_harness::scenario::run_fn("guest-merge-power-cut", &options, |cx| {
        cx.boot_ready(&BootPlan::rewind())?;
        cx.run_baseline()?;
        let mut interrupted = None;
        let mut last = None;
        for delay_ms in [1800u64, 2400, 1300, 3000, 900] {
            // A fresh checkpoint for each try (the guest is running, /data
            // mounted, phase idle or rolled back).
            start(cx, 1)?;
            let cow = state(cx)?.partitions.first().map(|p| p.cow_files.clone()).unwrap_or_default();
            let cow_mib = cow.iter().map(|f| f.size_bytes).sum::<u64>() >> 20;
            let baseline = checks::manifest(cx.target, "/data", EXCLUDE)?;
            cx.shutdown()?;
            let image = userdata_image(cx);
            let before = image_hash_outside(&image, &cow);
            cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
            // Enough changed chunks for the merge to take seconds under TCG.
            let mib = cow_mib * 3 / 4;
            cx.exec_checked(&format!("dd if=/dev/urandom of=/data/big.bin bs=1M count={mib} 2>/dev/null; sync"))?;
            cx.target.power_cut()?;
            cx.boot(
                &BootPlan::rewind().with_failure(Failure::power_cut_at_after(
                    stage::PREPARE_USERDATA,
                    Duration::from_millis(delay_ms),
                )),
            )?;
            let n = cx.target.boots().len();
            let log = std::fs::read_to_string(
                cx.target.artifacts_dir().join(format!("share/logs/boot-{n}/prepare-userdata.log")),
            )
            .unwrap_or_default();
            cx.say(&format!("cut at +{delay_ms} ms; prepare log: {}", log.trim().replace('\n', " | ")));
            last = Some((before, cow, baseline));
            if log.contains("merge:") && !log.contains("userdata prepared") {
                interrupted = Some(delay_ms);
                break;
            }
            // Missed: finish this round and try another delay.
            cx.boot_ready(&BootPlan::rewind())?;
        }
        cx.require("a power cut landed inside the merge", interrupted.is_some(), "no delay hit the merge")?;
        let Some((before, cow, baseline)) = last else { return Ok(()) };
        let image = userdata_image(cx);
        cx.boot_ready(&BootPlan::rewind().without_data())?;
        let n = cx.target.boots().len();
        let rlog = std::fs::read_to_string(cx.target.artifacts_dir().join(format!("share/logs/boot-{n}/rewindd.log")))
            .unwrap_or_default();
        cx.check(
            "the next boot found the rollback intent",
            rlog.contains("phase RollingBack"),
            rlog.lines().find(|l| l.contains("ready: phase")).unwrap_or("").to_string(),
        );
        let hist = history(cx)?;
        if let Some(line) = hist.lines().rfind(|l| l.contains("rollback-finished")) {
            cx.say(&format!("resumed merge: {}", line.trim()));
        }
        checks::check_phase(cx, "phase is rolled-back", "rolled-back")?;
        cx.shutdown()?;
        let after = image_hash_outside(&image, &cow);
        cx.check_eq("disk image outside the COW blocks equals the baseline", before, after);
        cx.boot_ready(&BootPlan::rewind())?;
        let left = checks::wait_cow_gone(cx.target)?.len();
        cx.check_eq("COW files removed after the final rollback", 0, left);
        let now = checks::manifest(cx.target, "/data", EXCLUDE)?;
        cx.same_manifest("userdata is exactly the baseline", &baseline, &now);
        cx.exec_checked("umount /data")?;
        let fs = cx.target.fs();
        let (clean, out) = checks::fsck(cx.target, fs, "/dev/block/mapper/rewind-userdata")?;
        cx.check("fsck clean after the resumed merge", clean, out);
        cx.shutdown()?;
        Ok(())
    })
    .expect("guest kit and disks");
    if !report.passed {
        panic!("{}", report.summary());
    }
    eprint!("{}", report.summary());
}

/// The attempt writes more than the COW store holds: the kernel invalidates
/// the snapshot, rewindd detects it, records that protection is lost and
/// commits (the origin kept every write), never silently.
#[test]
fn guest_cow_overflow_is_detected_and_reported() {
    run("guest-cow-overflow", |cx| {
        cx.boot_ready(&BootPlan::rewind())?;
        start(cx, 2)?;
        let cow_bytes = state(cx)?.partitions.first().map(|p| p.cow_bytes()).unwrap_or(0);
        cx.shutdown()?;
        cx.boot_ready(&BootPlan::rewind())?;
        // rewindd with a policy that never acts before the store is full,
        // so the overflow itself is what gets detected.
        cx.exec_checked(
            "printf '%s\\n' 'fstab = \"/etc/fstab.rewind\"' 'metadata_dir = \"/metadata/rewind\"' \
             'socket = \"/dev/socket/rewindd\"' 'reboot_command = [\"true\"]' '[space]' \
             'abort_at_percent = 100' 'poll_interval_ms = 200' > /tmp/overflow.toml",
        )?;
        cx.exec_checked("kill $(pidof rewindd); sleep 1; rm -f /dev/socket/rewindd")?;
        cx.exec_checked("setsid rewindd --config /tmp/overflow.toml > /tmp/rewindd-overflow.log 2>&1 < /dev/null &")?;
        cx.exec_checked("i=0; while [ ! -S /dev/socket/rewindd ] && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done; test -S /dev/socket/rewindd")?;
        let mib = cow_bytes / (1 << 20) + 64;
        cx.exec_checked(&format!("dd if=/dev/urandom of=/data/flood.bin bs=1M count={mib} 2>/dev/null; sync"))?;
        let t = Instant::now();
        let mut hist = String::new();
        while t.elapsed() < Duration::from_secs(30) {
            hist = history(cx)?;
            if hist.contains("overflow") && hist.contains("committed") {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        cx.check("history records the overflow", hist.contains("overflow"), hist.clone());
        let st = checks::status(cx)?;
        let lost = st["protection_lost_reason"].as_str().unwrap_or("").to_string();
        cx.check("status reports protection lost", lost.contains("overflow"), lost);
        cx.check_eq("phase is idle (committed)", "idle".to_string(), checks::phase(&st));
        let dmesg = cx.exec_checked("dmesg")?;
        cx.check("the kernel invalidated the snapshot", dmesg.contains("Invalidating snapshot"), "");
        let size = cx.exec_checked("stat -c %s /data/flood.bin")?;
        cx.check_eq("the origin kept every write", (mib << 20).to_string(), size.trim().to_string());
        cx.shutdown()?;
        Ok(())
    });
}

/// The default space policy: the COW store fills slowly; rewindd reports
/// the 50 % and 80 % thresholds, and at 95 % records an abort and reboots
/// (before protection could be lost). The next boot discards the attempt
/// (merge) and arms the next one; nothing the attempt wrote survives.
#[test]
fn guest_space_abort_policy_reboots_and_discards_the_attempt() {
    run("guest-space-abort", |cx| {
        cx.boot_ready(&BootPlan::rewind())?;
        cx.run_baseline()?;
        start(cx, 3)?;
        let cow_bytes = state(cx)?.partitions.first().map(|p| p.cow_bytes()).unwrap_or(0);
        let baseline = checks::manifest(cx.target, "/data", EXCLUDE)?;
        cx.shutdown()?;
        cx.boot_ready(&BootPlan::rewind())?;
        // ~2 MiB/s, synced: the 95-100 % window lasts ~3 s, seen by a 1 s poll.
        let mib = cow_bytes / (1 << 20) + 32;
        cx.exec_checked(&format!(
            "setsid sh -c 'i=0; while [ $i -lt {mib} ]; do dd if=/dev/urandom of=/data/fill.$i bs=1M count=1 2>/dev/null; sync; usleep 500000; i=$((i+1)); done' > /dev/null 2>&1 < /dev/null &"
        ))?;
        let rec = cx.target.wait_end(Duration::from_secs(240))?;
        cx.check_eq(
            "rewindd rebooted the attempt",
            Some(rewind_harness::failure::BootEnd::GuestReset),
            rec.ended.clone(),
        );
        cx.boot_ready(&BootPlan::rewind())?;
        let st = checks::status(cx)?;
        cx.check_eq("the next attempt is armed", 2, st["attempt"].as_u64().unwrap_or(0));
        let hist = history(cx)?;
        cx.check("the 50 % threshold was reported", hist.contains("crossed 50%"), hist.clone());
        cx.check("the 80 % threshold was reported", hist.contains("crossed 80%"), hist.clone());
        cx.check(
            "the abort at 95 % was recorded",
            hist.contains("aborted") && hist.contains("abort at 95%"),
            hist.clone(),
        );
        cx.check("protection was never lost", !hist.contains("overflow"), hist);
        let now = checks::manifest(cx.target, "/data", EXCLUDE)?;
        cx.same_manifest("the aborted attempt left nothing behind", &baseline, &now);
        cx.shutdown()?;
        Ok(())
    });
}

/// `rewind-*` entries of /dev/mapper as ("link"|"node"|"other", name).
fn mapper_entries(cx: &mut Ctx) -> Result<Vec<(String, String)>, ScenarioError> {
    let out = cx.exec_checked(
        "for f in /dev/mapper/rewind-*; do [ -e \"$f\" ] || [ -L \"$f\" ] || continue; \
         if [ -L \"$f\" ]; then k=link; elif [ -b \"$f\" ]; then k=node; else k=other; fi; \
         echo \"$k ${f##*/}\"; done",
    )?;
    Ok(out.lines().filter_map(|l| l.split_once(' ').map(|(k, n)| (k.to_string(), n.to_string()))).collect())
}

/// Every rewind device present is reachable through a link the ueventd
/// stand-in made (none is a node of rewindd's), and exactly `names` exist.
fn check_ueventd_links(cx: &mut Ctx, when: &str, names: &[&str]) -> Result<(), ScenarioError> {
    let entries = mapper_entries(cx)?;
    let detail = format!("{entries:?}");
    cx.check(
        &format!("{when}: every /dev/mapper/rewind-* entry is ueventd's link, none rewindd's node"),
        !entries.is_empty() && entries.iter().all(|(k, _)| k == "link"),
        detail.clone(),
    );
    let mut got: Vec<&str> = entries.iter().map(|(_, n)| n.as_str()).collect();
    got.sort_unstable();
    let mut want = names.to_vec();
    want.sort_unstable();
    cx.check_eq(&format!("{when}: rewind devices present"), want, got);
    Ok(())
}

/// Android's node handling (`dev_nodes = "ueventd"`, what
/// android/rewindd.toml sets): a ueventd stand-in (busybox `uevent` in the
/// guest init) links /dev/mapper/<name> to devtmpfs's dm-N and rewindd
/// must wait for those links instead of making nodes. A checkpoint arms,
/// the attempt is cut, the rollback merges, and userdata is the baseline;
/// links of removed devices are gone with them.
#[test]
fn guest_ueventd_made_nodes_are_waited_for() {
    run("guest-ueventd-nodes", |cx| {
        let boot_dir = cx.target.artifacts_dir().join("share/boot");
        std::fs::write(boot_dir.join("ueventd"), b"")
            .and_then(|()| std::fs::write(boot_dir.join("rewindd.extra.toml"), "dev_nodes = \"ueventd\"\n"))
            .map_err(|e| other(format!("{}: {e}", boot_dir.display())))?;

        cx.boot_ready(&BootPlan::rewind())?;
        let conf = cx.exec_checked("cat /system/etc/rewindd.toml")?;
        cx.require("rewindd runs with dev_nodes = \"ueventd\"", conf.contains("dev_nodes = \"ueventd\""), conf)?;
        check_ueventd_links(cx, "idle", &["rewind-userdata"])?;
        cx.run_baseline()?;
        start(cx, 1)?;
        let baseline = checks::manifest(cx.target, "/data", EXCLUDE)?;
        cx.shutdown()?;

        cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
        check_ueventd_links(cx, "attempt 1", &["rewind-userdata", "rewind-userdata-cow", "rewind-userdata-snap"])?;
        let changed = checks::manifest(cx.target, "/data", EXCLUDE)?;
        cx.changed_manifest("the attempt changed userdata", &baseline, &changed);
        cx.target.power_cut()?;

        cx.boot_ready(&BootPlan::rewind())?;
        let left = checks::wait_cow_gone(cx.target)?.len();
        cx.check_eq("COW files removed after the rollback", 0, left);
        checks::check_phase(cx, "phase is rolled-back", "rolled-back")?;
        let now = checks::manifest(cx.target, "/data", EXCLUDE)?;
        cx.same_manifest("userdata is exactly the baseline", &baseline, &now);
        check_ueventd_links(cx, "after the rollback", &["rewind-userdata"])?;
        cx.shutdown()?;
        Ok(())
    });
}
