//! The control plane: a Unix socket in the state dir speaking JSON lines.
pub mod client;
pub mod command;
pub mod protocol;
pub mod server;
