//! The built-in worker (`fleet serve`): a static-file HTTP/1.1 server, one per
//! backend port, that the supervisor re-executes from this same binary.
//!
//! # Shape
//! `run` owns the process: it checks the arguments, binds, installs the
//! signal handlers and the lifeline, and drives `serve` on a current-thread
//! runtime. Four workers, the balancer and the load generator share two cores
//! in the lab setup, so one thread per worker is the honest unit (it is also
//! what an nginx worker process is). Measured on the 2-core machine with ab
//! (a new connection per request), `--threads 2` spent 80-100 µs of CPU per
//! request against 62-72 µs for one thread; with keep-alive it reached more
//! requests/s, but only by taking the second core, which in a fleet belongs
//! to the other workers. `serve` takes an already bound listener and a
//! shutdown token, so tests bind port 0 and cancel it themselves (mini-redis
//! style).
//!
//! # Responses
//! - GET and HEAD of a regular file under the root: 200 with `Content-Type`
//!   (by extension; text types say `charset=utf-8`) and `Content-Length`;
//!   HEAD sends the same headers and no body. Query strings are ignored.
//! - A directory asked for with its trailing slash: its `index.html`, or 404.
//!   Without the slash: 301 to the same path with the slash, so relative links
//!   in the index resolve against the directory.
//! - Missing files, dotfiles (any segment starting with `.`), symlinks that
//!   resolve outside the root, FIFOs and devices: 404. Unreadable: 403.
//! - A hostile or malformed target (`..`, encoded `/` or `\`, NUL, overlong or
//!   invalid UTF-8, absolute-form `GET http://host/x`; see `path`): 400.
//!   Absolute-form is refused because the worker is an origin server, never a
//!   proxy, so a request carrying a host in its target is a confused client.
//! - Any other method: 405 with `Allow: GET, HEAD`.
//!
//! All of these carry `X-Fleet-Backend: <port>`. The exceptions are the
//! answers hyper writes itself for a request it cannot parse (400, and 431
//! for an oversized head): the worker's code never sees those requests.
//!
//! # Limits (the `fleet serve` flags)
//! - Request head: `--max-head-bytes` (16 KiB). hyper answers a larger head
//!   with 431 and closes the connection.
//! - Header-read timeout: `--header-timeout` (10 s), hyper's own timer. It
//!   starts when the worker waits for a request head, so it cuts off a client
//!   trickling a head byte by byte, and it also bounds a kept-alive
//!   connection's wait for its next request.
//! - Idle timeout: `--idle-timeout` (5 s): no byte moved either way for that
//!   long and the connection is closed (see `idle`).
//! - Connection cap: `--max-connections` (1024) per worker, a semaphore taken
//!   *before* `accept`. Past the cap the worker simply stops accepting: new
//!   connections wait in the kernel's accept queue (backlog 4096) and are
//!   served, in order, as slots free up; once that queue is full the kernel
//!   drops further SYNs and clients retry. Nothing is refused with an error.
//!
//! # Shutdown
//! SIGTERM or SIGINT cancels the token: `serve` drops the listener (new
//! connections are refused), tells every open connection to finish its
//! current request and close (hyper-util graceful shutdown, which closes idle
//! keep-alive connections at once), waits up to `--drain-timeout`, then
//! aborts what is left and returns; the process exits 0. A second signal
//! exits at once. With `--lifeline`, end-of-file on stdin means the
//! supervisor is gone: the worker shuts down the same way but gives the
//! drain at most `LIFELINE_GRACE`, since the balancer that fed those
//! connections died with the supervisor.
//!
//! # Errors
//! Things a user can cause get one line naming the thing, through `tracing`:
//! a missing www directory (exit 2), a busy port (exit 1). Requests are not
//! logged unless `--access-log` is given.

mod body;
mod files;
mod handler;
pub use handler::HEALTH_PATH;
mod idle;
pub mod path;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::cli::{ServeArgs, exit};
use files::FileCache;
use handler::Shared;
use idle::{Activity, Tracked};

pub use handler::X_FLEET_BACKEND;

/// Smallest `--max-head-bytes`: hyper's read buffer cannot be smaller.
pub const MIN_HEAD_BYTES: usize = 8192;
/// Listen backlog; the kernel caps it at `net.core.somaxconn`. Large, because
/// a backlog overflow silently stalls clients (the lab's `listen(5)` did).
const BACKLOG: u32 = 4096;
/// How long the drain may take once the lifeline is cut.
const LIFELINE_GRACE: Duration = Duration::from_millis(500);
/// Pause after an accept error such as EMFILE, so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Everything `serve` needs besides the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerOptions {
    /// Directory to serve; `serve` canonicalises it once.
    pub www: PathBuf,
    /// Largest request head, in bytes (at least `MIN_HEAD_BYTES`).
    pub max_head_bytes: usize,
    /// Time allowed for a request head to arrive.
    pub header_timeout: Duration,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; more wait in the accept queue.
    pub max_connections: usize,
    /// Bound on the graceful drain after the shutdown token fires.
    pub drain_timeout: Duration,
    /// How long a cached file is trusted without a `stat`.
    pub cache_revalidate: Duration,
    /// Log one line per request.
    pub access_log: bool,
}

