//! Counters and histograms: per backend (hung off its pool `Slot`) and for
//! the balancer as a whole.
//!
//! The hot path (a proxied connection or request) only does relaxed atomic
//! adds: no lock, no allocation. Histograms have fixed log-scale buckets
//! (`BUCKETS`, 100 µs doubling up to ~52 s, then +Inf), one atomic each, so an
//! observation is two adds and readers get a consistent-enough view without
//! stopping writers (a scrape may see a count one ahead of its sum; the next
//! scrape catches up, which Prometheus tolerates).
//!
//! Rates for humans (`fleet status`: requests/s and p99 over the last
//! `WINDOW` seconds, and the dashboard's sparklines) come from a ring of
//! per-second samples that one sampler task appends to (`sample`), so the
//! only lock here is taken once a second per backend and by readers.
//!
//! Ownership: the balancer increments traffic counters, the backend task
//! increments `health_changes`; nobody decrements anything except the
//! `active` gauges, which the connection guards own.
//!
//! Counters never go back while the supervisor lives: a backend's metrics
//! are kept in the fleet's `Ledger` by address, so a backend removed by
//! `fleet scale` keeps its counts in the fleet's totals, and one scaled back
//! onto the same port carries on from them.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Histogram buckets: upper bounds `FIRST_BOUND_US * 2^i` µs for i in
/// 0..BUCKETS (100 µs .. 52.4 s), plus one overflow bucket (+Inf). Doubling
/// keeps the p99 error under 2x with 21 atomics, and the range covers a
/// loopback hit (~100 µs) up to the longest response timeout.
pub(crate) const BUCKETS: usize = 20;
const FIRST_BOUND_US: u64 = 100;
/// Seconds of history behind requests/s and p99 in `fleet status`.
pub(crate) const WINDOW: usize = 10;
/// Seconds of per-second request counts kept for sparklines.
pub(crate) const HISTORY: usize = 60;

/// A count that only goes up (a Prometheus counter).
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn inc(&self) {
        self.add(1);
    }
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A count that goes up and down (open connections).
#[derive(Debug, Default)]
pub(crate) struct Gauge(AtomicU64);

impl Gauge {
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    pub(crate) fn dec(&self) {
        self.0.fetch_sub(1, Relaxed);
    }
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Upper bound of bucket `i`, in seconds (`f64::INFINITY` for the last).
pub(crate) fn bucket_bound(i: usize) -> f64 {
    if i >= BUCKETS {
        f64::INFINITY
    } else {
        (FIRST_BOUND_US << i) as f64 / 1e6
    }
}

/// The bucket a duration of `us` microseconds falls in: the first whose
/// bound is >= it.
fn bucket_of(us: u64) -> usize {
    // ceil(us / 100) <= 2^i  <=>  i >= ceil(log2(ceil(us / 100)))
    let q = us.div_ceil(FIRST_BOUND_US).max(1);
    let i = (u64::BITS - (q - 1).leading_zeros()) as usize;
    i.min(BUCKETS)
}

/// A latency histogram in atomics.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    counts: [AtomicU64; BUCKETS + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket_of(us)].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Buckets {
        Buckets {
            counts: std::array::from_fn(|i| self.counts[i].load(Relaxed)),
            sum_us: self.sum_us.load(Relaxed),
        }
    }
}

/// A histogram's values at one moment (per-bucket, not cumulative).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Buckets {
    pub(crate) counts: [u64; BUCKETS + 1],
    pub(crate) sum_us: u64,
}

impl Buckets {
    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// What happened between `earlier` and `self`.
    pub(crate) fn since(&self, earlier: &Buckets) -> Buckets {
        Buckets {
            counts: std::array::from_fn(|i| self.counts[i].saturating_sub(earlier.counts[i])),
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
        }
    }

    pub(crate) fn add(&mut self, other: &Buckets) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum_us += other.sum_us;
    }

    /// The `q` quantile in seconds, interpolated inside its bucket the way
    /// Prometheus's `histogram_quantile` does; `None` with no observations.
    /// In the overflow bucket the answer is its lower bound (a floor).
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            if c > 0 && (seen + c) as f64 >= rank {
                let lower = if i == 0 { 0.0 } else { bucket_bound(i - 1) };
                if i >= BUCKETS {
                    return Some(lower);
                }
                let upper = bucket_bound(i);
                let frac = ((rank - seen as f64) / c as f64).clamp(0.0, 1.0);
                return Some(lower + (upper - lower) * frac);
            }
            seen += c;
        }
        Some(bucket_bound(BUCKETS - 1))
    }
}

