//! The http engine: HTTP/1.0 and 1.1 (keep-alive, pipelining) parsed on the
//! raw connection, every request balanced on its own.
//!
//! One task per client connection and nothing per request: the task reads a
//! request head (`framing::request`, which also rewrites it for the backend),
//! and an `Exchange` (`exchange`) takes it from there: it picks a backend
//! (`balancer::select`, the pool loaded per try), takes a kept-alive
//! connection to it from that backend's idle pool (`conn_pool`) or connects,
//! sends the head and the body bytes that came with it in one write, streams
//! the rest of the body while reading the response head, then streams the
//! response body back (its head and first part in one write) and returns the
//! backend connection to the pool when both sides left it in step. Buffers
//! come from a per-thread free list (`balancer::buffers`) when bytes arrive
//! and go back when the request is over; an idle kept-alive client holds a
//! socket and nothing else.
//!
//! Retries: a request goes to another backend when its backend fails before
//! any response byte and the request is idempotent (RFC 9110 §9.2.2) or was
//! never written (connect failure, a pooled connection found closed), as
//! long as no body bytes beyond the head's buffer were consumed. Each backend
//! is tried at most once per request, and a request that failed after it was
//! written is sent at most once more (it may be the request that kills
//! backends). Such a failure is one strike against the backend
//! (`balancer::passive`); it leaves rotation only after several in a row.
//!
//! Answers of its own, each with a one-line text body and `Connection:
//! close`: 400 for a malformed request and 501 for a transfer coding or
//! method fleet does not implement (neither forwarded), 408 for a head not
//! received in time, 431 for an oversized head, 502 for a backend that
//! failed in a way that cannot be retried, 503 (with `Retry-After`) when no
//! backend is routable within `NO_BACKEND_WAIT`, 504 when no response head
//! came within `response_timeout` of the request being sent.
//!
//! `Connection: upgrade` becomes a byte tunnel once the backend answers 101.
//! Shutdown: idle connections close when `stop` is cancelled; a request in
//! flight finishes and its connection closes after it.

pub(crate) mod conn_pool;
pub(crate) mod exchange;
#[cfg(test)]
mod exchange_tests;
pub(crate) use crate::http1::framing;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, timeout_at};
use tracing::debug;

use super::buffers::{self, Buf};
use super::outcome::{Outcome, record};
use super::pool::Slot;
use super::select::Selection;
use super::{HEADER_TIMEOUT, Shared, access_log};
use crate::config::BalancerConfig;
use exchange::{Answer, Connect, Exchange, Stream};
use framing::{Reject, Request};

/// Largest request head, as the built-in worker's `--max-head-bytes`.
pub(crate) const MAX_HEAD: usize = 16 * 1024;

/// Serve one client connection until it closes, idles out or is evicted.
pub(crate) async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    cfg: &BalancerConfig,
) {
    let mut backends = Pooled {
        peer,
        connect_timeout: cfg.connect_timeout,
    };
    serve_conn(client, peer, shared, cfg, &mut backends).await;
}

/// Backend connections: a backend's kept-alive ones first, else a connect.
struct Pooled {
    peer: SocketAddr,
    connect_timeout: Duration,
}

impl Connect for Pooled {
    type Conn = TcpStream;

    async fn connect(&mut self, slot: &Arc<Slot>) -> Option<(TcpStream, bool)> {
        if let Some(conn) = slot.conns.take(slot.addr) {
            return Some((conn, true));
        }
        let conn = super::connect(slot, self.connect_timeout, self.peer).await?;
        Some((conn, false))
    }

    fn keep(&mut self, slot: &Slot, conn: TcpStream) {
        slot.conns.put(conn);
    }

    fn stray_bytes(&mut self, slot: &Slot) {
        slot.conns.stray_bytes(slot.addr);
    }
}

/// The connection loop: Idle (nothing received: evictable, no buffer) ->
/// Head (bytes arrived: a buffer, `HEADER_TIMEOUT`) -> an `Exchange` ->
/// Idle again if the client connection is still in step, else closed.
async fn serve_conn<C: Stream, K: Connect>(
    mut client: C,
    peer: SocketAddr,
    shared: &Shared,
    cfg: &BalancerConfig,
    backends: &mut K,
) {
    let evict = Arc::new(Notify::new());
    // Formatted once: every request of the connection appends it to X-Forwarded-For.
    let client_ip = peer.ip().to_string();
    // Bytes of the next request that came with the previous one (pipelining).
    let mut carry = Buf::none();
    // The first head must be complete HEADER_TIMEOUT after accept.
    let mut head_deadline = Some(Instant::now() + HEADER_TIMEOUT);
    // Accepted after the balancer stopped: drained from the backlog.
    let drained = shared.stop.is_cancelled();
    loop {
        let mut buf = std::mem::take(&mut carry);
        if buf.is_empty() {
            // Idle -> Head, or closed.
            let wait_until = head_deadline.unwrap_or_else(|| Instant::now() + cfg.idle_timeout);
            let _idle = shared.admission.waiting(&evict);
            // A connection taken from the backlog after the balancer
            // stopped (`drain_backlog`, which takes only those whose first
            // request is there) gets that request answered; the rest
            // close at once when it stops.
            let answer_first = head_deadline.is_some() && drained;
            tokio::select! {
                biased;
                _ = shared.stop.cancelled(), if !answer_first => return,
                _ = evict.notified() => {
                    debug!(target: "balancer", %peer, "closing an idle connection to admit a new client");
                    return;
                }
                r = timeout_at(wait_until, client.first_bytes(&mut buf)) => if !matches!(r, Ok(Ok(true))) {
                    return;
                },
            }
        }
        let deadline = head_deadline
            .take()
            .unwrap_or_else(|| Instant::now() + HEADER_TIMEOUT);
        let who = (peer, client_ip.as_str());
        let mut outcome = request(
            &mut client,
            who,
            shared,
            cfg,
            &mut buf,
            deadline,
            backends,
            &mut carry,
        )
        .await;
        let Some(outcome) = outcome.as_mut() else {
            return;
        };
        if shared.backends.access_log.get().is_some() && outcome.request_line.is_none() {
            outcome.request_line =
                access_log::request_line(&buf).map(|(m, t)| (m.to_owned(), t.to_owned()));
        }
        drop(buf);
        // (At a handover, a response that went out with `keep-alive` keeps
        // its connection: the next one says `close`, so the client is told.)
        let keep = outcome.keep_client && !shared.stop.is_cancelled();
        // Request outcome: every request, answered by a backend or by fleet
        // itself, passes here exactly once with all that is known about it.
        record(shared, peer, outcome);
        if !keep {
            // Closed by the drop, without a shutdown(2) first: close sends
            // the same FIN after the queued response (or, with unread
            // request bytes, the same reset), one system call fewer per
            // connection. (The socket is not shared: close-on-exec, no fork.)
            return;
        }
    }
}

