//! The supervisor's handle on one backend task (watchexec's `Job`).
//!
//! Each method sends the task one control message and returns a [`Ticket`]:
//! a future that resolves once the task has carried the message out, with
//! the [`Outcome`] (`Serving { pid }`, `Drained`, `Stopped`, `Failed {
//! reason }`). An operation on the fleet (`ops`, `reload`) is a sequence of
//! awaited tickets: nothing polls, and nothing outside the task feeds its
//! state machine an event (the messages are verbs, not lifecycle events).
//!
//! The task publishes its lifecycle on its slot's `watch` channel
//! ([`crate::lifecycle::Lifecycle`]): what the supervisor reads to decide
//! (is it held by `fleet stop`, is it running), never the status `fleet
//! status` prints (`control::status` alone builds that).
//!
//! Every waiting message carries its limit, and the task answers at the
//! limit with what it saw (the last probe, the last exit), so a ticket
//! always resolves while the task lives; one whose task has ended resolves
//! as `Failed`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::state::Policy;
use crate::balancer::pool::Slot;
use crate::config::HealthConfig;
use crate::lifecycle::Lifecycle;

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

/// How a control message ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// In rotation, this process serving (a guarded command's own pid once
    /// the guard has reported it).
    Serving { pid: u32 },
    /// Out of rotation with `in_flight` requests (or connections) still
    /// running: 0, or what was left at the drain limit.
    Drained { in_flight: u64 },
    /// Not running, and not going to run until told.
    Stopped,
    /// New settings taken, for the next probe or spawn.
    Applied,
    /// It did not get there: why, in words.
    Failed { reason: String },
}

/// What the supervisor can tell one backend task. Each waits (up to its
/// limit) for the state it asks for, and the task answers with an
/// [`Outcome`].
#[derive(Debug)]
pub(crate) enum Control {
    /// Out of rotation; `Drained` once its in-flight work is done, or at
    /// `limit` with what is left.
    Drain { limit: Duration },
    /// Stop the worker (SIGKILL `grace` after SIGTERM) and start a new one
    /// at once; `Serving` once it passes a probe.
    Restart { grace: Duration, limit: Duration },
    /// Stop the worker (SIGKILL after `grace`) and keep it stopped until
    /// `Start`; `Stopped` once it is gone.
    Halt { grace: Duration, limit: Duration },
    /// Start a stopped or failed backend; `Serving` once it passes a probe.
    Start { limit: Duration },
    /// Nothing to do: `Serving` once it passes a probe (a new backend).
    Ready { limit: Duration },
    /// Stop for good (`fleet scale` down): the task ends once the worker is
    /// gone, and answers `Stopped` as its last word.
    Retire { grace: Duration },
    /// New probe settings and restart policy, from the next probe or exit.
    Configure {
        health: HealthConfig,
        policy: Policy,
    },
    /// A new command line, from the next spawn.
    Relaunch(Launch),
}

/// A control message and where its outcome goes.
#[derive(Debug)]
pub(crate) struct Order {
    pub(crate) control: Control,
    pub(crate) done: oneshot::Sender<Outcome>,
}

/// Resolves once the task has carried out a control message, with its
/// outcome (`Failed` if the task ended first: the fleet is shutting down).
#[derive(Debug)]
#[must_use = "a ticket does nothing unless awaited"]
pub(crate) struct Ticket(oneshot::Receiver<Outcome>);

impl Future for Ticket {
    type Output = Outcome;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        Pin::new(&mut self.0).poll(cx).map(|r| {
            r.unwrap_or_else(|_| Outcome::Failed {
                reason: "its task has ended: the fleet is shutting down".into(),
            })
        })
    }
}

/// The supervisor's end of one backend task.
#[derive(Debug)]
pub(crate) struct Job {
    port: u16,
    /// What the pool publishes to the balancer and `fleet status`; its
    /// lifecycle watch is where the task publishes.
    slot: Arc<Slot>,
    control: mpsc::Sender<Order>,
}

