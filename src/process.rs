//! Small process queries shared by commands and tests.

/// Is `pid` a live process (not gone, not a zombie)?
pub fn alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None).is_err() {
        return false;
    }
    !zombie(pid)
}

/// A zombie, or a process whose threads are still exiting: a SIGKILLed
/// multi-threaded process shows its leader as `Z` while other threads still
/// hold its files (and so its locks), so every thread must be dead.
#[cfg(target_os = "linux")]
fn zombie(pid: u32) -> bool {
    // /proc/PID/task/TID/stat: "tid (comm) S ...": the state follows the last ')'.
    let state = |path: std::path::PathBuf| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().chars().next())
            })
            .flatten()
    };
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks
        .flatten()
        .all(|t| matches!(state(t.path().join("stat")), None | Some('Z') | Some('X')))
}

#[cfg(not(target_os = "linux"))]
fn zombie(pid: u32) -> bool {
    // macOS: ps reports state Z for zombies.
    std::process::Command::new("ps")
        .args(["-o", "stat=", "-p", &pid.to_string()])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}
