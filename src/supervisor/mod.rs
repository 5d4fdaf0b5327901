//! The supervisor: owns the backends, the balancer and the control server of
//! one fleet, and the one shutdown path.
//!
//! Ownership: every backend task owns its state machine and child process and
//! publishes to its pool `Slot`; the balancer and the control server only read
//! the pool. `run` owns the shutdown order and the supervisor's loop, the one
//! place that acts on commands (`control::command`): it tells backend tasks
//! what to do through their handles (`backend::BackendHandle`), one command at
//! a time (`ops`, `reload`).
//!
//! # Shutdown
//! Triggered only by `token` (SIGINT, SIGTERM, a foreground fleet's SIGHUP,
//! or a control `down`). Then:
//! 1. the balancer stops accepting (its listener is dropped: new clients are refused);
//! 2. every backend gets SIGTERM at once; a worker finishes its in-flight
//!    requests and closes idle keep-alive connections (the built-in worker
//!    does; a custom command should), which also ends the proxied client
//!    connections that were using it;
//! 3. at the grace deadline (`shutdown.timeout`, or `fleet down --timeout`),
//!    SIGKILL for what is left and remaining client connections are cut;
//! 4. every task is joined (bounded), the control socket and pid file are removed;
//! 5. `fleet down` callers get their reply, and `run` returns.
//!
//! Workers get SIGTERM right away rather than after the client connections
//! drain, because a TCP proxy cannot tell an idle keep-alive connection from
//! a busy one: waiting on them would make every `down` with an open browser
//! tab last the full timeout. The worker, which does see request boundaries,
//! drains instead.

pub(crate) mod backend;
pub(crate) mod health;
mod ops;
pub(crate) mod orphans;
pub(crate) mod output;
mod reload;
#[cfg(test)]
mod shutdown_tests;
pub(crate) mod signals;
pub(crate) mod state;
pub(crate) mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::balancer::pool::{Backends, Pool, Slot};
use crate::balancer::{self, access_log::AccessLog};
use crate::config::{BackendCommand, Config, Overrides, Www};
use crate::control::command::Command;
use crate::control::protocol::Reply;
use crate::control::server::StatusView;
use crate::lifecycle::{Lifecycle, Phase};
use crate::state_dir::{PidLock, StateDir};
use backend::Launch;
use ops::Fleet;

/// How long `up` waits for every backend's first passing probe before it
/// reports a degraded start (some ready) or gives up (none ready).
pub(crate) const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Commands waiting for the supervisor's loop; more wait in the control
/// connections that sent them.
const COMMAND_CAPACITY: usize = 16;

/// How the start went, for `up` to report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Readiness {
    /// Every backend passed its first probe.
    Ready { listen: SocketAddr },
    /// Some did, some are failing: the fleet serves with the rest.
    Degraded {
        listen: SocketAddr,
        failing: Vec<(u16, String)>,
    },
}

/// Why start-up ended without a serving fleet.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StartError {
    /// Not one backend passed a probe: each one's port and why, in words.
    #[error("{}", failing.iter().map(|(p, why)| format!("{p}: {why}")).collect::<Vec<_>>().join("; "))]
    NoneReady { failing: Vec<(u16, String)> },
    /// Ctrl-C or `down` came first: a normal stop, not a failure.
    #[error("interrupted during start-up")]
    Interrupted,
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("no backend became ready: {0}")]
    NoBackendReady(StartError),
}

/// The already bound sockets (bound by the caller so errors name the port
/// before anything starts, and so tests can bind port 0).
pub(crate) struct Listeners {
    pub balancer: TcpListener,
    pub control: UnixListener,
    /// The admin address (`/metrics`, `/status.json`, dashboard), when set.
    pub admin: Option<TcpListener>,
}

pub(crate) struct Options {
    /// Copy backend output into this process's log (foreground mode).
    pub echo_output: bool,
    /// The executable that provides `fleet serve` for built-in workers.
    pub exe: PathBuf,
    /// What `fleet reload` re-reads: the flags given to `up` and the
    /// directory it ran in (relative paths resolve as they did then).
    pub reload: Option<(Overrides, PathBuf)>,
    /// The signal handlers, installed by the caller (so a failure is reported
    /// before anything starts); `run` drives them.
    pub signals: Option<signals::Signals>,
}

