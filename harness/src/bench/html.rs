//! `rewind-harness bench --html FILE`: the benchmark on one self-contained
//! page: the throughput table with its ratios to the idle stack, the
//! targets met or not, the plotters plot inline, and every other figure
//! as the terminal report prints it. Inline CSS and SVG, no scripts, no
//! network fetches; every string of the report is escaped.

use std::fmt::Write as _;
use std::path::Path;

use super::plot;
use super::report::{render as render_text, BenchReport};
use super::BenchError;
use crate::html::escape;

const CSS: &str = "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}\
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.met{color:#2a7d2a;font-weight:bold}.not{color:#b02a2a;font-weight:bold}pre{white-space:pre-wrap}";

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map(|x| format!("{x:.decimals$}")).unwrap_or_else(|| "-".into())
}

/// The page. `svg`: the plot's SVG text (inlined as it is: plotters writes
/// it, and every text in it is the report's own labels).
pub fn render(r: &BenchReport, svg: &str) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>rewind benchmark {date}</title><style>{CSS}</style></head><body>\n\
<h1 id=\"title\">rewind benchmark</h1>\n<p>{date}, {machine}, {secs:.0} s{quick}; {reps} runs per figure</p>\n",
        date = escape(&r.date),
        machine = escape(&r.machine),
        secs = r.duration_s,
        quick = if r.plan.quick { ", --quick" } else { "" },
        reps = r.plan.reps,
    );
    h += "<h2>Throughput</h2>\n<p>MiB/s: median (min-max); x: ratio to the idle stack of the same run (f2fs: to its plain mount); \
COW/byte: store growth per byte written.</p>\n<table id=\"rows\"><tr><th>config</th><th>workload</th><th>on</th>\
<th>MiB/s</th><th>x</th><th>COW/byte</th></tr>\n";
    for row in &r.rows {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&row.label),
            escape(row.workload.as_str()),
            escape(row.variant.as_str()),
            escape(&row.mib_s.show(2)),
            opt(row.ratio, 2),
            escape(&row.space_per_byte.map(|x| x.show(3)).unwrap_or_else(|| "-".into())),
        );
    }
    h +=
        "</table>\n<h2>Targets (issue 10)</h2>\n<table id=\"targets\"><tr><th></th><th>goal</th><th>figure</th></tr>\n";
    for t in &r.targets {
        let (class, mark) = match t.met {
            Some(true) => ("met", "met"),
            Some(false) => ("not", "NOT met"),
            None => ("", "n/a"),
        };
        let _ = writeln!(
            h,
            "<tr><td class=\"{class}\">{mark}</td><td>{}</td><td>{}</td></tr>",
            escape(&t.goal),
            escape(&t.figure)
        );
    }
    h += "</table>\n<h2>Plot</h2>\n";
    h += svg;
    h += "\n<h2>Every figure</h2>\n<pre id=\"text\">";
    h += &escape(&render_text(r));
    h += "</pre>\n</body></html>\n";
    h
}

/// Draws the plot and writes the page to `path`.
pub fn write(r: &BenchReport, path: &Path) -> Result<(), BenchError> {
    let svg = plot::svg(r).map_err(|e| super::guest::unexpected("drawing the plot", e.to_string()))?;
    std::fs::write(path, render(r, &svg)).map_err(|source| BenchError::Write { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::fio::{Variant, Workload};
    use crate::bench::plan::{Config, Plan};
    use crate::bench::report::{Row, TargetCheck};
    use crate::bench::stats::Spread;

    fn report() -> BenchReport {
        let row = |config, label: &str, mib: &[f64], ratio| Row {
            config,
            label: label.into(),
            workload: Workload::SeqWrite,
            variant: Variant::NewFile,
            mib_s: Spread::of(mib),
            ratio,
            space_per_byte: None,
        };
        BenchReport {
            date: "2026-12-04 <now>".into(),
            machine: "2 x EPYC & co".into(),
            plan: Plan::new(true),
            duration_s: 612.0,
            rows: vec![
                row(Config::Idle, "idle", &[40.0, 42.0, 44.0], None),
                row(Config::Block { chunk_kib: 4, free_map: true }, "block 4K +free map", &[41.0], Some(0.976)),
            ],
            ota: Vec::new(),
            lifecycle: Default::default(),
            scale: Default::default(),
            free_map_read_ms: Some(102),
            session_rollbacks: Vec::new(),
            binaries: Vec::new(),
            targets: vec![TargetCheck { goal: "write < 1.1x".into(), figure: "0.98".into(), met: Some(true) }],
            notes: vec!["a note with <tags>".into()],
            samples: Vec::new(),
        }
    }

    #[test]
    fn the_page_has_the_table_the_ratios_the_targets_and_the_plot() {
        let r = report();
        let svg = plot::svg(&r).expect("plot");
        let page = render(&r, &svg);
        assert!(page.contains("<td>block 4K +free map</td><td>seq-write-1m</td>"), "{page}");
        assert!(page.contains("<td class=\"n\">42.00 (40.00-44.00)</td><td class=\"n\">-</td>"));
        assert!(page.contains("<td class=\"n\">0.98</td>"));
        assert!(page.contains("<td class=\"met\">met</td><td>write &lt; 1.1x</td>"));
        assert!(page.contains("<svg") && page.contains("<polyline"), "the plot is inline");
        assert!(page.contains("2026-12-04 &lt;now&gt;, 2 x EPYC &amp; co"));
        assert!(page.contains("note: a note with &lt;tags&gt;"));
        assert!(page.contains("Free map read at arm (block 4K +free map): 102 ms"));
        let missing = crate::bench::report::missing(&r);
        assert!(missing.contains(&"table loads".to_string()), "{missing:?}");
        let mut full = r.clone();
        full.scale.table_loads = crate::bench::tables::parse("tl 10 10 30\ntl 10 10 31\ntl 10 10 29\ntl 1000 1000 60\ntl 1000 1000 61\ntl 1000 1000 62\ntl 4096 4096 200\ntl 4096 4096 210\ntl 4096 4096 220\n", &[10, 1000, 4096]).expect("parses");
        assert!(!crate::bench::report::missing(&full).contains(&"table loads".to_string()));
        assert!(render(&full, &svg).contains(" 4096 lines: 210 (200-220)"));
        // A block configuration of the plan without its session's rollback
        // is missing; with it the page shows the merge.
        let map = Config::Block { chunk_kib: 4, free_map: true };
        assert!(missing.contains(&"block 4K +free map: the rollback of its attempt".to_string()), "{missing:?}");
        full.session_rollbacks.push(crate::bench::matrix::SessionRollback {
            config: map,
            cow_used_bytes: 9 << 20,
            merged_mib: 9,
            merge_s: 0.4,
            data_mounted_s: 6.25,
        });
        let rest = crate::bench::report::missing(&full);
        assert!(!rest.contains(&"block 4K +free map: the rollback of its attempt".to_string()), "{rest:?}");
        let page = render(&full, &svg);
        assert!(page.contains("block 4K +free map   COW 9.0 MiB: merged 9 MiB in 0.4 s; /data at 6.25 s"), "{page}");
        assert!(!page.contains("<tags>") && !page.contains("<now>"));
        // Nothing fetched: the only URLs are SVG's namespace names.
        let rest = page.replace("http://www.w3.org/2000/svg", "").replace("http://www.w3.org/1999/xlink", "");
        assert!(!rest.contains("http"), "a URL in the page");
    }
}
