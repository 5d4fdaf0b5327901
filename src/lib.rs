//! fleet: a supervisor for a fleet of HTTP server processes with a built-in
//! round-robin TCP load balancer.
//!
//! # Layout
//! - `cli`: clap types; `commands`: one module per subcommand (the glue).
//! - `config`: fleet.yaml + flags -> a validated `Config`.
//! - `state_dir`: pid file lock, control socket path, logs.
//! - `supervisor`: one task per backend driving the pure state machine in
//!   `supervisor::state`; publishes each backend's routable flag and counters.
//! - `balancer`: accept -> pick a routable backend -> connect (retry the next)
//!   -> copy bytes both ways.
//! - `control`: versioned JSON-lines protocol over the Unix socket.
//! - `metrics`: per-backend and balancer counters and histograms in atomics,
//!   per-second samples for rates; read by `status`, `/metrics` and the dashboard.
//! - `admin`: the optional admin HTTP address (`/metrics`, `/status.json`, dashboard).
//! - `worker`: the built-in static-file HTTP server (`fleet serve`).
//! - `bench`: the lab's ApacheBench table, built in (`fleet bench`).
//!
//! # Process model
//! The supervisor never forks inside its tokio runtime: every worker is a
//! fresh exec of this same binary (`fleet serve`) or the configured command,
//! in its own process group, with a lifeline (stdin pipe) and, on Linux, a
//! parent-death signal, so no worker outlives its supervisor.
//!
//! # Shutdown
//! One `CancellationToken`, cancelled by SIGINT, SIGTERM or the control
//! `down` request, and by nothing else. `Supervisor::run` owns the order.

pub(crate) mod admin;
pub mod balancer;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod guard;
pub mod logging;
pub(crate) mod metrics;
pub mod ports;
pub mod process;
pub mod state_dir;
pub mod supervisor;
pub mod worker;
