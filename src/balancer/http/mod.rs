//! The http engine: HTTP/1.0 and 1.1 (keep-alive, pipelining) parsed on the
//! raw connection, every request balanced on its own.
//!
//! One task per client connection and nothing per request: the task reads a
//! request head (`framing::request`, which also rewrites it for the backend),
//! picks a backend (`Pool::pick`, the pool loaded per request), takes a
//! kept-alive connection to it from that backend's idle pool
//! (`conn_pool`) or connects, sends the head and streams the body while
//! reading the response head, then streams the response body back and
//! returns the backend connection to the pool when both sides left it in
//! step. Buffers live only while a request is in flight; an idle kept-alive
//! client holds a socket and nothing else.
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
pub mod framing;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, timeout, timeout_at};
use tracing::debug;

use super::access_log;
use super::outcome::{Outcome, record};
use super::pool::Slot;
use super::select::{Next, Selection};
use super::{HEADER_TIMEOUT, Shared};
use crate::config::BalancerConfig;
use crate::idle::{Activity, Tracked};
use framing::{Body, Reject, Request};

/// First allocation for a request head; it grows up to `MAX_HEAD`.
const HEAD_BUF: usize = 4 * 1024;
/// Largest request head, as the built-in worker's `--max-head-bytes`.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Largest response head accepted from a backend.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Body bytes moved per read, each way.
const BODY_BUF: usize = 16 * 1024;

/// Serve one client connection until it closes, idles out or is evicted.
pub(crate) async fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    cfg: &BalancerConfig,
) {
    let _ = client.set_nodelay(true);
    let evict = Arc::new(Notify::new());
    // Formatted once: every request of the connection appends it to X-Forwarded-For.
    let client_ip = peer.ip().to_string();
    // Bytes of the next request that came with the previous one (pipelining).
    let mut carry: Vec<u8> = Vec::new();
    // The first head must be complete HEADER_TIMEOUT after accept.
    let mut head_deadline = Some(Instant::now() + HEADER_TIMEOUT);
    loop {
        let mut buf = std::mem::take(&mut carry);
        if buf.is_empty() {
            // Idle: waiting for a request, nothing received. Evictable.
            let wait_until = head_deadline.unwrap_or_else(|| Instant::now() + cfg.idle_timeout);
            let _idle = shared.admission.waiting(&evict);
            tokio::select! {
                biased;
                _ = shared.stop.cancelled() => return,
                _ = evict.notified() => {
                    debug!(target: "balancer", %peer, "closing an idle connection to admit a new client");
                    return;
                }
                r = timeout_at(wait_until, first_bytes(&client, &mut buf)) => if !matches!(r, Ok(Ok(true))) {
                    return;
                },
            }
        }
        let deadline = head_deadline
            .take()
            .unwrap_or_else(|| Instant::now() + HEADER_TIMEOUT);
        let started = Instant::now();
        let mut head = Vec::new();
        let parsed = timeout_at(
            deadline,
            read_head(&mut client, &mut buf, &client_ip, &mut head),
        )
        .await;
        let outcome = match parsed {
            Ok(Ok(req)) => {
                exchange(
                    &mut client,
                    peer,
                    shared,
                    cfg,
                    &req,
                    &buf,
                    head,
                    &mut carry,
                    started,
                )
                .await
            }
            Ok(Err(HeadError::Closed)) => return,
            Ok(Err(HeadError::TooLarge)) => {
                answered(&mut client, Answer::HeadTooLarge, started, buf.len()).await
            }
            Ok(Err(HeadError::Bad(why))) => {
                debug!(target: "balancer", %peer, reason = why.0, "malformed request");
                answered(&mut client, Answer::BadRequest(why), started, buf.len()).await
            }
            Err(_) if buf.is_empty() => return,
            Err(_) => answered(&mut client, Answer::HeadTimeout, started, buf.len()).await,
        };
        let mut outcome = outcome;
        if shared.backends.access_log.get().is_some() {
            outcome.request_line =
                access_log::request_line(&buf).map(|(m, t)| (m.to_owned(), t.to_owned()));
        }
        drop(buf);
        // (At a handover, a response that went out with `keep-alive` keeps
        // its connection: the next one says `close`, so the client is told.)
        let keep = outcome.keep_client && !shared.stop.is_cancelled();
        // Request outcome: every request, answered by a backend or by fleet
        // itself, passes here exactly once with all that is known about it.
        record(shared, peer, &outcome);
        if !keep {
            let _ = client.shutdown().await;
            return;
        }
    }
}

