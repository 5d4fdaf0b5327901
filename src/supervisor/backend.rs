//! One task per backend: the glue that executes the state machine's actions
//! (spawn, signal) and feeds it the events they cause (spawned, exited, probe
//! results, passive failures from the balancer, deadlines, shutdown).
//!
//! The task owns its `Backend` machine, its `Child` and the lifeline (a
//! pipe, or for `fleet guard` a socket that also brings back the command's
//! pid); after every event it publishes the machine's view as a `Lifecycle`
//! on its pool `Slot`'s watch, then answers the control messages (`job::Order`)
//! whose outcome is reached, or whose limit is up.
//!
//! The supervisor speaks to it only through its `Job`: verbs (drain,
//! restart, halt, ...), never raw lifecycle events. It reads only tokio's
//! clock, and starts and probes workers through `Io`, so the unit tests run
//! it on a paused clock with fake workers (`fake`).

use std::future::Future;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use std::net::SocketAddr;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::health;
use super::job::{Control, Launch, Order, Outcome};
use super::output::BackendLog;
use super::state::{self, Action, Backend, Event, Exit, Sig, State};
use crate::balancer::pool::{Roster, Slot};
use crate::config::{HealthConfig, HealthKind};
use crate::lifecycle::{ExitInfo, Lifecycle};

/// The fleet's one turn for a restart on failed probes (`health.restart_after`).
///
/// A probe that fails on every backend at once (a wrong `health.path`, a page
/// deleted from www) is far more likely a probe problem than every worker
/// hung at once, so such restarts go one at a time: a backend holds the turn
/// from its liveness SIGTERM until its new worker passes a probe (or it stops
/// restarting: failed, stopped, restarted by the user); the others wait, out
/// of rotation, and ask again at each failed probe. A real fleet-wide hang is
/// still cured, one backend after another.
#[derive(Debug, Default)]
pub(crate) struct RestartTurn(std::sync::Mutex<Option<u16>>);

impl RestartTurn {
    /// Take the turn for `port`; `Err(holder)` while another backend has it.
    fn take(&self, port: u16) -> Result<(), u16> {
        let mut holder = self.0.lock().expect("turn lock is never poisoned");
        match *holder {
            Some(other) if other != port => Err(other),
            _ => {
                *holder = Some(port);
                Ok(())
            }
        }
    }

    /// Give the turn back, if `port` has it.
    fn give_back(&self, port: u16) {
        let mut holder = self.0.lock().expect("turn lock is never poisoned");
        if *holder == Some(port) {
            *holder = None;
        }
    }
}

pub(crate) struct BackendTask {
    pub slot: Arc<Slot>,
    /// For waking waiters when this backend's view changes.
    pub backends: Arc<Roster>,
    pub launch: Launch,
    pub health: HealthConfig,
    pub machine: Backend,
    pub log: Arc<BackendLog>,
    pub passive: mpsc::Receiver<()>,
    /// Control messages from the backend's `Job`.
    pub commands: mpsc::Receiver<Order>,
    /// How it starts workers and probes them (a fake in unit tests).
    pub io: Arc<dyn Io>,
    pub token: CancellationToken,
    /// Read once the token fires: how long the worker gets between SIGTERM
    /// and SIGKILL (`fleet down --timeout` may have changed it).
    pub grace: watch::Receiver<std::time::Duration>,
    pub tracker: TaskTracker,
    /// What the last probe saw, while probes fail, in words
    /// (`health::reason`): shown as the reason of a starting or unhealthy
    /// backend, and in `up`'s "not ready" message.
    pub last_probe: Option<String>,
    /// Shared by every backend of the fleet: one restart on failed probes
    /// at a time.
    pub restart_turn: Arc<RestartTurn>,
}

pub(crate) type ProbeFuture =
    Pin<Box<dyn Future<Output = Result<(), health::ProbeFailure>> + Send>>;
/// The guard's report of its command's pid (`None`: it never came).
type ReportFuture = Pin<Box<dyn Future<Output = Option<u32>> + Send>>;

