//! The load generator: exactly `n` GET requests at a fixed concurrency, the way
//! ApacheBench sends them, measured without sharing anything hot between threads.
//!
//! # Why it is shaped like this
//! - **One current-thread tokio runtime per OS thread** (wrk's model), each
//!   owning its connections, its latency histogram and its counters, merged only
//!   at the end of a level. The generator shares 2 cores with the fleet it
//!   measures, so it must not pay for work stealing or cross-thread wakeups.
//!   The only shared state on the hot path is [`Budget`] (one atomic add per
//!   request) and the progress counter.
//! - **Exactly `n` requests.** The `concurrency` connection tasks are spread
//!   over the threads with [`split`], and every task claims requests one at a
//!   time from the level's [`Budget`] until it is spent. That keeps
//!   `concurrency` requests in flight until fewer than that remain, which is
//!   what ab does, and it can never send one request too many or too few.
//! - **ab's wire behaviour.** Without keep-alive every request is a new TCP
//!   connection carrying an HTTP/1.0 `GET` with no `Connection` header, as ab
//!   sends it, so the server answers the same bytes to both tools; with
//!   keep-alive it is HTTP/1.1 on one connection per task (reconnecting after
//!   an error). Bytes are counted as they come off the socket (status line,
//!   headers and body), which is what ab's "Total transferred" counts.
//! - **ab's counting.** A request is *complete* when a whole response arrived,
//!   whatever its status; it is *failed* when the connection could not be made,
//!   broke, or the response did not finish within the timeout. Non-2xx answers
//!   are complete and counted separately (ab's "Non-2xx responses"), so a table
//!   of 404s (the lab's mistake) cannot pass for a table of pages.
//! - A latency is measured from the start of the connect (or, with
//!   keep-alive, of the request) to the last body byte, in microseconds, and
//!   only for complete requests.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper::header::{ACCEPT, HOST, HeaderValue, USER_AGENT};
use hyper::{Method, Request, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Highest latency the histograms track (one hour, in microseconds); longer
/// ones saturate. The per-request timeout is far below it.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// The `User-Agent` of every request.
const USER_AGENT_VALUE: &str = concat!("fleet-bench/", env!("CARGO_PKG_VERSION"));
/// Longest response head the one-shot path accepts (hyper's client default
/// read buffer limit is about this).
const MAX_HEAD: usize = 400 * 1024;
/// Most headers in one response (hyper's client default).
const MAX_HEADERS: usize = 100;
/// Bytes asked for per read on the one-shot path.
const READ_CHUNK: usize = 16 * 1024;
/// Distinct error messages kept per level; more are folded into "other".
const MAX_ERROR_KINDS: usize = 8;

/// What to load: resolved once, before any level runs.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as the user wrote it (for messages and the report).
    pub url: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// The `Host` header: the URL's authority.
    pub host: String,
    /// The request target: path and query, at least `/`.
    pub path: String,
}

/// How to load it.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub keepalive: bool,
    /// A request not complete after this long is failed.
    pub timeout: Duration,
    /// OS threads (each with its own runtime); at most `concurrency` are used.
    pub threads: usize,
}

/// Raw measurements of one level; `report::Row` derives the table from it.
#[derive(Debug)]
pub struct Measured {
    pub concurrency: u32,
    /// Requests that finished, complete or failed (`n` unless interrupted).
    pub finished: u64,
    pub complete: u64,
    pub failed: u64,
    pub non_2xx: u64,
    /// Bytes received: status lines, headers and bodies.
    pub bytes: u64,
    /// From the first connect to the last response.
    pub elapsed: Duration,
    /// Latency of complete requests, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Failure (and first non-2xx status) descriptions with their counts.
    pub errors: BTreeMap<String, u64>,
    /// Ctrl-C stopped the level before `n` requests finished.
    pub interrupted: bool,
}

/// Split `total` into `parts` shares that differ by at most one and add up to
/// `total` exactly (the first `total % parts` shares get the extra one).
pub fn split(total: u64, parts: u64) -> Vec<u64> {
    if parts == 0 {
        return Vec::new();
    }
    let (base, extra) = (total / parts, total % parts);
    (0..parts).map(|i| base + u64::from(i < extra)).collect()
}

