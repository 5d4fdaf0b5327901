//! One client connection of the worker, from accept to close, on the shared
//! codec: read into a buffer, parse each request head with
//! `http1::framing` (the balancer's strict rules), answer it (`handler`),
//! and write head and body with one vectored write. The connection goes on
//! while the client keeps it (keep-alive); pipelined requests are answered
//! from the buffer, in order, without another read. No hyper: the request
//! path is a parse, a cache lookup and a `writev`.
//!
//! # Answers of its own (each with `X-Fleet-Backend` and `Connection: close`)
//! - A head the codec refuses: 400, or 501 for what fleet does not implement
//!   (a transfer coding other than chunked, `CONNECT`); more header lines
//!   than `MAX_HEADERS`, or a head still incomplete at `--max-head-bytes`:
//!   431. What the client still sends is then read and dropped for up to
//!   `LINGER` before the close, so it reads the answer rather than a reset.
//! - Part of a head, but not all of it, within `--header-timeout`: 408. A
//!   kept-alive connection with no request begun is closed without a word
//!   at the header or the idle timeout.
//!
//! # Request bodies
//! Only GET and HEAD are served, but any request may carry a body: after the
//! reply it is read and dropped, up to `MAX_DISCARD` bytes (past that the
//! connection closes). A request with `Expect: 100-continue` and a body gets
//! its reply with `Connection: close` instead: its client may be waiting to
//! send the body, or may never send it.
//!
//! # Buffers
//! A connection takes its input buffer and head buffer from a per-thread
//! pool when bytes arrive and gives them back when nothing is left in them,
//! so an idle kept-alive connection holds none (1000 kept-alive clients cost
//! their sockets and tasks, not 1000 buffers).
//!
//! # Timeouts
//! One timer per connection. Each wait computes its deadline (the idle
//! timeout from now, or the head's header deadline if that comes first); the
//! timer is reset only when it fires before the deadline or lies past it,
//! so a busy kept-alive connection does not touch the timer wheel for every
//! request.
//!
//! # Shutdown
//! `shutdown` ends a connection that waits with no request begun at once; a
//! request in flight (part of its head read, or its reply being written) is
//! finished and answered with `Connection: close`. `abort` (the drain timed
//! out) ends every wait.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::handler::{self, Body, Reply, Shared};
use crate::http1::framing::{self, BodyLen, Reject};
use crate::http1::response::{self, Persist};

/// Request-body bytes read and dropped per request; past that the
/// connection is closed instead.
const MAX_DISCARD: u64 = 1024 * 1024;
/// First capacity of an input buffer; it grows to `--max-head-bytes` for a
/// head that needs it.
const INPUT: usize = 4 * 1024;
/// Bytes a read asks for at least.
const MIN_READ: usize = 1024;
/// Buffer pairs kept per thread for the next connection with bytes to read.
const POOL: usize = 64;
/// How long a refused client's remaining bytes are read and dropped before
/// the close.
const LINGER: Duration = Duration::from_secs(1);
/// Bytes read from disk per write when a file is streamed.
const CHUNK: u64 = 256 * 1024;

/// The `fleet serve` limits a connection applies.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) max_head: usize,
    pub(super) header_timeout: Duration,
    pub(super) idle: Duration,
}

/// What the connection reads next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A request head. `since`: when the worker began waiting for it (its
    /// header timeout runs from there), set at its first wait.
    Head { since: Option<Instant> },
    /// The body of a request already answered, read and dropped; `left`:
    /// bytes it may still take.
    Discard { body: framing::Body, left: u64 },
}

/// What answering the buffered input came to.
enum Step {
    /// A whole request was answered; read the next from `Phase`.
    Next(Phase),
    /// Nothing more to do with what is buffered: read more.
    More(Phase),
    Close,
}

/// A connection's buffers: what was read and not yet used, and the head of
/// the reply being written.
struct Bufs {
    input: Vec<u8>,
    head: Vec<u8>,
}

thread_local! {
    static POOLED: RefCell<Vec<Bufs>> = const { RefCell::new(Vec::new()) };
}

impl Bufs {
    fn take() -> Bufs {
        POOLED
            .with(|p| p.borrow_mut().pop())
            .unwrap_or_else(|| Bufs {
                input: Vec::with_capacity(INPUT),
                head: Vec::with_capacity(256),
            })
    }

