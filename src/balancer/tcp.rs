//! The tcp engine: one backend per client connection, bytes spliced.
//!
//! accept → wait for the client's first bytes → pick a backend (`Pool::pick`)
//! → connect (on failure: try the next, each at most once; see the parent
//! module for which failures take a backend out of rotation)
//! → copy bytes both ways until both sides are done (half-close respected).
//!
//! Retry beyond connect: until the backend sends its first response byte,
//! the client's bytes are kept (up to `REPLAY_MAX`). If the backend resets or
//! closes before answering anything — it was killed while the request was in
//! its backlog or in flight — and the request is an idempotent HTTP method,
//! the same bytes are replayed on the next backend (HAProxy's `retry-on
//! empty-response`, for a TCP proxy), once: a request that two backends
//! failed is likely what kills them. So a worker crash costs clients
//! latency, not errors. Each such failure is one strike against the backend
//! (`balancer::passive`), not an ejection. Past the first response byte the connection is
//! spliced with `copy_bidirectional` and a crash is the client's to see.
//!
//! Clients speak first (HTTP), so an idle client holds no backend connection.
//! Limits: the client's first bytes within `HEADER_TIMEOUT`, a connect
//! timeout per backend, an idle timeout per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, timeout};
use tracing::{debug, warn};

use super::outcome::{Outcome, record};
use super::pool::{Roster, Slot};
use super::select::{Next, Selection};
use super::{HEADER_TIMEOUT, Shared, access_log};
use crate::config::BalancerConfig;
use crate::idle::{Activity, Counted, Tracked};
use crate::metrics::{self, Counter};

/// How much of a request is kept for a replay on another backend.
pub(crate) const REPLAY_MAX: usize = 16 * 1024;
/// Buffer sizes, which set the supervisor's memory per proxied connection
/// (about 10 KiB in the splice phase): requests are small, so the upstream
/// direction gets 2 KiB; responses get 8 KiB (tokio's default); the first
/// response read uses 4 KiB and is freed before the splice.
const UP_BUF: usize = 2 * 1024;
const DOWN_BUF: usize = 8 * 1024;
const FIRST_READ: usize = 4 * 1024;

/// Why the first exchange with a backend ended without a response byte.
enum FirstExchange {
    /// The backend answered: these are its first bytes.
    Answered(usize),
    /// The backend failed before answering; `replayable` says whether the
    /// kept request bytes are complete and safe to send elsewhere.
    BackendFailed,
    /// The backend left rotation while the request waited for its answer.
    LeftRotation,
    /// The client went away or went idle; nothing more to do.
    ClientGone,
}

/// One client connection, and its outcome when it ends (`outcome::record`,
/// as for an http request; bytes are counted as they move).
pub(crate) async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    cfg: &BalancerConfig,
) {
    let mut outcome = Outcome {
        counted_live: true,
        ..Outcome::default()
    };
    let (sent, received) = (Counter::default(), Counter::default());
    let activity = Activity::new();
    let bytes = Counted {
        activity: &activity,
        read: &received,
        written: &sent,
    };
    let Some(arrived) = proxy(client, peer, shared, cfg, &mut outcome, bytes).await else {
        return;
    };
    outcome.bytes_in = received.get();
    outcome.bytes_out = sent.get();
    outcome.total = arrived.elapsed();
    record(shared, peer, &outcome);
}

/// Proxy the connection; the time its first bytes came (`None`: it sent
/// nothing, and there is nothing to record).
async fn proxy(
    client: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    cfg: &BalancerConfig,
    o: &mut Outcome,
    counted: Counted<'_>,
) -> Option<Instant> {
    let backends = &*shared.backends;
    let _ = client.set_nodelay(true);
    if !client_spoke(&client, shared).await {
        return None;
    }
    let activity = counted.activity;
    // Bytes from the client are counted per backend; bytes to it here.
    let mut client = Tracked::new(client, counted);
    let mut request = Vec::with_capacity(UP_BUF);
    // Wait for the client's first bytes before choosing a backend.
    match timeout(HEADER_TIMEOUT, client.read_buf(&mut request)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return None,
    }
    // A request's latency runs from its first byte here.
    let arrived = Instant::now();
    if backends.access_log.get().is_some() {
        o.request_line =
            access_log::request_line(&request).map(|(m, t)| (m.to_string(), t.to_string()));
    }
    relay(client, request, peer, (backends, cfg), o, activity, arrived).await;
    Some(arrived)
}

