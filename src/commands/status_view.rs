//! The status as a person reads it: a summary line, a table with one row
//! per backend, then why any backend is not serving. `fleet status` prints
//! it once, `fleet top` redraws it; both are above this module, so neither
//! imports the other for it.

use comfy_table::{Table, presets};

use crate::control::protocol::{BackendStatus, ExitInfo, FleetStatus, Phase};
use crate::duration::human as human_duration;

/// The human view: a summary line, one row per backend, then the reasons
/// for any backend that is not serving and the ramp of any in slow start.
/// No width limit: for a pipe.
pub(crate) fn render(s: &FleetStatus) -> String {
    render_width(s, None)
}

/// Table columns, in order; the ones a narrow terminal can do without are
/// dropped first to last (`OPTIONAL`).
const COLUMNS: [&str; 11] = [
    "PORT",
    "PID",
    "STATE",
    "HEALTH",
    "UPTIME",
    "RESTARTS",
    "ACTIVE",
    "TOTAL",
    "REQ/S",
    "P99",
    "LAST EXIT",
];
const OPTIONAL: [&str; 3] = ["TOTAL", "ACTIVE", "UPTIME"];

/// [`render`] fitted to `width` columns (a terminal's): the table keeps its
/// widest layout that fits: first a last exit's cause moves from its cell
/// to a line below the table (`SIGTERM (by fleet)` in the cell), then the
/// `OPTIONAL` columns go, one by one. The lines around the table wrap, with
/// a two-space indent after the first.
pub(crate) fn render_width(s: &FleetStatus, width: Option<usize>) -> String {
    let mut out = String::new();
    for line in header(s).lines() {
        out.push_str(&wrap(line, width));
    }
    let layouts = (0..=OPTIONAL.len()).map(|dropped| (true, dropped));
    let layouts = std::iter::once((false, 0)).chain(layouts);
    let mut chosen = None;
    for (short, dropped) in layouts {
        let t = table(s, short, &OPTIONAL[..dropped]);
        let fits = width.is_none_or(|w| t.lines().all(|l| l.chars().count() <= w));
        chosen = Some((t, short));
        if fits {
            break;
        }
    }
    let (table, short) = chosen.expect("at least one layout");
    if let Some(w) = &s.watch {
        out.push_str(&wrap(&watch_line(w), width));
    }
    out.push_str(&table);
    for b in &s.backends {
        let id = b
            .address
            .clone()
            .unwrap_or_else(|| format!("backend {}", b.port));
        if let Some(r) = &b.reason {
            let line = match &b.address {
                Some(a) => format!("upstream {a} is unhealthy: {r}"),
                None => format!("{id} is {}: {r}", b.state),
            };
            out.push_str(&wrap(&line, width));
        }
        if let Some(e) = b.last_exit.as_ref().filter(|e| short && e.cause.is_some()) {
            out.push_str(&wrap(&format!("{id}: last exit {e}"), width));
        }
        if let Some(pct) = b.weight_pct {
            let line = format!("{id}: slow start, ramp {pct}% of its share of new requests");
            out.push_str(&wrap(&line, width));
        }
    }
    out
}

/// The two summary lines. Backends stopped with `fleet stop` are counted
/// apart: not serving on purpose, so not a reason to call the fleet degraded.
fn header(s: &FleetStatus) -> String {
    let healthy = s.backends.iter().filter(|b| b.healthy).count();
    let held = s.backends.iter().filter(|b| b.held).count();
    let meant = s.backends.len() - held;
    format!(
        "fleet pid {}, balancer http://{}/, up {}, {healthy}/{meant} backends healthy{}{}\n\
         {:.1} requests/s, p99 {} (last 10 s), {} requests in all{}\n",
        s.pid,
        s.listen,
        human_duration(s.uptime_s),
        if held > 0 {
            format!(", {held} stopped")
        } else {
            String::new()
        },
        if healthy < meant { " (DEGRADED)" } else { "" },
        s.traffic.requests_per_s,
        s.traffic
            .p99_ms
            .map_or("-".into(), |ms| format!("{ms:.1}ms")),
        s.traffic.requests,
        s.admin
            .as_ref()
            .map_or(String::new(), |a| format!(", dashboard http://{a}/")),
    )
}

