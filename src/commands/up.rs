//! `fleet up`: check everything that can fail before starting anything, then
//! run the supervisor in this process (foreground) or in a re-executed,
//! detached copy of this binary (`-d`).
//!
//! Detached start-up protocol: the parent validates the config and the state
//! dir, then runs `fleet up ... --detached-child` with stdout on a pipe and
//! stderr on `logs/supervisor.log`. The child starts a new session (no
//! terminal, no SIGHUP), runs the same checks and the supervisor, and writes
//! exactly one JSON line to the pipe: ready, degraded, or the error. The
//! parent prints it and exits 0 (running, possibly degraded) or 1 (after
//! waiting for the child to tear everything down: a failed `up` leaves
//! nothing running).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cli::UpArgs;
use crate::config::{self, BackendProgram, Config, ConfigError, Overrides, Www};
use crate::control;
use crate::exit;
use crate::listener::{self, Listening};
use crate::ports::{self, Setting};
use crate::state_dir::{Holder, StateDir, StateError};
use crate::supervisor::{self, Listeners, Options, Readiness, StateFiles, Supervisor};

/// Why `fleet up` did not start a fleet. By the time one is returned,
/// nothing is left running.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot read {}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot read the descriptor limit")]
    FdLimitUnknown(#[source] nix::Error),
    #[error(
        "the open-file limit ({have}) is too low for balancer.max_connections = {max_connections} (needs {want}); \
         lower max_connections in fleet.yaml or raise the limit (ulimit -n)"
    )]
    FdLimit {
        have: u64,
        want: u64,
        max_connections: u32,
    },
    #[error("www directory {} does not exist", .0.display())]
    NoWww(PathBuf),
    /// A port fleet must listen on is taken, privileged, or not this
    /// machine's; the message says which and what to do.
    #[error(transparent)]
    Port(#[from] ports::Unavailable),
    #[error("cannot create control socket {}", path.display())]
    ControlSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot find the fleet executable")]
    Exe(#[source] std::io::Error),
    #[error("cannot install the signal handlers")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Supervisor(#[from] supervisor::SupervisorError),
    #[error("cannot open {}", path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the supervisor")]
    Spawn(#[source] std::io::Error),
    /// The detached supervisor's own report of why it did not start.
    #[error("{0}")]
    Detached(String),
    /// `fleet upgrade`'s new supervisor could not take the fleet over.
    #[error("{0}")]
    TakeOver(String),
    #[error("the supervisor exited during start-up ({status}); see {}", log.display())]
    DiedStarting { status: String, log: PathBuf },
}

impl UpError {
    pub fn exit_code(&self) -> u8 {
        match self {
            UpError::Config(_) => exit::USAGE,
            UpError::Unreadable { .. } => exit::UNREADABLE,
            UpError::State(e) => e.exit_code(),
            _ => exit::FAILURE,
        }
    }
}

/// What the detached child tells its parent, one JSON line.
#[derive(Debug, Serialize, Deserialize)]
struct Report {
    ok: bool,
    pid: u32,
    listen: Option<String>,
    /// Backends that did not come up (port, why); empty when all did.
    #[serde(default)]
    failing: Vec<(u16, String)>,
    error: Option<String>,
}

pub(crate) fn run(args: UpArgs) -> Result<(), UpError> {
    // Without -f, fleet.yaml may be a parent directory's: said once (not
    // again by the detached child), and the state dir goes beside it.
    let file_up = match (&args.file, std::env::current_dir()) {
        (None, Ok(cwd)) => config::find_file(&cwd).map_or(0, |(up, file)| {
            if up > 0 && !args.detached_child {
                eprintln!("fleet: using {}", file.display());
            }
            up
        }),
        _ => 0,
    };
    let config = config::load(&args.overrides())?;
    if config.backend == BackendProgram::Builtin && config.www == Www::Embedded {
        announce_embedded(&args);
    }
    let state = StateDir::new(args.state.for_up(file_up));
    let reporter = if args.detached_child {
        Reporter::Pipe
    } else {
        Reporter::Terminal
    };
    // (The detached child finds the dir its parent created: `Created` is
    // empty there, and the parent undoes it.)
    let created = state
        .create()
        .map_err(UpError::from)
        .inspect_err(|e| reporter.fail(e))?;
    let result = if args.detach && !args.detached_child {
        launch_detached(&state)
    } else {
        if args.detached_child {
            // A session of our own: no controlling terminal, so closing the
            // terminal that ran `up -d` sends us nothing.
            let _ = nix::unistd::setsid();
        }
        // `fleet reload` re-reads the file with these flags, from this directory.
        let reload = std::env::current_dir()
            .ok()
            .map(|cwd| (args.overrides(), cwd));
        start(
            config,
            state.clone(),
            &reporter,
            reload,
            args.take_over.as_deref(),
        )
        .inspect_err(|e| reporter.fail(e))
    };
    // A failed `up` leaves no state dir behind that it created itself,
    // unless the message points into it (a supervisor that died: its log).
    if result
        .as_ref()
        .is_err_and(|e| !matches!(e, UpError::DiedStarting { .. }))
    {
        created.undo(&state.logs());
    }
    result
}

/// Say once, where the user sees it, that the workers serve the built-in page.
fn announce_embedded(args: &UpArgs) {
    let msg = "no www directory: the workers serve fleet's built-in page (/ and /page.html); \
               `fleet init` writes a starter www/ and fleet.yaml";
    if args.detach && !args.detached_child {
        eprintln!("fleet: {msg}");
    } else {
        info!(target: "supervisor", "{msg}");
    }
}

/// Where start-up results go: the terminal, or the detached child's pipe.
enum Reporter {
    Terminal,
    Pipe,
}

impl Reporter {
    fn send(&self, r: &Report) {
        if let Reporter::Pipe = self {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string(r).expect("report serializes")
            );
            let _ = out.flush();
        }
    }

    /// Tell the waiting parent why the start failed (`main` prints it too,
    /// which for the detached child goes to its log).
    fn fail(&self, e: &UpError) {
        self.send(&Report {
            ok: false,
            pid: std::process::id(),
            listen: None,
            failing: Vec::new(),
            error: Some(crate::message::one_line(e)),
        });
    }
}

/// Checks, binds and runs the supervisor until shutdown. By the time an
/// error is returned, nothing is left running.
fn start(
    config: Config,
    state: StateDir,
    reporter: &Reporter,
    reload: Option<(Overrides, PathBuf)>,
    take_over: Option<&std::path::Path>,
) -> Result<(), UpError> {
    crate::logging::attach_supervisor_log(state.supervisor_log());
    // `fleet upgrade`: the lock and the listeners come from the old supervisor.
    let received = take_over
        .map(|socket| {
            supervisor::handover::receive(socket, &state).map_err(|e| {
                UpError::TakeOver(format!(
                    "cannot receive the fleet from {}: {e}",
                    socket.display()
                ))
            })
        })
        .transpose()?;
    let (lock, received) = match received {
        Some((lock, r)) => (lock, Some(r)),
        None => {
            let (lock, stale) = state.lock()?;
            if let Some(note) = stale {
                warn!(target: "supervisor", "{note}");
            }
            (lock, None)
        }
    };
    // From here on, returning drops `lock` (flock released); the pid file is
    // removed by `release` on every path.
    // One thread for the control plane (backend tasks, probes, the control
    // socket, admin): the data plane runs on engine threads of its own
    // (`balancer::run`), so nothing here is on a request's path, and one
    // thread never wakes another (nor holds a second worker's memory).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            lock.release();
            return Err(UpError::Runtime(e));
        }
    };
    // Sockets are registered with the runtime as they are bound; nothing runs yet.
    let entered = runtime.enter();
    let mut received = received;
    let checked = (|| {
        raise_fd_limit(config.balancer.max_connections)?;
        if config.backend == BackendProgram::Builtin
            && let Www::Dir(dir) = &config.www
            && !dir.is_dir()
        {
            return Err(UpError::NoWww(dir.clone()));
        }
        if let Some(r) = received.take() {
            return Ok((
                Listening::adopt(r.balancers).map_err(UpError::Runtime)?,
                r.control,
                r.admin
                    .map(tokio::net::TcpListener::from_std)
                    .transpose()
                    .map_err(UpError::Runtime)?,
                Some(r.peer),
            ));
        }
        let balancer = Listening::bind(config.listen).map_err(|e| {
            UpError::Port(ports::Unavailable::new(config.listen, Setting::Listen, e))
        })?;
        for port in config.ports() {
            ports::check(SocketAddr::from(([127, 0, 0, 1], port)), Setting::BasePort)?;
        }
        let control =
            control::server::bind(&state.socket()).map_err(|source| UpError::ControlSocket {
                path: state.socket(),
                source,
            })?;
        let admin = config
            .admin
            .map(|addr| bind(addr, Setting::Admin))
            .transpose()?;
        Ok((balancer, control, admin, None))
    })();
    drop(entered);
    let (balancer, control, admin, peer) = match checked {
        Ok(l) => l,
        // A take-over leaves the old supervisor's socket and pid file alone.
        Err(e) if take_over.is_some() => {
            lock.hand_over();
            return Err(e);
        }
        Err(e) => {
            let _ = std::fs::remove_file(state.socket());
            lock.release();
            return Err(e);
        }
    };

    if !config.listen.ip().is_loopback() {
        warn!(
            target: "balancer",
            "listening on {} beyond loopback: anyone who can reach this machine can use the fleet",
            config.listen
        );
    }
    if let Some(addr) = config.admin.filter(|a| !a.ip().is_loopback()) {
        warn!(
            target: "supervisor",
            "admin address {addr} is beyond loopback: anyone who can reach it can read the fleet's status and metrics"
        );
    }
    let exe = std::env::current_exe().map_err(UpError::Exe)?;
    let result = runtime.block_on(async move {
        let listeners = Listeners {
            balancer,
            control: tokio::net::UnixListener::from_std(control).map_err(|source| {
                UpError::ControlSocket {
                    path: state.socket(),
                    source,
                }
            })?,
            admin,
        };
        let token = CancellationToken::new();
        let detached = matches!(reporter, Reporter::Pipe);
        let signals = supervisor::signals::install(detached).map_err(UpError::Signals)?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let take_over = peer
            .map(supervisor::handover::Follower::new)
            .transpose()
            .map_err(|e| UpError::TakeOver(format!("the handover connection: {e}")))?;
        let opts = Options {
            echo_output: !detached,
            exe,
            reload,
            signals: Some(signals),
            take_over,
        };
        let files = StateFiles { dir: state, lock };
        let supervisor = Supervisor::start(config, listeners, files, opts, token).run(ready_tx);
        tokio::pin!(supervisor);
        // Report readiness while the supervisor runs.
        let result = tokio::select! {
            r = &mut supervisor => Some(r),
            ready = ready_rx => {
                report_ready(reporter, ready.ok());
                None
            }
        };
        let result = match result {
            Some(r) => r,
            None => supervisor.await,
        };
        Ok(result?)
    });
    // Every task (and with it every log writer) is dropped with the
    // runtime; the writer threads then write what they were given.
    drop(runtime);
    crate::log_writer::finish(LOG_DRAIN);
    result
}

