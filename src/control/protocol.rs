//! The control protocol between `fleet status|down|...` and the supervisor.
//!
//! One JSON object per line over the Unix socket in the state dir. Every
//! message carries `"v": PROTOCOL_VERSION`; a request with another version,
//! an unknown `cmd`, malformed JSON or a line longer than `MAX_LINE` gets an
//! `error` reply and the connection is closed, so a stray client can never
//! stall the supervisor. Requests are tagged by `cmd`, replies by `reply`.
//!
//! A request gets zero or more `progress` lines (a rolling restart reports
//! each backend as it goes) and then one final reply. Replies are bounded by
//! `MAX_REPLY`, not `MAX_LINE`: the status of 1000 backends is ~300 KB.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A backend's phase and how its last worker ended: the lifecycle's words,
/// which the protocol shows as they are.
pub use crate::lifecycle::{ExitInfo, Phase};

/// Bumped on any incompatible change to `Request` or `Reply`.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest accepted request line, in bytes (requests are tiny).
pub const MAX_LINE: usize = 64 * 1024;
/// Longest reply line a client accepts: far above the status of
/// `config::MAX_BACKENDS` backends, low enough to bound a client's memory.
pub const MAX_REPLY: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub v: u32,
    #[serde(flatten)]
    pub body: T,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// The fleet's status.
    Status,
    /// Graceful shutdown; the reply is sent once everything is stopped.
    Down {
        /// Overrides `shutdown.timeout` (seconds).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_s: Option<f64>,
    },
    /// Restart these backends (all when empty), one at a time with drain
    /// unless `all_at_once`.
    Restart {
        #[serde(default)]
        ports: Vec<u16>,
        #[serde(default)]
        all_at_once: bool,
    },
    /// Drain and stop these backends; they stay stopped until `start`.
    Stop { ports: Vec<u16> },
    /// Start these backends (every stopped or failed one when empty).
    Start {
        #[serde(default)]
        ports: Vec<u16>,
    },
    /// Grow or shrink the fleet to this many backends.
    Scale { backends: u16 },
    /// Re-read fleet.yaml (with the flags given to `up`) and apply the difference.
    Reload,
    /// Hand the fleet to a new supervisor of `exe` (the supervisor's own
    /// executable path when absent).
    Upgrade {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exe: Option<std::path::PathBuf>,
    },
}

