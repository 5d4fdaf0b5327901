//! The operations on a running fleet: restart, stop, start and scale
//! (`reload` is in `reload.rs`). The supervisor's loop runs one at a time.
//!
//! `Fleet` owns one handle per backend task and talks to the tasks only by
//! commands; what a backend *is* stays in its task's state machine, and an
//! operation learns the outcome from the pool's slots (the same view the
//! balancer and `fleet status` read).
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

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::backend::{BackendCmd, BackendHandle, BackendTask, RestartTurn};
use super::output::BackendLog;
use super::state::{Backend, Event, HELD, Policy};
use super::upstream::UpstreamTask;
use super::{Options, STARTUP_TIMEOUT, gave_up, launch_for};
use crate::balancer::pool::{Backends, Pool, Slot};
use crate::config::{Config, ConfigError, MAX_BACKENDS, Overrides};
use crate::control::command::{Command, Replies};
use crate::control::protocol::Reply;
use crate::lifecycle::Phase;
use crate::state_dir::StateDir;

/// Why a backend is not serving, in words: its state machine's reason, or
/// its state and last exit.
#[derive(Debug)]
pub(super) struct NotServing(pub(super) String);

/// How long a backend task may take to act on a command (it is never busy
/// for long: every await in its loop is a select over its inputs).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a wait on in-flight work looks again (`Slot::active` has no
/// wake-up: it changes on every request).
const POLL: Duration = Duration::from_millis(10);
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

