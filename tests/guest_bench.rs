//! `rewind-harness bench --quick` as CI's smoke check: every session runs
//! (idle, block mode with and without the free map, f2fs, commit and
//! rollback, the fragmented stores), and the report holds every figure,
//! its JSON and its plot are written. Timings are printed, never judged.

use rewind_harness::bench::{self, plot, report, Plan};

#[test]
fn guest_bench_quick() {
    let plan = Plan::new(true);
    let r = match bench::run(&plan) {
        Ok(r) => r,
        Err(e) => panic!("bench --quick could not run: {}", rewind_harness::scenario::error_chain(&e)),
    };
    eprint!("{}", report::render(&r));
    let missing = report::missing(&r);
    assert!(missing.is_empty(), "the report lacks figures: {missing:?}");
    assert!(r.targets.len() >= 9, "every target is reported: {:?}", r.targets);

    let dir = std::env::temp_dir().join(format!("guest-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let json = dir.join("bench.json");
    bench::write_json(&r, &json).expect("JSON written");
    let back: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("read back")).expect("the report is JSON");
    assert_eq!(back["rows"].as_array().map(Vec::len), Some(r.rows.len()));
    let svg = dir.join("bench.svg");
    plot::write_svg(&r, &svg).expect("plot written");
    let text = std::fs::read_to_string(&svg).expect("read back");
    assert!(text.starts_with("<svg") && text.contains("<polyline"), "an SVG with lines");
    let _ = std::fs::remove_dir_all(&dir);
}
