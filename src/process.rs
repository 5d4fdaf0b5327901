//! Small process queries shared by commands, the guard and tests, and the one
//! switch that selects the portable (macOS) mechanisms on Linux.
//!
//! # The portable switch (internal, for testing only)
//! macOS has no parent-death signal, no child subreaper and no `/proc`, so
//! fleet has a second way to do each of those jobs: a lifeline pipe, the
//! process group, `ps` and `lsof`. Setting `FLEET_PORTABLE_PROCESS=1` in the
//! environment of a *Linux* build makes it take those paths too, so CI runs
//! the macOS code. It is read once per process and inherited by every worker
//! and guard the supervisor starts. It is not a user option: it only takes
//! protection away (see README, "What still escapes").

use std::sync::OnceLock;

/// The environment variable behind the portable switch (module doc). Public: the integration
/// tests set it to run the portable paths.
pub const PORTABLE_ENV: &str = "FLEET_PORTABLE_PROCESS";

/// Whether to use the portable mechanisms: always on macOS, on Linux only
/// when `FLEET_PORTABLE_PROCESS=1`.
pub(crate) fn portable() -> bool {
    static PORTABLE: OnceLock<bool> = OnceLock::new();
    *PORTABLE.get_or_init(|| {
        cfg!(not(target_os = "linux")) || std::env::var_os(PORTABLE_ENV).is_some_and(|v| v == "1")
    })
}

/// Is `pid` a live process (not gone, not a zombie)? Public: the integration
/// tests ask it of every process they started.
pub fn alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None).is_err() {
        return false;
    }
    #[cfg(target_os = "linux")]
    if !portable() {
        return !linux::zombie(pid);
    }
    !ps::zombie(pid)
}

/// Every live descendant of `pid` (children first, then theirs), found by
/// parent pid. A process that was re-parented away from the tree (to init)
/// is not found; under a child subreaper it is re-parented to the reaper.
/// Public: the integration tests check that nothing escapes.
pub fn descendants(pid: u32) -> Vec<u32> {
    #[cfg(target_os = "linux")]
    let table = if portable() {
        ps::parents()
    } else {
        linux::parents()
    };
    #[cfg(not(target_os = "linux"))]
    let table = ps::parents();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            table
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

#[cfg(target_os = "linux")]
pub(crate) mod linux {
    use std::path::PathBuf;

    /// The state letter of `/proc/.../stat` ("tid (comm) S ppid ..."): it
    /// follows the last ')', as comm may contain anything.
    fn stat_fields(path: PathBuf) -> Option<Vec<String>> {
        let s = std::fs::read_to_string(path).ok()?;
        let (_, rest) = s.rsplit_once(')')?;
        Some(rest.split_whitespace().map(str::to_owned).collect())
    }

    /// A zombie, or a process whose threads are still exiting: a SIGKILLed
    /// multi-threaded process shows its leader as `Z` while other threads
    /// still hold its files (and so its locks), so every thread must be dead.
    pub(crate) fn zombie(pid: u32) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        tasks.flatten().all(|t| {
            let state = stat_fields(t.path().join("stat"))
                .and_then(|f| f.first().and_then(|s| s.chars().next()));
            matches!(state, None | Some('Z') | Some('X'))
        })
    }

    /// (pid, parent pid) of every process.
    pub(crate) fn parents() -> Vec<(u32, u32)> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| {
                let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
                let f = stat_fields(e.path().join("stat"))?;
                Some((pid, f.get(1)?.parse().ok()?))
            })
            .collect()
    }
}

/// The portable paths: `ps`, which macOS and procps both ship.
pub(crate) mod ps {
    use std::process::Command;

    /// `ps` reports state Z for zombies.
    pub(crate) fn zombie(pid: u32) -> bool {
        Command::new("ps")
            .args(["-o", "stat=", "-p", &pid.to_string()])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
    }

    /// (pid, parent pid) of every process.
    pub(crate) fn parents() -> Vec<(u32, u32)> {
        let Ok(out) = Command::new("ps")
            .args(["-A", "-o", "pid=", "-o", "ppid="])
            .output()
        else {
            return Vec::new();
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reaped-later child: a zombie until `wait`.
    fn zombie_child() -> std::process::Child {
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // It exits at once; wait (without reaping) until it is a zombie.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !ps::zombie(pid) {
            assert!(std::time::Instant::now() < deadline, "no zombie");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child
    }

    #[test]
    fn ps_sees_a_zombie_and_a_live_process() {
        let mut z = zombie_child();
        assert!(ps::zombie(z.id()));
        assert!(!ps::zombie(std::process::id()));
        #[cfg(target_os = "linux")]
        {
            assert!(linux::zombie(z.id()));
            assert!(!linux::zombie(std::process::id()));
        }
        z.wait().unwrap();
    }

    #[test]
    fn both_process_tables_find_a_grandchild() {
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        let me = std::process::id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let find = |table: Vec<(u32, u32)>| {
                table.iter().find(|(_, pp)| *pp == sh.id()).map(|(p, _)| *p)
            };
            #[cfg(target_os = "linux")]
            let proc_found = find(linux::parents());
            #[cfg(not(target_os = "linux"))]
            let proc_found = find(ps::parents());
            let ps_found = find(ps::parents());
            if let (Some(a), Some(b)) = (proc_found, ps_found) {
                assert_eq!(a, b);
                assert!(descendants(me).contains(&a), "sleep is our grandchild");
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(a as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no grandchild seen");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        sh.wait().unwrap();
    }
}