/// The requests of one level, handed out one at a time to whichever task is
/// free: exactly `n` claims succeed, however many threads ask.
#[derive(Debug)]
pub struct Budget {
    n: u64,
    next: AtomicU64,
}

impl Budget {
    pub fn new(n: u64) -> Self {
        Budget {
            n,
            next: AtomicU64::new(0),
        }
    }
    /// Take one request; false once all `n` are taken.
    pub fn claim(&self) -> bool {
        // Relaxed: the counter orders nothing but itself, and fetch_add on one
        // atomic is totally ordered, so exactly n callers see a value below n.
        self.next.fetch_add(1, Ordering::Relaxed) < self.n
    }
}

/// Run one level: `n` requests, `concurrency` at a time. `progress` counts
/// finished requests (for the progress bar); `cancel` stops the level early.
pub fn run_level(
    target: &Arc<Target>,
    n: u64,
    concurrency: u32,
    opts: Options,
    cancel: &CancellationToken,
    progress: &Arc<AtomicU64>,
    mut on_tick: impl FnMut(),
) -> std::io::Result<Measured> {
    let budget = Arc::new(Budget::new(n));
    let threads = (opts.threads.max(1) as u64).min(u64::from(concurrency.max(1)));
    let shares: Vec<u64> = split(u64::from(concurrency), threads)
        .into_iter()
        .filter(|&c| c > 0)
        .collect();
    // Each thread starts its clock once its runtime is built, and the level
    // spans from the earliest start to the latest end, so thread start-up is
    // not measured. (No barrier: a thread that fails to spawn must not leave
    // the others waiting.)
    let (tx, rx) = mpsc::channel::<std::io::Result<ThreadStats>>();
    let mut handles = Vec::with_capacity(shares.len());
    for (i, conns) in shares.iter().copied().enumerate() {
        let (target, budget, stop, progress, tx) = (
            Arc::clone(target),
            Arc::clone(&budget),
            cancel.clone(),
            Arc::clone(progress),
            tx.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("bench-{i}"))
            .spawn(move || {
                let r = thread_main(&target, conns, &budget, opts, &stop, &progress);
                // The receiver outlives every sender; a failed send means the
                // main thread is gone and nobody wants the result.
                let _ = tx.send(r);
            });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                // The run ends with this error: stop the threads already going.
                cancel.cancel();
                for h in handles {
                    let _ = h.join();
                }
                return Err(e);
            }
        }
    }
    drop(tx);
    let mut parts = Vec::with_capacity(shares.len());
    let mut first_err = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(s)) => parts.push(s),
            Ok(Err(e)) => {
                // A thread could not build its runtime: stop the others.
                cancel.cancel();
                first_err.get_or_insert(e);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => on_tick(),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    for h in handles {
        // A panicking thread already reported nothing; its absence shows as
        // missing requests, which `finished < n` makes visible.
        let _ = h.join();
    }
    on_tick();
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(merge(concurrency, n, parts, cancel.is_cancelled()))
}

/// One thread's share of a level.
#[derive(Debug)]
struct ThreadStats {
    start: Instant,
    end: Instant,
    complete: u64,
    failed: u64,
    non_2xx: u64,
    bytes: u64,
    latency_us: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant bounds are valid")
}

fn merge(concurrency: u32, n: u64, parts: Vec<ThreadStats>, cancelled: bool) -> Measured {
    let mut m = Measured {
        concurrency,
        finished: 0,
        complete: 0,
        failed: 0,
        non_2xx: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
        latency_us: new_histogram(),
        errors: BTreeMap::new(),
        interrupted: false,
    };
    let start = parts.iter().map(|p| p.start).min();
    let end = parts.iter().map(|p| p.end).max();
    if let (Some(s), Some(e)) = (start, end) {
        m.elapsed = e.saturating_duration_since(s);
    }
    for p in parts {
        m.complete += p.complete;
        m.failed += p.failed;
        m.non_2xx += p.non_2xx;
        m.bytes += p.bytes;
        m.latency_us
            .add(&p.latency_us)
            .expect("histograms share their bounds");
        for (k, v) in p.errors {
            add_error(&mut m.errors, k, v);
        }
    }
    m.finished = m.complete + m.failed;
    m.interrupted = cancelled && m.finished < n;
    m
}