/// Wait for the first bytes of a request into `buf`; false if the client
/// closed. The buffer is allocated only once bytes are there (readiness can
/// be spurious, e.g. on a fresh connection), so an idle client holds none.
async fn first_bytes(client: &TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    loop {
        client.readable().await?;
        buf.reserve(HEAD_BUF);
        match client.try_read_buf(buf) {
            Ok(n) => return Ok(n > 0),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => *buf = Vec::new(),
            Err(e) => return Err(e),
        }
    }
}

/// Send one of the balancer's own answers and describe it.
async fn answered(
    client: &mut TcpStream,
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

/// The balancer's own answers.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// A refused request: 400, or 501 ([`Reject::status`]).
    BadRequest(Reject),
    HeadTimeout,
    HeadTooLarge,
    BadGateway,
    NoBackend,
    GatewayTimeout,
}

impl Answer {
    fn status(self) -> u16 {
        match self {
            Answer::BadRequest(why) => why.status(),
            Answer::HeadTimeout => 408,
            Answer::HeadTooLarge => 431,
            Answer::BadGateway => 502,
            Answer::NoBackend => 503,
            Answer::GatewayTimeout => 504,
        }
    }

    /// Write the answer; returns the bytes written (0 if the client is gone).
    async fn send<W: AsyncWrite + Unpin>(self, client: &mut W) -> u64 {
        let (reason, line) = match self {
            Answer::BadRequest(why) if why.status() == 501 => ("Not Implemented", why.0),
            Answer::BadRequest(why) => ("Bad Request", why.0),
            Answer::HeadTimeout => ("Request Timeout", "request head not received in time"),
            Answer::HeadTooLarge => ("Request Header Fields Too Large", "request head too large"),
            Answer::BadGateway => ("Bad Gateway", "the backend failed before answering"),
            Answer::NoBackend => ("Service Unavailable", "no healthy backend is available"),
            Answer::GatewayTimeout => ("Gateway Timeout", "the backend did not answer in time"),
        };
        let retry = if matches!(self, Answer::NoBackend) {
            "Retry-After: 1\r\n"
        } else {
            ""
        };
        let msg = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{retry}Connection: close\r\n\r\n{line}\n",
            self.status(),
            line.len() + 1
        );
        match timeout(Duration::from_secs(5), client.write_all(msg.as_bytes())).await {
            Ok(Ok(())) => msg.len() as u64,
            _ => 0,
        }
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
async fn read_head(
    client: &mut TcpStream,
    buf: &mut Vec<u8>,
    peer: &str,
    out: &mut Vec<u8>,
) -> Result<Request, HeadError> {
    loop {
        if !buf.is_empty() {
            match framing::request(buf, peer, out) {
                Ok(Some(req)) => return Ok(req),
                Ok(None) => {}
                Err(why) => return Err(HeadError::Bad(why)),
            }
        }
        if buf.len() >= MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        buf.reserve(HEAD_BUF.min(MAX_HEAD - buf.len()));
        match client.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(HeadError::Closed),
            Ok(_) => {}
        }
    }
}

/// How one try on one backend ended.
enum Attempt {
    /// A response was sent to the client (`status`); `keep_client` says
    /// whether the client connection is still in step.
    Answered {
        status: u16,
        bytes_out: u64,
        first_byte: Duration,
        keep_client: bool,
    },
    /// The backend failed before any response byte. `replayable`: the
    /// request can be sent again (nothing of it was consumed beyond `buf`);
    /// `written`: it may have reached the backend whole (so only an
    /// idempotent request may be sent again).
    Failed {
        why: &'static str,
        replayable: bool,
        written: bool,
    },
    /// The backend left rotation while an idempotent request, written whole
    /// and replayable, waited for its answer: sent elsewhere, always.
    LeftRotation,
    /// The backend's response head is malformed: not retried.
    BadResponse(Reject),
    TimedOut,
    /// The request body was malformed part-way: 400, and the backend
    /// connection (which saw part of it) is dropped.
    BadBody(Reject),
    /// The client left mid-request.
    ClientGone,
}

