//! `--plot FILE.svg`: requests per second and p99 latency against
//! concurrency, one line per run, as a self-contained SVG a student can paste
//! into a report.
//!
//! Hand-written SVG rather than a plotting crate: two panels of polylines,
//! axes and a legend are a few dozen lines, render everywhere (browsers,
//! LibreOffice, pandoc), and keep the binary free of font and raster
//! dependencies. The x axis is logarithmic because the lab's levels (1 to
//! 1000) span three decades; ticks sit at the measured levels.

use std::fmt::Write as _;

use super::report::Row;

/// One run: its label and its points in concurrency order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    pub label: String,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Point {
    pub concurrency: u32,
    pub rps: f64,
    pub p99_ms: Option<f64>,
}

/// Group rows by label (in order of first appearance), points sorted by
/// concurrency.
pub(crate) fn series_from_rows(rows: &[Row]) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for r in rows {
        let p = Point {
            concurrency: r.concurrency,
            rps: r.requests_per_second,
            p99_ms: r.p99_ms,
        };
        match out.iter_mut().find(|s| s.label == r.label) {
            Some(s) => s.points.push(p),
            None => out.push(Series {
                label: r.label.clone(),
                points: vec![p],
            }),
        }
    }
    for s in &mut out {
        s.points.sort_by_key(|p| p.concurrency);
    }
    out
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
const WIDTH: f64 = 760.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 24.0;
const PANEL_H: f64 = 200.0;
const TOP: f64 = 56.0;
const GAP: f64 = 70.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" tick step (1, 2 or 5 times a power of ten) giving about 4 ticks
/// up to `max`.
fn nice_step(max: f64) -> f64 {
    if !(max.is_finite() && max > 0.0) {
        return 1.0;
    }
    let raw = max / 4.0;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let m = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// A tick label; thousands as "2k" only when every tick is a whole thousand
/// (`step` >= 1000), so one axis never mixes "1k" and "1500".
fn fmt_num(v: f64, step: f64) -> String {
    if step >= 1000.0 && v % 1000.0 == 0.0 {
        format!("{}k", v / 1000.0)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// What a panel plots of a point (none: no dot, e.g. p99 with nothing complete).
type Metric = fn(&Point) -> Option<f64>;

/// Maps concurrency to x on a log scale.
struct XScale {
    lo: f64,
    hi: f64,
}

impl XScale {
    fn x(&self, c: u32) -> f64 {
        let w = WIDTH - LEFT - RIGHT;
        let v = f64::from(c.max(1)).log10();
        if (self.hi - self.lo).abs() < f64::EPSILON {
            LEFT + w / 2.0
        } else {
            LEFT + (v - self.lo) / (self.hi - self.lo) * w
        }
    }
}

/// Render the chart.
pub(crate) fn svg(series: &[Series], title: &str) -> String {
    let mut levels: Vec<u32> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.concurrency))
        .collect();
    levels.sort_unstable();
    levels.dedup();
    let lo = levels.first().map_or(0.0, |&c| f64::from(c.max(1)).log10());
    let hi = levels.last().map_or(1.0, |&c| f64::from(c.max(1)).log10());
    let xs = XScale { lo, hi };
    // Too many levels crowd the labels; fall back to powers of ten.
    let ticks: Vec<u32> = if levels.len() <= 12 {
        levels.clone()
    } else {
        (0..10)
            .map(|e| 10u32.pow(e))
            .filter(|&t| f64::from(t).log10() >= lo - 1e-9 && f64::from(t).log10() <= hi + 1e-9)
            .collect()
    };
    let height = TOP + 2.0 * PANEL_H + GAP + 60.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        esc(title)
    );
    // Legend: one swatch per run, left to right.
    let mut lx = LEFT;
    for (i, se) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="40" x2="{}" y2="40" stroke="{color}" stroke-width="3"/><text x="{}" y="44">{}</text>"#,
            lx + 20.0,
            lx + 26.0,
            esc(&se.label)
        );
        lx += 40.0 + 7.0 * se.label.chars().count() as f64;
    }
    let panels: [(&str, Metric); 2] = [
        ("Requests per second", |p| Some(p.rps)),
        ("p99 latency (ms)", |p| p.p99_ms),
    ];
    for (k, (name, value)) in panels.iter().enumerate() {
        let top = TOP + k as f64 * (PANEL_H + GAP) + 16.0;
        let bottom = top + PANEL_H;
        let max = series
            .iter()
            .flat_map(|se| se.points.iter().filter_map(value))
            .fold(0.0f64, f64::max);
        let step = nice_step(max);
        let ymax = ((max / step).ceil() * step).max(step);
        let y = |v: f64| bottom - v / ymax * PANEL_H;
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="{}" font-weight="bold">{name}</text>"#,
            top - 6.0
        );
        // Horizontal grid lines and y labels.
        let mut v = 0.0;
        while v <= ymax + step / 2.0 {
            let yy = y(v);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                WIDTH - RIGHT,
                LEFT - 6.0,
                yy + 4.0,
                fmt_num(v, step)
            );
            v += step;
        }
        // Vertical ticks at the levels, labelled under each panel.
        for &t in &ticks {
            let xx = xs.x(t);
            let _ = writeln!(
                s,
                r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{bottom}" stroke="#eee"/><text x="{xx:.1}" y="{}" text-anchor="middle">{t}</text>"##,
                bottom + 16.0
            );
        }
        let _ = writeln!(
            s,
            r#"<rect x="{LEFT}" y="{top}" width="{}" height="{PANEL_H}" fill="none" stroke="black"/>"#,
            WIDTH - LEFT - RIGHT
        );
        for (i, se) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let pts: Vec<(f64, f64)> = se
                .points
                .iter()
                .filter_map(|p| value(p).map(|v| (xs.x(p.concurrency), y(v))))
                .collect();
            let coords: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"><title>{}</title></polyline>"#,
                coords.join(" "),
                esc(&se.label)
            );
            for (x, y) in pts {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{color}"/>"#
                );
            }
        }
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">Concurrency (log scale)</text>"#,
        LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
        height - 12.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(label: &str, c: u32, rps: f64, p99: Option<f64>) -> Row {
        Row {
            requests: 100,
            concurrency: c,
            time_taken_s: 1.0,
            complete: 100,
            failed: 0,
            total_transferred_bytes: 0,
            requests_per_second: rps,
            time_per_request_ms: None,
            transfer_rate_kb_s: 0.0,
            non_2xx: 0,
            p50_ms: None,
            p99_ms: p99,
            label: label.into(),
            url: String::new(),
            keepalive: false,
            interrupted: false,
        }
    }

    #[test]
    fn rows_group_into_one_series_per_label_sorted_by_concurrency() {
        let rows = [
            row("a", 10, 1.0, None),
            row("b", 1, 2.0, None),
            row("a", 1, 3.0, Some(1.0)),
        ];
        let s = series_from_rows(&rows);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].label, "a");
        assert_eq!(
            s[0].points
                .iter()
                .map(|p| p.concurrency)
                .collect::<Vec<_>>(),
            [1, 10]
        );
    }

    #[test]
    fn svg_has_a_polyline_per_run_and_panel_and_escapes_labels() {
        let rows = [
            row("a<b", 1, 1000.0, Some(1.0)),
            row("a<b", 100, 3000.0, Some(20.0)),
            row("c", 1, 900.0, Some(2.0)),
            row("c", 100, 2500.0, None),
        ];
        let out = svg(&series_from_rows(&rows), "t & t");
        assert!(out.starts_with("<svg"));
        assert!(out.trim_end().ends_with("</svg>"));
        assert_eq!(out.matches("<polyline").count(), 4);
        assert!(out.contains("a&lt;b") && out.contains("t &amp; t"));
        assert!(!out.contains("NaN") && !out.contains("inf"));
    }

    #[test]
    fn single_level_and_empty_input_render_without_nan() {
        let one = svg(&series_from_rows(&[row("a", 5, 10.0, Some(1.0))]), "x");
        assert!(!one.contains("NaN"));
        let none = svg(&[], "x");
        assert!(none.starts_with("<svg") && !none.contains("NaN"));
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(4000.0), 1000.0);
        assert_eq!(nice_step(3000.0), 1000.0);
        assert_eq!(nice_step(7.0), 2.0);
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(fmt_num(2000.0, 1000.0), "2k");
        assert_eq!(fmt_num(1000.0, 500.0), "1000");
        assert_eq!(fmt_num(2500.0, 500.0), "2500");
        assert_eq!(fmt_num(0.5, 0.5), "0.5");
    }
}
