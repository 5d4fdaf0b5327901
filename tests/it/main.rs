//! Integration tests: one binary that drives the real `fleet` executable.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod admin_names;
mod anywhere;
mod backend_faults;
mod bench;
mod cost;
mod engine;
mod escapes;
mod export;
mod framing;
mod hardening;
mod harness;
mod healing;
mod http_mode;
mod lab;
mod lifecycle;
mod observe;
mod operate;
mod reload;
mod reload_all;
mod slow_start;
mod statedir;
mod upgrade;
mod upstreams;
mod watch;
mod worker;
