//! The free-space write counters at the table's line cap
//! (`cow.free_counted_runs`): a baseline with about 2,100 one-chunk holes
//! is armed with the most linear runs the table holds, and only the
//! longest runs get a dm-stats region. One checkpoint, one attempt per cap
//! measured, side by side in one guest: what the arm spends creating the
//! regions, what a status read costs, that the regions are the longest
//! runs of the kernel's own table, that status says what the figure
//! covers, and that a new file's writes are counted exactly when the file
//! lands in counted runs (filefrag says where it landed). The rollback
//! still ends at the exact baseline.

use super::freemap::{about, free_written, time_status};
use crate::plan::BootPlan;
use crate::scenario::{checks, Ctx, ScenarioError};

/// `cow.free_counted_runs` at each attempt: below, at and above the
/// default (128), and every run (the table's cap, as before the cap).
const CAPS: [u32; 4] = [64, 128, 256, 4096];
const NEW_FILE_MIB: u64 = 8;

/// `(start, len)` in sectors of the `linear` lines of a `dmsetup table`.
pub fn linear_lines(table: &str) -> Vec<(u64, u64)> {
    table
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                [start, len, "linear", ..] => Some((start.parse().ok()?, len.parse().ok()?)),
                _ => None,
            }
        })
        .collect()
}

/// The `k` longest runs, ties to the lower start, in start order: the
/// selection rewindd documents, computed here from the kernel's table.
pub fn longest(runs: &[(u64, u64)], k: usize) -> Vec<(u64, u64)> {
    let mut v = runs.to_vec();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(k);
    v.sort_unstable();
    v
}

/// `(start, len, id)` of the rewind-free regions `@stats_list` prints
/// (`<id>: <start>+<len> <step> <program> <aux>`), in start order.
pub fn stats_regions(list: &str) -> Vec<(u64, u64, u64)> {
    let mut v: Vec<(u64, u64, u64)> = list
        .lines()
        .filter(|l| l.split_whitespace().nth(3) == Some("rewind-free"))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let id = w.next()?.strip_suffix(':')?.parse().ok()?;
            let (a, b) = w.next()?.split_once('+')?;
            Some((a.parse().ok()?, b.parse().ok()?, id))
        })
        .collect();
    v.sort_unstable();
    v
}

/// Sectors written that `@stats_print` lines show (the 7th counter).
pub fn printed_written(out: &str) -> u64 {
    out.lines().filter_map(|l| l.split_whitespace().nth(7)?.parse::<u64>().ok()).sum()
}

/// Physical extents `(start, len)` in 512-byte units of `filefrag -v -b512`.
pub fn filefrag_extents(out: &str) -> Vec<(u64, u64)> {
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').map(str::trim).collect();
            f.first()?.parse::<u64>().ok()?;
            let (a, b) = f.get(2)?.split_once("..")?;
            let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            Some((a, b.checked_sub(a)? + 1))
        })
        .collect()
}

/// Sectors of `extents` inside `regions` (both `(start, len)`).
pub fn overlap(extents: &[(u64, u64)], regions: &[(u64, u64)]) -> u64 {
    let mut sum = 0;
    for &(a, n) in extents {
        for &(s, l) in regions {
            let (lo, hi) = (a.max(s), (a + n).min(s + l));
            sum += hi.saturating_sub(lo);
        }
    }
    sum
}

/// "... dm-stats regions on rewind-userdata in 812 ms ..." from the log.
pub fn regions_ms(log: &str) -> Option<u64> {
    let i = log.rfind("dm-stats regions on ")?;
    let rest = &log[i..];
    let j = rest.find(" in ")?;
    rest[j + 4..].split_whitespace().next()?.parse().ok()
}

fn caps_toml(k: u32) -> String {
    format!("[cow]\nfree_counted_runs = {k}\n")
}

