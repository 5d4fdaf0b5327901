//! `/metrics`: the counters of `crate::metrics` in the Prometheus text
//! format (0.0.4), written by `prometheus-client` through its custom
//! collector API, so scraping reads the atomics in place and the hot path
//! never goes through a registry.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::balancer::pool::{Roster, Slot};
use crate::metrics::{
    BUCKETS, BackendMetrics, Buckets, CLASSES, Histogram, Op, REASONS, Totals, bucket_bound,
};

pub(super) use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The whole exposition, one scrape.
pub(super) fn encode(backends: &Arc<Roster>, started: tokio::time::Instant) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Fleet {
        backends: backends.clone(),
        started: started.into_std(),
    }));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

#[derive(Debug)]
struct Fleet {
    backends: Arc<Roster>,
    started: Instant,
}

type Get = fn(&BackendMetrics) -> u64;

/// Per-backend counters: (name without `_total`, help, reader).
const COUNTERS: &[(&str, &str, Get)] = &[
    (
        "fleet_backend_connections",
        "Client connections proxied to the backend.",
        |m| m.connections.get(),
    ),
    (
        "fleet_backend_request_bytes",
        "Bytes sent to the backend (requests).",
        |m| m.request_bytes.get(),
    ),
    (
        "fleet_backend_response_bytes",
        "Bytes received from the backend (responses).",
        |m| m.response_bytes.get(),
    ),
    (
        "fleet_backend_connect_failures",
        "Connects to the backend that failed or timed out.",
        |m| m.connect_failures.get(),
    ),
    (
        "fleet_backend_replays",
        "Requests the backend failed before answering that were sent to another backend.",
        |m| m.replays.get(),
    ),
    (
        "fleet_backend_health_changes",
        "Times the backend went into or out of rotation.",
        |m| m.health_changes.get(),
    ),
];

/// A backend's labels: its port, and for a remote upstream also its name
/// (a local backend and an upstream may share a port number).
fn port(slot: &Slot) -> Vec<(&'static str, String)> {
    let mut labels = vec![("port", slot.port.to_string())];
    if let Some(name) = &slot.upstream {
        labels.push(("upstream", name.clone()));
    }
    labels
}

fn histogram(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    slots: &[Arc<Slot>],
    which: fn(&BackendMetrics) -> &Histogram,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for slot in slots {
        let labels = port(slot);
        let b: Buckets = which(&slot.metrics).snapshot();
        let buckets: Vec<(f64, u64)> = (0..=BUCKETS)
            .map(|i| (bucket_bound(i), b.counts[i]))
            .collect();
        family
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(b.sum_us as f64 / 1e6, b.count(), &buckets, None)?;
    }
    Ok(())
}

/// What operations cost (`crate::cost`): counters by `op`, so a rate or an
/// increase over any window reads as the cost of the operations in it.
fn operations(encoder: &mut DescriptorEncoder<'_>, totals: &Totals) -> Result<(), std::fmt::Error> {
    let mut runs = encoder.encode_descriptor(
        "fleet_operations",
        "Operations on the running fleet (restart, stop, start, scale, reload, upgrade, watch), by outcome.",
        None,
        MetricType::Counter,
    )?;
    for op in Op::ALL {
        let t = totals.of(op);
        for (outcome, n) in [("ok", t.ok.get()), ("error", t.error.get())] {
            ConstCounter::new(n)
                .encode(runs.encode_family(&[("op", op.name()), ("outcome", outcome)])?)?;
        }
    }
    let mut secs = encoder.encode_descriptor(
        "fleet_operation_seconds",
        "Seconds spent in operations on the running fleet.",
        None,
        MetricType::Counter,
    )?;
    for op in Op::ALL {
        let s = totals.of(op).millis.get() as f64 / 1000.0;
        ConstCounter::new(s).encode(secs.encode_family(&[("op", op.name())])?)?;
    }
    let mut served = encoder.encode_descriptor(
        "fleet_operation_requests",
        "Requests the fleet served while an operation ran.",
        None,
        MetricType::Counter,
    )?;
    for op in Op::ALL {
        ConstCounter::new(totals.of(op).requests.get())
            .encode(served.encode_family(&[("op", op.name())])?)?;
    }
    let mut failed = encoder.encode_descriptor(
        "fleet_operation_failed_requests",
        "Requests that failed while an operation ran, by reason (bad_gateway: 502, gateway_timeout: 504, no_backend: 503 or closed).",
        None,
        MetricType::Counter,
    )?;
    for op in Op::ALL {
        for ((reason, _), n) in REASONS.iter().zip(&totals.of(op).failed) {
            ConstCounter::new(n.get())
                .encode(failed.encode_family(&[("op", op.name()), ("reason", *reason)])?)?;
        }
    }
    Ok(())
}

