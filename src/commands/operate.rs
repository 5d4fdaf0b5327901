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

/// Run `req` against the fleet in `state`; `hint_no_fleet` follows "no fleet
/// is running in DIR" (say what to do instead).
pub(super) fn run(state: &StateDir, req: Request, hint_no_fleet: &str) -> u8 {
    let result = client::call_with_progress(state, req, Some(QUIET_LIMIT), |line| {
        crate::outln!("fleet: {line}");
    });
    match result {
        Ok(Reply::Done { message }) => {
            if !message.is_empty() {
                crate::outln!("fleet: {message}");
            }
            exit::OK
        }
        Ok(other) => {
            eprintln!("fleet: unexpected reply from the supervisor: {other:?}");
            exit::FAILURE
        }
        Err(ControlError::NotRunning { dir, note }) => {
            if let Some(n) = note {
                eprintln!("fleet: {n}");
            }
            eprintln!("fleet: no fleet is running in {dir}; {hint_no_fleet}");
            exit::NOT_RUNNING
        }
        Err(e @ ControlError::CannotRead { .. }) => {
            eprintln!("fleet: {e}");
            exit::UNREADABLE
        }
        Err(ControlError::Remote(message)) => {
            eprintln!("fleet: {message}");
            exit::FAILURE
        }
        Err(e) => {
            eprintln!("fleet: {e}");
            exit::FAILURE
        }
    }
}
