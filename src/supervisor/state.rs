//! The backend lifecycle as a pure state machine: events in, actions out.
//!
//! This module owns `State`; nothing else assigns it. It does no I/O, knows
//! nothing of tokio, and takes `now` as a parameter, so every edge is unit
//! tested without a clock. `supervisor::backend` is the glue that executes the
//! returned `Action`s and feeds back the `Event`s they cause.
//!
//! Invariant: a backend is routable iff it is `Running { healthy: true, .. }`.
//!
//! ```text
//!            Start                 first probe passes
//!  Stopped ────────▶ Starting ─────────────────────────▶ Running{healthy}
//!     ▲                 │  ▲                               │  │ fall fails ⇄ rise passes
//!     │ policy says     │  │ backoff elapsed               │  │ (healthy flips, still Running)
//!     │ no restart      ▼  │                               │  │
//!     ├──────────── exited ──▶ Backoff ◀──── exited ───────┘  │ restart_after fails: ask for
//!     │                 │                                     │ the fleet's restart turn
//!     │                 │                                     ▼ RestartTurn (granted)
//!     │                 └─▶ Failed (crash loop)            Stopping{then: Restart}
//!     └──────────────────── Stopping{then: Stay} ◀── Stop (shutdown), from any live state
//! ```
//!
//! A restart for failed probes needs the fleet's one turn (`AskRestartTurn`,
//! granted by the glue as `RestartTurn`): a probe that fails on every
//! backend at once is more likely wrong than every backend hung, so they are
//! restarted one at a time rather than all together. Until its turn comes, a
//! backend past `restart_after` stays `Running`, out of rotation, and asks
//! again at each failed probe.
//!
//! Deliberate edges (`fleet restart`, `stop`, `start`, `scale`) are the
//! user's, not the policy's: they work under `restart.policy: never`, bring
//! a `Failed` backend back, and neither count toward the crash loop nor wait
//! out a backoff (a deliberate start forgets the crash history).
//!
//! ```text
//!  Running ──Drain──▶ Draining (out of rotation, finishing in-flight work)
//!  Running | Draining | Starting ──Restart──▶ Stopping{then: Respawn} ──exited──▶ Starting
//!  Running | Draining | Starting ──Halt─────▶ Stopping{then: Hold} ────exited──▶ Stopped (by fleet stop)
//!  Stopped | Failed | Backoff ──Restart / Start──▶ Starting;  ──Halt──▶ Stopped (by fleet stop)
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::warn;

use crate::config::{HealthConfig, RestartConfig, RestartPolicy};
use crate::lifecycle::Phase;

/// How long a `Starting` backend may take to pass its first probe before it
/// is killed and restarted (a program that never listens, or listens elsewhere).
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Grace between SIGTERM and SIGKILL when liveness restarts a hung backend.
pub(crate) const LIVENESS_GRACE: Duration = Duration::from_secs(2);

/// Why fleet itself stopped a worker to restart it (`last_exit_cause`): its
/// exit (often a clean `exit 0` after SIGTERM) is then no crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RestartCause {
    /// Liveness: `restart_after` failed probes in a row.
    FailedHealth,
    /// It did not pass a probe within `START_TIMEOUT`.
    NotReady,
}

impl std::fmt::Display for RestartCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RestartCause::FailedHealth => "restarted by fleet: failed health checks",
            RestartCause::NotReady => "restarted by fleet: not ready in time",
        })
    }
}

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub(crate) fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

/// What to do once a `Stopping` backend has exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterStop {
    /// Liveness or start timeout: restart per the policy (backoff, crash loop).
    Restart,
    /// Shutdown: stay stopped.
    Stay,
    /// Deliberate restart (`fleet restart`): start again at once, whatever
    /// the policy says.
    Respawn,
    /// Deliberate stop (`fleet stop`): stay stopped until `fleet start`.
    Hold,
}

/// Why a backend is `Stopped` (rendered in words only for status and
/// messages: the supervisor decides from the variant).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StopCause {
    /// `fleet stop`, on purpose: stopped until `fleet start`.
    Held,
    /// The restart policy declined a restart after `what` (an exit, or a
    /// spawn that failed).
    Declined { what: String, policy: RestartPolicy },
}

