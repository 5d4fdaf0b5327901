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
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cli::UpArgs;
use crate::config::{self, BackendCommand, Config};
use crate::exit;
use crate::state_dir::{Holder, StateDir, StateError};
use crate::supervisor::{self, Listeners, Options, Readiness};
use crate::{control, listener, ports};

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

pub fn run(args: UpArgs) -> u8 {
    let config = match config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fleet: {e}");
            return exit::USAGE;
        }
    };
    let state = StateDir::new(args.state.resolve());
    if args.detach && !args.detached_child {
        return launch_detached(&state);
    }
    if args.detached_child {
        // A session of our own: no controlling terminal, so closing the
        // terminal that ran `up -d` sends us nothing.
        let _ = nix::unistd::setsid();
    }
    let reporter = if args.detached_child {
        Reporter::Pipe
    } else {
        Reporter::Terminal
    };
    match start(config, state, &reporter) {
        Ok(()) => exit::OK,
        Err(msg) => {
            reporter.fail(&msg);
            exit::FAILURE
        }
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

    fn fail(&self, msg: &str) {
        match self {
            Reporter::Terminal => eprintln!("fleet: {msg}"),
            Reporter::Pipe => {
                tracing::error!(target: "supervisor", "{msg}");
                self.send(&Report {
                    ok: false,
                    pid: std::process::id(),
                    listen: None,
                    failing: Vec::new(),
                    error: Some(msg.to_string()),
                })
            }
        }
    }
}

/// Checks, binds and runs the supervisor until shutdown. `Err` is a one-line
/// message for the user; by then nothing is left running.
fn start(config: Config, state: StateDir, reporter: &Reporter) -> Result<(), String> {
    state.create().map_err(|e| e.to_string())?;
    let (lock, stale) = state.lock().map_err(|e| e.to_string())?;
    if let Some(note) = stale {
        warn!(target: "supervisor", "{note}");
    }
    // From here on, returning drops `lock` (flock released); the pid file is
    // removed by `release` on every path.
    // Two runtime threads: measured against one on the 2-core lab machine
    // shared with 4 workers and the load generator (BENCHMARKS.md).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("fleet")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            lock.release();
            return Err(format!("cannot start the async runtime: {e}"));
        }
    };
    // Sockets are registered with the runtime as they are bound; nothing runs yet.
    let entered = runtime.enter();
    let checked = (|| {
        raise_fd_limit(config.balancer.max_connections)?;
        if config.backend == BackendCommand::Builtin && !config.www.is_dir() {
            return Err(format!(
                "www directory {} does not exist",
                config.www.display()
            ));
        }
        let balancer = listener::bind(config.listen).map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                format!(
                    "{}; stop it or choose another with --listen",
                    ports::in_use_message(config.listen.port(), "balancer")
                )
            }
            _ => format!("cannot listen on {}: {e}", config.listen),
        })?;
        for port in config.ports() {
            if !ports::is_free(SocketAddr::from(([127, 0, 0, 1], port))) {
                return Err(format!(
                    "{}; stop it or choose other ports with --base-port",
                    ports::in_use_message(port, "backend")
                ));
            }
        }
        let control = control::server::bind(&state.socket()).map_err(|e| {
            format!(
                "cannot create control socket {}: {e}",
                state.socket().display()
            )
        })?;
        Ok((balancer, control))
    })();
    drop(entered);
    let (balancer, control) = match checked {
        Ok(l) => l,
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
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the fleet executable: {e}"))?;
    runtime.block_on(async move {
        let listeners = Listeners {
            balancer,
            control: tokio::net::UnixListener::from_std(control).map_err(|e| e.to_string())?,
        };
        let token = CancellationToken::new();
        spawn_signal_handler(token.clone())?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let opts = Options {
            echo_output: matches!(reporter, Reporter::Terminal),
            exe,
        };
        let supervisor = supervisor::run(config, listeners, state, lock, opts, token, ready_tx);
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
        result.map_err(|e| e.to_string())
    })
}

fn report_ready(reporter: &Reporter, ready: Option<Result<Readiness, String>>) {
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

/// SIGINT and SIGTERM both mean a graceful `down`.
fn spawn_signal_handler(token: CancellationToken) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot handle SIGINT: {e}"))?;
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
            _ = token.cancelled() => return,
        };
        info!(target: "supervisor", "{name} received");
        token.cancel();
    });
    Ok(())
}

/// Refuse to start if the open-file limit, raised as far as it goes, cannot
/// hold `max_connections` clients (two descriptors each: client and backend)
/// plus the supervisor's own files.
fn raise_fd_limit(max_connections: u32) -> Result<(), String> {
    let want = 2 * u64::from(max_connections) + 256;
    let have = crate::fd_limit::raise(want)
        .map_err(|e| format!("cannot read the descriptor limit: {e}"))?;
    if have < want {
        return Err(format!(
            "the open-file limit ({have}) is too low for balancer.max_connections = {max_connections} (needs {want}); \
             lower max_connections in fleet.yaml or raise the limit (ulimit -n)"
        ));
    }
    Ok(())
}

/// `fleet up -d`: start the detached child and relay its report.
fn launch_detached(state: &StateDir) -> u8 {
    if let Err(e) = state.create() {
        eprintln!("fleet: {e}");
        return exit::FAILURE;
    }
    match state.probe() {
        (Holder::Running { pid }, _) => {
            let e = StateError::AlreadyRunning {
                dir: state.root().to_path_buf(),
                pid: pid.map_or("unknown".into(), |p| p.to_string()),
            };
            eprintln!("fleet: {e}");
            return exit::FAILURE;
        }
        (Holder::Unreadable { path, error }, _) => {
            eprintln!("fleet: cannot read {}: {error}", path.display());
            return exit::UNREADABLE;
        }
        (Holder::Free, Some(note)) => eprintln!("fleet: {note}"),
        (Holder::Free, None) => {}
    }
    let log_path = state.supervisor_log();
    let log = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fleet: cannot open {}: {e}", log_path.display());
            return exit::FAILURE;
        }
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fleet: cannot find the fleet executable: {e}");
            return exit::FAILURE;
        }
    };
    let mut child = match std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .arg("--detached-child")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fleet: cannot start the supervisor: {e}");
            return exit::FAILURE;
        }
    };
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
            exit::OK
        }
        Ok(r) => {
            let _ = child.wait();
            eprintln!(
                "fleet: {}",
                r.error.unwrap_or_else(|| "start-up failed".into())
            );
            exit::FAILURE
        }
        Err(_) => {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            eprintln!(
                "fleet: the supervisor exited during start-up ({status}); see {}",
                log_path.display()
            );
            exit::FAILURE
        }
    }
}