pub(crate) async fn run(
    config: Config,
    listeners: Listeners,
    state: StateDir,
    lock: PidLock,
    opts: Options,
    token: CancellationToken,
    ready: oneshot::Sender<Result<Readiness, StartError>>,
) -> Result<(), SupervisorError> {
    let listen = listeners.balancer.local_addr().unwrap_or(config.listen);
    let started = Instant::now();
    let tracker = TaskTracker::new();
    let conns = TaskTracker::new();
    let hard_stop = CancellationToken::new();
    let control_stop = CancellationToken::new();
    // How long workers get between SIGTERM and SIGKILL at shutdown: a
    // message (`down --timeout`, a reload) rather than shared state.
    let grace_tx = Arc::new(watch::channel(config.shutdown.timeout).0);
    let (commands_tx, mut commands) = mpsc::channel::<Command>(COMMAND_CAPACITY);

    let backends = Arc::new(Backends::new(
        Pool::new(Vec::new()),
        config.balancer.clone(),
    ));
    if let Some(path) = &config.balancer.access_log {
        let _ = backends.access_log.set(AccessLog::new(path.clone()));
    }
    // Fixed for the supervisor's life, like the admin address itself.
    let admin_hosts = config.admin_hosts.clone();
    let mut fleet = Fleet::new(
        config,
        backends.clone(),
        tracker.clone(),
        token.clone(),
        grace_tx.clone(),
        state.clone(),
        &opts,
    );
    fleet.spawn_initial();
    tracker.spawn(balancer::run(
        listeners.balancer,
        backends.clone(),
        token.child_token(),
        hard_stop.clone(),
        conns.clone(),
    ));
    let admin = listeners.admin.as_ref().and_then(|l| l.local_addr().ok());
    let view: StatusView = {
        let backends = backends.clone();
        Arc::new(move || crate::control::status::build(&backends, listen, admin, started))
    };
    tracker.spawn(sample_metrics(backends.clone(), token.child_token()));
    if let Some((listener, addr)) = listeners.admin.zip(admin) {
        tracker.spawn(crate::admin::serve(
            listener,
            crate::admin::Context {
                status: view.clone(),
                backends: backends.clone(),
                started,
                names: crate::admin::host::Names::new(addr.ip(), admin_hosts),
            },
            token.child_token(),
            tracker.clone(),
        ));
    }
    let control = tokio::spawn(crate::control::server::serve(
        listeners.control,
        view,
        commands_tx.clone(),
        control_stop.clone(),
    ));
    if let Some(signals) = opts.signals {
        tracker.spawn(signals.run(token.clone(), commands_tx.clone()));
    }
    drop(commands_tx);

    // `fleet down` callers, answered once everything is stopped.
    let mut down: Vec<mpsc::Sender<Reply>> = Vec::new();
    let mut on_command = |cmd: Command, busy: &str| match cmd {
        Command::Down { grace, reply } => {
            if let Some(g) = grace {
                grace_tx.send_replace(g);
            }
            down.push(reply);
            token.cancel();
        }
        other => {
            let message = format!("{}: {busy}; try again when it is done", other.verb());
            warn!(target: "supervisor", "{message}");
            let _ = other.reply().try_send(Reply::Error { message });
        }
    };

    let readiness = wait_ready(&backends, listen, &token);
    tokio::pin!(readiness);
    let started_up = loop {
        tokio::select! {
            r = &mut readiness => break r,
            Some(cmd) = commands.recv() => on_command(cmd, "the fleet is still starting"),
        }
    };
    // Interrupted during start-up (Ctrl-C, `down`) is a normal stop, not a failure.
    let fatal = started_up
        .as_ref()
        .err()
        .filter(|_| !token.is_cancelled())
        .cloned();
    match &started_up {
        Ok(Readiness::Ready { .. }) => {
            info!(target: "supervisor", %listen, backends = fleet.len(), "fleet ready")
        }
        Ok(Readiness::Degraded { failing, .. }) => {
            warn!(target: "supervisor", %listen, failing = failing.len(), "fleet started degraded")
        }
        Err(e) => warn!(target: "supervisor", "{e}"),
    }
    let _ = ready.send(started_up);
    if fatal.is_some() {
        token.cancel();
    }

    // The supervisor's loop: one command at a time. While one runs (a rolling
    // restart takes a while) `down` still acts at once, and other commands
    // are told to wait.
    loop {
        let cmd = tokio::select! {
            biased;
            _ = token.cancelled() => break,
            c = commands.recv() => match c {
                Some(c) => c,
                // No sender is left (cannot happen while the control server
                // runs): nothing to do but wait for the shutdown.
                None => {
                    token.cancelled().await;
                    break;
                }
            },
        };
        if let Command::Down { .. } = cmd {
            on_command(cmd, "");
            continue;
        }
        let busy = format!("`fleet {}` is in progress", cmd.verb());
        let op = fleet.execute(cmd);
        tokio::pin!(op);
        loop {
            tokio::select! {
                biased;
                // Dropping the operation drops its reply channel: its client
                // hears that shutdown interrupted it.
                _ = token.cancelled() => break,
                _ = &mut op => break,
                Some(c) = commands.recv() => on_command(c, &busy),
            }
        }
    }

    let grace_now = *grace_tx.borrow();
    info!(target: "supervisor", grace = ?grace_now, "shutting down");
    let deadline = Instant::now() + grace_now;
    let shutdown = async {
        // Steps 1-2 run in the balancer and backend tasks, which watch `token`.
        // Step 3: client connections get until the deadline, backends handle their own SIGKILL.
        conns.close();
        if tokio::time::timeout_at(deadline, conns.wait())
            .await
            .is_err()
        {
            info!(target: "supervisor", "cutting client connections still open at the deadline");
        }
        hard_stop.cancel();
        conns.wait().await;
        // Step 4.
        tracker.close();
        if tokio::time::timeout_at(deadline + Duration::from_secs(3), tracker.wait())
            .await
            .is_err()
        {
            warn!(target: "supervisor", "some backend tasks did not finish; exiting anyway");
        }
    };
    tokio::pin!(shutdown);
    // A `down` that arrives during shutdown waits for its end like the first.
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(c) = commands.recv() => on_command(c, "the fleet is shutting down"),
        }
    }
    drop(fleet);
    let _ = std::fs::remove_file(state.socket());
    lock.release();
    info!(target: "supervisor", "stopped");
    // Step 5: answer `fleet down`, then let the control connections write it.
    while let Ok(c) = commands.try_recv() {
        on_command(c, "the fleet is shutting down");
    }
    for reply in down {
        let _ = reply.try_send(Reply::Stopped {
            pid: std::process::id(),
        });
    }
    control_stop.cancel();
    let _ = control.await;
    match fatal {
        Some(e) => Err(SupervisorError::NoBackendReady(e)),
        None => Ok(()),
    }
}

