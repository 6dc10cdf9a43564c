//! dm-stats regions (part of dm-mod, `@stats_*` target messages) over the
//! linear lines of the armed top device: writes there are never copied, so
//! the snapshot's account does not see them; these counters do.
//!
//! The regions are rewind's own by program id ([`PROGRAM_ID`]) and are
//! read statelessly: `@stats_list` names them, `@stats_print` gives the
//! counters. A rewindd restarted mid-attempt finds them again, and an arm
//! that runs twice in one boot lists before it creates (no duplicates).
//! They live on the mapped device, across table swaps, until it is removed
//! or they are deleted. The output formats are those of the kernel's
//! Documentation/admin-guide/device-mapper/statistics.rst.

use super::control::{DmControl, DmOpError};

/// The program id of rewind's regions; other programs' regions are left
/// alone and never counted.
pub const PROGRAM_ID: &str = "rewind-free";

/// Default for `cow.free_counted_runs`: how many linear runs get a region.
/// Each region costs the arm one `@stats_create` (the kernel suspends the
/// device internally for each), each status read one `@stats_print`, and
/// every bio on the device a walk of the region list; at the table's cap
/// (2,047 runs) that was 3.5-6.2 s more arm and 2.9 s per status read
/// under TCG. The largest runs hold most of the free chunks, so the
/// figure stays close with far fewer regions (README, free space).
pub const DEFAULT_COUNTED_RUNS: u32 = 128;

/// The `k` longest of `ranges` (start, len), ties to the lower start,
/// returned in start order: the runs that get a region. All of them when
/// there are at most `k`.
pub fn largest(ranges: &[(u64, u64)], k: usize) -> Vec<(u64, u64)> {
    let mut by_len = ranges.to_vec();
    if by_len.len() > k {
        by_len.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        by_len.truncate(k);
    }
    by_len.sort_unstable();
    by_len
}

/// One region as `@stats_list` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub id: u64,
    pub start: u64,
    pub len: u64,
    pub step: u64,
    pub program_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error(transparent)]
    Dm(#[from] DmOpError),
    #[error("unexpected @stats_list line '{0}'")]
    List(String),
    #[error("unexpected @stats_print line '{0}'")]
    Print(String),
    #[error("no answer to '{0}'")]
    NoAnswer(String),
    #[error("the {listed} regions of {program} on {device} are not the {wanted} counted free runs of the armed table")]
    Mismatch { device: String, program: &'static str, listed: usize, wanted: usize },
}

/// Parses `@stats_list` output:
/// `<region_id>: <start_sector>+<length> <step> <program_id> <aux_data>`
/// and optionally ` precise_timestamps` and ` histogram:n1,n2,...`.
pub fn parse_list(text: &str) -> Result<Vec<Region>, StatsError> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let bad = || StatsError::List(line.to_string());
        let mut w = line.split_ascii_whitespace();
        let id = w.next().and_then(|s| s.strip_suffix(':')).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let (start, len) = w.next().and_then(parse_range).ok_or_else(bad)?;
        let step = w.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let program_id = w.next().ok_or_else(bad)?.to_string();
        out.push(Region { id, start, len, step, program_id });
    }
    Ok(out)
}

fn parse_range(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once('+')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Sectors written, summed over the areas `@stats_print` lists: each line
/// is `<start_sector>+<step>` then the counters, of which the 7th is
/// "sectors written" (the /proc/diskstats order).
pub fn parse_print_written(text: &str) -> Result<u64, StatsError> {
    let mut sum = 0u64;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let bad = || StatsError::Print(line.to_string());
        let mut w = line.split_ascii_whitespace();
        w.next().and_then(parse_range).ok_or_else(bad)?;
        // Only the 7th is read: the 9th (in flight) is printed signed.
        let counters: Vec<&str> = w.take(13).collect();
        if counters.len() < 11 {
            return Err(bad());
        }
        let written: u64 = counters[6].parse().map_err(|_| bad())?;
        sum = sum.saturating_add(written);
    }
    Ok(sum)
}

