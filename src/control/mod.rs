//! The control plane: a Unix socket in the state dir speaking JSON lines.
pub(crate) mod client;
pub(crate) mod command;
pub mod protocol;
pub(crate) mod server;
pub(crate) mod status;
