//! The supervisor: owns the backends, the balancer and the control server of
//! one fleet, and the one shutdown path.
//!
//! Ownership: every backend task owns its state machine and child process and
//! publishes to its pool `Slot`; the balancer and the control server only read
//! the pool. [`Supervisor`] owns the shutdown order and the supervisor's
//! loop, the one place that acts on commands (`control::command`): it tells
//! backend tasks what to do through their jobs (`job::Job`, whose tickets
//! resolve with each task's outcome), one command at a time (`ops`, `reload`).
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
//! 5. `fleet down` callers get their reply, and `Supervisor::run` returns.
//!
//! Workers get SIGTERM right away rather than after the client connections
//! drain, because a TCP proxy cannot tell an idle keep-alive connection from
//! a busy one: waiting on them would make every `down` with an open browser
//! tab last the full timeout. The worker, which does see request boundaries,
//! drains instead.

pub(crate) mod backend;
mod blue_green;
mod front;
pub(crate) mod handover;
pub(crate) mod health;
pub(crate) mod job;
mod ops;
pub(crate) mod orphans;
pub(crate) mod output;
mod reload;
#[cfg(test)]
mod shutdown_tests;
pub(crate) mod signals;
pub(crate) mod state;
pub(crate) mod upstream;
mod upstream_set;

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

use crate::balancer::access_log::AccessLog;
use crate::balancer::pool::{Pool, Roster};
use crate::config::{BackendProgram, Config, Overrides, Www};
use crate::control::command::Call;
use crate::control::protocol::{Reply, Request};
use crate::control::server::StatusView;
use crate::lifecycle::Phase;
use crate::state_dir::{PidLock, StateDir};
use job::Launch;
use job::Outcome;
use ops::Fleet;
use upstream::Health;

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
    /// The new supervisor of `fleet upgrade` could not take the fleet over;
    /// the old one serves on.
    #[error("taking the fleet over failed: {0}")]
    TakeOver(String),
}

/// The already bound sockets (bound by the caller so errors name the port
/// before anything starts, and so tests can bind port 0).
pub(crate) struct Listeners {
    /// The balancer's: one address, a socket per engine thread where the
    /// kernel balances them.
    pub balancer: crate::listener::Listening,
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
    /// Set on the new supervisor of `fleet upgrade`: the listeners and lock
    /// came from the old one, and the backends come one at a time.
    pub take_over: Option<handover::Follower>,
}

/// What the supervisor holds in the state dir: the dir itself (the control
/// socket, the logs) and the pid file lock, released at the end.
pub(crate) struct StateFiles {
    pub dir: StateDir,
    pub lock: PidLock,
}

/// One running fleet, in three steps: [`Supervisor::start`] (every task
/// spawned), then [`Supervisor::run`]: start-up (wait for the backends'
/// first probes, report), serve (one command at a time until the token
/// fires) and shut down (the order in this module's doc).
pub(crate) struct Supervisor {
    fleet: Fleet,
    listen: SocketAddr,
    token: CancellationToken,
    /// Every task but client connections and the control server.
    tracker: TaskTracker,
    /// Client connections, given until the grace deadline at shutdown.
    conns: TaskTracker,
    /// Cuts the client connections still open at the deadline.
    hard_stop: CancellationToken,
    /// Stops the control server, after `fleet down` callers got their reply.
    control_stop: CancellationToken,
    /// The control server; `None` until a supervisor taking over accepts.
    control: Option<tokio::task::JoinHandle<()>>,
    inbox: Inbox,
    files: StateFiles,
    /// Taking over (`fleet upgrade`): the listeners wait until the old
    /// supervisor says `accept`.
    take_over: Option<(handover::Follower, Doors)>,
    /// Taking over, once accepting: the rest of the exchange.
    follower: Option<handover::Follower>,
    /// The socket and pid file are this supervisor's to remove at the end
    /// (not while taking over, nor once handed over).
    owns_files: bool,
}

/// What a supervisor opens to the world once it may accept: the listeners
/// and where the control server sends its commands.
struct Doors {
    listeners: Listeners,
    commands: mpsc::Sender<Call>,
    started: Instant,
    /// Watch mode's state, for `fleet status`.
    watch_view: Option<crate::watcher::Shared>,
}

