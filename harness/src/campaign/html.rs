//! `rewind-harness campaign --html FILE`: the campaign on one
//! self-contained page: the verdict, the outcomes per phase as a stacked
//! bar chart (inline SVG), the per-phase table, and every trial with where
//! its cut landed, how it ended and the command that replays it. Inline CSS
//! and SVG, no scripts, no network fetches; every string of the report is
//! escaped.

use std::fmt::Write as _;

use super::report::{CampaignReport, PhaseCounts};
use crate::html::escape;

const CSS: &str = "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}\
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.pass{color:#2a7d2a;font-weight:bold}.fail{color:#b02a2a;font-weight:bold}code{font-size:90%}";

/// Bar colours by outcome: baseline, committed, mix, no verdict.
const COLOURS: [(&str, &str); 4] =
    [("baseline", "#4a7fb5"), ("committed", "#4aa564"), ("mix", "#c0392b"), ("no verdict", "#999999")];

fn counts(c: &PhaseCounts) -> [u64; 4] {
    [c.baseline, c.committed, c.mix, c.no_verdict]
}

/// One horizontal stacked bar per phase, its length the trials run there.
fn chart(r: &CampaignReport) -> String {
    let max = r.phases.values().map(|c| c.run).max().unwrap_or(0).max(1);
    let (label_w, bar_w, row_h) = (130.0, 420.0, 24.0);
    let height = row_h * (r.phases.len() as f64 + 1.0) + 10.0;
    let mut s = format!(
        "<svg id=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" role=\"img\" \
         aria-label=\"outcomes per phase\">\n",
        w = label_w + bar_w + 60.0
    );
    for (i, (phase, c)) in r.phases.iter().enumerate() {
        let y = i as f64 * row_h + 4.0;
        let _ = writeln!(
            s,
            "<text x=\"{x}\" y=\"{ty}\" text-anchor=\"end\" font-size=\"13\">{name}</text>",
            x = label_w - 8.0,
            ty = y + 15.0,
            name = escape(phase.as_str())
        );
        let mut x = label_w;
        for (n, (word, colour)) in counts(c).into_iter().zip(COLOURS) {
            if n == 0 {
                continue;
            }
            let w = bar_w * n as f64 / max as f64;
            let _ = writeln!(
                s,
                "<rect class=\"bar\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h}\" fill=\"{colour}\">\
                 <title>{phase}: {n} {word}</title></rect>",
                h = row_h - 6.0,
                phase = escape(phase.as_str()),
            );
            x += w;
        }
        let _ = writeln!(s, "<text x=\"{:.1}\" y=\"{}\" font-size=\"12\">{}</text>", x + 6.0, y + 14.0, c.run);
    }
    // The legend.
    let y = r.phases.len() as f64 * row_h + 8.0;
    let mut x = label_w;
    for (word, colour) in COLOURS {
        let _ = writeln!(
            s,
            "<rect x=\"{x}\" y=\"{y}\" width=\"12\" height=\"12\" fill=\"{colour}\"/>\
             <text x=\"{tx}\" y=\"{ty}\" font-size=\"12\">{word}</text>",
            tx = x + 16.0,
            ty = y + 11.0
        );
        x += 100.0;
    }
    s += "</svg>\n";
    s
}

