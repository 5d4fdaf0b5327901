//! One request's exchange: its tries on backends (`Selection`), and on
//! each the request going up and the response coming back, as two state
//! machines with explicit transitions (hyper's h1 `conn::State` is the
//! model):
//!
//! ```text
//! request side (Reading):   [head read by the connection loop]
//!                           Body { body } --all sent--> Done
//!                                         --backend stopped reading--> Refused
//! response side (Writing):  Head --1xx--> Head
//!                                --101--> Tunnel
//!                                --final head--> Body { body, pending } --end--> Done
//! ```
//!
//! Both sides move at once (a backend may answer before the body is in,
//! e.g. 413), each `step` doing one read or one write and keeping its
//! progress in its state, so a `select!` between them loses nothing.
//!
//! Generic over the client and backend streams (`Stream`) and over where
//! backend connections come from (`Connect`), so a test drives it with
//! in-memory pipes and scripted backends; the engine uses `TcpStream`s and
//! each backend's pool of kept-alive connections.
//!
//! The retry rules are the parent module's (see there); this file applies
//! them through `Attempt`, the way one try ended.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tracing::debug;

use super::super::buffers::{self, Buf};
use super::super::outcome::Outcome;
use super::super::pool::{Roster, Slot};
use super::super::select::{Next, Selection};
use super::framing::{self, Body, Reject, Request};
use crate::config::BalancerConfig;
use crate::idle::{Activity, Tracked};

/// Largest response head accepted from a backend.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// A byte stream that can be read and written at once: a client or a
/// backend connection. `halves` borrows the two directions separately (no
/// lock and no allocation, unlike `tokio::io::split`).
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {
    type Reader<'a>: AsyncRead + Unpin + Send
    where
        Self: 'a;
    type Writer<'a>: AsyncWrite + Unpin + Send
    where
        Self: 'a;

    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>);

    /// Wait for a request's first bytes and read them into `buf`, taken
    /// only once they are there, so an idle connection holds no buffer;
    /// false if the peer closed. This default reads into a small array
    /// first; a socket waits for readiness and reads into `buf` directly.
    fn first_bytes(&mut self, buf: &mut Buf) -> impl Future<Output = std::io::Result<bool>> + Send {
        async move {
            let mut first = [0u8; 512];
            let n = self.read(&mut first).await?;
            if n > 0 {
                *buf = Buf::small();
                buf.extend_from_slice(&first[..n]);
            }
            Ok(n > 0)
        }
    }
}

impl Stream for TcpStream {
    type Reader<'a> = tokio::net::tcp::ReadHalf<'a>;
    type Writer<'a> = tokio::net::tcp::WriteHalf<'a>;

    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>) {
        self.split()
    }

    async fn first_bytes(&mut self, buf: &mut Buf) -> std::io::Result<bool> {
        // `poll_read`-based: no wasted recvfrom after a short read, and
        // no buffer held while waiting (`buffers::read_taken`).
        *buf = buffers::read_taken(self, Buf::small).await?;
        Ok(!buf.is_empty())
    }
}

/// Where backend connections come from and go back to.
pub(crate) trait Connect: Send {
    type Conn: Stream;

    /// A connection to `slot`: a kept-alive one (`true`) or a new one.
    /// `None`: connecting failed (and was reported); try the next backend.
    fn connect(
        &mut self,
        slot: &Arc<Slot>,
    ) -> impl Future<Output = Option<(Self::Conn, bool)>> + Send;

    /// `conn` finished a response in step: it may carry the next request.
    fn keep(&mut self, slot: &Slot, conn: Self::Conn);

    /// The backend sent bytes after a response's end.
    fn stray_bytes(&mut self, slot: &Slot);
}

/// The balancer's own answers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Answer {
    /// A refused request: 400, or 501 ([`Reject::status`]).
    BadRequest(Reject),
    HeadTimeout,
    HeadTooLarge,
    BadGateway,
    NoBackend,
    GatewayTimeout,
}