/// A running worker as the task sees it: a child process in the fleet, a
/// fake in the unit tests.
pub(crate) trait Process: Send {
    /// Wait for it to end.
    fn wait(&mut self) -> Pin<Box<dyn Future<Output = io::Result<ExitStatus>> + Send + '_>>;
    /// Signal it (its whole process group).
    fn signal(&self, sig: Sig);
}

/// The task's two contacts with the world: starting a worker, probing it.
/// [`Real`] in the fleet; the unit tests give a fake (no process, probes
/// answered by the test), so the task can run on a paused clock.
pub(crate) trait Io: Send + Sync {
    fn spawn(
        &self,
        launch: &Launch,
        port: u16,
        log: &Arc<BackendLog>,
        tracker: &TaskTracker,
    ) -> io::Result<Worker>;
    fn probe(&self, kind: &HealthKind, addr: SocketAddr, timeout: Duration) -> ProbeFuture;
}

/// Real processes and real probes.
pub(crate) struct Real;

/// A spawned child; signals go to its process group.
struct ChildProcess {
    child: Child,
    pid: u32,
}

impl Process for ChildProcess {
    fn wait(&mut self) -> Pin<Box<dyn Future<Output = io::Result<ExitStatus>> + Send + '_>> {
        Box::pin(self.child.wait())
    }
    fn signal(&self, sig: Sig) {
        signal_group(self.pid, sig);
    }
}

/// What a control message waits for, and where its outcome goes.
struct Waiter {
    goal: Goal,
    /// The limit, and when it is up (tokio's clock).
    limit: Duration,
    until: Instant,
    done: oneshot::Sender<Outcome>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goal {
    /// In rotation (or given up).
    Serving,
    /// Not running (stopped, failed).
    Stopped,
    /// No work in flight.
    Idle,
    /// The task has ended (`Retire`).
    Ended,
}

pub(crate) struct Worker {
    process: Box<dyn Process>,
    /// Held open for the worker's life; its EOF tells the worker we are gone.
    lifeline: Option<Lifeline>,
    /// What we spawned: the built-in worker, or `fleet guard` (whose
    /// process group is the backend's, so signals go to this pid).
    pid: u32,
    /// Under `fleet guard`: the configured command's pid, once the guard
    /// has reported it. `None` for the built-in worker.
    command_pid: Option<u32>,
    guarded: bool,
}

/// The worker's stdin: a pipe for the built-in worker; for `fleet guard` one
/// end of a socket pair, which also carries the command's pid back.
enum Lifeline {
    Pipe(#[allow(dead_code, reason = "held, never written")] ChildStdin),
    Socket(Arc<tokio::net::UnixStream>),
}

impl Worker {
    /// A worker without a lifeline (what a test's fake `Io` spawns).
    #[cfg(test)]
    pub(crate) fn bare(process: Box<dyn Process>, pid: u32) -> Self {
        Worker {
            process,
            lifeline: None,
            pid,
            command_pid: None,
            guarded: false,
        }
    }