/// How long an exiting `fleet up` waits for its log writer threads to write
/// the lines they hold: far more than a few thousand lines take.
const LOG_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

fn report_ready(reporter: &Reporter, ready: Option<Result<Readiness, supervisor::StartError>>) {
    let pid = std::process::id();
    match ready {
        Some(Ok(Readiness::Ready { listen })) => {
            if let Reporter::Terminal = reporter {
                info!(target: "supervisor", "balancer on http://{listen}/ (Ctrl-C stops the fleet)");
            }
            reporter.send(&Report {
                ok: true,
                pid,
                listen: Some(listen.to_string()),
                failing: Vec::new(),
                error: None,
            });
        }
        Some(Ok(Readiness::Degraded { listen, failing })) => reporter.send(&Report {
            ok: true,
            pid,
            listen: Some(listen.to_string()),
            failing,
            error: None,
        }),
        // The supervisor is tearing down; `start` returns the error itself.
        Some(Err(_)) | None => {}
    }
}

/// Bind one of fleet's listeners; a port that cannot be had is named with
/// why (in use and by whom, privileged, not this machine's address).
fn bind(addr: SocketAddr, setting: Setting) -> Result<tokio::net::TcpListener, UpError> {
    listener::bind(addr).map_err(|e| UpError::Port(ports::Unavailable::new(addr, setting, e)))
}