fn add_error(errors: &mut BTreeMap<String, u64>, kind: String, count: u64) {
    if errors.len() >= MAX_ERROR_KINDS && !errors.contains_key(&kind) {
        *errors.entry("other errors".into()).or_default() += count;
    } else {
        *errors.entry(kind).or_default() += count;
    }
}

/// Per-thread accumulators, shared by the thread's tasks (one thread, so
/// `Cell`/`RefCell`; no borrow is held across an await).
struct Shared {
    complete: Cell<u64>,
    failed: Cell<u64>,
    non_2xx: Cell<u64>,
    /// Bytes read from every socket of this thread.
    bytes: Rc<Cell<u64>>,
    latency_us: RefCell<Histogram<u64>>,
    errors: RefCell<BTreeMap<String, u64>>,
    end: Cell<Instant>,
    template: Template,
}

fn thread_main(
    target: &Arc<Target>,
    conns: u64,
    budget: &Arc<Budget>,
    opts: Options,
    cancel: &CancellationToken,
    progress: &Arc<AtomicU64>,
) -> std::io::Result<ThreadStats> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let template = Template::new(target)?;
    let start = Instant::now();
    let shared = Rc::new(Shared {
        complete: Cell::new(0),
        failed: Cell::new(0),
        non_2xx: Cell::new(0),
        bytes: Rc::new(Cell::new(0)),
        latency_us: RefCell::new(new_histogram()),
        errors: RefCell::new(BTreeMap::new()),
        end: Cell::new(start),
        template,
    });
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..conns {
            let (target, budget, cancel, progress, shared) = (
                Arc::clone(target),
                Arc::clone(budget),
                cancel.clone(),
                Arc::clone(progress),
                Rc::clone(&shared),
            );
            tasks.spawn_local(async move {
                connection_task(&target, &budget, opts, &cancel, &progress, &shared).await;
            });
        }
        while tasks.join_next().await.is_some() {}
    });
    // Everything that borrowed `shared` ran inside the LocalSet, now finished.
    drop(local);
    drop(rt);
    let latency_us = shared.latency_us.replace(new_histogram());
    let errors = shared.errors.take();
    Ok(ThreadStats {
        start,
        end: shared.end.get(),
        complete: shared.complete.get(),
        failed: shared.failed.get(),
        non_2xx: shared.non_2xx.get(),
        bytes: shared.bytes.get(),
        latency_us,
        errors,
    })
}

/// Why a request failed (ab's Connect / Receive / Exceptions, plus timeouts).
#[derive(Debug)]
enum Failure {
    Connect(std::io::Error),
    Http(hyper::Error),
    /// The raw one-shot path: the socket broke or the response was malformed
    /// or cut short.
    Receive(String),
    Timeout(Duration),
}

impl Failure {
    fn describe(&self) -> String {
        match self {
            Failure::Connect(e) => format!("connect: {e}"),
            Failure::Http(e) => {
                let mut s = format!("receive: {e}");
                if let Some(src) = std::error::Error::source(e) {
                    s.push_str(&format!(": {src}"));
                }
                s
            }
            Failure::Receive(e) => format!("receive: {e}"),
            Failure::Timeout(t) => format!("timeout: no complete response within {t:?}"),
        }
    }
}