    /// Back to the pool, unless it grew for a large head (rare: let it go).
    fn give(mut self) {
        if self.input.capacity() > INPUT || self.head.capacity() > 1024 {
            return;
        }
        self.input.clear();
        POOLED.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL {
                p.push(self);
            }
        });
    }
}

/// Why a wait ended.
enum Woke {
    Ready,
    /// Shutdown, while no request was in flight.
    Stopped,
    TimedOut,
    /// The drain timed out, or the socket failed.
    Aborted,
}

/// What a connection waits on besides its socket: its one timer, and the
/// shutdown and abort tokens (`'t`), pinned in `serve`'s frame (`'p`).
struct Waits<'p, 't> {
    timer: Pin<&'p mut Sleep>,
    stop: Pin<&'p mut WaitForCancellationFuture<'t>>,
    abort: Pin<&'p mut WaitForCancellationFuture<'t>>,
    /// Shutdown was seen during a wait (`stop` has completed).
    draining: bool,
}

impl Waits<'_, '_> {
    /// Wait until `stream` can be read (or written: `write`), `deadline`
    /// passes, the drain is aborted, or shutdown comes while `idle` (no
    /// request begun).
    async fn ready(
        &mut self,
        stream: &TcpStream,
        write: bool,
        deadline: Instant,
        idle: bool,
    ) -> Woke {
        if self.timer.deadline() > deadline {
            self.timer.as_mut().reset(deadline);
        }
        loop {
            // The socket's own reader and writer wakers: no waiter list.
            let socket = poll_fn(|cx| {
                if write {
                    stream.poll_write_ready(cx)
                } else {
                    stream.poll_read_ready(cx)
                }
            });
            tokio::select! {
                biased;
                () = self.abort.as_mut(), if self.draining => return Woke::Aborted,
                () = self.stop.as_mut(), if !self.draining => {
                    self.draining = true;
                    if idle {
                        return Woke::Stopped;
                    }
                }
                r = socket => return if r.is_ok() { Woke::Ready } else { Woke::Aborted },
                () = self.timer.as_mut() => {
                    if Instant::now() >= deadline {
                        return Woke::TimedOut;
                    }
                    // Armed for an earlier wait: on to this one's deadline.
                    self.timer.as_mut().reset(deadline);
                }
            }
        }
    }
}

/// Serve one client connection until it closes, times out or is stopped.
pub(super) async fn serve(
    stream: TcpStream,
    shared: &Shared,
    limits: Limits,
    shutdown: &CancellationToken,
    abort: &CancellationToken,
) {
    let timer = tokio::time::sleep_until(Instant::now() + limits.idle);
    tokio::pin!(timer);
    let stop = shutdown.cancelled();
    tokio::pin!(stop);
    let aborted = abort.cancelled();
    tokio::pin!(aborted);
    let mut conn = Conn {
        stream,
        shared,
        limits,
        shutdown,
        bufs: None,
        waits: Waits {
            timer,
            stop,
            abort: aborted,
            draining: false,
        },
    };
    conn.run().await;
    if let Some(bufs) = conn.bufs.take() {
        bufs.give();
    }
}

struct Conn<'p, 't> {
    stream: TcpStream,
    shared: &'t Shared,
    limits: Limits,
    shutdown: &'t CancellationToken,
    /// `None` while nothing is buffered: the buffers are back in the pool.
    bufs: Option<Bufs>,
    waits: Waits<'p, 't>,
}

/// What the buffered input held.
enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// Refused by the codec or the head limit: answer `status` and close.
    Refused { status: u16, why: &'static str },
    /// A request, answered by `reply`, whose head is in `Bufs::head`.
    Answered {
        reply: Reply,
        head_method: bool,
        keep: bool,
        body: BodyLen,
    },
}

impl Conn<'_, '_> {
    async fn run(&mut self) {
        let mut phase = Phase::Head { since: None };
        loop {
            // Whatever is buffered first: pipelined requests need no read.
            loop {
                match self.step(phase).await {
                    Step::Next(next) => phase = next,
                    Step::More(next) => {
                        phase = next;
                        break;
                    }
                    Step::Close => return,
                }
            }
            if !self.read(&mut phase).await {
                return;
            }
        }
    }

    fn buffered(&self) -> usize {
        self.bufs.as_ref().map_or(0, |b| b.input.len())
    }