/// Whether a backend has given up for now (as opposed to still trying); an
/// upstream that answers its probes but is unhealthy counts (it is not
/// ours to restart).
fn gave_up(slot: &Slot, healthy: bool, s: &Lifecycle) -> bool {
    !healthy
        && (s.state == Phase::Failed
            || (s.state == Phase::Stopped && s.reason.is_some())
            || (slot.upstream.is_some() && s.state == Phase::Running))
}

/// Once a second, sample every backend's counters for the windowed rates
/// (`fleet status` requests/s and p99, the dashboard's sparklines).
async fn sample_metrics(backends: Arc<Backends>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        // Removed backends too: one scaled back carries on with a window
        // that has no gap.
        for m in backends.metrics.backends.all() {
            m.sample();
        }
    }
}

/// Wait until every backend is routable, or until every one is routable or
/// has given up, or `STARTUP_TIMEOUT` after the last one was spawned (a fleet
/// of 1000 takes seconds just to spawn on a busy machine; each backend gets
/// the full time). Woken by every published change.
async fn wait_ready(
    backends: &Backends,
    listen: SocketAddr,
    token: &CancellationToken,
) -> Result<Readiness, StartError> {
    let mut deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let changed = backends.changed.notified();
        let pool = backends.load();
        // Each backend's lifecycle and whether it takes traffic, read once.
        let statuses: Vec<_> = pool
            .slots()
            .iter()
            .map(|slot| (slot, slot.routable(), slot.status()))
            .collect();
        // A backend task publishes a `starting` state only with the pid of
        // what it spawned (a guard's, until it reports its command's);
        // without one, it has not spawned yet (upstreams have no pid at all).
        if statuses.iter().any(|(slot, _, s)| {
            s.state == Phase::Starting
                && s.pid.is_none()
                && s.guard_pid.is_none()
                && slot.upstream.is_none()
        }) {
            deadline = Instant::now() + STARTUP_TIMEOUT;
        }
        let up = statuses.iter().filter(|(_, healthy, _)| *healthy).count();
        // An upstream that failed `fall` probes has had its say too.
        let gave_up: Vec<(u16, String)> = statuses
            .iter()
            .filter(|(slot, healthy, s)| gave_up(slot, *healthy, s))
            .map(|(slot, _, s)| {
                (
                    slot.port,
                    s.reason.clone().unwrap_or_else(|| s.state.to_string()),
                )
            })
            .collect();
        let timed_out = Instant::now() >= deadline;
        if up == statuses.len() {
            return Ok(Readiness::Ready { listen });
        }
        if up + gave_up.len() == statuses.len() || timed_out {
            let failing: Vec<(u16, String)> = statuses
                .iter()
                .filter(|(_, healthy, _)| !healthy)
                .map(|(slot, _, s)| {
                    let why = match (&s.reason, &s.last_exit) {
                        // Still starting: say what its probes saw.
                        (Some(probe), _) if s.state == Phase::Starting => {
                            format!("not ready after {}s; {probe}", STARTUP_TIMEOUT.as_secs())
                        }
                        (Some(r), _) => r.clone(),
                        (None, Some(e)) => format!("{} (last {e})", s.state),
                        (None, None) if timed_out => {
                            format!("not ready after {}s", STARTUP_TIMEOUT.as_secs())
                        }
                        (None, None) => s.state.to_string(),
                    };
                    match &slot.upstream {
                        Some(a) => (slot.port, format!("upstream {a}: {why}")),
                        None => (slot.port, why),
                    }
                })
                .collect();
            if up == 0 {
                return Err(StartError::NoneReady { failing });
            }
            return Ok(Readiness::Degraded { listen, failing });
        }
        tokio::select! {
            biased;
            _ = token.cancelled() => return Err(StartError::Interrupted),
            _ = changed => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// The command line for one backend.
pub(crate) fn launch_for(config: &Config, exe: &Path, port: u16) -> Launch {
    match &config.backend {
        BackendCommand::Builtin => Launch {
            program: exe.to_path_buf(),
            args: vec![
                "serve".into(),
                "--port".into(),
                port.to_string(),
                "--lifeline".into(),
            ]
            .into_iter()
            .chain(match &config.www {
                Www::Dir(dir) => vec!["--www".into(), dir.display().to_string()],
                Www::Embedded => vec!["--embedded".into()],
            })
            .collect(),
            cwd: None,
            env: Vec::new(),
            lifeline: true,
            die_with_parent: true,
            guarded: false,
        },
        BackendCommand::Command { cwd, env, .. } => {
            let (program, args) = config
                .backend
                .argv(port)
                .expect("a command backend has an argv");
            // Output reaches `fleet logs` as it is written, not when a
            // Python buffer fills; `backend.env` may say otherwise.
            let env = std::iter::once(("PYTHONUNBUFFERED".to_string(), "1".to_string()))
                .chain(env.iter().map(|(k, v)| (k.clone(), v.clone())))
                .collect();
            // Every platform: `fleet guard` holds the lifeline for the command
            // and takes its descendants down with it (see `orphans`).
            let mut guarded = vec!["guard".to_string(), "--".to_string(), program.to_string()];
            guarded.extend(args);
            Launch {
                program: exe.to_path_buf(),
                args: guarded,
                cwd: Some(cwd.clone()),
                env,
                lifeline: true,
                die_with_parent: false,
                guarded: true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn custom(env: &[(&str, &str)]) -> Config {
        Config {
            backend: BackendCommand::Command {
                program: "python3".into(),
                args: vec!["server.py".into(), "{port}".into()],
                cwd: "/srv".into(),
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
            ..Config::default()
        }
    }

    /// The value a child sees: the last setting of `key` wins.
    fn env_of(l: &Launch, key: &str) -> Option<String> {
        l.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    #[test]
    fn a_custom_command_runs_under_guard_with_a_lifeline_and_no_parent_death_signal() {
        let l = launch_for(&custom(&[]), Path::new("/bin/fleet"), 9003);
        assert_eq!(l.program, Path::new("/bin/fleet"));
        assert_eq!(l.args, ["guard", "--", "python3", "server.py", "9003"]);
        assert!(l.lifeline && !l.die_with_parent && l.guarded);
        let builtin = launch_for(&Config::default(), Path::new("/bin/fleet"), 9003);
        assert!(builtin.lifeline && builtin.die_with_parent && !builtin.guarded);
    }

    #[test]
    fn python_is_unbuffered_unless_backend_env_says_otherwise() {
        let exe = Path::new("/bin/fleet");
        let l = launch_for(&custom(&[]), exe, 9003);
        assert_eq!(env_of(&l, "PYTHONUNBUFFERED").as_deref(), Some("1"));
        let l = launch_for(&custom(&[("PYTHONUNBUFFERED", "")]), exe, 9003);
        assert_eq!(env_of(&l, "PYTHONUNBUFFERED").as_deref(), Some(""));
    }
}