/// One concurrent client: claims requests until the budget is spent.
async fn connection_task(
    target: &Target,
    budget: &Budget,
    opts: Options,
    cancel: &CancellationToken,
    progress: &AtomicU64,
    shared: &Shared,
) {
    // With keep-alive: the open connection, reused until it fails.
    let mut conn: Option<http1::SendRequest<Empty<Bytes>>> = None;
    let tpl = &shared.template;
    // Without keep-alive: the response buffer, reused for every request.
    let mut buf: Vec<u8> = Vec::new();
    while budget.claim() {
        let began = Instant::now();
        let attempt = async {
            if opts.keepalive {
                keepalive_request(target, tpl, &mut conn, &shared.bytes).await
            } else {
                one_shot_request(target, tpl, &mut buf, &shared.bytes).await
            }
        };
        let outcome = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            r = tokio::time::timeout(opts.timeout, attempt) => r,
        };
        let now = Instant::now();
        match outcome {
            Ok(Ok(status)) => {
                shared.complete.set(shared.complete.get() + 1);
                if !status.is_success() {
                    shared.non_2xx.set(shared.non_2xx.get() + 1);
                    let mut errors = shared.errors.borrow_mut();
                    let key = format!("non-2xx: {status}");
                    if errors.contains_key(&key) || errors.len() < MAX_ERROR_KINDS {
                        *errors.entry(key).or_default() += 1;
                    }
                }
                let us = now.saturating_duration_since(began).as_micros();
                shared
                    .latency_us
                    .borrow_mut()
                    .saturating_record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
            }
            Ok(Err(f)) => fail(shared, &f, &mut conn),
            Err(_) => fail(shared, &Failure::Timeout(opts.timeout), &mut conn),
        }
        shared.end.set(now);
        progress.fetch_add(1, Ordering::Relaxed);
    }
}

fn fail(shared: &Shared, f: &Failure, conn: &mut Option<http1::SendRequest<Empty<Bytes>>>) {
    shared.failed.set(shared.failed.get() + 1);
    add_error(&mut shared.errors.borrow_mut(), f.describe(), 1);
    // A connection that failed (or timed out mid-response) is not reused.
    *conn = None;
}

/// The request every task sends, built once per thread: cloning a parsed
/// URI and header map is cheaper than parsing them again per request.
struct Template {
    uri: hyper::Uri,
    headers: hyper::HeaderMap,
    /// The whole HTTP/1.0 request of the one-shot path, as ab writes it.
    one_shot: Vec<u8>,
}

impl Template {
    fn new(target: &Target) -> std::io::Result<Template> {
        let invalid = |what: &str| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{what} of {} cannot be sent", target.url),
            )
        };
        let uri = target
            .path
            .parse::<hyper::Uri>()
            .map_err(|_| invalid("the path"))?;
        let mut headers = hyper::HeaderMap::with_capacity(3);
        headers.insert(
            HOST,
            HeaderValue::from_str(&target.host).map_err(|_| invalid("the host"))?,
        );
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        // Same header values as the hyper path, checked above (no CR/LF can
        // sneak in: `HeaderValue` and `Uri` reject them).
        let one_shot = format!(
            "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: {}\r\nAccept: */*\r\n\r\n",
            uri, target.host, USER_AGENT_VALUE
        )
        .into_bytes();
        Ok(Template {
            uri,
            headers,
            one_shot,
        })
    }

    fn request(&self, version: Version) -> Request<Empty<Bytes>> {
        let mut req = Request::new(Empty::new());
        *req.method_mut() = Method::GET;
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

async fn connect(
    target: &Target,
    bytes: &Rc<Cell<u64>>,
) -> Result<TokioIo<Counted<TcpStream>>, Failure> {
    let stream = TcpStream::connect(target.addr)
        .await
        .map_err(Failure::Connect)?;
    // Requests are one small write; no reason to let Nagle hold one back.
    let _ = stream.set_nodelay(true);
    Ok(TokioIo::new(Counted {
        inner: stream,
        read: Rc::clone(bytes),
    }))
}

/// Read a response body to its end, discarding it (the bytes are counted by
/// the socket wrapper).
async fn drain(resp: hyper::Response<hyper::body::Incoming>) -> Result<hyper::StatusCode, Failure> {
    let status = resp.status();
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        frame.map_err(Failure::Http)?;
    }
    Ok(status)
}

