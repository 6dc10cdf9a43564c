//! Metadata encryption stacked on rewind-userdata, end to end.
//!
//! On Android with metadata encryption, vold stacks dm-default-key on top of
//! `/dev/block/mapper/rewind-userdata` inside `mount_all`, after rewindd's
//! `prepare-userdata`, and /data is mounted from that upper device. The raw
//! partition under rewind's stack then holds ciphertext and rewindd never
//! has the key: it must still arm, roll back and commit, checking its COW map
//! from raw blocks instead of mounting anything.
//!
//! The guest emulates that stack (`GuestConfig::with_metadata_encryption`):
//! its init puts dm-crypt aes-xts-plain64 (AES-256-XTS, the cipher of
//! Android's metadata encryption, a fresh key per run) over whatever /data
//! comes from, and userdata is formatted inside that layer at the first
//! boot. These scenarios need the option (`Needs::metadata_encryption`)
//! and check, besides the data
//! (manifests, `e2fsck -fn` through the crypt layer), that the stack really
//! was encrypted (no ext4 magic on the raw partition, only inside the crypt
//! device) and that rewindd verified its COW map from the raw device without
//! a verify device or a mount.

use rewind_daemon::types::EventKind;

use super::checks::{self, data_manifest, RAW, TOP, TOP_NAME};
use super::{Ctx, Needs, Scenario, ScenarioError};
use crate::failure::BootEnd;
use crate::guest::{CRYPT_DEVICE, GUEST_CRYPT_KEY};
use crate::manifest::Manifest;
use crate::plan::{stage, BootPlan, Failure, FsType};
use crate::target::{BootRecord, TargetError};

pub static ENCRYPTED: &[Scenario] = &[
    Scenario {
        name: "metadata-encryption",
        summary: "dm-crypt (aes-xts-plain64) stacked on rewind-userdata, /data mounted from it: start, three failed attempts, rollback to the baseline exactly; raw partition holds only ciphertext; COW map verified from raw blocks, no mount",
        needs: Needs { metadata_encryption: true, ..Needs::DAEMON },
        run: metadata_encryption,
    },
    Scenario {
        name: "metadata-encryption-commit",
        summary: "dm-crypt stacked on rewind-userdata: an attempt commits at boot-completed, two more boots keep its data, fsck clean through the crypt layer",
        needs: Needs { metadata_encryption: true, ..Needs::DAEMON },
        run: metadata_encryption_commit,
    },
    Scenario {
        name: "metadata-encryption-free-map",
        summary: "dm-crypt on rewind-userdata: the clean shutdown after start seals the free map read through the crypt layer; the attempt is armed over it from ciphertext (a 32 MiB new file adds < 1 % to the COW store) and rolls back exactly; a second checkpoint whose baseline is mounted again after its seal is armed protecting every chunk, says why, copies a new file, and rolls back exactly",
        needs: Needs { metadata_encryption: true, ..Needs::DAEMON },
        run: metadata_encryption_free_map,
    },
];

/// Where the guest init links the crypt device (guest/init.sh).
const CRYPT: &str = "/dev/block/mapper/userdata-crypt";
/// What rewindd logs when it checked the COW map by reading the raw
/// partition (no verify device, no mount).
const VERIFIED_RAW: &str = "COW map verified from the raw device";

/// The guest must really have the crypt layer, or every check below would
/// test a plain stack.
fn require_crypt_option(cx: &mut Ctx) -> Result<(), ScenarioError> {
    let on = cx.options.metadata_encryption && cx.target.fs() == FsType::Ext4;
    cx.require(
        "the guest emulates metadata encryption (ext4 over dm-crypt)",
        on,
        format!("metadata_encryption {}, fs {}", cx.options.metadata_encryption, cx.target.fs()),
    )
}

