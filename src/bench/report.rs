//! The lab's table: one [`Row`] per concurrency level, derived from raw
//! measurements by plain arithmetic (unit-tested here), and written as a
//! terminal table, markdown, CSV or JSON.
//!
//! Column meanings follow ApacheBench so the two tools can be compared line by
//! line: *Requests per second* is complete / time taken; *Time per request* is
//! ab's "mean, across all concurrent requests", time taken / complete; the
//! transfer rate is bytes / 1024 / time taken. Non-2xx answers are complete
//! (as in ab) and have their own column. JSON and CSV use the same snake_case
//! keys in the same order; a saved JSON file can be read back for `--compare`.

use std::fmt::Write as _;

use comfy_table::{CellAlignment, ContentArrangement, Table};
use serde::{Deserialize, Serialize};

use super::load::Measured;

/// One level of the table. Serialized as-is for `--format json|csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Row {
    /// Requests that finished (complete + failed); the level's `-n` unless
    /// the run was interrupted.
    pub requests: u64,
    pub concurrency: u32,
    pub time_taken_s: f64,
    pub complete: u64,
    pub failed: u64,
    pub total_transferred_bytes: u64,
    pub requests_per_second: f64,
    /// Mean across all concurrent requests (ab); none when nothing completed.
    pub time_per_request_ms: Option<f64>,
    pub transfer_rate_kb_s: f64,
    /// Complete responses whose status was not 2xx.
    pub non_2xx: u64,
    /// Latency percentiles of complete requests; none when nothing completed.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Which run this row belongs to (`--label`; one line per label in plots).
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub keepalive: bool,
    /// Ctrl-C stopped this level before all its requests finished.
    #[serde(default)]
    pub interrupted: bool,
}

fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

impl Row {
    /// The table's arithmetic. Values are rounded to what the measurement
    /// can support: seconds to the microsecond, the rest to 1/1000.
    pub(crate) fn from_measured(m: &Measured, label: &str, url: &str, keepalive: bool) -> Row {
        let secs = m.elapsed.as_secs_f64();
        let per_sec = |x: f64| if secs > 0.0 { x / secs } else { 0.0 };
        let pct = |q: f64| {
            (m.complete > 0).then(|| round(m.latency_us.value_at_quantile(q) as f64 / 1000.0, 3))
        };
        Row {
            requests: m.finished,
            concurrency: m.concurrency,
            time_taken_s: round(secs, 6),
            complete: m.complete,
            failed: m.failed,
            total_transferred_bytes: m.bytes,
            requests_per_second: round(per_sec(m.complete as f64), 3),
            time_per_request_ms: (m.complete > 0)
                .then(|| round(secs * 1000.0 / m.complete as f64, 3)),
            transfer_rate_kb_s: round(per_sec(m.bytes as f64 / 1024.0), 3),
            non_2xx: m.non_2xx,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            label: label.to_string(),
            url: url.to_string(),
            keepalive,
            interrupted: m.interrupted,
        }
    }
}

/// Column headers of the human formats, in the lab's order, extras last.
const HEADERS: [&str; 12] = [
    "Requests",
    "Concurrency",
    "Time taken (s)",
    "Complete",
    "Failed",
    "Total transferred (bytes)",
    "Requests per second",
    "Time per request (ms)",
    "Transfer rate (KB/s)",
    "Non-2xx",
    "p50 (ms)",
    "p99 (ms)",
];

