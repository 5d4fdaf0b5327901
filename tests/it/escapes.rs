//! Nothing escapes: every process a backend starts dies with the fleet,
//! however the supervisor ends. Each scenario runs with the platform's own
//! mechanisms and again with the portable (macOS) ones selected.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::*;

/// Every descendant of the supervisor once at least `n` are up.
fn tree(f: &Fleet, n: usize) -> Vec<u32> {
    wait_for(Duration::from_secs(10), "the backends' processes", || {
        let d = fleet::process::descendants(f.supervisor);
        (d.len() >= n).then_some(d)
    })
}

fn kill_supervisor_and_expect_nothing_left(f: &Fleet, procs: &[u32]) {
    // Named by start time too: a pid that dies and is handed to another
    // test's process meanwhile is not one of ours still running.
    let procs = Procs::of(procs);
    kill(f.supervisor, Signal::SIGKILL);
    let deadline = std::time::Instant::now() + MIN_WAIT;
    while procs.any_alive() {
        if std::time::Instant::now() > deadline {
            // Say which ones, and in what state, so a failure can be read.
            let left: Vec<String> = procs.alive().iter().map(|&p| describe(p)).collect();
            panic!("processes of the fleet outlived their supervisor: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `pid (comm) state ppid pgrp` from /proc, or just the pid elsewhere.
fn describe(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().take(5).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| pid.to_string())
}

const SHELL_WRAPPED: &str = "backend:\n  command: [\"sh\", \"-c\", \"python3 -m http.server {port} --bind 127.0.0.1; echo exited\"]\n\
     health:\n  kind: tcp\n  interval: 100ms\n  timeout: 100ms\n";

#[test]
fn a_shell_wrapped_command_dies_with_a_sigkilled_supervisor_and_up_works_again() {
    for portable in MODES {
        let mut f = Fleet::start_in(Scratch::with_mode(portable), 2, SHELL_WRAPPED);
        // guard, sh and python3 for each backend.
        let procs = tree(&f, 6);
        let _cleanup = PidGuard::new(procs.clone());
        kill_supervisor_and_expect_nothing_left(&f, &procs);
        let out = f.fleet(&["up", "-d"]);
        assert!(
            out.status.success(),
            "portable={portable}: up after the crash:\n{}",
            text(&out)
        );
        f.supervisor = f.status().pid;
        let s = f.wait_status(Duration::from_secs(10), "healthy again", Fleet::all_healthy);
        assert_eq!(s.backends.len(), 2);
        let _again = PidGuard::new(fleet::process::descendants(f.supervisor));
        assert_eq!(get(f.addr(), "/").unwrap().status, 200);
    }
}

#[test]
fn with_the_parent_death_signal_off_no_built_in_worker_outlives_the_supervisor() {
    for portable in MODES {
        let f = Fleet::start_in(Scratch::with_mode(portable), 2, "");
        let procs = tree(&f, 2);
        let _cleanup = PidGuard::new(procs.clone());
        kill_supervisor_and_expect_nothing_left(&f, &procs);
    }
}

/// A command that daemonises part of itself (a new session, then its parent
/// exits) leaves the process group; on Linux the guard is a child subreaper,
/// so it still finds and kills it. (The portable path cannot: README, "What
/// still escapes".)
#[cfg(target_os = "linux")]
#[test]
fn a_daemonised_grandchild_dies_with_the_fleet_on_linux() {
    let f = Fleet::start_in(
        Scratch::with_mode(false),
        1,
        "backend:\n  command: [\"sh\", \"-c\", \"(setsid sleep 300 &); exec python3 -m http.server {port} --bind 127.0.0.1\"]\n\
         health:\n  kind: tcp\n  interval: 100ms\n  timeout: 100ms\n",
    );
    // guard, python3, and the sleep re-parented to the guard.
    let procs = tree(&f, 3);
    let _cleanup = PidGuard::new(procs.clone());
    let sleep = procs
        .iter()
        .copied()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sleep")
        })
        .expect("the daemonised sleep is still in the guard's tree");
    assert_ne!(
        nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(sleep as i32))).unwrap(),
        nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(f.supervisor as i32))).unwrap(),
        "it left the session"
    );
    kill_supervisor_and_expect_nothing_left(&f, &procs);
}

/// `fleet down` reaches a supervisor that cannot answer: after its timeout it
/// falls back to signals, and returns once nothing is left.
#[test]
fn a_sigstopped_supervisor_is_taken_down_by_down_with_a_timeout() {
    let f = Fleet::start_in(Scratch::new(), 2, SHELL_WRAPPED);
    let procs = tree(&f, 6);
    let _cleanup = PidGuard::new(procs.clone());
    kill(f.supervisor, Signal::SIGSTOP);
    let t0 = std::time::Instant::now();
    let out = f.fleet(&["down", "--timeout", "2s"]);
    let took = t0.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        took < Duration::from_secs(10),
        "took {took:?}: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did not answer"),
        "{}",
        text(&out)
    );
    let left: Vec<u32> = std::iter::once(f.supervisor)
        .chain(procs.iter().copied())
        .filter(|p| alive(*p))
        .collect();
    assert!(left.is_empty(), "still alive: {left:?}");
    assert!(!f.scratch.state().join("fleet.pid").exists());
    let st = f.fleet(&["status"]);
    assert_eq!(st.status.code(), Some(3), "{}", text(&st));
}

/// Another user's fleet is "cannot read", never "no fleet": status, down and
/// logs say permission denied and exit 4, while the fleet runs on.
#[test]
fn another_user_is_told_permission_denied_not_no_fleet() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        crate::harness::skip("dropping privileges needs root (CI runs as root)");
        return;
    }
    let f = Fleet::start(1, "");
    // Only the state dir's own mode (0700) keeps the other user out, as in a
    // shared project directory.
    std::fs::set_permissions(f.scratch.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("a nobody user");
    for args in [&["status"][..], &["down", "--timeout", "2s"], &["logs"]] {
        let out = std::process::Command::new(FLEET)
            .args(args)
            .env("FLEET_STATE_DIR", f.scratch.state())
            .env_remove("RUST_LOG")
            .current_dir("/")
            .uid(nobody.uid.as_raw())
            .gid(nobody.gid.as_raw())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(4), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cannot read") && err.contains("ermission denied"),
            "{args:?}: {}",
            text(&out)
        );
        assert!(!err.contains("no fleet"), "{args:?}: {err}");
    }
    assert!(alive(f.supervisor), "the fleet runs on");
    assert!(Fleet::all_healthy(&f.status()));
}