/// Refuse to start if the open-file limit, raised as far as it goes, cannot
/// hold `max_connections` clients (two descriptors each: client and backend)
/// plus the supervisor's own files.
fn raise_fd_limit(max_connections: u32) -> Result<(), UpError> {
    let want = 2 * u64::from(max_connections) + 256;
    let have = crate::fd_limit::raise(want).map_err(UpError::FdLimitUnknown)?;
    if have < want {
        return Err(UpError::FdLimit {
            have,
            want,
            max_connections,
        });
    }
    Ok(())
}

/// `fleet up -d`: start the detached child and relay its report.
fn launch_detached(state: &StateDir) -> Result<(), UpError> {
    match state.probe() {
        (Holder::Running { pid }, _) => {
            return Err(UpError::State(StateError::AlreadyRunning {
                dir: state.shown(),
                pid: pid.map_or("unknown".into(), |p| p.to_string()),
            }));
        }
        (Holder::Unreadable { path, error }, _) => {
            return Err(UpError::Unreadable {
                path,
                source: error,
            });
        }
        // What stale state was cleaned up: a note, not a failure.
        (Holder::Free, Some(note)) => eprintln!("fleet: {note}"),
        (Holder::Free, None) => {}
    }
    let log_path = state.supervisor_log();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(crate::state_dir::NO_FOLLOW)
        .open(&log_path)
        .map_err(|source| UpError::Log {
            path: log_path.clone(),
            source,
        })?;
    let exe = std::env::current_exe().map_err(UpError::Exe)?;
    let mut child = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .arg("--detached-child")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(UpError::Spawn)?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    match serde_json::from_str::<Report>(line.trim()) {
        Ok(r) if r.ok => {
            let listen = r.listen.unwrap_or_default();
            if r.failing.is_empty() {
                crate::outln!("fleet: up (pid {}), balancer on http://{listen}/", r.pid);
            } else {
                crate::outln!(
                    "fleet: up DEGRADED (pid {}), balancer on http://{listen}/",
                    r.pid
                );
                for (port, why) in &r.failing {
                    eprintln!("fleet: backend {port} is not serving: {why}");
                }
                eprintln!(
                    "fleet: the fleet serves with the other backends; see `fleet status` and `fleet logs {}`",
                    r.failing[0].0
                );
            }
            Ok(())
        }
        Ok(r) => {
            // It tears everything down before it exits: wait, so that a
            // failed `up` returns with nothing running.
            let _ = child.wait();
            Err(UpError::Detached(
                r.error.unwrap_or_else(|| "start-up failed".into()),
            ))
        }
        Err(_) => {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            Err(UpError::DiedStarting {
                status,
                log: log_path,
            })
        }
    }
}