/// Send `req` to a backend (retrying on others as allowed) and its response
/// to the client. `buf` holds the head and whatever followed it; bytes of
/// the next request end up in `carry`.
#[allow(clippy::too_many_arguments)]
async fn exchange(
    client: &mut TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    cfg: &BalancerConfig,
    req: &Request,
    buf: &[u8],
    mut head: Vec<u8>,
    carry: &mut Vec<u8>,
    started: Instant,
) -> Outcome {
    // The body as far as `buf` holds it: sent with the head, and replayable.
    let mut body = Body::new(req.body);
    let after_head = &buf[req.head_len..];
    let prefix = match body.feed(after_head) {
        Ok(n) => n,
        Err(why) => {
            return answered(client, Answer::BadRequest(why), started, buf.len()).await;
        }
    };
    let rest = &after_head[prefix..];
    head.extend_from_slice(&after_head[..prefix]);
    let first_send = head;

    let mut outcome = Outcome {
        bytes_in: (req.head_len + prefix) as u64,
        ..Outcome::default()
    };
    let backends = &*shared.backends;
    let mut selection = Selection::new(backends, cfg, peer.ip(), started);
    let answer = loop {
        let slot = match selection.next().await {
            Next::Try(slot) => slot,
            Next::FailureStands => break Answer::BadGateway,
            Next::NoBackend => break Answer::NoBackend,
        };
        outcome.retried = selection.retried();
        outcome.slot = Some(slot.clone());
        let _work = slot.connection();
        let (backend, reused) = match slot.conns.take(slot.addr) {
            Some(conn) => (conn, true),
            None => match super::connect(&slot, cfg.connect_timeout, peer).await {
                Some(conn) => (conn, false),
                None => continue,
            },
        };
        let mut tried_body = body;
        let mut leftover = if tried_body.is_done() {
            rest.to_vec()
        } else {
            Vec::new()
        };
        let sent = AtomicU64::new(0);
        let attempt = attempt(
            client,
            backend,
            &slot,
            req,
            &first_send,
            &mut tried_body,
            &mut leftover,
            &sent,
            cfg,
            // A handover: this response closes the connection.
            shared.backends.handover.is_cancelled(),
            &mut outcome,
            started,
        )
        .await;
        outcome.bytes_in += sent.load(Relaxed);
        match attempt {
            Attempt::Answered {
                status,
                bytes_out,
                first_byte,
                keep_client,
            } => {
                outcome.status = status;
                outcome.bytes_out = bytes_out;
                outcome.first_byte = Some(first_byte);
                outcome.keep_client = keep_client;
                outcome.total = started.elapsed();
                *carry = leftover;
                slot.answered(&cfg.passive);
                return outcome;
            }
            Attempt::ClientGone => {
                outcome.total = started.elapsed();
                // No status went out: nothing to time.
                outcome.first_byte = None;
                return outcome;
            }
            Attempt::Failed {
                why,
                replayable,
                written,
            } => {
                // A pooled connection the backend had closed is no evidence;
                // a fresh one reset before taking the request is.
                if written || !reused {
                    selection.strike(&slot, why);
                }
                let once_more = !written || selection.failed_after_write();
                if replayable && (!written || req.idempotent) && once_more {
                    slot.metrics.replays.inc();
                    debug!(target: "balancer", %peer, backend = %slot.addr, why, "retrying on another backend");
                    continue;
                }
                break Answer::BadGateway;
            }
            Attempt::LeftRotation => {
                // Taken out by someone else (a drain, its probes, another
                // request's strikes) while this one waited: no evidence
                // against the backend or the request, so it costs neither a
                // strike nor the request's one more try.
                slot.metrics.replays.inc();
                debug!(target: "balancer", %peer, backend = %slot.addr, "left rotation before answering; retrying on another backend");
                continue;
            }
            Attempt::BadResponse(why) => {
                debug!(target: "balancer", backend = %slot.addr, reason = why.0, "malformed response");
                selection.strike(&slot, why.0);
                break Answer::BadGateway;
            }
            Attempt::TimedOut => {
                selection.strike(&slot, "no response in time");
                break Answer::GatewayTimeout;
            }
            Attempt::BadBody(why) => break Answer::BadRequest(why),
        }
    };
    match answer {
        Answer::BadGateway => backends.metrics.bad_gateway.inc(),
        Answer::GatewayTimeout => backends.metrics.gateway_timeout.inc(),
        _ => {}
    }
    outcome.bytes_out = answer.send(client).await;
    outcome.status = answer.status();
    outcome.first_byte = Some(started.elapsed());
    outcome.total = started.elapsed();
    outcome.keep_client = false;
    outcome
}