/// Send the client's first bytes to a backend, to the next one when it
/// fails before answering (as `Selection` and `replay` allow), then splice.
async fn relay(
    mut client: Tracked<TcpStream, Counted<'_>>,
    mut request: Vec<u8>,
    peer: SocketAddr,
    (backends, cfg): (&Roster, &BalancerConfig),
    o: &mut Outcome,
    activity: &Activity,
    arrived: Instant,
) {
    let mut replayable = is_idempotent_http(&request);
    let mut client_eof = false;
    let mut response = vec![0u8; FIRST_READ];
    let mut selection = Selection::new(backends, cfg, peer.ip(), arrived);
    loop {
        let slot = match selection.next().await {
            Next::Try(slot) => slot,
            // Its one replay has nowhere to go, and the backend that failed
            // it is alive: the failure stands.
            Next::FailureStands => return,
            Next::NoBackend => {
                warn!(target: "balancer", %peer, tried = selection.tried(), "no healthy backend could take the connection; closing it");
                return;
            }
        };
        let Some(mut backend) = super::connect(&slot, cfg.connect_timeout, peer).await else {
            continue;
        };
        let _guard = slot.connection();
        let m = &slot.metrics;
        let mut backend = Tracked::new(
            &mut backend,
            Counted {
                activity,
                read: &m.response_bytes,
                written: &m.request_bytes,
            },
        );
        let sent = Instant::now();
        let first = first_exchange(
            &slot,
            &mut client,
            &mut backend,
            &mut request,
            &mut replayable,
            &mut client_eof,
            &mut response,
            cfg.idle_timeout,
        )
        .await;
        match first {
            FirstExchange::Answered(n) => {
                slot.answered(&cfg.passive);
                // Request outcome (tcp mode): one request per connection, its
                // class from the first response's status line, recorded when
                // the connection ends (for the lab's one-request
                // connections, when the response is complete).
                o.first_byte = Some(sent.elapsed());
                o.status = metrics::status_code(&response[..n]).unwrap_or(0);
                o.slot = Some(slot.clone());
                o.retried = selection.retried();
                if client.write_all(&response[..n]).await.is_ok() {
                    drop((response, request));
                    splice(client, backend, client_eof, activity, cfg.idle_timeout).await;
                }
                return;
            }
            FirstExchange::ClientGone => return,
            // Taken out by someone else while it waited: no evidence
            // against the backend or the request, so always replayed.
            FirstExchange::LeftRotation => {
                m.replays.inc();
                continue;
            }
            FirstExchange::BackendFailed => {
                if !replay(&mut selection, &slot, replayable, peer) {
                    return;
                }
            }
        }
    }
}

/// Idle until the client's first bytes (so a full balancer may close it for
/// room), at most `HEADER_TIMEOUT`; false if it left, was evicted or the
/// balancer stops.
async fn client_spoke(client: &TcpStream, shared: &Shared) -> bool {
    let evict = Arc::new(Notify::new());
    let _idle = shared.admission.waiting(&evict);
    // `peek`, not `readable`: readiness can be spurious.
    let mut probe = [0u8; 1];
    tokio::select! {
        biased;
        _ = shared.stop.cancelled() => false,
        _ = evict.notified() => false,
        r = timeout(HEADER_TIMEOUT, client.peek(&mut probe)) => matches!(r, Ok(Ok(1..))),
    }
}

/// The backend closed before answering: one strike, and whether the kept
/// request goes to the next backend (once at most).
fn replay(selection: &mut Selection<'_>, slot: &Slot, replayable: bool, peer: SocketAddr) -> bool {
    selection.strike(slot, "closed before answering");
    let once_more = selection.failed_after_write();
    if replayable && once_more {
        slot.metrics.replays.inc();
        debug!(target: "balancer", %peer, backend = %slot.addr, "backend closed before answering; replaying the request");
        return true;
    }
    debug!(target: "balancer", %peer, backend = %slot.addr, "backend closed before answering a request that cannot be replayed (again)");
    false
}

