//! Remote backends (`upstreams:`): a pool slot like any backend's, owned by a
//! task that runs no process and only health-checks. Its health is a small
//! pure machine (`Health::step`), counted as for a local backend: the first
//! passing probe lets it take traffic, `fall` consecutive failures (or one
//! passive failure reported by the balancer) take it out, `rise` consecutive
//! passes bring it back. No liveness restart: there is nothing to restart.
//!
//! Invariant: an upstream is routable iff it is `Up`.
//!
//! ```text
//!             pass                    fall fails / passive
//!  Unknown ─────────▶ Up ─────────────────────────────▶ Down
//!     │  fall fails    ▲                                 │
//!     └──────────────────────────────────────────────────┤
//!                      └──────── rise passes ◀───────────┘
//! ```

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::health;
use crate::balancer::pool::{Roster, Slot};
use crate::config::{HealthConfig, Upstream};
use crate::lifecycle::{Lifecycle, Phase};

/// What the probes have shown so far; counters are consecutive results
/// since the last change of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    /// Not yet passed a probe (start-up): not routable.
    Unknown { fails: u32 },
    /// Taking traffic.
    Up { fails: u32 },
    /// Out of rotation until `rise` passes in a row.
    Down { passes: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    ProbePassed,
    ProbeFailed,
    /// The balancer could not connect (or the upstream died mid-request).
    PassiveFailure,
}

impl Health {
    pub(crate) fn routable(self) -> bool {
        matches!(self, Health::Up { .. })
    }

    /// The phase in `fleet status`: `starting` until the first verdict, then
    /// `running` (healthy or not, as a local backend that is up).
    pub(crate) fn phase(self) -> Phase {
        match self {
            Health::Unknown { .. } => Phase::Starting,
            Health::Up { .. } | Health::Down { .. } => Phase::Running,
        }
    }

    pub(crate) fn step(self, ev: Event, rise: u32, fall: u32) -> Health {
        match (self, ev) {
            // Unknown -> Up: joins at its first pass, as a starting backend does.
            (Health::Unknown { .. }, Event::ProbePassed) => Health::Up { fails: 0 },
            // Unknown -> Down: it has failed as often as a running one may.
            (Health::Unknown { fails }, Event::ProbeFailed) if fails + 1 >= fall => {
                Health::Down { passes: 0 }
            }
            // Unknown -> Unknown
            (Health::Unknown { fails }, Event::ProbeFailed) => Health::Unknown { fails: fails + 1 },
            // Unknown -> Unknown: it takes no traffic yet; the probes decide.
            (Health::Unknown { fails }, Event::PassiveFailure) => Health::Unknown { fails },
            // Up -> Up
            (Health::Up { .. }, Event::ProbePassed) => Health::Up { fails: 0 },
            // Up -> Down
            (Health::Up { fails }, Event::ProbeFailed) if fails + 1 >= fall => {
                Health::Down { passes: 0 }
            }
            // Up -> Up (counting)
            (Health::Up { fails }, Event::ProbeFailed) => Health::Up { fails: fails + 1 },
            // Up -> Down: the balancer saw it fail; probes must bring it back.
            (Health::Up { .. }, Event::PassiveFailure) => Health::Down { passes: 0 },
            // Down -> Up
            (Health::Down { passes }, Event::ProbePassed) if passes + 1 >= rise => {
                Health::Up { fails: 0 }
            }
            // Down -> Down (counting)
            (Health::Down { passes }, Event::ProbePassed) => Health::Down { passes: passes + 1 },
            // Down -> Down: the run of passes starts over.
            (Health::Down { .. }, Event::ProbeFailed | Event::PassiveFailure) => {
                Health::Down { passes: 0 }
            }
        }
    }
}

/// The supervisor's record of one remote backend (`upstreams:`): what
/// fleet.yaml said, its pool slot, its task's verdicts, and what stops its
/// health checks.
pub(crate) struct Remote {
    /// As fleet.yaml gave it: a reload compares it to find added and
    /// removed upstreams.
    pub(crate) config: Upstream,
    /// Its place in the pool (and `fleet status`).
    pub(crate) slot: Arc<Slot>,
    /// Its task's verdicts: what start-up and a reload that adds it wait on.
    pub(crate) verdict: watch::Receiver<Verdict>,
    /// Ends its health-check task once it is removed.
    pub(crate) stop: CancellationToken,
}

/// An upstream's health as its task last published it, and why it is not
/// up in words (what start-up waits on; `fleet status` reads the slot).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    pub(crate) health: Health,
    pub(crate) reason: Option<String>,
}

/// The task that owns one upstream's slot.
pub(crate) struct UpstreamTask {
    /// Where it publishes its `Verdict`.
    pub(crate) verdict: watch::Sender<Verdict>,
    pub(crate) slot: Arc<Slot>,
    pub(crate) backends: Arc<Roster>,
    pub(crate) health: HealthConfig,
    pub(crate) passive: mpsc::Receiver<()>,
    pub(crate) token: CancellationToken,
}