/// One attempt armed with cap `k`: its checks, and its figures as a line.
fn attempt(cx: &mut Ctx, k: u32, boot: u32) -> Result<String, ScenarioError> {
    let tag = format!("cow.free_counted_runs = {k}");
    let table = cx.exec_checked("dmsetup table rewind-userdata")?;
    let runs = linear_lines(&table);
    let want = longest(&runs, k as usize);
    let list = cx.exec_checked("dmsetup message rewind-userdata 0 @stats_list rewind-free")?;
    let listed = stats_regions(&list);
    let regions: Vec<(u64, u64)> = listed.iter().map(|r| (r.0, r.1)).collect();
    cx.check(
        &format!(
            "{tag}: the dm-stats regions are the {} longest of the table's {} linear lines",
            want.len(),
            runs.len()
        ),
        runs.len() > 1000 && regions == want,
        format!(
            "{} table lines, {} linear; {} regions listed by dmsetup",
            table.lines().count(),
            runs.len(),
            regions.len()
        ),
    );
    let st = checks::status(cx)?;
    let map = &st["partitions"][0]["free_map"];
    let chunk = st["partitions"][0]["chunk_sectors"].as_u64().unwrap_or(8).max(1);
    let capped = want.len() < runs.len();
    let covered: u64 = want.iter().map(|r| r.1).sum::<u64>() / chunk;
    cx.check(
        &format!(
            "{tag}: status --json says the figure covers {} of {} runs and whether it is a lower bound",
            want.len(),
            runs.len()
        ),
        map["free_written_segments"].as_u64() == Some(want.len() as u64)
            && map["segments"].as_u64() == Some(runs.len() as u64)
            && map["free_written_chunks"].as_u64() == Some(covered)
            && map["free_written_lower_bound"].as_bool() == Some(capped),
        map.to_string(),
    );
    let text = cx.exec_checked("rewindctl status")?;
    let line = text.lines().find(|l| l.contains("written into free space")).unwrap_or("").to_string();
    let says = if capped {
        line.contains("at least") && line.contains(&format!("the {} longest of {} linear runs", want.len(), runs.len()))
    } else {
        !line.is_empty() && !line.contains("at least")
    };
    cx.check(&format!("{tag}: rewindctl status says what the figure covers"), says, line);

    let before = free_written(&st).unwrap_or(0);
    cx.exec_checked(&format!(
        "dd if=/dev/urandom of=/data/new-file.bin bs=1M count={NEW_FILE_MIB} conv=fsync 2>/dev/null; sync"
    ))?;
    let after = free_written(&checks::status(cx)?);
    let grew = after.map(|a| a.saturating_sub(before)).unwrap_or(0);
    let extents = filefrag_extents(&cx.exec_checked("filefrag -v -b512 /data/new-file.bin")?);
    let file_sectors: u64 = extents.iter().map(|e| e.1).sum();
    let in_counted = overlap(&extents, &want) * 512;
    // The kernel's own counters of the regions the file touches, through
    // dmsetup: a witness beside rewindd's figure.
    let touched: Vec<String> =
        listed.iter().filter(|r| overlap(&extents, &[(r.0, r.1)]) > 0).map(|r| r.2.to_string()).collect();
    let printed = cx.exec_checked(&format!(
        "for id in {}; do dmsetup message rewind-userdata 0 @stats_print $id; done",
        touched.join(" ")
    ))?;
    let kernel = printed_written(&printed) * 512;
    let whole = file_sectors == NEW_FILE_MIB << 11;
    if whole && in_counted == NEW_FILE_MIB << 20 {
        cx.check(
            &format!("{tag}: the {NEW_FILE_MIB} MiB new file landed in counted runs and is counted exactly"),
            about(grew, NEW_FILE_MIB << 20) && about(kernel, NEW_FILE_MIB << 20),
            format!(
                "rewindd {before} -> {after:?} bytes; dmsetup's counters of the {} regions it touches: {kernel} bytes; \
                 extents {extents:?}",
                touched.len()
            ),
        );
    } else {
        cx.check(
            &format!("{tag}: the new file partly in uncounted runs: the figure holds at least its counted part"),
            whole && grew >= in_counted * 95 / 100 && grew <= (NEW_FILE_MIB << 20) * 110 / 100,
            format!("{before} -> {after:?} bytes; {in_counted} of the file's bytes in counted runs; {extents:?}"),
        );
    }
    // rewindd's own log of this boot (kmsg rate-limits its lines).
    let log = checks::boot_log(cx, boot, "rewindd.log");
    let line = log.lines().rfind(|l| l.contains("dm-stats regions on")).unwrap_or("").to_string();
    let arm_ms = regions_ms(&line);
    cx.check(&format!("{tag}: the arm logged the regions it made"), arm_ms.is_some(), line);
    let status_ms = time_status(cx, 5)?;
    Ok(format!(
        "{k}: {} regions (of {} runs, {}% of the free chunks) created in {} ms at arm, rewindctl status {status_ms:.0} ms",
        want.len(),
        runs.len(),
        covered * 100 / map["linear_chunks"].as_u64().unwrap_or(1).max(1),
        arm_ms.map(|m| m.to_string()).unwrap_or_else(|| "?".into()),
    ))
}