/// Send the kept request, then forward the client's further bytes (keeping
/// them while they fit) until the backend's first bytes arrive.
#[expect(
    clippy::too_many_arguments,
    reason = "the connection's state, borrowed for one phase; the http balancer replaces this"
)]
async fn first_exchange(
    slot: &Slot,
    client: &mut Tracked<TcpStream, Counted<'_>>,
    backend: &mut Tracked<&mut TcpStream, Counted<'_>>,
    request: &mut Vec<u8>,
    replayable: &mut bool,
    client_eof: &mut bool,
    response: &mut [u8],
    idle: Duration,
) -> FirstExchange {
    if backend.write_all(request).await.is_err() {
        return FirstExchange::BackendFailed;
    }
    if *client_eof && backend.get_mut().shutdown().await.is_err() {
        return FirstExchange::BackendFailed;
    }
    let mut chunk = [0u8; UP_BUF];
    // A backend that leaves rotation (failed probes, or another connection's
    // failure) while this request waits for its answer is given up on, and a
    // replayable request goes to the next one: a host whose link was cut
    // drops the answer without a reset, which nothing else would notice.
    let gone = slot.out_of_rotation();
    tokio::pin!(gone);
    loop {
        tokio::select! {
            () = &mut gone, if *replayable => return FirstExchange::LeftRotation,
            r = backend.read(response) => return match r {
                Ok(n) if n > 0 => FirstExchange::Answered(n),
                _ => FirstExchange::BackendFailed,
            },
            r = client.read(&mut chunk), if !*client_eof => match r {
                Ok(0) => {
                    *client_eof = true;
                    if backend.get_mut().shutdown().await.is_err() {
                        return FirstExchange::BackendFailed;
                    }
                }
                Ok(n) => {
                    if request.len() + n <= REPLAY_MAX {
                        request.extend_from_slice(&chunk[..n]);
                    } else {
                        *replayable = false;
                    }
                    if backend.write_all(&chunk[..n]).await.is_err() {
                        return FirstExchange::BackendFailed;
                    }
                }
                Err(_) => return FirstExchange::ClientGone,
            },
            _ = tokio::time::sleep(idle) => return FirstExchange::ClientGone,
        }
    }
}

/// Copy both ways until both directions are finished or nothing moves for `idle`.
async fn splice(
    mut client: Tracked<TcpStream, Counted<'_>>,
    mut backend: Tracked<&mut TcpStream, Counted<'_>>,
    client_eof: bool,
    activity: &Activity,
    idle: Duration,
) {
    let copy = async {
        if client_eof {
            // The client already half-closed (and the backend was told): only
            // the response is left to carry.
            let _ = tokio::io::copy(&mut backend, &mut client).await;
            let _ = client.shutdown().await;
        } else {
            let _ = tokio::io::copy_bidirectional_with_sizes(
                &mut client,
                &mut backend,
                UP_BUF,
                DOWN_BUF,
            )
            .await;
        }
    };
    tokio::select! {
        _ = copy => {}
        _ = activity.idle_for(idle) => {
            debug!(target: "balancer", "closing an idle connection");
        }
    }
}

/// Methods whose requests may be sent twice without harm (RFC 9110 §9.2.2).
fn is_idempotent_http(head: &[u8]) -> bool {
    const METHODS: [&[u8]; 6] = [
        b"GET ",
        b"HEAD ",
        b"OPTIONS ",
        b"TRACE ",
        b"PUT ",
        b"DELETE ",
    ];
    METHODS.iter().any(|m| head.starts_with(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_idempotent_requests_are_replayed() {
        assert!(is_idempotent_http(b"GET /page.html HTTP/1.1\r\n"));
        assert!(is_idempotent_http(b"HEAD / HTTP/1.0\r\n"));
        assert!(!is_idempotent_http(b"POST /form HTTP/1.1\r\n"));
        assert!(!is_idempotent_http(b"GE"));
        assert!(
            !is_idempotent_http(b"\x16\x03\x01"),
            "TLS is opaque: never replayed"
        );
    }
}