    /// `(pid, guard_pid)` as status and the log name them: the command's
    /// pid and the guard's where a guard runs it, else the worker's alone.
    fn pids(&self) -> (Option<u32>, Option<u32>) {
        if self.guarded {
            (self.command_pid, Some(self.pid))
        } else {
            (Some(self.pid), None)
        }
    }
}

impl BackendTask {
    pub(crate) async fn run(mut self) {
        let port = self.slot.port;
        let mut worker: Option<Worker> = None;
        let mut probe: Option<ProbeFuture> = None;
        let mut next_probe = Instant::now();
        let mut shutting_down = false;
        // Set by `Retire`: the task ends once the worker is gone.
        let mut retiring = false;
        let mut was_routable = false;
        // Control messages waiting for their outcome.
        let mut waiters: Vec<Waiter> = Vec::new();
        // Failed probes since the spawn, for the start-up back-off.
        let mut start_failures = 0u32;
        // This backend has the fleet's restart turn (`RestartTurn`).
        let mut has_turn = false;
        // Past `restart_after` and told to wait for the turn (said once).
        let mut waiting_for_turn = false;
        // A probe passed since the command last changed: a refused connect
        // while starting is then a restart, not a command that never listens.
        let mut ever_passed = false;
        // The guard's report of the command's pid, while awaited.
        let mut report: Option<ReportFuture> = None;
        // What was last published on the slot: routable, and the lifecycle.
        let mut published: Option<(bool, Lifecycle)> = None;

        let mut action = self.machine.step(Event::Start, now());
        loop {
            // Execute what the last step asked for; spawning feeds back an event at once.
            while let Some(a) = action.take() {
                match a {
                    Action::Spawn => {
                        let ev = match self.io.spawn(&self.launch, port, &self.log, &self.tracker) {
                            Ok(w) => {
                                let pid = w.pid;
                                report = match &w.lifeline {
                                    Some(Lifeline::Socket(s)) => {
                                        Some(Box::pin(read_pid(s.clone())))
                                    }
                                    _ => None,
                                };
                                worker = Some(w);
                                start_failures = 0;
                                self.last_probe = None;
                                next_probe = Instant::now() + health::STARTING_INTERVAL;
                                Event::Spawned { pid }
                            }
                            Err(e) => {
                                warn!(target: "supervisor", port, error = %e, "could not start backend");
                                Event::SpawnFailed {
                                    error: format!(
                                        "could not start {}: {e}",
                                        self.launch.program.display()
                                    ),
                                }
                            }
                        };
                        action = self.machine.step(ev, now());
                    }
                    Action::Signal(sig) => {
                        if let Some(w) = &worker {
                            w.process.signal(sig);
                        }
                    }
                    Action::AskRestartTurn => match self.restart_turn.take(port) {
                        Ok(()) => {
                            has_turn = true;
                            waiting_for_turn = false;
                            warn!(target: "supervisor", port,
                                "restarting backend {port}: it failed {} health probes in a row (health.restart_after)",
                                self.health.restart_after);
                            action = self.machine.step(Event::RestartTurn, now());
                        }
                        Err(holder) => {
                            if !waiting_for_turn {
                                warn!(target: "supervisor", port, waiting_for = holder,
                                    "backend {port} failed {} health probes in a row, but is not restarted while backend {holder}                                      is being restarted for failing probes: such restarts go one at a time, since a probe that                                      fails on every backend at once is more likely wrong than every backend hung",
                                    self.health.restart_after);
                                waiting_for_turn = true;
                            }
                        }
                    },
                }
            }
            // The turn is held from the liveness restart until the new
            // worker passes a probe, or the backend stops restarting.
            if has_turn
                && !matches!(
                    self.machine.state(),
                    State::Stopping {
                        then: state::AfterStop::Restart,
                        ..
                    } | State::Backoff { .. }
                        | State::Starting { .. }
                )
            {
                self.restart_turn.give_back(port);
                has_turn = false;
            }
            if waiting_for_turn && self.machine.routable() {
                waiting_for_turn = false;
            }

            let routable = self.machine.routable();
            if routable != was_routable {
                self.slot.metrics.health_changes.inc();
                match self.machine.state() {
                    State::Running { .. } => {
                        info!(target: "supervisor", port, healthy = routable, "health changed")
                    }
                    s => info!(target: "supervisor", port, state = %s.phase(), "out of rotation"),
                }
                was_routable = routable;
            }
            // Most wake-ups of a large fleet change nothing (a passing probe
            // of a healthy backend): publish and wake waiters only on a
            // change, or when the balancer took the slot out meanwhile.
            let view = (routable, self.view(worker.as_ref()));
            if published.as_ref() != Some(&view) || self.slot.routable() != routable {
                self.slot.publish(routable, view.1.clone());
                self.backends.notify(routable);
                published = Some(view);
            }
            let now_t = Instant::now();
            waiters.retain_mut(|w| {
                if w.done.is_closed() {
                    return false;
                }
                match self.settle(w, worker.as_ref(), now_t) {
                    Some(outcome) => {
                        let (done, _) = oneshot::channel();
                        let _ = std::mem::replace(&mut w.done, done).send(outcome);
                        false
                    }
                    None => true,
                }
            });

            if (shutting_down || retiring)
                && worker.is_none()
                && !matches!(self.machine.state(), State::Stopping { .. })
            {
                break;
            }

            let probing = matches!(
                self.machine.state(),
                State::Starting { pid: Some(_), .. } | State::Running { .. }
            );
            if !probing {
                probe = None;
            }
            let probe_at = (probing && probe.is_none()).then_some(next_probe);
            let tick_at = self.machine.next_deadline().map(Instant::from_std);
            let wake = [probe_at, tick_at].into_iter().flatten().min();
            // A waiter's limit: answered at the top of the loop.
            let limit_at = waiters
                .iter()
                .filter(|w| w.goal != Goal::Ended)
                .map(|w| w.until)
                .min();
            let draining = waiters.iter().any(|w| w.goal == Goal::Idle);

            let ev = tokio::select! {
                biased;
                _ = self.token.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    Event::Stop { deadline: now() + *self.grace.borrow() }
                }
                Some(Order { control, done }) = self.commands.recv(), if !shutting_down => {
                    let (goal, limit, ev) = match control {
                        Control::Drain { limit } => (Goal::Idle, limit, Some(Event::Drain)),
                        Control::Restart { grace, limit } => {
                            (Goal::Serving, limit, Some(Event::Restart { deadline: now() + grace }))
                        }
                        Control::Halt { grace, limit } => {
                            (Goal::Stopped, limit, Some(Event::Halt { deadline: now() + grace }))
                        }
                        Control::Start { limit } => (Goal::Serving, limit, Some(Event::Start)),
                        Control::Ready { limit } => (Goal::Serving, limit, None),
                        Control::Retire { grace } => {
                            retiring = true;
                            (Goal::Ended, grace, Some(Event::Halt { deadline: now() + grace }))
                        }
                        Control::Configure { health, policy } => {
                            self.health = health;
                            self.machine.set_policy(policy);
                            let _ = done.send(Outcome::Applied);
                            continue;
                        }
                        Control::Relaunch(launch) => {
                            self.launch = launch;
                            ever_passed = false;
                            let _ = done.send(Outcome::Applied);
                            continue;
                        }
                    };
                    waiters.push(Waiter { goal, limit, until: Instant::now() + limit, done });
                    match ev {
                        Some(ev) => ev,
                        None => continue,
                    }
                }
                status = wait(&mut worker) => {
                    let w = worker.take().expect("wait() only completes with a worker");
                    probe = None;
                    report = None;
                    let (pid, guard_pid) = w.pids();
                    let exit = exit_of(status);
                    // Take the rest of its process group with it: a custom
                    // command's children must not keep the port.
                    w.process.signal(Sig::Kill);
                    // Stopped by us for a restart or a stop: expected, whatever the status.
                    let restarting = matches!(
                        self.machine.state(),
                        State::Stopping { then: state::AfterStop::Restart | state::AfterStop::Respawn, .. }
                    );
                    let held = matches!(
                        self.machine.state(),
                        State::Stopping { then: state::AfterStop::Hold, .. }
                    );
                    if restarting {
                        info!(target: "supervisor", port, pid, guard_pid, "backend stopped for a restart ({})", state::describe(exit));
                    } else if !shutting_down && !held {
                        warn!(target: "supervisor", port, pid, guard_pid, "backend {}", state::describe(exit));
                    } else {
                        info!(target: "supervisor", port, pid, guard_pid, "backend stopped ({})", state::describe(exit));
                    }
                    Event::Exited(exit)
                }
                result = poll_probe(&mut probe) => {
                    probe = None;
                    let starting = matches!(self.machine.state(), State::Starting { .. });
                    if starting && result.is_err() {
                        start_failures = start_failures.saturating_add(1);
                    }
                    let interval = if starting {
                        health::starting_delay(start_failures, self.health.interval)
                    } else {
                        self.health.interval
                    };
                    next_probe = Instant::now() + interval;
                    match result {
                        Ok(()) => {
                            self.last_probe = None;
                            ever_passed = true;
                            Event::ProbePassed
                        }
                        Err(e) => {
                            let starting_for = match self.machine.state() {
                                State::Starting { since, .. } => Some(now().saturating_duration_since(*since)),
                                _ => None,
                            };
                            self.last_probe = Some(health::reason(&e, health::Context {
                                port,
                                starting_for,
                                ever_passed,
                                custom: self.launch.guarded,
                            }));
                            Event::ProbeFailed
                        }
                    }
                }
                reported = poll_report(&mut report) => {
                    report = None;
                    if let (Some(w), Some(pid)) = (worker.as_mut(), reported) {
                        w.command_pid = Some(pid);
                        info!(target: "supervisor", port, pid, guard_pid = w.pid, "backend started");
                    }
                    // Published at the top of the loop; nothing for the machine.
                    continue;
                }
                Some(()) = self.passive.recv() => Event::PassiveFailure,
                // A waiter's limit, or a draining backend's last request:
                // answered at the top of the loop.
                _ = sleep_until(limit_at) => continue,
                _ = self.slot.until_drained(), if draining => continue,
                _ = sleep_until(wake) => {
                    if probe_at.is_some_and(|t| t <= Instant::now()) {
                        let (kind, addr, timeout) = (self.health.kind.clone(), self.slot.addr, self.health.timeout);
                        probe = Some(self.io.probe(&kind, addr, timeout));
                        // Balancer connects that timed out before this probe
                        // make its result decisive (`State::Running::suspect`).
                        if !self.slot.take_timeout() {
                            continue;
                        }
                        Event::ConnectTimedOut
                    } else {
                        Event::Tick
                    }
                }
            };
            action = self.machine.step(ev, now());
        }
        self.restart_turn.give_back(port);
        self.slot.publish(self.machine.routable(), self.view(None));
        for w in waiters {
            let outcome = match w.goal {
                Goal::Ended => Outcome::Stopped,
                _ => Outcome::Failed {
                    reason: "its task has ended: the fleet is shutting down".into(),
                },
            };
            let _ = w.done.send(outcome);
        }
    }

