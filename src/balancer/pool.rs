//! The data plane's view of the backends: what the balancer reads on every
//! connection (an address, a routable flag, counters, strikes: atomics,
//! behind an atomically swapped `Pool`), next to the two views it only
//! carries for their owners.
//!
//! Three views of a backend, each with one owner:
//! - the data plane's (this `Slot`'s own fields): `routable` is written by
//!   the backend task (`publish`), except that the balancer may *clear* it
//!   when a connect fails or requests failed often enough (passive health,
//!   `Pool::eject`) and then tells the backend task, which records the
//!   failure in its state machine. The balancer alone owns a slot's strikes.
//!   Reads on the hot path are atomics only.
//! - the lifecycle (`crate::lifecycle::Lifecycle`): written only by the
//!   backend task, in `publish`, on a state change; read by `control::status`
//!   (which alone turns it into the protocol's `BackendStatus`) and the
//!   supervisor's operations, never by a request.
//! - the http engine's kept-alive connections (`balancer::http::conn_pool`),
//!   which this module holds but never looks into.
//!
//! A `Pool` is immutable; the set of backends changes (`fleet scale`) by
//! swapping a whole new pool into `Roster`, so a request either sees the old
//! set or the new one, never half of each. The wake-ups (`became_routable`,
//! `changed`) live in `Roster`, not in a pool, so a client waiting for a
//! routable backend is woken by a backend of the new pool too.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, watch};

use super::PerThread;
use super::access_log::AccessLog;
use super::http::conn_pool::ConnPool;
use super::passive::{self, Strikes, Verdict};
use super::strategy::{Candidate, Strategy};
use crate::config::{BalancerConfig, PassiveHealth};
use crate::lifecycle::{Lifecycle, Phase};
use crate::metrics::{BackendMetrics, BalancerMetrics};

/// One backend: the data plane's view, plus the lifecycle and the pooled
/// connections it carries for their owners.
#[derive(Debug)]
pub(crate) struct Slot {
    pub port: u16,
    /// Where the balancer connects; a slot's identity (an upstream's port
    /// alone is not unique).
    pub addr: SocketAddr,
    /// An upstream's name as configured (`lab-pc-2:9002`); `None` for a
    /// local backend, which is known by its port.
    pub upstream: Option<String>,
    /// The `X-Fleet-Backend` value the http balancer adds to a response
    /// that lacks one: the name `fleet status` gives this backend, the port
    /// of a local one (what the built-in worker sends itself) or an
    /// upstream's configured name. Formatted once, not per request.
    pub(crate) name: Box<str>,
    /// Routable = `Running { healthy: true }` in the backend's state machine.
    routable: AtomicBool,
    /// Slow start (`balancer.slow_start`): when this backend last came into
    /// rotation, as `entry::*` codes; its share of new requests ramps up
    /// from then. Written by `publish` on a false -> true change of
    /// `routable`, and armed by `Roster::swap` for a new backend joining
    /// a serving fleet; read by `Pool::pick` (one relaxed load).
    entered: AtomicU64,
    /// Traffic counters and latency histograms (`crate::metrics`): atomics
    /// the balancer adds to, read by `status` and `/metrics`. Its `active`
    /// is in-flight work: requests in http mode, proxied connections in tcp
    /// mode (draining waits for it to reach 0; least-connections compares it).
    /// Shared with the fleet's `metrics::Ledger`, which outlives the slot.
    pub(crate) metrics: Arc<BackendMetrics>,
    /// Passive-failure reports to the owning backend task (capacity 1: one
    /// pending report is as good as many).
    passive: mpsc::Sender<()>,
    /// Woken when it leaves rotation, for requests still waiting on its
    /// first response byte (a host cut off answers nothing, not even a reset).
    /// Per engine thread (every request waits on it, and a `Notify` keeps
    /// its waiters behind a lock): notified on all of them.
    left_rotation: PerThread<Notify>,
    /// A connect timed out since the owner last looked: a hint, not a
    /// verdict (a full listen backlog is busy, not dead), which the owner
    /// weighs with its next probe result.
    timed_out: AtomicBool,
    /// Failed requests in a row (`balancer::passive`), written only when a
    /// request fails or the first answer after one comes.
    strikes: Mutex<Strikes>,
    /// `strikes` is not `Clear`: the one relaxed load a response costs.
    striking: AtomicBool,
    /// The backend task's lifecycle snapshot, on a watch channel: written
    /// on a state change (`publish`), read by `status` and the task's `Job`;
    /// never on a request.
    lifecycle: watch::Sender<Lifecycle>,
    /// Woken when the last in-flight request of a backend out of rotation
    /// ends: what a drain waits for (`until_drained`).
    drained: Notify,
    /// http mode: kept-alive connections to this backend awaiting a request,
    /// owned by the http engine (`balancer::http::conn_pool`): one part per
    /// engine thread, each used only by its own thread.
    pub(crate) conns: ConnPool,
}

