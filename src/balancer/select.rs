//! Selection and retry, shared by both engines (pingora's `select_with` is
//! the model): a `Selection` yields the next backend a request (http) or a
//! connection (tcp) should try, and is told how each try failed.
//!
//! The rules it keeps, so neither engine writes them again:
//! - the pool is loaded per try, so a `fleet scale` between two tries is seen;
//! - health filtering, then the strategy (`Pool::pick`);
//! - each backend at most once (known by address: two upstreams on different
//!   hosts may share a port), until all were tried and the request was held
//!   for one to come (back) up;
//! - when none is left, the request is held up to `NO_BACKEND_WAIT` from its
//!   first byte for a backend to become routable, then given up
//!   (`Next::NoBackend`), unless a try already failed after the request was
//!   written and that backend is still routable: then the failure stands
//!   (`Next::FailureStands`), with no waiting;
//! - a request that failed after it was written goes once more at most
//!   (`failed_after_write`), and takes at most one backend out of rotation
//!   (`strike`).
//!
//! Invariant: a selection allocates nothing. The tried set is an inline
//! array; only a request that tried more than `INLINE` backends (each failing
//! to connect) spills onto the heap.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::time::Instant;

use super::pool::{Pool, Roster, Slot};
use super::{NO_BACKEND_WAIT, strike, wait_for_routable};
use crate::config::BalancerConfig;

/// Tried backends kept inline: more than any request tries but the rarest.
const INLINE: usize = 8;

/// What to do next.
#[derive(Debug)]
pub(crate) enum Next {
    /// Try this backend.
    Try(Arc<Slot>),
    /// No backend became routable in time: 503 (http) or close (tcp).
    NoBackend,
    /// The one more try a written request gets has nowhere to go, and the
    /// backend that failed it is alive: the failure stands (502 or close).
    FailureStands,
}

/// The backends tried for one request, in order: inline, or (past
/// `INLINE`) all of them in `spilled`.
#[derive(Debug)]
struct Tried {
    inline: [SocketAddr; INLINE],
    len: usize,
    spilled: Vec<SocketAddr>,
}

impl Tried {
    fn new() -> Self {
        Tried {
            inline: [SocketAddr::from(([0, 0, 0, 0], 0)); INLINE],
            len: 0,
            spilled: Vec::new(),
        }
    }

    fn as_slice(&self) -> &[SocketAddr] {
        if self.spilled.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spilled
        }
    }

    fn push(&mut self, addr: SocketAddr) {
        if self.len < INLINE {
            self.inline[self.len] = addr;
            self.len += 1;
            return;
        }
        if self.spilled.is_empty() {
            self.spilled.extend_from_slice(&self.inline);
        }
        self.spilled.push(addr);
    }

    fn clear(&mut self) {
        self.len = 0;
        self.spilled.clear();
    }
}

/// The selection-and-retry state of one request (http) or connection (tcp).
#[derive(Debug)]
pub(crate) struct Selection<'a> {
    backends: &'a Roster,
    cfg: &'a BalancerConfig,
    /// For `ip-hash`.
    client: IpAddr,
    /// End of the hold for a routable backend (`NO_BACKEND_WAIT` from the
    /// request's first byte).
    deadline: Instant,
    tried: Tried,
    /// The pool the last backend came from: its strikes are judged there.
    pool: Arc<Pool>,
    /// The backend of the last try.
    last: Option<Arc<Slot>>,
    /// Tries that failed after the request was written (at most 2).
    written_failures: u8,
    /// One of them took its backend out of rotation (at most 1 per request).
    ejected: bool,
}

impl<'a> Selection<'a> {
    /// A selection for a request whose first byte came at `started`.
    pub(crate) fn new(
        backends: &'a Roster,
        cfg: &'a BalancerConfig,
        client: IpAddr,
        started: Instant,
    ) -> Self {
        Selection {
            backends,
            cfg,
            client,
            deadline: started + NO_BACKEND_WAIT,
            tried: Tried::new(),
            pool: backends.load(),
            last: None,
            written_failures: 0,
            ejected: false,
        }
    }