impl Collector for Fleet {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let pool = self.backends.load();
        let slots = pool.slots();
        let b = &self.backends.metrics;

        ConstGauge::new(self.started.elapsed().as_secs_f64()).encode(
            encoder.encode_descriptor(
                "fleet_uptime_seconds",
                "Seconds since the supervisor started.",
                None,
                MetricType::Gauge,
            )?,
        )?;
        ConstCounter::new(b.accepted.get()).encode(encoder.encode_descriptor(
            "fleet_balancer_connections",
            "Client connections the balancer accepted.",
            None,
            MetricType::Counter,
        )?)?;
        ConstGauge::new(b.active.get() as i64).encode(encoder.encode_descriptor(
            "fleet_balancer_connections_active",
            "Client connections open now.",
            None,
            MetricType::Gauge,
        )?)?;
        ConstCounter::new(b.no_backend.get()).encode(encoder.encode_descriptor(
            "fleet_balancer_no_backend",
            "Client connections closed because no backend could take them.",
            None,
            MetricType::Counter,
        )?)?;

        let mut own = encoder.encode_descriptor(
            "fleet_balancer_responses",
            "Requests the balancer answered before trying any backend (http mode: 400, 408, 431, 503), by status class.",
            None,
            MetricType::Counter,
        )?;
        for (class, n) in CLASSES.iter().zip(b.responses.get()) {
            ConstCounter::new(n).encode(own.encode_family(&[("code", *class)])?)?;
        }

        let mut fleet = encoder.encode_descriptor(
            "fleet_requests",
            "Requests answered by every backend the fleet has had (removed ones included), by status class.",
            None,
            MetricType::Counter,
        )?;
        for (class, n) in CLASSES.iter().zip(b.backends.responses()) {
            ConstCounter::new(n).encode(fleet.encode_family(&[("code", *class)])?)?;
        }
        operations(&mut encoder, &b.operations)?;

