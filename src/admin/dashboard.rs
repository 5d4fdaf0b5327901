//! `/`: the dashboard. One page compiled into the binary, with no external
//! scripts, fonts or stylesheets (it must work on a lab machine offline).
//! The server fills in the table and sparklines, so the page is useful with
//! JavaScript off; its script then re-renders the same markup from
//! `/status.json` every second. `row` here and `row()` in the page's script
//! must produce the same markup: a test loads the page in a browser.

use std::fmt::Write;

use crate::control::protocol::{BackendStatus, ExitInfo, FleetStatus, Phase};
use crate::duration::human as human_duration;
use crate::metrics::HISTORY;

const PAGE: &str = include_str!("dashboard.html");

pub(super) fn render(s: &FleetStatus) -> String {
    let healthy = s.backends.iter().filter(|b| b.healthy).count();
    // Stopped with `fleet stop`: not serving on purpose, not counted against the fleet.
    let held = s.backends.iter().filter(|b| b.held).count();
    let rows: String = s.backends.iter().map(row).collect();
    PAGE.replacen(
        "<!--META-->",
        &format!(
            "pid {} · balancer {} · up {}",
            s.pid,
            escape(&s.listen),
            human_duration(s.uptime_s)
        ),
        1,
    )
    .replacen(
        "<!--HEALTHY-->",
        &format!("{healthy} / {}", s.backends.len() - held),
        1,
    )
    .replacen(
        "<!--HELD-->",
        &if held > 0 {
            format!("· {held} stopped")
        } else {
            String::new()
        },
        1,
    )
    .replacen("<!--RPS-->", &rate(s.traffic.requests_per_s), 1)
    .replacen("<!--P99-->", &ms(s.traffic.p99_ms), 1)
    .replacen(
        "<!--SPARK-->",
        &spark(&s.traffic.requests_history, 400, 48),
        1,
    )
    .replacen("<!--ROWS-->", &rows, 1)
}

fn row(b: &BackendStatus) -> String {
    let (class, health) = match (b.state, b.healthy) {
        (Phase::Stopped, _) => ("none", "–"),
        (_, true) => ("healthy", "healthy"),
        (_, false) => ("unhealthy", "unhealthy"),
    };
    let state = escape(b.state.as_str());
    let mut r = String::new();
    let _ = write!(
        r,
        "<tr id=\"b-{id}\" data-port=\"{port}\"><td class=\"port\">{id}</td><td>{pid}</td>\
         <td class=\"state\"><span class=\"badge s-{state}{held}\">{state}</span></td>\
         <td class=\"health h-{class}\">{health}</td><td>{uptime}</td><td>{restarts}</td>\
         <td>{active}</td><td>{total}</td><td>{requests}</td><td>{rps}</td><td>{p99}</td><td>{spark}</td>\
         <td class=\"exit\">{exit}</td></tr>{why}",
        held = if b.held { " held" } else { "" },
        port = b.port,
        id = b
            .address
            .as_deref()
            .map_or_else(|| b.port.to_string(), escape),
        pid = b.pid.map_or("–".into(), |p| p.to_string()),
        uptime = if b.pid.is_some() {
            human_duration(b.uptime_s)
        } else {
            "–".into()
        },
        restarts = b.restarts,
        active = b.active_connections,
        total = b.total_connections,
        requests = b.traffic.requests,
        rps = rate(b.traffic.requests_per_s),
        p99 = ms(b.traffic.p99_ms),
        spark = spark(&b.traffic.requests_history, 140, 26),
        exit = b.last_exit.as_ref().map_or("–".into(), |e| escape(
            &ExitInfo {
                cause: e.cause.as_ref().map(|_| "by fleet".into()),
                ..e.clone()
            }
            .to_string()
        )),
        why = why(b),
    );
    r
}

/// The line under a backend's row: its reason, and the cause of a last exit
/// that fleet caused (the row's cell says only "by fleet").
fn why(b: &BackendStatus) -> String {
    let exit = b
        .last_exit
        .as_ref()
        .filter(|e| e.cause.is_some())
        .map(|e| format!("last exit {e}"));
    let lines: Vec<String> = b.reason.iter().cloned().chain(exit).collect();
    if lines.is_empty() {
        return String::new();
    }
    format!(
        "<tr class=\"why\"><td colspan=\"13\">{}</td></tr>",
        escape(&lines.join(" · "))
    )
}

fn rate(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn ms(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v < 10.0 => format!("{v:.2} ms"),
        Some(v) => format!("{v:.0} ms"),
    }
}