impl UpstreamTask {
    pub(crate) async fn run(mut self) {
        let name = self.slot.upstream.clone().unwrap_or_default();
        let mut state = Health::Unknown { fails: 0 };
        let mut since = None;
        // What the last failed probe saw, for `fleet status`.
        let mut last_failure: Option<String> = None;
        self.publish(state, since, last_failure.as_deref());
        // The first probe at once; then every interval, never overlapping
        // (timeout <= interval is a config rule).
        let mut ticks = tokio::time::interval(self.health.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let ev = tokio::select! {
                biased;
                () = self.token.cancelled() => break,
                Some(()) = self.passive.recv() => Event::PassiveFailure,
                _ = ticks.tick() => {
                    let result = tokio::select! {
                        biased;
                        () = self.token.cancelled() => break,
                        r = health::probe(&self.health.kind, self.slot.addr, self.health.timeout) => r,
                    };
                    // A connect that timed out in the balancer is only a
                    // hint (a full backlog is busy, not dead): with a failed
                    // probe it is a verdict, as a passive failure is.
                    let timed_out = self.slot.take_timeout();
                    match result {
                        Ok(()) => {
                            last_failure = None;
                            Event::ProbePassed
                        }
                        Err(e) => {
                            last_failure = Some(e.to_string());
                            if timed_out { Event::PassiveFailure } else { Event::ProbeFailed }
                        }
                    }
                }
            };
            let next = state.step(ev, self.health.rise, self.health.fall);
            if next.routable() != state.routable() {
                if next.routable() {
                    info!(target: "supervisor", upstream = %name, "upstream healthy");
                } else {
                    warn!(target: "supervisor", upstream = %name, cause = ?ev, "upstream unhealthy; out of rotation");
                }
            } else if next != state {
                debug!(target: "supervisor", upstream = %name, ?next, "upstream health");
            }
            if next.routable() && !state.routable() {
                since = Some(Instant::now().into_std());
            }
            state = next;
            self.publish(state, since, last_failure.as_deref());
        }
        // Out of rotation for the rest of the shutdown.
        self.slot.publish(
            false,
            Lifecycle {
                state: Phase::Stopped,
                ..Lifecycle::default()
            },
        );
        self.backends.notify(false);
    }

    fn publish(&self, state: Health, since: Option<std::time::Instant>, failure: Option<&str>) {
        let reason = match state {
            Health::Down { .. } => Some(format!(
                "failing health checks ({}); back after {} passing in a row",
                failure.unwrap_or("connection failed"),
                self.health.rise
            )),
            // While starting, say what the probes see (as for a local backend).
            Health::Unknown { .. } => failure.map(str::to_owned),
            Health::Up { .. } => None,
        };
        self.verdict.send_replace(Verdict {
            health: state,
            reason: reason.clone(),
        });
        self.slot.publish(
            state.routable(),
            Lifecycle {
                state: state.phase(),
                since: since.filter(|_| state.routable()),
                reason,
                ..Lifecycle::default()
            },
        );
        self.backends.notify(state.routable());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RISE: u32 = 2;
    const FALL: u32 = 3;

    fn step(s: Health, ev: Event) -> Health {
        s.step(ev, RISE, FALL)
    }

    #[test]
    fn unknown_to_up_at_the_first_pass() {
        assert_eq!(
            step(Health::Unknown { fails: 2 }, Event::ProbePassed),
            Health::Up { fails: 0 }
        );
    }

    #[test]
    fn unknown_counts_failures_below_fall() {
        assert_eq!(
            step(Health::Unknown { fails: 0 }, Event::ProbeFailed),
            Health::Unknown { fails: 1 }
        );
    }

    #[test]
    fn unknown_to_down_after_fall_failures() {
        assert_eq!(
            step(Health::Unknown { fails: 2 }, Event::ProbeFailed),
            Health::Down { passes: 0 }
        );
    }

    #[test]
    fn unknown_ignores_passive_failures() {
        assert_eq!(
            step(Health::Unknown { fails: 1 }, Event::PassiveFailure),
            Health::Unknown { fails: 1 }
        );
    }

    #[test]
    fn up_stays_up_and_resets_failures_on_a_pass() {
        assert_eq!(
            step(Health::Up { fails: 2 }, Event::ProbePassed),
            Health::Up { fails: 0 }
        );
    }

    #[test]
    fn up_counts_failures_below_fall() {
        assert_eq!(
            step(Health::Up { fails: 1 }, Event::ProbeFailed),
            Health::Up { fails: 2 }
        );
    }

    #[test]
    fn up_to_down_after_fall_failures() {
        assert_eq!(
            step(Health::Up { fails: 2 }, Event::ProbeFailed),
            Health::Down { passes: 0 }
        );
    }

    #[test]
    fn up_to_down_on_a_passive_failure() {
        assert_eq!(
            step(Health::Up { fails: 0 }, Event::PassiveFailure),
            Health::Down { passes: 0 }
        );
    }

    #[test]
    fn down_counts_passes_below_rise() {
        assert_eq!(
            step(Health::Down { passes: 0 }, Event::ProbePassed),
            Health::Down { passes: 1 }
        );
    }

    #[test]
    fn down_to_up_after_rise_passes() {
        assert_eq!(
            step(Health::Down { passes: 1 }, Event::ProbePassed),
            Health::Up { fails: 0 }
        );
    }

    #[test]
    fn down_restarts_its_run_of_passes_on_any_failure() {
        for ev in [Event::ProbeFailed, Event::PassiveFailure] {
            assert_eq!(
                step(Health::Down { passes: 1 }, ev),
                Health::Down { passes: 0 }
            );
        }
    }

    #[test]
    fn only_up_is_routable() {
        assert!(Health::Up { fails: 2 }.routable());
        assert!(!Health::Unknown { fails: 0 }.routable());
        assert!(!Health::Down { passes: 5 }.routable());
    }
}
