//! The load balancer inside the supervisor: the accept loop, admission and
//! the pieces both engines share; the engines themselves are `http` (the
//! default: HTTP/1 parsed, every request balanced, backend connections
//! pooled) and `tcp` (bytes spliced, one backend per client connection).
//!
//! Both engines choose backends with `Pool::pick` (health filtering, then the
//! configured `strategy`), load the pool per choice (so `fleet scale` is seen
//! by the next request) and read the settings per connection (`fleet
//! reload`). On a connect failure the next backend is tried, each at most
//! once. A refused or reset connect marks the backend down at once (nothing
//! listens); a request that fails after it was written is only a strike
//! (`passive`: several in a row take a backend out, within a share of the
//! fleet, and a request that failed so is retried at most once more); a
//! connect *timeout* does not (a full listen backlog is busy, not
//! dead: HAProxy's `observe layer4` wants more than one error too): it is
//! reported, and the backend leaves rotation only if its next health probe
//! fails as well (`supervisor::state`). A request waiting for its answer
//! from a backend that leaves rotation meanwhile (failed probes, or another
//! connection's failure) is given up on there and, when it may be sent
//! again, goes to the next backend: a remote host cut off from the network
//! answers nothing, not even a reset.
//!
//! The engine: `balancer.threads` threads (one per core by default), each
//! with a current-thread runtime of its own, accepting on its own socket
//! (`listener::Listening`: a `SO_REUSEPORT` group on Linux, a shared socket
//! elsewhere). A client connection lives and dies on the thread that
//! accepted it, with that thread's backend connections and idle set, so no
//! request wakes another thread; the supervisor's runtime (probes, the
//! control socket, admin) only swaps snapshots and reads atomics.
//!
//! Limits: at most `max_connections` clients at once, over all threads.
//! When full, the connection idle the longest (waiting for a request,
//! nothing received) on the accepting thread, else on another, is closed to
//! admit the new client (`admission`); with none idle, new clients wait in
//! the kernel's listen backlog. A client that sends no request head
//! within `HEADER_TIMEOUT` is cut, as the built-in worker does. When no
//! backend is routable a client is held up to `NO_BACKEND_WAIT` for one to
//! come up, then answered 503 (http) or closed (tcp).

pub(crate) mod access_log;
pub(crate) mod admission;
pub(crate) mod buffers;
pub(crate) mod http;
pub(crate) mod outcome;
pub(crate) mod passive;
pub(crate) mod pool;
#[cfg(test)]
mod run_tests;
pub(crate) mod select;
pub(crate) mod strategy;
pub(crate) mod tcp;

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::config::{BalancerMode, PassiveHealth};
use crate::listener::Listening;
use admission::{Admission, Entry, Limit};
use passive::{Strikes, Verdict};
use pool::{Pool, Roster, Slot};

/// How long a client may wait for some backend to become routable.
pub(crate) const NO_BACKEND_WAIT: Duration = Duration::from_millis(500);
/// Time a client gets to send its first request head (and, in http mode,
/// each later one once its first byte came), as the built-in worker's
/// `--header-timeout`.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a full balancer looks again for an idle connection to close
/// when none was idle.
const FULL_RETRY: Duration = Duration::from_millis(20);

/// What every connection task of one engine thread shares.
pub(crate) struct Shared {
    pub(crate) backends: Arc<Roster>,
    /// Cancelled when the balancer stops accepting: idle connections close.
    pub(crate) stop: CancellationToken,
    /// This thread's idle connections (`admission`).
    pub(crate) admission: Arc<Admission>,
}

/// Which engine thread runs the code that asks: its index among its
/// balancer's threads (what per-thread state is indexed by) and a serial
/// unique in the process (a balancer started by a `listen` move reuses
/// indexes, not serials).
#[derive(Debug, Clone, Copy)]
pub(crate) struct EngineId {
    pub(crate) index: usize,
    pub(crate) serial: u64,
}

thread_local! {
    static ENGINE: Cell<Option<EngineId>> = const { Cell::new(None) };
}

/// The engine thread this is, `None` outside one (the control plane, tests).
pub(crate) fn engine_id() -> Option<EngineId> {
    ENGINE.with(Cell::get)
}

/// Engine threads started so far, for their serials (0: none).
static SERIALS: AtomicU64 = AtomicU64::new(1);

/// The most engine threads any balancer of this process has had so far:
/// how many parts a [`PerThread`] is made with.
static THREADS: AtomicUsize = AtomicUsize::new(1);