/// The commands waiting for the supervisor's loop, and what it does with
/// those it cannot run now (apart from `fleet`, so one can run while
/// another arrives).
struct Inbox {
    commands: mpsc::Receiver<Call>,
    token: CancellationToken,
    /// How long workers get between SIGTERM and SIGKILL at shutdown: a
    /// message (`down --timeout`, a reload) rather than shared state.
    grace_tx: Arc<watch::Sender<Duration>>,
    /// `fleet down` callers, answered once everything is stopped.
    down: Vec<mpsc::Sender<Reply>>,
    /// Watch mode's rolling restarts: taken only between commands, so one
    /// waits here while another command runs (closed when watch mode is
    /// off).
    rolls: mpsc::Receiver<Call>,
}

impl Inbox {
    /// `down` acts at once, whatever is running; anything else is told
    /// it cannot run now (`busy` says why).
    fn refuse_or_stop(&mut self, cmd: Call, busy: &str) {
        match cmd.request {
            Request::Down { timeout_s } => {
                // Checked by the control server already.
                if let Ok(Some(g)) = Request::grace(timeout_s) {
                    self.grace_tx.send_replace(g);
                }
                self.down.push(cmd.reply);
                self.token.cancel();
            }
            other => {
                let message = format!("{}: {busy}; try again when it is done", other.verb());
                warn!(target: "supervisor", "{message}");
                let _ = cmd.reply.try_send(Reply::Error { message });
            }
        }
    }
}

impl Supervisor {
    /// Spawn the backends, the balancer, the admin address, the control
    /// server and the signal handlers on the already bound `listeners`.
    pub(crate) fn start(
        config: Config,
        listeners: Listeners,
        files: StateFiles,
        opts: Options,
        token: CancellationToken,
    ) -> Self {
        let listen = listeners.balancer.local_addr().unwrap_or(config.listen);
        let started = Instant::now();
        let tracker = TaskTracker::new();
        let conns = TaskTracker::new();
        let hard_stop = CancellationToken::new();
        let control_stop = CancellationToken::new();
        let grace_tx = Arc::new(watch::channel(config.shutdown.timeout).0);
        let (commands_tx, commands) = mpsc::channel::<Call>(COMMAND_CAPACITY);

        let backends = Arc::new(Roster::new(Pool::new(Vec::new()), config.balancer.clone()));
        if let Some(path) = &config.balancer.access_log {
            let _ = backends.access_log.set(AccessLog::new(path.clone()));
        }
        // Watch mode: its roll requests wait in `rolls` until no other
        // command runs. Its settings are read here, once.
        let (rolls_tx, rolls) = mpsc::channel::<Call>(1);
        let watching = config.watch.clone().map(|w| {
            let ctx = crate::watcher::Context {
                config: w,
                builtin_www: match (&config.backend, &config.www) {
                    (BackendProgram::Builtin, Www::Dir(d)) => Some(d.clone()),
                    _ => None,
                },
                own_files: crate::watcher::own_files(
                    &files.dir.shown(),
                    config.balancer.access_log.as_deref(),
                    config.source.as_deref(),
                ),
            };
            (ctx, crate::watcher::Shared::default())
        });
        let watch_view = watching.as_ref().map(|(_, shared)| shared.clone());
        let mut fleet = Fleet::new(
            config,
            backends.clone(),
            tracker.clone(),
            token.clone(),
            grace_tx.clone(),
            files.dir.clone(),
            &opts,
        );
        if let Some(signals) = opts.signals {
            tracker.spawn(signals.run(token.clone(), commands_tx.clone()));
        }
        if let Some((ctx, shared)) = watching {
            tracker.spawn(crate::watcher::run(
                ctx,
                rolls_tx,
                shared,
                token.child_token(),
            ));
        } else {
            drop(rolls_tx);
        }
        let doors = Doors {
            listeners,
            commands: commands_tx,
            started,
            watch_view,
        };
        let taking_over = opts.take_over.is_some();
        if taking_over {
            // Only the upstreams for now: each local backend starts once
            // the old supervisor frees its port.
            for u in fleet.config.upstreams.clone() {
                let remote = fleet.spawn_upstream(u, &fleet.config.health);
                fleet.upstreams.push(remote);
            }
            fleet.publish_pool();
        } else {
            fleet.spawn_initial();
        }
        let mut supervisor = Supervisor {
            fleet,
            listen,
            inbox: Inbox {
                commands,
                token: token.clone(),
                grace_tx,
                down: Vec::new(),
                rolls,
            },
            token,
            tracker,
            conns,
            hard_stop,
            control_stop,
            control: None,
            files,
            take_over: None,
            follower: None,
            owns_files: !taking_over,
        };
        match opts.take_over {
            Some(follower) => supervisor.take_over = Some((follower, doors)),
            None => supervisor.open(doors),
        }
        supervisor
    }