fn ask(dm: &dyn DmControl, device: &str, msg: &str) -> Result<String, StatsError> {
    Ok(dm.message(device, msg)?.unwrap_or_default())
}

/// rewind's regions on `device`.
pub fn list(dm: &dyn DmControl, device: &str) -> Result<Vec<Region>, StatsError> {
    parse_list(&ask(dm, device, &format!("@stats_list {PROGRAM_ID}"))?)
        .map(|v| v.into_iter().filter(|r| r.program_id == PROGRAM_ID).collect())
}

/// Whether `regions` are exactly one single-area region per range.
fn matches(regions: &[Region], ranges: &[(u64, u64)]) -> bool {
    let mut have: Vec<(u64, u64)> = regions.iter().filter(|r| r.step >= r.len).map(|r| (r.start, r.len)).collect();
    have.sort_unstable();
    let mut want = ranges.to_vec();
    want.sort_unstable();
    have.len() == regions.len() && have == want
}

/// What [`ensure_regions`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// The regions were there already (an arm run again in this boot).
    Kept(usize),
    /// Created, after deleting this many stale ones of ours.
    Created { created: usize, deleted: usize },
}

/// Makes rewind's regions on `device` exactly one per range (start, len in
/// sectors), each one area (`/1`). Existing ones are kept if they already
/// match (their counters go on); otherwise ours are deleted and made anew.
/// On an error, whatever was created is deleted again (best effort), so a
/// partial set is never read as the whole.
pub fn ensure_regions(dm: &dyn DmControl, device: &str, ranges: &[(u64, u64)]) -> Result<Ensured, StatsError> {
    let existing = list(dm, device)?;
    if !existing.is_empty() && matches(&existing, ranges) {
        return Ok(Ensured::Kept(existing.len()));
    }
    let deleted = delete_all(dm, device)?;
    for &(start, len) in ranges {
        let msg = format!("@stats_create {start}+{len} /1 {PROGRAM_ID}");
        let made = ask(dm, device, &msg)
            .and_then(|id| id.trim().parse::<u64>().map(|_| ()).map_err(|_| StatsError::NoAnswer(msg.clone())));
        if let Err(e) = made {
            let _ = delete_all(dm, device);
            return Err(e);
        }
    }
    Ok(Ensured::Created { created: ranges.len(), deleted })
}

/// Deletes rewind's regions on `device`; returns how many there were.
pub fn delete_all(dm: &dyn DmControl, device: &str) -> Result<usize, StatsError> {
    let regions = list(dm, device)?;
    for r in &regions {
        ask(dm, device, &format!("@stats_delete {}", r.id))?;
    }
    Ok(regions.len())
}

