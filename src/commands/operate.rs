//! What `restart`, `stop`, `start`, `scale` and `reload` share: send one
//! request, print each progress line as it comes, then the outcome.

use std::time::Duration;

use crate::control::client::{self, ControlError};
use crate::control::protocol::{Reply, Request};
use crate::exit;
use crate::state_dir::StateDir;

/// The longest the supervisor may stay silent during an operation: each
/// step (a drain, a stop, a backend's first probe) is bounded by the fleet's
/// own timeouts, far below this.
const QUIET_LIMIT: Duration = Duration::from_secs(300);

/// Why an operation did not happen (or did not finish).
#[derive(Debug, thiserror::Error)]
pub enum OperateError {
    #[error("no fleet is running in {dir}; {hint}")]
    NotRunning { dir: String, hint: &'static str },
    /// The supervisor refused or failed, in its own words.
    #[error("{0}")]
    Refused(String),
    #[error("unexpected reply from the supervisor: {0}")]
    Reply(String),
    #[error(transparent)]
    Control(ControlError),
}

impl OperateError {
    pub fn exit_code(&self) -> u8 {
        match self {
            OperateError::NotRunning { .. } => exit::NOT_RUNNING,
            OperateError::Refused(_) | OperateError::Reply(_) => exit::FAILURE,
            OperateError::Control(e) => e.exit_code(),
        }
    }
}

/// Run `req` against the fleet in `state`; `hint_no_fleet` follows "no fleet
/// is running in DIR" (say what to do instead).
pub(super) fn run(
    state: &StateDir,
    req: Request,
    hint_no_fleet: &'static str,
) -> Result<(), OperateError> {
    let result = client::call_with_progress(state, req, Some(QUIET_LIMIT), |line| {
        crate::outln!("fleet: {line}");
    });
    match result {
        Ok(Reply::Done { message }) => {
            // The outcome, then (an operation's) what it cost: a line each.
            for line in message.lines() {
                crate::outln!("fleet: {line}");
            }
            Ok(())
        }
        Ok(other) => Err(OperateError::Reply(format!("{other:?}"))),
        Err(ControlError::NotRunning { dir, note }) => {
            if let Some(n) = note {
                eprintln!("fleet: {n}");
            }
            Err(OperateError::NotRunning {
                dir,
                hint: hint_no_fleet,
            })
        }
        Err(ControlError::Remote(message)) => Err(OperateError::Refused(message)),
        Err(e) => Err(OperateError::Control(e)),
    }
}