impl Request {
    /// The verb, for messages.
    pub fn verb(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Down { .. } => "down",
            Request::Restart { .. } => "restart",
            Request::Stop { .. } => "stop",
            Request::Start { .. } => "start",
            Request::Scale { .. } => "scale",
            Request::Reload => "reload",
            Request::Upgrade { .. } => "upgrade",
        }
    }

    /// `down`'s grace period (`None`: `shutdown.timeout`); `Err` names a
    /// timeout that is not a number of seconds >= 0.
    pub fn grace(timeout_s: Option<f64>) -> Result<Option<std::time::Duration>, String> {
        match timeout_s.map(std::time::Duration::try_from_secs_f64) {
            None => Ok(None),
            Some(Ok(d)) => Ok(Some(d)),
            Some(Err(_)) => Err(format!(
                "down: timeout must be a number of seconds >= 0 (got {})",
                timeout_s.unwrap_or_default()
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Status(FleetStatus),
    /// `down` finished: every backend is reaped, the socket is unlinked.
    Stopped {
        pid: u32,
    },
    /// One step of a longer command; more lines follow.
    Progress {
        message: String,
    },
    /// The command finished; `message` sums it up (may be empty).
    Done {
        message: String,
    },
    Error {
        message: String,
    },
}

/// `fleet status --json` prints this object as-is (DESIGN.md §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetStatus {
    /// The supervisor's pid.
    pub pid: u32,
    /// The balancer's real address (after port 0 was resolved).
    pub listen: String,
    pub uptime_s: f64,
    pub backends: Vec<BackendStatus>,
    /// Fleet-wide metrics (additive): the backends' figures summed.
    #[serde(flatten)]
    pub traffic: FleetTraffic,
    /// The admin address (`/metrics`, `/status.json`, the dashboard), when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// Watch mode, when on (additive): what it watches and what the last
    /// change did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<Box<WatchStatus>>,
}

/// Watch mode's view: `fleet status` prints it as one line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchStatus {
    /// The watched files and directories (absolute).
    pub paths: Vec<String>,
    /// The last change acted on: a file (relative to its watched path), or
    /// `FILE and N more`.
    pub last_change: Option<String>,
    /// What it led to: `rolling`, the rolling restart's result, `stopped:
    /// WHY` when a backend did not come back (the rest serve the old
    /// version), or why nothing was restarted.
    pub outcome: Option<String>,
    /// Rolling restarts watch mode started.
    pub rolls: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub port: u16,
    /// An upstream's address as configured (`lab-pc-2:9002`); absent for a
    /// local backend. An upstream has no pid and never restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The backend's own process while one runs: the built-in worker, or
    /// the configured command (what `ps` shows for it).
    pub pid: Option<u32>,
    /// The `fleet guard` that runs a configured command (additive; absent
    /// for the built-in worker): the command's parent and process group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard_pid: Option<u32>,
    pub state: Phase,
    /// `stopped` on purpose, by `fleet stop` (additive; absent otherwise):
    /// not counted as unhealthy, and the fleet is not degraded for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// Takes new connections from the balancer.
    pub healthy: bool,
    pub restarts: u32,
    /// Seconds since the current worker started (0 when none runs).
    pub uptime_s: f64,
    pub active_connections: u64,
    pub total_connections: u64,
    /// How the previous worker ended: `{"code": 1}` or `{"signal": 9, "name": "SIGKILL"}`.
    pub last_exit: Option<ExitInfo>,
    /// Why the backend is `failed` or `stopped`, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Slow start: while it ramps up after coming into rotation, the percent
    /// of its full share of new requests it gets now (additive; absent at
    /// full share).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_pct: Option<u8>,
    /// Metrics (additive; see `crate::metrics`).
    #[serde(flatten)]
    pub traffic: Traffic,
}

/// A backend's traffic, in `BackendStatus` (flattened: these are its own
/// fields in the JSON). In tcp mode a request is a proxied connection,
/// classed by its first response's status line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    /// Requests answered, ever.
    #[serde(default)]
    pub requests: u64,
    /// The same, by status class: `{"1xx": 0, "2xx": 12, ...}`.
    #[serde(default)]
    pub responses: BTreeMap<String, u64>,
    /// Requests per second over the last 10 s.
    #[serde(default)]
    pub requests_per_s: f64,
    /// 99th percentile request latency over the last 10 s, in milliseconds
    /// (`null` with no requests in that time).
    #[serde(default)]
    pub p99_ms: Option<f64>,
    /// Bytes sent to the backend and received from it.
    #[serde(default)]
    pub bytes_in: u64,
    #[serde(default)]
    pub bytes_out: u64,
    /// Connects to the backend that failed or timed out.
    #[serde(default)]
    pub connect_failures: u64,
    /// Requests this backend failed before answering that went to another.
    #[serde(default)]
    pub replays: u64,
    /// Times the backend went in or out of rotation.
    #[serde(default)]
    pub health_changes: u64,
    /// Requests answered in each of the last 60 seconds, oldest first.
    #[serde(default)]
    pub requests_history: Vec<u64>,
}

/// The fleet's traffic, in `FleetStatus` (flattened, like `Traffic`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetTraffic {
    /// Requests answered by every backend the fleet has had (one removed by
    /// `fleet scale` included): never decreases while the supervisor lives.
    #[serde(default)]
    pub requests: u64,
    /// The same, by status class: `{"1xx": 0, "2xx": 12, ...}`.
    #[serde(default)]
    pub responses: BTreeMap<String, u64>,
    /// Requests per second over the last 10 s, all backends.
    #[serde(default)]
    pub requests_per_s: f64,
    /// 99th percentile request latency over the last 10 s, in milliseconds.
    #[serde(default)]
    pub p99_ms: Option<f64>,
    /// Requests answered in each of the last 60 seconds, oldest first.
    #[serde(default)]
    pub requests_history: Vec<u64>,
}

impl Reply {
    /// Whether this is the last line for its request.
    pub fn is_final(&self) -> bool {
        !matches!(self, Reply::Progress { .. })
    }
}