impl WorkerOptions {
    /// The `fleet serve` defaults for `www`.
    pub fn new(www: impl Into<PathBuf>) -> Self {
        WorkerOptions {
            www: www.into(),
            max_head_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5),
            max_connections: 1024,
            drain_timeout: Duration::from_secs(5),
            cache_revalidate: Duration::from_secs(1),
            access_log: false,
        }
    }

    /// Validate the flags that clap cannot check alone.
    pub fn from_args(args: &ServeArgs) -> Result<Self, String> {
        if args.max_head_bytes < MIN_HEAD_BYTES {
            return Err(format!(
                "--max-head-bytes must be at least {MIN_HEAD_BYTES} (got {})",
                args.max_head_bytes
            ));
        }
        for (flag, d) in [
            ("--header-timeout", args.header_timeout),
            ("--idle-timeout", args.idle_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("{flag} must be greater than 0"));
            }
        }
        Ok(WorkerOptions {
            www: args.www.clone(),
            max_head_bytes: args.max_head_bytes,
            header_timeout: args.header_timeout,
            idle_timeout: args.idle_timeout,
            max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
            drain_timeout: args.drain_timeout,
            cache_revalidate: args.cache_revalidate,
            access_log: args.access_log,
        })
    }
}

/// Parse a duration flag: `250ms`, `10s`, `1m`, or a bare number of seconds
/// (`1.5`), like `fleet down --timeout`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("'{s}' is not a duration of zero or more seconds"));
    }
    humantime::parse_duration(s).map_err(|e| format!("'{s}' is not a duration such as 10s ({e})"))
}

/// Run `fleet serve` to completion; returns the exit code.
///
/// Logs go to whatever `tracing` subscriber the binary installed. When none
/// is installed (a caller that skipped it), a stderr subscriber is used for
/// the duration of this call only: a scoped default, never a global one.
pub fn run(args: ServeArgs) -> u8 {
    if tracing::dispatcher::has_been_set() {
        return run_logged(args);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&io::stderr()) && !crate::logging::no_color())
        .with_env_filter(filter)
        .finish();
    tracing::subscriber::with_default(subscriber, || run_logged(args))
}

fn run_logged(args: ServeArgs) -> u8 {
    let opts = match WorkerOptions::from_args(&args) {
        Ok(o) => o,
        Err(e) => {
            error!("{e}");
            return exit::USAGE;
        }
    };
    match std::fs::metadata(&args.www) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            error!("www directory {} is not a directory", args.www.display());
            return exit::USAGE;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            error!("www directory {} does not exist", args.www.display());
            return exit::USAGE;
        }
        Err(e) => {
            error!("cannot read www directory {}: {e}", args.www.display());
            return exit::USAGE;
        }
    }
    raise_fd_limit(opts.max_connections);
    let mut builder = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(usize::from(args.threads));
        b
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the async runtime: {e}");
            return exit::FAILURE;
        }
    };
    let code = rt.block_on(run_async(args, opts));
    // Connections still open past the drain were aborted by `serve`; do not
    // let a stuck blocking read (a file on a dead disk) hold the exit.
    rt.shutdown_timeout(Duration::from_millis(100));
    code
}