    /// The next backend to try, after holding the request for one if none
    /// is left.
    pub(crate) async fn next(&mut self) -> Next {
        // The pool as it is now: a `fleet scale` between two tries is seen.
        // (The first try uses the one `new` loaded a moment ago.)
        if self.last.is_some() {
            self.pool = self.backends.load();
        }
        loop {
            let picked = self.pool.pick(
                self.cfg.strategy,
                self.client,
                self.tried.as_slice(),
                self.cfg.slow_start,
            );
            if let Some(slot) = picked.cloned() {
                self.tried.push(slot.addr);
                self.last = Some(slot.clone());
                return Next::Try(slot);
            }
            if self.written_failures > 0 && self.last.as_ref().is_some_and(|s| s.routable()) {
                return Next::FailureStands;
            }
            // Every routable backend was tried, or none is routable: hold
            // the request briefly for one to come (back) up, then start over.
            let change = !self.tried.as_slice().is_empty();
            if !wait_for_routable(self.backends, &self.pool, change, self.deadline).await {
                self.backends.metrics.no_backend.inc();
                return Next::NoBackend;
            }
            self.pool = self.backends.load();
            self.tried.clear();
        }
    }

    /// More than one backend was tried.
    pub(crate) fn retried(&self) -> bool {
        self.tried.as_slice().len() > 1
    }

    /// How many backends were tried (since the last hold).
    pub(crate) fn tried(&self) -> usize {
        self.tried.as_slice().len()
    }

    /// A try on `slot` failed for `why`: one strike (`balancer::strike`);
    /// only the request's first ejection takes the backend out.
    pub(crate) fn strike(&mut self, slot: &Slot, why: &str) {
        self.ejected |= strike(&self.pool, slot, why, !self.ejected, &self.cfg.passive);
    }

    /// A try failed after the request was written; true if it may go once
    /// more (it may be the request that kills backends: twice at most).
    pub(crate) fn failed_after_write(&mut self) -> bool {
        self.written_failures = self.written_failures.saturating_add(1);
        self.written_failures < 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::pool::Pool;
    use crate::config::Config;
    use crate::lifecycle::Lifecycle;

    pub(crate) fn roster(n: u16) -> Roster {
        let slots = (0..n)
            .map(|i| Arc::new(Slot::new(9000 + i, SocketAddr::from(([127, 0, 0, 1], 9000 + i))).0))
            .collect();
        let r = Roster::new(Pool::new(slots), Config::default().balancer);
        for s in r.load().slots() {
            s.publish(true, Lifecycle::default());
        }
        r
    }

    fn client() -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }

    #[tokio::test(start_paused = true)]
    async fn each_backend_is_tried_at_most_once_then_no_backend() {
        let r = roster(3);
        let cfg = r.config();
        let mut sel = Selection::new(&r, &cfg, client(), Instant::now());
        let mut ports = Vec::new();
        while let Next::Try(slot) = sel.next().await {
            ports.push(slot.port);
        }
        ports.sort_unstable();
        assert_eq!(ports, [9000, 9001, 9002]);
        assert!(sel.retried());
    }

    #[tokio::test(start_paused = true)]
    async fn a_written_failure_goes_once_more_then_stands() {
        let r = roster(3);
        let cfg = r.config();
        let mut sel = Selection::new(&r, &cfg, client(), Instant::now());
        assert!(matches!(sel.next().await, Next::Try(_)));
        assert!(
            sel.failed_after_write(),
            "the first written failure goes once more"
        );
        assert!(matches!(sel.next().await, Next::Try(_)));
        assert!(!sel.failed_after_write(), "the second does not");
    }

    #[tokio::test(start_paused = true)]
    async fn the_failure_stands_when_its_backend_is_alive_and_none_is_left() {
        let r = roster(1);
        let cfg = r.config();
        let mut sel = Selection::new(&r, &cfg, client(), Instant::now());
        assert!(matches!(sel.next().await, Next::Try(_)));
        sel.failed_after_write();
        assert!(matches!(sel.next().await, Next::FailureStands));
    }

    #[tokio::test(start_paused = true)]
    async fn no_routable_backend_is_held_for_then_given_up() {
        let r = roster(1);
        r.load().slots()[0].report_failure();
        let cfg = r.config();
        let started = Instant::now();
        let mut sel = Selection::new(&r, &cfg, client(), started);
        assert!(matches!(sel.next().await, Next::NoBackend));
        assert!(
            started.elapsed() >= NO_BACKEND_WAIT,
            "held for a backend first"
        );
        assert_eq!(r.metrics.no_backend.get(), 1);
    }

    #[test]
    fn more_tries_than_fit_inline_spill_and_keep_their_order() {
        let mut t = Tried::new();
        let addrs: Vec<SocketAddr> = (0..INLINE as u16 + 3)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        for a in &addrs {
            t.push(*a);
        }
        assert_eq!(t.as_slice(), &addrs[..]);
        t.clear();
        assert!(t.as_slice().is_empty());
    }
}
