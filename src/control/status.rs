//! The one place the control protocol's status is built: a snapshot of the
//! backends (each slot's counters and the lifecycle its task published)
//! turned into `FleetStatus` / `BackendStatus`, for `fleet status`, the
//! admin address's `/status.json` and its dashboard alike.
//!
//! Nothing below `control` sees these types: the supervisor decides from
//! the lifecycle (`crate::lifecycle::Lifecycle`), the balancer from its
//! atomics.

use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::protocol::{BackendStatus, FleetStatus, FleetTraffic, Traffic, WatchStatus};
use crate::balancer::pool::{Roster, Slot};
use crate::metrics::{self, CLASSES, Recent};

/// The fleet's status now: what `fleet status` prints. `watch`: watch
/// mode's view, kept up to date by its task, when it is on.
pub(crate) fn build(
    backends: &Roster,
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    started: Instant,
    watch: Option<&Mutex<WatchStatus>>,
) -> FleetStatus {
    let pool = backends.load();
    let recent: Vec<_> = pool.slots().iter().map(|s| s.metrics.recent()).collect();
    let fleet = metrics::sum_recent(&recent);
    let responses = backends.metrics.backends.responses();
    let slow_start = backends.config().slow_start;
    FleetStatus {
        pid: std::process::id(),
        listen: listen.to_string(),
        uptime_s: round3(started.elapsed().as_secs_f64()),
        backends: pool
            .slots()
            .iter()
            .zip(&recent)
            .map(|(s, r)| backend(s, r, slow_start))
            .collect(),
        traffic: FleetTraffic {
            requests: responses.iter().sum(),
            responses: CLASSES
                .iter()
                .zip(responses)
                .map(|(c, n)| (c.to_string(), n))
                .collect(),
            requests_per_s: round3(fleet.requests_per_s),
            p99_ms: fleet.latency.quantile(0.99).map(|s| round3(s * 1000.0)),
            requests_history: fleet.history,
        },
        admin: admin.map(|a| a.to_string()),
        watch: watch.map(|w| Box::new(w.lock().unwrap_or_else(PoisonError::into_inner).clone())),
    }
}

/// One backend's status, with its recent rates already read (the fleet's
/// summary needs them too); `slow_start` for its ramp, if it is ramping.
fn backend(slot: &Slot, recent: &Recent, slow_start: Duration) -> BackendStatus {
    let m = &slot.metrics;
    let s = slot.status();
    BackendStatus {
        port: slot.port,
        address: slot.upstream.clone(),
        pid: s.pid,
        guard_pid: s.guard_pid,
        state: s.state,
        held: s.held,
        healthy: slot.routable(),
        restarts: s.restarts,
        uptime_s: s.since.map_or(0.0, |t| round3(t.elapsed().as_secs_f64())),
        active_connections: m.active.get(),
        total_connections: m.connections.get(),
        last_exit: s.last_exit,
        reason: s.reason,
        weight_pct: slot.ramp_pct(slow_start),
        traffic: Traffic {
            requests: m.requests(),
            responses: CLASSES
                .iter()
                .zip(m.responses())
                .map(|(c, n)| (c.to_string(), n))
                .collect(),
            requests_per_s: round3(recent.requests_per_s),
            p99_ms: recent.latency.quantile(0.99).map(|s| round3(s * 1000.0)),
            bytes_in: m.request_bytes.get(),
            bytes_out: m.response_bytes.get(),
            connect_failures: m.connect_failures.get(),
            replays: m.replays.get(),
            health_changes: m.health_changes.get(),
            requests_history: recent.history.clone(),
        },
    }
}

/// Seconds and milliseconds in the status: to the thousandth.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
