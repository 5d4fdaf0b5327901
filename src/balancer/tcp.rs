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
//! spliced (`splice`) and a crash is the client's to see.
//!
//! Clients speak first (HTTP), so an idle client holds no backend connection.
//! Limits: the client's first bytes within `HEADER_TIMEOUT`, a connect
//! timeout per backend, an idle timeout per connection.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, timeout};
use tracing::{debug, warn};

use super::buffers::{self, Buf, ReadReady};
use super::outcome::{Outcome, record};
use super::pool::{Roster, Slot};
use super::select::{Next, Selection};
use super::{HEADER_TIMEOUT, Shared, access_log};
use crate::config::BalancerConfig;
use crate::idle::{Activity, Counted, Tracked};
use crate::metrics::{self, Counter};

/// How much of a request is kept for a replay on another backend.
pub(crate) const REPLAY_MAX: usize = 16 * 1024;

// Memory: every buffer comes from the thread's free list (`buffers`) when
// bytes arrive and goes back once they are written on, so a connection
// holds one only while bytes are in flight: requests (small) in a
// `Buf::small`, responses in a `Buf::large`. A kept-alive connection
// between requests holds its two sockets and its task, nothing else.

/// Why the first exchange with a backend ended without a response byte.
enum FirstExchange {
    /// The backend answered: its first bytes are in the response buffer.
    Answered,
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
    let activity = counted.activity;
    // Bytes from the client are counted per backend; bytes to it here.
    let mut client = Tracked::new(client, counted);
    // Wait for the client's first bytes before choosing a backend.
    let request = client_spoke(&mut client, shared).await?;
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
    first: Buf,
    peer: SocketAddr,
    (backends, cfg): (&Roster, &BalancerConfig),
    o: &mut Outcome,
    activity: &Activity,
    arrived: Instant,
) {
    // Kept for a replay while the backend works: exactly its size, not a
    // pooled buffer (a thousand connections waiting on busy backends hold
    // a thousand of these).
    let mut request = first.to_vec();
    drop(first);
    let mut replayable = is_idempotent_http(&request);
    let mut client_eof = false;
    // Taken when the backend's first bytes arrive.
    let mut response = Buf::none();
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
            FirstExchange::Answered => {
                slot.answered(&cfg.passive);
                // Request outcome (tcp mode): one request per connection, its
                // class from the first response's status line, recorded when
                // the connection ends (for the lab's one-request
                // connections, when the response is complete).
                o.first_byte = Some(sent.elapsed());
                o.status = metrics::status_code(&response).unwrap_or(0);
                o.slot = Some(slot.clone());
                o.retried = selection.retried();
                if client.write_all(&response).await.is_ok() {
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
/// room), at most `HEADER_TIMEOUT`, and read them: one read, into a buffer
/// taken only when they are there. `None` if it left, was evicted or the
/// balancer stops.
async fn client_spoke(
    client: &mut Tracked<TcpStream, Counted<'_>>,
    shared: &Shared,
) -> Option<Buf> {
    let evict = Arc::new(Notify::new());
    let _idle = shared.admission.waiting(&evict);
    tokio::select! {
        biased;
        _ = shared.stop.cancelled() => None,
        _ = evict.notified() => None,
        r = timeout(HEADER_TIMEOUT, buffers::read_taken(client, Buf::small)) => match r {
            Ok(Ok(first)) if !first.is_empty() => Some(first),
            _ => None,
        },
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
    response: &mut Buf,
    idle: Duration,
) -> FirstExchange {
    if backend.write_all(request).await.is_err() {
        return FirstExchange::BackendFailed;
    }
    if *client_eof && backend.get_mut().shutdown().await.is_err() {
        return FirstExchange::BackendFailed;
    }
    // A backend that leaves rotation (failed probes, or another connection's
    // failure) while this request waits for its answer is given up on, and a
    // replayable request goes to the next one: a host whose link was cut
    // drops the answer without a reset, which nothing else would notice.
    let gone = slot.out_of_rotation();
    tokio::pin!(gone);
    loop {
        // Buffers are taken only when bytes are there to read.
        tokio::select! {
            () = &mut gone, if *replayable => return FirstExchange::LeftRotation,
            r = buffers::read_taken(backend, Buf::small) => return match r {
                Ok(first) if !first.is_empty() => {
                    *response = first;
                    FirstExchange::Answered
                }
                _ => FirstExchange::BackendFailed,
            },
            r = buffers::read_taken(client, Buf::small), if !*client_eof => match r {
                Ok(chunk) if chunk.is_empty() => {
                    *client_eof = true;
                    if backend.get_mut().shutdown().await.is_err() {
                        return FirstExchange::BackendFailed;
                    }
                }
                Ok(chunk) => {
                    if request.len() + chunk.len() <= REPLAY_MAX {
                        request.extend_from_slice(&chunk);
                    } else {
                        *replayable = false;
                    }
                    if backend.write_all(&chunk).await.is_err() {
                        return FirstExchange::BackendFailed;
                    }
                }
                Err(_) => return FirstExchange::ClientGone,
            },
            _ = tokio::time::sleep(idle) => return FirstExchange::ClientGone,
        }
    }
}

/// Copy both ways until both directions are finished or nothing moves for
/// `idle`. As `copy_bidirectional` (a source's end is passed on as a
/// half-close; the first error ends both), but each direction holds a
/// buffer only while bytes are in flight (`Leg`).
async fn splice(
    mut client: Tracked<TcpStream, Counted<'_>>,
    mut backend: Tracked<&mut TcpStream, Counted<'_>>,
    client_eof: bool,
    activity: &Activity,
    idle: Duration,
) {
    // The client already half-closed (and the backend was told): only the
    // response is left to carry.
    let mut up = if client_eof { Leg::Done } else { Leg::Reading };
    let mut down = Leg::Reading;
    let copy = std::future::poll_fn(|cx| {
        let to_backend = up.poll(cx, &mut client, &mut backend, Buf::small);
        let to_client = down.poll(cx, &mut backend, &mut client, Buf::large);
        match (to_backend, to_client) {
            (Poll::Ready(Err(e)), _) | (_, Poll::Ready(Err(e))) => Poll::Ready(Err(e)),
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    });
    tokio::select! {
        _ = copy => {}
        _ = activity.idle_for(idle) => {
            debug!(target: "balancer", "closing an idle connection");
        }
    }
}

/// One direction of a splice: Reading (no buffer) --bytes--> Writing
/// (a buffer) --all written--> Reading; --end of source--> ShuttingDown
/// --half-close passed on--> Done.
enum Leg {
    Reading,
    /// `buf[at..]` is still to be written.
    Writing {
        buf: Buf,
        at: usize,
    },
    ShuttingDown,
    Done,
}

impl Leg {
    /// Move bytes from `from` to `to` until either would block or the
    /// source ended and `to` was shut down. (Tokio's cooperative budget
    /// makes a busy leg yield.)
    fn poll<R: ReadReady, W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        take: fn() -> Buf,
    ) -> Poll<std::io::Result<()>> {
        loop {
            match self {
                Leg::Reading => {
                    let buf = ready!(buffers::poll_read_taken(from, cx, take))?;
                    *self = if buf.is_empty() {
                        Leg::ShuttingDown
                    } else {
                        Leg::Writing { buf, at: 0 }
                    };
                }
                Leg::Writing { buf, at } => {
                    let n = ready!(Pin::new(&mut *to).poll_write(cx, &buf[*at..]))?;
                    if n == 0 {
                        return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                    }
                    *at += n;
                    if *at == buf.len() {
                        // The buffer goes back to the free list here.
                        *self = Leg::Reading;
                    }
                }
                Leg::ShuttingDown => {
                    ready!(Pin::new(&mut *to).poll_shutdown(cx))?;
                    *self = Leg::Done;
                }
                Leg::Done => return Poll::Ready(Ok(())),
            }
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
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// Both ends of a loopback connection.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let near = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (far, _) = l.accept().await.unwrap();
        (near, far)
    }

    async fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut got = vec![0u8; n];
        s.read_exact(&mut got).await.unwrap();
        got
    }

    #[tokio::test]
    async fn a_splice_holds_buffers_only_while_bytes_move_and_passes_half_closes_on() {
        let (mut user, client) = pair().await;
        let (mut backend_proxy, mut server) = pair().await;
        let (activity, read, written) = (Activity::new(), Counter::default(), Counter::default());
        let counted = || Counted {
            activity: &activity,
            read: &read,
            written: &written,
        };
        let before = buffers::live();
        let splicing = splice(
            Tracked::new(client, counted()),
            Tracked::new(&mut backend_proxy, counted()),
            false,
            &activity,
            Duration::from_secs(60),
        );
        let script = async {
            for _ in 0..3 {
                user.write_all(b"ping").await.unwrap();
                assert_eq!(read_exact(&mut server, 4).await, b"ping");
                server.write_all(b"pong!").await.unwrap();
                assert_eq!(read_exact(&mut user, 5).await, b"pong!");
                // Both directions are waiting for bytes again.
                tokio::task::yield_now().await;
                assert_eq!(buffers::live(), before, "an idle splice holds no buffer");
            }
            user.shutdown().await.unwrap();
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty(), "the client's end reached the backend");
            server.write_all(b"last").await.unwrap();
            drop(server);
            let mut tail = Vec::new();
            user.read_to_end(&mut tail).await.unwrap();
            assert_eq!(tail, b"last", "the response outlives the request's end");
        };
        tokio::join!(splicing, script);
        assert_eq!(buffers::live(), before);
        assert_eq!((read.get(), written.get()), (3 * 9 + 4, 3 * 9 + 4));
    }

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