fn require_crypt_up(cx: &mut Ctx, rec: &BootRecord) -> Result<(), ScenarioError> {
    cx.require(
        &format!("boot {}: the crypt layer came up before /data was mounted", rec.index),
        rec.reached(stage::CRYPT_UP) && rec.reached(stage::DATA_MOUNTED) && rec.errors.is_empty(),
        format!("stages {}; guest errors {:?}", rec.stages.join(","), rec.errors),
    )
}

/// Whether `device` carries the ext4 magic (0x53 0xef at byte 0x438), read
/// past the page cache (the raw partition is written through dm, not
/// through its own cache).
fn ext4_magic(cx: &mut Ctx, device: &str) -> Result<(bool, String), ScenarioError> {
    let out = cx.exec_checked(&format!(
        "sync; echo 3 > /proc/sys/vm/drop_caches; dd if={device} bs=4096 count=1 2>/dev/null | od -An -tx1 -j 1080 -N 2"
    ))?;
    let bytes: Vec<&str> = out.split_whitespace().collect();
    Ok((bytes == ["53", "ef"], bytes.join(" ")))
}

/// The raw partition (and, in a rewind boot, rewind-userdata: what rewindd
/// sees) shows no filesystem; the crypt device (and so /data) does: what is
/// on disk is ciphertext.
fn check_encrypted_on_disk(cx: &mut Ctx, when: &str, rewind_boot: bool) -> Result<(), ScenarioError> {
    let (raw, raw_bytes) = ext4_magic(cx, RAW)?;
    let (crypt, crypt_bytes) = ext4_magic(cx, CRYPT)?;
    let (top, top_bytes) = if rewind_boot { ext4_magic(cx, TOP)? } else { (false, "not a rewind boot".into()) };
    cx.check(
        &format!("{when}: the raw partition and rewind-userdata hold no ext4 magic, the crypt device does"),
        !raw && !top && crypt,
        format!("bytes 0x438..0x43a: raw {raw_bytes}, rewind-userdata {top_bytes}, crypt {crypt_bytes}"),
    );
    Ok(())
}

/// /data's device as the kernel sees it: (dm name, names of what it sits on).
fn data_stack(cx: &mut Ctx) -> Result<(String, Vec<String>), ScenarioError> {
    let out = cx.exec_checked(
        "src=$(readlink -f \"$(awk '$2 == \"/data\" { print $1 }' /proc/mounts | tail -n 1)\"); n=${src##*/}; \
         cat /sys/block/$n/dm/name 2>/dev/null || echo \"not-dm:$n\"; \
         for s in /sys/block/$n/slaves/*; do [ -e \"$s\" ] || continue; cat \"$s/dm/name\" 2>/dev/null || basename \"$s\"; done",
    )?;
    let mut lines = out.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty());
    let name = lines.next().unwrap_or_default();
    Ok((name, lines.collect()))
}

/// The crypt table's shape without its key: (target, cipher, key hex
/// digits, iv offset, device offset).
fn crypt_shape(cx: &mut Ctx) -> Result<String, ScenarioError> {
    let out =
        cx.exec_checked(&format!("dmsetup table {CRYPT_DEVICE} | awk '{{ print $3, $4, length($5), $6, $8 }}'"))?;
    Ok(out.trim().to_string())
}

/// /data is mounted from the crypt device, a 1:1 aes-xts-plain64 layer
/// straight on `under` (rewind-userdata, or the raw disk in a raw boot).
fn check_data_stack(cx: &mut Ctx, when: &str, under: &str) -> Result<(), ScenarioError> {
    let (name, slaves) = data_stack(cx)?;
    let shape = crypt_shape(cx)?;
    cx.check(
        &format!("{when}: /data is mounted from {CRYPT_DEVICE}, which sits on {under} only"),
        name == CRYPT_DEVICE && slaves == [under],
        format!("/data from {name}, on {slaves:?}"),
    );
    cx.check_eq(
        &format!("{when}: {CRYPT_DEVICE} is AES-256-XTS with a 512-bit key, no offsets"),
        "crypt aes-xts-plain64 128 0 0".to_string(),
        shape,
    );
    Ok(())
}