    /// Start accepting: the balancer (its `front`), the admin address and
    /// the control server.
    fn open(&mut self, doors: Doors) {
        let Doors {
            listeners,
            commands,
            started,
            watch_view,
        } = doors;
        let backends = self.fleet.backends.clone();
        let admin_hosts = self.fleet.config.admin_hosts.clone();
        // Copies for a later `fleet upgrade`.
        let kit = front::Kit::new(
            &listeners.control,
            listeners.admin.as_ref(),
            self.files.lock.file(),
        )
        .inspect_err(|e| warn!(target: "supervisor", "`fleet upgrade` will not be possible: {e}"))
        .ok();
        // A reload may move the balancer's address and change `admin_hosts`.
        let mut front = front::Front::start(
            listeners.balancer,
            self.listen,
            backends.clone(),
            (self.tracker.clone(), self.conns.clone()),
            self.token.clone(),
            self.hard_stop.clone(),
            admin_hosts,
        );
        front.kit = kit;
        let admin_stop = front.admin_stop.clone();
        let (listen_now, admin_hosts) = (front.listen.clone(), front.admin_hosts.clone());
        self.fleet.front = Some(front);
        let admin = listeners.admin.as_ref().and_then(|l| l.local_addr().ok());
        let view: StatusView = {
            let backends = backends.clone();
            Arc::new(move || {
                crate::control::status::build(
                    &backends,
                    **listen_now.load(),
                    admin,
                    started,
                    watch_view.as_deref(),
                )
            })
        };
        self.tracker
            .spawn(sample_metrics(backends.clone(), self.token.child_token()));
        if let Some((listener, addr)) = listeners.admin.zip(admin) {
            self.tracker.spawn(crate::admin::serve(
                listener,
                crate::admin::Context {
                    status: view.clone(),
                    backends,
                    started,
                    names: crate::admin::host::Names::shared(addr.ip(), admin_hosts),
                },
                admin_stop,
                self.tracker.clone(),
            ));
        }
        self.control = Some(tokio::spawn(crate::control::server::serve(
            listeners.control,
            view,
            commands,
            self.control_stop.clone(),
        )));
    }

