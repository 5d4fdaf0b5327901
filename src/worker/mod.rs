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
//! Requests are parsed by the codec the balancer uses (`http1::framing`),
//! with its strictness: what it refuses gets 400, or 501 for a transfer
//! coding or `CONNECT` it does not implement, and the connection closes
//! (`conn` lists the worker's own answers). All of these carry
//! `X-Fleet-Backend: <port>`, refusals included. HTTP/1.1 keep-alive and
//! pipelining; HTTP/1.0 keeps the connection when it asks to.
//!
//! # Limits (the `fleet serve` flags)
//! - Request head: `--max-head-bytes` (16 KiB), and `framing::MAX_HEADERS`
//!   header lines. A larger head gets 431 and the connection closes.
//! - Header-read timeout: `--header-timeout` (10 s). It starts when the
//!   worker waits for a request head, so it cuts off a client trickling a
//!   head byte by byte (408), and it also bounds a kept-alive connection's
//!   wait for its next request (closed without a word).
//! - Idle timeout: `--idle-timeout` (5 s): no byte moved either way for that
//!   long and the connection is closed.
//! - Connection cap: `--max-connections` (1024) per worker, a semaphore taken
//!   *before* `accept`. Past the cap the worker simply stops accepting: new
//!   connections wait in the kernel's accept queue (backlog 4096) and are
//!   served, in order, as slots free up; once that queue is full the kernel
//!   drops further SYNs and clients retry. Nothing is refused with an error.
//!
//! # Shutdown
//! SIGTERM or SIGINT cancels the token: `serve` drops the listener (new
//! connections are refused), tells every open connection to finish its
//! current request and close (idle keep-alive connections, and those that
//! never sent a byte, close at once), waits up to `--drain-timeout`, then
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

mod args;
mod conn;
mod embedded;
mod files;
mod handler;
pub mod path;
mod socket;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

pub(crate) use args::ServeArgs;

use crate::{exit, listener};
use files::FileCache;
use handler::{Content, Shared};

pub(crate) use embedded::STARTER_FILES;

pub(crate) use crate::builtin::{DEFAULT_WWW, Www};
/// Smallest `--max-head-bytes`: RFC 9112 §3 asks servers to take request
/// lines of at least 8000 octets.
pub(crate) const MIN_HEAD_BYTES: usize = 8192;
/// How long the drain may take once the lifeline is cut.
const LIFELINE_GRACE: Duration = Duration::from_millis(500);

