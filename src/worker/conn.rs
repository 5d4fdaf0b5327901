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
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
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
    // Boxed on purpose: a connection holds its buffers as one pointer (its
    // task stays small), and taking or giving them back moves only that.
    #[allow(clippy::vec_box)]
    static POOLED: RefCell<Vec<Box<Bufs>>> = const { RefCell::new(Vec::new()) };
}

impl Bufs {
    fn take() -> Box<Bufs> {
        POOLED.with(|p| p.borrow_mut().pop()).unwrap_or_else(|| {
            Box::new(Bufs {
                input: Vec::with_capacity(INPUT),
                head: Vec::with_capacity(256),
            })
        })
    }

    /// Back to the pool, unless it grew for a large head (rare: let it go).
    fn give(mut self: Box<Self>) {
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
/// shutdown token then, once that fired, the abort token (`'t`), pinned in
/// `serve`'s frame (`'p`): one slot for both, so each task stores one.
struct Waits<'p, 't> {
    timer: Pin<&'p mut Sleep>,
    /// `shutdown.cancelled()`, then (draining) `abort.cancelled()`.
    cancelled: Pin<&'p mut WaitForCancellationFuture<'t>>,
    abort: &'t CancellationToken,
    /// Shutdown was seen during a wait: `cancelled` now waits for `abort`.
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
                () = self.cancelled.as_mut() => {
                    if self.draining {
                        return Woke::Aborted;
                    }
                    // Shutdown -> draining: from now on, wait for the abort.
                    self.draining = true;
                    self.cancelled.set(self.abort.cancelled());
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

/// Serve one client connection until it closes, times out or is stopped;
/// `slot` (a place under `--max-connections`) is held until then. Owned
/// arguments, referenced by `Conn`: a task's future stores its arguments,
/// and moving them into a local would store them twice.
pub(super) async fn serve(
    stream: TcpStream,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    abort: CancellationToken,
    slot: OwnedSemaphorePermit,
) {
    let timer = tokio::time::sleep_until(Instant::now() + shared.limits.idle);
    tokio::pin!(timer);
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut conn = Conn {
        stream: &stream,
        shared: &shared,
        shutdown: &shutdown,
        bufs: None,
        waits: Waits {
            timer,
            cancelled,
            abort: &abort,
            draining: false,
        },
    };
    conn.run().await;
    if let Some(bufs) = conn.bufs.take() {
        bufs.give();
    }
    drop(slot);
}

struct Conn<'p, 't> {
    stream: &'t TcpStream,
    shared: &'t Shared,
    shutdown: &'t CancellationToken,
    /// `None` while nothing is buffered: the buffers are back in the pool.
    bufs: Option<Box<Bufs>>,
    waits: Waits<'p, 't>,
}

/// What the buffered input held.
enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// Refused by the codec or the head limit: answer `status` and close.
    Refused { status: u16, why: &'static str },
    /// A request, answered: the reply's head is in `Bufs::head`, its body
    /// (`len` bytes) here; `body` is the request's.
    Answered {
        reply: Body,
        len: u64,
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
            Phase::Head { since } => match parse(self.shared, self.shutdown, bufs) {
                // Head -> Head: the rest of the head is still to come.
                Parsed::Partial => Step::More(Phase::Head { since }),
                Parsed::Refused { status, why } => {
                    // Boxed: rare, and its futures would grow every
                    // connection's task.
                    Box::pin(self.refuse(status, why)).await;
                    Step::Close
                }
                Parsed::Answered {
                    reply,
                    len,
                    head_method,
                    keep,
                    body,
                } => {
                    if !self.send(reply, len, head_method).await || !keep {
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
            let mut deadline = now + self.shared.limits.idle;
            if let Phase::Head { since } = phase {
                let started = *since.get_or_insert(now);
                deadline = deadline.min(started + self.shared.limits.header_timeout);
            }
            match self.waits.ready(self.stream, false, deadline, idle).await {
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
    /// is gone or stopped reading. The common case, a socket that takes it
    /// all, does not await: what waits for the socket is boxed, so its
    /// state does not grow every connection's task.
    async fn send(&mut self, body: Body, len: u64, head_method: bool) -> bool {
        let Some(bufs) = self.bufs.as_ref() else {
            return false;
        };
        let content: &[u8] = match (&body, head_method) {
            (Body::Memory(b), false) => b,
            _ => &[],
        };
        let Some(sent) = write_now(self.stream, &bufs.head, content) else {
            return false;
        };
        if sent < bufs.head.len() + content.len() {
            let (head, content) = unsent(&bufs.head, content, sent);
            let idle = self.shared.limits.idle;
            let rest = write_all(self.stream, &mut self.waits, idle, head, content);
            if !Box::pin(rest).await {
                return false;
            }
        }
        match body {
            // Boxed too: a file past the cache's limit is rare.
            Body::File(f) if !head_method => Box::pin(self.stream_file(f, len)).await,
            _ => true,
        }
    }

    /// Send `len` bytes of `f`, the length the head promised: a file that
    /// shrank meanwhile ends the connection rather than send a short body.
    async fn stream_file(&mut self, f: std::fs::File, len: u64) -> bool {
        let mut file = tokio::fs::File::from_std(f).take(len);
        let mut chunk = vec![0u8; usize::try_from(len.min(CHUNK)).unwrap_or(0)];
        let mut left = len;
        let idle = self.shared.limits.idle;
        while left > 0 {
            let n = match file.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    tracing::debug!("a file shrank while it was being sent");
                    return false;
                }
                Ok(n) => n,
            };
            left -= n as u64;
            if !write_all(self.stream, &mut self.waits, idle, &[], &chunk[..n]).await {
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
        let idle = self.shared.limits.idle;
        if !write_all(self.stream, &mut self.waits, idle, &bufs.head, body).await
            || nix::sys::socket::shutdown(
                self.stream.as_raw_fd(),
                nix::sys::socket::Shutdown::Write,
            )
            .is_err()
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
                    let woke = self.waits.ready(self.stream, false, deadline, false);
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
fn parse(shared: &Shared, shutdown: &CancellationToken, bufs: &mut Bufs) -> Parsed {
    let mut headers = framing::no_headers();
    let head = match framing::parse_request(&bufs.input, &mut headers, framing::MAX_HEADERS) {
        Ok(Some(head)) => head,
        Ok(None) if bufs.input.len() >= shared.limits.max_head => {
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
        reply: reply.body,
        len: reply.len,
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

/// Write what of `head` then `body` the socket takes now, both in one
/// `writev`: how many bytes went, or `None` if the client is gone.
fn write_now(stream: &TcpStream, head: &[u8], body: &[u8]) -> Option<usize> {
    let mut sent = 0;
    while sent < head.len() + body.len() {
        let (h, b) = unsent(head, body, sent);
        let wrote = if h.is_empty() {
            stream.try_write(b)
        } else {
            stream.try_write_vectored(&[IoSlice::new(h), IoSlice::new(b)])
        };
        match wrote {
            Ok(0) => return None,
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => return None,
        }
    }
    Some(sent)
}

/// What is left of `head` then `body` once `sent` bytes of them went.
fn unsent<'a>(head: &'a [u8], body: &'a [u8], sent: usize) -> (&'a [u8], &'a [u8]) {
    let from_head = sent.min(head.len());
    (&head[from_head..], &body[sent - from_head..])
}

/// Write all of `head` then `body`; `false` if the client is gone or took
/// nothing for the idle timeout.
async fn write_all(
    stream: &TcpStream,
    waits: &mut Waits<'_, '_>,
    idle: Duration,
    mut head: &[u8],
    mut body: &[u8],
) -> bool {
    loop {
        let Some(sent) = write_now(stream, head, body) else {
            return false;
        };
        (head, body) = unsent(head, body, sent);
        if head.is_empty() && body.is_empty() {
            return true;
        }
        let deadline = Instant::now() + idle;
        if !matches!(
            waits.ready(stream, true, deadline, false).await,
            Woke::Ready
        ) {
            return false;
        }
    }
}