/// Why the request body stopped moving.
enum UploadError {
    Client,
    Backend,
    Bad(Reject),
}

/// One try: send the request on `backend`, then carry the response back.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    client: &mut TcpStream,
    mut backend: TcpStream,
    slot: &Slot,
    req: &Request,
    first_send: &[u8],
    body: &mut Body,
    carry: &mut Vec<u8>,
    sent: &AtomicU64,
    cfg: &BalancerConfig,
    closing: bool,
    outcome: &mut Outcome,
    started: Instant,
) -> Attempt {
    let idle = cfg.idle_timeout;
    match timeout(idle, backend.write_all(first_send)).await {
        Ok(Ok(())) => {}
        _ => {
            // The backend refused the request's bytes (a pooled connection
            // it had closed, or a reset): the request never reached it whole.
            return Attempt::Failed {
                why: "write failed",
                replayable: true,
                written: false,
            };
        }
    }
    let consumed = AtomicBool::new(false);
    // Small at first: most responses (head and body) fit in one small read;
    // a large body gets BODY_BUF once it needs more reads.
    let mut rbuf: Vec<u8> = Vec::with_capacity(HEAD_BUF);
    let mut upload_done = body.is_done();
    let mut upload_ok = true;
    let mut bytes_out = 0u64;
    // The response head for the client (written by `framing::response_from`).
    let mut out: Vec<u8> = Vec::new();
    // Named in the head unless the backend names itself.
    let name = cfg.backend_header.then_some(slot.name.as_bytes());
    // What happens once the split halves are given back.
    let after = 'split: {
        let (mut br, mut bw) = backend.split();
        let (mut cr, mut cw) = client.split();
        let upload = upload_body(&mut cr, &mut bw, body, carry, &consumed, sent, idle);
        tokio::pin!(upload);
        let response_timer = tokio::time::sleep(cfg.response_timeout);
        tokio::pin!(response_timer);
        // A backend that leaves rotation while this request waits for its
        // answer is given up on when the request may go elsewhere: a host
        // cut off from the network answers nothing, not even a reset.
        let gone = slot.out_of_rotation();
        tokio::pin!(gone);

        // 1. The response head (after any 1xx), while the body goes up.
        let resp = loop {
            tokio::select! {
                r = &mut upload, if !upload_done => {
                    upload_done = true;
                    match r {
                        Ok(()) => response_timer.as_mut().reset(Instant::now() + cfg.response_timeout),
                        Err(UploadError::Client) => return Attempt::ClientGone,
                        Err(UploadError::Bad(why)) => return Attempt::BadBody(why),
                        // The backend stopped reading; it may still answer (e.g. 413).
                        Err(UploadError::Backend) => upload_ok = false,
                    }
                }
                r = read_response_head(&mut br, &mut rbuf, req, upload_done && upload_ok && !closing, name, &mut out) => match r {
                    Ok(resp) if (100..200).contains(&resp.status) && resp.status != 101 => {
                        // 1xx interim answers go to an HTTP/1.1 client as
                        // they are; an HTTP/1.0 one has none (RFC 9110 §15.2).
                        if !req.http10 {
                            if cw.write_all(&rbuf[..resp.head_len]).await.is_err() {
                                return Attempt::ClientGone;
                            }
                            bytes_out += resp.head_len as u64;
                        }
                        rbuf.drain(..resp.head_len);
                    }
                    Ok(resp) => break resp,
                    Err(HeadRead::Failed(why)) => {
                        return Attempt::Failed {
                            why,
                            replayable: !consumed.load(Relaxed) && rbuf.is_empty() && bytes_out == 0,
                            written: true,
                        };
                    }
                    Err(HeadRead::Bad(why)) => return Attempt::BadResponse(why),
                },
                _ = &mut response_timer, if upload_done => return Attempt::TimedOut,
                () = &mut gone, if req.idempotent && !consumed.load(Relaxed) && rbuf.is_empty() && bytes_out == 0 => {
                    return Attempt::LeftRotation;
                }
            }
        };
        let first_byte = started.elapsed();
        outcome.first_byte = Some(first_byte);

        if resp.status == 101 {
            if !req.upgrade || !upload_done || !upload_ok {
                return Attempt::BadResponse(Reject(
                    "101 to a request that did not ask to upgrade",
                ));
            }
            out.extend_from_slice(&rbuf[resp.head_len..]);
            if cw.write_all(&out).await.is_err() {
                return Attempt::ClientGone;
            }
            bytes_out += out.len() as u64;
            break 'split After::Tunnel;
        }

        // 2. The response: head and body to the client, while the body still goes up.
        // `out` holds the client's head, which already says whether the
        // client connection is kept.
        let keep_client = resp.keep_client;
        let mut rbody = Body::new(resp.body);
        let in_buf = &rbuf[resp.head_len..];
        // `out` gets the body's first part (de-chunked for an HTTP/1.0 client).
        let first_part = if resp.dechunk {
            rbody.feed_decoded(in_buf, &mut out)
        } else {
            rbody
                .feed(in_buf)
                .inspect(|&n| out.extend_from_slice(&in_buf[..n]))
        };
        let Ok(first_part) = first_part else {
            return Attempt::BadResponse(Reject("malformed chunked response"));
        };
        // Bytes after the response's end: the backend is out of step.
        let in_step = AtomicBool::new(first_part == in_buf.len());
        let out = out;
        // The de-chunked body, for an HTTP/1.0 client only.
        let mut decoded: Vec<u8> = Vec::new();
        rbuf.clear();
        let stream = async {
            if !done_in_time(timeout(idle, cw.write_all(&out)).await) {
                return Err(());
            }
            let mut written = out.len() as u64;
            drop(out);
            while !rbody.is_done() {
                rbuf.clear();
                rbuf.reserve(BODY_BUF);
                let n = match timeout(idle, br.read_buf(&mut rbuf)).await {
                    Ok(Ok(0)) => {
                        if rbody.at_eof() {
                            break;
                        }
                        return Err(());
                    }
                    Ok(Ok(n)) => n,
                    _ => return Err(()),
                };
                let (used, to_client) = if resp.dechunk {
                    decoded.clear();
                    let used = rbody
                        .feed_decoded(&rbuf[..n], &mut decoded)
                        .map_err(|_| ())?;
                    (used, &decoded[..])
                } else {
                    let used = rbody.feed(&rbuf[..n]).map_err(|_| ())?;
                    (used, &rbuf[..used])
                };
                if used < n {
                    in_step.store(false, Relaxed);
                }
                if !done_in_time(timeout(idle, cw.write_all(to_client)).await) {
                    return Err(());
                }
                written += to_client.len() as u64;
            }
            Ok(written)
        };
        tokio::pin!(stream);
        let streamed = loop {
            tokio::select! {
                r = &mut stream => break r,
                r = &mut upload, if !upload_done => {
                    upload_done = true;
                    match r {
                        Ok(()) => {}
                        Err(UploadError::Client | UploadError::Bad(_)) => return Attempt::ClientGone,
                        Err(UploadError::Backend) => upload_ok = false,
                    }
                }
            }
        };
        let Ok(written) = streamed else {
            // Cut mid-response: the client sees the connection close.
            return Attempt::Answered {
                status: resp.status,
                bytes_out,
                first_byte,
                keep_client: false,
            };
        };
        bytes_out += written;
        if !in_step.load(Relaxed) {
            slot.conns.stray_bytes(slot.addr);
        }
        let reusable = resp.backend_keeps && in_step.load(Relaxed) && upload_done && upload_ok;
        After::Done {
            status: resp.status,
            keep_client: keep_client && upload_done && upload_ok,
            reusable,
        }
    };
    match after {
        After::Tunnel => {
            drop(rbuf);
            if !carry.is_empty() {
                // Whatever the client sent after its head belongs to the tunnel.
                if backend.write_all(carry).await.is_ok() {
                    carry.clear();
                    tunnel(client, &mut backend, idle).await;
                }
            } else {
                tunnel(client, &mut backend, idle).await;
            }
            carry.clear();
            Attempt::Answered {
                status: 101,
                bytes_out,
                first_byte: outcome.first_byte.unwrap_or_default(),
                keep_client: false,
            }
        }
        After::Done {
            status,
            keep_client,
            reusable,
        } => {
            if reusable {
                slot.conns.put(backend);
            }
            Attempt::Answered {
                status,
                bytes_out,
                first_byte: outcome.first_byte.unwrap_or_default(),
                keep_client,
            }
        }
    }
}