    /// Start up, serve, shut down; `ready` hears how the start went.
    pub(crate) async fn run(
        mut self,
        ready: oneshot::Sender<Result<Readiness, StartError>>,
    ) -> Result<(), SupervisorError> {
        let fatal = match self.take_over().await {
            Ok(()) => self
                .start_up(ready)
                .await
                .map(SupervisorError::NoBackendReady),
            // `up` hears nothing: the old supervisor serves on.
            Err(why) => Some(SupervisorError::TakeOver(why)),
        };
        self.serve().await;
        self.shut_down().await;
        match fatal {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Taking over (`fleet upgrade`, see `handover`): start each backend
    /// the old supervisor frees until it says `accept`, then accept. `Err`
    /// stops this supervisor, leaving the old one's socket and pid file be.
    async fn take_over(&mut self) -> Result<(), String> {
        let Some((follower, _)) = &mut self.take_over else {
            return Ok(());
        };
        let until = follower.until_accept(&mut self.fleet, self.listen);
        let accepted = tokio::select! {
            biased;
            _ = self.token.cancelled() => Err("interrupted while taking the fleet over".into()),
            r = until => r,
        };
        if let Err(why) = accepted {
            warn!(target: "supervisor", "{why}");
            self.token.cancel();
            return Err(why);
        }
        if let Some((follower, doors)) = self.take_over.take() {
            self.open(doors);
            self.owns_files = true;
            self.follower = Some(follower);
        }
        Ok(())
    }

    /// Wait for the backends' first probes (commands meanwhile are told
    /// to wait, `down` stops), and report on `ready`. A fleet with no
    /// backend ready stops: the error is returned once it has.
    async fn start_up(
        &mut self,
        ready: oneshot::Sender<Result<Readiness, StartError>>,
    ) -> Option<StartError> {
        let listen = self.listen;
        let started_up = {
            let (fleet, lock, inbox, token) = (
                &mut self.fleet,
                &mut self.files.lock,
                &mut self.inbox,
                &self.token,
            );
            let follower = self.follower.take();
            let readiness = async move {
                // Taking over: the rest of the backends, then the pid file.
                if let Some(f) = follower {
                    f.finish(fleet, lock).await;
                }
                wait_ready(fleet, listen, token).await
            };
            tokio::pin!(readiness);
            loop {
                tokio::select! {
                    r = &mut readiness => break r,
                    Some(cmd) = inbox.commands.recv() => {
                        inbox.refuse_or_stop(cmd, "the fleet is still starting")
                    }
                }
            }
        };
        // Interrupted during start-up (Ctrl-C, `down`) is a normal stop, not a failure.
        let fatal = started_up
            .as_ref()
            .err()
            .filter(|_| !self.token.is_cancelled())
            .cloned();
        match &started_up {
            Ok(Readiness::Ready { .. }) => {
                info!(target: "supervisor", %listen, backends = self.fleet.len(), "fleet ready")
            }
            Ok(Readiness::Degraded { failing, .. }) => {
                warn!(target: "supervisor", %listen, failing = failing.len(), "fleet started degraded")
            }
            Err(e) => warn!(target: "supervisor", "{e}"),
        }
        let _ = ready.send(started_up);
        if fatal.is_some() {
            self.token.cancel();
        }
        fatal
    }

    /// The supervisor's loop: one command at a time. While one runs (a
    /// rolling restart takes a while) `down` still acts at once, and other
    /// commands are told to wait.
    async fn serve(&mut self) {
        let Supervisor {
            fleet,
            inbox,
            token,
            ..
        } = self;
        loop {
            let cmd = tokio::select! {
                biased;
                _ = token.cancelled() => break,
                c = inbox.commands.recv() => match c {
                    Some(c) => c,
                    // No sender is left (cannot happen while the control server
                    // runs): nothing to do but wait for the shutdown.
                    None => {
                        token.cancelled().await;
                        break;
                    }
                },
                // Watch mode's rolls: only taken here, between commands.
                Some(c) = inbox.rolls.recv() => c,
            };
            if let Request::Down { .. } = cmd.request {
                inbox.refuse_or_stop(cmd, "");
                continue;
            }
            let busy = format!("`fleet {}` is in progress", cmd.request.verb());
            let handover = fleet.backends.handover.clone();
            let op = fleet.execute(cmd.request, ops::Out::new(cmd.reply));
            tokio::pin!(op);
            loop {
                tokio::select! {
                    biased;
                    // Dropping the operation drops its reply channel: its client
                    // hears that shutdown interrupted it.
                    _ = token.cancelled() => break,
                    _ = &mut op => break,
                    Some(c) = inbox.commands.recv() => inbox.refuse_or_stop(c, &busy),
                }
            }
            // `fleet upgrade`: once the new supervisor accepts, the fleet
            // is its own, and this one exits.
            if handover.is_cancelled() {
                token.cancel();
            }
        }
    }

    /// The shutdown order (this module's doc); `fleet down` callers are
    /// answered last.
    async fn shut_down(self) {
        let Supervisor {
            mut fleet,
            mut inbox,
            tracker,
            conns,
            hard_stop,
            control_stop,
            control,
            files,
            owns_files,
            ..
        } = self;
        // The copies would keep the listeners open past the balancer's stop.
        if let Some(front) = fleet.front.as_mut() {
            front.drop_copies();
        }
        // Handed over (`fleet upgrade`): the socket and the pid file (and
        // its lock) are the new supervisor's.
        let owns_files = owns_files && !fleet.backends.handover.is_cancelled();
        let grace_now = *inbox.grace_tx.borrow();
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
                Some(c) = inbox.commands.recv() => inbox.refuse_or_stop(c, "the fleet is shutting down"),
            }
        }
        drop(fleet);
        if owns_files {
            let _ = std::fs::remove_file(files.dir.socket());
            files.lock.release();
        } else {
            files.lock.hand_over();
        }
        info!(target: "supervisor", "stopped");
        // Step 5: answer `fleet down`, then let the control connections write it.
        while let Ok(c) = inbox.commands.try_recv() {
            inbox.refuse_or_stop(c, "the fleet is shutting down");
        }
        for reply in inbox.down {
            let _ = reply.try_send(Reply::Stopped {
                pid: std::process::id(),
            });
        }
        control_stop.cancel();
        if let Some(control) = control {
            let _ = control.await;
        }
    }
}