fn opt(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

fn cells(r: &Row) -> [String; 12] {
    let requests = if r.interrupted {
        format!("{} (interrupted)", r.requests)
    } else {
        r.requests.to_string()
    };
    [
        requests,
        r.concurrency.to_string(),
        format!("{:.3}", r.time_taken_s),
        r.complete.to_string(),
        r.failed.to_string(),
        r.total_transferred_bytes.to_string(),
        format!("{:.2}", r.requests_per_second),
        opt(r.time_per_request_ms, 3),
        format!("{:.2}", r.transfer_rate_kb_s),
        r.non_2xx.to_string(),
        opt(r.p50_ms, 3),
        opt(r.p99_ms, 3),
    ]
}

/// The terminal table's headers: the same columns, broken over lines so the
/// table fits about 100 columns instead of wrapping mid-word.
const SHORT_HEADERS: [&str; 12] = [
    "Requests",
    "Concur-\nrency",
    "Time\ntaken\n(s)",
    "Complete",
    "Failed",
    "Total\ntransferred\n(bytes)",
    "Requests\nper\nsecond",
    "Time per\nrequest\n(ms)",
    "Transfer\nrate\n(KB/s)",
    "Non-2xx",
    "p50\n(ms)",
    "p99\n(ms)",
];

/// A human table (comfy-table), numbers right-aligned.
pub(crate) fn table(rows: &[Row]) -> String {
    let mut t = Table::new();
    // UTF8_HORIZONTAL_ONLY without the lines between rows: compact, and
    // readable when pasted as plain text.
    t.load_preset("  ── ══      ──    ")
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(SHORT_HEADERS);
    for r in rows {
        t.add_row(cells(r));
    }
    for col in t.column_iter_mut() {
        col.set_cell_alignment(CellAlignment::Right);
        col.set_padding((1, 0));
    }
    format!("{t}\n{TIME_PER_REQUEST_NOTE}\n")
}

/// Under the human table: the column means what ab's does, which is not a
/// request's latency (that is p50/p99).
pub(crate) const TIME_PER_REQUEST_NOTE: &str = "Time per request: ab's \"mean, across all concurrent \
     requests\" (time taken / complete); a single request's latency is p50/p99.";

/// The lab's table in markdown.
pub(crate) fn markdown(rows: &[Row]) -> String {
    let mut s = format!("| {} |\n|", HEADERS.join(" | "));
    s.push_str(&"---:|".repeat(HEADERS.len()));
    s.push('\n');
    for r in rows {
        let _ = writeln!(s, "| {} |", cells(r).join(" | "));
    }
    s
}

/// CSV with the JSON keys as header. Fields that could hold a comma or quote
/// (label, url) are quoted.
pub(crate) fn csv(rows: &[Row]) -> String {
    let mut s = String::from(
        "requests,concurrency,time_taken_s,complete,failed,total_transferred_bytes,\
         requests_per_second,time_per_request_ms,transfer_rate_kb_s,non_2xx,p50_ms,p99_ms,\
         label,url,keepalive,interrupted\n",
    );
    let o = |x: Option<f64>| x.map_or_else(String::new, |v| v.to_string());
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.requests,
            r.concurrency,
            r.time_taken_s,
            r.complete,
            r.failed,
            r.total_transferred_bytes,
            r.requests_per_second,
            o(r.time_per_request_ms),
            r.transfer_rate_kb_s,
            r.non_2xx,
            o(r.p50_ms),
            o(r.p99_ms),
            csv_quote(&r.label),
            csv_quote(&r.url),
            r.keepalive,
            r.interrupted,
        );
    }
    s
}

fn csv_quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A JSON array of row objects, pretty-printed, with a trailing newline.
pub(crate) fn json(rows: &[Row]) -> String {
    let mut s = serde_json::to_string_pretty(rows).expect("rows always serialize");
    s.push('\n');
    s
}

