//! Tables: a fixed-width one for the terminal, Markdown for BENCHMARKS.md.

use std::fmt::Write as _;

use crate::record::{best_peer, imp, Record, Report, SUBJECT};

/// Ratio columns of the summary, in order (a column with no value anywhere is left out).
const RATIO_COLUMNS: &[(&str, &str)] = &[
    (imp::ROOFLINE, "of roofline"),
    (imp::FUSION_OFF, "× fusion off"),
    (imp::HAND_LOOP, "× hand loop"),
    (imp::NDARRAY, "× ndarray"),
    (imp::GEMM, "× gemm"),
    (imp::TORCH_EAGER, "× torch eager"),
    (imp::TORCH_COMPILE, "× torch.compile"),
    (imp::CUBLAS, "× cuBLAS"),
    (imp::TORCH_SDPA, "× torch SDPA"),
];

fn ratio_text(implementation: &str, v: f64) -> String {
    if implementation == imp::ROOFLINE {
        format!("{:.0}%", 100.0 * v)
    } else {
        format!("{v:.2}")
    }
}

/// Time with a unit that keeps three significant digits readable.
fn time_text(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.3} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

fn subjects(report: &Report) -> impl Iterator<Item = &Record> {
    report
        .records
        .iter()
        .filter(|r| r.implementation == SUBJECT)
}

fn columns(report: &Report) -> Vec<(&'static str, &'static str)> {
    RATIO_COLUMNS
        .iter()
        .copied()
        .filter(|(k, _)| subjects(report).any(|r| r.ratios.contains_key(*k)))
        .collect()
}