    /// The outcome `w` waits for, if it is here (or its limit is up).
    fn settle(&self, w: &Waiter, worker: Option<&Worker>, now_t: Instant) -> Option<Outcome> {
        let st = self.machine.state();
        let late = now_t >= w.until;
        match w.goal {
            Goal::Serving => {
                if self.machine.routable()
                    && let Some(wk) = worker
                {
                    // A guard's report of its command's pid may trail the first probe.
                    let pid = wk.command_pid.unwrap_or(wk.pid);
                    return Some(Outcome::Serving { pid });
                }
                st.cause_text()
                    .or_else(|| late.then(|| self.why_not_serving(w.limit)))
                    .map(|reason| Outcome::Failed { reason })
            }
            Goal::Stopped => match st {
                State::Stopped { .. } | State::Failed { .. } if worker.is_none() => {
                    Some(Outcome::Stopped)
                }
                _ if late => Some(Outcome::Failed {
                    reason: format!("still {}", st.phase()),
                }),
                _ => None,
            },
            Goal::Idle => {
                let in_flight = self.slot.active();
                (in_flight == 0 || late).then_some(Outcome::Drained { in_flight })
            }
            Goal::Ended => None,
        }
    }

    /// Why it is not serving after `limit`, in words: what its probes saw,
    /// its state and last exit, or the time it had.
    fn why_not_serving(&self, limit: Duration) -> String {
        let m = &self.machine;
        match (self.reason(), m.last_exit()) {
            (Some(r), _) => r,
            (None, Some(e)) => format!("{} (last {})", m.state().phase(), self.exit_info(e)),
            (None, None) => format!("not ready after {}", humantime::format_duration(limit)),
        }
    }