impl Job {
    pub(crate) fn new(slot: Arc<Slot>, control: mpsc::Sender<Order>) -> Self {
        Job {
            port: slot.port,
            slot,
            control,
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }

    /// Its lifecycle as its task last published it.
    pub(crate) fn lifecycle(&self) -> Lifecycle {
        self.slot.status()
    }

    /// Takes new requests (its task's `Running { healthy: true }`, unless the
    /// balancer has since taken it out of rotation).
    pub(crate) fn routable(&self) -> bool {
        self.slot.routable()
    }

    /// Send `control`; the ticket resolves when the task has carried it out.
    async fn send(&self, control: Control) -> Ticket {
        let (done, outcome) = oneshot::channel();
        // A task that has ended drops `done`: the ticket says so.
        let _ = self.control.send(Order { control, done }).await;
        Ticket(outcome)
    }

    /// Out of rotation; its in-flight work gets up to `limit` to finish.
    pub(crate) async fn drain(&self, limit: Duration) -> Ticket {
        self.send(Control::Drain { limit }).await
    }

    /// Restart its worker (SIGKILL `grace` after SIGTERM); serving within `limit`?
    pub(crate) async fn restart(&self, grace: Duration, limit: Duration) -> Ticket {
        self.send(Control::Restart { grace, limit }).await
    }

    /// Stop its worker (SIGKILL after `grace`) until `start`; stopped within `limit`?
    pub(crate) async fn halt(&self, grace: Duration, limit: Duration) -> Ticket {
        self.send(Control::Halt { grace, limit }).await
    }

    /// Start it (stopped or failed); serving within `limit`?
    pub(crate) async fn start(&self, limit: Duration) -> Ticket {
        self.send(Control::Start { limit }).await
    }

    /// Serving within `limit`? (A new backend, which starts by itself.)
    pub(crate) async fn ready(&self, limit: Duration) -> Ticket {
        self.send(Control::Ready { limit }).await
    }

    /// Stop for good (SIGKILL after `grace`); the task then ends.
    pub(crate) async fn retire(&self, grace: Duration) -> Ticket {
        self.send(Control::Retire { grace }).await
    }

    /// New probe settings and restart policy.
    pub(crate) async fn configure(&self, health: HealthConfig, policy: Policy) -> Ticket {
        self.send(Control::Configure { health, policy }).await
    }

    /// A new command line, used from the next spawn.
    pub(crate) async fn relaunch(&self, launch: Launch) -> Ticket {
        self.send(Control::Relaunch(launch)).await
    }
}

/// Each method of `Job`, against a task with fake workers on a paused
/// clock: the limits are exact, and nothing sleeps.
#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use tokio::time::Instant;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::config::Config;
    use crate::lifecycle::Phase;
    use crate::supervisor::backend::fake::{FakeIo, job, launch};

    const LIMIT: Duration = Duration::from_secs(10);
    const GRACE: Duration = Duration::from_secs(2);

    fn setup() -> (Arc<FakeIo>, Job, CancellationToken, TaskTracker) {
        let io = FakeIo::new();
        let (token, tracker) = (CancellationToken::new(), TaskTracker::new());
        let job = job(io.clone(), &token, &tracker);
        (io, job, token, tracker)
    }