fn raw_disk_name(cx: &mut Ctx) -> Result<String, ScenarioError> {
    let out = cx.exec_checked(&format!("basename \"$(readlink -f {RAW})\""))?;
    Ok(out.trim().to_string())
}

/// The idle stack under the crypt layer (which is not counted).
fn check_idle_stack(cx: &mut Ctx, when: &str) -> Result<(), ScenarioError> {
    let stack = checks::dm_stack(cx.target, &[CRYPT_DEVICE])?;
    cx.check(
        &format!("{when}: rewind-userdata is linear, no snapshot, COW or verify device"),
        stack.is_idle(),
        format!("rewind-userdata: {}; other devices: {:?}", stack.top, stack.others),
    );
    Ok(())
}

/// rewindd's and prepare-userdata's logs of one boot (on the share).
fn daemon_logs(cx: &Ctx, boot: u32) -> String {
    [checks::boot_log(cx, boot, "rewindd.log"), checks::prepare_log(cx, boot)].join("\n")
}

/// Every boot in `boots` verified the COW map from raw blocks, and none
/// made a `-verify` device.
fn check_verified_raw(cx: &mut Ctx, boots: &[u32]) {
    for &b in boots {
        let log = daemon_logs(cx, b);
        let line = log.lines().find(|l| l.contains(VERIFIED_RAW)).unwrap_or("").trim().to_string();
        let verify_dev: Vec<&str> = log.lines().filter(|l| l.contains("-verify")).take(3).collect();
        cx.check(
            &format!("boot {b}: rewindd verified the COW map from the raw device, no -verify device"),
            !line.is_empty() && verify_dev.is_empty(),
            if line.is_empty() {
                format!("no {VERIFIED_RAW:?} line in boot-{b}/rewindd.log or prepare-userdata.log")
            } else {
                format!("{line}; -verify lines: {verify_dev:?}")
            },
        );
    }
}

/// In the running boot, the kernel mounted exactly one dm ext4 filesystem
/// (the init's /data, through the crypt layer): rewindd mounted nothing,
/// nor tried to (a mount of the ciphertext underneath would fail loudly).
fn check_no_daemon_mount(cx: &mut Ctx, when: &str) -> Result<(), ScenarioError> {
    let out = cx.exec_checked("dmesg | grep 'EXT4-fs (dm-' || true")?;
    let mounted = out.lines().filter(|l| l.contains("mounted filesystem")).count();
    let failed: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("Can't find ext4") || l.contains("VFS:") || l.contains("bad geometry"))
        .collect();
    cx.check(
        &format!("{when}: the kernel log shows one dm ext4 mount (the init's /data) and no failed one"),
        mounted == 1 && failed.is_empty(),
        out.trim().replace('\n', " | "),
    );
    Ok(())
}

/// "ready 9.1 s, crypt layer 0.3 s" for the measurements line.
fn boot_times(rec: &BootRecord) -> String {
    let crypt = match (rec.reached_ms(stage::CRYPT_UP), rec.reached_ms(stage::DATA_MOUNTED)) {
        (Some(c), Some(_)) => {
            // From the last stage before the layer (userdata-prepared in a
            // rewind boot, metadata-mounted in a raw one).
            let i = rec.stages.iter().position(|s| s == stage::CRYPT_UP).unwrap_or(0);
            let before = i.checked_sub(1).map(|j| rec.stage_ms[j]).unwrap_or(c);
            format!(", crypt layer {:.2} s", (c - before) as f64 / 1000.0)
        }
        _ => String::new(),
    };
    format!(
        "boot {}: ready {}{crypt}",
        rec.index,
        rec.ready_ms.map(|m| format!("{:.1} s", m as f64 / 1000.0)).unwrap_or_else(|| "not reached".into())
    )
}