/// ab's request: a new connection, HTTP/1.0, no keep-alive.
///
/// Not through hyper: a client connection per request (its buffers, dispatch
/// channel and header map) cost more CPU than the request itself, and that
/// CPU is taken from the server being measured. This writes the prebuilt
/// request in one write, parses the head with `httparse` and reads the body
/// by `Content-Length`, by chunks, or to EOF, in a buffer the task reuses.
/// Every byte read from the socket is counted, as the hyper path does.
async fn one_shot_request(
    target: &Target,
    tpl: &Template,
    buf: &mut Vec<u8>,
    bytes: &Rc<Cell<u64>>,
) -> Result<hyper::StatusCode, Failure> {
    let mut stream = TcpStream::connect(target.addr)
        .await
        .map_err(Failure::Connect)?;
    // No TCP_NODELAY (one syscall less): the request is the connection's
    // only write, and Nagle holds a write back only while earlier data is
    // unacknowledged.
    stream
        .write_all(&tpl.one_shot)
        .await
        .map_err(|e| Failure::Receive(format!("write: {e}")))?;
    buf.clear();
    let mut sock = RawConn {
        stream,
        bytes,
        eof: false,
    };
    // The head (skipping any 1xx interim responses, as hyper does).
    let (status, framing, head_len) = loop {
        match parse_head(buf)? {
            Some((status, _, head_len)) if (100..200).contains(&status) && status != 101 => {
                buf.drain(..head_len);
            }
            Some(head) => break head,
            None => {
                if buf.len() >= MAX_HEAD {
                    return Err(Failure::Receive("message head is too large".into()));
                }
                if !sock.read(buf).await? {
                    return Err(Failure::Receive(
                        "connection closed before message completed".into(),
                    ));
                }
            }
        }
    };
    let code = hyper::StatusCode::from_u16(status)
        .map_err(|_| Failure::Receive(format!("invalid status code {status}")))?;
    buf.drain(..head_len);
    match framing {
        Framing::Length(len) => {
            let mut have = buf.len() as u64;
            while have < len {
                // The body is only counted, never kept.
                buf.clear();
                if !sock.read(buf).await? {
                    return Err(truncated());
                }
                have += buf.len() as u64;
            }
        }
        Framing::Chunked => read_chunked(&mut sock, buf).await?,
        Framing::UntilEof => loop {
            buf.clear();
            if !sock.read(buf).await? {
                break;
            }
        },
    }
    Ok(code)
}

fn truncated() -> Failure {
    Failure::Receive("connection closed before message completed".into())
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilEof,
}

/// Parse a response head at the start of `buf`: status, body framing and the
/// head's length, or `None` if more bytes are needed.
fn parse_head(buf: &[u8]) -> Result<Option<(u16, Framing, usize)>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Failure::Receive(format!("invalid HTTP response: {e}"))),
    };
    let status = resp.code.unwrap_or(0);
    // No body: 1xx, 204 and 304 (RFC 9112 section 6.3).
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Some((status, Framing::Length(0), head_len)));
    }
    let mut length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| Failure::Receive("invalid Content-Length".into()))?;
            if length.is_some_and(|l| l != v) {
                return Err(Failure::Receive("conflicting Content-Length".into()));
            }
            length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            // Chunked only if it is the last coding applied.
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }
    // Transfer-Encoding overrides Content-Length; a final coding other than
    // chunked means the body runs to EOF (RFC 9112 section 6.3).
    let framing = match (transfer_encoding, chunked, length) {
        (true, true, _) => Framing::Chunked,
        (true, false, _) | (false, _, None) => Framing::UntilEof,
        (false, _, Some(l)) => Framing::Length(l),
    };
    Ok(Some((status, framing, head_len)))
}