fn not_serving(failed: &[(u16, String)]) -> String {
    failed
        .iter()
        .map(|(p, why)| format!("backend {p} did not come back: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Progress lines and the one final reply of a command. The client may be
/// gone (a closed terminal): the operation goes on regardless.
pub(super) struct Out(Replies);

impl Out {
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

/// The supervisor's side of the backends: their handles and the settings
/// they were started with.
pub(super) struct Fleet {
    pub(super) config: Config,
    pub(super) backends: Arc<Backends>,
    /// One per backend, by port (in port order: the pool's order).
    pub(super) handles: BTreeMap<u16, BackendHandle>,
    /// Remote backends: in the pool after the local ones, in the order
    /// written; their tasks only health-check them, and no command here
    /// addresses them.
    upstreams: Vec<Arc<Slot>>,
    tracker: TaskTracker,
    token: CancellationToken,
    grace: watch::Receiver<Duration>,
    pub(super) grace_tx: Arc<watch::Sender<Duration>>,
    state: StateDir,
    exe: PathBuf,
    echo_output: bool,
    pub(super) reload_from: Option<(Overrides, PathBuf)>,
    /// `backends` as fleet.yaml (and `up`'s flags) gave it at the last `up`
    /// or reload: a reload that finds it unchanged keeps a `fleet scale`.
    pub(super) file_backends: u16,
    /// One restart on failed probes at a time, fleet-wide.
    restart_turn: Arc<RestartTurn>,
}

impl Fleet {
    pub(super) fn new(
        config: Config,
        backends: Arc<Backends>,
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
            handles: BTreeMap::new(),
            upstreams: Vec::new(),
            tracker,
            token,
            grace_tx,
            state,
            exe: opts.exe.clone(),
            echo_output: opts.echo_output,
            reload_from: opts.reload.clone(),
            restart_turn: Arc::default(),
        }
    }

    pub(super) fn exe(&self) -> &std::path::Path {
        &self.exe
    }

    pub(super) fn len(&self) -> usize {
        self.handles.len()
    }

    /// Start the configured backends and upstreams' health checks, and
    /// publish them as the pool.
    pub(super) fn spawn_initial(&mut self) {
        for port in self.config.ports().collect::<Vec<_>>() {
            let h = self.spawn(port);
            self.handles.insert(port, h);
        }
        for u in &self.config.upstreams {
            let (mut slot, passive) = Slot::upstream(u.name.clone(), u.addr);
            slot.metrics = self.backends.metrics.backends.for_addr(slot.addr);
            let slot = Arc::new(slot);
            self.tracker.spawn(
                UpstreamTask {
                    slot: slot.clone(),
                    backends: self.backends.clone(),
                    health: self.config.health.clone(),
                    passive,
                    token: self.token.child_token(),
                }
                .run(),
            );
            self.upstreams.push(slot);
        }
        self.publish_pool();
    }

    /// Swap in a pool of exactly the current backends, then the upstreams
    /// (no request ever sees half of a change).
    fn publish_pool(&self) {
        let slots = self
            .handles
            .values()
            .map(|h| h.slot.clone())
            .chain(self.upstreams.iter().cloned())
            .collect();
        self.backends.swap(Pool::new(slots));
    }

    fn spawn(&self, port: u16) -> BackendHandle {
        let (mut slot, passive) = Slot::new(port, SocketAddr::from(([127, 0, 0, 1], port)));
        // A port scaled away and back carries on from its old counts.
        slot.metrics = self.backends.metrics.backends.for_addr(slot.addr);
        let slot = Arc::new(slot);
        let (commands, receiver) = mpsc::channel(8);
        let policy = Policy::new(&self.config.restart, &self.config.health);
        let task = BackendTask {
            slot: slot.clone(),
            backends: self.backends.clone(),
            launch: launch_for(&self.config, &self.exe, port),
            health: self.config.health.clone(),
            machine: Backend::new(policy, fastrand::u64(..)),
            log: Arc::new(BackendLog::new(
                self.state.backend_log(port),
                port,
                self.echo_output,
            )),
            passive,
            commands: receiver,
            token: self.token.child_token(),
            grace: self.grace.clone(),
            tracker: self.tracker.clone(),
            last_probe: None,
            restart_turn: self.restart_turn.clone(),
        };
        let join = self.tracker.spawn(task.run());
        BackendHandle {
            slot,
            commands,
            join,
        }
    }

    /// Run one command to its end, answering on its reply channel.
    pub(super) async fn execute(&mut self, cmd: Command) {
        let (out, result) = match cmd {
            Command::Restart {
                ports,
                all_at_once,
                reply,
            } => {
                let out = Out(reply);
                let r = self.restart(&ports, all_at_once, &out).await;
                (out, r)
            }
            Command::Stop { ports, reply } => {
                let out = Out(reply);
                let r = self.stop(&ports, &out).await;
                (out, r)
            }
            Command::Start { ports, reply } => {
                let out = Out(reply);
                let r = self.start(&ports, &out).await;
                (out, r)
            }
            Command::Scale { backends, reply } => {
                let out = Out(reply);
                let r = self.scale(backends, &out).await;
                (out, r)
            }
            Command::Reload { reply } => {
                let out = Out(reply);
                let r = self.reload(&out).await;
                (out, r)
            }
            // The loop acts on `down` itself, at once; never sent here.
            Command::Down { reply, .. } => (
                Out(reply),
                Err(OpError::Invalid("down is not an operation".into())),
            ),
        };
        out.finish(result).await;
    }

    /// "9002-9005", for messages.
    fn range(&self) -> String {
        match (self.handles.keys().next(), self.handles.keys().last()) {
            (Some(a), Some(b)) if a != b => format!("ports {a}-{b}"),
            (Some(a), _) => format!("port {a}"),
            _ => "no backends".into(),
        }
    }

    /// The ports named (every backend when none), checked before anything
    /// is done, in order, without repeats.
    fn select(&self, ports: &[u16]) -> Result<Vec<u16>, OpError> {
        if ports.is_empty() {
            return Ok(self.handles.keys().copied().collect());
        }
        let mut out = Vec::new();
        for &port in ports {
            if !self.handles.contains_key(&port) {
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

    fn slot(&self, port: u16) -> &Arc<Slot> {
        &self.handles[&port].slot
    }

    /// Stopped by `fleet stop`: a restart of "every backend" leaves it so.
    pub(super) fn held(&self, port: u16) -> bool {
        let s = self.slot(port).status();
        s.state == Phase::Stopped && s.reason.as_deref() == Some(HELD)
    }

    /// Feed `ev` to one backend's state machine and wait until the result
    /// is published (so what the slot shows next is after `ev`).
    async fn step(&self, port: u16, ev: Event) {
        let Some(h) = self.handles.get(&port) else {
            return;
        };
        let (ack, acked) = oneshot::channel();
        if h.commands.send(BackendCmd::Event(ev, ack)).await.is_ok() {
            let _ = tokio::time::timeout(ACK_TIMEOUT, acked).await;
        }
    }

    fn stop_deadline(&self) -> std::time::Instant {
        std::time::Instant::now() + self.config.shutdown.timeout
    }

    /// Poll `done` until it holds or `deadline`; woken early by published changes.
    async fn wait_until(&self, deadline: Instant, done: impl Fn() -> bool) -> bool {
        loop {
            let changed = self.backends.changed.notified();
            if done() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Take `ports` out of rotation and wait until their in-flight work is
    /// done, or `shutdown.drain_timeout`.
    async fn drain(&self, ports: &[u16], out: &Out) {
        for &p in ports {
            self.step(p, Event::Drain).await;
        }
        let deadline = Instant::now() + self.config.shutdown.drain_timeout;
        let slots: Vec<_> = ports.iter().map(|p| self.slot(*p).clone()).collect();
        if !self
            .wait_until(deadline, || slots.iter().all(|s| s.active() == 0))
            .await
        {
            for s in slots.iter().filter(|s| s.active() > 0) {
                out.progress(format!(
                    "backend {}: {} still in flight after {}; stopping it anyway",
                    s.port,
                    s.active(),
                    humantime::format_duration(self.config.shutdown.drain_timeout)
                ))
                .await;
            }
        }
    }

    /// Drain `ports`, then send each the deliberate stop `stop(deadline)`
    /// (a restart or a halt), SIGKILL due after the shutdown timeout.
    pub(super) async fn drain_then_stop(
        &self,
        ports: &[u16],
        out: &Out,
        stop: fn(std::time::Instant) -> Event,
    ) {
        self.drain(ports, out).await;
        for &p in ports {
            self.step(p, stop(self.stop_deadline())).await;
        }
    }

    /// After a deliberate (re)start: wait until the backend takes traffic,
    /// or gives up, or `limit`. `Err` says why it is not serving.
    pub(super) async fn come_back(&self, port: u16, limit: Duration) -> Result<u32, NotServing> {
        let slot = self.slot(port).clone();
        let deadline = Instant::now() + limit;
        self.wait_until(deadline, || {
            slot.routable() || gave_up(&slot, slot.routable(), &slot.status())
        })
        .await;
        let s = slot.status();
        // A guard's report of its command's pid may trail the first probe.
        match s.pid.or(s.guard_pid) {
            Some(pid) if slot.routable() => Ok(pid),
            _ => Err(NotServing(s.reason.clone().unwrap_or_else(
                || match &s.last_exit {
                    Some(e) => format!("{} (last {e})", s.state),
                    None => format!("not ready after {}", humantime::format_duration(limit)),
                },
            ))),
        }
    }

    /// `come_back` for each of `ports` in turn, saying `backend P: DONE (pid N)`
    /// for each that does; `Err` names every one that did not.
    async fn all_come_back(
        &self,
        ports: &[u16],
        limit: Duration,
        done: &str,
        out: &Out,
    ) -> Result<(), OpError> {
        let mut failed = Vec::new();
        for &p in ports {
            match self.come_back(p, limit).await {
                Ok(pid) => {
                    out.progress(format!("backend {p}: {done} (pid {pid})"))
                        .await
                }
                Err(NotServing(why)) => failed.push((p, why)),
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
        let limit = self.restart_limit();
        if all_at_once {
            out.progress(format!("draining {} backends", ports.len()))
                .await;
            self.drain_then_stop(&ports, out, |deadline| Event::Restart { deadline })
                .await;
            self.all_come_back(&ports, limit, "back", out).await?;
            return Ok(format!("restarted {} backends", ports.len()));
        }
        for (i, &p) in ports.iter().enumerate() {
            out.progress(format!("backend {p}: draining ({}/{})", i + 1, ports.len()))
                .await;
            self.drain_then_stop(&[p], out, |deadline| Event::Restart { deadline })
                .await;
            match self.come_back(p, limit).await {
                Ok(pid) => {
                    out.progress(format!("backend {p}: back in rotation (pid {pid})"))
                        .await
                }
                Err(NotServing(why)) => {
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
        self.drain_then_stop(&ports, out, |deadline| Event::Halt { deadline })
            .await;
        let deadline = Instant::now() + self.config.shutdown.timeout + STOP_SLACK;
        let slots: Vec<_> = ports.iter().map(|p| self.slot(*p).clone()).collect();
        self.wait_until(deadline, || {
            slots.iter().all(|s| s.status().state == Phase::Stopped)
        })
        .await;
        for s in &slots {
            out.progress(format!("backend {}: {}", s.port, s.status().state))
                .await;
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
        let mut started = Vec::new();
        for &p in &ports {
            let phase = self.slot(p).status().state;
            match phase {
                Phase::Stopped | Phase::Failed => {
                    self.step(p, Event::Start).await;
                    started.push(p);
                }
                _ if named => out.progress(format!("backend {p}: already {phase}")).await,
                _ => {}
            }
        }
        self.all_come_back(&started, STARTUP_TIMEOUT, "started", out)
            .await?;
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
        let have = self.handles.len() as u16;
        let old = self.config.backends;
        if n > have {
            let new: Vec<u16> = (base + have..base + n).collect();
            check_free(new.clone()).await?;
            self.config.backends = n;
            for &p in &new {
                let h = self.spawn(p);
                self.handles.insert(p, h);
            }
            self.publish_pool();
            out.progress(format!("starting {}", list(&new))).await;
            self.all_come_back(&new, STARTUP_TIMEOUT, "in rotation", out)
                .await?;
        } else if n < have {
            let gone: Vec<u16> = (base + n..base + have).collect();
            out.progress(format!("draining {}", list(&gone))).await;
            self.drain(&gone, out).await;
            let retired: Vec<BackendHandle> =
                gone.iter().filter_map(|p| self.handles.remove(p)).collect();
            self.config.backends = n;
            self.publish_pool();
            let deadline = self.stop_deadline();
            for h in &retired {
                let _ = h.commands.send(BackendCmd::Retire { deadline }).await;
            }
            let limit = self.config.shutdown.timeout + STOP_SLACK;
            for h in retired {
                let port = h.slot.port;
                if tokio::time::timeout(limit, h.join).await.is_err() {
                    warn!(target: "supervisor", port, "backend task did not finish after scale-down");
                }
                out.progress(format!("backend {port}: stopped and removed"))
                    .await;
            }
        }
        Ok(format!("scaled from {old} to {n} backends"))
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
fn list(ports: &[u16]) -> String {
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

    #[test]
    fn port_lists_read_as_words() {
        assert_eq!(list(&[]), "no backends");
        assert_eq!(list(&[9002]), "backend 9002");
        assert_eq!(list(&[9002, 9004]), "backends 9002 and 9004");
        assert_eq!(list(&[9002, 9003, 9004]), "backends 9002, 9003 and 9004");
        assert_eq!(list(&[9002, 9003, 9004, 9005]), "backends 9002-9005");
    }
}