/// Fresh guest: a raw boot formats userdata inside the crypt layer, runs
/// the baseline, and proves the disk holds ciphertext. Returns the
/// baseline's manifest.
fn encrypted_baseline(cx: &mut Ctx) -> Result<Manifest, ScenarioError> {
    require_crypt_option(cx)?;
    let rec = cx.boot_ready(&BootPlan::raw())?;
    require_crypt_up(cx, &rec)?;
    let raw_name = raw_disk_name(cx)?;
    check_data_stack(cx, "raw boot", &raw_name)?;
    cx.run_baseline()?;
    let baseline = data_manifest(cx)?;
    check_encrypted_on_disk(cx, "after the baseline", false)?;
    cx.say(&boot_times(&rec));
    cx.shutdown()?;
    Ok(baseline)
}

/// The checkpoint: a rewind boot (idle linear map, crypt on top), start.
fn encrypted_start(cx: &mut Ctx, baseline: &Manifest, attempts: u32, reason: &str) -> Result<u32, ScenarioError> {
    let rec = cx.boot_ready(&BootPlan::rewind())?;
    require_crypt_up(cx, &rec)?;
    check_data_stack(cx, "idle rewind boot", TOP_NAME)?;
    check_idle_stack(cx, "before start")?;
    let before = data_manifest(cx)?;
    cx.same_manifest("through rewind-userdata and the crypt layer, /data is the baseline", baseline, &before);
    checks::start_as(cx, "rewindctl start succeeds with /data mounted from the crypt layer", attempts, reason)?;
    let after = data_manifest(cx)?;
    cx.same_manifest("start changes no user data (only /data/rewind)", baseline, &after);
    let left = checks::cow_files_left(cx.target)?;
    cx.check("start made COW files in /data/rewind", !left.is_empty(), left.join(" "));
    check_encrypted_on_disk(cx, "armed", true)?;
    cx.say(&boot_times(&rec));
    cx.shutdown()?;
    Ok(rec.index)
}

/// Start, three failed attempts, the rollback boot: /data (through the
/// crypt layer) is the baseline exactly.
fn metadata_encryption(cx: &mut Ctx) -> Result<(), ScenarioError> {
    let baseline = encrypted_baseline(cx)?;
    encrypted_start(cx, &baseline, 3, "metadata encryption: ota")?;

    // Attempt 1: the new system changes /data through the crypt layer and
    // the snapshot, then the kernel panics.
    let rec = cx.boot_ready(&BootPlan::rewind().with_workload(1))?;
    require_crypt_up(cx, &rec)?;
    let mut attempt_boots = vec![rec.index];
    check_data_stack(cx, "attempt 1", TOP_NAME)?;
    let top = checks::dm_stack(cx.target, &[CRYPT_DEVICE])?.top;
    cx.check("attempt 1: rewind-userdata is no longer linear (armed)", top != "linear", top);
    let migrated = data_manifest(cx)?;
    cx.changed_manifest("attempt 1 changed userdata through the crypt layer", &baseline, &migrated);
    check_encrypted_on_disk(cx, "attempt 1", true)?;
    cx.say(&boot_times(&rec));
    match cx.target.exec("echo c > /proc/sysrq-trigger") {
        Err(TargetError::GuestEnded { end, .. }) => {
            cx.check_eq(&format!("boot {} (attempt 1) is observed as a panic", rec.index), BootEnd::Panic, end);
        }
        res => {
            cx.check("attempt 1 panics", false, format!("{res:?}"));
        }
    }
    for attempt in 2..=3 {
        let rec = cx.boot_expect_end(
            &BootPlan::rewind().with_workload(attempt).with_failure(Failure::panic_at(stage::WORKLOAD_DONE)),
            BootEnd::Panic,
        )?;
        cx.check(
            &format!("attempt {attempt}: crypt layer up, workload ran, no guest error"),
            rec.reached(stage::CRYPT_UP) && rec.reached(stage::WORKLOAD_DONE) && rec.errors.is_empty(),
            format!("stages {}; errors {:?}", rec.stages.join(","), rec.errors),
        );
        attempt_boots.push(rec.index);
    }

    // The attempts are used up: prepare-userdata rolls back before the
    // crypt layer exists, from raw blocks only.
    let rec = cx.boot_ready(&BootPlan::rewind())?;
    require_crypt_up(cx, &rec)?;
    cx.say(&format!(
        "{} (rollback: merge {})",
        boot_times(&rec),
        if checks::merge_ran(&rec) { "seen" } else { "not seen" }
    ));
    let mut verified = attempt_boots.clone();
    verified.push(rec.index);
    check_verified_raw(cx, &verified);
    check_no_daemon_mount(cx, "rollback boot")?;
    check_data_stack(cx, "rollback boot", TOP_NAME)?;
    let needs = cx.exec("rewindctl needs-rollback")?;
    cx.check_eq("needs-rollback is true", 0, needs.status);
    let mut grpc = cx.grpc()?;
    let history = checks::History::from_grpc(&grpc.history()?.events);
    checks::check_three_attempts_rolled_back(cx, &history);
    checks::check_cow_gone(cx, "the COW files are gone after the rollback")?;
    check_idle_stack(cx, "after the rollback")?;
    let now = data_manifest(cx)?;
    cx.same_manifest("userdata (through the crypt layer) is exactly the baseline", &baseline, &now);
    check_encrypted_on_disk(cx, "after the rollback", true)?;
    cx.exec_checked("sync; umount /data")?;
    checks::fsck_clean(cx, CRYPT, "userdata fsck clean through the crypt layer after the rollback")?;
    cx.shutdown()?;

    raw_partition_witness(cx, &baseline)
}

