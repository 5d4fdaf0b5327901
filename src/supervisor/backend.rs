//! One task per backend: the glue that executes the state machine's actions
//! (spawn, signal) and feeds it the events they cause (spawned, exited, probe
//! results, passive failures from the balancer, deadlines, shutdown).
//!
//! The task owns its `Backend` machine, its `Child` and the lifeline (a
//! pipe, or for `fleet guard` a socket that also brings back the command's
//! pid); after every event it publishes the machine's view to its pool `Slot`.

use std::future::Future;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::health;
use super::output::BackendLog;
use super::state::{self, Action, Backend, Event, Exit, Policy, Sig, State};
use crate::balancer::pool::{Backends, Slot};
use crate::config::HealthConfig;
use crate::lifecycle::{ExitInfo, Lifecycle};

/// What to execute for one backend.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub program: std::path::PathBuf,
    pub args: Vec<String>,
    pub cwd: Option<std::path::PathBuf>,
    pub env: Vec<(String, String)>,
    /// The built-in worker and `fleet guard` read their stdin as a lifeline.
    pub lifeline: bool,
    /// Linux: SIGKILL it when the supervisor dies. Not for `fleet guard`,
    /// which must outlive us long enough to kill what it guards.
    pub die_with_parent: bool,
    /// A configured command under `fleet guard`, which may not use `{port}`.
    /// Its lifeline is a socket, on which the guard reports the command's
    /// pid (what `fleet status` shows; the guard's is `guard_pid`).
    pub guarded: bool,
}

/// What the supervisor can tell one backend task.
#[derive(Debug)]
pub(crate) enum BackendCmd {
    /// A deliberate transition (`Drain`, `Restart`, `Halt` or `Start`);
    /// the sender is told once the result is published.
    Event(Event, tokio::sync::oneshot::Sender<()>),
    /// New probe settings and restart policy (`fleet reload`), from now on.
    Settings {
        health: HealthConfig,
        policy: Policy,
    },
    /// A new command line (`fleet reload`), used from the next spawn.
    Launch(Launch),
    /// Stop for good (`fleet scale` down): SIGKILL past `deadline`, then the
    /// task ends.
    Retire { deadline: std::time::Instant },
}

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

/// The supervisor's end of one backend task.
#[derive(Debug)]
pub(crate) struct BackendHandle {
    pub slot: Arc<Slot>,
    pub commands: mpsc::Sender<BackendCmd>,
    pub join: tokio::task::JoinHandle<()>,
}

pub(crate) struct BackendTask {
    pub slot: Arc<Slot>,
    /// For waking waiters when this backend's view changes.
    pub backends: Arc<Backends>,
    pub launch: Launch,
    pub health: HealthConfig,
    pub machine: Backend,
    pub log: Arc<BackendLog>,
    pub passive: mpsc::Receiver<()>,
    pub commands: mpsc::Receiver<BackendCmd>,
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

type ProbeFuture = Pin<Box<dyn Future<Output = Result<(), health::ProbeFailure>> + Send>>;
/// The guard's report of its command's pid (`None`: it never came).
type ReportFuture = Pin<Box<dyn Future<Output = Option<u32>> + Send>>;

struct Worker {
    child: Child,
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
        // A command's acknowledgement, sent once its effect is published.
        let mut ack: Option<tokio::sync::oneshot::Sender<()>> = None;
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

