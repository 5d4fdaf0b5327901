//! The supervisor: owns the backends, the balancer and the control server of
//! one fleet, and the one shutdown path.
//!
//! Ownership: every backend task owns its state machine and child process and
//! publishes to its pool `Slot`; the balancer and the control server only read
//! the pool. `run` owns the shutdown order.
//!
//! # Shutdown
//! Triggered only by `token` (SIGINT, SIGTERM, or a control `down`). Then:
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

pub mod backend;
pub mod health;
pub mod orphans;
pub mod output;
#[cfg(test)]
mod shutdown_tests;
pub mod state;
pub mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::balancer::{self, pool::Backends, pool::Pool, pool::Slot};
use crate::config::{BackendCommand, Config, Www};
use crate::control::protocol::{self, FleetStatus, Reply};
use crate::state_dir::{PidLock, StateDir};
use backend::{BackendTask, Launch};
use output::BackendLog;
use state::{Backend, Policy};

/// How long `up` waits for every backend's first passing probe before it
/// reports a degraded start (some ready) or gives up (none ready).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The SIGTERM → SIGKILL grace, settable by `fleet down --timeout` up to the
/// moment shutdown starts.
#[derive(Debug)]
pub struct Grace(Mutex<Duration>);

impl Grace {
    pub fn get(&self) -> Duration {
        *self.0.lock().expect("grace lock is never poisoned")
    }
    pub fn set(&self, d: Duration) {
        *self.0.lock().expect("grace lock is never poisoned") = d;
    }
}

/// What the control server and `run` share.
#[derive(Debug)]
pub struct Shared {
    pub backends: Arc<Backends>,
    pub listen: SocketAddr,
    pub started: Instant,
    pub grace: Arc<Grace>,
    /// `fleet down` callers, answered once everything is stopped.
    pub down_waiters: Mutex<Vec<OwnedWriteHalf>>,
}

impl Shared {
    pub fn status(&self) -> FleetStatus {
        FleetStatus {
            pid: std::process::id(),
            listen: self.listen.to_string(),
            uptime_s: crate::balancer::pool::round3(self.started.elapsed().as_secs_f64()),
            backends: self
                .backends
                .load()
                .slots()
                .iter()
                .map(|s| s.status())
                .collect(),
        }
    }
}

/// How the start went, for `up` to report.
#[derive(Debug, Clone, PartialEq)]
pub enum Readiness {
    /// Every backend passed its first probe.
    Ready { listen: SocketAddr },
    /// Some did, some are failing: the fleet serves with the rest.
    Degraded {
        listen: SocketAddr,
        failing: Vec<(u16, String)>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("no backend became ready: {0}")]
    NoBackendReady(String),
}

/// The already bound sockets (bound by the caller so errors name the port
/// before anything starts, and so tests can bind port 0).
pub struct Listeners {
    pub balancer: TcpListener,
    pub control: UnixListener,
}

pub struct Options {
    /// Copy backend output into this process's log (foreground mode).
    pub echo_output: bool,
    /// The executable that provides `fleet serve` for built-in workers.
    pub exe: PathBuf,
}