/// An SVG sparkline (area and line) of `values`, scaled to the largest,
/// on a fixed axis of the last `HISTORY` seconds: a fleet up for 5 s fills
/// the right end, not the whole width.
fn spark(values: &[u64], w: u32, h: u32) -> String {
    let values = &values[values.len().saturating_sub(HISTORY)..];
    let n = values.len();
    if n < 2 {
        return format!("<svg viewBox=\"0 0 {w} {h}\" preserveAspectRatio=\"none\"></svg>");
    }
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let x = |i: usize| {
        format!(
            "{:.1}",
            (HISTORY - n + i) as f64 * f64::from(w) / (HISTORY - 1) as f64
        )
    };
    let pts: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let y = f64::from(h) - 1.0 - *v as f64 * f64::from(h - 2) / max;
            format!("{},{y:.1}", x(i))
        })
        .collect();
    let pts = pts.join(" ");
    format!(
        "<svg viewBox=\"0 0 {w} {h}\" preserveAspectRatio=\"none\"><polygon points=\"{},{h} {pts} {w},{h}\"/><polyline points=\"{pts}\"/></svg>",
        x(0)
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_self_contained_and_server_rendered() {
        let s: FleetStatus = serde_json::from_str(
            r#"{"pid":1,"listen":"127.0.0.1:44444","uptime_s":3.0,"backends":[
                {"port":9002,"pid":7,"state":"running","healthy":true,"restarts":0,"uptime_s":2.0,
                 "active_connections":0,"total_connections":5,"last_exit":null,"requests_history":[1,2,3]},
                {"port":9003,"pid":null,"state":"backoff","healthy":false,"restarts":2,"uptime_s":0.0,
                 "active_connections":0,"total_connections":0,"last_exit":{"code":1}}]}"#,
        )
        .expect("status parses");
        let html = render(&s);
        assert!(!html.contains("<!--"), "every placeholder is filled");
        for needle in [
            "id=\"b-9002\"",
            "s-running\">running<",
            "id=\"b-9003\"",
            "s-backoff\">backoff<",
            "<polyline",
        ] {
            assert!(html.contains(needle), "{needle}");
        }
        assert!(
            html.contains("<td class=\"exit\">exit 1</td>"),
            "the last exit has a column"
        );
        for external in ["src=\"http", "href=\"http", "@import", "url("] {
            assert!(!html.contains(external), "no external resource: {external}");
        }
    }

    /// A backend stopped with `fleet stop` is stopped, not unhealthy, and
    /// not counted against the fleet; its reason is in the last column.
    #[test]
    fn a_held_backend_is_stopped_not_unhealthy_and_not_counted() {
        let s: FleetStatus = serde_json::from_str(
            r#"{"pid":1,"listen":"127.0.0.1:44444","uptime_s":3.0,"backends":[
                {"port":9002,"pid":7,"state":"running","healthy":true,"restarts":0,"uptime_s":2.0,
                 "active_connections":0,"total_connections":5,"last_exit":null},
                {"port":9003,"pid":null,"state":"stopped","held":true,"healthy":false,"restarts":0,"uptime_s":0.0,
                 "active_connections":0,"total_connections":0,"last_exit":{"signal":15,"name":"SIGTERM"},
                 "reason":"stopped by `fleet stop`"}]}"#,
        )
        .expect("status parses");
        let html = render(&s);
        assert!(html.contains(">1 / 1<"), "the held one is not counted");
        assert!(html.contains("· 1 stopped"));
        assert!(html.contains("s-stopped held\">stopped<"));
        assert!(html.contains("<td class=\"health h-none\">–</td>"));
        assert!(!html.contains(">unhealthy<"));
        assert!(html.contains(
            "<td class=\"exit\">SIGTERM</td></tr><tr class=\"why\"><td colspan=\"13\">stopped by `fleet stop`</td></tr>"
        ));
    }

    /// The sparkline's axis is the last 60 s, whatever the history's length:
    /// 5 s of history is drawn at the right end, 60 s across the whole width.
    #[test]
    fn the_sparkline_plots_against_a_fixed_60_second_axis() {
        let short = spark(&[1, 2, 3, 4, 5], 118, 26);
        // x = (60 - 5 + i) * 118 / 59 = 2 * (55 + i)
        assert!(short.contains("<polyline points=\"110.0,"), "{short}");
        assert!(short.contains("<polygon points=\"110.0,26 "), "{short}");
        assert!(short.contains(" 118.0,1.0\"/>"), "{short}");
        let full = spark(&[1; 61], 118, 26);
        assert!(full.contains("<polyline points=\"0.0,"), "{full}");
    }
}
