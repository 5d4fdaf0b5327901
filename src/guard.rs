//! `fleet guard -- PROGRAM ARGS...` (hidden): ties a custom backend command's
//! life to its supervisor where the kernel will not (macOS has no
//! parent-death signal).
//!
//! The supervisor starts the guard in the backend's own process group with a
//! pipe as stdin; the guard starts PROGRAM in the same group and waits. When
//! stdin reaches EOF — the supervisor is gone, however it died — the guard
//! SIGKILLs the whole group, itself included. Signals from the supervisor go
//! to the whole group, so PROGRAM gets them directly; the guard only catches
//! them so that it outlives PROGRAM and reports PROGRAM's exit as its own (a
//! code, or death by the same signal), which is what `fleet status` shows.
//!
//! Plain threads and blocking I/O: no runtime, nothing to share.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use nix::sys::signal::{Signal, killpg};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::cli::GuardArgs;
use crate::exit;

/// Why the guard could not run or follow its command.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("guard: no command given")]
    NoCommand,
    #[error("guard: cannot handle signals")]
    Signals(#[source] std::io::Error),
    #[error("guard: cannot start {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("guard: lost {program}")]
    Lost {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

impl GuardError {
    pub fn exit_code(&self) -> u8 {
        match self {
            GuardError::NoCommand => exit::USAGE,
            // What a shell answers for a command it cannot run.
            GuardError::Spawn { .. } => 127,
            GuardError::Signals(_) | GuardError::Lost { .. } => exit::FAILURE,
        }
    }
}

/// Run PROGRAM under the guard; `Ok` carries PROGRAM's exit code, which the
/// guard exits with as its own (a PROGRAM killed by a signal takes the guard
/// with it by the same signal, inside this call).
pub fn run(args: GuardArgs) -> Result<u8, GuardError> {
    let Some((program, rest)) = args.command.split_first() else {
        return Err(GuardError::NoCommand);
    };
    // Registered handlers replace the default action (terminate), so the
    // guard stays to collect PROGRAM's status.
    let signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(GuardError::Signals)?;
    let mut child = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|source| GuardError::Spawn {
            program: program.clone(),
            source,
        })?;
    let child_pid = i32::try_from(child.id()).expect("pids fit in i32");
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 64];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                // A caught signal interrupts the read; that is not EOF.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        // Our own group: PROGRAM, its children, and this guard. Only when the
        // group is ours (as the supervisor arranges), never a shell's.
        let me = nix::unistd::getpid();
        if nix::unistd::getpgrp() == me {
            let _ = killpg(me, Signal::SIGKILL);
        } else {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child_pid), Signal::SIGKILL);
            std::process::exit(i32::from(exit::FAILURE));
        }
    });
    let status = child.wait().map_err(|source| GuardError::Lost {
        program: program.clone(),
        source,
    })?;
    drop(signals);
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(exit::FAILURE),
        (None, Some(sig)) => {
            // Die the same way, so the supervisor records the real cause.
            let _ = signal_hook::low_level::emulate_default_handler(sig);
            128u8.saturating_add(u8::try_from(sig).unwrap_or(0))
        }
        (None, None) => exit::FAILURE,
    })
}