pub async fn run(
    config: Config,
    listeners: Listeners,
    state: StateDir,
    lock: PidLock,
    opts: Options,
    token: CancellationToken,
    ready: oneshot::Sender<Result<Readiness, String>>,
) -> Result<(), SupervisorError> {
    let listen = listeners.balancer.local_addr().unwrap_or(config.listen);
    let tracker = TaskTracker::new();
    let conns = TaskTracker::new();
    let hard_stop = CancellationToken::new();
    let control_stop = CancellationToken::new();
    let grace = Arc::new(Grace(Mutex::new(config.shutdown.timeout)));

    let mut slots = Vec::new();
    let mut receivers = Vec::new();
    for port in config.ports() {
        let (slot, rx) = Slot::new(port, SocketAddr::from(([127, 0, 0, 1], port)));
        slots.push(Arc::new(slot));
        receivers.push(rx);
    }
    // Upstreams rotate after the local backends, in the order written.
    for u in &config.upstreams {
        let (slot, rx) = Slot::upstream(u.name.clone(), u.addr);
        slots.push(Arc::new(slot));
        receivers.push(rx);
    }
    let backends = Arc::new(Backends::new(Pool::new(slots), config.balancer.clone()));
    let pool = backends.load();
    let shared = Arc::new(Shared {
        backends: backends.clone(),
        listen,
        started: Instant::now(),
        grace: grace.clone(),
        down_waiters: Mutex::new(Vec::new()),
    });

    let policy = Policy::new(&config.restart, &config.health);
    for (slot, passive) in pool.slots().iter().zip(receivers) {
        if slot.upstream.is_some() {
            tracker.spawn(
                upstream::UpstreamTask {
                    slot: slot.clone(),
                    backends: backends.clone(),
                    health: config.health.clone(),
                    passive,
                    token: token.child_token(),
                }
                .run(),
            );
            continue;
        }
        let task = BackendTask {
            slot: slot.clone(),
            backends: backends.clone(),
            launch: launch_for(&config, &opts.exe, slot.port),
            health: config.health.clone(),
            machine: Backend::new(policy.clone(), fastrand::u64(..)),
            log: Arc::new(BackendLog::new(
                state.backend_log(slot.port),
                slot.port,
                opts.echo_output,
            )),
            passive,
            token: token.child_token(),
            grace: grace.clone(),
            tracker: tracker.clone(),
            last_probe: None,
        };
        tracker.spawn(task.run());
    }
    tracker.spawn(balancer::run(
        listeners.balancer,
        backends.clone(),
        token.child_token(),
        hard_stop.clone(),
        conns.clone(),
    ));
    let control = tokio::spawn(crate::control::server::serve(
        listeners.control,
        shared.clone(),
        token.clone(),
        control_stop.clone(),
    ));

    let started = wait_ready(&backends, listen, &token).await;
    // Interrupted during start-up (Ctrl-C, `down`) is a normal stop, not a failure.
    let fatal = started
        .as_ref()
        .err()
        .filter(|_| !token.is_cancelled())
        .cloned();
    match &started {
        Ok(Readiness::Ready { .. }) => {
            info!(target: "supervisor", %listen, backends = config.backends, "fleet ready")
        }
        Ok(Readiness::Degraded { failing, .. }) => {
            warn!(target: "supervisor", %listen, failing = failing.len(), "fleet started degraded")
        }
        Err(e) => warn!(target: "supervisor", "{e}"),
    }
    let _ = ready.send(started);
    if fatal.is_some() {
        token.cancel();
    }

    token.cancelled().await;
    let grace_now = grace.get();
    info!(target: "supervisor", grace = ?grace_now, "shutting down");
    let deadline = Instant::now() + grace_now;
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
    control_stop.cancel();
    let _ = control.await;
    let _ = std::fs::remove_file(state.socket());
    lock.release();
    info!(target: "supervisor", "stopped");
    // Step 5.
    let waiters = std::mem::take(&mut *shared.down_waiters.lock().expect("never poisoned"));
    let reply = protocol::encode(Reply::Stopped {
        pid: std::process::id(),
    });
    for mut w in waiters {
        let _ = w.write_all(reply.as_bytes()).await;
        let _ = w.shutdown().await;
    }
    match fatal {
        Some(e) => Err(SupervisorError::NoBackendReady(e)),
        None => Ok(()),
    }
}

/// Wait until every backend is routable, or until every one is routable or
/// has given up, or `STARTUP_TIMEOUT`. Woken by every published change.
async fn wait_ready(
    backends: &Backends,
    listen: SocketAddr,
    token: &CancellationToken,
) -> Result<Readiness, String> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let changed = backends.changed.notified();
        let statuses: Vec<_> = backends.load().slots().iter().map(|s| s.status()).collect();
        let up = statuses.iter().filter(|s| s.healthy).count();
        // An upstream that failed `fall` probes has had its say too.
        let gave_up: Vec<(u16, String)> = statuses
            .iter()
            .filter(|s| {
                !s.healthy
                    && (s.state == "failed"
                        || (s.state == "stopped" && s.reason.is_some())
                        || (s.address.is_some() && s.state == "running"))
            })
            .map(|s| (s.port, s.reason.clone().unwrap_or_else(|| s.state.clone())))
            .collect();
        let timed_out = Instant::now() >= deadline;
        if up == statuses.len() {
            return Ok(Readiness::Ready { listen });
        }
        if up + gave_up.len() == statuses.len() || timed_out {
            let failing: Vec<(u16, String)> = statuses
                .iter()
                .filter(|s| !s.healthy)
                .map(|s| {
                    let why = match (&s.reason, &s.last_exit) {
                        // Still starting: say what its probes saw.
                        (Some(probe), _) if s.state == "starting" => {
                            format!("not ready after {}s; {probe}", STARTUP_TIMEOUT.as_secs())
                        }
                        (Some(r), _) => r.clone(),
                        (None, Some(e)) => format!("{} (last {e})", s.state),
                        (None, None) if timed_out => {
                            format!("not ready after {}s", STARTUP_TIMEOUT.as_secs())
                        }
                        (None, None) => s.state.clone(),
                    };
                    match &s.address {
                        Some(a) => (s.port, format!("upstream {a}: {why}")),
                        None => (s.port, why),
                    }
                })
                .collect();
            if up == 0 {
                let detail = failing
                    .iter()
                    .map(|(p, why)| format!("{p}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(detail);
            }
            return Ok(Readiness::Degraded { listen, failing });
        }
        tokio::select! {
            biased;
            _ = token.cancelled() => return Err("interrupted during start-up".into()),
            _ = changed => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// The command line for one backend.
fn launch_for(config: &Config, exe: &Path, port: u16) -> Launch {
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
        assert!(l.lifeline && !l.die_with_parent);
        let builtin = launch_for(&Config::default(), Path::new("/bin/fleet"), 9003);
        assert!(builtin.lifeline && builtin.die_with_parent);
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