    /// Why the backend is failed, stopped, starting or unhealthy, in words.
    fn reason(&self) -> Option<String> {
        match self.machine.state() {
            State::Starting { .. } | State::Running { healthy: false, .. } => {
                self.last_probe.clone()
            }
            st => st.cause_text(),
        }
    }

    /// The last exit, with fleet's own cause for it.
    fn exit_info(&self, e: Exit) -> ExitInfo {
        ExitInfo {
            cause: self.machine.last_exit_cause().map(|c| c.to_string()),
            ..exit_info(e)
        }
    }
}

impl Io for Real {
    fn probe(&self, kind: &HealthKind, addr: SocketAddr, timeout: Duration) -> ProbeFuture {
        let kind = kind.clone();
        Box::pin(async move { health::probe(&kind, addr, timeout).await })
    }

    fn spawn(
        &self,
        l: &Launch,
        port: u16,
        log: &Arc<BackendLog>,
        tracker: &TaskTracker,
    ) -> io::Result<Worker> {
        let mut cmd = Command::new(&l.program);
        cmd.args(&l.args)
            .env("PORT", port.to_string())
            .envs(l.env.iter().map(|(k, v)| (k, v)))
            .stdin(if l.lifeline {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group: a terminal's Ctrl-C reaches only the
            // supervisor, which stops workers in order; shutdown signals the
            // whole group so a custom command's children go too.
            .process_group(0)
            // Backstop if this task is ever dropped without reaping.
            .kill_on_drop(true);
        if let Some(cwd) = &l.cwd {
            cmd.current_dir(cwd);
        }
        if l.die_with_parent {
            super::orphans::die_with_parent(&mut cmd);
        }
        // The guard's lifeline is a socket pair, so it can report its
        // command's pid on it. Both ends are close-on-exec (std), so no other
        // child inherits ours; the guard's end becomes its fd 0 (dup2 clears
        // the flag), and `cmd` drops its copy once spawned, so the guard sees
        // EOF when we are gone.
        let socket = if l.guarded {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
            cmd.stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)));
            ours.set_nonblocking(true)?;
            Some(tokio::net::UnixStream::from_std(ours)?)
        } else {
            None
        };
        let mut child = cmd.spawn()?;
        drop(cmd);
        let pid = child.id().expect("a just-spawned child has a pid");
        let lifeline = match socket {
            Some(s) => Some(Lifeline::Socket(Arc::new(s))),
            None => child.stdin.take().map(Lifeline::Pipe),
        };
        for (stream, reader) in [
            (
                "stdout",
                child
                    .stdout
                    .take()
                    .map(|r| Box::new(r) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            ),
            (
                "stderr",
                child
                    .stderr
                    .take()
                    .map(|r| Box::new(r) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            ),
        ] {
            if let Some(reader) = reader {
                let log = log.clone();
                tracker.spawn(async move { log.pump(reader, stream).await });
            }
        }
        // A guarded command is logged once the guard reports its pid.
        if !l.guarded {
            info!(target: "supervisor", port, pid, "backend started");
        }
        Ok(Worker {
            process: Box::new(ChildProcess { child, pid }),
            lifeline,
            pid,
            command_pid: None,
            guarded: l.guarded,
        })
    }
}

impl BackendTask {
    /// The machine's view, with the pids of `worker` while it runs: the
    /// lifecycle the task publishes on the pool's slot (what the `Job`,
    /// `fleet status` and the balancer read).
    fn view(&self, worker: Option<&Worker>) -> Lifecycle {
        let m = &self.machine;
        let st = m.state();
        // The state's pid is what we spawned; with a guard, status shows the
        // command's pid and the guard's beside it.
        let (pid, guard_pid) = match (st.pid(), worker) {
            (Some(_), Some(w)) => w.pids(),
            (pid, _) => (pid, None),
        };
        let since = match st {
            State::Running { since, .. } | State::Starting { since, .. } => Some(*since),
            _ => None,
        };
        Lifecycle {
            pid,
            guard_pid,
            held: st.held(),
            state: st.phase(),
            restarts: m.restarts(),
            since,
            last_exit: m.last_exit().map(|e| self.exit_info(e)),
            reason: self.reason(),
        }
    }
}

/// Wait for the worker to exit; pending forever when there is none.
async fn wait(worker: &mut Option<Worker>) -> io::Result<ExitStatus> {
    match worker {
        Some(w) => w.process.wait().await,
        None => std::future::pending().await,
    }
}

async fn poll_probe(probe: &mut Option<ProbeFuture>) -> Result<(), health::ProbeFailure> {
    match probe {
        Some(p) => p.await,
        None => std::future::pending().await,
    }
}

async fn poll_report(report: &mut Option<ReportFuture>) -> Option<u32> {
    match report {
        Some(r) => r.await,
        None => std::future::pending().await,
    }
}

/// The guard's one line on its lifeline: its command's pid. `None` if the
/// guard closes it first (it could not start the command) or says
/// something else.
async fn read_pid(socket: Arc<tokio::net::UnixStream>) -> Option<u32> {
    let mut line = Vec::new();
    loop {
        socket.readable().await.ok()?;
        let mut buf = [0u8; 32];
        match socket.try_read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => line.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return None,
        }
        if let Some(end) = line.iter().position(|b| *b == b'\n') {
            return std::str::from_utf8(&line[..end]).ok()?.trim().parse().ok();
        }
        if line.len() > 32 {
            return None;
        }
    }
}

/// Now on tokio's clock (paused in tests), as the state machine takes it.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn exit_of(status: io::Result<ExitStatus>) -> Exit {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(sig)) => Exit::Signal(sig),
            (None, None) => Exit::Code(-1),
        },
        Err(_) => Exit::Code(-1),
    }
}

