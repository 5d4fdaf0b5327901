//! What an operation on a running fleet cost its clients, from the
//! balancer's own counters: `Cost::start` when it begins, `Cost::finish`
//! when it ends, which gives the one line the command ends with
//! (`restart took 2.3 s: 0 of 18,211 requests failed`) and adds the same
//! numbers to the fleet's per-operation totals (`/metrics`).
//!
//! The counters are fleet-wide and monotonic (`metrics::Ledger` keeps a
//! removed backend's counts), so the difference of two snapshots is exactly
//! what was served in between, whichever backends came and went. It is the
//! whole fleet's traffic while the operation ran: a failure is counted
//! whether or not the operation caused it.
//!
//! A *failed* request is one the balancer could not get answered: its own
//! 502 (the backend failed before answering and the request could not be
//! replayed), its 504 (no answer in `response_timeout`), and a client it
//! had no backend for (503 in http mode, a closed connection in tcp mode).
//! A backend's own 5xx answer is an answer, not a loss.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::balancer::pool::Roster;
use crate::config::BalancerMode;
use crate::metrics::{BalancerMetrics, Op, REASONS};

/// The fleet-wide counters an operation's cost is the difference of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Snapshot {
    requests: u64,
    /// By `REASONS`.
    failed: [u64; 3],
}

impl Snapshot {
    fn of(m: &BalancerMetrics, mode: BalancerMode) -> Snapshot {
        let answered: u64 =
            m.backends.responses().iter().sum::<u64>() + m.responses.get().iter().sum::<u64>();
        let no_backend = m.no_backend.get();
        Snapshot {
            // In tcp mode a client with no backend is closed unanswered, so
            // it is not among the answers; in http mode it got a 503.
            requests: answered
                + match mode {
                    BalancerMode::Tcp => no_backend,
                    BalancerMode::Http => 0,
                },
            failed: [m.bad_gateway.get(), m.gateway_timeout.get(), no_backend],
        }
    }

    fn since(self, earlier: Snapshot) -> Snapshot {
        let mut failed = [0; 3];
        for (i, f) in failed.iter_mut().enumerate() {
            *f = self.failed[i].saturating_sub(earlier.failed[i]);
        }
        Snapshot {
            requests: self.requests.saturating_sub(earlier.requests),
            failed,
        }
    }
}

/// An operation under way: when it began and the counters then.
pub(crate) struct Cost {
    backends: Arc<Roster>,
    started: Instant,
    before: Snapshot,
}

impl Cost {
    pub(crate) fn start(backends: &Arc<Roster>) -> Cost {
        let before = Snapshot::of(&backends.metrics, backends.config().mode);
        Cost {
            backends: backends.clone(),
            started: Instant::now(),
            before,
        }
    }

    /// The operation ended (`ok`: without an error): add its cost to the
    /// totals and describe it in one line.
    pub(crate) fn finish(self, op: Op, ok: bool) -> String {
        let m = &self.backends.metrics;
        let took = self.started.elapsed();
        let cost = Snapshot::of(m, self.backends.config().mode).since(self.before);
        let t = m.operations.of(op);
        if ok { &t.ok } else { &t.error }.inc();
        t.millis.add(took.as_millis() as u64);
        t.requests.add(cost.requests);
        for (c, n) in t.failed.iter().zip(cost.failed) {
            c.add(n);
        }
        line(op, took, cost)
    }
}

fn line(op: Op, took: Duration, cost: Snapshot) -> String {
    let failed: u64 = cost.failed.iter().sum();
    let mut out = format!(
        "{} took {:.1} s: {} of {} requests failed",
        op.name(),
        took.as_secs_f64(),
        thousands(failed),
        // A failure during the operation may be of a request begun before
        // it: never say more failed than were served.
        thousands(cost.requests.max(failed)),
    );
    let why: Vec<String> = REASONS
        .iter()
        .zip(cost.failed)
        .filter(|(_, n)| *n > 0)
        .map(|((_, words), n)| format!("{} × {words}", thousands(n)))
        .collect();
    if !why.is_empty() {
        out.push_str(&format!(" ({})", why.join(", ")));
    }
    out
}

/// 18211 -> "18,211".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::pool::Pool;
    use crate::config::Config;
    use crate::metrics::Counter;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(18211), "18,211");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn the_line_says_how_long_how_many_and_why() {
        let s = Duration::from_millis(2340);
        let clean = Snapshot {
            requests: 18211,
            failed: [0; 3],
        };
        assert_eq!(
            line(Op::Restart, s, clean),
            "restart took 2.3 s: 0 of 18,211 requests failed"
        );
        let lossy = Snapshot {
            requests: 18211,
            failed: [3, 0, 1],
        };
        assert_eq!(
            line(Op::Reload, s, lossy),
            "reload took 2.3 s: 4 of 18,211 requests failed (3 × 502 backend failed before \
             answering, 1 × no healthy backend (503, or closed in tcp mode))"
        );
    }

    #[test]
    fn the_cost_is_what_was_served_in_between_and_lands_in_the_totals() {
        let backends = Arc::new(Roster::new(
            Pool::new(Vec::new()),
            Config::default().balancer,
        ));
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 9000));
        let m = &backends.metrics;
        m.backends.for_addr(addr).response(200);
        let cost = Cost::start(&backends);
        for _ in 0..5 {
            m.backends.for_addr(addr).response(200);
        }
        m.backends.for_addr(addr).response(502);
        m.bad_gateway.inc();
        let line = cost.finish(Op::Scale, true);
        assert!(
            line.ends_with(": 1 of 6 requests failed (1 × 502 backend failed before answering)"),
            "{line}"
        );
        let t = m.operations.of(Op::Scale);
        assert_eq!((t.ok.get(), t.error.get()), (1, 0));
        assert_eq!(t.requests.get(), 6);
        assert_eq!(t.failed.each_ref().map(Counter::get), [1, 0, 0]);
        assert_eq!(m.operations.of(Op::Restart).requests.get(), 0);
    }
}
