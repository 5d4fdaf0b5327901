//! `fleet down [--timeout DURATION]`: ask the supervisor to stop and wait until it
//! has: the reply comes after every worker is reaped and the state files are
//! removed, so a zero exit means nothing is left.
//!
//! A supervisor that does not answer (stopped with SIGSTOP, hung) is stopped
//! with signals instead, once it has had its time: SIGCONT and SIGTERM (a
//! resumed supervisor then stops gracefully), and past `SIGTERM_WAIT`
//! SIGKILL for it and for the process group of every worker it started.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::cli::DownArgs;
use crate::control::client::{self, ControlError};
use crate::control::protocol::{Reply, Request};
use crate::exit;
use crate::state_dir::{Holder, StateDir};

/// Past its `--timeout`, how long a supervisor may take to reply before it
/// counts as not answering: it joins its tasks for up to 3 s after the grace
/// (`Supervisor::run`, step 4), then removes its files and replies.
const REPLY_MARGIN: Duration = Duration::from_secs(3);
/// How long a supervisor that did not answer gets after SIGCONT + SIGTERM.
const SIGTERM_WAIT: Duration = Duration::from_secs(2);
/// How long SIGKILLed processes get to be gone.
const SIGKILL_WAIT: Duration = Duration::from_secs(5);

/// Why `fleet down` could not confirm that the fleet is gone.
#[derive(Debug, thiserror::Error)]
pub enum DownError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("unexpected reply from the supervisor: {0}")]
    Reply(String),
    #[error("cannot read {}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is locked by a supervisor but names no pid; stop it by hand", .0.display())]
    NoPid(PathBuf),
    #[error("{} names pid {pid}, which is not a pid", path.display())]
    BadPid { path: PathBuf, pid: u32 },
    #[error("processes still alive after SIGKILL: {0:?}")]
    Survivors(Vec<u32>),
}

impl DownError {
    pub fn exit_code(&self) -> u8 {
        match self {
            DownError::Control(ControlError::CannotRead { .. }) | DownError::Unreadable { .. } => {
                exit::UNREADABLE
            }
            _ => exit::FAILURE,
        }
    }
}

pub(crate) fn run(args: DownArgs) -> Result<(), DownError> {
    let state = StateDir::new(args.state.resolve());
    // Wait for the reply for as long as the shutdown may take. Without
    // --timeout the supervisor's own shutdown.timeout applies, which we do
    // not know: allow a generous one.
    let wait = match args.timeout {
        Some(t) => t.saturating_add(REPLY_MARGIN),
        None => Duration::from_secs(90),
    };
    match client::call(
        &state,
        Request::Down {
            timeout_s: args.timeout.map(|t| t.as_secs_f64()),
        },
        Some(wait),
    ) {
        Ok(Reply::Stopped { pid }) => {
            let _ = wait_gone(pid, Duration::from_secs(5));
            crate::outln!("fleet: stopped (pid {pid})");
            Ok(())
        }
        Ok(other) => Err(DownError::Reply(format!("{other:?}"))),
        // Nothing to stop is what `down` wants: not a failure.
        Err(ControlError::NotRunning { dir, note }) => {
            if let Some(n) = note {
                eprintln!("fleet: {n}");
            }
            crate::outln!("fleet: no fleet is running in {dir}; nothing to stop");
            Ok(())
        }
        // Not a failure yet: said on the way to the fallback.
        Err(e @ ControlError::Unreachable { .. }) => {
            eprintln!("fleet: {e}; stopping it with signals");
            force(&state)
        }
        Err(e) => Err(e.into()),
    }
}

/// Stop a supervisor that does not answer, and every worker it started, by
/// signals; return once none of them is left. The pid comes from
/// `fleet.pid` only while its lock is held, so it is the live supervisor's.
fn force(state: &StateDir) -> Result<(), DownError> {
    let pid = match state.probe() {
        (Holder::Free, _) => {
            crate::outln!("fleet: stopped (the supervisor exited meanwhile)");
            return Ok(());
        }
        (Holder::Running { pid: Some(pid) }, _) => pid,
        (Holder::Unreadable { path, error }, _) => {
            return Err(DownError::Unreadable {
                path,
                source: error,
            });
        }
        (Holder::Running { pid: None }, _) => return Err(DownError::NoPid(state.pid_file())),
    };
    let Ok(raw) = i32::try_from(pid) else {
        return Err(DownError::BadPid {
            path: state.pid_file(),
            pid,
        });
    };
    let supervisor = Pid::from_raw(raw);
    // Found now: once the supervisor is gone its workers are re-parented.
    let workers = crate::process::descendants(pid);
    let _ = kill(supervisor, Signal::SIGCONT);
    let _ = kill(supervisor, Signal::SIGTERM);
    if !wait_gone(pid, SIGTERM_WAIT) {
        let _ = kill(supervisor, Signal::SIGKILL);
    }
    // Each worker leads its own process group (a custom command's children
    // are in it); the lifeline and parent-death signal would take them too,
    // but we return only once they are gone.
    for w in &workers {
        if let Ok(raw) = i32::try_from(*w) {
            let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
        }
    }
    let start = Instant::now();
    let mut left: Vec<u32> = std::iter::once(pid).chain(workers).collect();
    while start.elapsed() < SIGKILL_WAIT {
        left.retain(|p| crate::process::alive(*p));
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if !left.is_empty() {
        return Err(DownError::Survivors(left));
    }
    // Removes the pid file and socket the killed supervisor left.
    let _ = state.probe();
    crate::outln!("fleet: stopped (pid {pid}) by signals: it did not answer");
    Ok(())
}

/// The supervisor replies just before it exits; wait for the process itself
/// (a zombie counts as gone: its parent, not us, reaps it). True once gone.
fn wait_gone(pid: u32, limit: Duration) -> bool {
    let start = Instant::now();
    while crate::process::alive(pid) {
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}