/// A boot without rewindd and without /data: the crypt layer made by hand
/// over the raw partition (the key from the share) holds a clean
/// filesystem with exactly `expected` on it.
fn raw_partition_witness(cx: &mut Ctx, expected: &Manifest) -> Result<(), ScenarioError> {
    cx.boot_ready(&BootPlan::raw().without_data())?;
    let node = cx.exec_checked(&format!(
        "s=$(blockdev --getsz {RAW}) && \
         dmsetup create wit-crypt --table \"0 $s crypt aes-xts-plain64 $(cat {GUEST_CRYPT_KEY}) 0 $(readlink -f {RAW}) 0\" && \
         for d in /sys/block/dm-*; do [ \"$(cat $d/dm/name)\" = wit-crypt ] && echo /dev/${{d##*/}}; done"
    ))?;
    let node = node.trim().to_string();
    cx.require(
        "a crypt device made by hand over the raw partition appears",
        node.starts_with("/dev/dm-"),
        node.clone(),
    )?;
    checks::fsck_clean(cx, &node, "raw partition, decrypted by hand: fsck clean")?;
    cx.exec_checked(&format!("mkdir -p /mnt && mount -t ext4 -o ro,noload {node} /mnt"))?;
    let seen = checks::manifest(cx.target, "/mnt", &[checks::COW_DIR])?;
    cx.same_manifest("raw partition, decrypted by hand: exactly the expected data", expected, &seen);
    cx.exec_checked("umount /mnt && dmsetup remove wit-crypt")?;
    cx.shutdown()?;
    Ok(())
}