/// Read rows saved with `--format json` (for `--compare`). Rows without a
/// label get `default_label` (the file's name), so every run has a name.
/// Text that is not the JSON `fleet bench --format json` writes.
#[derive(Debug, thiserror::Error)]
#[error("not a `fleet bench --format json` result")]
pub struct NotARun(#[source] serde_json::Error);

pub(crate) fn read_json(text: &str, default_label: &str) -> Result<Vec<Row>, NotARun> {
    let mut rows: Vec<Row> = serde_json::from_str(text).map_err(NotARun)?;
    for r in &mut rows {
        if r.label.is_empty() {
            r.label = default_label.to_string();
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use hdrhistogram::Histogram;

    use super::*;

    fn measured(complete: u64, failed: u64, bytes: u64, elapsed_ms: u64) -> Measured {
        let mut h = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for i in 1..=complete {
            h.record(i * 10).unwrap(); // 10 µs .. complete*10 µs
        }
        Measured {
            concurrency: 10,
            finished: complete + failed,
            complete,
            failed,
            non_2xx: 0,
            bytes,
            elapsed: Duration::from_millis(elapsed_ms),
            latency_us: h,
            errors: BTreeMap::new(),
            interrupted: false,
        }
    }

    #[test]
    fn row_arithmetic_matches_ab_definitions() {
        // 1000 requests, 990 complete, in 0.5 s, 226_000 bytes.
        let r = Row::from_measured(&measured(990, 10, 226_000, 500), "x", "u", false);
        assert_eq!(r.requests, 1000);
        assert_eq!(r.complete + r.failed, r.requests);
        assert_eq!(r.time_taken_s, 0.5);
        assert_eq!(r.requests_per_second, 1980.0); // complete / time
        assert_eq!(r.time_per_request_ms, Some(round(500.0 / 990.0, 3)));
        assert_eq!(r.transfer_rate_kb_s, round(226_000.0 / 1024.0 / 0.5, 3));
        // p50 of 10..9900 µs is about 4.95 ms (3 significant digits).
        let p50 = r.p50_ms.unwrap();
        assert!((p50 - 4.95).abs() < 0.01, "{p50}");
        let p99 = r.p99_ms.unwrap();
        assert!((p99 - 9.8).abs() < 0.02, "{p99}");
    }

    #[test]
    fn nothing_complete_has_no_latency_and_zero_rate() {
        let r = Row::from_measured(&measured(0, 200, 0, 30), "x", "u", false);
        assert_eq!((r.complete, r.failed, r.requests), (0, 200, 200));
        assert_eq!(r.requests_per_second, 0.0);
        assert_eq!(r.time_per_request_ms, None);
        assert_eq!((r.p50_ms, r.p99_ms), (None, None));
        assert!(markdown(&[r]).contains("| 200 | 10 | 0.030 | 0 | 200 | 0 | 0.00 | - |"));
    }

    #[test]
    fn zero_elapsed_does_not_divide_by_zero() {
        let r = Row::from_measured(&measured(1, 0, 100, 0), "x", "u", false);
        assert_eq!(r.requests_per_second, 0.0);
        assert_eq!(r.transfer_rate_kb_s, 0.0);
    }

    #[test]
    fn markdown_has_lab_columns_and_one_line_per_row() {
        let rows = vec![
            Row::from_measured(&measured(100, 0, 22_600, 100), "a", "u", false),
            Row::from_measured(&measured(100, 0, 22_600, 50), "a", "u", false),
        ];
        let md = markdown(&rows);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with(
            "| Requests | Concurrency | Time taken (s) | Complete | Failed | Total transferred (bytes) \
             | Requests per second | Time per request (ms) | Transfer rate (KB/s) |"
        ));
        assert_eq!(lines[1].matches("---:").count(), HEADERS.len());
        assert!(lines[3].starts_with("| 100 | 10 | 0.050 | 100 | 0 | 22600 | 2000.00 | 0.500 |"));
    }

    #[test]
    fn csv_quotes_labels_and_keeps_json_keys() {
        let mut r = Row::from_measured(&measured(5, 0, 500, 10), "a,b \"c\"", "u", true);
        r.p99_ms = None;
        let c = csv(&[r]);
        let mut lines = c.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let v: serde_json::Value = serde_json::from_str(&json(&[Row::from_measured(
            &measured(5, 0, 500, 10),
            "a",
            "u",
            true,
        )]))
        .unwrap();
        let keys: Vec<&str> = v[0]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut sorted_header = header.clone();
        sorted_header.sort_unstable();
        let mut sorted_keys = keys.clone();
        sorted_keys.sort_unstable();
        assert_eq!(sorted_header, sorted_keys);
        let line = lines.next().unwrap();
        assert!(line.contains(",,\"a,b \"\"c\"\"\",u,true,false"), "{line}");
    }

    #[test]
    fn json_round_trips_and_fills_missing_labels() {
        let rows = vec![Row::from_measured(&measured(5, 1, 500, 10), "", "u", false)];
        let back = read_json(&json(&rows), "old").unwrap();
        assert_eq!(back[0].label, "old");
        assert_eq!(back[0].failed, 1);
        assert!(read_json("{\"not\": \"rows\"}", "x").is_err());
    }
}
