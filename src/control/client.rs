//! The client side of the control socket, used by `fleet status`, `fleet down`
//! and `fleet bench`. Plain blocking std I/O: these commands do one exchange.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::protocol::{self, FleetStatus, Reply, Request};
use crate::state_dir::{Holder, StateDir};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No supervisor runs in this state dir (`note` says what stale state was removed).
    #[error("no fleet is running in {dir} (start one with `fleet up`)")]
    NotRunning { dir: String, note: Option<String> },
    /// The state dir exists but cannot be read: whether a fleet runs is unknown.
    #[error(
        "cannot read the fleet state in {dir}: {path}: {error}{hint}",
        hint = if error.kind() == std::io::ErrorKind::PermissionDenied {
            " (the fleet belongs to another user: run this as that user)"
        } else {
            ""
        }
    )]
    CannotRead {
        dir: String,
        path: String,
        error: std::io::Error,
    },
    #[error("the supervisor of {dir} (pid {pid}) did not answer on its control socket: {reason}")]
    Unreachable {
        dir: String,
        pid: String,
        reason: String,
    },
    #[error("the supervisor replied with an error: {0}")]
    Remote(String),
    #[error("unexpected reply from the supervisor: {0}")]
    Protocol(String),
    #[error("cannot read the supervisor's reply")]
    Decode(#[source] protocol::DecodeError),
}

impl ControlError {
    /// 3 when no fleet runs, 4 when whether one runs cannot be read, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            ControlError::NotRunning { .. } => crate::exit::NOT_RUNNING,
            ControlError::CannotRead { .. } => crate::exit::UNREADABLE,
            ControlError::Unreachable { .. }
            | ControlError::Remote(_)
            | ControlError::Protocol(_)
            | ControlError::Decode(_) => crate::exit::FAILURE,
        }
    }

    /// What stale state was cleaned up on the way, if anything: a note for
    /// the user, not part of the failure.
    pub fn note(&self) -> Option<&str> {
        match self {
            ControlError::NotRunning { note, .. } => note.as_deref(),
            _ => None,
        }
    }
}

/// Send one request and read one reply. `timeout` bounds each read.
pub(crate) fn call(
    state: &StateDir,
    req: Request,
    timeout: Option<Duration>,
) -> Result<Reply, ControlError> {
    call_with_progress(state, req, timeout, |_| {})
}

/// Send one request, hand each `progress` line to `progress`, and return
/// the final reply. `timeout` bounds each read (each line).
pub(crate) fn call_with_progress(
    state: &StateDir,
    req: Request,
    timeout: Option<Duration>,
    mut progress: impl FnMut(&str),
) -> Result<Reply, ControlError> {
    // Absolute in every message: "no fleet in .fleet" does not say which.
    let dir = state.shown().display().to_string();
    let mut stream = match UnixStream::connect(state.socket()) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(ControlError::CannotRead {
                dir,
                path: state.socket().display().to_string(),
                error: e,
            });
        }
        Err(e) => {
            return match state.probe() {
                (Holder::Free, note) => Err(ControlError::NotRunning { dir, note }),
                (Holder::Unreadable { path, error }, _) => Err(ControlError::CannotRead {
                    dir,
                    path: path.display().to_string(),
                    error,
                }),
                (Holder::Running { pid }, _) => Err(ControlError::Unreachable {
                    dir,
                    pid: pid.map_or("unknown".into(), |p| p.to_string()),
                    reason: e.to_string(),
                }),
            };
        }
    };
    let unreachable = |reason: String| ControlError::Unreachable {
        dir: dir.clone(),
        pid: "unknown".into(),
        reason,
    };
    stream
        .set_read_timeout(timeout)
        .map_err(|e| unreachable(e.to_string()))?;
    stream
        .write_all(protocol::encode(req).as_bytes())
        .map_err(|e| unreachable(e.to_string()))?;
    let mut reader = BufReader::new(&stream);
    loop {
        let mut line = Vec::new();
        (&mut reader)
            .take(protocol::MAX_REPLY as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| unreachable(e.to_string()))?;
        if line.is_empty() {
            return Err(unreachable("connection closed without a reply".into()));
        }
        if line.len() > protocol::MAX_REPLY {
            return Err(ControlError::Protocol(format!(
                "reply longer than {} bytes",
                protocol::MAX_REPLY
            )));
        }
        match protocol::decode::<Reply>(line.trim_ascii_end()) {
            Ok(Reply::Progress { message }) => progress(&message),
            Ok(Reply::Error { message }) => return Err(ControlError::Remote(message)),
            Ok(r) => return Ok(r),
            Err(e) => return Err(ControlError::Decode(e)),
        }
    }
}

/// The running fleet's status.
pub(crate) fn status(state: &StateDir) -> Result<FleetStatus, ControlError> {
    match call(state, Request::Status, Some(Duration::from_secs(5)))? {
        Reply::Status(s) => Ok(s),
        other => Err(ControlError::Protocol(format!("{other:?}"))),
    }
}
