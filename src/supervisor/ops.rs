//! The operations on a running fleet: restart, stop, start and scale
//! (`reload` is in `reload.rs`), and the one dispatch of the control
//! protocol's requests to them. The supervisor's loop runs one at a time.
//!
//! `Fleet` owns one [`Job`] per backend task and talks to the tasks only
//! through them: an operation is a sequence of awaited tickets, each
//! resolving with the task's own outcome (`Serving { pid }`, `Stopped`, ...).
//! What a backend *is* stays in its task's state machine; the operation reads
//! its published lifecycle, never the status `fleet status` prints.
//!
//! Taking a backend out of service always drains it first: it leaves the
//! rotation (`draining`), its in-flight work (requests in http mode,
//! connections in tcp mode, counted by `Slot::active`) gets until
//! `shutdown.drain_timeout` to finish, and only then is it signalled.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::backend::{BackendTask, Io, Real, RestartTurn};
use super::job::{Job, Outcome, Ticket};
use super::output::BackendLog;
use super::state::{Backend, Policy};
use super::upstream::{Health, Remote, UpstreamTask, Verdict};
use super::{Options, STARTUP_TIMEOUT, launch_for};
use crate::balancer::pool::{Pool, Roster, Slot};
use crate::config::{Config, ConfigError, HealthConfig, MAX_BACKENDS, Overrides, Upstream};
use crate::control::command::Replies;
use crate::control::protocol::{Reply, Request};
use crate::cost::Cost;
use crate::lifecycle::Phase;
use crate::metrics::Op;
use crate::state_dir::StateDir;

/// Slack past the grace period for a stopped backend's task to finish.
const STOP_SLACK: Duration = Duration::from_secs(3);