impl Answer {
    pub(crate) fn status(self) -> u16 {
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
    pub(crate) async fn send<W: AsyncWrite + Unpin>(self, client: &mut W) -> u64 {
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

/// How one try on one backend ended.
enum Attempt {
    /// A response went to the client; `keep_client`: the client connection
    /// is still in step.
    Answered {
        status: u16,
        keep_client: bool,
    },
    /// The backend failed before any response byte. `replayable`: the
    /// request can be sent again (nothing of it was consumed beyond the
    /// head's buffer); `written`: it may have reached the backend whole (so
    /// only an idempotent request may be sent again).
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

/// One request, from its parsed head to the end of its response.
pub(crate) struct Exchange<'a, C> {
    client: &'a mut C,
    cfg: &'a BalancerConfig,
    req: Request,
    /// The head for the backend and the body bytes that came with it: what
    /// every try sends first, in one write. Exactly its size (not a pooled
    /// buffer): it is held while the backend works, which at a thousand
    /// clients waiting on busy backends is most of the balancer's memory.
    first_send: Box<[u8]>,
    /// The rest of the request body (after `first_send`).
    body: Body,
    /// Bytes after the request in the head's read: the next request.
    /// Copied (rarely any), so the head's buffer can go back at once.
    rest: Buf,
    started: Instant,
    /// The balancer's counters, and whether a handover is under way.
    roster: &'a Roster,
    outcome: Outcome,
}

impl<'a, C: Stream> Exchange<'a, C> {
    /// The exchange for `req`, whose head and following bytes are `input`;
    /// `head` is the head rewritten for the backend. `Err`: the body bytes
    /// in `input` are malformed (400).
    pub(crate) fn new(
        client: &'a mut C,
        (roster, cfg): (&'a Roster, &'a BalancerConfig),
        req: Request,
        input: &[u8],
        mut head: Buf,
        started: Instant,
    ) -> Result<Self, Reject> {
        // The body as far as `input` holds it: sent with the head, and replayable.
        let mut body = Body::new(req.body);
        let after_head = &input[req.head_len..];
        let prefix = body.feed(after_head)?;
        head.extend_from_slice(&after_head[..prefix]);
        let outcome = Outcome {
            bytes_in: (req.head_len + prefix) as u64,
            ..Outcome::default()
        };
        let after_body = &after_head[prefix..];
        let mut rest = Buf::none();
        if !after_body.is_empty() {
            rest = Buf::small();
            rest.extend_from_slice(after_body);
        }
        Ok(Exchange {
            client,
            cfg,
            req,
            first_send: Box::from(&head[..]),
            body,
            rest,
            started,
            roster,
            outcome,
        })
    }

    /// Send the request to a backend, retrying on others as allowed, and
    /// its response to the client. Bytes of the next request end up in `carry`.
    pub(crate) async fn run<K: Connect>(
        mut self,
        selection: &mut Selection<'_>,
        backends: &mut K,
        carry: &mut Buf,
    ) -> Outcome {
        let answer = loop {
            let slot = match selection.next().await {
                Next::Try(slot) => slot,
                Next::FailureStands => break Answer::BadGateway,
                Next::NoBackend => break Answer::NoBackend,
            };
            self.outcome.retried = selection.retried();
            self.outcome.slot = Some(slot.clone());
            let _work = slot.connection();
            let Some((conn, reused)) = backends.connect(&slot).await else {
                continue;
            };
            let mut up = Upload::new(self.body);
            let mut leftover = Buf::none();
            if !self.rest.is_empty() {
                leftover = Buf::small();
                leftover.extend_from_slice(&self.rest);
            }
            let attempt = self
                .attempt(&slot, conn, &mut up, &mut leftover, backends)
                .await;
            self.outcome.bytes_in += up.sent;
            match attempt {
                Attempt::Answered {
                    status,
                    keep_client,
                } => {
                    self.outcome.status = status;
                    self.outcome.keep_client = keep_client;
                    self.outcome.total = self.started.elapsed();
                    *carry = leftover;
                    slot.answered(&self.cfg.passive);
                    return self.outcome;
                }
                Attempt::ClientGone => return self.client_gone(),
                Attempt::Failed {
                    why,
                    replayable,
                    written,
                } => {
                    if self.may_retry(selection, &slot, (why, replayable, written), reused) {
                        continue;
                    }
                    break Answer::BadGateway;
                }
                Attempt::LeftRotation => {
                    // Taken out by someone else (a drain, its probes, another
                    // request's strikes) while this one waited: no evidence
                    // against the backend or the request, so it costs neither
                    // a strike nor the request's one more try.
                    slot.metrics.replays.inc();
                    debug!(target: "balancer", backend = %slot.addr, "left rotation before answering; retrying on another backend");
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
        self.answer(answer).await
    }

    /// A try failed before any response byte (`why`, `replayable`,
    /// `written` as in `Attempt::Failed`): strike it as it deserves, and
    /// whether the request goes to another backend.
    fn may_retry(
        &self,
        selection: &mut Selection<'_>,
        slot: &Slot,
        (why, replayable, written): (&'static str, bool, bool),
        reused: bool,
    ) -> bool {
        // A pooled connection the backend had closed is no evidence; a
        // fresh one reset before taking the request is.
        if written || !reused {
            selection.strike(slot, why);
        }
        let once_more = !written || selection.failed_after_write();
        if replayable && (!written || self.req.idempotent) && once_more {
            slot.metrics.replays.inc();
            debug!(target: "balancer", backend = %slot.addr, why, "retrying on another backend");
            return true;
        }
        false
    }

    fn client_gone(mut self) -> Outcome {
        self.outcome.total = self.started.elapsed();
        // No status went out: nothing to time.
        self.outcome.first_byte = None;
        self.outcome
    }

    /// End with one of the balancer's own answers; the client connection closes.
    async fn answer(mut self, answer: Answer) -> Outcome {
        match answer {
            Answer::BadGateway => self.roster.metrics.bad_gateway.inc(),
            Answer::GatewayTimeout => self.roster.metrics.gateway_timeout.inc(),
            _ => {}
        }
        self.outcome.bytes_out = answer.send(self.client).await;
        self.outcome.status = answer.status();
        self.outcome.first_byte = Some(self.started.elapsed());
        self.outcome.total = self.started.elapsed();
        self.outcome.keep_client = false;
        self.outcome
    }

    /// One try: send the request on `backend`, then carry the response back.
    async fn attempt<K: Connect>(
        &mut self,
        slot: &Slot,
        mut backend: K::Conn,
        up: &mut Upload,
        carry: &mut Buf,
        backends: &mut K,
    ) -> Attempt {
        let idle = self.cfg.idle_timeout;
        if !done_in_time(timeout(idle, backend.write_all(&self.first_send)).await) {
            // The backend refused the request's bytes (a pooled connection
            // it had closed, or a reset): the request never reached it whole.
            return Attempt::Failed {
                why: "write failed",
                replayable: true,
                written: false,
            };
        }
        let mut down = Download::new();
        let resp = match self
            .response_head(slot, &mut backend, up, carry, &mut down)
            .await
        {
            Ok(resp) => resp,
            Err(attempt) => return attempt,
        };
        self.outcome.first_byte = Some(self.started.elapsed());
        if resp.status == 101 {
            // Boxed: a tunnel's state is the largest of an attempt's, and
            // every connection's task would carry its size for a rare upgrade.
            return Box::pin(self.tunnel(backend, up, carry, down, resp)).await;
        }
        if down.body_from_head(&resp).is_err() {
            return Attempt::BadResponse(Reject("malformed chunked response"));
        }
        let streamed = self.response_body(&mut backend, up, carry, &mut down);
        if let Err(attempt) = streamed.await {
            return attempt;
        }
        self.outcome.bytes_out = down.bytes_out;
        let Writing::Done { in_step } = down.state else {
            // Cut mid-response: the client sees the connection close.
            return Attempt::Answered {
                status: resp.status,
                keep_client: false,
            };
        };
        if !in_step {
            backends.stray_bytes(slot);
        }
        let whole = up.state == Reading::Done;
        if resp.backend_keeps && in_step && whole {
            backends.keep(slot, backend);
        }
        Attempt::Answered {
            status: resp.status,
            keep_client: resp.keep_client && whole,
        }
    }

    /// Writing: Head. Read the response head (passing 1xx answers on)
    /// while the request body goes up.
    async fn response_head<B: Stream>(
        &mut self,
        slot: &Slot,
        backend: &mut B,
        up: &mut Upload,
        carry: &mut Buf,
        down: &mut Download,
    ) -> Result<framing::Response, Attempt> {
        let (cfg, req) = (self.cfg, self.req);
        let name = cfg.backend_header.then_some(slot.name.as_bytes());
        let closing = self.roster.handover.is_cancelled();
        let (mut br, mut bw) = backend.halves();
        let (mut cr, mut cw) = self.client.halves();
        // Runs once the request is in (from the start if the backend stops
        // taking it).
        let timer = tokio::time::sleep(cfg.response_timeout);
        tokio::pin!(timer);
        // A backend that leaves rotation while this request waits for its
        // answer is given up on when the request may go elsewhere: a host
        // cut off from the network answers nothing, not even a reset.
        let gone = slot.out_of_rotation();
        tokio::pin!(gone);
        loop {
            let can_keep = up.state == Reading::Done && !closing;
            let untouched = !up.consumed && down.rbuf.is_empty() && down.bytes_out == 0;
            tokio::select! {
                r = up.step(&mut cr, &mut bw, carry, cfg.idle_timeout), if up.is_busy() => match r {
                    // Reading: Body -> Done
                    Ok(()) if up.state == Reading::Done => {
                        timer.as_mut().reset(Instant::now() + cfg.response_timeout);
                    }
                    // Reading: Body -> Refused; the backend may still answer (e.g. 413).
                    Ok(()) | Err(UploadError::Backend) => {}
                    Err(UploadError::Client) => return Err(Attempt::ClientGone),
                    Err(UploadError::Bad(why)) => return Err(Attempt::BadBody(why)),
                },
                r = read_response_head(&mut br, &mut down.rbuf, &req, can_keep, name, &mut down.out) => match r {
                    // Writing: Head -> Head. 1xx interim answers go to an
                    // HTTP/1.1 client as they are; an HTTP/1.0 one has none
                    // (RFC 9110 §15.2).
                    Ok(resp) if (100..200).contains(&resp.status) && resp.status != 101 => {
                        if !req.http10 {
                            if cw.write_all(&down.rbuf[..resp.head_len]).await.is_err() {
                                return Err(Attempt::ClientGone);
                            }
                            down.bytes_out += resp.head_len as u64;
                        }
                        down.rbuf.drain(..resp.head_len);
                    }
                    Ok(resp) => return Ok(resp),
                    Err(HeadRead::Failed(why)) => {
                        // Judged now: part of a head may have come before the close.
                        let replayable = !up.consumed && down.rbuf.is_empty() && down.bytes_out == 0;
                        return Err(Attempt::Failed { why, replayable, written: true });
                    }
                    Err(HeadRead::Bad(why)) => return Err(Attempt::BadResponse(why)),
                },
                _ = &mut timer, if !up.is_busy() => return Err(Attempt::TimedOut),
                () = &mut gone, if req.idempotent && untouched => return Err(Attempt::LeftRotation),
            }
        }
    }

    /// Writing: Body -> Done. The response body to the client, while the
    /// request body may still go up. `Ok` with `down` still in `Body`: the
    /// response was cut (either side failed or went quiet).
    async fn response_body<B: Stream>(
        &mut self,
        backend: &mut B,
        up: &mut Upload,
        carry: &mut Buf,
        down: &mut Download,
    ) -> Result<(), Attempt> {
        let idle = self.cfg.idle_timeout;
        let (mut br, mut bw) = backend.halves();
        let (mut cr, mut cw) = self.client.halves();
        while matches!(down.state, Writing::Body { .. }) {
            tokio::select! {
                r = down.step(&mut br, &mut cw, idle) => if r.is_err() {
                    return Ok(());
                },
                r = up.step(&mut cr, &mut bw, carry, idle), if up.is_busy() => match r {
                    Ok(()) | Err(UploadError::Backend) => {}
                    Err(UploadError::Client | UploadError::Bad(_)) => return Err(Attempt::ClientGone),
                },
            }
        }
        Ok(())
    }

    /// Writing: Head -> Tunnel. After a 101, bytes both ways until both
    /// sides close or nothing moves for `idle_timeout`.
    async fn tunnel<B: Stream>(
        &mut self,
        mut backend: B,
        up: &Upload,
        carry: &mut Buf,
        mut down: Download,
        resp: framing::Response,
    ) -> Attempt {
        if !self.req.upgrade || up.state != Reading::Done {
            return Attempt::BadResponse(Reject("101 to a request that did not ask to upgrade"));
        }
        down.state = Writing::Tunnel;
        let Download { rbuf, mut out, .. } = down;
        out.extend_from_slice(&rbuf[resp.head_len..]);
        drop(rbuf);
        if self.client.write_all(&out).await.is_err() {
            return Attempt::ClientGone;
        }
        self.outcome.bytes_out = down.bytes_out + out.len() as u64;
        drop(out);
        // Whatever the client sent after its head belongs to the tunnel.
        if carry.is_empty() || backend.write_all(carry).await.is_ok() {
            *carry = Buf::none();
            tunnel(self.client, &mut backend, self.cfg.idle_timeout).await;
        }
        *carry = Buf::none();
        Attempt::Answered {
            status: 101,
            keep_client: false,
        }
    }
}

/// Bytes both ways until both sides close or nothing moves for `idle`.
async fn tunnel<C: Stream, B: Stream>(client: &mut C, backend: &mut B, idle: Duration) {
    let activity = Activity::new();
    let mut c = Tracked::new(client, &activity);
    let mut b = Tracked::new(backend, &activity);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut c, &mut b) => {}
        _ = activity.idle_for(idle) => {}
    }
}

/// The request side's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Body bytes still to come from the client (`Body` knows how many).
    Body(Body),
    /// The whole request reached the backend.
    Done,
    /// The backend stopped taking it.
    Refused,
}

/// Why the request body stopped moving.
enum UploadError {
    Client,
    Backend,
    Bad(Reject),
}

/// The request body on its way up, one read or one write per `step`.
struct Upload {
    state: Reading,
    /// Body bytes read from the client; `buf[at..]` not yet sent.
    buf: Buf,
    at: usize,
    /// Body bytes were read beyond the head's buffer: the request can no
    /// longer be sent again.
    consumed: bool,
    /// Body bytes sent to the backend.
    sent: u64,
}

impl Upload {
    fn new(body: Body) -> Self {
        Upload {
            state: if body.is_done() {
                Reading::Done
            } else {
                Reading::Body(body)
            },
            buf: Buf::none(),
            at: 0,
            consumed: false,
            sent: 0,
        }
    }

    fn is_busy(&self) -> bool {
        matches!(self.state, Reading::Body(_))
    }

    /// One read from the client or one write to the backend. Cancel-safe:
    /// progress lives in `self`. Bytes after the body's end (the next
    /// request) go to `carry`.
    async fn step<R, W>(
        &mut self,
        client: &mut R,
        backend: &mut W,
        carry: &mut Buf,
        idle: Duration,
    ) -> Result<(), UploadError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let Reading::Body(body) = &mut self.state else {
            return Ok(());
        };
        if self.at < self.buf.len() {
            match timeout(idle, backend.write(&self.buf[self.at..])).await {
                Ok(Ok(n)) if n > 0 => {
                    self.at += n;
                    self.sent += n as u64;
                }
                _ => {
                    self.state = Reading::Refused;
                    return Err(UploadError::Backend);
                }
            }
            if self.at == self.buf.len() && body.is_done() {
                self.state = Reading::Done;
            }
            return Ok(());
        }
        if self.buf.capacity() == 0 {
            self.buf = Buf::large();
        }
        self.buf.clear();
        self.at = 0;
        match timeout(idle, client.read_buf(&mut *self.buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Err(UploadError::Client),
        }
        self.consumed = true;
        let used = body.feed(&self.buf).map_err(UploadError::Bad)?;
        if used < self.buf.len() && carry.capacity() == 0 {
            *carry = Buf::small();
        }
        carry.extend_from_slice(&self.buf[used..]);
        self.buf.truncate(used);
        if used == 0 && body.is_done() {
            self.state = Reading::Done;
        }
        Ok(())
    }
}

/// The response side's state.
#[derive(Debug)]
enum Writing {
    /// Waiting for the response head.
    Head,
    /// The body to the client; `in_step`: no byte came after its end.
    Body {
        body: Body,
        dechunk: bool,
        in_step: bool,
    },
    /// After a 101: bytes both ways.
    Tunnel,
    Done {
        in_step: bool,
    },
}

/// The response on its way down, one read or one write per `step`.
struct Download {
    state: Writing,
    /// Bytes read from the backend: the head, then (de-chunked bodies only)
    /// the raw body.
    rbuf: Buf,
    /// Bytes for the client, `out[at..]` not yet written: the head with the
    /// body's first part (one write), then each part.
    out: Buf,
    at: usize,
    /// Bytes written to the client.
    bytes_out: u64,
}

impl Download {
    fn new() -> Self {
        Download {
            state: Writing::Head,
            // Both taken when the response's first bytes arrive, so a
            // request waiting for its backend holds neither.
            rbuf: Buf::none(),
            out: Buf::none(),
            at: 0,
            bytes_out: 0,
        }
    }

    /// Writing: Head -> Body, with the body bytes that came with the head
    /// (de-chunked for an HTTP/1.0 client) after it in `out`.
    fn body_from_head(&mut self, resp: &framing::Response) -> Result<(), Reject> {
        let mut body = Body::new(resp.body);
        let in_buf = &self.rbuf[resp.head_len..];
        let out = &mut *self.out;
        let first = if resp.dechunk {
            body.feed_decoded(in_buf, out)?
        } else {
            let n = body.feed(in_buf)?;
            out.extend_from_slice(&in_buf[..n]);
            n
        };
        let in_step = first == in_buf.len();
        // The head's buffer is needed again only to de-chunk.
        self.rbuf = Buf::none();
        self.state = Writing::Body {
            body,
            dechunk: resp.dechunk,
            in_step,
        };
        Ok(())
    }

    /// One write to the client or one read from the backend. Cancel-safe:
    /// progress lives in `self`. `Err`: the response was cut.
    async fn step<R, W>(
        &mut self,
        backend: &mut R,
        client: &mut W,
        idle: Duration,
    ) -> Result<(), ()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let Writing::Body {
            body,
            dechunk,
            in_step,
        } = &mut self.state
        else {
            return Ok(());
        };
        if self.at < self.out.len() {
            let n = match timeout(idle, client.write(&self.out[self.at..])).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => return Err(()),
            };
            self.at += n;
            self.bytes_out += n as u64;
            if self.at == self.out.len() {
                self.at = 0;
                self.out.clear();
                if body.is_done() {
                    self.state = Writing::Done { in_step: *in_step };
                }
            }
            return Ok(());
        }
        if body.is_done() {
            self.state = Writing::Done { in_step: *in_step };
            return Ok(());
        }
        if self.out.capacity() < buffers::LARGE {
            self.out = Buf::large();
        }
        // De-chunked: read raw bytes apart and decode into `out`; else read
        // into `out` itself and keep the body's part of it.
        let read_into = if *dechunk {
            if self.rbuf.capacity() < buffers::LARGE {
                self.rbuf = Buf::large();
            }
            self.rbuf.clear();
            &mut *self.rbuf
        } else {
            &mut *self.out
        };
        let n = match timeout(idle, backend.read_buf(read_into)).await {
            Ok(Ok(0)) if body.at_eof() => {
                self.state = Writing::Done { in_step: *in_step };
                return Ok(());
            }
            Ok(Ok(n)) if n > 0 => n,
            _ => return Err(()),
        };
        let used = if *dechunk {
            body.feed_decoded(&self.rbuf[..n], &mut self.out)
                .map_err(|_| ())?
        } else {
            let used = body.feed(&self.out[..n]).map_err(|_| ())?;
            self.out.truncate(used);
            used
        };
        if used < n {
            *in_step = false;
        }
        Ok(())
    }
}

fn done_in_time(r: Result<std::io::Result<()>, tokio::time::error::Elapsed>) -> bool {
    matches!(r, Ok(Ok(())))
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
    buf: &mut Buf,
    req: &Request,
    can_keep: bool,
    name: Option<&[u8]>,
    out: &mut Buf,
) -> Result<framing::Response, HeadRead> {
    if buf.capacity() == 0 {
        // Nothing read yet: the buffers are taken once bytes are there.
        match buffers::take_and_read(backend, Buf::small).await {
            Ok(first) if first.is_empty() => {
                return Err(HeadRead::Failed("closed before answering"));
            }
            Ok(first) => *buf = first,
            Err(_) => return Err(HeadRead::Failed("reset before answering")),
        }
        *out = Buf::small();
    }
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
        let room = buffers::SMALL.min(MAX_RESPONSE_HEAD - buf.len());
        buf.reserve(room);
        match backend.read_buf(&mut **buf).await {
            Ok(0) => return Err(HeadRead::Failed("closed before answering")),
            Err(_) => return Err(HeadRead::Failed("reset before answering")),
            Ok(_) => {}
        }
    }
}