impl std::fmt::Display for StopCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopCause::Held => f.write_str("stopped by `fleet stop`; `fleet start` brings it back"),
            StopCause::Declined { what, policy } => {
                write!(f, "{what}; restart policy is {}", policy_name(*policy))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum State {
    /// Not running and not scheduled to run: before `Start`, after shutdown,
    /// or when the restart policy declined a restart (`cause` says which;
    /// `None`: not started yet, or shut down).
    Stopped { cause: Option<StopCause> },
    /// Spawn requested (`pid` is None until the glue reports it); probed
    /// quickly and routable at the first pass.
    Starting { pid: Option<u32>, since: Instant },
    /// Up since `since` (when it was spawned). `passes`/`fails` count
    /// consecutive probe results since the last flip. `suspect`: a connect
    /// to it timed out since the last probe, so a failing probe is
    /// corroboration enough to take it out at once.
    Running {
        pid: u32,
        since: Instant,
        healthy: bool,
        passes: u32,
        fails: u32,
        suspect: bool,
    },
    /// Out of rotation before a deliberate restart or stop, so its in-flight
    /// work can finish; the supervisor decides when it has waited enough.
    Draining { pid: u32, since: Instant },
    /// Waiting out the restart delay.
    Backoff { until: Instant },
    /// Signalled; waiting for the process to exit. SIGKILL at `deadline`.
    Stopping {
        pid: u32,
        deadline: Instant,
        then: AfterStop,
        killed: bool,
    },
    /// Gave up: crash loop. Only a deliberate restart or start leaves it.
    Failed { reason: String },
}

impl State {
    /// The phase in `fleet status` and the JSON contract.
    pub(crate) fn phase(&self) -> Phase {
        match self {
            State::Stopped { .. } => Phase::Stopped,
            State::Starting { .. } => Phase::Starting,
            State::Running { .. } => Phase::Running,
            State::Draining { .. } => Phase::Draining,
            State::Backoff { .. } => Phase::Backoff,
            State::Stopping { .. } => Phase::Stopping,
            State::Failed { .. } => Phase::Failed,
        }
    }

    /// Stopped by `fleet stop`, on purpose: not serving, but not a fault
    /// (status shows it `stopped`, and it does not make the fleet degraded).
    pub(crate) fn held(&self) -> bool {
        matches!(
            self,
            State::Stopped {
                cause: Some(StopCause::Held)
            }
        )
    }

    /// Why it is stopped or failed, in words (what status shows as `reason`).
    pub(crate) fn cause_text(&self) -> Option<String> {
        match self {
            State::Failed { reason } => Some(reason.clone()),
            State::Stopped { cause } => cause.as_ref().map(ToString::to_string),
            _ => None,
        }
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        match self {
            State::Starting { pid, .. } => *pid,
            State::Running { pid, .. }
            | State::Draining { pid, .. }
            | State::Stopping { pid, .. } => Some(*pid),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// Begin supervising: at start-up, and `fleet start` (which also brings
    /// a `Failed` backend back).
    Start,
    /// `fleet restart`, `stop` or `scale`: take it out of rotation and let
    /// its in-flight work finish.
    Drain,
    /// `fleet restart`: stop the worker (SIGKILL past `deadline`) and start
    /// a new one at once.
    Restart {
        deadline: Instant,
    },
    /// `fleet stop` (and shrinking by `fleet scale`): stop the worker
    /// (SIGKILL past `deadline`) and keep it stopped until `Start`.
    Halt {
        deadline: Instant,
    },
    /// The glue spawned the worker.
    Spawned {
        pid: u32,
    },
    /// The glue could not spawn it (missing program, bad cwd, ...).
    SpawnFailed {
        error: String,
    },
    /// The worker process exited.
    Exited(Exit),
    ProbePassed,
    ProbeFailed,
    /// The fleet's turn for a restart on failed probes, which this backend
    /// asked for (`Action::AskRestartTurn`), is its own.
    RestartTurn,
    /// The balancer could not connect to this backend (refused, reset) or it
    /// closed before answering: out of rotation at once.
    PassiveFailure,
    /// A balancer connect timed out: evidence only together with a failed probe.
    ConnectTimedOut,
    /// A deadline from `next_deadline` was reached.
    Tick,
    /// Shutdown: stop the worker, SIGKILL past `deadline`.
    Stop {
        deadline: Instant,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sig {
    Term,
    Kill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Spawn,
    /// Signal the worker's whole process group.
    Signal(Sig),
    /// It failed `restart_after` probes in a row: ask for the fleet's one
    /// turn for a restart on failed probes; `Event::RestartTurn` if granted.
    AskRestartTurn,
}

/// The policy knobs the machine needs (copied from the config).
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub restart: RestartConfig,
    pub rise: u32,
    pub fall: u32,
    pub restart_after: u32,
}

impl Policy {
    pub(crate) fn new(restart: &RestartConfig, health: &HealthConfig) -> Self {
        Policy {
            restart: restart.clone(),
            rise: health.rise,
            fall: health.fall,
            restart_after: health.restart_after,
        }
    }
}

/// One backend's lifecycle and the bookkeeping that outlives a single worker.
#[derive(Debug)]
pub(crate) struct Backend {
    state: State,
    policy: Policy,
    /// Restarts so far (every spawn after the first).
    restarts: u32,
    /// Exponent of the next backoff; reset once a worker stays healthy for `max_backoff`.
    attempt: u32,
    /// When recent restarts happened, for crash-loop detection over `window`.
    recent: VecDeque<Instant>,
    last_exit: Option<Exit>,
    /// Why fleet itself stopped the last worker that exited, if it did: its
    /// exit (often a clean `exit 0` after SIGTERM) is no crash.
    last_exit_cause: Option<RestartCause>,
    /// The cause to record when the worker being stopped for a restart exits.
    stopping_for: Option<RestartCause>,
    /// Jitter source; seeded so tests are deterministic.
    rng: fastrand::Rng,
}

impl Backend {
    pub(crate) fn new(policy: Policy, seed: u64) -> Self {
        Backend {
            state: State::Stopped { cause: None },
            policy,
            restarts: 0,
            attempt: 0,
            recent: VecDeque::new(),
            last_exit: None,
            last_exit_cause: None,
            stopping_for: None,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    pub(crate) fn state(&self) -> &State {
        &self.state
    }
    /// New settings from `fleet reload`; they apply from the next event.
    pub(crate) fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }
    pub(crate) fn restarts(&self) -> u32 {
        self.restarts
    }
    pub(crate) fn last_exit(&self) -> Option<Exit> {
        self.last_exit
    }
    /// Why fleet stopped the last worker that exited ("failed health
    /// checks"), or None if it exited on its own (or at shutdown).
    pub(crate) fn last_exit_cause(&self) -> Option<RestartCause> {
        self.last_exit_cause
    }
    pub(crate) fn routable(&self) -> bool {
        matches!(self.state, State::Running { healthy: true, .. })
    }

    /// The next instant at which the machine wants a `Tick`.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Backoff { until } => Some(*until),
            State::Stopping {
                deadline, killed, ..
            } => (!killed).then_some(*deadline),
            State::Starting { since, .. } => Some(*since + START_TIMEOUT),
            // The backoff exponent resets once a worker has been up for max_backoff.
            State::Running { since, .. } if self.attempt > 0 => {
                Some(*since + self.policy.restart.max_backoff)
            }
            _ => None,
        }
    }

    /// Apply one event. Returns the action the glue must perform, if any.
    pub(crate) fn step(&mut self, ev: Event, now: Instant) -> Option<Action> {
        let state = std::mem::replace(&mut self.state, State::Stopped { cause: None });
        let (next, action) = self.transition(state, ev, now);
        self.state = next;
        action
    }

    fn transition(&mut self, state: State, ev: Event, now: Instant) -> (State, Option<Action>) {
        use State::*;
        let p = &self.policy;
        match (state, ev) {
            // Stopped | Failed -> Starting (first start, or `fleet start`)
            (Stopped { .. } | Failed { .. }, Event::Start) => self.deliberate_start(now),
            // Running -> Draining (out of rotation before a deliberate stop)
            (Running { pid, since, .. }, Event::Drain) => (Draining { pid, since }, None),
            // Running | Draining | Starting -> Stopping (deliberate restart)
            (
                Running { pid, .. } | Draining { pid, .. } | Starting { pid: Some(pid), .. },
                Event::Restart { deadline },
            ) => stopping(pid, deadline, AfterStop::Respawn),
            // Running | Draining | Starting -> Stopping (deliberate stop)
            (
                Running { pid, .. } | Draining { pid, .. } | Starting { pid: Some(pid), .. },
                Event::Halt { deadline },
            ) => stopping(pid, deadline, AfterStop::Hold),
            // Stopping -> Stopping (a deliberate restart or stop overrides a
            // liveness restart or the other deliberate one, the later word
            // winning; shutdown overrides both)
            (
                Stopping {
                    pid,
                    deadline,
                    then,
                    killed,
                },
                ev @ (Event::Restart { deadline: d } | Event::Halt { deadline: d }),
            ) if then != AfterStop::Stay => (
                Stopping {
                    pid,
                    deadline: deadline.min(d),
                    then: if matches!(ev, Event::Restart { .. }) {
                        AfterStop::Respawn
                    } else {
                        AfterStop::Hold
                    },
                    killed,
                },
                None,
            ),
            // Stopped | Failed | Backoff | Starting(no pid) -> Starting (deliberate restart: nothing to stop)
            (
                Stopped { .. } | Failed { .. } | Backoff { .. } | Starting { pid: None, .. },
                Event::Restart { .. },
            ) => self.deliberate_start(now),
            // Stopped | Failed | Backoff | Starting(no pid) -> Stopped (deliberate stop: nothing to signal)
            (
                Stopped { .. } | Failed { .. } | Backoff { .. } | Starting { pid: None, .. },
                Event::Halt { .. },
            ) => (
                Stopped {
                    cause: Some(StopCause::Held),
                },
                None,
            ),
            // Starting -> Starting (pid known)
            (Starting { pid: None, since }, Event::Spawned { pid }) => (
                Starting {
                    pid: Some(pid),
                    since,
                },
                None,
            ),
            // Starting -> Backoff | Failed | Stopped (could not spawn: treated as a failed exit)
            (Starting { pid: None, .. }, Event::SpawnFailed { error }) => {
                self.after_exit(Exit::Code(127), Some(error), now)
            }
            // Starting -> Running (first pass: routable at once)
            (
                Starting {
                    pid: Some(pid),
                    since,
                },
                Event::ProbePassed,
            ) => (
                Running {
                    pid,
                    since,
                    healthy: true,
                    passes: 0,
                    fails: 0,
                    suspect: false,
                },
                None,
            ),
            // Starting -> Starting (not listening yet: keep probing)
            (
                s @ Starting { .. },
                Event::ProbeFailed | Event::PassiveFailure | Event::ConnectTimedOut,
            ) => (s, None),
            // Starting -> Stopping (never became ready)
            (
                Starting {
                    pid: Some(pid),
                    since,
                },
                Event::Tick,
            ) if now >= since + START_TIMEOUT => {
                self.stopping_for = Some(RestartCause::NotReady);
                stopping(pid, now + LIVENESS_GRACE, AfterStop::Restart)
            }
            // Starting | Running | Draining -> Backoff | Failed | Stopped (the worker died)
            (
                Starting { pid: Some(_), .. } | Running { .. } | Draining { .. },
                Event::Exited(exit),
            ) => self.after_exit(exit, None, now),
            // Running -> Running (pass: count toward rise if unhealthy)
            (
                Running {
                    pid,
                    since,
                    healthy,
                    passes,
                    ..
                },
                Event::ProbePassed,
            ) => {
                let passes = passes.saturating_add(1);
                let healthy = healthy || passes >= p.rise;
                (
                    Running {
                        pid,
                        since,
                        healthy,
                        passes: if healthy { 0 } else { passes },
                        fails: 0,
                        // It answers: the timeouts were load, not death.
                        suspect: false,
                    },
                    None,
                )
            }
            // Running -> Running (fail: unhealthy after `fall`, or at once
            // after a connect timeout; from `restart_after` on, out of
            // rotation and asking for the fleet's restart turn)
            (
                Running {
                    pid,
                    since,
                    healthy,
                    fails,
                    suspect,
                    ..
                },
                Event::ProbeFailed,
            ) => {
                let fails = fails.saturating_add(1);
                let due = fails >= p.restart_after;
                (
                    Running {
                        pid,
                        since,
                        // A timeout and a failed probe agree: out now. The
                        // liveness count (`restart_after`) stays probes only.
                        healthy: healthy && !suspect && fails < p.fall && !due,
                        passes: 0,
                        fails,
                        suspect: false,
                    },
                    due.then_some(Action::AskRestartTurn),
                )
            }
            // Running -> Stopping (liveness: past `restart_after`, and the
            // fleet's restart turn is its own)
            (Running { pid, fails, .. }, Event::RestartTurn) if fails >= p.restart_after => {
                self.stopping_for = Some(RestartCause::FailedHealth);
                stopping(pid, now + LIVENESS_GRACE, AfterStop::Restart)
            }
            // Running -> Running (the balancer could not connect: out of rotation
            // at once; it needs `rise` passes to return, and counts as `fall` failures)
            (Running { pid, since, .. }, Event::PassiveFailure) => (
                Running {
                    pid,
                    since,
                    healthy: false,
                    passes: 0,
                    fails: p.fall,
                    suspect: false,
                },
                None,
            ),
            // Running -> Running (a connect timed out: still routable; the
            // next probe decides, and a failure then counts as `fall`)
            (
                Running {
                    pid,
                    since,
                    healthy,
                    passes,
                    fails,
                    ..
                },
                Event::ConnectTimedOut,
            ) => (
                Running {
                    pid,
                    since,
                    healthy,
                    passes,
                    fails,
                    suspect: true,
                },
                None,
            ),
            // Running -> Running (stable long enough: forget the backoff history)
            (s @ Running { since, .. }, Event::Tick) => {
                if now >= since + p.restart.max_backoff {
                    self.attempt = 0;
                }
                (s, None)
            }
            // Backoff -> Starting (delay elapsed)
            (Backoff { until }, Event::Tick) if now >= until => (
                Starting {
                    pid: None,
                    since: now,
                },
                Some(Action::Spawn),
            ),
            // Stopping -> Stopping (grace is over: SIGKILL)
            (
                Stopping {
                    pid,
                    deadline,
                    then,
                    killed: false,
                },
                Event::Tick,
            ) if now >= deadline => (
                Stopping {
                    pid,
                    deadline,
                    then,
                    killed: true,
                },
                Some(Action::Signal(Sig::Kill)),
            ),
            // Stopping -> Backoff | Failed | Starting | Stopped (the worker is gone)
            (Stopping { then, .. }, Event::Exited(exit)) => {
                self.last_exit = Some(exit);
                let cause = self.stopping_for.take();
                let next = match then {
                    AfterStop::Stay => (Stopped { cause: None }, None),
                    AfterStop::Restart => self.after_exit(exit, None, now),
                    AfterStop::Respawn => self.deliberate_start(now),
                    AfterStop::Hold => (
                        Stopped {
                            cause: Some(StopCause::Held),
                        },
                        None,
                    ),
                };
                self.last_exit_cause = cause.filter(|_| then == AfterStop::Restart);
                next
            }
            // Stopping -> Stopping (shutdown arrives during a liveness restart)
            (
                Stopping {
                    pid,
                    deadline,
                    killed,
                    ..
                },
                Event::Stop { deadline: d },
            ) => (
                Stopping {
                    pid,
                    deadline: deadline.min(d),
                    then: AfterStop::Stay,
                    killed,
                },
                None,
            ),
            // Starting | Running | Draining -> Stopping (shutdown)
            (
                Starting { pid: Some(pid), .. } | Running { pid, .. } | Draining { pid, .. },
                Event::Stop { deadline },
            ) => (
                Stopping {
                    pid,
                    deadline,
                    then: AfterStop::Stay,
                    killed: false,
                },
                Some(Action::Signal(Sig::Term)),
            ),
            // Backoff | Starting(no pid) | Stopped -> Stopped (shutdown, nothing to signal)
            (Backoff { .. } | Starting { pid: None, .. } | Stopped { .. }, Event::Stop { .. }) => {
                (Stopped { cause: None }, None)
            }
            // Failed -> Failed (shutdown keeps the verdict visible)
            (s @ Failed { .. }, Event::Stop { .. }) => (s, None),
            // Anything else is stale or impossible (a late probe result, a Tick
            // before its deadline): harmless by construction.
            // A drain of a backend that takes no traffic has nothing to wait for.
            (
                s,
                ev @ (Event::Tick
                | Event::ProbePassed
                | Event::ProbeFailed
                | Event::PassiveFailure
                | Event::ConnectTimedOut
                | Event::RestartTurn
                | Event::Drain),
            ) => {
                tracing::trace!(state = %s.phase(), ?ev, "event ignored");
                (s, None)
            }
            (s, ev) => {
                warn!(state = %s.phase(), ?ev, "ignored unexpected event");
                (s, None)
            }
        }
    }

    /// A start the user asked for: at once, whatever the policy, and with the
    /// crash history forgotten (the user has intervened, e.g. fixed the program).
    fn deliberate_start(&mut self, now: Instant) -> (State, Option<Action>) {
        self.recent.clear();
        self.attempt = 0;
        (
            State::Starting {
                pid: None,
                since: now,
            },
            Some(Action::Spawn),
        )
    }

    /// The worker ended (or never started): decide between restart, stop and
    /// giving up, per the restart policy and the crash-loop window.
    fn after_exit(
        &mut self,
        exit: Exit,
        error: Option<String>,
        now: Instant,
    ) -> (State, Option<Action>) {
        self.last_exit = Some(exit);
        self.last_exit_cause = None;
        let r = &self.policy.restart;
        let restart = match r.policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !exit.success(),
            RestartPolicy::Never => false,
        };
        let what = error.unwrap_or_else(|| describe(exit));
        if !restart {
            return (
                State::Stopped {
                    cause: Some(StopCause::Declined {
                        what,
                        policy: r.policy,
                    }),
                },
                None,
            );
        }
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= r.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= r.max_restarts as usize {
            return (
                State::Failed {
                    reason: format!(
                        "crash loop: {} restarts within {}; last: {what}",
                        self.recent.len(),
                        humantime::format_duration(r.window)
                    ),
                },
                None,
            );
        }
        self.recent.push_back(now);
        self.restarts += 1;
        let delay = backoff_delay(r, self.attempt, self.rng.f64());
        self.attempt = self.attempt.saturating_add(1);
        (State::Backoff { until: now + delay }, None)
    }
}

/// SIGTERM now, SIGKILL at `deadline`, then `then`.
fn stopping(pid: u32, deadline: Instant, then: AfterStop) -> (State, Option<Action>) {
    (
        State::Stopping {
            pid,
            deadline,
            then,
            killed: false,
        },
        Some(Action::Signal(Sig::Term)),
    )
}

/// `initial * 2^attempt`, capped at `max`, then scaled by a jitter factor in
/// [0.8, 1.2) (and capped again) so that backends that died together do not
/// restart in lockstep.
pub(crate) fn backoff_delay(r: &RestartConfig, attempt: u32, unit: f64) -> Duration {
    let base = r
        .initial_backoff
        .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .min(r.max_backoff);
    base.mul_f64(0.8 + 0.4 * unit.clamp(0.0, 1.0))
        .min(r.max_backoff)
}

/// "exit 1", "SIGKILL".
pub(crate) fn describe(exit: Exit) -> String {
    match exit {
        Exit::Code(c) => format!("exited with code {c}"),
        Exit::Signal(s) => format!("killed by {}", signal_name(s)),
    }
}

pub(crate) fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

pub(crate) fn policy_name(p: RestartPolicy) -> &'static str {
    match p {
        RestartPolicy::Always => "always",
        RestartPolicy::OnFailure => "on-failure",
        RestartPolicy::Never => "never",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn policy() -> Policy {
        let c = Config::default();
        Policy::new(&c.restart, &c.health)
    }

    /// The default policy with another restart policy.
    fn policy_with(restart: RestartPolicy) -> Policy {
        let mut p = policy();
        p.restart.policy = restart;
        p
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A backend under `p`, started and spawned as `pid` at `t0`.
    fn spawned(p: Policy, pid: u32, t0: Instant) -> Backend {
        let mut b = Backend::new(p, 1);
        b.step(Event::Start, t0);
        b.step(Event::Spawned { pid }, t0);
        b
    }

    /// A backend that is Starting with pid 7 (spawned at `t0`).
    fn starting(t0: Instant) -> Backend {
        spawned(policy(), 7, t0)
    }

    /// A backend that is Running and healthy with pid 10, at `t0`.
    fn running(t0: Instant) -> Backend {
        let mut b = Backend::new(policy(), 1);
        assert_eq!(b.step(Event::Start, t0), Some(Action::Spawn));
        b.step(Event::Spawned { pid: 10 }, t0);
        b.step(Event::ProbePassed, t0);
        assert!(b.routable());
        b
    }

    /// A running backend that failed enough probes to be stopped for
    /// liveness, and was given the fleet's restart turn.
    fn stopping_for_liveness(t0: Instant) -> Backend {
        let mut b = running(t0);
        for _ in 0..policy().restart_after {
            b.step(Event::ProbeFailed, t0);
        }
        b.step(Event::RestartTurn, t0);
        assert_eq!(b.state().phase(), Phase::Stopping);
        b
    }

    /// A running backend taken out of rotation by `fleet drain`.
    fn draining(t0: Instant) -> Backend {
        let mut b = running(t0);
        b.step(Event::Drain, t0);
        b
    }

    /// A running backend whose worker exited with code 1, waiting to restart.
    fn backing_off(t0: Instant) -> Backend {
        let mut b = running(t0);
        b.step(Event::Exited(Exit::Code(1)), t0);
        assert_eq!(b.state().phase(), Phase::Backoff);
        b
    }

    /// A worker spawned as `pid` that crashes at once (exit code 1): the
    /// action the exit yields.
    fn crash(b: &mut Backend, pid: u32, now: Instant) -> Option<Action> {
        b.step(Event::Spawned { pid }, now);
        b.step(Event::Exited(Exit::Code(1)), now)
    }

    /// `ev` sends the worker SIGTERM.
    fn assert_terms(b: &mut Backend, ev: Event, now: Instant) {
        assert_eq!(b.step(ev, now), Some(Action::Signal(Sig::Term)));
    }

    /// Stopping, and what happens once the worker has exited is `then`.
    fn assert_stopping_then(b: &Backend, then: AfterStop) {
        let State::Stopping { then: actual, .. } = b.state() else {
            panic!("{:?}", b.state())
        };
        assert_eq!(*actual, then);
    }

    /// Stopped for `cause` (`None`: shut down, nothing to explain).
    fn assert_stopped(b: &Backend, cause: Option<StopCause>, why: &str) {
        assert_eq!(b.state(), &State::Stopped { cause }, "{why}");
    }

    #[test]
    fn stopped_to_starting_on_start_spawns() {
        let t0 = Instant::now();
        let mut b = Backend::new(policy(), 1);
        assert_eq!(b.step(Event::Start, t0), Some(Action::Spawn));
        assert_eq!(
            b.state(),
            &State::Starting {
                pid: None,
                since: t0
            }
        );
        assert!(!b.routable());
    }

    #[test]
    fn starting_records_pid_when_spawned() {
        let t0 = Instant::now();
        let mut b = Backend::new(policy(), 1);
        b.step(Event::Start, t0);
        assert_eq!(b.step(Event::Spawned { pid: 7 }, t0), None);
        assert_eq!(b.state().pid(), Some(7));
    }

    #[test]
    fn starting_to_running_healthy_on_first_pass() {
        let t0 = Instant::now();
        let b = running(t0);
        assert!(matches!(
            b.state(),
            State::Running {
                pid: 10,
                healthy: true,
                ..
            }
        ));
        assert_eq!(b.restarts(), 0);
    }

    #[test]
    fn starting_stays_starting_on_failed_probe() {
        let t0 = Instant::now();
        let mut b = starting(t0);
        assert_eq!(b.step(Event::ProbeFailed, t0 + ms(5)), None);
        assert_eq!(b.state().phase(), Phase::Starting);
    }

    #[test]
    fn starting_to_backoff_when_spawn_fails() {
        let t0 = Instant::now();
        let mut b = Backend::new(policy(), 1);
        b.step(Event::Start, t0);
        let a = b.step(
            Event::SpawnFailed {
                error: "no such program".into(),
            },
            t0,
        );
        assert_eq!(a, None);
        assert_eq!(b.state().phase(), Phase::Backoff);
        assert_eq!(b.restarts(), 1);
    }

    #[test]
    fn starting_to_stopping_after_start_timeout() {
        let t0 = Instant::now();
        let mut b = starting(t0);
        assert_eq!(b.step(Event::Tick, t0 + ms(10)), None, "too early");
        assert_terms(&mut b, Event::Tick, t0 + START_TIMEOUT);
        assert_stopping_then(&b, AfterStop::Restart);
    }

    #[test]
    fn starting_to_backoff_when_worker_exits() {
        let t0 = Instant::now();
        let mut b = starting(t0);
        b.step(Event::Exited(Exit::Code(1)), t0 + ms(1));
        assert_eq!(b.state().phase(), Phase::Backoff);
        assert_eq!(b.last_exit(), Some(Exit::Code(1)));
    }

    #[test]
    fn running_to_backoff_when_worker_is_killed() {
        let t0 = Instant::now();
        let mut b = running(t0);
        assert_eq!(b.step(Event::Exited(Exit::Signal(9)), t0 + ms(1)), None);
        let State::Backoff { until } = *b.state() else {
            panic!("{:?}", b.state())
        };
        let d = until - (t0 + ms(1));
        assert!(
            d >= ms(80) && d <= ms(120),
            "first backoff is about 100ms, got {d:?}"
        );
        assert_eq!(b.restarts(), 1);
        assert_eq!(b.last_exit(), Some(Exit::Signal(9)));
        assert!(!b.routable());
    }

    #[test]
    fn backoff_to_starting_after_delay() {
        let t0 = Instant::now();
        let mut b = running(t0);
        b.step(Event::Exited(Exit::Signal(9)), t0);
        assert_eq!(b.step(Event::Tick, t0 + ms(50)), None, "delay not elapsed");
        assert_eq!(b.step(Event::Tick, t0 + ms(200)), Some(Action::Spawn));
        assert_eq!(b.state().phase(), Phase::Starting);
    }

    #[test]
    fn running_becomes_unhealthy_after_fall_failures_then_healthy_after_rise_passes() {
        let t0 = Instant::now();
        let mut b = running(t0);
        let p = policy();
        for i in 1..p.fall {
            b.step(Event::ProbeFailed, t0);
            assert!(b.routable(), "still routable after {i} failures");
        }
        b.step(Event::ProbeFailed, t0);
        assert!(!b.routable(), "unroutable after fall={} failures", p.fall);
        for i in 1..p.rise {
            b.step(Event::ProbePassed, t0);
            assert!(!b.routable(), "not yet routable after {i} passes");
        }
        b.step(Event::ProbePassed, t0);
        assert!(b.routable(), "routable after rise={} passes", p.rise);
    }

    #[test]
    fn a_pass_resets_the_failure_count() {
        let t0 = Instant::now();
        let mut b = running(t0);
        for _ in 0..policy().fall - 1 {
            b.step(Event::ProbeFailed, t0);
        }
        b.step(Event::ProbePassed, t0);
        b.step(Event::ProbeFailed, t0);
        assert!(b.routable());
    }

    #[test]
    fn running_asks_for_the_restart_turn_after_restart_after_failed_probes() {
        let t0 = Instant::now();
        let mut b = running(t0);
        let n = policy().restart_after;
        for _ in 1..n {
            assert_eq!(b.step(Event::ProbeFailed, t0), None);
        }
        assert_eq!(b.step(Event::ProbeFailed, t0), Some(Action::AskRestartTurn));
        assert_eq!(b.state().phase(), Phase::Running, "nothing signalled yet");
        assert!(!b.routable());
    }

    #[test]
    fn running_to_stopping_after_restart_after_failed_probes_when_given_the_turn() {
        let t0 = Instant::now();
        let mut b = running(t0);
        for _ in 0..policy().restart_after {
            b.step(Event::ProbeFailed, t0);
        }
        assert_terms(&mut b, Event::RestartTurn, t0);
        assert_stopping_then(&b, AfterStop::Restart);
        assert_eq!(b.state().pid(), Some(10));
    }

    #[test]
    fn running_without_the_turn_stays_running_and_asks_again_at_each_failed_probe() {
        let t0 = Instant::now();
        let mut b = running(t0);
        for _ in 0..policy().restart_after {
            b.step(Event::ProbeFailed, t0);
        }
        for _ in 0..3 {
            assert_eq!(b.step(Event::ProbeFailed, t0), Some(Action::AskRestartTurn));
            assert_eq!(b.state().phase(), Phase::Running);
            assert!(!b.routable());
        }
    }

    #[test]
    fn running_that_recovered_before_its_turn_ignores_the_turn() {
        let t0 = Instant::now();
        let mut b = running(t0);
        for _ in 0..policy().restart_after {
            b.step(Event::ProbeFailed, t0);
        }
        b.step(Event::ProbePassed, t0);
        assert_eq!(b.step(Event::RestartTurn, t0), None);
        assert_eq!(b.state().phase(), Phase::Running, "not restarted");
    }

    #[test]
    fn a_restart_turn_outside_running_is_ignored() {
        let t0 = Instant::now();
        let mut b = backing_off(t0);
        assert_eq!(b.step(Event::RestartTurn, t0), None);
        assert_eq!(b.state().phase(), Phase::Backoff);
    }

    #[test]
    fn running_unroutable_at_once_on_passive_failure() {
        let t0 = Instant::now();
        let mut b = running(t0);
        b.step(Event::PassiveFailure, t0);
        assert!(!b.routable());
        assert_eq!(b.state().phase(), Phase::Running);
        for _ in 1..policy().rise {
            b.step(Event::ProbePassed, t0);
            assert!(!b.routable(), "back only after `rise` passes");
        }
        b.step(Event::ProbePassed, t0);
        assert!(b.routable());
    }

    #[test]
    fn a_liveness_restart_records_its_cause_with_the_exit() {
        let t0 = Instant::now();
        let mut b = stopping_for_liveness(t0);
        b.step(Event::Exited(Exit::Code(0)), t0);
        assert_eq!(b.last_exit(), Some(Exit::Code(0)));
        assert_eq!(
            b.last_exit_cause(),
            Some(RestartCause::FailedHealth),
            "not a clean exit of its own"
        );
        // The next worker's own exit carries no cause.
        b.step(Event::Tick, t0 + Duration::from_secs(60));
        b.step(Event::Spawned { pid: 11 }, t0 + Duration::from_secs(60));
        b.step(Event::Exited(Exit::Code(1)), t0 + Duration::from_secs(61));
        assert_eq!(b.last_exit_cause(), None);
    }

    #[test]
    fn running_stays_routable_on_a_connect_timeout() {
        let t0 = Instant::now();
        let mut b = running(t0);
        for _ in 0..10 {
            assert_eq!(b.step(Event::ConnectTimedOut, t0), None);
        }
        assert!(b.routable(), "timeouts alone never take it out");
        assert!(matches!(b.state(), State::Running { suspect: true, .. }));
    }

    #[test]
    fn running_unroutable_when_a_probe_fails_after_a_connect_timeout() {
        let t0 = Instant::now();
        let mut b = running(t0);
        b.step(Event::ConnectTimedOut, t0);
        assert_eq!(b.step(Event::ProbeFailed, t0), None);
        assert!(!b.routable(), "corroborated: out at once, not after `fall`");
        assert!(matches!(
            b.state(),
            State::Running {
                fails: 1,
                suspect: false,
                ..
            }
        ));
    }

    #[test]
    fn a_passing_probe_clears_a_connect_timeout() {
        let t0 = Instant::now();
        let mut b = running(t0);
        b.step(Event::ConnectTimedOut, t0);
        b.step(Event::ProbePassed, t0);
        b.step(Event::ProbeFailed, t0);
        assert!(
            b.routable(),
            "one failed probe without a timeout is below `fall`"
        );
    }

    #[test]
    fn starting_ignores_a_connect_timeout() {
        let t0 = Instant::now();
        let mut b = starting(t0);
        assert_eq!(b.step(Event::ConnectTimedOut, t0), None);
        assert_eq!(b.state().phase(), Phase::Starting);
    }

    #[test]
    fn starting_ignores_a_passive_failure() {
        let t0 = Instant::now();
        let mut b = starting(t0);
        assert_eq!(b.step(Event::PassiveFailure, t0), None);
        assert_eq!(b.state().phase(), Phase::Starting);
        b.step(Event::ProbePassed, t0);
        assert!(b.routable(), "its first pass still admits it");
    }

    #[test]
    fn stopping_escalates_to_sigkill_at_deadline() {
        let t0 = Instant::now();
        let mut b = running(t0);
        let deadline = t0 + ms(100);
        assert_terms(&mut b, Event::Stop { deadline }, t0);
        assert_eq!(b.next_deadline(), Some(deadline));
        assert_eq!(b.step(Event::Tick, t0 + ms(50)), None);
        assert_eq!(
            b.step(Event::Tick, deadline),
            Some(Action::Signal(Sig::Kill))
        );
        assert_eq!(b.next_deadline(), None, "SIGKILL is sent once");
    }

    #[test]
    fn stopping_to_stopped_on_exit_during_shutdown() {
        let t0 = Instant::now();
        let mut b = running(t0);
        let deadline = t0 + ms(100);
        b.step(Event::Stop { deadline }, t0);
        assert_eq!(b.step(Event::Exited(Exit::Code(0)), t0 + ms(5)), None);
        assert_stopped(&b, None, "shut down");
        assert_eq!(b.restarts(), 0, "a shutdown is not a restart");
    }

    #[test]
    fn stopping_to_backoff_after_liveness_kill() {
        let t0 = Instant::now();
        let mut b = stopping_for_liveness(t0);
        b.step(Event::Exited(Exit::Signal(15)), t0 + ms(5));
        assert_eq!(b.state().phase(), Phase::Backoff);
        assert_eq!(b.restarts(), 1);
    }

    #[test]
    fn shutdown_during_liveness_restart_stays_stopped() {
        let t0 = Instant::now();
        let mut b = stopping_for_liveness(t0);
        let deadline = t0 + ms(10);
        let a = b.step(Event::Stop { deadline }, t0);
        assert_eq!(a, None, "already signalled");
        b.step(Event::Exited(Exit::Signal(15)), t0 + ms(5));
        assert_stopped(&b, None, "shut down");
    }

    #[test]
    fn backoff_to_stopped_on_shutdown() {
        let t0 = Instant::now();
        let mut b = backing_off(t0);
        assert_eq!(b.step(Event::Stop { deadline: t0 }, t0), None);
        assert_eq!(b.state().phase(), Phase::Stopped);
    }

    #[test]
    fn late_exit_after_stopped_is_harmless() {
        let t0 = Instant::now();
        let mut b = running(t0);
        b.step(Event::Stop { deadline: t0 }, t0);
        b.step(Event::Exited(Exit::Code(0)), t0);
        assert_eq!(b.step(Event::Exited(Exit::Code(0)), t0), None);
        assert_eq!(b.step(Event::ProbePassed, t0), None);
        assert_eq!(b.state().phase(), Phase::Stopped);
    }

    #[test]
    fn running_to_failed_after_max_restarts_within_window() {
        let t0 = Instant::now();
        let mut b = Backend::new(policy(), 1);
        let max = policy().restart.max_restarts;
        b.step(Event::Start, t0);
        let mut now = t0;
        for i in 0..max {
            crash(&mut b, 100 + i, now);
            assert_eq!(b.state().phase(), Phase::Backoff, "restart {i} allowed");
            now += policy().restart.max_backoff;
            assert_eq!(b.step(Event::Tick, now), Some(Action::Spawn));
        }
        crash(&mut b, 999, now);
        let State::Failed { reason } = b.state() else {
            panic!("{:?}", b.state())
        };
        assert!(
            reason.contains("crash loop") && reason.contains("exited with code 1"),
            "{reason}"
        );
        assert_eq!(b.restarts(), max);
        assert_eq!(
            b.step(Event::Tick, now + Duration::from_secs(100)),
            None,
            "failed is final"
        );
    }

    #[test]
    fn restarts_outside_the_window_do_not_count_toward_a_crash_loop() {
        let t0 = Instant::now();
        let mut b = Backend::new(policy(), 1);
        let window = policy().restart.window;
        b.step(Event::Start, t0);
        let mut now = t0;
        for i in 0..20 {
            crash(&mut b, i, now);
            assert_eq!(b.state().phase(), Phase::Backoff, "restart {i}");
            now += window / 4; // at most 4 restarts in any window: under max_restarts (5)
            b.step(Event::Tick, now);
        }
    }

    #[test]
    fn policy_never_stops_after_exit() {
        let t0 = Instant::now();
        let mut b = spawned(policy_with(RestartPolicy::Never), 1, t0);
        b.step(Event::Exited(Exit::Code(0)), t0);
        let State::Stopped {
            cause: Some(StopCause::Declined { what, policy }),
        } = b.state()
        else {
            panic!("{:?}", b.state())
        };
        assert_eq!(*policy, RestartPolicy::Never);
        assert_eq!(
            b.state().cause_text().as_deref(),
            Some(format!("{what}; restart policy is never").as_str()),
            "rendered as before"
        );
    }

    #[test]
    fn policy_on_failure_restarts_only_failures() {
        let t0 = Instant::now();
        let p = policy_with(RestartPolicy::OnFailure);
        let mut b = spawned(p.clone(), 1, t0);
        b.step(Event::Exited(Exit::Signal(9)), t0);
        assert_eq!(b.state().phase(), Phase::Backoff);
        let mut b = spawned(p, 1, t0);
        b.step(Event::Exited(Exit::Code(0)), t0);
        assert_eq!(b.state().phase(), Phase::Stopped);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let r = policy().restart;
        let mid = |a| backoff_delay(&r, a, 0.5);
        assert_eq!(mid(0), ms(100));
        assert_eq!(mid(1), ms(200));
        assert_eq!(mid(2), ms(400));
        assert_eq!(mid(10), r.max_backoff);
        assert_eq!(mid(100), r.max_backoff, "no overflow");
        assert!(backoff_delay(&r, 0, 0.0) >= ms(80));
        assert!(backoff_delay(&r, 0, 0.999) < ms(120));
        assert!(
            backoff_delay(&r, 30, 0.999) <= r.max_backoff,
            "jitter never exceeds the cap"
        );
    }

    #[test]
    fn backoff_resets_after_a_stable_run() {
        let t0 = Instant::now();
        let mut b = backing_off(t0);
        b.step(Event::Tick, t0 + Duration::from_secs(1));
        b.step(Event::Spawned { pid: 11 }, t0 + Duration::from_secs(1));
        b.step(Event::ProbePassed, t0 + Duration::from_secs(1));
        let stable = b
            .next_deadline()
            .expect("a reset deadline while attempt > 0");
        b.step(Event::Tick, stable);
        assert_eq!(b.next_deadline(), None);
        b.step(Event::Exited(Exit::Code(1)), stable);
        let State::Backoff { until } = *b.state() else {
            panic!()
        };
        assert!(until - stable <= ms(120), "back to the initial delay");
    }

    /// A backend that gave up after a crash loop, at `t0`.
    fn failed(t0: Instant) -> Backend {
        let mut b = Backend::new(policy(), 1);
        b.step(Event::Start, t0);
        for i in 0..=policy().restart.max_restarts {
            crash(&mut b, 100 + i, t0);
            b.step(Event::Tick, t0 + policy().restart.max_backoff);
        }
        assert_eq!(b.state().phase(), Phase::Failed);
        b
    }

    #[test]
    fn running_to_draining_on_drain_leaves_rotation() {
        let t0 = Instant::now();
        let mut b = running(t0);
        assert_eq!(b.step(Event::Drain, t0), None);
        assert_eq!(b.state(), &State::Draining { pid: 10, since: t0 });
        assert!(!b.routable());
        assert_eq!(b.state().pid(), Some(10));
    }

    #[test]
    fn drain_of_a_backend_without_traffic_is_ignored() {
        let t0 = Instant::now();
        let mut b = starting(t0);
        assert_eq!(b.step(Event::Drain, t0), None);
        assert_eq!(b.state().phase(), Phase::Starting);
    }

    #[test]
    fn draining_to_stopping_on_restart_then_starting_without_backoff() {
        let t0 = Instant::now();
        let mut b = draining(t0);
        let deadline = t0 + ms(100);
        assert_terms(&mut b, Event::Restart { deadline }, t0);
        assert_stopping_then(&b, AfterStop::Respawn);
        assert_eq!(
            b.step(Event::Exited(Exit::Signal(15)), t0 + ms(5)),
            Some(Action::Spawn),
            "started again at once"
        );
        assert_eq!(b.state().phase(), Phase::Starting);
        assert_eq!(
            b.restarts(),
            0,
            "a deliberate restart is not a policy restart"
        );
    }

    #[test]
    fn running_to_stopping_on_restart_under_policy_never() {
        let t0 = Instant::now();
        let mut b = spawned(policy_with(RestartPolicy::Never), 3, t0);
        b.step(Event::ProbePassed, t0);
        b.step(Event::Restart { deadline: t0 }, t0);
        assert_eq!(
            b.step(Event::Exited(Exit::Code(0)), t0),
            Some(Action::Spawn)
        );
        assert_eq!(b.state().phase(), Phase::Starting);
    }

    #[test]
    fn starting_to_stopping_on_halt_then_held_until_start() {
        let t0 = Instant::now();
        let mut b = starting(t0);
        let deadline = t0 + ms(100);
        assert_terms(&mut b, Event::Halt { deadline }, t0);
        assert_eq!(b.step(Event::Exited(Exit::Code(0)), t0), None);
        assert_stopped(&b, Some(StopCause::Held), "held");
        assert_eq!(b.next_deadline(), None, "nothing restarts it");
        assert_eq!(b.step(Event::Start, t0), Some(Action::Spawn));
        assert_eq!(b.state().phase(), Phase::Starting);
    }

    #[test]
    fn draining_to_stopping_on_halt() {
        let t0 = Instant::now();
        let mut b = draining(t0);
        assert_terms(&mut b, Event::Halt { deadline: t0 }, t0);
        assert_stopping_then(&b, AfterStop::Hold);
    }

    #[test]
    fn draining_to_backoff_when_worker_dies() {
        let t0 = Instant::now();
        let mut b = draining(t0);
        b.step(Event::Exited(Exit::Signal(9)), t0);
        assert_eq!(b.state().phase(), Phase::Backoff);
    }

    #[test]
    fn draining_to_stopping_on_shutdown() {
        let t0 = Instant::now();
        let mut b = draining(t0);
        assert_terms(&mut b, Event::Stop { deadline: t0 }, t0);
        b.step(Event::Exited(Exit::Code(0)), t0);
        assert_stopped(&b, None, "shut down");
    }

    #[test]
    fn stopping_for_liveness_becomes_a_deliberate_stop_on_halt() {
        let t0 = Instant::now();
        let mut b = stopping_for_liveness(t0);
        let sooner = t0 + ms(1);
        assert_eq!(
            b.step(Event::Halt { deadline: sooner }, t0),
            None,
            "already signalled"
        );
        assert_eq!(b.next_deadline(), Some(sooner));
        b.step(Event::Exited(Exit::Signal(15)), t0);
        assert_eq!(b.state().phase(), Phase::Stopped);
        assert_eq!(b.restarts(), 0);
    }

    #[test]
    fn stopping_for_a_stop_becomes_a_restart_on_restart() {
        let t0 = Instant::now();
        let mut b = running(t0);
        let deadline = t0 + ms(100);
        b.step(Event::Halt { deadline }, t0);
        assert_eq!(b.step(Event::Restart { deadline }, t0), None);
        assert_eq!(
            b.step(Event::Exited(Exit::Code(0)), t0),
            Some(Action::Spawn)
        );
    }

    #[test]
    fn stopping_for_shutdown_ignores_restart_and_halt() {
        let t0 = Instant::now();
        let mut b = running(t0);
        let deadline = t0 + ms(100);
        b.step(Event::Stop { deadline }, t0);
        assert_eq!(b.step(Event::Restart { deadline: t0 }, t0), None);
        assert_eq!(b.step(Event::Halt { deadline: t0 }, t0), None);
        b.step(Event::Exited(Exit::Code(0)), t0);
        assert_stopped(&b, None, "shutdown wins");
    }

    #[test]
    fn failed_to_starting_on_restart_forgets_the_crash_loop() {
        let t0 = Instant::now();
        let mut b = failed(t0);
        let later = t0 + ms(10);
        assert_eq!(
            b.step(Event::Restart { deadline: later }, later),
            Some(Action::Spawn)
        );
        assert_eq!(b.state().phase(), Phase::Starting);
        crash(&mut b, 50, later);
        assert_eq!(
            b.state().phase(),
            Phase::Backoff,
            "the next crash is restarted by policy, not a crash loop"
        );
    }

    #[test]
    fn failed_to_starting_on_start() {
        let t0 = Instant::now();
        let mut b = failed(t0);
        assert_eq!(b.step(Event::Start, t0), Some(Action::Spawn));
        assert_eq!(b.state().phase(), Phase::Starting);
    }

    #[test]
    fn stopped_by_policy_to_starting_on_restart() {
        let t0 = Instant::now();
        let mut b = spawned(policy_with(RestartPolicy::Never), 1, t0);
        b.step(Event::Exited(Exit::Code(1)), t0);
        assert_eq!(b.state().phase(), Phase::Stopped);
        assert_eq!(
            b.step(Event::Restart { deadline: t0 }, t0),
            Some(Action::Spawn)
        );
    }

    #[test]
    fn backoff_to_starting_on_restart_without_waiting() {
        let t0 = Instant::now();
        let mut b = backing_off(t0);
        assert_eq!(
            b.step(Event::Restart { deadline: t0 }, t0),
            Some(Action::Spawn)
        );
        assert_eq!(b.state().phase(), Phase::Starting);
    }

    #[test]
    fn backoff_to_stopped_on_halt() {
        let t0 = Instant::now();
        let mut b = backing_off(t0);
        assert_eq!(b.step(Event::Halt { deadline: t0 }, t0), None);
        assert_stopped(&b, Some(StopCause::Held), "held");
        assert_eq!(b.step(Event::Tick, t0 + Duration::from_secs(60)), None);
        assert_eq!(
            b.state().phase(),
            Phase::Stopped,
            "the policy does not restart it"
        );
    }
}