/// Sectors written into `ranges` since their regions were created. The
/// regions must be exactly those ranges: a missing or foreign set is an
/// error (reported as unknown), never a smaller figure.
pub fn written_sectors(dm: &dyn DmControl, device: &str, ranges: &[(u64, u64)]) -> Result<u64, StatsError> {
    let regions = list(dm, device)?;
    if !matches(&regions, ranges) {
        return Err(StatsError::Mismatch {
            device: device.to_string(),
            program: PROGRAM_ID,
            listed: regions.len(),
            wanted: ranges.len(),
        });
    }
    let mut sum = 0u64;
    for r in &regions {
        sum = sum.saturating_add(parse_print_written(&ask(dm, device, &format!("@stats_print {}", r.id))?)?);
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_output_parses_with_and_without_the_optional_words() {
        let text = "0: 0+2048 2048 rewind-free -\n\
                    3: 8192+16384 16384 rewind-free -\n\
                    7: 0+1000000 10000 dmstats - precise_timestamps histogram:10,20,30\n";
        let r = parse_list(text).expect("parses");
        assert_eq!(r.len(), 3);
        assert_eq!(r[1], Region { id: 3, start: 8192, len: 16384, step: 16384, program_id: "rewind-free".into() });
        assert_eq!((r[2].id, r[2].step, r[2].program_id.as_str()), (7, 10000, "dmstats"));
        assert!(parse_list("").expect("parses").is_empty());
        for bad in ["0 0+2048 2048 rewind-free -", "x: 0+2048 2048 p -", "0: 0-2048 2048 p -", "0: 0+2048"] {
            assert!(parse_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn print_output_sums_the_seventh_counter() {
        // 13 counters; with a histogram a 14th word follows.
        let one = "8192+16384 12 0 96 4 131 2 131072 880 0 890 890 4 880\n";
        assert_eq!(parse_print_written(one).expect("parses"), 131072);
        let areas = "0+8 1 0 8 0 3 0 24 1 0 1 1 0 1\n8+8 0 0 0 0 5 1 40 2 0 2 2 0 2 1:2:0:0\n";
        assert_eq!(parse_print_written(areas).expect("parses"), 64);
        assert_eq!(parse_print_written("").expect("parses"), 0);
        for bad in ["8192+16384 1 2 3", "8192 1 0 96 4 131 2 131072 880 0 890 890 4 880", "0+8 0 0 8 0 3 0 x 1 0 1 1"] {
            assert!(parse_print_written(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_failed_creation_leaves_no_partial_set_and_other_programs_alone() {
        use crate::dm::fake::FakeDm;
        use crate::dm::target::{Table, Target};
        use devicemapper::{Device, Sectors};
        let dm = FakeDm::default();
        let raw = Device { major: 8, minor: 16 };
        dm.create("top", &Table::single(Sectors(4096), Target::linear(raw, Sectors(0))), false).expect("create");
        dm.message("top", "@stats_create 0+8 /1 dmstats").expect("foreign");
        let ranges = [(8, 8), (64, 32), (512, 512)];
        dm.lock().stats_create_limit = Some(3); // the foreign one and two of ours
        assert!(ensure_regions(&dm, "top", &ranges).is_err());
        let left: Vec<String> = dm.regions("top").iter().map(|r| r.program_id.clone()).collect();
        assert_eq!(left, ["dmstats"]);
        dm.lock().stats_create_limit = None;
        assert_eq!(ensure_regions(&dm, "top", &ranges).expect("made"), Ensured::Created { created: 3, deleted: 0 });
        assert_eq!(ensure_regions(&dm, "top", &ranges).expect("kept"), Ensured::Kept(3));
        dm.write("top", 0, 1024);
        assert_eq!(written_sectors(&dm, "top", &ranges).expect("read"), 8 + 32 + 512);
        let e = written_sectors(&dm, "top", &ranges[..2]).expect_err("not the runs");
        assert!(e.to_string().contains("3 regions"), "{e}");
        assert_eq!(delete_all(&dm, "top").expect("delete"), 3);
        assert_eq!(dm.regions("top").len(), 1, "the foreign region stays");
    }

    #[test]
    fn the_largest_runs_are_counted_ties_to_the_lower_start() {
        let runs = [(0, 8), (100, 64), (200, 8), (300, 512), (900, 64), (2000, 8)];
        assert_eq!(largest(&runs, 2), [(100, 64), (300, 512)]);
        assert_eq!(largest(&runs, 3), [(100, 64), (300, 512), (900, 64)]);
        assert_eq!(largest(&runs, 4), [(0, 8), (100, 64), (300, 512), (900, 64)]);
        assert_eq!(largest(&runs, 6), runs);
        assert_eq!(largest(&runs, 100), runs);
        assert!(largest(&runs, 0).is_empty());
        assert!(largest(&[], 4).is_empty());
    }

    #[test]
    fn regions_match_only_one_single_area_region_per_range() {
        let r = |id, start, len, step| Region { id, start, len, step, program_id: PROGRAM_ID.into() };
        assert!(matches(&[r(1, 64, 8, 8), r(0, 0, 16, 16)], &[(0, 16), (64, 8)]));
        assert!(!matches(&[r(0, 0, 16, 16)], &[(0, 16), (64, 8)]), "one missing");
        assert!(!matches(&[r(0, 0, 16, 16), r(1, 0, 16, 16)], &[(0, 16)]), "a duplicate");
        assert!(!matches(&[r(0, 0, 16, 8)], &[(0, 16)]), "two areas");
        assert!(matches(&[], &[]));
    }
}