/// Response status classes, `1xx` .. `5xx`.
pub(crate) const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Counts by status class; an odd code counts in the nearest class.
#[derive(Debug, Default)]
pub(crate) struct ByClass([Counter; 5]);

impl ByClass {
    pub(crate) fn inc(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.0[class].inc();
    }
    pub(crate) fn get(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.0[i].get())
    }
}

/// Everything counted for one backend.
#[derive(Debug, Default)]
pub(crate) struct BackendMetrics {
    /// Requests answered, by status class (index 0 is 1xx). In tcp mode one
    /// per connection: the first response's status line.
    responses: ByClass,
    /// Proxied connections open now / ever.
    pub(crate) active: Gauge,
    pub(crate) connections: Counter,
    /// Bytes sent to the backend (requests) and received from it (responses).
    pub(crate) request_bytes: Counter,
    pub(crate) response_bytes: Counter,
    /// Connects that failed or timed out.
    pub(crate) connect_failures: Counter,
    /// Requests sent again to another backend after this one failed them.
    pub(crate) replays: Counter,
    /// Times the backend went in or out of rotation.
    pub(crate) health_changes: Counter,
    /// Request latency through the balancer (client's first byte to the end
    /// of the response).
    pub(crate) latency: Histogram,
    /// Request sent to the backend -> its first response byte.
    pub(crate) first_byte: Histogram,
    window: Mutex<VecDeque<Sample>>,
}

/// One per-second sample of the counters behind the windowed rates.
#[derive(Debug, Clone, Copy)]
struct Sample {
    requests: u64,
    latency: Buckets,
}

/// Requests/s and latency over the recent past, for humans.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Recent {
    /// Requests per second over the last `WINDOW` seconds (or since the
    /// first sample, if younger).
    pub(crate) requests_per_s: f64,
    /// Latency histogram of the same span.
    pub(crate) latency: Buckets,
    /// Requests completed in each of the last `HISTORY` seconds, oldest first.
    pub(crate) history: Vec<u64>,
}

impl BackendMetrics {
    /// Count one answered request by its status code's class.
    pub(crate) fn response(&self, status: u16) {
        self.responses.inc(status);
    }

    pub(crate) fn responses(&self) -> [u64; 5] {
        self.responses.get()
    }

    pub(crate) fn requests(&self) -> u64 {
        self.responses().iter().sum()
    }

    /// The sampler's once-a-second call.
    pub(crate) fn sample(&self) {
        let s = Sample {
            requests: self.requests(),
            latency: self.latency.snapshot(),
        };
        let mut w = self.window.lock().expect("window lock is never poisoned");
        if w.len() > HISTORY {
            w.pop_front();
        }
        w.push_back(s);
    }

    pub(crate) fn recent(&self) -> Recent {
        let w = self.window.lock().expect("window lock is never poisoned");
        let (Some(last), n) = (w.back(), w.len()) else {
            return Recent::default();
        };
        let span = (n - 1).min(WINDOW);
        let first = &w[n - 1 - span];
        let history = w
            .iter()
            .zip(w.iter().skip(1))
            .map(|(a, b)| b.requests.saturating_sub(a.requests))
            .collect();
        Recent {
            requests_per_s: if span == 0 {
                0.0
            } else {
                last.requests.saturating_sub(first.requests) as f64 / span as f64
            },
            latency: last.latency.since(&first.latency),
            history,
        }
    }
}

/// Sum several backends' recent figures into the fleet's (histories are
/// aligned at their newest second: a backend added by `scale` has a shorter one).
pub(crate) fn sum_recent<'a>(all: impl IntoIterator<Item = &'a Recent>) -> Recent {
    let mut out = Recent::default();
    for r in all {
        out.requests_per_s += r.requests_per_s;
        out.latency.add(&r.latency);
        if r.history.len() > out.history.len() {
            let pad = r.history.len() - out.history.len();
            out.history.splice(0..0, std::iter::repeat_n(0, pad));
        }
        let off = out.history.len() - r.history.len();
        for (a, b) in out.history[off..].iter_mut().zip(&r.history) {
            *a += b;
        }
    }
    out
}

