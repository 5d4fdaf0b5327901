//! `fleet guard -- PROGRAM ARGS...` (hidden): ties a custom backend command,
//! and everything it starts, to the life of its supervisor.
//!
//! The supervisor starts the guard in the backend's own process group with a
//! pipe as stdin; the guard starts PROGRAM in the same group and waits. When
//! stdin reaches EOF (the supervisor is gone, however it died) the guard
//! SIGKILLs every descendant and the whole group, itself included.
//!
//! On Linux the guard is also a child subreaper: a descendant whose parent
//! exits (a daemonising double fork, `setsid`) is re-parented to the guard
//! rather than to init, so it stays findable by parent pid, and the guard
//! reaps it. When PROGRAM exits, what it left behind is killed too, so a
//! restarted backend never finds its port taken by its predecessor's child.
//! On macOS (and with `FLEET_PORTABLE_PROCESS=1`) there is no subreaper: the
//! process group is the reach, and a descendant that leaves it escapes once
//! its parent is gone (README, "What still escapes").
//!
//! The supervisor's end of the lifeline is a socket pair, so the guard
//! reports PROGRAM's pid on it (one line), and `fleet status` shows the pid
//! a user sees in `ps` for the command, not the guard's.
//!
//! Signals from the supervisor go to the whole group, so PROGRAM gets them
//! directly; the guard only catches them so that it outlives PROGRAM and
//! reports PROGRAM's exit as its own (a code, or death by the same signal),
//! which is what `fleet status` shows.
//!
//! Plain threads and blocking I/O: no runtime, nothing to share.

use std::io::Read;
use std::process::{Command, Stdio};

use clap::Args;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
#[cfg(target_os = "linux")]
use nix::sys::wait::WaitPidFlag;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::sync::atomic::{AtomicBool, Ordering};

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
        source: Errno,
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

/// `fleet guard -- COMMAND…` (hidden; the supervisor runs it).
#[derive(Debug, Clone, Args)]
pub struct GuardArgs {
    /// The program and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

impl GuardArgs {
    /// `guard -- PROGRAM ARGS...` (the arguments after the binary's name),
    /// exactly as the supervisor starts every guard, recognised without
    /// clap: `main` then skips the parse and the logging setup (the guard
    /// logs nothing), about 0.4 ms of each custom backend's start, 0.4 s of
    /// a 1000-backend `up`. Anything else, a non-UTF-8 argument included,
    /// is `None` and goes through clap, which accepts or rejects it as
    /// before; for what this accepts, clap's answer is the same.
    pub fn from_exact_argv(
        mut args: impl Iterator<Item = std::ffi::OsString>,
    ) -> Option<GuardArgs> {
        if args.next()? != "guard" || args.next()? != "--" {
            return None;
        }
        let command = args
            .map(|a| a.into_string().ok())
            .collect::<Option<Vec<_>>>()?;
        (!command.is_empty()).then_some(GuardArgs { command })
    }
}

/// Set by the lifeline thread once the supervisor is gone: it, not the
/// main thread, ends the process.
static LIFELINE_LOST: AtomicBool = AtomicBool::new(false);

/// Run PROGRAM under the guard; `Ok` carries PROGRAM's exit code, which the
/// guard exits with as its own (a PROGRAM killed by a signal takes the guard
/// with it by the same signal, inside this call).
pub(crate) fn run(args: GuardArgs) -> Result<u8, GuardError> {
    let Some((program, rest)) = args.command.split_first() else {
        return Err(GuardError::NoCommand);
    };
    // Registered handlers replace the default action (terminate), so the
    // guard stays to collect PROGRAM's status.
    let signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(GuardError::Signals)?;
    #[cfg(target_os = "linux")]
    if !crate::process::portable()
        && let Err(e) = nix::sys::prctl::set_child_subreaper(true)
    {
        // Still guarded by the process group, as on macOS.
        eprintln!("fleet guard: cannot become a child subreaper: {e}");
    }
    let child = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|source| GuardError::Spawn {
            program: program.clone(),
            source,
        })?;
    let child_pid = Pid::from_raw(i32::try_from(child.id()).expect("pids fit in i32"));
    report_pid(child.id());
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
        // From here this thread ends the process: the main thread must not
        // exit first when its command dies of the kills below (it would
        // take this thread with it before `killpg`, and an orphan that left
        // for init, as on the portable path, would outlive the fleet).
        LIFELINE_LOST.store(true, Ordering::SeqCst);
        kill_descendants();
        // Our own group: PROGRAM, its children, and this guard. Only when the
        // group is ours (as the supervisor arranges), never a shell's.
        let me = nix::unistd::getpid();
        if nix::unistd::getpgrp() == me {
            let _ = killpg(me, Signal::SIGKILL);
        }
        let _ = kill(child_pid, Signal::SIGKILL);
        std::process::exit(i32::from(exit::FAILURE));
    });
    // Reap everything: PROGRAM, and (as a subreaper) the orphans it leaves.
    // `child` is never waited on through std, so its status is ours to take.
    let status = loop {
        match waitpid(None, None) {
            Ok(s @ (WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _)))
                if pid == child_pid =>
            {
                break Ok(s);
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(source) => {
                break Err(GuardError::Lost {
                    program: program.clone(),
                    source,
                });
            }
        }
    };
    drop(child);
    if LIFELINE_LOST.load(Ordering::SeqCst) {
        // The lifeline thread is killing the group, this process included.
        loop {
            std::thread::park();
        }
    }
    // What PROGRAM started and left running would hold its port against the
    // next start, and nothing would ever stop it.
    kill_descendants();
    drop(signals);
    Ok(match status? {
        WaitStatus::Exited(_, code) => u8::try_from(code).unwrap_or(exit::FAILURE),
        WaitStatus::Signaled(_, sig, _) => {
            // Die the same way, so the supervisor records the real cause.
            let _ = signal_hook::low_level::emulate_default_handler(sig as i32);
            128u8.saturating_add(u8::try_from(sig as i32).unwrap_or(0))
        }
        _ => exit::FAILURE,
    })
}

