//! The picture: per mia record, its share of the memory roofline (left) and its speed relative
//! to the fastest peer on the same device (right, log scale). Rendered as SVG by plotters
//! without its `ttf` feature: text stays `<text>` elements for the viewer to draw, so no font
//! files are needed to make the chart.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::cases::Res;
use crate::record::{best_peer, imp, Report, SUBJECT};

const CPU: RGBColor = RGBColor(66, 106, 196);
const GPU: RGBColor = RGBColor(52, 150, 84);
const TARGET: RGBColor = RGBColor(200, 60, 60);
const FONT: &str = "sans-serif";

struct Row {
    label: String,
    gpu: bool,
    /// Share of the roofline copy's bandwidth.
    roofline: Option<f64>,
    /// Best peer median / mia median, and the peer.
    peer: Option<(String, f64)>,
}

fn rows(report: &Report) -> Vec<Row> {
    report
        .records
        .iter()
        .filter(|r| r.implementation == SUBJECT)
        .map(|r| Row {
            label: format!("{} {}", r.device, r.case),
            gpu: r.device == "gpu",
            roofline: r.ratios.get(imp::ROOFLINE).copied(),
            peer: best_peer(&report.records, r),
        })
        .collect()
}

/// Small text, vertically centred on its point (bar labels).
fn label_style() -> TextStyle<'static> {
    TextStyle::from((FONT, 11).into_font()).pos(Pos::new(HPos::Left, VPos::Center))
}

/// Ticks of a log axis: 1, 2, 5 per decade within `[lo, hi]`.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    (-3..=4)
        .flat_map(|e| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(e)))
        .filter(|v| (lo..=hi).contains(v))
        .collect()
}

fn err(e: impl std::fmt::Display) -> Box<dyn std::error::Error + Send + Sync> {
    format!("drawing the chart: {e}").into()
}

