//! One self-contained HTML page from a scenario report: verdict, the boots
//! on a timeline (inline SVG), every check with its detail, links to the
//! console logs when the run directory was kept. Inline CSS, no scripts, no
//! network fetches, so the page opens from a CI artifact as it is.
//!
//! COW use and merge progress over time are drawn from the boots'
//! WatchStatus samples (`sampler`), on the timeline's time axis.

use std::fmt::Write as _;
use std::path::Path;

use crate::report::{ReportError, ScenarioReport};

/// Escapes text for HTML element content and quoted attributes. Control
/// characters (other than newline and tab) become U+FFFD: they are not
/// allowed in HTML and a guest's console can produce them.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\t' => out.push(c),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A link target for a log: relative to the page's directory when both
/// are absolute (a kept run directory moves with the page if copied
/// together), else the path as recorded.
fn log_href(log: &Path, page_dir: Option<&Path>) -> String {
    let text = match page_dir {
        Some(d) if d.is_absolute() && log.is_absolute() => {
            let (l, p): (Vec<_>, Vec<_>) = (log.components().collect(), d.components().collect());
            let common = l.iter().zip(&p).take_while(|(a, b)| a == b).count();
            let mut rel = std::path::PathBuf::new();
            for _ in common..p.len() {
                rel.push("..");
            }
            for c in &l[common..] {
                rel.push(c);
            }
            rel.display().to_string()
        }
        _ => log.display().to_string(),
    };
    // Percent-encode what would break the attribute or the URL.
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'.' | b'-' | b'_' | b':' | b'~' => out.push(b as char),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

const CSS: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
h1{margin-bottom:.2em}.verdict{font-size:1.4em;font-weight:bold;padding:.2em .6em;border-radius:4px;color:#fff}\
.pass{background:#2a7d2a}.fail{background:#b02a2a}table{border-collapse:collapse;margin:1em 0}\
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}\
pre{margin:0;white-space:pre-wrap;max-width:70em}.ok{color:#2a7d2a;font-weight:bold}.bad{color:#b02a2a;font-weight:bold}";

/// The page for one report. `page_dir` is the directory the page is written
/// to; logs under it are linked relatively.
pub fn render(r: &ScenarioReport, page_dir: Option<&Path>) -> String {
    let mut h = String::new();
    let verdict = if r.passed { "PASSED" } else { "FAILED" };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>rewind scenario {name}: {verdict}</title>\
<style>{CSS}</style></head><body>\n<h1 id=\"scenario\">{name}</h1>\n\
<p><span id=\"verdict\" class=\"verdict {cls}\">{verdict}</span> on {target}, {fs}, {boots} boots, {checks} checks, {secs:.1} s</p>\n",
        name = escape(&r.scenario),
        cls = if r.passed { "pass" } else { "fail" },
        target = escape(&r.target),
        fs = escape(&r.fs),
        boots = r.boots.len(),
        checks = r.checks.len(),
        secs = r.duration_ms as f64 / 1000.0,
    );
    if let Some(e) = &r.error {
        let _ = writeln!(h, "<p class=\"bad\">Stopped early: {}</p>", escape(e));
    }
    h += &timeline(r);
    h += &status_plot(r);
    h += "<h2>Boots</h2>\n<table><tr><th>#</th><th>failure injected</th><th>last stage</th><th>ended</th><th>boot reason</th><th>duration</th><th>console</th></tr>\n";
    for b in &r.boots {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} s</td><td>{}</td></tr>",
            b.index,
            escape(b.failure.as_deref().unwrap_or("none")),
            escape(b.last_stage()),
            escape(&b.ended.as_ref().map(|e| e.to_string()).unwrap_or_else(|| "running".into())),
            escape(b.boot_reason.as_deref().unwrap_or("-")),
            b.duration_ms as f64 / 1000.0,
            if r.artifacts.is_some() {
                format!("<a href=\"{}\">console log</a>", log_href(&b.console_log, page_dir))
            } else {
                "not kept (--keep keeps it)".into()
            },
        );
    }
    h += "</table>\n<h2>Checks</h2>\n<table><tr><th></th><th>check</th><th>detail</th></tr>\n";
    for c in &r.checks {
        let _ = writeln!(
            h,
            "<tr><td class=\"{}\">{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
            if c.passed { "ok" } else { "bad" },
            if c.passed { "ok" } else { "FAIL" },
            escape(&c.name),
            escape(&c.detail),
        );
    }
    h += "</table>\n";
    if let Some(a) = &r.artifacts {
        let _ = writeln!(h, "<p>Run directory kept: {}</p>", escape(&a.display().to_string()));
    }
    h += "</body></html>\n";
    h
}

