//! The benchmark's report: every figure with its ratio to the idle stack
//! of the same run, as a terminal table and as JSON, and the project's
//! targets (issue 10) said met or not. Nothing here asserts a timing.

use std::fmt::Write as _;

use serde::Serialize;

use super::fio::{Variant, Workload};
use super::lifecycle::LifecycleOut;
use super::matrix::{OtaSample, Sample, SessionRollback};
use super::plan::{Config, Plan};
use super::scale::ScaleOut;
use super::stats::{ratio, Spread};

/// One workload and variant in one configuration, over the repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub config: Config,
    pub label: String,
    pub workload: Workload,
    pub variant: Variant,
    pub mib_s: Spread,
    /// Median over the reference's median (the idle stack, or f2fs plain).
    pub ratio: Option<f64>,
    /// Growth of the COW store (f2fs: unusable space) per byte written.
    pub space_per_byte: Option<Spread>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OtaRow {
    pub label: String,
    pub sample: OtaSample,
    /// Space used per byte the workload wrote.
    pub space_per_byte: Option<f64>,
    pub store_percent: Option<f64>,
    /// Its time over the idle stack's.
    pub time_ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BinarySize {
    pub name: String,
    pub build: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub goal: String,
    pub figure: String,
    /// None: not measured in this run.
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub date: String,
    pub machine: String,
    pub plan: Plan,
    pub duration_s: f64,
    pub rows: Vec<Row>,
    pub ota: Vec<OtaRow>,
    pub lifecycle: LifecycleOut,
    pub scale: ScaleOut,
    /// How long the arm of the 4 KiB +free map session took to read the
    /// free map from the ext4 bitmaps.
    pub free_map_read_ms: Option<u64>,
    /// The rollback of each block session's attempt (the same workloads).
    pub session_rollbacks: Vec<SessionRollback>,
    pub binaries: Vec<BinarySize>,
    pub targets: Vec<TargetCheck>,
    pub notes: Vec<String>,
    pub samples: Vec<Sample>,
}

/// Rows over `samples`, in the plan's order of configurations.
pub fn rows(samples: &[Sample]) -> Vec<Row> {
    let mut keys: Vec<(Config, Workload, Variant)> = Vec::new();
    for s in samples {
        let k = (s.config, s.workload, s.variant);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let of = |k: &(Config, Workload, Variant)| -> Vec<&Sample> {
        samples.iter().filter(|s| (s.config, s.workload, s.variant) == *k).collect()
    };
    keys.iter()
        .map(|k| {
            let own = of(k);
            let mib_s = Spread::of(&own.iter().map(|s| s.fio.mib_s()).collect::<Vec<_>>());
            let reference = of(&(k.0.reference(), k.1, k.2));
            let ref_mib_s = Spread::of(&reference.iter().map(|s| s.fio.mib_s()).collect::<Vec<_>>());
            let per_byte: Vec<f64> =
                own.iter().filter_map(|s| Some(s.space_bytes? as f64 / s.fio.write_bytes.max(1) as f64)).collect();
            Row {
                config: k.0,
                label: k.0.label(),
                workload: k.1,
                variant: k.2,
                mib_s,
                ratio: if k.0 == k.0.reference() || ref_mib_s.n == 0 {
                    None
                } else {
                    ratio(mib_s.median, ref_mib_s.median)
                },
                space_per_byte: (!per_byte.is_empty() && k.1 != Workload::RandRead).then(|| Spread::of(&per_byte)),
            }
        })
        .collect()
}

pub fn ota_rows(samples: &[OtaSample]) -> Vec<OtaRow> {
    let idle = samples.iter().find(|s| s.config == Config::Idle).map(|s| s.runtime_ms as f64);
    let plain = samples.iter().find(|s| s.config == Config::F2fsPlain).map(|s| s.runtime_ms as f64);
    samples
        .iter()
        .map(|s| {
            let written = (s.new_bytes + s.database_bytes) as f64;
            let reference = if s.config == Config::F2fsDisabled { plain } else { idle };
            OtaRow {
                label: s.config.label(),
                sample: s.clone(),
                space_per_byte: s.space_bytes.map(|b| b as f64 / written.max(1.0)),
                store_percent: s.space_bytes.zip(s.store_bytes).map(|(b, t)| b as f64 * 100.0 / t.max(1) as f64),
                time_ratio: if s.config == s.config.reference() {
                    None
                } else {
                    reference.and_then(|r| ratio(r, s.runtime_ms as f64))
                },
            }
        })
        .collect()
}

fn find(rows: &[Row], c: Config, w: Workload, v: Variant) -> Option<&Row> {
    rows.iter().find(|r| r.config == c && r.workload == w && r.variant == v)
}

/// The project's goals (issue 10, "Targets"), judged on this run's
/// default configuration (4 KiB chunks), with and without the free map.
pub fn targets(r: &BenchReport) -> Vec<TargetCheck> {
    let mut t = Vec::new();
    let at_least = |x: Option<f64>, goal: f64| x.map(|x| x >= goal);
    for free_map in [false, true] {
        let c = Config::Block { chunk_kib: 4, free_map };
        let tag = c.label();
        let seq_new = find(&r.rows, c, Workload::SeqWrite, Variant::NewFile);
        t.push(TargetCheck {
            goal: format!("{tag}: sequential write of new files >= 95 % of idle, COW < 1 % of written"),
            figure: seq_new
                .map(|x| {
                    format!(
                        "{:.2} of idle, COW {:.2} %",
                        x.ratio.unwrap_or(0.0),
                        x.space_per_byte.map(|s| s.median * 100.0).unwrap_or(f64::NAN)
                    )
                })
                .unwrap_or_else(|| "not measured".into()),
            met: seq_new
                .map(|x| x.ratio.unwrap_or(0.0) >= 0.95 && x.space_per_byte.map(|s| s.median < 0.01).unwrap_or(false)),
        });
        let ow = find(&r.rows, c, Workload::SeqWrite, Variant::Overwrite).and_then(|x| x.ratio);
        t.push(TargetCheck {
            goal: format!("{tag}: overwrite of baseline data >= 50 %"),
            figure: ow.map(|x| format!("{x:.2} of idle")).unwrap_or_else(|| "not measured".into()),
            met: at_least(ow, 0.5),
        });
        let first = find(&r.rows, c, Workload::RandWriteFsync, Variant::Overwrite).and_then(|x| x.ratio);
        let again = find(&r.rows, c, Workload::RandWriteFsync, Variant::Rewrite).and_then(|x| x.ratio);
        t.push(TargetCheck {
            goal: format!("{tag}: random 4 KiB fsync write >= 80 % first write, >= 95 % rewrite"),
            figure: format!("{:.2} / {:.2} of idle", first.unwrap_or(f64::NAN), again.unwrap_or(f64::NAN)),
            met: first.zip(again).map(|(a, b)| a >= 0.8 && b >= 0.95),
        });
    }
    let l = &r.lifecycle;
    let worst_commit = l.commits.iter().map(|c| c.rewindctl_ms).max();
    t.push(TargetCheck {
        goal: "commit < 50 ms at any size".into(),
        figure: l
            .commits
            .iter()
            .map(|c| format!("{} MiB: {} ms (rewindd {} ms)", c.changed_mib, c.rewindctl_ms, c.rewindd_ms.unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(", "),
        met: worst_commit.map(|ms| ms < 50),
    });
    let slowest = l
        .rollbacks
        .iter()
        .map(|p| merge_mib_s(p.merged_mib, p.merge_s))
        .fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.min(x))));
    t.push(TargetCheck {
        goal: "rollback merge >= 50 % of the device's sequential write".into(),
        figure: format!(
            "slowest merge {:.1} MiB/s vs device {:.1} MiB/s",
            slowest.unwrap_or(f64::NAN),
            l.device_write_mib_s
        ),
        met: slowest.and_then(|m| ratio(m, l.device_write_mib_s)).map(|x| x >= 0.5),
    });
    let big = r.scale.points.iter().find(|p| p.extents_asked >= 50_000);
    t.push(TargetCheck {
        goal: "a 50,000-extent stack loaded in < 1 s".into(),
        figure: big
            .map(|p| format!("{} extents: prepare-userdata {} ms", p.extents, p.prepare_ms))
            .unwrap_or_else(|| "not measured (--quick)".into()),
        met: big.map(|p| p.prepare_ms < 1000),
    });
    t.push(TargetCheck {
        goal: "rewindd idle RSS < 8 MiB".into(),
        figure: format!("{} KiB (debug build in the guest)", l.idle.rss_kib),
        met: (l.idle.rss_kib > 0).then_some(l.idle.rss_kib < 8 * 1024),
    });
    t
}

pub fn merge_mib_s(mib: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        mib as f64 / secs
    } else {
        0.0
    }
}