/// Tell the supervisor PROGRAM's pid, which `fleet status` shows (and a
/// user then kills): it starts the guard with one end of a socket pair as
/// stdin, the lifeline, which can carry a line back. On a pipe or a terminal
/// (the guard run by hand) there is no one to tell, and nothing is written.
fn report_pid(pid: u32) {
    use nix::sys::stat::SFlag;
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    let socket = nix::sys::stat::fstat(stdin.as_fd())
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK);
    if socket {
        // One short line, one write: a socket takes it whole or not at all.
        let _ = nix::unistd::write(stdin.as_fd(), format!("{pid}\n").as_bytes());
    }
}

/// SIGKILL every descendant of this guard, wherever its process group: with
/// the subreaper, orphans are our children, so the tree is complete. A few
/// rounds, since a process may fork between the scan and its kill.
///
/// A guard with no child has no descendant, and the kernel says so without
/// the process-table scan (`/proc/*/stat` for every process): the usual
/// case once the command exited, and the one that matters when a large
/// fleet stops, where 1000 guards each scanning 2000+ processes made `fleet
/// down` take minutes on a busy machine.
fn kill_descendants() {
    let me = std::process::id();
    for _ in 0..3 {
        if !has_children() {
            return;
        }
        let found = crate::process::descendants(me);
        if found.is_empty() {
            return;
        }
        for pid in found {
            if let Ok(raw) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
            }
        }
    }
}

/// Whether this process has a child, alive or not yet reaped. `WNOWAIT`:
/// nothing is reaped here, so the main thread's wait still sees its
/// command's status. Elsewhere (macOS) it is not asked, and the scan runs.
fn has_children() -> bool {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::wait::{Id, waitid};
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        !matches!(waitid(Id::All, flags), Err(Errno::ECHILD))
    }
    #[cfg(not(target_os = "linux"))]
    true
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command as Cmd};

    fn fast(args: &[&str]) -> Option<Vec<String>> {
        GuardArgs::from_exact_argv(args.iter().map(OsString::from)).map(|a| a.command)
    }

    #[test]
    fn the_fast_path_reads_a_guard_argv_as_clap_does() {
        for argv in [
            &["guard", "--", "python3", "server.py", "9003"][..],
            &["guard", "--", "prog", "-x", "--help", "--", "guard"],
            &["guard", "--", "prog"],
            &["guard", "--", ""],
        ] {
            let full = std::iter::once("fleet").chain(argv.iter().copied());
            let Cmd::Guard(parsed) = Cli::try_parse_from(full).unwrap().command else {
                panic!("{argv:?} is a guard command")
            };
            assert_eq!(fast(argv), Some(parsed.command), "{argv:?}");
        }
    }

    #[test]
    fn the_fast_path_leaves_anything_else_to_clap() {
        for argv in [
            &[][..],
            &["guard"],
            &["guard", "--"],
            &["guard", "prog"],
            &["guard", "--help"],
            &["up", "--", "guard"],
            &["--", "guard", "--", "prog"],
        ] {
            assert_eq!(fast(argv), None, "{argv:?}");
        }
        let not_utf8 = [
            OsString::from("guard"),
            OsString::from("--"),
            OsString::from_vec(vec![0xff, b'x']),
        ];
        assert!(GuardArgs::from_exact_argv(not_utf8.into_iter()).is_none());
    }
}
