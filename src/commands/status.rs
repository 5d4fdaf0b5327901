//! `fleet status [--json]`: ask the supervisor, print what it says.

use comfy_table::{Table, presets};

use crate::cli::StatusArgs;
use crate::control::client::{self, ControlError};
use crate::control::protocol::FleetStatus;
use crate::state_dir::StateDir;

/// Why there is no status to show.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("status --watch")]
    Watch(#[source] std::io::Error),
}

impl StatusError {
    /// No fleet is exit 3 (see `ControlError::exit_code`).
    pub fn exit_code(&self) -> u8 {
        match self {
            StatusError::Control(e) => e.exit_code(),
            StatusError::Watch(_) => crate::exit::FAILURE,
        }
    }
}

/// Print the running fleet, once or (`--watch`) live.
pub(crate) fn run(args: StatusArgs) -> Result<(), StatusError> {
    let state = StateDir::new(args.state.resolve());
    if args.watch {
        return super::watch::run(&state);
    }
    let s = client::status(&state).inspect_err(|e| {
        if let Some(note) = e.note() {
            eprintln!("fleet: {note}");
        }
    })?;
    if args.json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&s).expect("status serializes")
        );
    } else {
        crate::outln!("{}", render(&s).trim_end());
    }
    Ok(())
}

/// The human view: a summary line, one row per backend, then the reasons
/// for any backend that is not serving.
pub(crate) fn render(s: &FleetStatus) -> String {
    let healthy = s.backends.iter().filter(|b| b.healthy).count();
    let mut out = format!(
        "fleet pid {}, balancer http://{}/, up {}, {healthy}/{} backends healthy{}\n",
        s.pid,
        s.listen,
        human_duration(s.uptime_s),
        s.backends.len(),
        if healthy < s.backends.len() {
            " (DEGRADED)"
        } else {
            ""
        }
    );
    out.push_str(&format!(
        "{:.1} requests/s, p99 {} (last 10 s), {} requests in all{}\n",
        s.traffic.requests_per_s,
        s.traffic
            .p99_ms
            .map_or("-".into(), |ms| format!("{ms:.1}ms")),
        s.traffic.requests,
        s.admin
            .as_ref()
            .map_or(String::new(), |a| format!(", dashboard http://{a}/")),
    ));
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header([
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
    ]);
    for b in &s.backends {
        // An upstream is known by its address; it has no pid and no restarts.
        let upstream = b.address.is_some();
        t.add_row([
            b.address.clone().unwrap_or_else(|| b.port.to_string()),
            b.pid.map_or("-".into(), |p| p.to_string()),
            b.state.to_string(),
            if b.healthy { "healthy" } else { "unhealthy" }.into(),
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
            b.last_exit.as_ref().map_or("-".into(), |e| e.to_string()),
        ]);
    }
    out.push_str(&t.to_string());
    out.push('\n');
    for b in &s.backends {
        if let Some(r) = &b.reason {
            match &b.address {
                Some(a) => out.push_str(&format!("upstream {a} is unhealthy: {r}\n")),
                None => out.push_str(&format!("backend {} is {}: {r}\n", b.port, b.state)),
            }
        }
    }
    out
}

pub(crate) fn human_duration(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..60 => format!("{secs:.1}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}