/// One `T` per engine thread, for state that each thread uses on every
/// request and others touch only rarely (a backend's pooled connections,
/// its "left rotation" wake-up): each thread finds its own part by its
/// index, so the common case shares no lock and no cache line (each part
/// is aligned to one). Made at first use with one part per engine thread
/// (`THREADS`); one made before a balancer with more threads started is
/// shared by threads `i` and `i + len`, which stays correct, only shared.
#[derive(Debug, Default)]
pub(crate) struct PerThread<T> {
    parts: OnceLock<Box<[Part<T>]>>,
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Part<T>(T);

impl<T: Default> PerThread<T> {
    /// This engine thread's part (outside any: the first).
    pub(crate) fn here(&self) -> &T {
        let parts = self.parts();
        &parts[engine_id().map_or(0, |e| e.index) % parts.len()].0
    }

    /// Every thread's part.
    pub(crate) fn all(&self) -> impl Iterator<Item = &T> {
        self.parts().iter().map(|p| &p.0)
    }

    fn parts(&self) -> &[Part<T>] {
        self.parts.get_or_init(|| {
            (0..THREADS.load(Ordering::Relaxed).max(1))
                .map(|_| Part::default())
                .collect()
        })
    }
}

/// What the engine threads of one balancer share: settings and signals, the
/// fleet-wide connection cap, and the per-backend atomics behind `backends`
/// (counters and histograms stay shared: a few relaxed atomic adds per
/// request, summed by nobody because there is one of each).
struct Engine {
    backends: Arc<Roster>,
    mode: BalancerMode,
    stop: CancellationToken,
    /// Cancelled at `stop` or at a handover: the accept loops end.
    accepting: CancellationToken,
    hard_stop: CancellationToken,
    conns: TaskTracker,
    limit: Arc<Limit>,
}

/// Serve on `listening` with `threads` engine threads until `stop` is
/// cancelled; returns once every thread has ended. Connection tasks go on
/// `conns` and end at `hard_stop` at the latest (the shutdown deadline).
///
/// Each thread runs a current-thread runtime of its own and accepts on its
/// own socket(s) (`Listening::split`); its connections, their backend
/// connections (`http::conn_pool`) and its idle set (`admission`) stay on
/// it, so a request wakes no other thread. The control plane reaches the
/// threads only through `backends` (a swapped snapshot and atomics) and the
/// cancellation tokens.
pub(crate) async fn run(
    listening: Listening,
    threads: usize,
    backends: Arc<Roster>,
    stop: CancellationToken,
    hard_stop: CancellationToken,
    conns: TaskTracker,
) {
    let threads = threads.max(1);
    let shares = match listening.split(threads) {
        Ok(s) => s,
        Err(e) => {
            return error!(target: "balancer", error = %e, "cannot give each engine thread a listening socket; not accepting");
        }
    };
    THREADS.fetch_max(threads, Ordering::Relaxed);
    // Fixed for the balancer's life: a reload that changes them says so.
    let first = backends.config();
    let limit = Arc::new(Limit::new(first.max_connections as usize, threads));
    let mode = first.mode;
    // Accepting ends at shutdown or at a handover (`fleet upgrade`).
    let accepting = stop.child_token();
    {
        let (handover, accepting) = (backends.handover.clone(), accepting.clone());
        conns.spawn(async move {
            tokio::select! {
                _ = handover.cancelled() => accepting.cancel(),
                _ = accepting.cancelled() => {}
            }
            info!(target: "balancer", "stopped accepting");
        });
    }
    let engine = Arc::new(Engine {
        backends,
        mode,
        stop,
        accepting,
        hard_stop,
        conns,
        limit,
    });
    let (done, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let mut handles = Vec::with_capacity(threads);
    for (index, listeners) in shares.into_iter().enumerate() {
        let (engine, done) = (engine.clone(), done.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("fleet-engine-{index}"))
            .spawn(move || {
                engine.thread(index, listeners);
                drop(done);
            });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                error!(target: "balancer", thread = index, error = %e, "cannot start an engine thread; the connections its socket receives are refused");
            }
        }
    }
    drop(done);
    // Each thread drops its sender last: `None` once all have ended.
    let _ = all_done.recv().await;
    let _ = tokio::task::spawn_blocking(move || {
        for h in handles {
            let _ = h.join();
        }
    })
    .await;
}

/// One engine thread's own, shared by its accept loops and connections.
struct OnThread {
    index: usize,
    shared: Arc<Shared>,
    /// Children of the balancer's `accepting` and `hard_stop`.
    accepting: CancellationToken,
    hard_stop: CancellationToken,
    /// Its accept loops, prune task and connections: the thread ends when
    /// they have.
    tasks: TaskTracker,
    /// Connections it accepted, logged when it ends.
    accepted: AtomicU64,
}

