//! Request outcome: everything known about one request once it is over (a
//! connection, in tcp mode), recorded in one place by both engines: the
//! per-backend metrics, the access log and the debug line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use super::Shared;
use super::access_log;
use super::pool::Slot;

/// One finished request (http) or connection (tcp).
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The backend that answered, or (http) the last one tried.
    pub(crate) slot: Option<Arc<Slot>>,
    /// The status sent to the client; 0 when none is known (the client left
    /// before one, or tcp bytes that are not HTTP).
    pub(crate) status: u16,
    /// Request bytes read from the client (head and body).
    pub(crate) bytes_in: u64,
    /// Response bytes written to the client.
    pub(crate) bytes_out: u64,
    /// The bytes were already added to the backend's counters as they moved
    /// (tcp: a spliced connection may live for hours, and its traffic
    /// should show while it does).
    pub(crate) counted_live: bool,
    /// From the first byte of the request to the end of the response.
    pub(crate) total: Duration,
    /// To the response's first byte; `None` when no backend answered.
    pub(crate) first_byte: Option<Duration>,
    /// Sent to more than one backend.
    pub(crate) retried: bool,
    /// The client connection may carry another request.
    pub(crate) keep_client: bool,
    /// Method and target, kept only when the access log is on.
    pub(crate) request_line: Option<(String, String)>,
}

/// Record `o`: every request, answered by a backend or by fleet itself,
/// passes here exactly once.
pub(crate) fn record(shared: &Shared, peer: SocketAddr, o: &Outcome) {
    match &o.slot {
        Some(slot) => {
            let m = &slot.metrics;
            if !o.counted_live {
                m.request_bytes.add(o.bytes_in);
                m.response_bytes.add(o.bytes_out);
            }
            if o.status != 0 {
                m.response(o.status);
                m.latency.observe(o.total);
            }
            if let Some(first) = o.first_byte {
                m.first_byte.observe(first);
            }
        }
        // Answered by fleet itself before any backend was involved.
        None if o.status != 0 => shared.backends.metrics.responses.inc(o.status),
        None => {}
    }
    if let Some(log) = shared.backends.access_log.get() {
        let line = o.request_line.as_ref();
        log.write(&access_log::Entry {
            client: Some(peer),
            method: line.map(|l| l.0.as_str()),
            target: line.map(|l| l.1.as_str()),
            status: (o.status != 0).then_some(o.status),
            bytes: o.bytes_out,
            duration: o.total,
            backend: o.slot.as_ref().map(|s| s.port),
        });
    }
    debug!(
        target: "balancer::request",
        backend = o.slot.as_ref().map(|s| s.port),
        status = o.status,
        bytes_in = o.bytes_in,
        bytes_out = o.bytes_out,
        total_us = o.total.as_micros() as u64,
        first_byte_us = o.first_byte.map(|d| d.as_micros() as u64),
        retried = o.retried,
        "request"
    );
}