/// Read a chunked body whose first bytes are in `buf`: chunks, the last
/// (zero) chunk, then trailer lines up to the empty line.
async fn read_chunked(sock: &mut RawConn<'_>, buf: &mut Vec<u8>) -> Result<(), Failure> {
    // Body bytes still to skip in the current chunk, plus its CRLF.
    let mut skip: u64 = 0;
    loop {
        // Skip chunk data already in the buffer.
        if skip > 0 {
            let take = (skip.min(buf.len() as u64)) as usize;
            buf.drain(..take);
            skip -= take as u64;
            if skip > 0 {
                buf.clear();
                if !sock.read(buf).await? {
                    return Err(truncated());
                }
                continue;
            }
        }
        match httparse::parse_chunk_size(buf) {
            Ok(httparse::Status::Complete((used, 0))) => {
                buf.drain(..used);
                break;
            }
            Ok(httparse::Status::Complete((used, size))) => {
                buf.drain(..used);
                skip = size
                    .checked_add(2)
                    .ok_or_else(|| Failure::Receive("invalid chunk size".into()))?;
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() >= MAX_HEAD {
                    return Err(Failure::Receive("invalid chunk size line".into()));
                }
                if !sock.read(buf).await? {
                    return Err(truncated());
                }
            }
            Err(_) => return Err(Failure::Receive("invalid chunk size line".into())),
        }
    }
    // Trailers: header lines ending with an empty line.
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match httparse::parse_headers(buf, &mut headers) {
            Ok(httparse::Status::Complete(_)) => return Ok(()),
            Ok(httparse::Status::Partial) => {
                if buf.len() >= MAX_HEAD {
                    return Err(Failure::Receive("trailers are too large".into()));
                }
                if !sock.read(buf).await? {
                    return Err(truncated());
                }
            }
            Err(e) => return Err(Failure::Receive(format!("invalid trailers: {e}"))),
        }
    }
}

/// The socket of one one-shot request, counting what it reads.
struct RawConn<'a> {
    stream: TcpStream,
    bytes: &'a Rc<Cell<u64>>,
    eof: bool,
}

impl RawConn<'_> {
    /// Append what the socket has to `buf`; false at EOF.
    async fn read(&mut self, buf: &mut Vec<u8>) -> Result<bool, Failure> {
        if self.eof {
            return Ok(false);
        }
        buf.reserve(READ_CHUNK);
        let n = self
            .stream
            .read_buf(buf)
            .await
            .map_err(|e| Failure::Receive(format!("read: {e}")))?;
        self.bytes.set(self.bytes.get() + n as u64);
        if n == 0 {
            self.eof = true;
        }
        Ok(n > 0)
    }
}

/// One request on the task's kept-alive connection (opened if needed).
async fn keepalive_request(
    target: &Target,
    tpl: &Template,
    conn: &mut Option<http1::SendRequest<Empty<Bytes>>>,
    bytes: &Rc<Cell<u64>>,
) -> Result<hyper::StatusCode, Failure> {
    let sender = match conn {
        Some(s) if !s.is_closed() => s,
        _ => {
            let io = connect(target, bytes).await?;
            let (sender, driver) = http1::handshake::<_, Empty<Bytes>>(io)
                .await
                .map_err(Failure::Http)?;
            // The driver ends when the sender is dropped or the peer closes.
            tokio::task::spawn_local(async move {
                let _ = driver.await;
            });
            conn.insert(sender)
        }
    };
    sender.ready().await.map_err(Failure::Http)?;
    let resp = sender
        .send_request(tpl.request(Version::HTTP_11))
        .await
        .map_err(Failure::Http)?;
    drain(resp).await
}

/// A socket that counts the bytes read from it into a per-thread counter.
struct Counted<T> {
    inner: T,
    read: Rc<Cell<u64>>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        self.read.set(self.read.get() + n);
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_adds_up_exactly_and_differs_by_at_most_one() {
        for total in [0u64, 1, 7, 200, 1000, 1001] {
            for parts in [1u64, 2, 3, 7, 25, 1000] {
                let s = split(total, parts);
                assert_eq!(s.len() as u64, parts);
                assert_eq!(s.iter().sum::<u64>(), total, "{total} over {parts}");
                let (min, max) = (s.iter().min().unwrap(), s.iter().max().unwrap());
                assert!(max - min <= 1, "{total} over {parts}: {s:?}");
            }
        }
        assert_eq!(split(10, 4), [3, 3, 2, 2]);
        assert!(split(5, 0).is_empty());
    }

