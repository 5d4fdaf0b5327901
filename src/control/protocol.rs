//! The control protocol between `fleet status|down|...` and the supervisor.
//!
//! One JSON object per line over the Unix socket in the state dir. Every
//! message carries `"v": PROTOCOL_VERSION`; a request with another version,
//! an unknown `cmd`, malformed JSON or a line longer than `MAX_LINE` gets an
//! `error` reply and the connection is closed, so a stray client can never
//! stall the supervisor. Requests are tagged by `cmd`, replies by `reply`.

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change to `Request` or `Reply`.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest accepted line, in bytes (requests are tiny; status replies are
/// bounded by the backend count).
pub const MAX_LINE: usize = 64 * 1024;

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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Status(FleetStatus),
    /// `down` finished: every backend is reaped, the socket is unlinked.
    Stopped {
        pid: u32,
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub port: u16,
    /// An upstream's address as configured (`lab-pc-2:9002`); absent for a
    /// local backend. An upstream has no pid and never restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The worker's pid while one runs.
    pub pid: Option<u32>,
    /// One of `starting`, `running`, `backoff`, `failed`, `stopping`, `stopped`.
    pub state: String,
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

/// Decode one line, checking the version. The error is the reply text.
pub fn decode<T: for<'de> Deserialize<'de>>(line: &[u8]) -> Result<T, String> {
    if line.len() > MAX_LINE {
        return Err(format!("message longer than {MAX_LINE} bytes"));
    }
    let v: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("malformed message: {e}"))?;
    match v.get("v").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => {
            return Err(format!(
                "protocol version {v} is not supported (this fleet speaks {PROTOCOL_VERSION})"
            ));
        }
        None => return Err("message has no protocol version \"v\"".into()),
    }
    serde_json::from_value::<Envelope<T>>(v)
        .map(|e| e.body)
        .map_err(|e| format!("bad message: {e}"))
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
        ] {
            let line = encode(r.clone());
            assert_eq!(decode::<Request>(line.trim_end().as_bytes()), Ok(r));
        }
    }

    #[test]
    fn status_request_is_tagged_by_cmd() {
        assert_eq!(encode(Request::Status), "{\"v\":1,\"cmd\":\"status\"}\n");
    }

    #[test]
    fn rejects_garbage_unknown_command_wrong_version_and_oversize() {
        assert!(
            decode::<Request>(b"garbage")
                .unwrap_err()
                .contains("malformed")
        );
        assert!(
            decode::<Request>(br#"{"v":1,"cmd":"explode"}"#)
                .unwrap_err()
                .contains("bad message")
        );
        assert!(
            decode::<Request>(br#"{"v":2,"cmd":"status"}"#)
                .unwrap_err()
                .contains("version 2")
        );
        assert!(
            decode::<Request>(br#"{"cmd":"status"}"#)
                .unwrap_err()
                .contains("no protocol version")
        );
        let big = vec![b' '; MAX_LINE + 1];
        assert!(decode::<Request>(&big).unwrap_err().contains("longer than"));
    }
}
