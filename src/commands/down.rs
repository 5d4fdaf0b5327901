//! `fleet down [--timeout DURATION]`: ask the supervisor to stop and wait until it
//! has: the reply comes after every worker is reaped and the state files are
//! removed, so a zero exit means nothing is left.

use std::time::{Duration, Instant};

use crate::cli::DownArgs;
use crate::control::client::{self, ControlError};
use crate::control::protocol::{Reply, Request};
use crate::exit;
use crate::state_dir::StateDir;

pub fn run(args: DownArgs) -> u8 {
    let state = StateDir::new(args.state.resolve());
    // Wait for the reply for as long as the shutdown may take, and then some.
    let wait = args
        .timeout
        .unwrap_or(Duration::from_secs(60))
        .saturating_add(Duration::from_secs(30));
    match client::call(
        &state,
        Request::Down {
            timeout_s: args.timeout.map(|t| t.as_secs_f64()),
        },
        Some(wait),
    ) {
        Ok(Reply::Stopped { pid }) => {
            wait_gone(pid, Duration::from_secs(5));
            crate::outln!("fleet: stopped (pid {pid})");
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
            crate::outln!("fleet: no fleet is running in {dir}; nothing to stop");
            exit::OK
        }
        Err(e) => {
            eprintln!("fleet: {e}");
            exit::FAILURE
        }
    }
}

/// The supervisor replies just before it exits; wait for the process itself
/// (a zombie counts as gone: its parent, not us, reaps it).
fn wait_gone(pid: u32, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit && crate::process::alive(pid) {
        std::thread::sleep(Duration::from_millis(10));
    }
}