    /// Use the buffered input: answer one request, or drop body bytes.
    async fn step(&mut self, phase: Phase) -> Step {
        let Some(bufs) = self.bufs.as_mut().filter(|b| !b.input.is_empty()) else {
            return Step::More(phase);
        };
        match phase {
            Phase::Discard { mut body, left } => {
                let end = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(bufs.input.len());
                let Ok(used) = body.feed(&bufs.input[..end]) else {
                    return Step::Close;
                };
                bufs.input.drain(..used);
                let left = left - used as u64;
                if body.is_done() {
                    // Discard -> Head
                    Step::Next(Phase::Head { since: None })
                } else if left == 0 {
                    Step::Close
                } else {
                    // Discard -> Discard: the rest is still to come.
                    Step::More(Phase::Discard { body, left })
                }
            }
            Phase::Head { since } => match parse(self.shared, self.limits, self.shutdown, bufs) {
                // Head -> Head: the rest of the head is still to come.
                Parsed::Partial => Step::More(Phase::Head { since }),
                Parsed::Refused { status, why } => {
                    self.refuse(status, why).await;
                    Step::Close
                }
                Parsed::Answered {
                    reply,
                    head_method,
                    keep,
                    body,
                } => {
                    if !self.send(reply, head_method).await || !keep {
                        return Step::Close;
                    }
                    match body {
                        // Head -> Head
                        BodyLen::Empty => Step::Next(Phase::Head { since: None }),
                        // Head -> Discard
                        len => Step::Next(Phase::Discard {
                            body: framing::Body::new(len),
                            left: MAX_DISCARD,
                        }),
                    }
                }
            },
        }
    }

    /// Read more input. `false`: the connection is done (end of stream, a
    /// timeout, shutdown with no request begun, an error).
    async fn read(&mut self, phase: &mut Phase) -> bool {
        loop {
            let idle = matches!(phase, Phase::Head { .. }) && self.buffered() == 0;
            if idle && self.shutdown.is_cancelled() {
                return false;
            }
            let bufs = self.bufs.get_or_insert_with(Bufs::take);
            if bufs.input.capacity() - bufs.input.len() < MIN_READ {
                bufs.input.reserve(INPUT.max(bufs.input.len()));
            }
            match self.stream.try_read_buf(&mut bufs.input) {
                Ok(0) => return false,
                Ok(_) => return true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return false,
            }
            if idle && let Some(bufs) = self.bufs.take() {
                // An idle kept-alive connection holds no buffer.
                bufs.give();
            }
            let now = Instant::now();
            let mut deadline = now + self.limits.idle;
            if let Phase::Head { since } = phase {
                let started = *since.get_or_insert(now);
                deadline = deadline.min(started + self.limits.header_timeout);
            }
            match self.waits.ready(&self.stream, false, deadline, idle).await {
                Woke::Ready => {}
                Woke::Stopped | Woke::Aborted => return false,
                Woke::TimedOut => {
                    if matches!(phase, Phase::Head { .. }) && !idle {
                        self.request_timeout();
                    }
                    return false;
                }
            }
        }
    }

    /// Write a reply whose head is in `Bufs::head`; `false` if the client
    /// is gone or stopped reading.
    async fn send(&mut self, reply: Reply, head_method: bool) -> bool {
        let Some(bufs) = self.bufs.as_ref() else {
            return false;
        };
        let body: &[u8] = match (&reply.body, head_method) {
            (Body::Memory(b), false) => b,
            _ => &[],
        };
        let idle = self.limits.idle;
        if !write_all(&self.stream, &mut self.waits, idle, &bufs.head, body).await {
            return false;
        }
        match reply.body {
            Body::File(f) if !head_method => self.stream_file(f, reply.len).await,
            _ => true,
        }
    }