/// What `attempt` does once the connection halves are free again.
enum After {
    Tunnel,
    Done {
        status: u16,
        keep_client: bool,
        reusable: bool,
    },
}

fn done_in_time(r: Result<std::io::Result<()>, tokio::time::error::Elapsed>) -> bool {
    matches!(r, Ok(Ok(())))
}

/// Move the rest of the request body from the client to the backend; bytes
/// after the body's end (the next request) go to `carry`.
async fn upload_body<R, W>(
    client: &mut R,
    backend: &mut W,
    body: &mut Body,
    carry: &mut Vec<u8>,
    consumed: &AtomicBool,
    sent: &AtomicU64,
    idle: Duration,
) -> Result<(), UploadError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if body.is_done() {
        return Ok(());
    }
    let mut buf = vec![0u8; BODY_BUF];
    while !body.is_done() {
        let n = match timeout(idle, client.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Err(UploadError::Client),
        };
        consumed.store(true, Relaxed);
        let used = body.feed(&buf[..n]).map_err(UploadError::Bad)?;
        if !done_in_time(timeout(idle, backend.write_all(&buf[..used])).await) {
            return Err(UploadError::Backend);
        }
        sent.fetch_add(used as u64, Relaxed);
        carry.extend_from_slice(&buf[used..n]);
    }
    Ok(())
}