/// `watch: www (last change index.html: restarted 4 backends, one at a time)`.
fn watch_line(w: &crate::control::protocol::WatchStatus) -> String {
    let paths = w.paths.join(", ");
    match (&w.last_change, &w.outcome) {
        (Some(file), Some(outcome)) => {
            format!("watch: {paths} (last change {file}: {outcome})")
        }
        (_, Some(outcome)) => format!("watch: {paths} ({outcome})"),
        _ => format!("watch: {paths} (no change yet)"),
    }
}

/// The table without the `drop` columns; `short`: a last exit's cause is
/// left out of its cell (said below the table instead).
fn table(s: &FleetStatus, short: bool, drop: &[&str]) -> String {
    let keep: Vec<bool> = COLUMNS.iter().map(|c| !drop.contains(c)).collect();
    let pick = |cells: [String; 11]| -> Vec<String> {
        cells
            .into_iter()
            .zip(&keep)
            .filter_map(|(c, k)| k.then_some(c))
            .collect()
    };
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(pick(COLUMNS.map(String::from)));
    for b in &s.backends {
        // An upstream is known by its address; it has no pid and no restarts.
        let upstream = b.address.is_some();
        t.add_row(pick([
            b.address.clone().unwrap_or_else(|| b.port.to_string()),
            b.pid.map_or("-".into(), |p| p.to_string()),
            b.state.to_string(),
            health(b).into(),
            if b.pid.is_some() {
                human_duration(b.uptime_s)
            } else {
                "-".into()
            },
            if upstream {
                "-".into()
            } else {
                b.restarts.to_string()
            },
            b.active_connections.to_string(),
            b.total_connections.to_string(),
            format!("{:.1}", b.traffic.requests_per_s),
            b.traffic
                .p99_ms
                .map_or("-".into(), |ms| format!("{ms:.1}ms")),
            match &b.last_exit {
                None => "-".into(),
                Some(e) if short && e.cause.is_some() => format!(
                    "{} (by fleet)",
                    ExitInfo {
                        cause: None,
                        ..e.clone()
                    }
                ),
                Some(e) => e.to_string(),
            },
        ]));
    }
    let mut out: String = t
        .to_string()
        .lines()
        .map(|l| format!("{}\n", l.trim_end()))
        .collect();
    if out.is_empty() {
        out.push('\n');
    }
    out
}

/// The HEALTH cell: a stopped backend is not probed, so it has none (and a
/// backend stopped with `fleet stop` is not "unhealthy").
pub(crate) fn health(b: &BackendStatus) -> &'static str {
    match (b.state, b.healthy) {
        (Phase::Stopped, _) => "-",
        (_, true) => "healthy",
        (_, false) => "unhealthy",
    }
}