/// Start, one attempt that commits at boot-completed, two more boots keep
/// its data.
fn metadata_encryption_commit(cx: &mut Ctx) -> Result<(), ScenarioError> {
    let baseline = encrypted_baseline(cx)?;
    encrypted_start(cx, &baseline, 2, "metadata encryption: commit")?;

    let rec = cx.boot_ready(&BootPlan::rewind().with_workload(1).with_commit())?;
    require_crypt_up(cx, &rec)?;
    cx.check(
        "the attempt reaches boot-completed and commits without errors",
        rec.reached(stage::COMMITTED) && rec.errors.is_empty(),
        format!("stages {}; errors {:?}", rec.stages.join(","), rec.errors),
    );
    cx.say(&boot_times(&rec));
    check_verified_raw(cx, &[rec.index]);
    check_no_daemon_mount(cx, "the committing boot")?;
    check_data_stack(cx, "after the commit", TOP_NAME)?;
    let committed = data_manifest(cx)?;
    cx.changed_manifest("the attempt changed userdata", &baseline, &committed);
    cx.check("the attempt's marker is there", committed.get("attempt-1").is_some(), "");
    checks::check_phase(cx, "phase is idle after the commit", "idle")?;
    let h = checks::history(cx)?;
    cx.check("history records the commit", h.has(EventKind::Committed), h.text());
    check_idle_stack(cx, "after the commit (live table swap)")?;
    cx.shutdown()?;

    for n in 1..=2 {
        let rec = cx.boot_ready(&BootPlan::rewind())?;
        require_crypt_up(cx, &rec)?;
        cx.say(&boot_times(&rec));
        checks::check_commit_kept(cx, &format!("reboot {n}"), &committed)?;
        check_idle_stack(cx, &format!("reboot {n}"))?;
        checks::check_phase(cx, &format!("reboot {n}: phase is idle"), "idle")?;
        if n == 2 {
            check_encrypted_on_disk(cx, "after the commit and two reboots", true)?;
            cx.exec_checked("sync; umount /data")?;
            checks::fsck_clean(cx, CRYPT, "userdata fsck clean through the crypt layer after the commit")?;
        }
        cx.shutdown()?;
    }
    raw_partition_witness(cx, &committed)
}

const NEW_MIB: u64 = 32;

fn cow_used(st: &serde_json::Value) -> u64 {
    st["partitions"][0]["cow_used_bytes"].as_u64().unwrap_or(0)
}

/// What the shutdown after `boot`'s start said of the seal
/// (guest/shutdown.sh runs the .rc's `on shutdown` step, rewind_seal).
fn check_sealed_at_shutdown(cx: &mut Ctx, boot: u32) {
    let log = checks::boot_log(cx, boot, "shutdown-rewind_seal.log");
    cx.check(
        &format!("boot {boot}'s clean shutdown sealed the free map through the crypt layer (rewind_seal)"),
        log.contains("userdata: free map sealed:"),
        log.trim().to_string(),
    );
}

/// The attempt's free map as status shows it.
fn free_map_status(cx: &mut Ctx) -> Result<(serde_json::Value, u64), ScenarioError> {
    let st = checks::status(cx)?;
    Ok((st["partitions"][0]["free_map"].clone(), cow_used(&st)))
}

/// Writes a new file of `mib` MiB and returns how much the COW store grew.
fn new_file_cost(cx: &mut Ctx, name: &str, mib: u64) -> Result<u64, ScenarioError> {
    cx.exec_checked("sync")?;
    let before = cow_used(&checks::status(cx)?);
    cx.exec_checked(&format!("dd if=/dev/urandom of=/data/{name} bs=1M count={mib} conv=fsync 2>/dev/null; sync"))?;
    Ok(cow_used(&checks::status(cx)?).saturating_sub(before))
}

/// The boot after a one-attempt checkpoint's attempt: rolled back to
/// `expected`, fsck clean through the crypt layer.
fn check_rolled_back_to(cx: &mut Ctx, expected: &Manifest, when: &str) -> Result<(), ScenarioError> {
    let rec = cx.boot_ready(&BootPlan::rewind())?;
    require_crypt_up(cx, &rec)?;
    checks::check_merged(cx, &format!("{when}: the next boot merged the attempt away"), &rec, "the rollback merge");
    checks::check_phase(cx, &format!("{when}: phase is rolled-back"), "rolled-back")?;
    let now = data_manifest(cx)?;
    cx.same_manifest(&format!("{when}: userdata (through the crypt layer) is exactly the baseline"), expected, &now);
    cx.exec_checked("sync; umount /data")?;
    checks::fsck_clean(cx, CRYPT, &format!("{when}: fsck clean through the crypt layer"))?;
    cx.shutdown()?;
    Ok(())
}

