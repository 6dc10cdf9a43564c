//! The top device's table while a checkpoint is armed, when the baseline's
//! free space is known: `snapshot-origin` over the chunks the baseline
//! uses (a first write there copies the old chunk into the snapshot) and
//! `linear` over runs of whole chunks it leaves free (written in place,
//! never copied, never counted).
//!
//! Both targets send sector S of the device to sector S of the raw
//! partition (`origin_map` does not remap; each linear line's offset is its
//! own start), so the device reads and writes exactly as one
//! snapshot-origin would; only the copying differs. The snapshot device
//! stays one target over the whole partition and the rollback stays
//! `snapshot-merge`: it restores every copied chunk, and the free ones are
//! free again in the restored filesystem.
//!
//! Safety: a run is trusted only if it is whole chunks inside the device;
//! anything else refuses the table (the caller then arms with one origin
//! line). Past the line cap, the smallest free runs are dropped, that is,
//! protected like used chunks: the cap can only cost copies, never data.

use devicemapper::{Device, Sectors, TargetLine};

use super::target::{OriginParams, Table, Target};

/// A table, and what it took from the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmedTable {
    pub table: Table,
    /// Chunks mapped linear (never copied).
    pub free_chunks: u64,
    /// Free runs left under snapshot-origin to stay within the line cap.
    pub runs_dropped: usize,
    /// The runs mapped linear (`free_runs` less those dropped at the cap).
    pub runs: Vec<(u64, u64)>,
}