impl Slot {
    pub(crate) fn new(port: u16, addr: SocketAddr) -> (Self, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel(1);
        let slot = Slot {
            port,
            addr,
            upstream: None,
            name: port.to_string().into(),
            routable: AtomicBool::new(false),
            entered: AtomicU64::new(entry::NEVER),
            metrics: Arc::default(),
            passive: tx,
            conns: ConnPool::default(),
            left_rotation: PerThread::default(),
            drained: Notify::new(),
            timed_out: AtomicBool::new(false),
            strikes: Mutex::new(Strikes::Clear),
            striking: AtomicBool::new(false),
            // Its task starts it at once; "stopped" would read as "gave up".
            lifecycle: watch::Sender::new(Lifecycle {
                state: Phase::Starting,
                ..Lifecycle::default()
            }),
        };
        (slot, rx)
    }

    /// A remote backend: no process, only health checks (`supervisor::upstream`).
    pub(crate) fn upstream(name: String, addr: SocketAddr) -> (Self, mpsc::Receiver<()>) {
        let (mut slot, rx) = Slot::new(addr.port(), addr);
        slot.name = name.as_str().into();
        slot.upstream = Some(name);
        (slot, rx)
    }

    pub(crate) fn routable(&self) -> bool {
        self.routable.load(Ordering::Acquire)
    }

    /// Balancer: the connect failed; take it out of rotation now and let the
    /// owner know.
    pub(crate) fn report_failure(&self) {
        self.routable.store(false, Ordering::Release);
        // Its pooled connections went with it.
        self.conns.clear();
        self.left_rotation.all().for_each(Notify::notify_waiters);
        let _ = self.passive.try_send(());
    }

    /// Completes once this backend is out of rotation (at once if it is).
    pub(crate) async fn out_of_rotation(&self) {
        loop {
            let notified = self.left_rotation.here().notified();
            if !self.routable() {
                return;
            }
            notified.await;
        }
    }

    /// Balancer: a connect timed out. The backend stays in rotation; its
    /// owner takes it out only if its next probe fails too.
    pub(crate) fn report_timeout(&self) {
        self.timed_out.store(true, Ordering::Relaxed);
    }

    /// Balancer: a request failed here after it was written. `Eject`: this
    /// was the strike that makes enough (`Pool::eject` decides).
    pub(crate) fn strike(&self, now: Instant, p: &PassiveHealth) -> (Strikes, Verdict) {
        self.strikes_step(passive::Event::Strike, now, p)
    }

    /// Balancer: the backend sent a response head, which ends a run of
    /// strikes. A relaxed load when there is none.
    pub(crate) fn answered(&self, p: &PassiveHealth) {
        if self.striking.load(Ordering::Relaxed) {
            self.strikes_step(passive::Event::Answered, Instant::now(), p);
        }
    }