pub(super) fn free_written_many_runs(cx: &mut Ctx) -> Result<(), ScenarioError> {
    const FILES: u32 = 4200;
    checks::set_rewindd_extra(cx, None)?;
    cx.boot_ready(&BootPlan::rewind())?;
    cx.run_baseline()?;
    // Small files are packed together by ext4's group preallocation, so
    // deleting every other one leaves one-block (one-chunk) holes.
    cx.exec_checked(&format!(
        "mkdir -p /data/frag; i=0; while [ $i -lt {FILES} ]; do printf '%4096s' $i > /data/frag/f$i; \
         i=$((i+1)); done; sync; rm -f /data/frag/f*[13579]; sync"
    ))?;
    checks::start(cx, CAPS.len() as u32, "e2e: free map at the line cap")?;
    let baseline = checks::data_manifest(cx)?;
    checks::set_rewindd_extra(cx, Some(&caps_toml(CAPS[0])))?;
    cx.shutdown()?;

    let mut figures = Vec::new();
    for (i, &k) in CAPS.iter().enumerate() {
        // Attempt i+1; from the second on, the boot first merges the last.
        let rec = cx.boot_ready(&BootPlan::rewind())?;
        checks::check_phase(cx, &format!("attempt {} is running", i + 1), "checkpointing")?;
        cx.say(&format!("attempt {} ready {:.1} s after power-on", i + 1, rec.ready_ms.unwrap_or(0) as f64 / 1000.0));
        figures.push(attempt(cx, k, rec.index)?);
        // The next boot's rewindd reads the next cap.
        checks::set_rewindd_extra(cx, CAPS.get(i + 1).map(|n| caps_toml(*n)).as_deref())?;
        cx.shutdown()?;
    }
    cx.say(&format!("cow.free_counted_runs, side by side: {}", figures.join("; ")));

    checks::boot_rolls_back_to(cx, "the next boot merged the last attempt away", &baseline)?;
    checks::fsck_after_umount(cx, "userdata fsck clean after the rollback")?;
    cx.shutdown()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_stats_and_filefrag_outputs_parse() {
        let table =
            "0 8 snapshot-origin 252:0\n8 16 linear 253:1 8\n24 8 snapshot-origin 252:0\n32 64 linear 253:1 32\n";
        assert_eq!(linear_lines(table), [(8, 16), (32, 64)]);
        let list = "0: 32+64 64 rewind-free -\n1: 8+16 16 rewind-free -\n2: 0+8 8 dmstats -\n";
        assert_eq!(stats_regions(list), [(8, 16, 1), (32, 64, 0)]);
        let print = "8+16 12 0 96 4 131 2 24 880 0 890 890 4 880\n32+64 0 0 0 0 1 0 8 2 0 2 2 0 2\n";
        assert_eq!(printed_written(print), 32);
        let ff = "Filesystem type is: ef53\nFile size of /data/x is 8388608 (16384 blocks of 512 bytes)\n \
                  ext:     logical_offset:        physical_offset: length:   expected: flags:\n   \
                  0:        0..    8191:     100000..    108191:   8192:            \n   \
                  1:     8192..   16383:     200000..    208191:   8192:     108192: last,eof\n\
                  /data/x: 2 extents found\n";
        assert_eq!(filefrag_extents(ff), [(100000, 8192), (200000, 8192)]);
        let log = "free-space write counters: 64 dm-stats regions on rewind-userdata in 812 ms (0 stale deleted)";
        assert_eq!(regions_ms(log), Some(812));
        assert_eq!(regions_ms("nothing"), None);
    }

    #[test]
    fn the_longest_runs_and_their_overlap_with_a_file() {
        let runs = [(0, 8), (100, 64), (200, 8), (300, 512), (900, 64)];
        assert_eq!(longest(&runs, 2), [(100, 64), (300, 512)]);
        assert_eq!(longest(&runs, 3), [(100, 64), (300, 512), (900, 64)]);
        assert_eq!(longest(&runs, 9), runs);
        let counted = longest(&runs, 2);
        assert_eq!(overlap(&[(300, 512)], &counted), 512);
        assert_eq!(overlap(&[(90, 20), (0, 8)], &counted), 10);
        assert_eq!(overlap(&[(0, 8)], &counted), 0);
    }
}