/// The chart as an SVG document.
pub fn svg(report: &Report) -> Res<String> {
    let rows = rows(report);
    if rows.is_empty() {
        return Err("drawing the chart: the report has no mia results".into());
    }
    let n = rows.len();
    let height = 110 + 22 * n as u32;
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (1200, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let title = format!(
            "mia benchmarks, {} ({} mode): blue = CPU, green = GPU",
            report.date.get(..10).unwrap_or(&report.date),
            report.mode
        );
        let root = root.titled(&title, (FONT, 18).into_font()).map_err(err)?;
        let (left, right) = root.split_horizontally(640);
        // Row i is drawn at the top for i = 0.
        let y_of = |i: usize| (n - 1 - i) as i32;
        let label_of = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(y) => usize::try_from(*y)
                .ok()
                .and_then(|y| n.checked_sub(1 + y))
                .and_then(|i| rows.get(i))
                .map(|r| r.label.clone())
                .unwrap_or_default(),
            _ => String::new(),
        };
        let bar = |i: usize, x0: f64, x1: f64, gpu: bool| {
            let color = if gpu { GPU } else { CPU };
            let mut r = Rectangle::new(
                [
                    (x0, SegmentValue::Exact(y_of(i))),
                    (x1, SegmentValue::Exact(y_of(i) + 1)),
                ],
                color.filled(),
            );
            r.set_margin(3, 3, 0, 0);
            r
        };

        // Left: share of the roofline.
        let max_share = rows
            .iter()
            .filter_map(|r| r.roofline)
            .fold(1.05f64, f64::max)
            .min(5.0);
        let mut chart = ChartBuilder::on(&left)
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(190)
            .caption(
                "share of copy bandwidth (same bytes)",
                (FONT, 15).into_font(),
            )
            .build_cartesian_2d(0f64..max_share, (0..n as i32).into_segmented())
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&label_of)
            .x_labels(8)
            .light_line_style(TRANSPARENT)
            .x_label_formatter(&|v| format!("{:.0}%", v * 100.0))
            .label_style((FONT, 12).into_font())
            .draw()
            .map_err(err)?;
        chart
            .draw_series(rows.iter().enumerate().filter_map(|(i, r)| {
                r.roofline
                    .map(|v| bar(i, 0.0, v.clamp(0.0, max_share), r.gpu))
            }))
            .map_err(err)?;
        chart
            .draw_series(rows.iter().enumerate().filter_map(|(i, r)| {
                r.roofline.map(|v| {
                    Text::new(
                        format!(" {:.0}%", v * 100.0),
                        (v.min(max_share * 0.9), SegmentValue::CenterOf(y_of(i))),
                        label_style(),
                    )
                })
            }))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![
                    (1.0, SegmentValue::Exact(0)),
                    (1.0, SegmentValue::Exact(n as i32)),
                ],
                TARGET.stroke_width(1),
            )))
            .map_err(err)?;

        // Right: speed relative to the best peer, log scale around 1.
        let (lo, hi) = rows
            .iter()
            .filter_map(|r| r.peer.as_ref().map(|p| p.1))
            .fold((0.5f64, 2.0f64), |(lo, hi), v| {
                (lo.min(v / 1.5), hi.max(v * 1.5))
            });
        let (lo, hi) = (lo.max(1e-3), hi.min(1e4));
        let mut chart = ChartBuilder::on(&right)
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(4)
            .caption(
                "speed vs fastest peer (> 1: mia faster)",
                (FONT, 15).into_font(),
            )
            .build_cartesian_2d(
                (lo..hi).log_scale().with_key_points(log_ticks(lo, hi)),
                (0..n as i32).into_segmented(),
            )
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_label_formatter(&|_| String::new())
            .light_line_style(TRANSPARENT)
            .x_label_formatter(&|v| format!("{v}×"))
            .label_style((FONT, 12).into_font())
            .draw()
            .map_err(err)?;
        chart
            .draw_series(rows.iter().enumerate().filter_map(|(i, r)| {
                r.peer
                    .as_ref()
                    .map(|(_, v)| bar(i, 1.0, v.clamp(lo, hi), r.gpu))
            }))
            .map_err(err)?;
        chart
            .draw_series(rows.iter().enumerate().map(|(i, r)| {
                let (text, x) = match &r.peer {
                    Some((p, v)) => (format!(" {v:.2}× {p}"), v.max(1.0).min(hi / 3.0)),
                    None => (" no peer measured".to_string(), 1.0),
                };
                Text::new(text, (x, SegmentValue::CenterOf(y_of(i))), label_style())
            }))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![
                    (1.0, SegmentValue::Exact(0)),
                    (1.0, SegmentValue::Exact(n as i32)),
                ],
                BLACK.stroke_width(1),
            )))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{compute_ratios, Record, SCHEMA};
    use std::collections::BTreeMap;

    fn rec(case: &str, device: &str, implementation: &str, median_s: f64) -> Record {
        Record {
            case: case.into(),
            op: "softmax".into(),
            shape: BTreeMap::new(),
            device: device.into(),
            device_name: "test".into(),
            implementation: implementation.into(),
            passes: None,
            timer: "wall".into(),
            samples: 3,
            calls_per_sample: 1,
            median_s,
            min_s: median_s,
            max_s: median_s,
            wall_median_s: median_s,
            bytes: 1,
            flops: 1,
            gb_per_s: 1.0,
            gflop_per_s: 1.0,
            rel_error: None,
            ratios: BTreeMap::new(),
            sentences_per_s: None,
            note: None,
        }
    }

    #[test]
    fn renders_labels_as_text() {
        let mut records = vec![
            rec("softmax/384", "cpu", imp::MIA, 2.0),
            rec("softmax/384", "cpu", imp::ROOFLINE, 1.8),
            rec("softmax/384", "cpu", imp::NDARRAY, 9.0),
            rec("softmax/384", "gpu", imp::MIA, 1.0),
        ];
        compute_ratios(&mut records);
        let report = Report {
            schema: SCHEMA,
            tool: "test".into(),
            date: "2026-01-01T00:00:00Z".into(),
            mode: "quick".into(),
            command: "test".into(),
            host: "test".into(),
            records,
            failures: vec![],
        };
        let s = svg(&report).unwrap();
        assert!(s.starts_with("<svg"), "{}", &s[..s.len().min(200)]);
        for text in [
            "cpu softmax/384",
            "gpu softmax/384",
            "90%",
            "4.50× ndarray",
            "no peer",
        ] {
            assert!(s.contains(text), "missing {text}");
        }
    }
}