/// Encode one message as a line (with the trailing newline).
pub fn encode<T: Serialize>(body: T) -> String {
    let mut s = serde_json::to_string(&Envelope {
        v: PROTOCOL_VERSION,
        body,
    })
    .expect("protocol types always serialize");
    s.push('\n');
    s
}

/// Why a line is not a message of this protocol.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed message")]
    Malformed(#[source] serde_json::Error),
    #[error("protocol version {0} is not supported (this fleet speaks {PROTOCOL_VERSION})")]
    Version(u64),
    #[error("message has no protocol version \"v\"")]
    NoVersion,
    #[error("bad message")]
    Bad(#[source] serde_json::Error),
}

/// Decode one line, checking the version. The reader bounds the line
/// (`MAX_LINE` for requests, `MAX_REPLY` for replies).
pub fn decode<T: for<'de> Deserialize<'de>>(line: &[u8]) -> Result<T, DecodeError> {
    let v: serde_json::Value = serde_json::from_slice(line).map_err(DecodeError::Malformed)?;
    match v.get("v").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => return Err(DecodeError::Version(v)),
        None => return Err(DecodeError::NoVersion),
    }
    serde_json::from_value::<Envelope<T>>(v)
        .map(|e| e.body)
        .map_err(DecodeError::Bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips() {
        for r in [
            Request::Status,
            Request::Down {
                timeout_s: Some(2.5),
            },
            Request::Down { timeout_s: None },
            Request::Restart {
                ports: vec![9002, 9003],
                all_at_once: true,
            },
            Request::Stop { ports: vec![9002] },
            Request::Start { ports: vec![] },
            Request::Scale { backends: 8 },
            Request::Reload,
            Request::Upgrade { exe: None },
            Request::Upgrade {
                exe: Some("/opt/fleet".into()),
            },
        ] {
            let line = encode(r.clone());
            assert_eq!(decode::<Request>(line.trim_end().as_bytes()).unwrap(), r);
        }
    }

    #[test]
    fn status_request_is_tagged_by_cmd() {
        assert_eq!(encode(Request::Status), "{\"v\":1,\"cmd\":\"status\"}\n");
    }

    #[test]
    fn rejects_garbage_unknown_command_wrong_version_and_oversize() {
        for (line, says) in [
            (&b"garbage"[..], "malformed"),
            (br#"{"v":1,"cmd":"explode"}"#, "bad message"),
            (br#"{"v":2,"cmd":"status"}"#, "version 2"),
            (br#"{"cmd":"status"}"#, "no protocol version"),
        ] {
            let e = crate::message::one_line(&decode::<Request>(line).unwrap_err());
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn a_restart_without_ports_means_every_backend() {
        assert_eq!(
            decode::<Request>(br#"{"v":1,"cmd":"restart"}"#).unwrap(),
            Request::Restart {
                ports: vec![],
                all_at_once: false
            }
        );
    }

    #[test]
    fn a_status_far_larger_than_a_request_line_round_trips() {
        let b = BackendStatus {
            address: None,
            port: 9002,
            pid: Some(4243),
            guard_pid: Some(4242),
            state: Phase::Draining,
            held: false,
            healthy: false,
            restarts: 0,
            uptime_s: 1.5,
            active_connections: 0,
            total_connections: 7,
            last_exit: None,
            reason: Some("x".repeat(200)),
            weight_pct: None,
            traffic: Traffic::default(),
        };
        let s = FleetStatus {
            pid: 1,
            listen: "127.0.0.1:44444".into(),
            uptime_s: 0.0,
            backends: vec![b; 1000],
            traffic: FleetTraffic::default(),
            admin: None,
            watch: None,
        };
        let line = encode(Reply::Status(s.clone()));
        assert!(line.len() > MAX_LINE && line.len() < MAX_REPLY);
        assert!(line.contains(r#""state":"draining""#));
        assert_eq!(
            decode::<Reply>(line.trim_end().as_bytes()).unwrap(),
            Reply::Status(s)
        );
    }

    #[test]
    fn only_progress_is_not_final() {
        assert!(
            !Reply::Progress {
                message: String::new()
            }
            .is_final()
        );
        assert!(
            Reply::Done {
                message: String::new()
            }
            .is_final()
        );
        assert!(
            Reply::Error {
                message: String::new()
            }
            .is_final()
        );
    }
}
