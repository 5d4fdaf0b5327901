//! What the control server (and the signal handler) ask of the supervisor.
//!
//! The control server holds a sender of these and a status view, nothing
//! else: it does not name the supervisor's internals, and the supervisor's own
//! loop is the one place that acts on them, one at a time.

use std::time::Duration;

use tokio::sync::mpsc;

use super::protocol::Reply;

/// Where the supervisor sends a command's `progress` lines and its one final
/// reply. Dropped without a final reply means "interrupted" (shutdown).
pub(crate) type Replies = mpsc::Sender<Reply>;

/// Capacity of a command's reply channel: progress lines wait for a slow
/// reader rather than pile up.
pub(crate) const REPLY_CAPACITY: usize = 16;

#[derive(Debug)]
pub(crate) enum Command {
    /// Stop the fleet; `grace` overrides `shutdown.timeout`. The final reply
    /// (`stopped`) comes once everything is stopped and the socket is gone.
    Down {
        grace: Option<Duration>,
        reply: Replies,
    },
    /// Restart these backends (all when empty): rolling with drain, or all at once.
    Restart {
        ports: Vec<u16>,
        all_at_once: bool,
        reply: Replies,
    },
    /// Drain and stop these backends until `Start`.
    Stop { ports: Vec<u16>, reply: Replies },
    /// Start these backends (every stopped or failed one when empty).
    Start { ports: Vec<u16>, reply: Replies },
    /// Grow or shrink to this many backends.
    Scale { backends: u16, reply: Replies },
    /// Re-read fleet.yaml and apply the difference.
    Reload { reply: Replies },
}

impl Command {
    /// The channel this command's replies go to.
    pub(crate) fn reply(&self) -> &Replies {
        match self {
            Command::Down { reply, .. }
            | Command::Restart { reply, .. }
            | Command::Stop { reply, .. }
            | Command::Start { reply, .. }
            | Command::Scale { reply, .. }
            | Command::Reload { reply } => reply,
        }
    }

    /// The verb, for messages.
    pub(crate) fn verb(&self) -> &'static str {
        match self {
            Command::Down { .. } => "down",
            Command::Restart { .. } => "restart",
            Command::Stop { .. } => "stop",
            Command::Start { .. } => "start",
            Command::Scale { .. } => "scale",
            Command::Reload { .. } => "reload",
        }
    }
}