/// Builds the armed table for a raw device of `sectors` sectors, in
/// chunks of `chunk_sectors`, with `free_runs` as `(first chunk, count)`
/// sorted and disjoint, and at most `max_lines` lines (at least 1).
pub fn armed_table(
    raw: Device,
    sectors: u64,
    chunk_sectors: u64,
    free_runs: &[(u64, u64)],
    max_lines: usize,
) -> Result<ArmedTable, String> {
    if chunk_sectors == 0 || !chunk_sectors.is_power_of_two() {
        return Err(format!("chunk of {chunk_sectors} sectors is not a power of two"));
    }
    if sectors == 0 || max_lines == 0 {
        return Err("empty device or no lines allowed".into());
    }
    let mut prev_end = 0u64;
    for &(first, count) in free_runs {
        let end = first.checked_add(count).ok_or("free run overflows")?;
        if count == 0 || first < prev_end {
            return Err(format!("free run {first}+{count} is empty, unsorted or overlapping"));
        }
        let end_sector = end.checked_mul(chunk_sectors).ok_or("free run overflows")?;
        if end_sector > sectors {
            return Err(format!("free run {first}+{count} ends past the device ({sectors} sectors)"));
        }
        prev_end = end;
    }
    // Each kept run adds at most two lines (itself and the origin after it).
    let keep = (max_lines - 1) / 2;
    let mut kept: Vec<(u64, u64)> = free_runs.to_vec();
    let runs_dropped = kept.len().saturating_sub(keep);
    if runs_dropped > 0 {
        // Largest first; ties by position, so the result is deterministic.
        kept.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        kept.truncate(keep);
        kept.sort();
    }
    let origin = || Target::Origin(OriginParams { origin: raw });
    let mut lines = Vec::with_capacity(kept.len() * 2 + 1);
    let mut pos = 0u64;
    let mut free_chunks = 0;
    for &(first, count) in &kept {
        let (start, len) = (first * chunk_sectors, count * chunk_sectors);
        if start > pos {
            lines.push(TargetLine::new(Sectors(pos), Sectors(start - pos), origin()));
        }
        lines.push(TargetLine::new(Sectors(start), Sectors(len), Target::linear(raw, Sectors(start))));
        free_chunks += count;
        pos = start + len;
    }
    if pos < sectors {
        lines.push(TargetLine::new(Sectors(pos), Sectors(sectors - pos), origin()));
    }
    let table = Table { lines };
    table.check()?;
    Ok(ArmedTable { table, free_chunks, runs_dropped, runs: kept })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: Device = Device { major: 8, minor: 16 };

    /// Every sector maps to the same sector of the raw device, and is
    /// linear only inside a free run.
    fn check_identity(t: &ArmedTable, sectors: u64, chunk: u64, runs: &[(u64, u64)]) {
        assert_eq!(*t.table.len(), sectors);
        for l in &t.table.lines {
            match &l.params {
                Target::Linear(p) => {
                    assert_eq!(*p.start_offset, *l.start, "linear maps S to S");
                    assert_eq!(p.device, RAW);
                    let (a, b) = (*l.start / chunk, (*l.start + *l.length) / chunk);
                    assert_eq!(*l.start % chunk + *l.length % chunk, 0, "whole chunks");
                    for c in a..b {
                        assert!(runs.iter().any(|&(f, n)| f <= c && c < f + n), "chunk {c} linear but used");
                    }
                }
                Target::Origin(p) => assert_eq!(p.origin, RAW),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn free_runs_become_linear_lines_between_origin_lines() {
        let runs = [(0, 2), (5, 3), (10, 1)];
        let t = armed_table(RAW, 16 * 8, 8, &runs, 1000).unwrap();
        let text = t.table.to_string();
        assert_eq!(
            text,
            "0 16 linear 8:16 0\n16 24 snapshot-origin 8:16\n40 24 linear 8:16 40\n64 16 snapshot-origin 8:16\n\
             80 8 linear 8:16 80\n88 40 snapshot-origin 8:16\n"
        );
        assert_eq!((t.free_chunks, t.runs_dropped), (6, 0));
        check_identity(&t, 128, 8, &runs);
    }

    #[test]
    fn an_armed_table_reads_back_as_snapshot_origin_and_a_foreign_mix_does_not() {
        use crate::dm::target::SNAPSHOT_ORIGIN;
        let t = armed_table(RAW, 16 * 8, 8, &[(0, 2), (5, 3)], 100).unwrap();
        assert_eq!(t.table.kind(), Some(SNAPSHOT_ORIGIN), "the backend treats it as armed");
        // A linear line that does not map S to S, or onto another device,
        // is not ours: never taken for an armed table.
        for foreign in [
            "0 16 linear 8:16 8\n16 112 snapshot-origin 8:16\n",
            "0 16 linear 8:32 0\n16 112 snapshot-origin 8:16\n",
            "0 16 snapshot-origin 8:32\n16 112 snapshot-origin 8:16\n",
        ] {
            let lines: Vec<(u64, u64, String, String)> = foreign
                .lines()
                .map(|l| {
                    let w: Vec<&str> = l.splitn(4, ' ').collect();
                    (w[0].parse().unwrap(), w[1].parse().unwrap(), w[2].to_string(), w[3].to_string())
                })
                .collect();
            let table = <Table as devicemapper::TargetTable>::from_raw_table(&lines).unwrap();
            assert_eq!(table.kind(), None, "{foreign}");
        }
    }

    #[test]
    fn no_free_runs_is_one_origin_line_and_a_run_to_the_end_needs_no_tail() {
        let t = armed_table(RAW, 100, 8, &[], 10).unwrap();
        assert_eq!(t.table.to_string(), "0 100 snapshot-origin 8:16\n");
        let t = armed_table(RAW, 96, 8, &[(4, 8)], 10).unwrap();
        assert_eq!(t.table.to_string(), "0 32 snapshot-origin 8:16\n32 64 linear 8:16 32\n");
    }

    #[test]
    fn past_the_cap_the_smallest_runs_stay_protected() {
        let runs: Vec<(u64, u64)> = (0..50).map(|i| (i * 10, 1 + (i % 7))).collect();
        let t = armed_table(RAW, 600 * 8, 8, &runs, 21).unwrap();
        assert!(t.table.lines.len() <= 21, "{} lines", t.table.lines.len());
        assert_eq!(t.runs_dropped, 40);
        let mut sizes: Vec<u64> = runs.iter().map(|r| r.1).collect();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(t.free_chunks, sizes[..10].iter().sum::<u64>(), "the ten largest kept");
        assert_eq!(t.runs.len(), 10);
        assert!(t.runs.windows(2).all(|w| w[0].0 + w[0].1 < w[1].0), "kept runs stay sorted");
        assert_eq!(t.runs.iter().map(|r| r.1).sum::<u64>(), t.free_chunks);
        check_identity(&t, 600 * 8, 8, &runs);
        let one = armed_table(RAW, 600 * 8, 8, &runs, 1).unwrap();
        assert_eq!(one.table.lines.len(), 1, "a cap of one line is plain snapshot-origin");
    }

    #[test]
    fn runs_that_are_not_whole_chunks_inside_the_device_are_refused() {
        for runs in [vec![(0, 0)], vec![(3, 2), (4, 1)], vec![(5, 1), (1, 1)], vec![(15, 2)], vec![(u64::MAX, 2)]] {
            assert!(armed_table(RAW, 16 * 8, 8, &runs, 100).is_err(), "{runs:?}");
        }
        // The last chunk is partial (130 sectors = 16 chunks + 2): a run
        // may not include it.
        assert!(armed_table(RAW, 130, 8, &[(16, 1)], 100).is_err());
        assert!(armed_table(RAW, 130, 8, &[(15, 1)], 100).is_ok());
        assert!(armed_table(RAW, 128, 6, &[], 100).is_err(), "chunk not a power of two");
    }
}
