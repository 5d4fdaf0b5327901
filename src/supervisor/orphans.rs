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
//!   A custom command there runs under `fleet guard` (see `guard.rs`), which
//!   holds the lifeline for it and kills its process group on EOF.

use tokio::process::Command;

/// Whether the kernel kills a worker when its supervisor dies; without it,
/// custom commands run under `fleet guard`.
pub const HAS_PARENT_DEATH_SIGNAL: bool = cfg!(target_os = "linux");

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn die_with_parent(cmd: &mut Command) {
    use nix::sys::signal::Signal;
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