/// Why `fleet serve` could not run. Flags and the www directory are the
/// user's to fix (exit 2); the rest are runtime failures (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("--max-head-bytes must be at least {MIN_HEAD_BYTES} (got {0})")]
    HeadLimit(usize),
    #[error("{flag} must be greater than 0")]
    ZeroTimeout { flag: &'static str },
    #[error("www directory {} does not exist", .0.display())]
    NoWww(PathBuf),
    #[error("www directory {} is not a directory", .0.display())]
    WwwNotADirectory(PathBuf),
    #[error("cannot read www directory {}", path.display())]
    ReadWww {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the async runtime")]
    Runtime(#[source] io::Error),
    #[error("cannot install signal handlers")]
    Signals(#[source] io::Error),
    #[error(transparent)]
    Bind(#[from] listener::BindError),
    #[error("worker failed")]
    Serve(#[source] io::Error),
}

impl WorkerError {
    pub fn exit_code(&self) -> u8 {
        match self {
            WorkerError::HeadLimit(_)
            | WorkerError::ZeroTimeout { .. }
            | WorkerError::NoWww(_)
            | WorkerError::WwwNotADirectory(_)
            | WorkerError::ReadWww { .. } => exit::USAGE,
            WorkerError::Runtime(_)
            | WorkerError::Signals(_)
            | WorkerError::Bind(_)
            | WorkerError::Serve(_) => exit::FAILURE,
        }
    }
}

/// Everything `serve` needs besides the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkerOptions {
    /// What to serve; `serve` canonicalises a directory once.
    pub www: Www,
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
    /// The `fleet serve` defaults for `www` (the in-process tests' start).
    #[cfg(test)]
    pub(crate) fn new(www: impl Into<PathBuf>) -> Self {
        WorkerOptions {
            www: Www::Dir(www.into()),
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
    pub(crate) fn from_args(args: &ServeArgs) -> Result<Self, WorkerError> {
        if args.max_head_bytes < MIN_HEAD_BYTES {
            return Err(WorkerError::HeadLimit(args.max_head_bytes));
        }
        for (flag, d) in [
            ("--header-timeout", args.header_timeout),
            ("--idle-timeout", args.idle_timeout),
        ] {
            if d.is_zero() {
                return Err(WorkerError::ZeroTimeout { flag });
            }
        }
        let www = match &args.www {
            _ if args.embedded => Www::Embedded,
            Some(dir) => Www::Dir(dir.clone()),
            None => Www::Dir(PathBuf::from(DEFAULT_WWW)),
        };
        Ok(WorkerOptions {
            www,
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

/// Run `fleet serve` until a signal, the lifeline or a failure ends it.
///
/// Logs go to whatever `tracing` subscriber the binary installed. When none
/// is installed (a caller that skipped it), a stderr subscriber is used for
/// the duration of this call only: a scoped default, never a global one.
pub(crate) fn run(args: ServeArgs) -> Result<(), WorkerError> {
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

fn run_logged(args: ServeArgs) -> Result<(), WorkerError> {
    let mut opts = WorkerOptions::from_args(&args)?;
    if let Www::Dir(dir) = &opts.www {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(WorkerError::WwwNotADirectory(dir.clone())),
            // Runs anywhere: with no --www and no ./www, serve the built-in page.
            Err(e) if e.kind() == io::ErrorKind::NotFound && args.www.is_none() => {
                info!("no www directory here (./{DEFAULT_WWW}): serving the built-in page");
                opts.www = Www::Embedded;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(WorkerError::NoWww(dir.clone()));
            }
            Err(source) => {
                return Err(WorkerError::ReadWww {
                    path: dir.clone(),
                    source,
                });
            }
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
    let rt = builder.enable_all().build().map_err(WorkerError::Runtime)?;
    let result = rt.block_on(run_async(args, opts));
    // Connections still open past the drain were aborted by `serve`; do not
    // let a stuck blocking read (a file on a dead disk) hold the exit.
    rt.shutdown_timeout(Duration::from_millis(100));
    result
}

async fn run_async(args: ServeArgs, opts: WorkerOptions) -> Result<(), WorkerError> {
    use tokio::signal::unix::{SignalKind, signal};
    // Handlers first: a SIGTERM that arrives right after we report ready
    // must take the graceful path, not the default (die by signal).
    let mut term = signal(SignalKind::terminate()).map_err(WorkerError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(WorkerError::Signals)?;
    let addr = SocketAddr::new(args.bind, args.port);
    let listener = listener::bind(addr).map_err(|e| listener::BindError::new(addr, e))?;
    let local = listener.local_addr().unwrap_or(addr);
    let lifeline = CancellationToken::new();
    if args.lifeline {
        watch_lifeline(lifeline.clone());
    }
    match &opts.www {
        Www::Dir(dir) => {
            let root = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
            info!("listening on {local}, serving {}", root.display());
        }
        Www::Embedded => info!("listening on {local}, serving the built-in page"),
    }

    let drain = opts.drain_timeout;
    let shutdown = CancellationToken::new();
    // A task, not part of `block_on`'s future: waking `block_on` writes to
    // the runtime's eventfd, while waking a task on the runtime's own thread
    // only queues it, and the accept loop is woken for most connections.
    let server = tokio::spawn(serve(listener, opts, shutdown.clone()));
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
        _ = term.recv() => { warn!("second signal: exiting now"); Ok(()) }
        _ = int.recv() => { warn!("second signal: exiting now"); Ok(()) }
        () = tokio::time::sleep(grace + Duration::from_millis(100)) => Ok(()),
    }
}

fn finished(res: Result<io::Result<()>, tokio::task::JoinError>) -> Result<(), WorkerError> {
    res.map_err(io::Error::other)
        .and_then(|r| r)
        .map_err(WorkerError::Serve)?;
    info!("stopped");
    Ok(())
}

/// Each connection holds a socket; make sure the cap, not the default soft
/// `ulimit -n` of 1024, is what limits us.
fn raise_fd_limit(max_connections: usize) {
    let want = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(64);
    match crate::fd_limit::raise(want) {
        Ok(have) if have < want => warn!(
            "the open-file limit ({have}) is below --max-connections {max_connections} + 64; expect failed accepts (raise it with `ulimit -n`)"
        ),
        Ok(_) => {}
        Err(e) => warn!("cannot read the open-file limit: {e}"),
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
pub(crate) async fn serve(
    listener: TcpListener,
    opts: WorkerOptions,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let port = listener.local_addr()?.port();
    let nodelay = socket::NoDelay::new(&listener);
    let shared = Arc::new(Shared {
        content: match &opts.www {
            Www::Dir(dir) => Content::Files(FileCache::new(dir, opts.cache_revalidate)?),
            Www::Embedded => Content::Embedded,
        },
        backend_line: Shared::backend_line(port),
        access_log: opts.access_log,
        limits: handler::Limits {
            max_head: opts.max_head_bytes.max(MIN_HEAD_BYTES),
            header_timeout: opts.header_timeout,
            idle: opts.idle_timeout,
        },
    });
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    // Connection tasks are counted, not collected: a `TaskTracker` costs an
    // atomic per connection where a `JoinSet` kept a list entry, a waker
    // wrapper and a reap per accept. Past the drain, `abort` ends them.
    let conns = TaskTracker::new();
    let abort = CancellationToken::new();

    // One waiter for the whole loop rather than a new one per accept.
    let stopped = shutdown.cancelled();
    tokio::pin!(stopped);
    loop {
        // The slot is taken before accepting: past the cap, connections
        // wait in the kernel's queue rather than being accepted and stalled.
        let slot = tokio::select! {
            biased;
            () = &mut stopped => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let Some((stream, _)) = listener::accept(&listener, &shutdown).await else {
            break;
        };
        nodelay.apply(&stream);
        conns.spawn(conn::serve(
            stream,
            Arc::clone(&shared),
            shutdown.clone(),
            abort.clone(),
            slot,
        ));
    }

    drop(listener);
    conns.close();
    let open = conns.len();
    if open > 0 {
        debug!("draining {open} open connections");
    }
    if tokio::time::timeout(opts.drain_timeout, conns.wait())
        .await
        .is_err()
    {
        warn!(
            "connections still open after {:?}, closing them",
            opts.drain_timeout
        );
        abort.cancel();
        conns.wait().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