impl Engine {
    /// Engine thread `index`: a runtime of its own, accepting on
    /// `listeners` until the balancer stops, then until its connections end.
    fn thread(self: Arc<Self>, index: usize, listeners: Vec<std::net::TcpListener>) {
        let serial = SERIALS.fetch_add(1, Ordering::Relaxed);
        ENGINE.with(|e| e.set(Some(EngineId { index, serial })));
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                return error!(target: "balancer", thread = index, error = %e, "cannot start an engine thread's runtime; the connections its socket receives are refused");
            }
        };
        let accepted = runtime.block_on(self.clone().serve_thread(index, listeners));
        drop(runtime);
        info!(target: "balancer", thread = index, accepted, "engine thread stopped");
    }

    /// Accept on each of `listeners`, serve, and once accepting stopped,
    /// wait for this thread's connections. Returns how many it accepted.
    async fn serve_thread(
        self: Arc<Self>,
        index: usize,
        listeners: Vec<std::net::TcpListener>,
    ) -> u64 {
        // Children of the balancer's tokens: every idle connection waits on
        // `stop`, and a token's waiters sit behind a lock, so each thread
        // waits on its own (a parent's cancel reaches them at once).
        let me = Arc::new(OnThread {
            index,
            shared: Arc::new(Shared {
                backends: self.backends.clone(),
                stop: self.stop.child_token(),
                admission: self.limit.thread(index),
            }),
            accepting: self.accepting.child_token(),
            hard_stop: self.hard_stop.child_token(),
            tasks: TaskTracker::new(),
            accepted: AtomicU64::new(0),
        });
        if self.mode == BalancerMode::Http {
            // This thread's part of every backend's pool (`conn_pool`).
            me.tasks.spawn(http::prune_conn_pool(me.shared.clone()));
        }
        for listener in listeners {
            match TcpListener::from_std(listener) {
                Ok(l) => {
                    me.tasks.spawn(self.clone().accept(l, me.clone()));
                }
                Err(e) => {
                    error!(target: "balancer", thread = index, error = %e, "cannot register a listening socket; the connections it receives are refused");
                }
            }
        }
        me.tasks.close();
        me.tasks.wait().await;
        // Connections that ended after the prune task stopped put theirs back.
        for slot in self.backends.load().slots() {
            slot.conns.clear_here();
        }
        me.accepted.load(Ordering::Relaxed)
    }

    /// One listener's accept loop.
    async fn accept(self: Arc<Self>, listener: TcpListener, me: Arc<OnThread>) {
        let inherited = nodelay_inherited(&listener);
        loop {
            let entry = self.limit.try_enter();
            let Some((client, peer)) = crate::listener::accept(&listener, &me.accepting).await
            else {
                break;
            };
            let entry = match entry {
                Some(e) => e,
                None => match self.room(&me).await {
                    Some(e) => e,
                    None => break,
                },
            };
            self.spawn_conn(&me, client, peer, entry, inherited);
        }
        self.drain_backlog(listener, &me, inherited);
    }

    /// Stopped accepting: take the connections the kernel has completed
    /// but nobody accepted yet, since closing the socket would reset them
    /// (their clients connected while the address was served). One that
    /// already sent its first request gets it answered (`http::serve`).
    /// Asked of the socket itself: the runtime's readiness may not have
    /// seen the latest arrivals yet.
    fn drain_backlog(&self, listener: TcpListener, me: &Arc<OnThread>, inherited: bool) {
        let Ok(listener) = listener.into_std() else {
            return;
        };
        while let Ok((client, peer)) = listener.accept() {
            // One that sent nothing yet is closed (cleanly: nothing unread).
            if !matches!(client.peek(&mut [0u8; 1]), Ok(n) if n > 0) {
                continue;
            }
            let client = match client
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpStream::from_std(client))
            {
                Ok(c) => c,
                Err(_) => continue,
            };
            // Over the limit: closed, as the reset would have done, but cleanly.
            if let Some(entry) = self.limit.try_enter() {
                self.spawn_conn(me, client, peer, entry, inherited);
            }
        }
    }

    /// Serve `client` on this thread's runtime, tracked by the fleet's
    /// `conns` (the shutdown waits for it) and by this thread (which
    /// outlives it).
    fn spawn_conn(
        &self,
        me: &Arc<OnThread>,
        client: tokio::net::TcpStream,
        peer: SocketAddr,
        entry: Entry,
        inherited: bool,
    ) {
        me.accepted.fetch_add(1, Ordering::Relaxed);
        let (shared, hard_stop, mode) = (me.shared.clone(), me.hard_stop.clone(), self.mode);
        shared.backends.metrics.accepted.inc();
        shared.backends.metrics.active.inc();
        tokio::spawn(me.tasks.track_future(self.conns.track_future(async move {
            tokio::select! {
                biased;
                _ = hard_stop.cancelled() => {}
                _ = serve(client, peer, &shared, mode, inherited) => {}
            }
            shared.backends.metrics.active.dec();
            drop(entry);
        })));
    }

    /// Full: make room by closing the connection idle the longest (this
    /// thread's, else another's). With none idle, wait (this client holds
    /// its socket; the rest queue in the backlog). `None`: stopped accepting.
    async fn room(&self, me: &OnThread) -> Option<Entry> {
        loop {
            self.limit.make_room(me.index);
            tokio::select! {
                biased;
                _ = me.accepting.cancelled() => return None,
                e = self.limit.enter_within(FULL_RETRY) => if e.is_some() {
                    return e;
                },
            }
        }
    }
}

