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
    kill(f.supervisor, Signal::SIGKILL);
    wait_for(
        Duration::from_secs(2),
        "every process of the fleet to die with its supervisor",
        || procs.iter().all(|p| !alive(*p)).then_some(()),
    );
}

const SHELL_WRAPPED: &str = "backend:\n  command: [\"sh\", \"-c\", \"python3 -m http.server {port} --bind 127.0.0.1; echo exited\"]\n\
     health:\n  kind: tcp\n  interval: 100ms\n  timeout: 100ms\n";

#[test]
fn a_shell_wrapped_command_dies_with_a_sigkilled_supervisor_and_up_works_again() {
    for portable in MODES {
        let mut f = Fleet::start_in(Scratch::with_mode(portable), 2, SHELL_WRAPPED);
        // guard, sh and python3 for each backend.
        let procs = tree(&f, 6);
        let _cleanup = PidGuard(procs.clone());
        kill_supervisor_and_expect_nothing_left(&f, &procs);
        let out = f.fleet(&["up", "-d"]);
        assert!(
            out.status.success(),
            "portable={portable}: up after the crash:\n{}",
            text(&out)
        );
        f.supervisor = f.status()["pid"].as_u64().unwrap() as u32;
        let s = f.wait_status(Duration::from_secs(10), "healthy again", Fleet::all_healthy);
        assert_eq!(s["backends"].as_array().unwrap().len(), 2);
        let _again = PidGuard(fleet::process::descendants(f.supervisor));
        assert_eq!(get(f.addr(), "/").unwrap().status, 200);
    }
}

#[test]
fn with_the_parent_death_signal_off_no_built_in_worker_outlives_the_supervisor() {
    for portable in MODES {
        let f = Fleet::start_in(Scratch::with_mode(portable), 2, "");
        let procs = tree(&f, 2);
        let _cleanup = PidGuard(procs.clone());
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
    let _cleanup = PidGuard(procs.clone());
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
    let _cleanup = PidGuard(procs.clone());
    kill(f.supervisor, Signal::SIGSTOP);
    let t0 = std::time::Instant::now();
    let out = f.fleet(&["down", "--timeout", "2"]);
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
