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

use super::access_log;
use super::pool::Slot;
use super::{HEADER_TIMEOUT, NO_BACKEND_WAIT, Shared, strike, wait_for_routable};
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

/// What the access log needs to know about a proxied connection, filled in
/// as it goes (the connection may be cut at the shutdown deadline).
#[derive(Debug, Default)]
struct Served {
    /// When the client's first bytes arrived (`None`: it sent nothing).
    arrived: Option<Instant>,
    /// Method and target of its first request line, if it is HTTP.
    request_line: Option<(String, String)>,
    /// The backend that answered, and its first response's status.
    backend: Option<u16>,
    status: Option<u16>,
}

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

/// One client connection, and its access-log line when it ends.
pub(crate) async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    cfg: &BalancerConfig,
) {
    let mut served = Served::default();
    let sent = Counter::default();
    proxy(client, peer, shared, cfg, &mut served, &sent).await;
    if let (Some(log), Some(arrived)) = (shared.backends.access_log.get(), served.arrived) {
        let line = served.request_line.as_ref();
        log.write(&access_log::Entry {
            client: Some(peer),
            method: line.map(|l| l.0.as_str()),
            target: line.map(|l| l.1.as_str()),
            status: served.status,
            bytes: sent.get(),
            duration: arrived.elapsed(),
            backend: served.backend,
        });
    }
}

async fn proxy(
    client: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    cfg: &BalancerConfig,
    served: &mut Served,
    sent: &Counter,
) {
    let backends = &*shared.backends;
    let _ = client.set_nodelay(true);
    // Wait for the client's first bytes before choosing a backend: idle (so
    // a full balancer may close it for room) and at most HEADER_TIMEOUT.
    {
        let evict = Arc::new(Notify::new());
        let _idle = shared.admission.waiting(&evict);
        // `peek`, not `readable`: readiness can be spurious.
        let mut probe = [0u8; 1];
        tokio::select! {
            biased;
            _ = shared.stop.cancelled() => return,
            _ = evict.notified() => return,
            r = timeout(HEADER_TIMEOUT, client.peek(&mut probe)) => if !matches!(r, Ok(Ok(1..))) {
                return;
            },
        }
    }
    let activity = Activity::new();
    // Bytes from the client are counted per backend; bytes to it here.
    let received = Counter::default();
    let mut client = Tracked::new(
        client,
        Counted {
            activity: &activity,
            read: &received,
            written: sent,
        },
    );
    let mut request = Vec::with_capacity(UP_BUF);
    // Wait for the client's first bytes before choosing a backend.
    match timeout(HEADER_TIMEOUT, client.read_buf(&mut request)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return,
    }
    // A request's latency runs from its first byte here.
    let arrived = Instant::now();
    served.arrived = Some(arrived);
    if backends.access_log.get().is_some() {
        served.request_line =
            access_log::request_line(&request).map(|(m, t)| (m.to_string(), t.to_string()));
    }
    let mut replayable = is_idempotent_http(&request);
    let mut client_eof = false;
    let mut response = vec![0u8; FIRST_READ];
    let deadline = Instant::now() + NO_BACKEND_WAIT;
    // Identity is the address: two upstreams on different hosts may share a port.
    let mut tried: Vec<SocketAddr> = Vec::new();
    // Backends that failed the request after it was sent (it is replayed
    // once at most), and whether one of them left rotation for it.
    let mut failures = 0u8;
    let mut ejected = false;
    let mut last: Option<Arc<Slot>> = None;
    loop {
        // The pool as it is now: a `fleet scale` between two tries is seen.
        let pool = backends.load();
        let Some(slot) = pool
            .pick(cfg.strategy, peer.ip(), &tried, cfg.slow_start)
            .cloned()
        else {
            if failures > 0 && last.as_ref().is_some_and(|s| s.routable()) {
                // Its one replay has nowhere to go, and the backend that
                // failed it is alive: the failure stands.
                return;
            }
            // Every routable backend was tried, or none is routable: hold the
            // client briefly for one to come (back) up, then start over.
            if !wait_for_routable(backends, &pool, !tried.is_empty(), deadline).await {
                warn!(target: "balancer", %peer, tried = tried.len(), "no healthy backend could take the connection; closing it");
                backends.metrics.no_backend.inc();
                return;
            }
            tried.clear();
            continue;
        };
        tried.push(slot.addr);
        last = Some(slot.clone());
        let Some(mut backend) = super::connect(&slot, cfg.connect_timeout, peer).await else {
            continue;
        };
        let _guard = slot.connection();
        let m = &slot.metrics;
        let mut backend = Tracked::new(
            &mut backend,
            Counted {
                activity: &activity,
                read: &m.response_bytes,
                written: &m.request_bytes,
            },
        );
        let sent = Instant::now();
        let outcome = first_exchange(
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
        match outcome {
            FirstExchange::Answered(n) => {
                slot.answered(&cfg.passive);
                m.first_byte.observe(sent.elapsed());
                // Request outcome (tcp mode): one request per connection, its
                // class from the first response's status line; the latency
                // is observed when the connection ends (for the lab's
                // one-request connections, when the response is complete).
                let status = metrics::status_code(&response[..n]);
                if let Some(code) = status {
                    m.response(code);
                }
                served.backend = Some(slot.port);
                served.status = status;
                if client.write_all(&response[..n]).await.is_err() {
                    return;
                }
                drop(response);
                drop(request);
                splice(client, backend, client_eof, &activity, cfg.idle_timeout).await;
                if status.is_some() {
                    m.latency.observe(arrived.elapsed());
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
                ejected |= strike(
                    &pool,
                    &slot,
                    "closed before answering",
                    !ejected,
                    &cfg.passive,
                );
                failures += 1;
                if replayable && failures < 2 {
                    m.replays.inc();
                    debug!(target: "balancer", %peer, backend = %slot.addr, "backend closed before answering; replaying the request");
                    continue;
                }
                debug!(target: "balancer", %peer, backend = %slot.addr, "backend closed before answering a request that cannot be replayed (again)");
                return;
            }
        }
    }
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