async fn run_async(args: ServeArgs, opts: WorkerOptions) -> u8 {
    use tokio::signal::unix::{SignalKind, signal};
    // Handlers first: a SIGTERM that arrives right after we report ready
    // must take the graceful path, not the default (die by signal).
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            error!("cannot install signal handlers: {e}");
            return exit::FAILURE;
        }
    };
    let addr = SocketAddr::new(args.bind, args.port);
    let listener = match bind(addr) {
        Ok(l) => l,
        Err(e) => {
            error!("{}", describe_bind_error(addr, &e));
            return exit::FAILURE;
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    let lifeline = CancellationToken::new();
    if args.lifeline {
        watch_lifeline(lifeline.clone());
    }
    let root = std::fs::canonicalize(&opts.www).unwrap_or_else(|_| opts.www.clone());
    info!("listening on {local}, serving {}", root.display());

    let drain = opts.drain_timeout;
    let shutdown = CancellationToken::new();
    let server = serve(listener, opts, shutdown.clone());
    tokio::pin!(server);
    let grace = tokio::select! {
        res = &mut server => return finished(res),
        _ = term.recv() => { info!("SIGTERM: finishing open requests"); drain }
        _ = int.recv() => { info!("SIGINT: finishing open requests"); drain }
        () = lifeline.cancelled() => {
            info!("stdin closed, the supervisor is gone: exiting");
            drain.min(LIFELINE_GRACE)
        }
    };
    shutdown.cancel();
    // `serve` bounds its own drain; this outer bound covers the lifeline's
    // shorter grace and a second signal from an impatient user.
    tokio::select! {
        res = &mut server => finished(res),
        _ = term.recv() => { warn!("second signal: exiting now"); exit::OK }
        _ = int.recv() => { warn!("second signal: exiting now"); exit::OK }
        () = tokio::time::sleep(grace + Duration::from_millis(100)) => exit::OK,
    }
}

fn finished(res: io::Result<()>) -> u8 {
    match res {
        Ok(()) => {
            info!("stopped");
            exit::OK
        }
        Err(e) => {
            error!("worker failed: {e}");
            exit::FAILURE
        }
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Lets a restarted worker bind while old connections sit in TIME_WAIT;
    // on Linux and macOS it does not let two listeners share the port.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

fn describe_bind_error(addr: SocketAddr, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => format!("port {} is already in use", addr.port()),
        io::ErrorKind::AddrNotAvailable => {
            format!("cannot listen on {addr}: no such address on this machine")
        }
        io::ErrorKind::PermissionDenied => {
            format!("cannot listen on {addr}: permission denied")
        }
        _ => format!("cannot listen on {addr}: {e}"),
    }
}

/// Each connection holds a socket; make sure the cap, not the default soft
/// `ulimit -n` of 1024, is what limits us.
fn raise_fd_limit(max_connections: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let want = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(64);
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < want
    {
        let new = want.min(hard);
        if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, new, hard) {
            warn!("cannot raise the open-file limit from {soft} to {new}: {e}");
        }
    }
}

/// Cancel `gone` when stdin reaches end-of-file (or fails): the supervisor
/// holds the pipe's write end, so that happens when it exits, however it
/// exits. A plain thread, not the runtime's blocking pool, because the read
/// never returns while the supervisor lives and must not hold up shutdown.
fn watch_lifeline(gone: CancellationToken) {
    let spawned = std::thread::Builder::new()
        .name("lifeline".into())
        .spawn(move || {
            use std::io::Read;
            let mut stdin = io::stdin().lock();
            let mut buf = [0u8; 64];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            gone.cancel();
        });
    if let Err(e) = spawned {
        warn!("cannot watch stdin for the lifeline: {e}");
    }
}

/// Serve `opts.www` on `listener` until `shutdown` is cancelled, then drain
/// open connections for up to `opts.drain_timeout`. `X-Fleet-Backend` is
/// the listener's port.
pub async fn serve(
    listener: TcpListener,
    opts: WorkerOptions,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let port = listener.local_addr()?.port();
    let shared = Arc::new(Shared {
        cache: FileCache::new(&opts.www, opts.cache_revalidate)?,
        backend: HeaderValue::from(port),
        access_log: opts.access_log,
    });
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        // A client (or the balancer on its behalf) may shut down its write
        // side after the request and still wait for the response.
        .half_close(true)
        .header_read_timeout(opts.header_timeout)
        .max_buf_size(opts.max_head_bytes.max(MIN_HEAD_BYTES));
    let http = Arc::new(http);
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();

    loop {
        // The slot is taken before accepting: past the cap, connections
        // wait in the kernel's queue rather than being accepted and stalled.
        let slot = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                error!("accept on port {port} failed: {e}");
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        // Small responses go out in one segment; do not wait for an ACK.
        let _ = stream.set_nodelay(true);
        while conns.try_join_next().is_some() {}
        conns.spawn(connection(
            stream,
            Arc::clone(&shared),
            Arc::clone(&http),
            graceful.watcher(),
            slot,
            opts.idle_timeout,
            shutdown.clone(),
        ));
    }

    drop(listener);
    let open = graceful.count();
    if open > 0 {
        debug!("draining {open} open connections");
    }
    if tokio::time::timeout(opts.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            "connections still open after {:?}, closing them",
            opts.drain_timeout
        );
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// Errors that concern one connection that never got going, not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

async fn connection(
    stream: TcpStream,
    shared: Arc<Shared>,
    http: Arc<http1::Builder>,
    watcher: Watcher,
    _slot: OwnedSemaphorePermit,
    idle: Duration,
    shutdown: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked::new(stream, Arc::clone(&activity)));
    let service = service_fn(move |req| {
        std::future::ready(Ok::<_, Infallible>(handler::respond(&shared, &req)))
    });
    let conn = watcher.watch(http.serve_connection(io, service));
    tokio::pin!(conn);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            // hyper's graceful shutdown closes idle kept-alive connections,
            // but a connection that never sent a byte looks busy to it and
            // would hold the drain until its header timeout.
            () = shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                if !activity.heard() {
                    return;
                }
            }
            res = &mut conn => {
                if let Err(e) = res {
                    // Client resets, header timeouts, 431s: the client's
                    // problem, not worth a log line by default.
                    debug!("connection ended: {e}");
                }
                return;
            }
            () = tokio::time::sleep_until(activity.idle_at(idle)) => {
                if activity.idle_at(idle) <= tokio::time::Instant::now() {
                    debug!("closing idle connection");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
