//! The two figures `bench-pipeline` draws for the benchmarks doc, as SVG:
//! throughput against offered rate, and the freshness histogram.

use plotters::prelude::*;
use std::path::Path;

/// One step of the ramp, as plotted.
pub struct RampPoint {
    pub offered: f64,
    pub accepted: f64,
    pub counted: f64,
    pub bounded: bool,
}

const SIZE: (u32, u32) = (860, 520);
const ACCEPTED: RGBColor = RGBColor(31, 119, 180);
const COUNTED: RGBColor = RGBColor(214, 39, 40);
const GUIDE: RGBColor = RGBColor(127, 127, 127);

/// Accepted and counted events/s against the offered rate, with the line
/// where they would equal it and the slowest stage's rate alone.
pub fn throughput(
    path: &Path,
    title: &str,
    points: &[RampPoint],
    slowest_alone: f64,
    max_sustained: f64,
) -> anyhow::Result<()> {
    let top = points
        .iter()
        .flat_map(|p| [p.offered, p.accepted, p.counted])
        .chain([slowest_alone])
        .fold(0.0, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..top, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("offered events/s")
        .y_desc("events/s")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, 0.0), (top, top)],
            GUIDE.stroke_width(1),
        ))?
        .label("offered = delivered")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], GUIDE));
    chart
        .draw_series(LineSeries::new(
            [(0.0, slowest_alone), (top, slowest_alone)],
            BLACK.stroke_width(1),
        ))?
        .label(format!("slowest stage alone: {slowest_alone:.0}/s"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK));
    chart
        .draw_series(LineSeries::new(
            [(max_sustained, 0.0), (max_sustained, top)],
            GUIDE.stroke_width(1),
        ))?
        .label(format!("max sustained: {max_sustained:.0}/s"))
        .legend(|(x, y)| PathElement::new([(x, y - 6), (x, y + 6)], GUIDE));
    for (color, label, pick) in [
        (
            ACCEPTED,
            "accepted by ingest (202)",
            (|p: &RampPoint| p.accepted) as fn(&RampPoint) -> f64,
        ),
        (COUNTED, "counted by the query API", |p: &RampPoint| {
            p.counted
        }),
    ] {
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.offered, pick(p))),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        // Filled where the step's lag stayed bounded, hollow where it grew.
        chart.draw_series(points.iter().map(|p| {
            let style = if p.bounded {
                color.filled()
            } else {
                color.stroke_width(2)
            };
            Circle::new((p.offered, pick(p)), 5, style)
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// A histogram of probe freshness in `bin_ms` bins, with the p50, the p99
/// and the goal marked.
pub fn freshness(
    path: &Path,
    title: &str,
    lags_ms: &[f64],
    bin_ms: f64,
    marks: &[(&str, f64)],
) -> anyhow::Result<()> {
    let max = lags_ms.iter().copied().fold(0.0, f64::max);
    let right = marks.iter().map(|m| m.1).fold(max, f64::max).max(bin_ms) * 1.05;
    let bins = (right / bin_ms).ceil() as usize + 1;
    let mut counts = vec![0u32; bins];
    for &l in lags_ms {
        counts[((l / bin_ms) as usize).min(bins - 1)] += 1;
    }
    let top = f64::from(counts.iter().copied().max().unwrap_or(1)) * 1.15;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..right, 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("ms from ingest's 202 until /v1/metrics counts the event")
        .y_desc("probes")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    chart.draw_series(
        counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| {
                let x0 = i as f64 * bin_ms;
                Rectangle::new(
                    [(x0, 0.0), (x0 + bin_ms, f64::from(c))],
                    ACCEPTED.mix(0.8).filled(),
                )
            }),
    )?;
    let colors = [COUNTED, BLACK, GUIDE];
    for (i, &(label, at)) in marks.iter().enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(
                [(at, 0.0), (at, top)],
                color.stroke_width(2),
            ))?
            .label(format!("{label}: {at:.0} ms"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
