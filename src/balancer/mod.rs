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
//! Limits: at most `max_connections` clients at once. When full, the
//! connection idle the longest (waiting for a request, nothing received) is
//! closed to admit the new client (`admission`); with none idle, new clients
//! wait in the kernel's listen backlog. A client that sends no request head
//! within `HEADER_TIMEOUT` is cut, as the built-in worker does. When no
//! backend is routable a client is held up to `NO_BACKEND_WAIT` for one to
//! come up, then answered 503 (http) or closed (tcp).

pub(crate) mod access_log;
pub(crate) mod admission;
pub(crate) mod http;
pub(crate) mod passive;
pub(crate) mod pool;
#[cfg(test)]
mod run_tests;
pub(crate) mod strategy;
pub(crate) mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::{BalancerMode, PassiveHealth};
use admission::Admission;
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

/// What every connection task shares.
pub(crate) struct Shared {
    pub(crate) backends: Arc<Roster>,
    /// Cancelled when the balancer stops accepting: idle connections close.
    pub(crate) stop: CancellationToken,
    pub(crate) admission: Admission,
}

/// Accept until `stop` is cancelled. Connection tasks go on `conns` and end at
/// `hard_stop` at the latest (the shutdown deadline).
pub(crate) async fn run(
    listener: TcpListener,
    backends: Arc<Roster>,
    stop: CancellationToken,
    hard_stop: CancellationToken,
    conns: TaskTracker,
) {
    // Fixed for the balancer's life: a reload that changes them says so.
    let first = backends.config();
    let limit = Arc::new(Semaphore::new(first.max_connections as usize));
    let mode = first.mode;
    let shared = Arc::new(Shared {
        backends,
        stop: stop.clone(),
        admission: Admission::default(),
    });
    if mode == BalancerMode::Http {
        conns.spawn(http::prune_conn_pool(shared.clone()));
    }
    // Accepting ends at shutdown or at a handover (`fleet upgrade`).
    let accepting = stop.child_token();
    {
        let (handover, accepting) = (shared.backends.handover.clone(), accepting.clone());
        conns.spawn(async move {
            tokio::select! {
                _ = handover.cancelled() => accepting.cancel(),
                _ = accepting.cancelled() => {}
            }
        });
    }
    loop {
        let permit = limit.clone().try_acquire_owned().ok();
        let Some((client, peer)) = crate::listener::accept(&listener, &accepting).await else {
            break;
        };
        let permit = match permit {
            Some(p) => p,
            // Full: make room by closing the connection idle the longest.
            // With none idle, wait (this client holds its socket; the rest
            // queue in the backlog).
            None => loop {
                shared.admission.evict_oldest();
                tokio::select! {
                    biased;
                    _ = accepting.cancelled() => return info!(target: "balancer", "stopped accepting"),
                    p = limit.clone().acquire_owned() => break p.expect("the semaphore is never closed"),
                    _ = tokio::time::sleep(FULL_RETRY) => {}
                }
            },
        };
        let shared = shared.clone();
        let hard_stop = hard_stop.clone();
        shared.backends.metrics.accepted.inc();
        shared.backends.metrics.active.inc();
        conns.spawn(async move {
            tokio::select! {
                biased;
                _ = hard_stop.cancelled() => {}
                _ = serve(client, peer, &shared, mode) => {}
            }
            shared.backends.metrics.active.dec();
            drop(permit);
        });
    }
    info!(target: "balancer", "stopped accepting");
}

async fn serve(
    client: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    mode: BalancerMode,
) {
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
