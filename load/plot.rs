//! The run drawn for the docs: events written and committed per second, and
//! notifications received, over the run (plotters, SVG).

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use crate::report::Report;

pub fn draw(report: &Report, path: &Path) -> anyhow::Result<()> {
    let samples = &report.timeline;
    let rate = |f: fn(&crate::report::Sample) -> u64| -> Vec<(f64, f64)> {
        samples
            .windows(2)
            .map(|w| {
                let dt = (w[1].t - w[0].t).max(1e-3);
                (w[1].t, f(&w[1]).saturating_sub(f(&w[0])) as f64 / dt)
            })
            .collect()
    };
    let written = rate(|s| s.events_written);
    let committed = rate(|s| s.events_committed);
    let notified = rate(|s| s.notifications);
    let t_max = samples.last().map(|s| s.t).unwrap_or(1.0).max(1.0);
    let y_max = written
        .iter()
        .chain(&committed)
        .chain(&notified)
        .map(|p| p.1)
        .fold(1.0, f64::max)
        * 1.1;
    let latency: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| s.latency_p99_ms.map(|l| (s.t, l)))
        .collect();
    let latency_max = latency.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "amon-load {}: {} zones, {}/s, hold {} ms",
        report.scenario, report.zones, report.rate, report.hold_ms
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .right_y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, 0.0..y_max)?
        .set_secondary_coord(0.0..t_max, 0.0..latency_max);
    chart
        .configure_mesh()
        .x_desc("seconds since the first step")
        .y_desc("per second")
        .draw()?;
    for (series, color, name) in [
        (written, BLUE, "events written/s"),
        (committed, GREEN, "events committed/s"),
        (notified, RED, "notifications/s"),
    ] {
        chart
            .draw_series(LineSeries::new(series, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_secondary_axes()
        .y_desc("fault latency p99, ms")
        .draw()?;
    chart
        .draw_secondary_series(latency.iter().map(|&(t, l)| Circle::new((t, l), 2, BLACK.filled())))?
        .label("fault latency p99 (right axis)")
        .legend(|(x, y)| Circle::new((x + 10, y), 2, BLACK.filled()));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
