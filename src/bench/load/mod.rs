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
//! - The two clients live apart: `one_shot` (a new connection per request,
//!   written and parsed by hand) and `keepalive` (hyper's client on one
//!   connection per task); this module is the driver both report to.
//! - A latency is measured from the start of the connect (or, with
//!   keep-alive, of the request) to the last body byte, in microseconds, and
//!   only for complete requests.

mod keepalive;
mod one_shot;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper::header::{ACCEPT, HOST, HeaderValue, USER_AGENT};
use hyper::{Method, Request, Version};
use tokio_util::sync::CancellationToken;

/// Highest latency the histograms track (one hour, in microseconds); longer
/// ones saturate. The per-request timeout is far below it.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// The `User-Agent` of every request.
const USER_AGENT_VALUE: &str = concat!("fleet-bench/", env!("CARGO_PKG_VERSION"));
/// Distinct error messages kept per level; more are folded into "other".
const MAX_ERROR_KINDS: usize = 8;

/// What to load: resolved once, before any level runs.
#[derive(Debug, Clone)]
pub(crate) struct Target {
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
pub(crate) struct Options {
    pub keepalive: bool,
    /// A request not complete after this long is failed.
    pub timeout: Duration,
    /// OS threads (each with its own runtime); at most `concurrency` are used.
    pub threads: usize,
}

/// Raw measurements of one level; `report::Row` derives the table from it.
#[derive(Debug)]
pub(crate) struct Measured {
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
pub(crate) fn split(total: u64, parts: u64) -> Vec<u64> {
    if parts == 0 {
        return Vec::new();
    }
    let (base, extra) = (total / parts, total % parts);
    (0..parts).map(|i| base + u64::from(i < extra)).collect()
}

/// The requests of one level, handed out one at a time to whichever task is
/// free: exactly `n` claims succeed, however many threads ask.
#[derive(Debug)]
pub(crate) struct Budget {
    n: u64,
    next: AtomicU64,
}

impl Budget {
    pub(crate) fn new(n: u64) -> Self {
        Budget {
            n,
            next: AtomicU64::new(0),
        }
    }
    /// Take one request; false once all `n` are taken.
    pub(crate) fn claim(&self) -> bool {
        // Relaxed: the counter orders nothing but itself, and fetch_add on one
        // atomic is totally ordered, so exactly n callers see a value below n.
        self.next.fetch_add(1, Ordering::Relaxed) < self.n
    }
}

/// Run one level: `n` requests, `concurrency` at a time. `progress` counts
/// finished requests (for the progress bar); `cancel` stops the level early.
pub(crate) fn run_level(
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
                keepalive::request(target, tpl, &mut conn, &shared.bytes).await
            } else {
                one_shot::request(target, tpl, &mut buf, &shared.bytes).await
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
}
