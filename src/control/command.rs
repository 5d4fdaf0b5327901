//! What the control server (and the signal handler) ask of the supervisor.
//!
//! The control server holds a sender of these and a status view, nothing
//! else: it does not name the supervisor's internals, and the supervisor's own
//! loop is the one place that acts on them, one at a time. There is no
//! second verb type: a command is the request as the client sent it.

use tokio::sync::mpsc;

use super::protocol::{Reply, Request};

/// Where the supervisor sends a command's `progress` lines and its one final
/// reply. Dropped without a final reply means "interrupted" (shutdown).
pub(crate) type Replies = mpsc::Sender<Reply>;

/// Capacity of a command's reply channel: progress lines wait for a slow
/// reader rather than pile up.
pub(crate) const REPLY_CAPACITY: usize = 16;

/// One request from a client (or SIGHUP's reload) for the supervisor's loop:
/// the protocol's own [`Request`] is the operation, executed by one
/// dispatch (`supervisor::ops`), and its replies go to `reply`.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) request: Request,
    pub(crate) reply: Replies,
}
