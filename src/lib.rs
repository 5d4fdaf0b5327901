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
//! - `worker`: the built-in static-file HTTP server (`fleet serve`).
//! - `bench`: the lab's ApacheBench table, built in (`fleet bench`).
//!
//! # Process model
//! The supervisor never forks inside its tokio runtime: every worker is a
//! fresh exec of this same binary, `fleet serve` or `fleet guard -- COMMAND`
//! for a configured command, in its own process group, with a lifeline (stdin
//! pipe). The built-in worker also gets Linux's parent-death signal; the guard
//! kills its command's group, and on Linux (a child subreaper) every
//! descendant, when the lifeline ends. So nothing outlives the supervisor
//! (`supervisor::orphans`, `guard`). `process::portable` selects the macOS
//! mechanisms on Linux for tests.
//!
//! # Shutdown
//! One `CancellationToken`, cancelled by SIGINT, SIGTERM or the control
//! `down` request, and by nothing else. `Supervisor::run` owns the order.

pub mod balancer;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod guard;
pub mod ports;
pub mod process;
pub mod state_dir;
pub mod supervisor;
pub mod worker;