/// Whether connections accepted on `listener` come with `TCP_NODELAY`
/// set: Linux copies it from the listening socket to each accepted one, so
/// setting it once here saves a setsockopt(2) per connection. Elsewhere (BSD
/// and macOS do not promise the copy), or if it cannot be set, each
/// connection sets its own.
fn nodelay_inherited(listener: &TcpListener) -> bool {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::socket::{setsockopt, sockopt::TcpNoDelay};
        setsockopt(listener, TcpNoDelay, &true).is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = listener;
        false
    }
}

/// Serve one accepted client; `nodelay`: it already has `TCP_NODELAY`
/// (`nodelay_inherited`). Small responses go out at once either way.
async fn serve(
    client: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    mode: BalancerMode,
    nodelay: bool,
) {
    if !nodelay {
        let _ = client.set_nodelay(true);
    }
    let cfg = shared.backends.config();
    match mode {
        BalancerMode::Http => http::serve(client, peer, shared, &cfg).await,
        BalancerMode::Tcp => tcp::serve(client, peer, shared, &cfg).await,
    }
}

/// Connect to `slot` within `limit`, for either engine. A refused or reset
/// connect takes it out of rotation at once (nothing listens there); a
/// timeout only reports it (a full listen backlog is busy, not dead: the next
/// health probe decides). `None`: try the next backend.
pub(crate) async fn connect(slot: &Slot, limit: Duration, peer: SocketAddr) -> Option<TcpStream> {
    match tokio::time::timeout(limit, TcpStream::connect(slot.addr)).await {
        Ok(Ok(conn)) => {
            let _ = conn.set_nodelay(true);
            Some(conn)
        }
        Ok(Err(e)) => {
            slot.metrics.connect_failures.inc();
            passive_failure(slot, &e.to_string());
            None
        }
        Err(_) => {
            slot.metrics.connect_failures.inc();
            debug!(target: "balancer", %peer, backend = %slot.addr, "connect timed out; trying the next backend");
            slot.report_timeout();
            None
        }
    }
}

/// Take `slot` out of rotation after a failure the balancer saw itself.
pub(crate) fn passive_failure(slot: &Slot, why: &str) {
    if slot.routable() {
        warn!(target: "balancer", backend = %slot.addr, reason = why, "backend failed; taking it out of rotation");
    }
    slot.report_failure();
}

/// A request failed on `slot` after it was written (`why`): one strike
/// (`passive`). With enough in a row the backend leaves rotation, if
/// `may_eject` (the request has not taken one out yet) and the fleet can
/// spare it (`Pool::eject`). Returns whether it left.
pub(crate) fn strike(
    pool: &Pool,
    slot: &Slot,
    why: &str,
    may_eject: bool,
    p: &PassiveHealth,
) -> bool {
    let (strikes, verdict) = slot.strike(std::time::Instant::now(), p);
    let count = match strikes {
        Strikes::Striking { count, .. } => count,
        Strikes::Clear => 0,
    };
    if verdict == Verdict::Eject && may_eject {
        if pool.eject(slot, p) {
            warn!(target: "balancer", backend = %slot.addr, reason = why, "backend failed {count} requests in a row; taking it out of rotation");
            return true;
        }
        debug!(target: "balancer", backend = %slot.addr, reason = why, strikes = count, "backend failed enough requests to leave rotation, but too few others are routable (balancer.max_ejection_percent)");
    } else {
        debug!(target: "balancer", backend = %slot.addr, reason = why, strikes = count, "request failed after it was sent: one strike");
    }
    false
}

/// Wait until some backend is routable (or, with `change`, until one *becomes*
/// routable: the ones routable now were already tried) or `deadline` passes.
pub(crate) async fn wait_for_routable(
    backends: &Roster,
    pool: &Pool,
    change: bool,
    deadline: Instant,
) -> bool {
    let notified = backends.became_routable.notified();
    if !change && pool.any_routable() {
        return true;
    }
    tokio::time::timeout_at(deadline, notified).await.is_ok()
}
