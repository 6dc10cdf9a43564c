//! The SVG plot (plotters, SVG backend only): throughput ratio to the idle
//! stack per workload for each armed configuration, and the rollback's
//! time over changed data.

use std::path::Path;

use plotters::prelude::*;

use super::fio::{Variant, Workload};
use super::plan::Config;
use super::report::BenchReport;

#[derive(Debug, thiserror::Error)]
#[error("Drawing the plot {path}: {detail}")]
pub struct PlotError {
    path: std::path::PathBuf,
    detail: String,
}

/// The x axis of the ratio chart: every workload and variant measured.
fn categories(r: &BenchReport) -> Vec<(Workload, Variant)> {
    let mut c: Vec<(Workload, Variant)> = Vec::new();
    for row in &r.rows {
        if !c.contains(&(row.workload, row.variant)) {
            c.push((row.workload, row.variant));
        }
    }
    c
}

fn short(w: Workload, v: Variant) -> String {
    let v = match v {
        Variant::NewFile => "new",
        Variant::Overwrite => "over",
        Variant::Rewrite => "re",
        Variant::Baseline => "base",
    };
    format!(
        "{} {v}",
        w.as_str()
            .replace("randwrite-4k", "rw4k")
            .replace("seq-write-1m", "seq")
            .replace("randread-4k", "rr4k")
            .replace("mixed-70-30", "mix")
    )
}

/// A named line of the rollback chart.
type Series = (&'static str, RGBColor, Vec<(f64, f64)>);

/// Writes the plot to `path`.
pub fn write_svg(r: &BenchReport, path: &Path) -> Result<(), PlotError> {
    let text = svg(r).map_err(|e| PlotError { path: path.to_path_buf(), detail: e.detail })?;
    std::fs::write(path, text).map_err(|e| PlotError { path: path.to_path_buf(), detail: e.to_string() })
}

/// The plot as SVG text (`write_svg`, and inline in `bench --html`).
pub fn svg(r: &BenchReport) -> Result<String, PlotError> {
    let mut buf = String::new();
    draw(r, &mut buf).map_err(|detail| PlotError { path: "(in memory)".into(), detail })?;
    Ok(buf)
}

fn draw(r: &BenchReport, buf: &mut String) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = SVGBackend::with_string(buf, (1100, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(520);

    let cats = categories(r);
    let configs: Vec<Config> = {
        let mut v: Vec<Config> = Vec::new();
        for row in &r.rows {
            if row.ratio.is_some() && !v.contains(&row.config) {
                v.push(row.config);
            }
        }
        v
    };
    let ymax = r.rows.iter().filter_map(|x| x.ratio).fold(1.2f64, f64::max).min(4.0);
    let mut chart = ChartBuilder::on(&top)
        .caption(format!("Throughput over the idle stack ({}, {})", r.date, r.machine), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(70)
        .y_label_area_size(50)
        .build_cartesian_2d(-0.5f64..(cats.len() as f64 - 0.5), 0f64..ymax)
        .map_err(|e| err(&e))?;
    let labels = cats.clone();
    chart
        .configure_mesh()
        .x_labels(cats.len().max(1))
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() > 0.01 || i < 0.0 {
                return String::new();
            }
            labels.get(i as usize).map(|(w, v)| short(*w, *v)).unwrap_or_default()
        })
        .x_label_style(("sans-serif", 11).into_font().transform(FontTransform::Rotate90))
        .y_desc("ratio to idle (f2fs: to plain)")
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new([(-0.5, 1.0), (cats.len() as f64 - 0.5, 1.0)], BLACK.mix(0.3)))
        .map_err(|e| err(&e))?;
    for (i, c) in configs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = cats
            .iter()
            .enumerate()
            .filter_map(|(x, (w, v))| {
                let row = r.rows.iter().find(|row| row.config == *c && row.workload == *w && row.variant == *v)?;
                Some((x as f64, row.ratio?))
            })
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(c.label())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled()))).map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(&e))?;

    let l = &r.lifecycle;
    let xmax = l.rollbacks.iter().map(|p| p.changed_mib).max().unwrap_or(16) as f64 * 1.05;
    let tmax = l.rollbacks.iter().map(|p| p.data_mounted_s.max(p.merge_s)).fold(1.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            format!("Rollback over changed data (device writes {:.1} MiB/s sequentially)", l.device_write_mib_s),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..xmax, 0f64..tmax)
        .map_err(|e| err(&e))?;
    chart.configure_mesh().x_desc("changed data, MiB").y_desc("seconds").draw().map_err(|e| err(&e))?;
    let series: [Series; 3] = [
        (
            "power on to /data mounted",
            BLUE,
            l.rollbacks.iter().map(|p| (p.changed_mib as f64, p.data_mounted_s)).collect(),
        ),
        ("merge (rewindd)", RED, l.rollbacks.iter().map(|p| (p.changed_mib as f64, p.merge_s)).collect()),
        (
            "changed data at the device's write speed",
            GREEN,
            l.rollbacks
                .iter()
                .map(|p| (p.changed_mib as f64, p.changed_mib as f64 / l.device_write_mib_s.max(0.001)))
                .collect(),
        ),
    ];
    for (name, color, points) in series {
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled()))).map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