/// Head -> Exchange: read the rest of the head into `buf` by `deadline` and
/// answer it (a backend's response or one of the balancer's own). `None`:
/// the client left before a whole head, or sent nothing in time.
#[expect(
    clippy::too_many_arguments,
    reason = "the connection's parts, borrowed for one request; no flags among them"
)]
async fn request<C: Stream, K: Connect>(
    client: &mut C,
    (peer, client_ip): (SocketAddr, &str),
    shared: &Shared,
    cfg: &BalancerConfig,
    buf: &mut Buf,
    deadline: Instant,
    backends: &mut K,
    carry: &mut Buf,
) -> Option<Outcome> {
    let started = Instant::now();
    let mut head = Buf::small();
    let answer = match timeout_at(deadline, read_head(client, buf, client_ip, &mut head)).await {
        Ok(Ok(req)) => {
            let roster = &*shared.backends;
            let line = roster
                .access_log
                .get()
                .and_then(|_| access_log::request_line(buf));
            let line = line.map(|(m, t)| (m.to_owned(), t.to_owned()));
            match Exchange::new(client, (roster, cfg), req, buf, head, started) {
                Ok(exchange) => {
                    // The exchange has what it needs of the head's buffer
                    // (the head rewritten, the bytes after it): it goes
                    // back while the backend works.
                    *buf = Buf::none();
                    let mut selection = Selection::new(roster, cfg, peer.ip(), started);
                    let mut outcome = exchange.run(&mut selection, backends, carry).await;
                    outcome.request_line = line;
                    return Some(outcome);
                }
                Err(why) => Answer::BadRequest(why),
            }
        }
        Ok(Err(HeadError::Closed)) => return None,
        Ok(Err(HeadError::TooLarge)) => Answer::HeadTooLarge,
        Ok(Err(HeadError::Bad(why))) => {
            debug!(target: "balancer", %peer, reason = why.0, "malformed request");
            Answer::BadRequest(why)
        }
        Err(_) if buf.is_empty() => return None,
        Err(_) => Answer::HeadTimeout,
    };
    Some(answered(client, answer, started, buf.len()).await)
}

/// Send one of the balancer's own answers and describe it.
async fn answered<C: Stream>(
    client: &mut C,
    answer: Answer,
    started: Instant,
    bytes_in: usize,
) -> Outcome {
    let bytes_out = answer.send(client).await;
    Outcome {
        status: answer.status(),
        bytes_in: bytes_in as u64,
        bytes_out,
        total: started.elapsed(),
        first_byte: Some(started.elapsed()),
        ..Outcome::default()
    }
}

enum HeadError {
    /// The client closed before a whole head.
    Closed,
    TooLarge,
    Bad(Reject),
}

/// Read until `buf` holds a whole request head; the head for the backend
/// goes to `out`.
async fn read_head<C: Stream>(
    client: &mut C,
    buf: &mut Buf,
    peer: &str,
    out: &mut Buf,
) -> Result<Request, HeadError> {
    loop {
        if !buf.is_empty() {
            match framing::request(buf, peer, out) {
                Ok(Some(req)) => return Ok(req),
                Ok(None) => {}
                // More header lines than fit: 431, as for a head too long
                // and as the built-in worker answers (RFC 6585 §5).
                Err(why) if why == framing::Reject::TOO_MANY_HEADERS => {
                    return Err(HeadError::TooLarge);
                }
                Err(why) => return Err(HeadError::Bad(why)),
            }
        }
        if buf.len() >= MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        let room = buffers::SMALL.min(MAX_HEAD - buf.len());
        buf.reserve(room);
        match client.read_buf(&mut **buf).await {
            Ok(0) | Err(_) => return Err(HeadError::Closed),
            Ok(_) => {}
        }
    }
}

/// Close pooled backend connections as they expire, so a quiet fleet holds
/// none; all of them once the balancer stops.
pub(crate) async fn prune_conn_pool(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shared.stop.cancelled() => break,
            _ = tick.tick() => {
                for slot in shared.backends.load().slots() {
                    slot.conns.prune(slot.addr);
                }
            }
        }
    }
    for slot in shared.backends.load().slots() {
        slot.conns.clear();
    }
}
