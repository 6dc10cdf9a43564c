//! Table load time against the table's size: a synthetic armed table of N
//! lines (snapshot-origin and linear lines alternating, as an armed top
//! device over the free map has them) loaded and resumed on a scratch dm
//! device, N from a handful to the line cap (4,096). The scratch device
//! maps the raw userdata partition, which rewind's own devices already
//! hold (dm shares its claim between its devices); no I/O goes through
//! it, and it is removed at the end. The time is `dmsetup load` plus
//! `dmsetup resume`, guest clock, two process starts included (the
//! 10-line figure shows that floor); median of `reps`.

use serde::Serialize;

use super::guest::{run, unexpected, BenchError, MS_CLOCK};
use super::stats::Spread;
use crate::scenario::Ctx;

/// Sectors the synthetic table spans (128 MiB: inside any bench userdata).
const SPAN: u64 = 1 << 18;
const DEV: &str = "rewind-bench-table";

#[derive(Debug, Clone, Serialize)]
pub struct TableLoadPoint {
    pub lines: u64,
    /// Each load+resume, ms.
    pub samples_ms: Vec<u64>,
    pub ms: Spread,
}

/// The script: makes the scratch device over `backing` (maj:min), then
/// per size writes the table and times `reps` load+resumes, each followed
/// by an untimed swap back to one linear line. Prints `tl <lines> <ms>`.
pub fn script(backing: &str, lines: &[u64], reps: u32) -> String {
    let sizes: Vec<String> = lines.iter().map(u64::to_string).collect();
    format!(
        "set -e; {MS_CLOCK} one='0 {SPAN} linear {backing} 0'; \
         dmsetup remove {DEV} 2>/dev/null || true; dmsetup create {DEV} --table \"$one\"; \
         for n in {sizes}; do \
           awk -v n=$n -v s={SPAN} -v d={backing} 'BEGIN {{ len = int(s / n); for (i = 0; i < n; i++) {{ \
             st = i * len; l = (i == n - 1) ? s - st : len; \
             if (i % 2 == 0) printf \"%d %d snapshot-origin %s\\n\", st, l, d; \
             else printf \"%d %d linear %s %d\\n\", st, l, d, st }} }}' > /tmp/bench-table-$n; \
           r=0; while [ $r -lt {reps} ]; do \
             a=$(ms); dmsetup load {DEV} /tmp/bench-table-$n; dmsetup resume {DEV}; b=$(ms); \
             echo \"tl $n $(dmsetup table {DEV} | wc -l) $((b-a))\"; \
             dmsetup load {DEV} --table \"$one\"; dmsetup resume {DEV}; r=$((r+1)); \
           done; rm -f /tmp/bench-table-$n; \
         done; dmsetup remove {DEV}",
        sizes = sizes.join(" ")
    )
}

/// `tl <lines asked> <lines loaded> <ms>` lines, grouped by size. A size
/// whose loaded table does not have the lines asked is an error.
pub fn parse(out: &str, lines: &[u64]) -> Result<Vec<TableLoadPoint>, String> {
    let mut points: Vec<TableLoadPoint> = Vec::new();
    for &n in lines {
        let mut samples = Vec::new();
        for l in out.lines().filter_map(|l| l.strip_prefix("tl ")) {
            let w: Vec<u64> = l.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            if let [asked, loaded, ms] = w[..] {
                if asked == n {
                    if loaded != n {
                        return Err(format!("{n} lines asked, the loaded table has {loaded}"));
                    }
                    samples.push(ms);
                }
            }
        }
        let ms = Spread::of(&samples.iter().map(|&x| x as f64).collect::<Vec<_>>());
        points.push(TableLoadPoint { lines: n, samples_ms: samples, ms });
    }
    Ok(points)
}

/// Measures in the booted guest of `cx` (rewind's idle or armed stack up).
pub fn measure(cx: &mut Ctx, lines: &[u64], reps: u32) -> Result<Vec<TableLoadPoint>, BenchError> {
    // The raw partition: the last word of the top device's first line
    // but one (`0 <len> linear <maj:min> 0`, or snapshot-origin's device).
    let first = run(cx, "dmsetup table rewind-userdata | head -n 1", 60)?;
    let w: Vec<&str> = first.split_whitespace().collect();
    let backing = match w.as_slice() {
        [_, _, "linear" | "snapshot-origin", dev, ..] if dev.contains(':') => dev.to_string(),
        _ => return Err(unexpected("rewind-userdata's table", first)),
    };
    let out = run(cx, &script(&backing, lines, reps), 900)?;
    let points = parse(&out, lines).map_err(|e| unexpected(&e, out.clone()))?;
    for p in &points {
        crate::progress::log(&format!("[bench] table load+resume, {} lines: {:?} ms", p.lines, p.samples_ms));
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_are_grouped_by_size_and_a_short_table_is_an_error() {
        let out =
            "tl 10 10 31\ntl 10 10 29\ntl 10 10 30\nnoise\ntl 4096 4096 212\ntl 4096 4096 230\ntl 4096 4096 205\n";
        let p = parse(out, &[10, 4096]).expect("parses");
        assert_eq!(p[0].samples_ms, [31, 29, 30]);
        assert_eq!((p[1].lines, p[1].ms.median), (4096, 212.0));
        assert!(parse(out, &[1000]).expect("parses")[0].samples_ms.is_empty(), "absent: no samples");
        assert!(parse("tl 1000 999 40\n", &[1000]).expect_err("short").contains("999"));
    }

    #[test]
    fn the_script_times_every_size_and_removes_its_device() {
        let s = script("254:16", &[10, 1000], 3);
        assert!(s.contains("for n in 10 1000;"), "{s}");
        assert!(s.contains("-v d=254:16") && s.contains("[ $r -lt 3 ]"), "{s}");
        assert!(s.ends_with(&format!("dmsetup remove {DEV}")), "{s}");
    }
}