    #[tokio::test(start_paused = true)]
    async fn ready_resolves_serving_with_the_pid_once_a_probe_passes() {
        let (_io, job, _token, _tracker) = setup();
        assert_eq!(job.ready(LIMIT).await.await, Outcome::Serving { pid: 1000 });
        let l = job.lifecycle();
        assert!(job.routable() && l.state == Phase::Running && l.pid == Some(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn ready_fails_at_its_limit_with_what_the_probes_saw() {
        let (io, job, _token, _tracker) = setup();
        io.healthy.store(false, Ordering::Relaxed);
        let t0 = Instant::now();
        let Outcome::Failed { reason } = job.ready(LIMIT).await.await else {
            panic!("a backend whose probes fail is not serving");
        };
        assert_eq!(
            t0.elapsed(),
            LIMIT,
            "answered at the limit, not before or after"
        );
        assert!(reason.contains("refused"), "{reason}");
    }

    #[tokio::test(start_paused = true)]
    async fn drain_takes_it_out_of_rotation_and_resolves_when_the_last_request_ends() {
        let (_io, job, _token, _tracker) = setup();
        let _ = job.ready(LIMIT).await.await;
        let request = job.slot().connection();
        let mut drained = job.drain(LIMIT).await;
        let early = tokio::time::timeout(Duration::from_secs(1), &mut drained).await;
        assert!(early.is_err(), "a request is still in flight");
        let l = job.lifecycle();
        assert!(!job.routable() && l.state == Phase::Draining);
        let t0 = Instant::now();
        drop(request);
        assert_eq!(drained.await, Outcome::Drained { in_flight: 0 });
        assert_eq!(t0.elapsed(), Duration::ZERO, "woken by the request's end");
    }

    #[tokio::test(start_paused = true)]
    async fn drain_resolves_at_its_limit_with_what_is_still_in_flight() {
        let (_io, job, _token, _tracker) = setup();
        let _ = job.ready(LIMIT).await.await;
        let _request = job.slot().connection();
        let t0 = Instant::now();
        assert_eq!(
            job.drain(LIMIT).await.await,
            Outcome::Drained { in_flight: 1 }
        );
        assert_eq!(t0.elapsed(), LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn restart_resolves_serving_with_the_new_workers_pid() {
        let (io, job, _token, _tracker) = setup();
        let _ = job.ready(LIMIT).await.await;
        assert_eq!(
            job.restart(GRACE, LIMIT).await.await,
            Outcome::Serving { pid: 1001 }
        );
        assert_eq!(io.spawned().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn restart_kills_a_worker_that_ignores_sigterm_at_the_grace_deadline() {
        let (io, job, _token, _tracker) = setup();
        io.stubborn.store(true, Ordering::Relaxed);
        let _ = job.ready(LIMIT).await.await;
        let t0 = Instant::now();
        assert_eq!(
            job.restart(GRACE, LIMIT).await.await,
            Outcome::Serving { pid: 1001 }
        );
        assert!(t0.elapsed() >= GRACE, "SIGKILL only at the deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn halt_resolves_stopped_and_holds_it_until_start() {
        let (_io, job, _token, _tracker) = setup();
        let _ = job.ready(LIMIT).await.await;
        assert_eq!(job.halt(GRACE, LIMIT).await.await, Outcome::Stopped);
        let l = job.lifecycle();
        assert!(l.held && l.pid.is_none() && !job.routable());
        // Held: nothing restarts it, however long.
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(job.lifecycle().held);
    }

    #[tokio::test(start_paused = true)]
    async fn start_brings_a_held_backend_back_serving() {
        let (_io, job, _token, _tracker) = setup();
        let _ = job.ready(LIMIT).await.await;
        let _ = job.halt(GRACE, LIMIT).await.await;
        assert_eq!(job.start(LIMIT).await.await, Outcome::Serving { pid: 1001 });
        assert!(!job.lifecycle().held);
    }

    #[tokio::test(start_paused = true)]
    async fn retire_stops_the_worker_and_ends_the_task() {
        let (_io, job, _token, tracker) = setup();
        let _ = job.ready(LIMIT).await.await;
        assert_eq!(job.retire(GRACE).await.await, Outcome::Stopped);
        tracker.close();
        tokio::time::timeout(Duration::from_secs(1), tracker.wait())
            .await
            .expect("the task has ended");
    }

    #[tokio::test(start_paused = true)]
    async fn configure_applies_at_once_and_relaunch_from_the_next_spawn() {
        let (io, job, _token, _tracker) = setup();
        let _ = job.ready(LIMIT).await.await;
        let c = Config::default();
        let policy = Policy::new(&c.restart, &c.health);
        assert_eq!(
            job.configure(c.health.clone(), policy).await.await,
            Outcome::Applied
        );
        assert_eq!(job.relaunch(launch("v2")).await.await, Outcome::Applied);
        assert_eq!(io.spawned().last().map(|s| s.1.clone()), Some("v1".into()));
        let _ = job.restart(GRACE, LIMIT).await.await;
        assert_eq!(io.spawned().last().map(|s| s.1.clone()), Some("v2".into()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_ticket_whose_task_has_ended_fails() {
        let (_io, job, token, tracker) = setup();
        token.cancel();
        tracker.close();
        tracker.wait().await;
        assert!(matches!(
            job.ready(LIMIT).await.await,
            Outcome::Failed { .. }
        ));
    }
}