fn opt(x: Option<f64>, d: usize) -> String {
    x.map(|x| format!("{x:.d$}")).unwrap_or_else(|| "-".into())
}

/// The terminal table.
pub fn render(r: &BenchReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "rewind benchmark, {} ({}), {:.0} s{}",
        r.date,
        r.machine,
        r.duration_s,
        if r.plan.quick { ", --quick" } else { "" }
    );
    let _ = writeln!(s, "Throughput, MiB/s: median (min-max) of {} runs; x = ratio to the idle stack (f2fs: to its plain mount); COW = store growth per byte written", r.plan.reps);
    let _ =
        writeln!(s, "{:<20} {:<19} {:<9} {:>22} {:>6} {:>16}", "config", "workload", "on", "MiB/s", "x", "COW/byte");
    for row in &r.rows {
        let _ = writeln!(
            s,
            "{:<20} {:<19} {:<9} {:>22} {:>6} {:>16}",
            row.label,
            row.workload.as_str(),
            row.variant.as_str(),
            row.mib_s.show(2),
            opt(row.ratio, 2),
            row.space_per_byte.map(|x| x.show(3)).unwrap_or_else(|| "-".into())
        );
    }
    let _ = writeln!(s, "\nFirst boot after an update (new files + fsync'd database pages):");
    for o in &r.ota {
        let _ = writeln!(
            s,
            "  {:<20} {:.1} MiB new + {:.2} MiB db in {} ms (x{}); space {} ({} per byte, {} % of the store)",
            o.label,
            o.sample.new_bytes as f64 / (1 << 20) as f64,
            o.sample.database_bytes as f64 / (1 << 20) as f64,
            o.sample.runtime_ms,
            opt(o.time_ratio, 2),
            o.sample
                .space_bytes
                .map(|b| format!("{:.1} MiB", b as f64 / (1 << 20) as f64))
                .unwrap_or_else(|| "-".into()),
            opt(o.space_per_byte, 3),
            opt(o.store_percent, 1)
        );
    }
    let l = &r.lifecycle;
    let _ = writeln!(
        s,
        "\nDevice sequential write (fio 1 MiB direct, idle stack): {:.1} MiB/s; power on to /data, no checkpoint: {:.2} s",
        l.device_write_mib_s, l.idle_data_mounted_s
    );
    for p in &l.rollbacks {
        let m = merge_mib_s(p.merged_mib, p.merge_s);
        let _ = writeln!(
            s,
            "  rollback of {:>5} MiB changed (COW {:.1} MiB): merge {} MiB in {:.1} s = {:.1} MiB/s (x{} of the device); /data at {:.2} s (x{} of idle)",
            p.changed_mib,
            p.cow_mib,
            p.merged_mib,
            p.merge_s,
            m,
            opt(ratio(m, l.device_write_mib_s), 2),
            p.data_mounted_s,
            opt(ratio(p.data_mounted_s, l.idle_data_mounted_s), 2)
        );
    }
    for c in &l.commits {
        let _ = writeln!(
            s,
            "  commit with {:>5} MiB changed: rewindctl {} ms, table swap {} ms (rewindd)",
            c.changed_mib,
            c.rewindctl_ms,
            c.rewindd_ms.map(|m| m.to_string()).unwrap_or_else(|| "-".into())
        );
    }
    let _ = writeln!(
        s,
        "rewindd: idle RSS {} KiB, CPU {:.2} %; after the largest merge's boot: peak RSS {} KiB, CPU {:.2} s over {:.1} s",
        l.idle.rss_kib, l.idle_cpu_percent, l.merge.hwm_kib, l.merge.cpu_s, l.merge.age_s
    );
    let _ = writeln!(s, "\nStack build+load (prepare-userdata), idle stack {} ms:", r.scale.idle_prepare_ms);
    for p in &r.scale.points {
        let _ = writeln!(
            s,
            "  {:>6} extents asked, {:>6} in the table, store {:>4} MiB: {} ms (x{} of idle)",
            p.extents_asked,
            p.extents,
            p.store_mib,
            p.prepare_ms,
            opt(ratio(p.prepare_ms as f64, r.scale.idle_prepare_ms as f64), 2)
        );
    }
    let _ = writeln!(
        s,
        "Table load+resume of a synthetic armed table (dmsetup, snapshot-origin and linear lines alternating), ms, median (min-max) of {}:",
        r.plan.table_reps
    );
    for p in &r.scale.table_loads {
        let _ = writeln!(s, "  {:>5} lines: {}", p.lines, p.ms.show(0));
    }
    let _ = writeln!(
        s,
        "Free map read at arm (block 4K +free map): {}",
        r.free_map_read_ms.map(|m| format!("{m} ms")).unwrap_or_else(|| "-".into())
    );
    if !r.session_rollbacks.is_empty() {
        let _ = writeln!(
            s,
            "Rollback of each block session's attempt (the whole matrix and the first-boot model, the merge waited for):"
        );
        for b in &r.session_rollbacks {
            let _ = writeln!(
                s,
                "  {:<20} COW {:.1} MiB: merged {} MiB in {:.1} s; /data at {:.2} s",
                b.config.label(),
                b.cow_used_bytes as f64 / (1 << 20) as f64,
                b.merged_mib,
                b.merge_s,
                b.data_mounted_s
            );
        }
    }
    let _ = writeln!(s, "\nBinaries:");
    for b in &r.binaries {
        let _ = writeln!(s, "  {:<10} {:<28} {:.2} MB", b.name, b.build, b.bytes as f64 / 1e6);
    }
    let _ = writeln!(s, "\nTargets (issue 10):");
    for t in &r.targets {
        let mark = match t.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "n/a",
        };
        let _ = writeln!(s, "  [{mark}] {}: {}", t.goal, t.figure);
    }
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}

