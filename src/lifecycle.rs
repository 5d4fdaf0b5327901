//! A backend's lifecycle as its task publishes it: a plain snapshot, read
//! by the control plane (`control::status` turns it into the protocol's
//! `BackendStatus`) and by the supervisor's operations.
//!
//! One of the three views of a backend, each with one owner: the backend
//! task owns this one (`supervisor::backend`, `supervisor::upstream` write it
//! through `balancer::pool::Slot::publish`); the data plane reads only the
//! slot's atomics; the http engine owns its idle connections
//! (`balancer::http::conn_pool`). `Phase` and `ExitInfo` are also the
//! control protocol's words (it re-exports them), so they serialize.

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What the backend task last published: written on each state change,
/// never on the request path.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Lifecycle {
    /// The backend's process: the built-in worker, or a configured command.
    pub(crate) pid: Option<u32>,
    /// The `fleet guard` running a configured command (its process group).
    pub(crate) guard_pid: Option<u32>,
    /// Stopped by `fleet stop` (on purpose).
    pub(crate) held: bool,
    pub(crate) state: Phase,
    pub(crate) restarts: u32,
    /// When the current worker started (an upstream: when it came up).
    pub(crate) since: Option<Instant>,
    pub(crate) last_exit: Option<ExitInfo>,
    /// Why it is `failed` or `stopped`, or what its probes see while it
    /// starts, in words.
    pub(crate) reason: Option<String>,
}

/// A backend's lifecycle phase, as `fleet status` and its JSON show it
/// (the supervisor's state machine has more detail; this is the contract).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Spawned (or about to be), not yet past its first probe.
    #[default]
    Starting,
    /// Up; `healthy` says whether it takes traffic.
    Running,
    /// Out of rotation, finishing its in-flight work before a deliberate
    /// restart or stop.
    Draining,
    /// Waiting out the restart delay after an exit.
    Backoff,
    /// Crash loop: not restarted until `fleet restart` or `fleet start`.
    Failed,
    /// Signalled, waiting for the process to exit.
    Stopping,
    /// Not running: by `fleet stop`, by the restart policy, or at shutdown.
    Stopped,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Draining => "draining",
            Phase::Backoff => "backoff",
            Phase::Failed => "failed",
            Phase::Stopping => "stopping",
            Phase::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Set when fleet itself stopped the worker (a health restart), whose
    /// exit status then says nothing about the backend's own behaviour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal, &self.name) {
            (Some(c), _, _) => write!(f, "exit {c}"),
            (_, Some(_), Some(n)) => write!(f, "{n}"),
            (_, Some(s), None) => write!(f, "signal {s}"),
            _ => write!(f, "unknown"),
        }?;
        match &self.cause {
            Some(c) => write!(f, " ({c})"),
            None => Ok(()),
        }
    }
}