/// `line` and a newline; with a `width`, broken at spaces into lines that
/// fit, each after the first indented by two spaces.
fn wrap(line: &str, width: Option<usize>) -> String {
    let Some(width) = width.filter(|w| *w > 20) else {
        return format!("{line}\n");
    };
    let mut lines = vec![String::new()];
    for word in line.split(' ') {
        let current = lines.last_mut().expect("never empty");
        let empty = current.trim().is_empty();
        if !empty && current.chars().count() + 1 + word.chars().count() > width {
            lines.push(format!("  {word}"));
        } else {
            if !empty {
                current.push(' ');
            }
            current.push_str(word);
        }
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four backends: one restarted by fleet (a long cause), one stopped
    /// with `fleet stop`, two busy ones with wide numbers.
    fn fleet(held: bool) -> FleetStatus {
        let stopped_reason = if held {
            r#""held":true,"reason":"stopped by `fleet stop`; `fleet start` brings it back""#
        } else {
            r#""reason":"exit 1; restart policy is never""#
        };
        serde_json::from_str(&format!(
            r#"{{"pid":4242,"listen":"127.0.0.1:44444","uptime_s":3725.0,"backends":[
                {{"port":22002,"pid":1234567,"state":"running","healthy":true,"restarts":12,"uptime_s":3000.0,
                 "active_connections":120,"total_connections":1234567,"requests_per_s":1234.5,"p99_ms":123.4,
                 "last_exit":{{"signal":15,"name":"SIGTERM","cause":"restarted by fleet: failed health checks"}}}},
                {{"port":22003,"pid":null,"state":"stopped",{stopped_reason},"healthy":false,"restarts":0,
                 "uptime_s":0.0,"active_connections":0,"total_connections":0,
                 "last_exit":{{"signal":15,"name":"SIGTERM"}}}},
                {{"port":22004,"pid":1234568,"state":"running","healthy":true,"restarts":0,"uptime_s":3700.0,
                 "active_connections":3,"total_connections":1234567,"requests_per_s":1234.5,"p99_ms":12.5,
                 "last_exit":null}},
                {{"port":22005,"pid":1234569,"state":"running","healthy":true,"restarts":0,"uptime_s":3700.0,
                 "active_connections":3,"total_connections":1234567,"requests_per_s":1234.5,"p99_ms":12.5,
                 "last_exit":null}}]}}"#
        ))
        .expect("a status")
    }

    /// At 80 and 100 columns every line fits, and the cause of a last exit
    /// is said whole (below the table when the cell would not fit).
    #[test]
    fn the_view_fits_80_and_100_columns_without_cutting_the_reason() {
        for width in [80, 100] {
            let text = render_width(&fleet(true), Some(width));
            for line in text.lines() {
                assert!(line.chars().count() <= width, "{width}: {line:?}\n{text}");
                assert_eq!(line, line.trim_end(), "no trailing spaces");
            }
            let one_line = text.replace("\n  ", " ");
            assert!(
                one_line.contains(
                    "backend 22002: last exit SIGTERM (restarted by fleet: failed health checks)"
                ),
                "{width}:\n{text}"
            );
            assert!(text.contains("SIGTERM (by fleet)"), "{width}:\n{text}");
            for column in [
                "PORT",
                "PID",
                "STATE",
                "HEALTH",
                "REQ/S",
                "P99",
                "LAST EXIT",
            ] {
                assert!(text.contains(column), "{width}: {column} kept\n{text}");
            }
        }
        // Unlimited (a pipe): the cause stays in its cell, every column shown.
        let whole = render(&fleet(true));
        assert!(whole.contains("SIGTERM (restarted by fleet: failed health checks)\n"));
        assert!(!whole.contains("last exit"));
        assert!(whole.contains("TOTAL") && whole.contains("UPTIME"));
    }

    /// A backend stopped with `fleet stop` is `stopped` with no health, and
    /// does not make the fleet degraded; one that stopped by itself does.
    #[test]
    fn a_held_backend_is_not_unhealthy_and_the_fleet_is_not_degraded() {
        let text = render(&fleet(true));
        let summary = text.lines().next().expect("a summary");
        assert!(
            summary.ends_with(", 3/3 backends healthy, 1 stopped"),
            "{summary}"
        );
        let row = text.lines().find(|l| l.contains("22003")).expect("its row");
        assert_eq!(
            row.split_whitespace().take(4).collect::<Vec<_>>(),
            ["22003", "-", "stopped", "-"]
        );
        assert!(!text.contains("unhealthy"), "{text}");
        let text = render(&fleet(false));
        let summary = text.lines().next().expect("a summary");
        assert!(
            summary.ends_with(", 3/4 backends healthy (DEGRADED)"),
            "{summary}"
        );
    }

    #[test]
    fn wrap_breaks_at_spaces_and_indents_what_follows() {
        assert_eq!(wrap("a b c", None), "a b c\n");
        assert_eq!(
            wrap("alpha beta gamma delta epsilon zeta eta", Some(21)),
            "alpha beta gamma\n  delta epsilon zeta\n  eta\n"
        );
    }
}