/// What a report must hold to be complete: every section measured (used
/// by the CI smoke test; figures, never timings, are checked).
pub fn missing(r: &BenchReport) -> Vec<String> {
    let mut m = Vec::new();
    for c in r.plan.configs.iter().chain([Config::F2fsPlain].iter()) {
        for w in Workload::ALL {
            for v in w.variants() {
                match find(&r.rows, *c, w, *v) {
                    None => m.push(format!("{} {} {}", c.label(), w.as_str(), v.as_str())),
                    Some(row) if row.mib_s.n != r.plan.reps as usize || row.mib_s.median <= 0.0 => {
                        m.push(format!("{} {} {}: {} runs", c.label(), w.as_str(), v.as_str(), row.mib_s.n))
                    }
                    Some(row) => {
                        let armed = matches!(row.config, Config::Block { .. } | Config::F2fsDisabled);
                        if armed && w != Workload::RandRead && row.space_per_byte.is_none() {
                            m.push(format!("{} {} {}: no space figure", c.label(), w.as_str(), v.as_str()));
                        }
                        if row.config != row.config.reference() && row.ratio.is_none() {
                            m.push(format!("{} {} {}: no ratio", c.label(), w.as_str(), v.as_str()));
                        }
                    }
                }
            }
        }
        if !r.ota.iter().any(|o| o.sample.config == *c) {
            m.push(format!("{}: first boot after an update", c.label()));
        }
        if matches!(c, Config::Block { .. }) && !r.session_rollbacks.iter().any(|b| b.config == *c) {
            m.push(format!("{}: the rollback of its attempt", c.label()));
        }
    }
    let l = &r.lifecycle;
    if l.device_write_mib_s <= 0.0 {
        m.push("device sequential write".into());
    }
    if l.rollbacks.len() != r.plan.changed_mib.len() || l.rollbacks.iter().any(|p| p.merged_mib == 0) {
        m.push("rollback points".into());
    }
    if l.commits.len() != r.plan.changed_mib.len() || l.commits.iter().any(|c| c.rewindd_ms.is_none()) {
        m.push("commit points".into());
    }
    if l.idle.rss_kib == 0 || l.merge.hwm_kib == 0 {
        m.push("rewindd memory".into());
    }
    if r.scale.points.len() != r.plan.extents.len()
        || r.scale.points.iter().any(|p| p.extents == 0 || p.prepare_ms == 0)
    {
        m.push("scale points".into());
    }
    let loads: Vec<u64> = r.scale.table_loads.iter().map(|p| p.lines).collect();
    if loads != r.plan.table_lines || r.scale.table_loads.iter().any(|p| p.ms.n != r.plan.table_reps as usize) {
        m.push("table loads".into());
    }
    if r.plan.configs.contains(&Config::Block { chunk_kib: 4, free_map: true }) && r.free_map_read_ms.is_none() {
        m.push("free map read time".into());
    }
    if r.binaries.is_empty() {
        m.push("binary sizes".into());
    }
    m
}
