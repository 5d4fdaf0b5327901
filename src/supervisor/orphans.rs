//! No orphans: a worker must not outlive its supervisor, even one killed with
//! SIGKILL, which runs no cleanup at all.
//!
//! - Linux: the kernel's parent-death signal (`PR_SET_PDEATHSIG`) SIGKILLs the
//!   worker when the supervisor dies. It fires when the *thread* that spawned
//!   the child exits; workers are spawned from runtime worker threads, which
//!   live as long as the runtime, so that is the process's life.
//! - Everywhere (the macOS path): the built-in worker gets a pipe as stdin
//!   and exits when it reads EOF, which the kernel delivers when the
//!   supervisor's end closes, however it died (`fleet serve --lifeline`).
//! - A custom command, on every platform, runs under `fleet guard` (see
//!   `guard.rs`): the parent-death signal reaches only a direct child, and a
//!   command is often a shell whose own children would outlive it. The guard
//!   holds the lifeline and, on EOF, kills the command's process group and
//!   (on Linux, as a child subreaper) every descendant that left the group.
//!
//! `FLEET_PORTABLE_PROCESS=1` (internal, see `crate::process::portable`)
//! turns the parent-death signal off on Linux, so the lifeline alone is tested.

use tokio::process::Command;

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn die_with_parent(cmd: &mut Command) {
    use nix::sys::signal::Signal;
    if crate::process::portable() {
        return;
    }
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it makes two syscalls (prctl,
    // getppid) and allocates nothing (errors are plain errno values).
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The supervisor may have died before prctl took effect.
            if nix::unistd::getppid() != parent {
                return Err(nix::errno::Errno::ESRCH.into());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
pub fn die_with_parent(_cmd: &mut Command) {
    // macOS has no parent-death signal; the lifeline pipe covers the built-in worker.
}