/// The page.
pub fn render(r: &CampaignReport) -> String {
    let passed = r.passed();
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>rewind campaign seed {seed}</title>\
<style>{CSS}</style></head><body>\n<h1 id=\"title\">rewind power-cut campaign, seed {seed}</h1>\n\
<p id=\"verdict\" class=\"{class}\">{verdict}: {ok} of {run} trials passed</p>\n\
<p>{fs}{enc}; shards {shards}; {run} of {trials} trials in this report. A trial passes when userdata ends exactly at the \
baseline or exactly committed (as its phase allows), never a mix, every block the baseline uses compares equal, fsck is \
clean and the next boot reaches ready.</p>\n",
        seed = r.spec.seed,
        class = if passed { "pass" } else { "fail" },
        verdict = if passed { "PASSED" } else { "FAILED" },
        ok = r.results.iter().filter(|t| t.passed).count(),
        run = r.results.len(),
        trials = r.spec.trials,
        fs = escape(&r.spec.fs),
        enc = if r.spec.metadata_encryption { ", metadata encryption" } else { "" },
        shards = escape(&r.shards.join(" ")),
    );
    h += "<h2>Outcomes per phase</h2>\n";
    h += &chart(r);
    h += "<table id=\"phases\"><tr><th>phase</th><th>run</th><th>passed</th><th>baseline</th><th>committed</th>\
<th>mix</th><th>no verdict</th><th>cut again</th><th>mean s</th></tr>\n";
    for (phase, c) in &r.phases {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.1}</td></tr>",
            escape(phase.as_str()),
            c.run,
            c.passed,
            c.baseline,
            c.committed,
            c.mix,
            c.no_verdict,
            c.repeated_cuts,
            c.duration_ms as f64 / 1000.0 / c.run.max(1) as f64
        );
    }
    h += "</table>\n<h2>Trials</h2>\n<table id=\"trials\"><tr><th>#</th><th>verdict</th><th>trial</th><th>landed</th>\
<th>ended as</th><th>rewind's phase</th><th>blocks</th><th>boots</th><th>s</th><th>replay</th></tr>\n";
    for t in &r.results {
        let mut detail = t.failed_checks.iter().map(|c| escape(c)).collect::<Vec<_>>().join("<br>");
        if let Some(e) = &t.error {
            if !detail.is_empty() {
                detail += "<br>";
            }
            detail += &format!("error: {}", escape(e));
        }
        let _ = writeln!(
            h,
            "<tr><td class=\"n\">{idx}</td><td class=\"{class}\">{verdict}</td><td>{what}{detail}</td><td>{landed}</td>\
             <td>{outcome}</td><td>{phase}</td><td>{blocks}</td><td class=\"n\">{boots}</td><td class=\"n\">{secs:.0}</td>\
             <td><code>{replay}</code></td></tr>",
            idx = t.trial.index,
            class = if t.passed { "pass" } else { "fail" },
            verdict = if t.passed { "passed" } else { "FAILED" },
            what = escape(&t.trial.describe()),
            detail = if detail.is_empty() { String::new() } else { format!("<br>{detail}") },
            landed = escape(&t.landed),
            outcome = t.outcome.map(|o| o.as_str()).unwrap_or("no verdict"),
            phase = escape(&t.final_phase),
            blocks = escape(&t.blocks),
            boots = t.boots,
            secs = t.duration_ms as f64 / 1000.0,
            replay = escape(&t.replay),
        );
    }
    h += "</table>\n</body></html>\n";
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::{Outcome, Spec, Trial, TrialResult};

    fn result(index: u64, outcome: Option<Outcome>, passed: bool) -> TrialResult {
        let spec = Spec { seed: 7, trials: 3, fs: "ext4".into(), metadata_encryption: false };
        TrialResult {
            trial: Trial::derive(7, index),
            passed,
            outcome,
            landed: "<merge 40%>".into(),
            final_phase: "rolled-back".into(),
            blocks: "equal".into(),
            call_recorded: String::new(),
            old_system: String::new(),
            boots: 3,
            duration_ms: 30_000,
            failed_checks: if passed { vec![] } else { vec!["manifest: a & b differ".into()] },
            error: None,
            replay: spec.replay(index),
            report: serde_json::Value::Null,
        }
    }

    #[test]
    fn the_page_shows_the_verdict_every_phase_and_every_trial_escaped() {
        let spec = Spec { seed: 7, trials: 3, fs: "ext4".into(), metadata_encryption: false };
        let r = CampaignReport::new(
            spec,
            vec!["1/1".into()],
            vec![
                result(0, Some(Outcome::Baseline), true),
                result(1, Some(Outcome::Mix), false),
                result(2, None, false),
            ],
        );
        let page = render(&r);
        assert!(page.contains("id=\"verdict\" class=\"fail\">FAILED: 1 of 3 trials passed"), "{page}");
        // A bar per phase drawn, a row per phase and per trial.
        assert_eq!(page.matches("<tr><td class=\"n\">").count(), 3, "one row per trial");
        for phase in r.phases.keys() {
            assert!(page.contains(&format!("<td>{}</td>", phase.as_str())), "{phase:?}");
        }
        assert!(page.matches("class=\"bar\"").count() >= r.phases.len());
        assert!(page.contains("rewind-harness campaign --seed 7 --trial 1"));
        // Report text is escaped, never markup.
        assert!(page.contains("&lt;merge 40%&gt;") && page.contains("a &amp; b differ"));
        assert!(!page.contains("<merge"));
        assert!(!page.contains("http://") || page.matches("http://").count() == 1, "only the SVG namespace");
    }

    #[test]
    fn a_passing_campaign_says_so() {
        let spec = Spec { seed: 7, trials: 1, fs: "ext4".into(), metadata_encryption: true };
        let r = CampaignReport::new(spec, vec!["1/1".into()], vec![result(0, Some(Outcome::Committed), true)]);
        let page = render(&r);
        assert!(page.contains("class=\"pass\">PASSED: 1 of 1 trials passed"));
        assert!(page.contains("metadata encryption"));
    }
}