        let statuses: Vec<_> = slots.iter().map(|s| s.status()).collect();
        let mut up = encoder.encode_descriptor(
            "fleet_backend_up",
            "1 when the backend takes traffic (running and healthy), else 0.",
            None,
            MetricType::Gauge,
        )?;
        for s in slots {
            ConstGauge::new(i64::from(s.routable())).encode(up.encode_family(&port(s))?)?;
        }
        let mut restarts = encoder.encode_descriptor(
            "fleet_backend_restarts",
            "Times the supervisor restarted the backend.",
            None,
            MetricType::Counter,
        )?;
        for (s, st) in slots.iter().zip(&statuses) {
            ConstCounter::new(u64::from(st.restarts)).encode(restarts.encode_family(&port(s))?)?;
        }
        let mut requests = encoder.encode_descriptor(
            "fleet_backend_requests",
            "Requests answered by the backend, by status class (tcp mode: one per connection).",
            None,
            MetricType::Counter,
        )?;
        for s in slots {
            for (class, n) in CLASSES.iter().zip(s.metrics.responses()) {
                let mut labels = port(s);
                labels.push(("code", (*class).to_string()));
                ConstCounter::new(n).encode(requests.encode_family(&labels)?)?;
            }
        }
        let mut active = encoder.encode_descriptor(
            "fleet_backend_connections_active",
            "Client connections proxied to the backend now.",
            None,
            MetricType::Gauge,
        )?;
        for s in slots {
            ConstGauge::new(s.active() as i64).encode(active.encode_family(&port(s))?)?;
        }
        for (name, help, get) in COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for s in slots {
                ConstCounter::new(get(&s.metrics)).encode(family.encode_family(&port(s))?)?;
            }
        }
        histogram(
            &mut encoder,
            "fleet_backend_request_duration_seconds",
            "Request latency through the balancer (tcp mode: the whole connection).",
            slots,
            |m| &m.latency,
        )?;
        histogram(
            &mut encoder,
            "fleet_backend_first_byte_seconds",
            "Time from sending a request to the backend to its first response byte.",
            slots,
            |m| &m.first_byte,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::pool::Pool;
    use crate::config::Config;
    use crate::lifecycle::Lifecycle;
    use std::net::SocketAddr;
    use std::time::Duration;

    #[test]
    fn exposition_has_help_type_and_conventional_names() {
        let slots: Vec<Arc<Slot>> = [9002u16, 9003]
            .iter()
            .map(|p| Arc::new(Slot::new(*p, SocketAddr::from(([127, 0, 0, 1], *p))).0))
            .collect();
        slots[0].publish(true, Lifecycle::default());
        slots[0].metrics.response(200);
        slots[0].metrics.response(503);
        slots[1].metrics.latency.observe(Duration::from_millis(3));
        let backends = Arc::new(Roster::new(Pool::new(slots), Config::default().balancer));
        let text = encode(&backends, tokio::time::Instant::now());
        for family in [
            "fleet_backend_requests_total",
            "fleet_backend_up",
            "fleet_backend_request_duration_seconds",
            "fleet_backend_request_bytes_total",
            "fleet_balancer_connections_total",
        ] {
            let kind = if family.ends_with("_total") {
                "counter"
            } else if family.ends_with("_seconds") {
                "histogram"
            } else {
                "gauge"
            };
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "{family}:\n{text}"
            );
            assert!(
                text.contains(&format!("# TYPE {family} {kind}\n")),
                "{family}:\n{text}"
            );
        }
        assert!(
            text.contains("fleet_backend_requests_total{port=\"9002\",code=\"2xx\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("fleet_backend_requests_total{port=\"9002\",code=\"5xx\"} 1\n"));
        assert!(text.contains("fleet_backend_up{port=\"9002\"} 1\n"));
        assert!(text.contains("fleet_backend_up{port=\"9003\"} 0\n"));
        // 3 ms lands in the (1.6 ms, 3.2 ms] bucket: cumulative from there on.
        assert!(
            text.contains(
                "fleet_backend_request_duration_seconds_bucket{port=\"9003\",le=\"0.0016\"} 0\n"
            ),
            "{text}"
        );
        assert!(text.contains(
            "fleet_backend_request_duration_seconds_bucket{port=\"9003\",le=\"0.0032\"} 1\n"
        ));
        assert!(text.contains(
            "fleet_backend_request_duration_seconds_bucket{port=\"9003\",le=\"+Inf\"} 1\n"
        ));
        assert!(text.contains("fleet_backend_request_duration_seconds_count{port=\"9003\"} 1\n"));
    }

    #[test]
    fn fleet_requests_keep_the_counts_of_a_removed_backend() {
        let backends = Arc::new(Roster::new(
            Pool::new(Vec::new()),
            Config::default().balancer,
        ));
        let slots: Vec<Arc<Slot>> = [9002u16, 9003]
            .iter()
            .map(|p| {
                let (mut slot, _) = Slot::new(*p, SocketAddr::from(([127, 0, 0, 1], *p)));
                slot.metrics = backends.metrics.backends.for_addr(slot.addr);
                slot.metrics.response(200);
                Arc::new(slot)
            })
            .collect();
        backends.swap(Pool::new(slots.clone()));
        let text = encode(&backends, tokio::time::Instant::now());
        assert!(
            text.contains("# TYPE fleet_requests_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("fleet_requests_total{code=\"2xx\"} 2\n"),
            "{text}"
        );
        // Scaled down to one backend: its series goes, the fleet's count stays.
        backends.swap(Pool::new(slots[..1].to_vec()));
        drop(slots);
        let text = encode(&backends, tokio::time::Instant::now());
        assert!(!text.contains("port=\"9003\""), "{text}");
        assert!(
            text.contains("fleet_requests_total{code=\"2xx\"} 2\n"),
            "{text}"
        );
    }
}