    #[test]
    fn budget_grants_exactly_n_claims_across_threads() {
        let budget = Arc::new(Budget::new(10_000));
        let granted: u64 = (0..4)
            .map(|_| {
                let b = Arc::clone(&budget);
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while b.claim() {
                        n += 1;
                    }
                    n
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(granted, 10_000);
        assert!(!budget.claim());
    }

    #[test]
    fn merge_takes_the_span_from_first_start_to_last_end() {
        let t0 = Instant::now();
        let part = |start_ms: u64, end_ms: u64, complete: u64| ThreadStats {
            start: t0 + Duration::from_millis(start_ms),
            end: t0 + Duration::from_millis(end_ms),
            complete,
            failed: 1,
            non_2xx: 0,
            bytes: 100 * complete,
            latency_us: new_histogram(),
            errors: BTreeMap::from([("connect: refused".to_string(), 1)]),
        };
        let m = merge(4, 20, vec![part(0, 50, 9), part(2, 80, 9)], false);
        assert_eq!(m.elapsed, Duration::from_millis(80));
        assert_eq!(
            (m.complete, m.failed, m.finished, m.bytes),
            (18, 2, 20, 1800)
        );
        assert_eq!(m.errors["connect: refused"], 2);
        assert!(!m.interrupted);
        let cut = merge(4, 100, vec![part(0, 10, 3)], true);
        assert!(cut.interrupted);
    }

    #[test]
    fn parse_head_finds_the_body_framing() {
        let framing = |head: &str| parse_head(head.as_bytes()).unwrap();
        let h = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(framing(h), Some((200, Framing::Length(5), h.len() - 5)));
        let h = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(framing(h).unwrap().1, Framing::Chunked);
        let h = "HTTP/1.0 200 OK\r\nServer: x\r\n\r\n";
        assert_eq!(framing(h).unwrap().1, Framing::UntilEof);
        let h = "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(framing(h).unwrap().1, Framing::Length(0));
        assert_eq!(framing("HTTP/1.1 200 OK\r\nContent-Le"), None);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }

    /// Serve `response` (in two writes, split at `cut`) to one raw request
    /// and return its outcome and the bytes counted.
    fn one_shot_against(response: &'static [u8], cut: usize) -> (Result<u16, String>, u64) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut c, _) = listener.accept().unwrap();
            let mut req = [0u8; 1024];
            let _ = c.read(&mut req).unwrap();
            c.write_all(&response[..cut]).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            c.write_all(&response[cut..]).unwrap();
        });
        let target = Target {
            url: format!("http://{addr}/"),
            addr,
            host: addr.to_string(),
            path: "/".into(),
        };
        let tpl = Template::new(&target).unwrap();
        let bytes = Rc::new(Cell::new(0));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let mut buf = Vec::new();
        let r = rt.block_on(one_shot_request(&target, &tpl, &mut buf, &bytes));
        server.join().unwrap();
        (r.map(|s| s.as_u16()).map_err(|f| f.describe()), bytes.get())
    }

    #[test]
    fn one_shot_reads_every_framing_and_fails_a_truncated_body() {
        let cl: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789";
        assert_eq!(one_shot_against(cl, 20), (Ok(200), cl.len() as u64));
        let chunked: &[u8] = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3\r\nefg\r\n0\r\nX-T: 1\r\n\r\n";
        for cut in [10, 52, 56, 60, chunked.len() - 3] {
            assert_eq!(
                one_shot_against(chunked, cut),
                (Ok(404), chunked.len() as u64),
                "cut {cut}"
            );
        }
        let eof: &[u8] = b"HTTP/1.0 200 OK\r\n\r\nuntil the end";
        assert_eq!(one_shot_against(eof, 5), (Ok(200), eof.len() as u64));
        let interim: &[u8] =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            one_shot_against(interim, 3),
            (Ok(201), interim.len() as u64)
        );
        let short: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234";
        let (r, n) = one_shot_against(short, 3);
        assert!(r.unwrap_err().starts_with("receive:"));
        assert_eq!(n, short.len() as u64);
        let short_chunked: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab";
        assert!(one_shot_against(short_chunked, 3).0.is_err());
    }
}