pub(crate) fn exit_info(e: Exit) -> ExitInfo {
    match e {
        Exit::Code(c) => ExitInfo {
            code: Some(c),
            signal: None,
            name: None,
            cause: None,
        },
        Exit::Signal(s) => ExitInfo {
            code: None,
            signal: Some(s),
            name: Some(state::signal_name(s)),
            cause: None,
        },
    }
}

/// Signal the worker's process group. SIGTERM is followed by SIGCONT so a
/// stopped (SIGSTOPped, hung) worker wakes up to handle it.
fn signal_group(pid: u32, sig: Sig) {
    let pg = Pid::from_raw(pid as i32);
    match sig {
        Sig::Term => {
            let _ = killpg(pg, Signal::SIGTERM);
            let _ = killpg(pg, Signal::SIGCONT);
        }
        Sig::Kill => {
            let _ = killpg(pg, Signal::SIGKILL);
        }
    }
}

/// A backend task without processes or sockets, for tests on a paused
/// clock: workers are fakes that exit on SIGTERM (or only on SIGKILL when
/// stubborn), and probes pass or fail as the test says.
#[cfg(test)]
pub(crate) mod fake {
    use std::future::Future;
    use std::net::SocketAddr;
    use std::os::unix::process::ExitStatusExt;
    use std::pin::Pin;
    use std::process::ExitStatus;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::sync::{mpsc, watch};
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::{BackendTask, Io, ProbeFuture, Process, RestartTurn, Worker};
    use crate::balancer::pool::{Pool, Roster, Slot};
    use crate::config::{Config, HealthKind};
    use crate::supervisor::health::ProbeFailure;
    use crate::supervisor::job::{Job, Launch};
    use crate::supervisor::output::BackendLog;
    use crate::supervisor::state::{Backend, Policy, Sig};