/// The sealed free map under metadata encryption, used and refused.
fn metadata_encryption_free_map(cx: &mut Ctx) -> Result<(), ScenarioError> {
    let baseline = encrypted_baseline(cx)?;
    // Round 1: start; its clean shutdown seals the map; the attempt is
    // armed over it although the raw partition is ciphertext.
    let start = encrypted_start(cx, &baseline, 1, "metadata encryption: sealed free map")?;
    check_sealed_at_shutdown(cx, start);
    let rec = cx.boot_ready(&BootPlan::rewind())?;
    require_crypt_up(cx, &rec)?;
    let (map, _) = free_map_status(cx)?;
    let detail = map["detail"].as_str().unwrap_or("").to_string();
    cx.check(
        "attempt 1: armed over the sealed free map (status: mapped, read through the crypt layer)",
        map["mapped"] == true && map["linear_chunks"].as_u64().unwrap_or(0) > 0 && detail.contains("crypt layer"),
        map.to_string(),
    );
    let table = cx.exec_checked("dmsetup table rewind-userdata")?;
    let linear = table.lines().filter(|l| l.contains(" linear ")).count();
    cx.check(
        "attempt 1: the armed table has linear lines over free chunks",
        linear > 0,
        format!("{linear} linear lines"),
    );
    let added = new_file_cost(cx, "new-file.bin", NEW_MIB)?;
    let written = NEW_MIB << 20;
    cx.check(
        &format!("attempt 1: a {NEW_MIB} MiB new file adds less than 1 % of its size to the COW store"),
        added * 100 < written,
        format!("{added} bytes for {written} written ({:.2} %)", added as f64 * 100.0 / written as f64),
    );
    let changed = data_manifest(cx)?;
    cx.changed_manifest("attempt 1 changed userdata", &baseline, &changed);
    cx.shutdown()?;
    check_rolled_back_to(cx, &baseline, "round 1")?;

    // Round 2: a new checkpoint, sealed at its shutdown; then the old
    // system mounts /data once more without rewind (a raw boot) and
    // changes it: the sealed bytes change, so the attempt is armed
    // protecting every chunk, and says why.
    let start = encrypted_start(cx, &baseline, 1, "metadata encryption: seal broken")?;
    check_sealed_at_shutdown(cx, start);
    let rec = cx.boot_ready(&BootPlan::raw())?;
    require_crypt_up(cx, &rec)?;
    cx.exec_checked("echo 'written after the seal' > /data/after-seal.txt; sync")?;
    let changed_baseline = data_manifest(cx)?;
    cx.shutdown()?;
    let rec = cx.boot_ready(&BootPlan::rewind())?;
    require_crypt_up(cx, &rec)?;
    let (map, _) = free_map_status(cx)?;
    let detail = map["detail"].as_str().unwrap_or("").to_string();
    cx.check(
        "round 2: the seal no longer holds, every chunk is protected and status says why",
        map["mapped"] == false && detail.contains("no longer holds"),
        detail.clone(),
    );
    let added = new_file_cost(cx, "copied.bin", 8)?;
    cx.check(
        "round 2: an 8 MiB new file is copied in full (no free map)",
        added >= 8 << 20,
        format!("COW grew by {added} bytes"),
    );
    cx.shutdown()?;
    check_rolled_back_to(cx, &changed_baseline, "round 2")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_name_the_crypt_layer() {
        let mut rec = BootRecord::new(3, &BootPlan::rewind(), Default::default(), Default::default(), String::new());
        rec.stages = vec![stage::USERDATA_PREPARED.into(), stage::CRYPT_UP.into(), stage::DATA_MOUNTED.into()];
        rec.stage_ms = vec![4000, 4250, 4400];
        rec.ready_ms = Some(5100);
        rec.duration_ms = 5100;
        assert_eq!(boot_times(&rec), "boot 3: ready 5.1 s, crypt layer 0.25 s");
    }
}