/// Why an operation failed, as its client is told.
#[derive(Debug, thiserror::Error)]
pub(super) enum OpError {
    #[error("no backend on port {port}; this fleet has {range}")]
    UnknownPort { port: u16, range: String },
    #[error("{0}; nothing changed")]
    PortInUse(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{}", not_serving(.0))]
    NotServing(Vec<(u16, String)>),
    #[error("reload: {0}")]
    Config(#[from] ConfigError),
}

pub(super) fn not_serving(failed: &[(u16, String)]) -> String {
    failed
        .iter()
        .map(|(p, why)| format!("backend {p} did not come back: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// An operation ends with what it cost (`crate::cost`): the last line of
/// its reply, or a progress line before its error.
pub(super) async fn cost_line(
    cost: Option<(Cost, Op)>,
    result: Result<String, OpError>,
    out: &Out,
) -> Result<String, OpError> {
    let Some((cost, op)) = cost else {
        return result;
    };
    let line = cost.finish(op, result.is_ok());
    match result {
        Ok(message) => Ok(format!("{message}\n{line}")),
        Err(e) => {
            out.progress(line).await;
            Err(e)
        }
    }
}

/// Progress lines and the one final reply of a command. The client may be
/// gone (a closed terminal): the operation goes on regardless.
pub(super) struct Out(Replies);

impl Out {
    pub(super) fn new(reply: Replies) -> Self {
        Out(reply)
    }
    pub(super) async fn progress(&self, message: String) {
        info!(target: "supervisor", "{message}");
        let _ = self.0.send(Reply::Progress { message }).await;
    }
    async fn finish(self, result: Result<String, OpError>) {
        let reply = match result {
            Ok(message) => {
                info!(target: "supervisor", "{message}");
                Reply::Done { message }
            }
            Err(e) => {
                warn!(target: "supervisor", "{e}");
                Reply::Error {
                    message: e.to_string(),
                }
            }
        };
        let _ = self.0.send(reply).await;
    }
}

/// A ticket that should end with the backend serving: its pid, or why not.
pub(super) async fn serving(ticket: Ticket) -> Result<u32, String> {
    match ticket.await {
        Outcome::Serving { pid } => Ok(pid),
        Outcome::Failed { reason } => Err(reason),
        other => Err(format!("unexpected outcome {other:?}")),
    }
}

/// The supervisor's side of the backends: their jobs and the settings
/// they were started with.
pub(super) struct Fleet {
    pub(super) config: Config,
    pub(super) backends: Arc<Roster>,
    /// One per backend, by port (in port order: the pool's order).
    pub(super) jobs: BTreeMap<u16, Job>,
    /// Remote backends: in the pool after the local ones, in the order
    /// written; their tasks only health-check them, and no command here
    /// addresses them (a reload adds and removes them: `upstream_set`).
    pub(super) upstreams: Vec<Remote>,
    /// The balancer's listener and the admin names, which a reload moves
    /// (`front`); set once the balancer runs.
    pub(super) front: Option<super::front::Front>,
    tracker: TaskTracker,
    token: CancellationToken,
    grace: watch::Receiver<Duration>,
    pub(super) grace_tx: Arc<watch::Sender<Duration>>,
    pub(super) state: StateDir,
    exe: PathBuf,
    echo_output: bool,
    pub(super) reload_from: Option<(Overrides, PathBuf)>,
    /// `backends` as fleet.yaml (and `up`'s flags) gave it at the last `up`
    /// or reload: a reload that finds it unchanged keeps a `fleet scale`.
    pub(super) file_backends: u16,
    /// One restart on failed probes at a time, fleet-wide.
    restart_turn: Arc<RestartTurn>,
    /// How backend tasks start workers and probe them (a fake in tests).
    io: Arc<dyn Io>,
}

impl Fleet {
    pub(super) fn new(
        config: Config,
        backends: Arc<Roster>,
        tracker: TaskTracker,
        token: CancellationToken,
        grace_tx: Arc<watch::Sender<Duration>>,
        state: StateDir,
        opts: &Options,
    ) -> Self {
        Fleet {
            grace: grace_tx.subscribe(),
            file_backends: config.backends,
            config,
            backends,
            jobs: BTreeMap::new(),
            upstreams: Vec::new(),
            front: None,
            tracker,
            token,
            grace_tx,
            state,
            exe: opts.exe.clone(),
            echo_output: opts.echo_output,
            reload_from: opts.reload.clone(),
            restart_turn: Arc::default(),
            io: Arc::new(Real),
        }
    }

    /// Backend tasks spawned from now on start workers and probe through `io`.
    #[cfg(test)]
    pub(super) fn with_io(mut self, io: Arc<dyn Io>) -> Self {
        self.io = io;
        self
    }

    pub(super) fn exe(&self) -> &std::path::Path {
        &self.exe
    }

    pub(super) fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Start the configured backends and upstreams' health checks, and
    /// publish them as the pool.
    pub(super) fn spawn_initial(&mut self) {
        for port in self.config.ports().collect::<Vec<_>>() {
            let job = self.spawn(port);
            self.jobs.insert(port, job);
        }
        for u in self.config.upstreams.clone() {
            let remote = self.spawn_upstream(u, &self.config.health);
            self.upstreams.push(remote);
        }
        self.publish_pool();
    }

    /// Start health-checking one upstream (it takes traffic once the pool
    /// holds it and it passed a probe).
    pub(super) fn spawn_upstream(&self, config: Upstream, health: &HealthConfig) -> Remote {
        let (mut slot, passive) = Slot::upstream(config.name.clone(), config.addr);
        slot.metrics = self.backends.metrics.backends.for_addr(slot.addr);
        let slot = Arc::new(slot);
        let (verdict, watcher) = watch::channel(Verdict {
            health: Health::Unknown { fails: 0 },
            reason: None,
        });
        let stop = self.token.child_token();
        self.tracker.spawn(
            UpstreamTask {
                verdict,
                slot: slot.clone(),
                backends: self.backends.clone(),
                health: health.clone(),
                passive,
                token: stop.clone(),
            }
            .run(),
        );
        Remote {
            config,
            slot,
            verdict: watcher,
            stop,
        }
    }

    /// Swap in a pool of exactly the current backends, then the upstreams
    /// (no request ever sees half of a change).
    pub(super) fn publish_pool(&self) {
        let slots = self
            .jobs
            .values()
            .map(|j| j.slot().clone())
            .chain(self.upstreams.iter().map(|u| u.slot.clone()))
            .collect();
        self.backends.swap(Pool::new(slots));
    }

    pub(super) fn spawn(&self, port: u16) -> Job {
        let (mut slot, passive) = Slot::new(port, SocketAddr::from(([127, 0, 0, 1], port)));
        // A port scaled away and back carries on from its old counts.
        slot.metrics = self.backends.metrics.backends.for_addr(slot.addr);
        let slot = Arc::new(slot);
        let (control, receiver) = mpsc::channel(8);
        let policy = Policy::new(&self.config.restart, &self.config.health);
        let machine = Backend::new(policy, fastrand::u64(..));
        let task = BackendTask {
            slot: slot.clone(),
            backends: self.backends.clone(),
            launch: launch_for(&self.config, &self.exe, port),
            health: self.config.health.clone(),
            machine,
            log: Arc::new(BackendLog::new(
                self.state.backend_log(port),
                port,
                self.echo_output,
            )),
            passive,
            commands: receiver,
            io: self.io.clone(),
            token: self.token.child_token(),
            grace: self.grace.clone(),
            tracker: self.tracker.clone(),
            last_probe: None,
            restart_turn: self.restart_turn.clone(),
        };
        self.tracker.spawn(task.run());
        Job::new(slot, control)
    }

    /// Run one request to its end, answering on `out`: the one dispatch
    /// from the control protocol's verbs to the operations. Each operation
    /// ends with what it cost the fleet's clients (`crate::cost`).
    pub(super) async fn execute(&mut self, request: Request, out: Out) {
        let cost = Cost::start(&self.backends);
        let op = match &request {
            Request::Restart { .. } => Some(Op::Restart),
            Request::Stop { .. } => Some(Op::Stop),
            Request::Start { .. } => Some(Op::Start),
            Request::Scale { .. } => Some(Op::Scale),
            Request::Reload => Some(Op::Reload),
            Request::Upgrade { .. } => Some(Op::Upgrade),
            Request::Status | Request::Down { .. } => None,
        };
        let result = match request {
            Request::Restart { ports, all_at_once } => {
                self.restart(&ports, all_at_once, &out).await
            }
            Request::Stop { ports } => self.stop(&ports, &out).await,
            Request::Start { ports } => self.start(&ports, &out).await,
            Request::Scale { backends } => self.scale(backends, &out).await,
            Request::Reload => self.reload(&out).await,
            Request::Upgrade { exe } => self.upgrade(exe, &out).await,
            // The control server answers `status`, the loop acts on `down`
            // itself, at once: never sent here.
            other @ (Request::Status | Request::Down { .. }) => Err(OpError::Invalid(format!(
                "{} is not an operation",
                other.verb()
            ))),
        };
        let result = cost_line(op.map(|op| (cost, op)), result, &out).await;
        out.finish(result).await;
    }

    /// "9002-9005", for messages.
    fn range(&self) -> String {
        match (self.jobs.keys().next(), self.jobs.keys().last()) {
            (Some(a), Some(b)) if a != b => format!("ports {a}-{b}"),
            (Some(a), _) => format!("port {a}"),
            _ => "no backends".into(),
        }
    }

    /// The ports named (every backend when none), checked before anything
    /// is done, in order, without repeats.
    fn select(&self, ports: &[u16]) -> Result<Vec<u16>, OpError> {
        if ports.is_empty() {
            return Ok(self.jobs.keys().copied().collect());
        }
        let mut out = Vec::new();
        for &port in ports {
            if !self.jobs.contains_key(&port) {
                return Err(OpError::UnknownPort {
                    port,
                    range: self.range(),
                });
            }
            if !out.contains(&port) {
                out.push(port);
            }
        }
        Ok(out)
    }

    pub(super) fn job(&self, port: u16) -> &Job {
        &self.jobs[&port]
    }

    /// Stopped by `fleet stop`: a restart of "every backend" leaves it so.
    pub(super) fn held(&self, port: u16) -> bool {
        self.job(port).lifecycle().held
    }

    /// Take `ports` out of rotation and wait until their in-flight work is
    /// done, or `shutdown.drain_timeout`.
    pub(super) async fn drain(&self, ports: &[u16], out: &Out) {
        let limit = self.config.shutdown.drain_timeout;
        let mut tickets = Vec::new();
        for &p in ports {
            tickets.push((p, self.job(p).drain(limit).await));
        }
        for (p, ticket) in tickets {
            if let Outcome::Drained { in_flight } = ticket.await
                && in_flight > 0
            {
                out.progress(format!(
                    "backend {p}: {in_flight} still in flight after {}; stopping it anyway",
                    humantime::format_duration(limit)
                ))
                .await;
            }
        }
    }

    /// Drain `ports`, then restart each (SIGKILL due after the shutdown
    /// timeout): the tickets that resolve once each serves again.
    pub(super) async fn drain_then_restart(&self, ports: &[u16], out: &Out) -> Vec<(u16, Ticket)> {
        self.drain(ports, out).await;
        let (grace, limit) = (self.config.shutdown.timeout, self.restart_limit());
        let mut tickets = Vec::new();
        for &p in ports {
            tickets.push((p, self.job(p).restart(grace, limit).await));
        }
        tickets
    }

    /// Await each ticket in turn, saying `backend P: DONE (pid N)` for each
    /// that serves; `Err` names every one that does not.
    async fn all_serving(
        &self,
        tickets: Vec<(u16, Ticket)>,
        done: &str,
        out: &Out,
    ) -> Result<(), OpError> {
        let mut failed = Vec::new();
        for (p, ticket) in tickets {
            match serving(ticket).await {
                Ok(pid) => {
                    out.progress(format!("backend {p}: {done} (pid {pid})"))
                        .await
                }
                Err(why) => failed.push((p, why)),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(OpError::NotServing(failed))
        }
    }

    /// How long a restarted backend gets to stop and pass its first probe.
    pub(super) fn restart_limit(&self) -> Duration {
        self.config.shutdown.timeout + STARTUP_TIMEOUT
    }

    /// `fleet restart`: rolling (one at a time, each back in rotation before
    /// the next is touched) or all at once. A rolling restart stops at the
    /// first backend that does not come back, leaving the rest serving.
    pub(super) async fn restart(
        &self,
        ports: &[u16],
        all_at_once: bool,
        out: &Out,
    ) -> Result<String, OpError> {
        let ports: Vec<u16> = match ports {
            [] => self
                .select(&[])?
                .into_iter()
                .filter(|p| !self.held(*p))
                .collect(),
            named => self.select(named)?,
        };
        if ports.is_empty() {
            return Ok("nothing to restart: every backend is stopped (`fleet start` first)".into());
        }
        if all_at_once {
            out.progress(format!("draining {} backends", ports.len()))
                .await;
            let tickets = self.drain_then_restart(&ports, out).await;
            self.all_serving(tickets, "back", out).await?;
            return Ok(format!("restarted {} backends", ports.len()));
        }
        for (i, &p) in ports.iter().enumerate() {
            out.progress(format!("backend {p}: draining ({}/{})", i + 1, ports.len()))
                .await;
            let tickets = self.drain_then_restart(&[p], out).await;
            for (_, ticket) in tickets {
                match serving(ticket).await {
                    Ok(pid) => {
                        out.progress(format!("backend {p}: back in rotation (pid {pid})"))
                            .await
                    }
                    Err(why) => {
                        let rest = &ports[i + 1..];
                        if !rest.is_empty() {
                            out.progress(format!(
                                "stopping the rolling restart: {} not restarted",
                                list(rest)
                            ))
                            .await;
                        }
                        return Err(OpError::NotServing(vec![(p, why)]));
                    }
                }
            }
        }
        Ok(format!("restarted {} backends, one at a time", ports.len()))
    }

    /// `fleet stop`: drain, stop, and keep stopped until `fleet start`.
    pub(super) async fn stop(&self, ports: &[u16], out: &Out) -> Result<String, OpError> {
        if ports.is_empty() {
            return Err(OpError::Invalid(
                "stop: name the backends to stop (fleet stop PORT...); `fleet down` stops the whole fleet".into(),
            ));
        }
        let ports = self.select(ports)?;
        self.drain(&ports, out).await;
        let grace = self.config.shutdown.timeout;
        let mut tickets = Vec::new();
        for &p in &ports {
            tickets.push((p, self.job(p).halt(grace, grace + STOP_SLACK).await));
        }
        for (p, ticket) in tickets {
            let phase = match ticket.await {
                Outcome::Stopped => Phase::Stopped,
                _ => self.job(p).lifecycle().state,
            };
            out.progress(format!("backend {p}: {phase}")).await;
        }
        Ok(format!(
            "stopped {}; `fleet start` brings them back",
            list(&ports)
        ))
    }

    /// `fleet start`: start stopped or failed backends (all of them when
    /// none is named).
    pub(super) async fn start(&self, ports: &[u16], out: &Out) -> Result<String, OpError> {
        let named = !ports.is_empty();
        let ports = self.select(ports)?;
        let mut tickets = Vec::new();
        for &p in &ports {
            let state = self.job(p).lifecycle().state;
            match state {
                Phase::Stopped | Phase::Failed => {
                    tickets.push((p, self.job(p).start(STARTUP_TIMEOUT).await));
                }
                _ if named => out.progress(format!("backend {p}: already {state}")).await,
                _ => {}
            }
        }
        let started: Vec<u16> = tickets.iter().map(|(p, _)| *p).collect();
        self.all_serving(tickets, "started", out).await?;
        Ok(match started.len() {
            0 => "nothing to start".into(),
            _ => format!("started {}", list(&started)),
        })
    }

    /// `fleet scale N`: grow onto the next consecutive ports (all checked
    /// free first) or shrink from the top (drained first).
    pub(super) async fn scale(&mut self, n: u16, out: &Out) -> Result<String, OpError> {
        let base = self.config.base_port;
        // No local backend at all is allowed only beside upstreams, as in fleet.yaml.
        let least = u16::from(self.upstreams.is_empty());
        if n < least || n > MAX_BACKENDS {
            return Err(OpError::Invalid(format!(
                "scale: the backend count must be {least} to {MAX_BACKENDS} (got {n}); `fleet down` stops the fleet"
            )));
        }
        if u32::from(base) + u32::from(n) > u32::from(u16::MAX) + 1 {
            return Err(OpError::Invalid(format!(
                "scale: {n} backends from port {base} would go past port 65535"
            )));
        }
        let have = self.jobs.len() as u16;
        let old = self.config.backends;
        if n > have {
            let new: Vec<u16> = (base + have..base + n).collect();
            check_free(new.clone()).await?;
            self.config.backends = n;
            for &p in &new {
                let job = self.spawn(p);
                self.jobs.insert(p, job);
            }
            self.publish_pool();
            out.progress(format!("starting {}", list(&new))).await;
            let mut tickets = Vec::new();
            for &p in &new {
                tickets.push((p, self.job(p).ready(STARTUP_TIMEOUT).await));
            }
            self.all_serving(tickets, "in rotation", out).await?;
        } else if n < have {
            let gone: Vec<u16> = (base + n..base + have).collect();
            out.progress(format!("draining {}", list(&gone))).await;
            self.drain(&gone, out).await;
            let retired: Vec<Job> = gone.iter().filter_map(|p| self.jobs.remove(p)).collect();
            self.config.backends = n;
            self.publish_pool();
            self.retire(retired, out).await;
        }
        Ok(format!("scaled from {old} to {n} backends"))
    }

    /// Stop backends already out of the pool for good: each job's `retire`
    /// ticket resolves once its worker is gone and its task ends.
    pub(super) async fn retire(&self, retired: Vec<Job>, out: &Out) {
        let grace = self.config.shutdown.timeout;
        let mut tickets = Vec::new();
        for job in &retired {
            tickets.push((job.port(), job.retire(grace).await));
        }
        for (port, ticket) in tickets {
            if tokio::time::timeout(grace + STOP_SLACK, ticket)
                .await
                .is_err()
            {
                warn!(target: "supervisor", port, "backend task did not finish after it was retired");
            }
            out.progress(format!("backend {port}: stopped and removed"))
                .await;
        }
    }
}

/// Every port must be free for a new backend; the first busy one is named.
/// Blocking (a bind per port, and naming the holder walks /proc or runs
/// lsof), so it runs on the blocking pool, never on a runtime thread.
pub(super) async fn check_free(ports: Vec<u16>) -> Result<(), OpError> {
    let busy = tokio::task::spawn_blocking(move || {
        ports
            .iter()
            .find(|p| !crate::ports::is_free(SocketAddr::from(([127, 0, 0, 1], **p))))
            .map(|p| crate::ports::in_use_message(*p, "backend"))
    })
    .await;
    match busy {
        Ok(None) => Ok(()),
        Ok(Some(message)) => Err(OpError::PortInUse(message)),
        Err(e) => Err(OpError::Invalid(format!(
            "checking the new ports failed: {e}"
        ))),
    }
}

/// "9002, 9003 and 9004" (short lists) or "9002-9009".
pub(super) fn list(ports: &[u16]) -> String {
    let consecutive = ports.windows(2).all(|w| w[1] == w[0] + 1);
    match ports {
        [] => "no backends".into(),
        [p] => format!("backend {p}"),
        [a, .., b] if consecutive && ports.len() > 3 => format!("backends {a}-{b}"),
        [init @ .., last] => format!(
            "backends {} and {last}",
            init.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::backend::fake::FakeIo;

    /// A fleet of three fake backends (no processes) on a paused clock.
    fn fleet(io: Arc<FakeIo>) -> Fleet {
        let config = Config {
            backends: 3,
            base_port: 9002,
            ..Config::default()
        };
        let backends = Arc::new(Roster::new(Pool::new(Vec::new()), config.balancer.clone()));
        let grace = Arc::new(watch::channel(config.shutdown.timeout).0);
        let opts = Options {
            echo_output: false,
            exe: "fake".into(),
            reload: None,
            signals: None,
            take_over: None,
        };
        let mut fleet = Fleet::new(
            config,
            backends,
            TaskTracker::new(),
            CancellationToken::new(),
            grace,
            StateDir::new("/nonexistent/fleet-test"),
            &opts,
        )
        .with_io(io);
        fleet.spawn_initial();
        fleet
    }

    /// Every line the operation sent, in order.
    fn lines(rx: &mut mpsc::Receiver<Reply>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|r| match r {
                Reply::Progress { message } => message,
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_rolling_restart_is_one_backend_at_a_time_each_back_before_the_next() {
        let io = FakeIo::new();
        let fleet = fleet(io.clone());
        for job in fleet.jobs.values() {
            assert!(matches!(
                job.ready(STARTUP_TIMEOUT).await.await,
                Outcome::Serving { .. }
            ));
        }
        let (tx, mut rx) = mpsc::channel(64);
        let done = fleet.restart(&[], false, &Out::new(tx)).await;
        assert_eq!(done.unwrap(), "restarted 3 backends, one at a time");
        assert_eq!(
            lines(&mut rx),
            [
                "backend 9002: draining (1/3)",
                "backend 9002: back in rotation (pid 1003)",
                "backend 9003: draining (2/3)",
                "backend 9003: back in rotation (pid 1004)",
                "backend 9004: draining (3/3)",
                "backend 9004: back in rotation (pid 1005)",
            ]
        );
        // New workers in port order, each spawned after the one before served.
        let respawned: Vec<_> = io.spawned()[3..].iter().map(|s| (s.0, s.2)).collect();
        assert_eq!(respawned, [(9002, 1003), (9003, 1004), (9004, 1005)]);
        assert!(fleet.jobs.values().all(|j| j.routable()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rolling_restart_stops_at_the_first_backend_that_does_not_come_back() {
        let io = FakeIo::new();
        let fleet = fleet(io.clone());
        for job in fleet.jobs.values() {
            let _ = job.ready(STARTUP_TIMEOUT).await.await;
        }
        io.sick.lock().unwrap().push(9002);
        let (tx, mut rx) = mpsc::channel(64);
        let err = fleet.restart(&[], false, &Out::new(tx)).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("backend 9002 did not come back: "),
            "{err}"
        );
        let lines = lines(&mut rx);
        assert_eq!(
            lines.last().map(String::as_str),
            Some("stopping the rolling restart: backends 9003 and 9004 not restarted")
        );
        assert_eq!(io.spawned().len(), 4, "only 9002 was restarted");
        assert!(fleet.job(9003).routable());
    }

    #[test]
    fn port_lists_read_as_words() {
        assert_eq!(list(&[]), "no backends");
        assert_eq!(list(&[9002]), "backend 9002");
        assert_eq!(list(&[9002, 9004]), "backends 9002 and 9004");
        assert_eq!(list(&[9002, 9003, 9004]), "backends 9002, 9003 and 9004");
        assert_eq!(list(&[9002, 9003, 9004, 9005]), "backends 9002-9005");
    }
}