    /// What the fake workers and probes do, and what was spawned.
    #[derive(Debug)]
    pub(crate) struct FakeIo {
        next_pid: AtomicU32,
        /// Probes pass.
        pub(crate) healthy: AtomicBool,
        /// Ports whose probes fail even so.
        pub(crate) sick: Mutex<Vec<u16>>,
        /// Workers ignore SIGTERM.
        pub(crate) stubborn: AtomicBool,
        /// Every spawn: the port, the program and the pid.
        pub(crate) spawned: Mutex<Vec<(u16, String, u32)>>,
    }

    impl FakeIo {
        pub(crate) fn new() -> Arc<Self> {
            Arc::new(FakeIo {
                next_pid: AtomicU32::new(1000),
                healthy: AtomicBool::new(true),
                sick: Mutex::default(),
                stubborn: AtomicBool::new(false),
                spawned: Mutex::default(),
            })
        }

        pub(crate) fn spawned(&self) -> Vec<(u16, String, u32)> {
            self.spawned.lock().unwrap().clone()
        }
    }

    struct FakeProcess {
        tx: mpsc::UnboundedSender<Sig>,
        rx: mpsc::UnboundedReceiver<Sig>,
        stubborn: bool,
    }

    impl Process for FakeProcess {
        fn wait(
            &mut self,
        ) -> Pin<Box<dyn Future<Output = std::io::Result<ExitStatus>> + Send + '_>> {
            Box::pin(async move {
                while let Some(sig) = self.rx.recv().await {
                    match sig {
                        Sig::Term if !self.stubborn => return Ok(ExitStatus::from_raw(0)),
                        Sig::Kill => return Ok(ExitStatus::from_raw(9)),
                        Sig::Term => {}
                    }
                }
                std::future::pending().await
            })
        }
        fn signal(&self, sig: Sig) {
            let _ = self.tx.send(sig);
        }
    }

    impl Io for FakeIo {
        fn spawn(
            &self,
            launch: &Launch,
            port: u16,
            _: &Arc<BackendLog>,
            _: &TaskTracker,
        ) -> std::io::Result<Worker> {
            let pid = self.next_pid.fetch_add(1, Ordering::Relaxed);
            let program = launch.program.display().to_string();
            self.spawned.lock().unwrap().push((port, program, pid));
            let (tx, rx) = mpsc::unbounded_channel();
            let stubborn = self.stubborn.load(Ordering::Relaxed);
            Ok(Worker::bare(
                Box::new(FakeProcess { tx, rx, stubborn }),
                pid,
            ))
        }

        fn probe(&self, _: &HealthKind, addr: SocketAddr, _: Duration) -> ProbeFuture {
            let ok = self.healthy.load(Ordering::Relaxed)
                && !self.sick.lock().unwrap().contains(&addr.port());
            Box::pin(async move {
                if ok {
                    Ok(())
                } else {
                    Err(ProbeFailure::Connect(std::io::ErrorKind::ConnectionRefused))
                }
            })
        }
    }

    pub(crate) fn launch(program: &str) -> Launch {
        Launch {
            program: program.into(),
            args: Vec::new(),
            cwd: None,
            env: Vec::new(),
            lifeline: false,
            die_with_parent: false,
            guarded: false,
        }
    }

    /// One backend task on port 9002 with `io`, and its job.
    pub(crate) fn job(io: Arc<FakeIo>, token: &CancellationToken, tracker: &TaskTracker) -> Job {
        let (slot, passive) = Slot::new(9002, SocketAddr::from(([127, 0, 0, 1], 9002)));
        let slot = Arc::new(slot);
        let config = Config::default();
        let backends = Arc::new(Roster::new(
            Pool::new(vec![slot.clone()]),
            config.balancer.clone(),
        ));
        let machine = Backend::new(Policy::new(&config.restart, &config.health), 1);
        let (control, commands) = mpsc::channel(8);
        let task = BackendTask {
            slot: slot.clone(),
            backends,
            launch: launch("v1"),
            health: config.health.clone(),
            machine,
            log: Arc::new(BackendLog::new(
                "/nonexistent/fleet-test.log".into(),
                9002,
                false,
            )),
            passive,
            commands,
            io,
            token: token.child_token(),
            grace: watch::channel(Duration::from_secs(1)).1,
            tracker: tracker.clone(),
            last_probe: None,
            restart_turn: Arc::new(RestartTurn::default()),
        };
        tracker.spawn(task.run());
        Job::new(slot, control)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restart_turn_is_one_backends_at_a_time_and_only_its_holder_gives_it_back() {
        let turn = RestartTurn::default();
        assert_eq!(turn.take(9002), Ok(()));
        assert_eq!(turn.take(9002), Ok(()), "the holder may ask again");
        assert_eq!(turn.take(9003), Err(9002));
        turn.give_back(9003);
        assert_eq!(turn.take(9004), Err(9002), "only the holder gives it back");
        turn.give_back(9002);
        assert_eq!(turn.take(9003), Ok(()));
    }
}