/// The summary: one row per mia record, with its rate and ratios to every baseline.
fn summary_rows(report: &Report) -> (Vec<String>, Vec<Vec<String>>) {
    let cols = columns(report);
    let mut header: Vec<String> = ["device", "case", "mia", "GB/s", "GFLOP/s"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    header.extend(cols.iter().map(|(_, h)| h.to_string()));
    header.push("best peer".into());
    let rows = subjects(report)
        .map(|r| {
            let mut row = vec![
                r.device.clone(),
                r.case.clone(),
                time_text(r.median_s),
                format!("{:.1}", r.gb_per_s),
                format!("{:.1}", r.gflop_per_s),
            ];
            row.extend(cols.iter().map(|(k, _)| {
                r.ratios
                    .get(*k)
                    .map_or("–".to_string(), |&v| ratio_text(k, v))
            }));
            row.push(
                best_peer(&report.records, r)
                    .map_or("–".to_string(), |(p, v)| format!("{v:.2}× {p}")),
            );
            row
        })
        .collect();
    (header, rows)
}

/// Whole-model cases: sentences per second of every implementation, side by side.
fn throughput_rows(report: &Report) -> (Vec<String>, Vec<Vec<String>>) {
    let header = ["device", "case", "impl", "median", "sentences/s", "mia ×"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let rows = report
        .records
        .iter()
        .filter_map(|r| r.sentences_per_s.map(|s| (r, s)))
        .map(|(r, s)| {
            let mia = subjects(report).find(|m| m.case == r.case && m.device == r.device);
            vec![
                r.device.clone(),
                r.case.clone(),
                r.implementation.clone(),
                time_text(r.median_s),
                format!("{s:.1}"),
                mia.filter(|m| m.median_s > 0.0)
                    .map_or("–".into(), |m| format!("{:.2}", r.median_s / m.median_s)),
            ]
        })
        .collect();
    (header, rows)
}

/// Every record: one row per implementation.
fn detail_rows(report: &Report) -> (Vec<String>, Vec<Vec<String>>) {
    let header = [
        "device",
        "case",
        "impl",
        "passes",
        "median",
        "min",
        "max",
        "wall",
        "GB/s",
        "GFLOP/s",
        "rel. err",
        "timer",
        "calls/sample",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let rows = report
        .records
        .iter()
        .map(|r| {
            vec![
                r.device.clone(),
                r.case.clone(),
                r.implementation.clone(),
                r.passes.map_or("–".into(), |p| p.to_string()),
                time_text(r.median_s),
                time_text(r.min_s),
                time_text(r.max_s),
                time_text(r.wall_median_s),
                format!("{:.1}", r.gb_per_s),
                format!("{:.1}", r.gflop_per_s),
                r.rel_error.map_or("–".into(), |e| format!("{e:.1e}")),
                r.timer.clone(),
                r.calls_per_sample.to_string(),
            ]
        })
        .collect();
    (header, rows)
}

fn fixed_width(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = w.saturating_sub(c.chars().count());
            // Names left-aligned, numbers right-aligned.
            if i < 3 {
                let _ = write!(s, "{c}{}  ", " ".repeat(pad));
            } else {
                let _ = write!(s, "{}{c}  ", " ".repeat(pad));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header);
    for row in rows {
        out += &line(row);
    }
    out
}

fn markdown_table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n", header.join(" | "));
    let align: Vec<&str> = (0..header.len())
        .map(|i| if i < 3 { "---" } else { "---:" })
        .collect();
    out += &format!("|{}|\n", align.join("|"));
    for row in rows {
        out += &format!("| {} |\n", row.join(" | "));
    }
    out
}

/// The terminal report: the summary, then the failures.
pub fn text(report: &Report) -> String {
    let (h, rows) = summary_rows(report);
    let mut out = fixed_width(&h, &rows);
    let (h, rows) = throughput_rows(report);
    if !rows.is_empty() {
        out += "\n";
        out += &fixed_width(&h, &rows);
    }
    out += "\nratios: baseline time / mia time (> 1: mia is faster); \"of roofline\": share of \
            a copy's bandwidth over the same bytes\n";
    out += &failures_text(report);
    out
}

/// Every record as a fixed-width table (for `--verbose`).
pub fn detail_text(report: &Report) -> String {
    let (h, rows) = detail_rows(report);
    fixed_width(&h, &rows)
}

fn failures_text(report: &Report) -> String {
    let mut out = String::new();
    if !report.failures.is_empty() {
        let _ = writeln!(out, "\n{} FAILURE(S):", report.failures.len());
        for f in &report.failures {
            let _ = writeln!(
                out,
                "  {} {} {}: {}",
                f.device, f.case, f.implementation, f.message
            );
        }
    }
    out
}

/// The Markdown report: provenance, summary, chart, every record, failures.
pub fn markdown(report: &Report, chart_file: Option<&str>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# mia benchmark report\n");
    let _ = writeln!(out, "- date: {}", report.date);
    let _ = writeln!(out, "- host: {}", report.host);
    let mut devices: Vec<(&str, &str)> = report
        .records
        .iter()
        .map(|r| (r.device.as_str(), r.device_name.as_str()))
        .collect();
    devices.sort();
    devices.dedup();
    for (d, name) in devices {
        let _ = writeln!(out, "- {d}: {name}");
    }
    let _ = writeln!(out, "- mode: {}; tools: {}", report.mode, report.tool);
    let _ = writeln!(out, "- commands:");
    for c in report.command.lines() {
        let _ = writeln!(out, "  - `{c}`");
    }
    let _ = writeln!(
        out,
        "\nRatios are baseline time / mia time (> 1: mia is faster), each baseline measured in \
         the same run on the same device; \"of roofline\" is the share of a copy's bandwidth \
         over the same bytes. GB/s counts bytes read + written once.\n"
    );
    let (h, rows) = summary_rows(report);
    out += &markdown_table(&h, &rows);
    if let Some(chart) = chart_file {
        let _ = writeln!(
            out,
            "\n![per-case share of the roofline and of the best peer]({chart})"
        );
    }
    let (h, rows) = throughput_rows(report);
    if !rows.is_empty() {
        let _ = writeln!(
            out,
            "\n## Whole models\n\n`mia ×`: this implementation's time / mia's (> 1: mia is \
             faster).\n"
        );
        out += &markdown_table(&h, &rows);
    }
    let _ = writeln!(out, "\n## Every measurement\n");
    let (h, rows) = detail_rows(report);
    out += &markdown_table(&h, &rows);
    // Notes repeat per record (e.g. no timestamp queries): list each once, with its count.
    let mut notes: Vec<(String, usize)> = Vec::new();
    for r in &report.records {
        if let Some(n) = &r.note {
            let n = format!("{}: {n}", r.device);
            match notes.iter_mut().find(|(m, _)| *m == n) {
                Some((_, count)) => *count += 1,
                None => notes.push((n, 1)),
            }
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "\nNotes:");
        for (n, count) in notes {
            let _ = writeln!(out, "- {n} ({count} records)");
        }
    }
    out += &failures_text(report);
    out
}