        let mut action = self.machine.step(Event::Start, Instant::now().into_std());
        loop {
            // Execute what the last step asked for; spawning feeds back an event at once.
            while let Some(a) = action.take() {
                match a {
                    Action::Spawn => {
                        let ev = match self.spawn() {
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
                        action = self.machine.step(ev, std::time::Instant::now());
                    }
                    Action::Signal(sig) => {
                        if let Some(pid) = self.machine.state().pid() {
                            signal_group(pid, sig);
                        }
                    }
                    Action::AskRestartTurn => match self.restart_turn.take(port) {
                        Ok(()) => {
                            has_turn = true;
                            waiting_for_turn = false;
                            warn!(target: "supervisor", port,
                                "restarting backend {port}: it failed {} health probes in a row (health.restart_after)",
                                self.health.restart_after);
                            action = self
                                .machine
                                .step(Event::RestartTurn, std::time::Instant::now());
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
            self.publish(worker.as_ref());
            self.backends.notify(routable);
            if let Some(a) = ack.take() {
                let _ = a.send(());
            }

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

            let ev = tokio::select! {
                biased;
                _ = self.token.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    Event::Stop { deadline: std::time::Instant::now() + *self.grace.borrow() }
                }
                Some(cmd) = self.commands.recv(), if !shutting_down => match cmd {
                    BackendCmd::Event(ev, done) => {
                        ack = Some(done);
                        ev
                    }
                    BackendCmd::Settings { health, policy } => {
                        self.health = health;
                        self.machine.set_policy(policy);
                        continue;
                    }
                    BackendCmd::Launch(launch) => {
                        self.launch = launch;
                        ever_passed = false;
                        continue;
                    }
                    BackendCmd::Retire { deadline } => {
                        retiring = true;
                        Event::Halt { deadline }
                    }
                },
                status = wait(&mut worker) => {
                    let w = worker.take().expect("wait() only completes with a worker");
                    probe = None;
                    report = None;
                    let (pid, guard_pid) = w.pids();
                    let exit = exit_of(status);
                    // Take the rest of its process group with it: a custom
                    // command's children must not keep the port.
                    let _ = killpg(Pid::from_raw(w.pid as i32), Signal::SIGKILL);
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
                                State::Starting { since, .. } => Some(since.elapsed()),
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
                _ = sleep_until(wake) => {
                    if probe_at.is_some_and(|t| t <= Instant::now()) {
                        let (kind, addr, timeout) = (self.health.kind.clone(), self.slot.addr, self.health.timeout);
                        probe = Some(Box::pin(async move { health::probe(&kind, addr, timeout).await }));
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
            action = self.machine.step(ev, std::time::Instant::now());
        }
        self.restart_turn.give_back(port);
        self.publish(None);
    }

    fn spawn(&mut self) -> io::Result<Worker> {
        let l = &self.launch;
        let mut cmd = Command::new(&l.program);
        cmd.args(&l.args)
            .env("PORT", self.slot.port.to_string())
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
                let log = self.log.clone();
                self.tracker
                    .spawn(async move { log.pump(reader, stream).await });
            }
        }
        // A guarded command is logged once the guard reports its pid.
        if !l.guarded {
            info!(target: "supervisor", port = self.slot.port, pid, "backend started");
        }
        Ok(Worker {
            child,
            lifeline,
            pid,
            command_pid: None,
            guarded: l.guarded,
        })
    }

    /// Publish the machine's view, with the pids of `worker` while it runs.
    fn publish(&self, worker: Option<&Worker>) {
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
        let reason = match st {
            State::Failed { reason } => Some(reason.clone()),
            State::Stopped { reason } => reason.clone(),
            State::Starting { .. } | State::Running { healthy: false, .. } => {
                self.last_probe.clone()
            }
            _ => None,
        };
        self.slot.publish(
            m.routable(),
            Lifecycle {
                pid,
                guard_pid,
                held: st.held(),
                state: st.phase(),
                restarts: m.restarts(),
                since,
                last_exit: m.last_exit().map(|e| ExitInfo {
                    cause: m.last_exit_cause().map(str::to_owned),
                    ..exit_info(e)
                }),
                reason,
            },
        );
    }
}

/// Wait for the worker to exit; pending forever when there is none.
async fn wait(worker: &mut Option<Worker>) -> io::Result<ExitStatus> {
    match worker {
        Some(w) => w.child.wait().await,
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