    fn strikes_step(
        &self,
        ev: passive::Event,
        now: Instant,
        p: &PassiveHealth,
    ) -> (Strikes, Verdict) {
        let mut strikes = self
            .strikes
            .lock()
            .expect("strikes lock is never poisoned: no panics while held");
        let (next, verdict) = passive::step(*strikes, ev, now, p);
        *strikes = next;
        self.striking
            .store(next != Strikes::Clear, Ordering::Relaxed);
        (next, verdict)
    }

    /// Owner: did a connect time out since the last call?
    pub(crate) fn take_timeout(&self) -> bool {
        self.timed_out.swap(false, Ordering::Relaxed)
    }

    /// Owner: publish the state machine's view: the lifecycle first, so a
    /// backend is never routable before its status says why. A change to
    /// routable starts its slow-start ramp (`entered_rotation`).
    pub(crate) fn publish(&self, routable: bool, lifecycle: Lifecycle) {
        self.lifecycle.send_replace(lifecycle);
        let was = self.routable.swap(routable, Ordering::AcqRel);
        if routable && !was {
            self.entered_rotation();
        }
        if !routable {
            self.left_rotation.all().for_each(Notify::notify_waiters);
        }
    }

    /// It came into rotation: at full share the first time unless armed
    /// (the fleet's start, where all backends begin together), else from
    /// now on a ramp (a restart, a `rise` after failing, a backend added to
    /// a serving fleet).
    fn entered_rotation(&self) {
        let code = match self.entered.load(Ordering::Relaxed) {
            entry::NEVER => entry::FULL,
            _ => entry::at(Instant::now()),
        };
        self.entered.store(code, Ordering::Relaxed);
    }