/// One bar per boot, boots laid end to end on a common time axis; stage
/// markers are ticks inside each bar. Red: a failure was injected.
fn timeline(r: &ScenarioReport) -> String {
    let total: u64 = r.boots.iter().map(|b| b.duration_ms.max(1)).sum::<u64>().max(1);
    let (width, left, row) = (WIDTH, LEFT, 34.0_f64);
    let height = row * r.boots.len() as f64 + 30.0;
    let scale = (width - left - 10.0) / total as f64;
    let mut s = format!(
        "<h2>Timeline</h2>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-size=\"12\" font-family=\"sans-serif\">\n"
    );
    let mut start = 0u64;
    for (i, b) in r.boots.iter().enumerate() {
        let y = 10.0 + row * i as f64;
        let x = left + start as f64 * scale;
        let w = (b.duration_ms.max(1) as f64 * scale).max(2.0);
        let fill = if b.failure.is_some() { "#d9534f" } else { "#5b9bd5" };
        let label = format!(
            "boot {}: {} / {} / {}",
            b.index,
            b.last_stage(),
            b.failure.as_deref().unwrap_or("no failure"),
            b.ended.as_ref().map(|e| e.to_string()).unwrap_or_else(|| "running".into())
        );
        let _ = writeln!(
            s,
            "<text x=\"0\" y=\"{ty}\">boot {idx}</text><rect x=\"{x:.1}\" y=\"{y}\" width=\"{w:.1}\" height=\"22\" fill=\"{fill}\"><title>{t}</title></rect>",
            ty = y + 15.0,
            idx = b.index,
            t = escape(&label),
        );
        for (stage, ms) in b.stages.iter().zip(&b.stage_ms) {
            let sx = x + (*ms).min(b.duration_ms) as f64 * scale;
            let _ = writeln!(
                s,
                "<line x1=\"{sx:.1}\" y1=\"{y}\" x2=\"{sx:.1}\" y2=\"{y2}\" stroke=\"#1b2a3a\" stroke-opacity=\"0.6\"><title>{}</title></line>",
                escape(stage),
                y2 = y + 22.0
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{tx:.1}\" y=\"{ty}\" fill=\"#fff\">{t}</text>",
            tx = x + 4.0,
            ty = y + 15.0,
            t = escape(&format!("{} ({:.1} s)", b.last_stage(), b.duration_ms as f64 / 1000.0)),
        );
        start += b.duration_ms.max(1);
    }
    let _ = writeln!(
        s,
        "<text x=\"{left}\" y=\"{}\">0 s</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.1} s</text></svg>",
        height - 4.0,
        width - 10.0,
        height - 4.0,
        total as f64 / 1000.0
    );
    s
}

/// The timeline's geometry: boots end to end over `WIDTH - LEFT - 10`.
const WIDTH: f64 = 1000.0;
const LEFT: f64 = 60.0;

/// COW use (share of the COW store in use, all partitions together) and
/// merge progress (sectors merged of those to merge) of each WatchStatus
/// sample, in percent, boots laid end to end as on the timeline. A line
/// per boot and series; a boot with no samples (a raw boot, rewindd not
/// up yet when it ended) leaves a gap.
fn status_plot(r: &ScenarioReport) -> String {
    let mut h = String::from("<h2>COW use and merge progress</h2>\n");
    if r.boots.iter().all(|b| b.status_samples.is_empty()) {
        h += "<p id=\"no-samples\">No WatchStatus samples in this report (the harness samples rewindd when \
<code>--report</code> or <code>--html</code> is given; raw boots have no rewindd).</p>\n";
        return h;
    }
    let total: u64 = r.boots.iter().map(|b| b.duration_ms.max(1)).sum::<u64>().max(1);
    let (top, plot_h) = (10.0_f64, 160.0_f64);
    let scale = (WIDTH - LEFT - 10.0) / total as f64;
    let y_of = |pct: f64| top + plot_h * (1.0 - pct.clamp(0.0, 100.0) / 100.0);
    let _ = writeln!(
        h,
        "<svg id=\"status-plot\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{}\" font-size=\"12\" font-family=\"sans-serif\">",
        top + plot_h + 40.0
    );
    for pct in [0.0, 50.0, 100.0] {
        let y = y_of(pct);
        let _ = writeln!(
            h,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ccc\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{pct:.0} %</text>",
            WIDTH - 10.0,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let (mut peak, mut store, mut merge_points) = (0u64, 0u64, 0usize);
    let mut start = 0u64;
    for b in &r.boots {
        let x0 = LEFT + start as f64 * scale;
        let x_of = |ms: u64| x0 + ms.min(b.duration_ms) as f64 * scale;
        let mut cow = Vec::new();
        let mut merge = Vec::new();
        // rewindd keeps reporting a finished merge's totals: a sample
        // counts while the merge runs, and once more as it reaches 100 %.
        let mut running = false;
        for smp in &b.status_samples {
            let used: u64 = smp.partitions.iter().map(|p| p.cow_used_bytes).sum();
            let size: u64 = smp.partitions.iter().map(|p| p.cow_bytes).sum();
            if size > 0 {
                peak = peak.max(used);
                store = store.max(size);
                cow.push((x_of(smp.ms), y_of(used as f64 * 100.0 / size as f64)));
            }
            let done: u64 = smp.partitions.iter().map(|p| p.merge_done_sectors).sum();
            let todo: u64 = smp.partitions.iter().map(|p| p.merge_total_sectors).sum();
            if todo > 0 && (done < todo || running) {
                merge.push((x_of(smp.ms), y_of(done as f64 * 100.0 / todo as f64)));
            }
            running = todo > 0 && done < todo;
        }
        merge_points += merge.len();
        for (class, color, pts) in [("cow-curve", "#e08a00", &cow), ("merge-curve", "#2a7d2a", &merge)] {
            if pts.is_empty() {
                continue;
            }
            let list: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = writeln!(
                h,
                "<polyline class=\"{class}\" points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"><title>boot {}</title></polyline>",
                list.join(" "),
                b.index
            );
            for (x, y) in pts.iter() {
                let _ = writeln!(h, "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"{color}\"/>");
            }
        }
        start += b.duration_ms.max(1);
        let sep = LEFT + start as f64 * scale;
        let _ = writeln!(
            h,
            "<line x1=\"{sep:.1}\" y1=\"{top}\" x2=\"{sep:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>",
            top + plot_h
        );
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let _ = writeln!(
        h,
        "<text x=\"{LEFT}\" y=\"{ly:.1}\" fill=\"#e08a00\">COW used, % of the store (peak {:.1} MiB of {:.1} MiB)</text>\
<text x=\"{mx:.1}\" y=\"{ly:.1}\" fill=\"#2a7d2a\">merge, % merged ({merge_points} samples while merging)</text></svg>",
        mib(peak),
        mib(store),
        ly = top + plot_h + 25.0,
        mx = LEFT + 480.0,
    );
    h
}

/// Writes the page for `r` to `path`; logs under the page's directory are
/// linked relatively.
pub fn write(r: &ScenarioReport, path: &Path) -> Result<(), ReportError> {
    let dir = path
        .parent()
        .and_then(|d| std::fs::canonicalize(if d.as_os_str().is_empty() { Path::new(".") } else { d }).ok());
    crate::report::write(path, &render(r, dir.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Check;

    fn sample() -> ScenarioReport {
        let mut r = ScenarioReport::new("evil<&>\u{1b}name", "qemu", "ext4");
        r.checks.push(Check { name: "a<b".into(), passed: false, detail: "x & y </pre><script>".into() });
        r.finish();
        r
    }

    #[test]
    fn escapes_every_report_string() {
        let page = render(&sample(), None);
        assert!(page.contains("evil&lt;&amp;&gt;\u{FFFD}name"));
        assert!(page.contains("x &amp; y &lt;/pre&gt;&lt;script&gt;"));
        assert!(!page.contains("<script"));
        assert!(!page.contains('\u{1b}'));
        assert!(page.contains("FAILED"));
    }

    #[test]
    fn no_network_references() {
        let page = render(&sample(), None);
        // The only URL-ish text allowed is the SVG namespace (not fetched).
        assert!(!page.replace("http://www.w3.org/2000/svg", "").contains("http"));
    }

    /// COW filling over boot 2 (the attempt), a merge over boot 5 (the
    /// rollback), as the sampler records them.
    fn with_samples(mut r: ScenarioReport) -> ScenarioReport {
        use crate::sampler::{PartitionSample, StatusSample};
        let smp = |ms, phase: &str, used, done, total| StatusSample {
            ms,
            phase: phase.into(),
            partitions: vec![PartitionSample {
                name: "userdata".into(),
                cow_used_bytes: used,
                cow_bytes: 128 << 20,
                merge_done_sectors: done,
                merge_total_sectors: total,
            }],
        };
        r.boots[1].status_samples =
            (0..8).map(|i| smp(3000 + i * 2000, "checkpointing", i * (8 << 20), 0, 0)).collect();
        r.boots[4].status_samples = vec![
            smp(2000, "rolling-back", 56 << 20, 0, 1000),
            smp(2250, "rolling-back", 30 << 20, 500, 1000),
            smp(2500, "rolling-back", 2 << 20, 990, 1000),
            smp(2600, "rolling-back", 0, 1000, 1000),
            smp(2700, "rolled-back", 0, 1000, 1000),
            smp(2750, "idle", 0, 0, 0),
        ];
        r
    }

    #[test]
    fn the_status_plot_has_a_curve_per_series_or_says_why_not() {
        let page = render(&crate::story::tests::demo_report(), None);
        assert!(page.contains("id=\"no-samples\""));
        assert!(!page.contains("cow-curve"));
        let page = render(&with_samples(crate::story::tests::demo_report()), None);
        assert!(!page.contains("id=\"no-samples\""));
        assert_eq!(page.matches("class=\"cow-curve\"").count(), 2, "boots 2 and 5");
        assert_eq!(page.matches("class=\"merge-curve\"").count(), 1, "boot 5 only");
        assert!(page.contains("peak 56.0 MiB of 128.0 MiB"), "{page}");
        assert!(page.contains("(4 samples while merging)"), "the finished merge counts once");
        // 50 % merged sits halfway up the 160-pixel plot (top at 10).
        assert!(page.contains(",90.0 "), "{page}");
    }

    #[test]
    fn log_links_are_relative_under_the_page_dir() {
        assert_eq!(log_href(Path::new("/a/b/run 1/console.log"), Some(Path::new("/a/b"))), "run%201/console.log");
        assert_eq!(log_href(Path::new("/x/c.log"), Some(Path::new("/a/b"))), "../../x/c.log");
        assert_eq!(log_href(Path::new("rel/c.log"), None), "rel/c.log");
    }

    /// Runs chromium with a 60 s limit; kills it when over. None: timed out.
    fn chromium(args: &[String]) -> Option<std::process::Output> {
        use std::process::{Command, Stdio};
        let mut child = Command::new("chromium")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting chromium");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if child.try_wait().expect("waiting for chromium").is_some() {
                return Some(child.wait_with_output().expect("reading chromium's output"));
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    #[test]
    fn html_report_renders_in_headless_chromium() {
        let found = std::process::Command::new("chromium").arg("--version").output().is_ok();
        if !found {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "chromium is missing under CI (./dev setup installs it)"
            );
            eprintln!("skipping: chromium not installed (./dev setup installs it)");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = with_samples(crate::story::tests::demo_report());
        r.scenario = "three-failed-boots <&>".into();
        r.artifacts = Some("/tmp/run".into());
        r.finish();
        let verdict = if r.passed { "PASSED" } else { "FAILED" };
        let page = dir.path().join("report.html");
        write(&r, &page).expect("writing the page");
        let profile = dir.path().join("profile");
        let base = |extra: &[String]| {
            let mut a: Vec<String> = [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            a.push(format!("--user-data-dir={}", profile.display()));
            a.extend_from_slice(extra);
            a.push(format!("file://{}", page.display()));
            a
        };
        let out = chromium(&base(&["--dump-dom".into()])).expect("chromium --dump-dom took over 60 s");
        let dom = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "chromium --dump-dom failed: {}", String::from_utf8_lossy(&out.stderr));
        assert!(
            dom.contains("<h1 id=\"scenario\">three-failed-boots &lt;&amp;&gt;</h1>"),
            "name missing in DOM:\n{dom}"
        );
        assert!(dom.contains(&format!(
            "id=\"verdict\" class=\"verdict {}\">{verdict}</span>",
            if r.passed { "pass" } else { "fail" }
        )));
        assert!(dom.contains("<svg"), "timeline missing");
        assert!(dom.contains("<svg id=\"status-plot\""), "COW/merge plot missing");
        for class in ["cow-curve", "merge-curve"] {
            let at = dom
                .find(&format!("<polyline class=\"{class}\" points=\""))
                .unwrap_or_else(|| panic!("{class} missing"));
            let points = dom[at..].split('"').nth(3).unwrap_or_default();
            assert!(points.split(' ').count() >= 3, "{class} has too few points: {points}");
        }
        assert!(dom.contains("../run/boot-1/console.log\">console log</a>"), "console log link missing");
        let shot = dir.path().join("shot.png");
        let out = chromium(&base(&[format!("--screenshot={}", shot.display()), "--window-size=1200,900".into()]))
            .expect("chromium --screenshot took over 60 s");
        assert!(out.status.success(), "chromium --screenshot failed: {}", String::from_utf8_lossy(&out.stderr));
        let png = std::fs::read(&shot).expect("no screenshot written");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        assert!(png.len() > 10_000, "screenshot only {} bytes", png.len());
    }
}
