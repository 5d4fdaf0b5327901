//! `fleet status [--json]`: ask the supervisor, print what it says.

use comfy_table::{Table, presets};

use crate::cli::StatusArgs;
use crate::control::client::{self, ControlError};
use crate::control::protocol::FleetStatus;
use crate::state_dir::StateDir;

/// Print the running fleet; no fleet is an error (exit 3, see
/// `ControlError::exit_code`).
pub fn run(args: StatusArgs) -> Result<(), ControlError> {
    let state = StateDir::new(args.state.resolve());
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
pub fn render(s: &FleetStatus) -> String {
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

fn human_duration(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..60 => format!("{secs:.1}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}