    /// A new backend in a pool that already serves: its first entry ramps.
    fn arm(&self) {
        let _ = self.entered.compare_exchange(
            entry::NEVER,
            entry::ARMED,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Its share of new requests now, 0.0..=1.0 (1.0 when not ramping).
    pub(crate) fn share(&self, slow_start: Duration, now: Instant) -> f64 {
        match self.entered.load(Ordering::Relaxed) {
            code if code >= entry::SINCE => ramp(entry::elapsed(code, now), slow_start),
            _ => 1.0,
        }
    }

    /// `share` in whole percent while ramping, for `fleet status`; `None`
    /// at full share or out of rotation.
    pub(crate) fn ramp_pct(&self, slow_start: Duration) -> Option<u8> {
        let share = self.share(slow_start, Instant::now());
        (self.routable() && share < 1.0).then(|| (share * 100.0).floor() as u8)
    }

    /// The lifecycle as its task last published it (a copy: no lock is held
    /// after this returns).
    pub(crate) fn status(&self) -> Lifecycle {
        self.lifecycle.borrow().clone()
    }

    /// Count one unit of in-flight work (a request in http mode, a proxied
    /// connection in tcp mode) for as long as the guard lives.
    pub(crate) fn connection(self: &Arc<Self>) -> ConnGuard {
        self.metrics.active.inc();
        self.metrics.connections.inc();
        ConnGuard(self.clone())
    }

    pub(crate) fn active(&self) -> u64 {
        self.metrics.active.get()
    }

    /// Until no work is in flight (woken by the last one to end while the
    /// backend is out of rotation, as a drain has it).
    pub(crate) async fn until_drained(&self) {
        loop {
            let idle = self.drained.notified();
            if self.active() == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Candidate for Arc<Slot> {
    fn active(&self) -> u64 {
        self.metrics.active.get()
    }
    fn port(&self) -> u16 {
        self.port
    }
}

/// The positions in a pool passed over by one pick for slow start: a
/// bitmask on the stack, so a pick still allocates nothing. A position past
/// its end (a pool of over 1024 backends) is never passed over.
#[derive(Default)]
struct Skipped([u64; 16]);

impl Skipped {
    fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Mark `i`; false if it is past the end.
    fn add(&mut self, i: usize) -> bool {
        match self.0.get_mut(i / 64) {
            Some(w) => {
                *w |= 1 << (i % 64);
                true
            }
            None => false,
        }
    }
}

/// The codes of `Slot::entered`: a time as milliseconds since a process-wide
/// epoch, offset past the three markers.
mod entry {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    /// Never in rotation: its first entry is at full share.
    pub(super) const NEVER: u64 = 0;
    /// Never in rotation, and its first entry ramps.
    pub(super) const ARMED: u64 = 1;
    /// In rotation (or was) at full share.
    pub(super) const FULL: u64 = 2;
    /// Codes from here on are `SINCE + ms since EPOCH` of its entry.
    pub(super) const SINCE: u64 = 3;

    fn epoch() -> Instant {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    pub(super) fn at(t: Instant) -> u64 {
        SINCE + t.saturating_duration_since(epoch()).as_millis() as u64
    }

    pub(super) fn elapsed(code: u64, now: Instant) -> Duration {
        let since = Duration::from_millis(code - SINCE);
        now.saturating_duration_since(epoch()).saturating_sub(since)
    }
}

/// Slow start: the share of its full share of new requests a backend gets
/// `elapsed` after it came into rotation: linear from 0 to 1 over
/// `slow_start` (HAProxy's `slowstart`); 1 when `slow_start` is zero.
pub(crate) fn ramp(elapsed: Duration, slow_start: Duration) -> f64 {
    if elapsed >= slow_start {
        return 1.0;
    }
    elapsed.as_secs_f64() / slow_start.as_secs_f64()
}

pub(crate) struct ConnGuard(Arc<Slot>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.metrics.active.dec();
        // Only out of rotation (draining) is anyone waiting for this.
        if !self.0.routable() && self.0.active() == 0 {
            self.0.drained.notify_waiters();
        }
    }
}

/// The fleet's current pool, swapped whole when the set of backends changes,
/// plus the wake-ups that must outlive any one pool.
#[derive(Debug)]
pub(crate) struct Roster {
    current: ArcSwap<Pool>,
    /// The balancer's settings, read per connection so `fleet reload` can
    /// change timeouts and strategy without a restart.
    config: ArcSwap<BalancerConfig>,
    /// Woken whenever a backend becomes routable (or the pool is swapped), for
    /// clients waiting on an empty pool.
    pub(crate) became_routable: Notify,
    /// Woken on every published change, for the start-up readiness wait.
    pub(crate) changed: Notify,
    /// The balancer's own counters, which outlive any pool.
    pub(crate) metrics: BalancerMetrics,
    /// The access log, when `balancer.access_log` is set (fixed at start).
    pub(crate) access_log: OnceLock<AccessLog>,
    /// Cancelled when a new supervisor takes the fleet over (`fleet
    /// upgrade`): the accept loop ends and every client connection closes
    /// after its next response (`Connection: close`), so its client
    /// reconnects to the new one without a failed request.
    pub(crate) handover: tokio_util::sync::CancellationToken,
}

impl Roster {
    pub(crate) fn new(pool: Pool, config: BalancerConfig) -> Self {
        Roster {
            current: ArcSwap::from_pointee(pool),
            config: ArcSwap::from_pointee(config),
            became_routable: Notify::new(),
            changed: Notify::new(),
            metrics: BalancerMetrics::default(),
            access_log: OnceLock::new(),
            handover: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// The pool as it is now: lock-free, cheap enough for every request.
    pub(crate) fn load(&self) -> Arc<Pool> {
        self.current.load_full()
    }

    /// The balancer's settings as they are now.
    pub(crate) fn config(&self) -> Arc<BalancerConfig> {
        self.config.load_full()
    }

    /// New balancer settings, taken by connections accepted from now on.
    pub(crate) fn set_config(&self, config: BalancerConfig) {
        self.config.store(Arc::new(config));
    }

    /// Replace the set of backends. Readers holding the old pool finish with
    /// it; waiters are woken to look at the new one.
    pub(crate) fn swap(&self, pool: Pool) {
        // A backend joining a fleet that serves ramps up (slow start); the
        // fleet's first backends, all starting together, do not.
        let old = self.current.load();
        if old.any_routable() {
            for slot in pool.slots() {
                if !old.slots.iter().any(|s| Arc::ptr_eq(s, slot)) {
                    slot.arm();
                }
            }
        }
        self.current.store(Arc::new(pool));
        self.became_routable.notify_waiters();
        self.changed.notify_waiters();
    }

    /// A backend task published a change: wake whoever waits on one.
    pub(crate) fn notify(&self, routable: bool) {
        if routable {
            self.became_routable.notify_waiters();
        }
        self.changed.notify_waiters();
    }
}

/// The backends in rotation order, plus the round-robin cursor.
#[derive(Debug)]
pub(crate) struct Pool {
    slots: Vec<Arc<Slot>>,
    next: AtomicUsize,
    /// Held while deciding an ejection for strikes, so two requests failing
    /// at once cannot both take the fleet's last spare share.
    ejecting: Mutex<()>,
}

impl Pool {
    pub(crate) fn new(slots: Vec<Arc<Slot>>) -> Self {
        Pool {
            slots,
            next: AtomicUsize::new(0),
            ejecting: Mutex::new(()),
        }
    }

    /// Take `slot` out of rotation for its strikes, if the fleet can spare
    /// it (`passive::may_eject`); true if it did. A backend of another pool
    /// (a `fleet scale` in between) is left alone.
    pub(crate) fn eject(&self, slot: &Slot, p: &PassiveHealth) -> bool {
        let _deciding = self
            .ejecting
            .lock()
            .expect("ejecting lock is never poisoned: no panics while held");
        if !slot.routable() || !self.slots.iter().any(|s| std::ptr::eq(&**s, slot)) {
            return false;
        }
        let out = self.slots.iter().filter(|s| !s.routable()).count();
        if !passive::may_eject(self.slots.len(), out, p.max_ejection_percent) {
            return false;
        }
        slot.report_failure();
        slot.strikes_step(passive::Event::Ejected, Instant::now(), p);
        true
    }

    pub(crate) fn slots(&self) -> &[Arc<Slot>] {
        &self.slots
    }

    /// Health filtering, then selection: the routable backends not yet
    /// `tried` for this request, and `strategy`'s choice among them.
    /// Slots are known by address: two upstreams on different hosts may
    /// share a port.
    ///
    /// Slow start: a choice still ramping up (`Slot::share` < 1) is kept
    /// with probability `share` and otherwise passed over for the
    /// strategy's next choice among the others, so its share of requests
    /// is `share` times its full one whatever the strategy. The last
    /// candidate is always taken: a ramp never refuses a request.
    pub(crate) fn pick(
        &self,
        strategy: Strategy,
        client: IpAddr,
        tried: &[SocketAddr],
        slow_start: Duration,
    ) -> Option<&Arc<Slot>> {
        self.pick_at(strategy, client, tried, slow_start, Instant::now)
    }

    /// `pick`, with the clock (read only for a ramp) given, for tests.
    fn pick_at(
        &self,
        strategy: Strategy,
        client: IpAddr,
        tried: &[SocketAddr],
        slow_start: Duration,
        clock: impl FnOnce() -> Instant,
    ) -> Option<&Arc<Slot>> {
        let mut skipped = Skipped::default();
        let mut chosen = strategy.choose(self.eligible(tried, &skipped), client, &self.next)?;
        if slow_start.is_zero() {
            return Some(chosen);
        }
        let now = clock();
        loop {
            let share = chosen.share(slow_start, now);
            if share >= 1.0 || fastrand::f64() < share {
                return Some(chosen);
            }
            let at = self.slots.iter().position(|s| std::ptr::eq(s, chosen));
            if !at.is_some_and(|i| skipped.add(i)) {
                return Some(chosen);
            }
            // The others: from a random start, not the shared cursor, so
            // the passed-over share is spread evenly. None left: the last
            // one passed over takes it.
            match strategy.choose_instead(self.eligible(tried, &skipped), client) {
                Some(next) => chosen = next,
                None => return Some(chosen),
            }
        }
    }

    /// The backends a request may go to: routable, not yet `tried`, not
    /// passed over for slow start. Walked, not collected: a pick allocates
    /// nothing (pingora's `select_with` shape).
    fn eligible<'a>(
        &'a self,
        tried: &[SocketAddr],
        skipped: &Skipped,
    ) -> impl Iterator<Item = &'a Arc<Slot>> + Clone {
        self.slots
            .iter()
            .enumerate()
            .filter(move |(i, s)| s.routable() && !tried.contains(&s.addr) && !skipped.contains(*i))
            .map(|(_, s)| s)
    }

    pub(crate) fn any_routable(&self) -> bool {
        self.slots.iter().any(|s| s.routable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: u16) -> Pool {
        Pool::new(
            (0..n)
                .map(|i| {
                    Arc::new(Slot::new(9000 + i, SocketAddr::from(([127, 0, 0, 1], 9000 + i))).0)
                })
                .collect(),
        )
    }

    fn up(p: &Pool, i: usize) {
        p.slots()[i].publish(true, Lifecycle::default());
    }

    #[test]
    fn pick_skips_unroutable_and_tried_backends() {
        let p = pool(4);
        (0..4).for_each(|i| up(&p, i));
        p.slots()[1].report_failure();
        let client = IpAddr::from([127, 0, 0, 1]);
        let mut tried = Vec::new();
        while let Some(s) = p.pick(Strategy::RoundRobin, client, &tried, Duration::ZERO) {
            tried.push(s.addr);
        }
        let mut ports: Vec<u16> = tried.iter().map(SocketAddr::port).collect();
        ports.sort_unstable();
        assert_eq!(ports, [9000, 9002, 9003]);
    }

    #[test]
    fn pick_spreads_a_dead_backends_share_evenly() {
        let p = pool(3);
        up(&p, 0);
        up(&p, 2);
        let mut counts = [0; 3];
        for _ in 0..300 {
            let s = p.pick(
                Strategy::RoundRobin,
                IpAddr::from([127, 0, 0, 1]),
                &[],
                Duration::ZERO,
            );
            counts[(s.expect("some").port - 9000) as usize] += 1;
        }
        assert_eq!(counts, [150, 0, 150]);
    }

    #[test]
    fn the_ramp_is_linear_from_zero_to_full_over_slow_start() {
        let s = Duration::from_secs(10);
        assert_eq!(ramp(Duration::ZERO, s), 0.0);
        assert_eq!(ramp(Duration::from_millis(2500), s), 0.25);
        assert_eq!(ramp(Duration::from_secs(5), s), 0.5);
        assert_eq!(ramp(Duration::from_secs(10), s), 1.0);
        assert_eq!(ramp(Duration::from_secs(60), s), 1.0);
        // Off: always the full share.
        assert_eq!(ramp(Duration::ZERO, Duration::ZERO), 1.0);
    }

    #[test]
    fn the_first_entry_is_at_full_share_and_a_comeback_ramps() {
        let p = pool(2);
        let ss = Duration::from_secs(10);
        up(&p, 0);
        let s = &p.slots()[0];
        assert_eq!(s.share(ss, Instant::now()), 1.0, "the fleet's start");
        assert_eq!(s.ramp_pct(ss), None);
        s.report_failure();
        up(&p, 0);
        let now = Instant::now();
        assert!(s.share(ss, now) < 0.1, "{}", s.share(ss, now));
        assert_eq!(s.ramp_pct(ss), Some(0));
        let half = s.share(ss, now + Duration::from_secs(5));
        assert!((0.49..=0.51).contains(&half), "{half}");
        assert_eq!(s.share(ss, now + Duration::from_secs(11)), 1.0);
        // A republish while in rotation does not restart the ramp.
        up(&p, 0);
        assert_eq!(s.share(ss, now + Duration::from_secs(11)), 1.0);
        // Slow start off: no ramp shown.
        assert_eq!(s.ramp_pct(Duration::ZERO), None);
    }

    #[test]
    fn a_backend_added_to_a_serving_fleet_ramps_and_the_first_ones_do_not() {
        let first = pool(2);
        let b = Roster::new(
            Pool::new(Vec::new()),
            crate::config::Config::default().balancer,
        );
        b.swap(Pool::new(first.slots().to_vec()));
        up(&first, 0);
        up(&first, 1);
        let added = Arc::new(Slot::new(9009, SocketAddr::from(([127, 0, 0, 1], 9009))).0);
        let mut slots = first.slots().to_vec();
        slots.push(added.clone());
        b.swap(Pool::new(slots));
        added.publish(true, Lifecycle::default());
        let ss = Duration::from_secs(10);
        let now = Instant::now();
        assert!(added.share(ss, now) < 0.1);
        for s in first.slots() {
            assert_eq!(s.share(ss, now), 1.0);
        }
    }

    #[test]
    fn a_ramping_backend_gets_its_share_times_the_ramp_under_every_strategy() {
        let ss = Duration::from_secs(100);
        for strategy in [
            Strategy::RoundRobin,
            Strategy::LeastConnections,
            Strategy::PowerOfTwo,
            Strategy::IpHash,
        ] {
            let p = pool(4);
            (0..4).for_each(|i| up(&p, i));
            let s = &p.slots()[3];
            s.report_failure();
            up(&p, 3);
            // Entered 25 s ago: a quarter of its full share.
            let later = Instant::now() + Duration::from_secs(25);
            let rounds = 40_000;
            let mut counts = [0usize; 4];
            for r in 0..rounds {
                let client = IpAddr::from([10, 0, (r >> 8) as u8, r as u8]);
                let s = p
                    .pick_at(strategy, client, &[], ss, || later)
                    .expect("some");
                counts[(s.port - 9000) as usize] += 1;
            }
            // Full share 1/4, a quarter of it: 1/16 of the requests.
            let got = counts[3] as f64 / rounds as f64;
            assert!(
                (0.04..0.09).contains(&got),
                "{strategy:?}: ramping share {got} (want ~0.0625) {counts:?}"
            );
            // The rest is spread evenly over the others (5/16 each).
            for n in &counts[..3] {
                let got = *n as f64 / rounds as f64;
                assert!(
                    (0.27..0.36).contains(&got),
                    "{strategy:?}: uneven {counts:?}"
                );
            }
            // Slow start off: the full share again.
            let mut full = 0;
            for r in 0..rounds {
                let client = IpAddr::from([10, 0, (r >> 8) as u8, r as u8]);
                let s = p.pick(strategy, client, &[], Duration::ZERO).expect("some");
                full += usize::from(s.port == 9003);
            }
            let got = full as f64 / rounds as f64;
            assert!((0.2..0.3).contains(&got), "{strategy:?}: full share {got}");
        }
    }

    #[test]
    fn a_ramping_backend_alone_takes_every_request() {
        let p = pool(2);
        up(&p, 0);
        p.slots()[0].report_failure();
        up(&p, 0);
        for _ in 0..100 {
            let s = p.pick(
                Strategy::RoundRobin,
                IpAddr::from([127, 0, 0, 1]),
                &[],
                Duration::from_secs(100),
            );
            assert_eq!(s.map(|s| s.port), Some(9000));
        }
    }

    #[test]
    fn an_empty_pool_has_nothing_to_pick() {
        let p = pool(2);
        assert!(
            p.pick(
                Strategy::RoundRobin,
                IpAddr::from([127, 0, 0, 1]),
                &[],
                Duration::ZERO
            )
            .is_none()
        );
        assert!(!p.any_routable());
    }
}