enum HeadRead {
    /// The backend closed or reset before a whole head.
    Failed(&'static str),
    Bad(Reject),
}

/// Read until `buf` starts with a whole response head. Cancel-safe: progress
/// lives in `buf`.
async fn read_response_head<R: AsyncRead + Unpin>(
    backend: &mut R,
    buf: &mut Vec<u8>,
    req: &Request,
    can_keep: bool,
    name: Option<&[u8]>,
    out: &mut Vec<u8>,
) -> Result<framing::Response, HeadRead> {
    loop {
        if !buf.is_empty() {
            match framing::response_from(buf, req, can_keep, name, out) {
                Ok(Some(resp)) => return Ok(resp),
                Ok(None) => {}
                Err(why) => return Err(HeadRead::Bad(why)),
            }
        }
        if buf.len() >= MAX_RESPONSE_HEAD {
            return Err(HeadRead::Bad(Reject("response head too large")));
        }
        buf.reserve(HEAD_BUF.min(MAX_RESPONSE_HEAD - buf.len()));
        match backend.read_buf(buf).await {
            Ok(0) => return Err(HeadRead::Failed("closed before answering")),
            Err(_) => return Err(HeadRead::Failed("reset before answering")),
            Ok(_) => {}
        }
    }
}

/// After a 101: bytes both ways until both sides close or nothing moves for `idle`.
async fn tunnel(client: &mut TcpStream, backend: &mut TcpStream, idle: Duration) {
    let activity = Activity::new();
    let mut c = Tracked::new(client, &activity);
    let mut b = Tracked::new(backend, &activity);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut c, &mut b) => {}
        _ = activity.idle_for(idle) => {}
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
