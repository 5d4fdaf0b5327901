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

pub fn run(args: GuardArgs) -> u8 {
    let Some((program, rest)) = args.command.split_first() else {
        eprintln!("fleet guard: no command given");
        return exit::USAGE;
    };
    // Registered handlers replace the default action (terminate), so the
    // guard stays to collect PROGRAM's status.
    let signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fleet guard: cannot handle signals: {e}");
            return exit::FAILURE;
        }
    };
    let mut child = match Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fleet guard: cannot start {program}: {e}");
            return 127;
        }
    };
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
    let status = match child.wait() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fleet guard: lost {program}: {e}");
            return exit::FAILURE;
        }
    };
    drop(signals);
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(exit::FAILURE),
        (None, Some(sig)) => {
            // Die the same way, so the supervisor records the real cause.
            let _ = signal_hook::low_level::emulate_default_handler(sig);
            128u8.saturating_add(u8::try_from(sig).unwrap_or(0))
        }
        (None, None) => exit::FAILURE,
    }
}