/// Every backend's metrics the fleet has had, by address, removed ones
/// included: the source of the fleet's totals (`fleet status`, `/metrics`).
/// At most one entry per port and upstream ever configured.
#[derive(Debug, Default)]
pub(crate) struct Ledger(Mutex<BTreeMap<SocketAddr, Arc<BackendMetrics>>>);

impl Ledger {
    /// The metrics of the backend at `addr`: the ones it had before, if the
    /// fleet ever had it (a port scaled away and back), else new ones.
    pub(crate) fn for_addr(&self, addr: SocketAddr) -> Arc<BackendMetrics> {
        self.0
            .lock()
            .expect("ledger lock is never poisoned")
            .entry(addr)
            .or_default()
            .clone()
    }

    /// Every backend's metrics, present and removed.
    pub(crate) fn all(&self) -> Vec<Arc<BackendMetrics>> {
        self.0
            .lock()
            .expect("ledger lock is never poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// Requests answered by every backend the fleet has had, by status
    /// class: never less than at any earlier call.
    pub(crate) fn responses(&self) -> [u64; 5] {
        self.all().iter().fold([0; 5], |mut sum, m| {
            for (s, n) in sum.iter_mut().zip(m.responses()) {
                *s += n;
            }
            sum
        })
    }
}

/// The balancer's own counters (fleet-wide, outliving any pool).
#[derive(Debug, Default)]
pub(crate) struct BalancerMetrics {
    /// Client connections accepted, and open now.
    pub(crate) accepted: Counter,
    pub(crate) active: Gauge,
    /// Clients closed because no backend could take them.
    pub(crate) no_backend: Counter,
    /// http mode: requests the balancer answered before trying any backend
    /// (400, 408, 431, a 503 when none was routable), by status class.
    pub(crate) responses: ByClass,
    /// Every backend's metrics, removed backends' included (fleet totals).
    pub(crate) backends: Ledger,
    /// http mode: the balancer's own 502s (a backend failed before
    /// answering, no replay possible) and 504s (no answer in time).
    pub(crate) bad_gateway: Counter,
    pub(crate) gateway_timeout: Counter,
    /// What each kind of operation cost, for `/metrics` (`crate::cost`).
    pub(crate) operations: Totals,
}

/// The status code in an HTTP/1.x status line (`HTTP/1.1 200 OK`), if `head`
/// starts with one.
pub(crate) fn status_code(head: &[u8]) -> Option<u16> {
    let rest = head.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// The operations on a running fleet whose cost `crate::cost` measures
/// (the counters are here, below the balancer that holds them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Restart,
    Stop,
    Start,
    Scale,
    Reload,
    Upgrade,
    Watch,
}

impl Op {
    pub(crate) const ALL: [Op; 7] = [
        Op::Restart,
        Op::Stop,
        Op::Start,
        Op::Scale,
        Op::Reload,
        Op::Upgrade,
        Op::Watch,
    ];

    /// The `op` label in `/metrics`, and the line's first word.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Restart => "restart",
            Op::Stop => "stop",
            Op::Start => "start",
            Op::Scale => "scale",
            Op::Reload => "reload",
            Op::Upgrade => "upgrade",
            Op::Watch => "watch",
        }
    }
}

/// Why requests failed: (`reason` label in `/metrics`, words for the line).
pub(crate) const REASONS: [(&str, &str); 3] = [
    ("bad_gateway", "502 backend failed before answering"),
    ("gateway_timeout", "504 backend answered too late"),
    (
        "no_backend",
        "no healthy backend (503, or closed in tcp mode)",
    ),
];

/// One operation's totals: what `/metrics` shows per `op`.
#[derive(Debug, Default)]
pub(crate) struct OpTotals {
    /// Runs that ended well, and that ended in an error.
    pub(crate) ok: Counter,
    pub(crate) error: Counter,
    /// Milliseconds spent in them.
    pub(crate) millis: Counter,
    /// Requests served while they ran, and those that failed, by `REASONS`.
    pub(crate) requests: Counter,
    pub(crate) failed: [Counter; 3],
}

/// Every operation's totals, fleet-wide, for the supervisor's life.
#[derive(Debug, Default)]
pub(crate) struct Totals([OpTotals; 7]);