    /// Send `len` bytes of `f`, the length the head promised: a file that
    /// shrank meanwhile ends the connection rather than send a short body.
    async fn stream_file(&mut self, f: std::fs::File, len: u64) -> bool {
        let mut file = tokio::fs::File::from_std(f).take(len);
        let mut chunk = vec![0u8; usize::try_from(len.min(CHUNK)).unwrap_or(0)];
        let mut left = len;
        let idle = self.limits.idle;
        while left > 0 {
            let n = match file.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    tracing::debug!("a file shrank while it was being sent");
                    return false;
                }
                Ok(n) => n,
            };
            left -= n as u64;
            if !write_all(&self.stream, &mut self.waits, idle, &[], &chunk[..n]).await {
                return false;
            }
        }
        true
    }

    /// Answer a refused request and close, reading what the client still
    /// sends for up to `LINGER` so it reads the answer, not a reset.
    async fn refuse(&mut self, status: u16, why: &str) {
        let reply = handler::text(
            status,
            Bytes::from(format!("{status} {}: {why}\n", response::reason(status))),
        );
        let Some(bufs) = self.bufs.as_mut() else {
            return;
        };
        bufs.head.clear();
        write_head(&mut bufs.head, self.shared, &reply, Persist::Close);
        let Body::Memory(body) = &reply.body else {
            return;
        };
        let idle = self.limits.idle;
        if !write_all(&self.stream, &mut self.waits, idle, &bufs.head, body).await
            || self.stream.shutdown().await.is_err()
        {
            return;
        }
        let deadline = Instant::now() + LINGER;
        loop {
            bufs.input.clear();
            match self.stream.try_read_buf(&mut bufs.input) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let woke = self.waits.ready(&self.stream, false, deadline, false);
                    if !matches!(woke.await, Woke::Ready) {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }

    /// 408 for a head not received in time, if the socket takes it now.
    fn request_timeout(&mut self) {
        let reply = handler::text(
            408,
            Bytes::from_static(b"408 Request Timeout: request head not received in time\n"),
        );
        let mut out = Vec::with_capacity(256);
        write_head(&mut out, self.shared, &reply, Persist::Close);
        if let Body::Memory(body) = &reply.body {
            out.extend_from_slice(body);
        }
        let _ = self.stream.try_write(&out);
    }
}

/// Parse the head at the start of `bufs.input` with the codec and, when it
/// is whole, answer it: the reply's head goes to `bufs.head` and the request
/// head leaves the input. Synchronous, so the header array lives on the
/// stack and not in the connection's future.
fn parse(shared: &Shared, limits: Limits, shutdown: &CancellationToken, bufs: &mut Bufs) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; framing::MAX_HEADERS];
    let head = match framing::parse_request(&bufs.input, &mut headers, framing::MAX_HEADERS) {
        Ok(Some(head)) => head,
        Ok(None) if bufs.input.len() >= limits.max_head => {
            return Parsed::Refused {
                status: 431,
                why: "request head too large",
            };
        }
        Ok(None) => return Parsed::Partial,
        // RFC 6585 §5, as hyper answered before.
        Err(why) if why == Reject::TOO_MANY_HEADERS => {
            return Parsed::Refused {
                status: 431,
                why: why.0,
            };
        }
        Err(why) => {
            return Parsed::Refused {
                status: why.status(),
                why: why.0,
            };
        }
    };
    let reply = handler::respond(shared, &head);
    let req = head.request;
    // RFC 9110 §10.1.1: a client that expects 100-continue may be holding
    // its body back, or may never send it once it sees a final status.
    let expects = req.body != BodyLen::Empty
        && head
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("expect"));
    let keep = req.keep_alive && !expects && !shutdown.is_cancelled();
    bufs.input.drain(..req.head_len);
    bufs.head.clear();
    write_head(
        &mut bufs.head,
        shared,
        &reply,
        Persist::of(keep, req.http10),
    );
    Parsed::Answered {
        reply,
        head_method: req.head_method,
        keep,
        body: req.body,
    }
}

/// The head of `reply`: status line, `Content-Type`, `Content-Length`, its
/// extra header, `X-Fleet-Backend`, `Date`, `Connection`.
fn write_head(out: &mut Vec<u8>, shared: &Shared, reply: &Reply, persist: Persist) {
    response::status_line(out, reply.status);
    response::header(out, b"Content-Type", &reply.content_type);
    response::content_length(out, reply.len);
    if let Some((name, value)) = &reply.extra {
        response::header(out, name, value);
    }
    out.extend_from_slice(&shared.backend_line);
    response::end(out, persist);
}

/// Write `head` then `body`, both in one `writev` when the socket takes
/// them; `false` if the client is gone or took nothing for the idle
/// timeout.
async fn write_all(
    stream: &TcpStream,
    waits: &mut Waits<'_, '_>,
    idle: Duration,
    mut head: &[u8],
    mut body: &[u8],
) -> bool {
    while !(head.is_empty() && body.is_empty()) {
        let wrote = if head.is_empty() {
            stream.try_write(body)
        } else {
            stream.try_write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
        };
        match wrote {
            Ok(0) => return false,
            Ok(n) => {
                let from_head = n.min(head.len());
                head = &head[from_head..];
                body = &body[n - from_head..];
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let deadline = Instant::now() + idle;
                if !matches!(
                    waits.ready(stream, true, deadline, false).await,
                    Woke::Ready
                ) {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}