/// Once a second, sample every backend's counters for the windowed rates
/// (`fleet status` requests/s and p99, the dashboard's sparklines).
async fn sample_metrics(backends: Arc<Roster>, stop: CancellationToken) {
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

/// Wait until every backend serves or has given up (each local backend's
/// `ready` ticket, which gives it `STARTUP_TIMEOUT` from its own spawn: a
/// fleet of 1000 takes seconds just to spawn on a busy machine), and every
/// upstream has its first verdict (or `STARTUP_TIMEOUT`).
async fn wait_ready(
    fleet: &Fleet,
    listen: SocketAddr,
    token: &CancellationToken,
) -> Result<Readiness, StartError> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let limit = format!("not ready after {}s", STARTUP_TIMEOUT.as_secs());
    let verdicts = async {
        let mut tickets = Vec::new();
        for job in fleet.jobs.values() {
            tickets.push((job, job.ready(STARTUP_TIMEOUT).await));
        }
        // (port, why not serving) for each that is not; `None` when it serves.
        let mut out: Vec<(u16, Option<String>)> = Vec::new();
        for (job, ticket) in tickets {
            let why = match ticket.await {
                Outcome::Serving { .. } => None,
                Outcome::Failed { reason } => {
                    let l = job.lifecycle();
                    // Still starting: say what its probes saw.
                    Some(match l.reason {
                        Some(probe) if l.state == Phase::Starting => format!("{limit}; {probe}"),
                        _ => reason,
                    })
                }
                other => Some(format!("{other:?}")),
            };
            out.push((job.port(), why));
        }
        for remote in &fleet.upstreams {
            let (slot, mut verdict) = (&remote.slot, remote.verdict.clone());
            let _ = tokio::time::timeout_at(
                deadline,
                verdict.wait_for(|v| !matches!(v.health, Health::Unknown { .. })),
            )
            .await;
            let v = verdict.borrow().clone();
            let why = match v.health {
                Health::Up { .. } => None,
                // A probe failure while it has no verdict yet.
                Health::Unknown { .. } => Some(match v.reason {
                    Some(probe) => format!("{limit}; {probe}"),
                    None => limit.clone(),
                }),
                Health::Down { .. } => Some(v.reason.unwrap_or_else(|| Phase::Running.to_string())),
            };
            let name = slot.upstream.clone().unwrap_or_default();
            out.push((slot.port, why.map(|w| format!("upstream {name}: {w}"))));
        }
        out
    };
    let verdicts = tokio::select! {
        biased;
        _ = token.cancelled() => return Err(StartError::Interrupted),
        v = verdicts => v,
    };
    let up = verdicts.iter().filter(|(_, why)| why.is_none()).count();
    if up == verdicts.len() {
        return Ok(Readiness::Ready { listen });
    }
    let failing: Vec<(u16, String)> = verdicts
        .into_iter()
        .filter_map(|(port, why)| why.map(|w| (port, w)))
        .collect();
    if up == 0 {
        return Err(StartError::NoneReady { failing });
    }
    Ok(Readiness::Degraded { listen, failing })
}

/// The command line for one backend.
pub(crate) fn launch_for(config: &Config, exe: &Path, port: u16) -> Launch {
    match &config.backend {
        BackendProgram::Builtin => Launch {
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
        BackendProgram::Custom { cwd, env, .. } => {
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
            backend: BackendProgram::Custom {
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
