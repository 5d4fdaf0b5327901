//! Exit codes, documented in `--help` (see `cli`) and the README. Only
//! `main` turns them into the process's exit status.

/// Success (for `fleet up -d`: the fleet is running, possibly degraded).
pub(crate) const OK: u8 = 0;
/// A runtime failure: the fleet could not start, the supervisor did not answer, ...
pub(crate) const FAILURE: u8 = 1;
/// A usage or configuration error: nothing was started.
pub(crate) const USAGE: u8 = 2;
/// `fleet status` found no running fleet in the state dir.
pub(crate) const NOT_RUNNING: u8 = 3;
/// The state dir cannot be read (another user's fleet, a corrupt state
/// dir): whether a fleet runs there is unknown.
pub(crate) const UNREADABLE: u8 = 4;