impl Totals {
    pub(crate) fn of(&self, op: Op) -> &OpTotals {
        &self.0[Op::ALL
            .iter()
            .position(|o| *o == op)
            .expect("ALL lists every op")]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_the_first_bound_at_or_above_the_value() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(100), 0);
        assert_eq!(bucket_of(101), 1);
        assert_eq!(bucket_of(200), 1);
        assert_eq!(bucket_of(201), 2);
        assert_eq!(bucket_of(400), 2);
        assert_eq!(bucket_of(52_428_800), BUCKETS - 1);
        assert_eq!(bucket_of(52_428_801), BUCKETS);
        assert_eq!(bucket_of(u64::MAX), BUCKETS);
        for i in 0..BUCKETS {
            let us = (bucket_bound(i) * 1e6).round() as u64;
            assert_eq!(bucket_of(us), i, "bound {i} belongs to its own bucket");
            assert_eq!(bucket_of(us + 1), i + 1);
        }
    }

    #[test]
    fn quantile_interpolates_inside_the_bucket() {
        let h = Histogram::default();
        assert_eq!(h.snapshot().quantile(0.99), None);
        for _ in 0..99 {
            h.observe(Duration::from_micros(50));
        }
        h.observe(Duration::from_millis(3));
        let b = h.snapshot();
        assert_eq!(b.count(), 100);
        assert_eq!(b.sum_us, 99 * 50 + 3000);
        // 99 of 100 are in the first bucket (<= 100 µs): p99 is its top.
        assert!((b.quantile(0.99).unwrap() - 0.0001).abs() < 1e-9);
        // The slowest one is in (1.6 ms, 3.2 ms].
        let max = b.quantile(1.0).unwrap();
        assert!(max > 0.0016 && max <= 0.0032, "{max}");
    }

    #[test]
    fn window_rates_and_history_come_from_sample_deltas() {
        let m = BackendMetrics::default();
        assert_eq!(m.recent(), Recent::default());
        m.sample();
        for second in 1..=12u64 {
            for _ in 0..second {
                m.response(200);
                m.latency.observe(Duration::from_millis(1));
            }
            m.sample();
        }
        let r = m.recent();
        // The last 10 seconds saw 3 + 4 + ... + 12 = 75 requests.
        assert!(
            (r.requests_per_s - 7.5).abs() < 1e-9,
            "{}",
            r.requests_per_s
        );
        assert_eq!(r.latency.count(), 75);
        assert_eq!(r.history, (1..=12).collect::<Vec<u64>>());
        let both = sum_recent([
            &r,
            &Recent {
                requests_per_s: 1.0,
                latency: Buckets::default(),
                history: vec![100],
            },
        ]);
        assert_eq!(both.history.len(), 12);
        assert_eq!(both.history[11], 112);
        assert_eq!(both.history[0], 1);
    }

    #[test]
    fn the_ledger_keeps_a_removed_backends_counts_and_hands_them_back_to_its_port() {
        let ledger = Ledger::default();
        let a = SocketAddr::from(([127, 0, 0, 1], 9002));
        let b = SocketAddr::from(([127, 0, 0, 1], 9003));
        ledger.for_addr(a).response(200);
        let removed = ledger.for_addr(b);
        removed.response(200);
        removed.response(404);
        // The slot that held it is gone; the ledger still counts it.
        drop(removed);
        assert_eq!(ledger.responses(), [0, 2, 0, 1, 0]);
        // Scaled back onto the same port: it carries on.
        let back = ledger.for_addr(b);
        assert_eq!(back.requests(), 2);
        back.response(200);
        assert_eq!(ledger.responses(), [0, 3, 0, 1, 0]);
        assert_eq!(ledger.all().len(), 2);
    }

    #[test]
    fn history_is_capped() {
        let m = BackendMetrics::default();
        for _ in 0..200 {
            m.response(200);
            m.sample();
        }
        assert_eq!(m.recent().history.len(), HISTORY);
    }

    #[test]
    fn status_classes_clamp_odd_codes() {
        let m = BackendMetrics::default();
        for code in [101, 200, 204, 302, 404, 503, 99, 777] {
            m.response(code);
        }
        assert_eq!(m.responses(), [2, 2, 1, 1, 2]);
    }

    #[test]
    fn status_line_parsing() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 404 Not Found"), Some(404));
        assert_eq!(status_code(b"HTTP/1.1 20"), None);
        assert_eq!(status_code(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(status_code(b"HTTP/1.1 abc"), None);
    }
}
