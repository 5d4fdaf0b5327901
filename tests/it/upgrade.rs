//! `fleet upgrade`: the running fleet passes to a new supervisor process
//! (its sockets over SCM_RIGHTS, its backends one at a time) without a
//! failed request; a new binary that cannot take over changes nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::*;
use crate::operate::{Load, pids_of, scalable, up};

/// `path` made executable.
fn executable(path: &Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A copy of the fleet binary at `path`, executable.
fn copy_of_fleet(path: &Path) {
    std::fs::copy(FLEET, path).unwrap();
    executable(path);
}

/// A fleet of 4 (`scalable(extra)`) brought up, with a copy of the fleet
/// binary beside it at `fleet-new`: (fleet, its ports, the copy).
fn up_with_a_copy(extra: &str) -> (Fleet, Vec<u16>, PathBuf) {
    let (scratch, ports, listen) = scalable(extra);
    let copy = scratch.path().join("fleet-new");
    copy_of_fleet(&copy);
    let f = up(scratch, &ports, listen);
    (f, ports, copy)
}

/// fleet.yaml of `f` rewritten by `change`.
fn rewrite_yaml(f: &Fleet, change: impl FnOnce(String) -> String) {
    let yaml = std::fs::read_to_string(f.scratch.path().join("fleet.yaml")).unwrap();
    f.scratch.write("fleet.yaml", &change(yaml));
}

/// The copies of the lock and listeners kept for an upgrade, and those
/// received, are close-on-exec: no worker inherits them (a worker holding
/// the lock would make a dead supervisor's state dir look taken).
fn no_worker_holds_the_lock(f: &Fleet, s: &crate::harness::FleetStatus) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let _ = f;
    for pid in s.backends.iter().filter_map(|b| b.pid) {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            assert!(
                !target.to_string_lossy().ends_with("fleet.pid"),
                "worker {pid} holds {}",
                target.display()
            );
        }
    }
}

#[test]
fn an_upgrade_to_a_copy_of_fleet_moves_the_fleet_to_a_new_supervisor_and_loses_no_request() {
    let (mut f, ports, copy) = up_with_a_copy("");
    let old = f.status();
    let old_pid = old.pid;
    let load = Load::under_way(f.addr());

    no_worker_holds_the_lock(&f, &old);
    let out = f.fleet(&["upgrade", "--exe", copy.to_str().unwrap()]);
    assert!(out.status.success(), "fleet upgrade:\n{}", text(&out));
    let said = text(&out);
    assert!(said.contains("upgraded"), "{said}");
    for p in &ports[..4] {
        assert!(
            said.contains(&format!("backend {p}: serving under the new supervisor")),
            "{said}"
        );
    }
    let s = f.wait_status(
        Duration::from_secs(30),
        "the new supervisor answers, every backend healthy",
        |s| s.pid != old_pid && Fleet::all_healthy(s),
    );
    f.supervisor = s.pid;
    assert_eq!(s.backends.len(), 4, "{s:?}");
    for (before, after) in pids_of(&old).iter().zip(pids_of(&s)) {
        assert_ne!(
            *before, after,
            "every backend runs under the new supervisor"
        );
    }
    no_worker_holds_the_lock(&f, &s);
    let pid_file = std::fs::read_to_string(f.scratch.state().join("fleet.pid")).unwrap();
    assert_eq!(pid_file.trim(), s.pid.to_string(), "the pid file follows");
    wait_for(Duration::from_secs(30), "the old supervisor exits", || {
        (!alive(old_pid)).then_some(())
    });
    // The lock passed with the pid file: a second `up` is refused.
    let again = f.fleet(&["up", "-d"]);
    assert_exit(&again, 1, "already running");

    // Requests go on after the handover too, all to the new supervisor.
    load.finish_without_failures(500);
    // The new supervisor is a whole fleet: it restarts and stops as one.
    let out = f.fleet(&["restart", &ports[0].to_string()]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn an_upgrade_to_a_binary_that_exits_at_once_is_refused_and_the_old_supervisor_serves_on() {
    let (scratch, ports, listen) = scalable("");
    let script = scratch.write("not-fleet", "#!/bin/sh\nexit 0\n");
    executable(&script);
    let f = up(scratch, &ports, listen);
    let before = f.status();
    let load = Load::under_way(f.addr());

    let out = f.fleet(&["upgrade", "--exe", script.to_str().unwrap()]);
    assert_exit(&out, 1, "exited before taking over");
    assert!(text(&out).contains("unchanged"), "{}", text(&out));

    let s = f.status();
    assert_eq!(
        s.pid, before.pid,
        "the old supervisor still holds the fleet"
    );
    assert!(alive(before.pid));
    assert_eq!(pids_of(&s), pids_of(&before), "no backend was touched");
    assert!(!f.scratch.state().join("handover.sock").exists());
    // Requests go on after the refusal.
    load.finish_without_failures(200);
}

#[test]
fn an_upgrade_whose_first_backend_fails_is_rolled_back_and_loses_no_request() {
    let (f, _, copy) = up_with_a_copy("shutdown:\n  timeout: 2s\n");
    let before = f.status();
    // The new supervisor reads fleet.yaml: its backends run a command that
    // exits at once, so the first one never passes its probe.
    rewrite_yaml(&f, |yaml| {
        format!(
            "{}backend:\n  command: [\"/bin/sh\", \"-c\", \"exit 3\"]\n",
            yaml.replace("www: www\n", "")
        )
    });
    let load = Load::under_way(f.addr());

    let out = f.fleet(&["upgrade", "--exe", copy.to_str().unwrap()]);
    assert_exit(&out, 1, "did not start under the new supervisor");
    assert!(text(&out).contains("keeps serving"), "{}", text(&out));

    let s = f.wait_status(
        Duration::from_secs(30),
        "the old supervisor's own backend back on the freed port",
        Fleet::all_healthy,
    );
    assert_eq!(
        s.pid, before.pid,
        "the old supervisor still holds the fleet"
    );
    assert_eq!(s.backends.len(), 4, "{s:?}");
    assert_ne!(s.backends[0].pid, before.backends[0].pid, "restarted");
    assert_eq!(
        pids_of(&s)[1..],
        pids_of(&before)[1..],
        "the rest untouched"
    );
    load.finish_without_failures(200);
}

#[test]
fn a_supervisor_that_took_over_upgrades_again_to_the_binary_now_at_its_path() {
    let (mut f, _, copy) = up_with_a_copy("");
    let out = f.fleet(&["upgrade", "--exe", copy.to_str().unwrap()]);
    assert!(out.status.success(), "fleet upgrade:\n{}", text(&out));
    let second = f.wait_status(Duration::from_secs(30), "the second supervisor", |s| {
        s.pid != f.supervisor && Fleet::all_healthy(s)
    });
    f.supervisor = second.pid;
    // A rebuild: a new file at the same path (the running one's is deleted).
    std::fs::remove_file(&copy).unwrap();
    copy_of_fleet(&copy);
    let load = Load::under_way(f.addr());
    // No --exe: the path the second supervisor was started from.
    let out = f.fleet(&["upgrade"]);
    assert!(out.status.success(), "fleet upgrade:\n{}", text(&out));
    assert!(
        text(&out).contains(copy.to_str().unwrap()),
        "{}",
        text(&out)
    );
    let third = f.wait_status(Duration::from_secs(30), "the third supervisor", |s| {
        s.pid != second.pid && Fleet::all_healthy(s)
    });
    f.supervisor = third.pid;
    wait_for(
        Duration::from_secs(30),
        "the second supervisor exits",
        || (!alive(second.pid)).then_some(()),
    );
    load.finish_without_failures(200);
}

#[test]
fn an_upgrade_refuses_a_fleet_yaml_that_moved_the_balancer() {
    let (f, ports, copy) = up_with_a_copy("");
    let before = f.status();
    let moved = ports[8];
    let listen = f.addr().port();
    rewrite_yaml(&f, |yaml| {
        yaml.replace(&format!(":{listen}"), &format!(":{moved}"))
    });
    let out = f.fleet(&["upgrade", "--exe", copy.to_str().unwrap()]);
    assert_exit(
        &out,
        1,
        &format!("fleet.yaml now says listen: 127.0.0.1:{moved}"),
    );
    let s = f.status();
    assert_eq!(s.pid, before.pid);
    assert_eq!(pids_of(&s), pids_of(&before), "no backend was touched");
}

#[test]
fn an_upgrade_after_a_reload_moved_listen_hands_over_the_moved_listener() {
    let (mut f, ports, copy) = up_with_a_copy("");
    let old = f.addr();
    let moved = std::net::SocketAddr::from(([127, 0, 0, 1], ports[8]));
    rewrite_yaml(&f, |yaml| {
        yaml.replace(&format!("listen: {old}"), &format!("listen: {moved}"))
    });
    let out = f.fleet(&["reload"]);
    assert!(out.status.success(), "fleet reload:\n{}", text(&out));
    let old_pid = f.status().pid;
    let load = Load::under_way(moved);

    upgrade_to(&mut f, &copy, old_pid);
    assert_eq!(f.status_json()["listen"], moved.to_string());
    // The new supervisor got the listener the balancer accepted on, not
    // the one `up` bound: the first address stays closed.
    assert!(
        std::net::TcpStream::connect_timeout(&old, Duration::from_secs(2)).is_err(),
        "the address before the reload is closed"
    );
    load.finish_without_failures(300);
}

/// `fleet upgrade --exe copy` on `f`, whose supervisor is `old_pid`, until
/// the new supervisor (now `f.supervisor`) holds every backend healthy and
/// the old one has exited.
fn upgrade_to(f: &mut Fleet, copy: &Path, old_pid: u32) {
    let out = f.fleet(&["upgrade", "--exe", copy.to_str().unwrap()]);
    assert!(out.status.success(), "fleet upgrade:\n{}", text(&out));
    let s = f.wait_status(
        Duration::from_secs(30),
        "the new supervisor answers, every backend healthy",
        |s| s.pid != old_pid && Fleet::all_healthy(s),
    );
    f.supervisor = s.pid;
    wait_for(Duration::from_secs(30), "the old supervisor exits", || {
        (!alive(old_pid)).then_some(())
    });
}

/// Linux: the distinct listening sockets on `port` that `pid` holds (from
/// /proc/net/tcp and its descriptors), and its engine threads.
#[cfg(target_os = "linux")]
fn listening_sockets_and_engine_threads(pid: u32, port: u16) -> (usize, usize) {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let listening: std::collections::HashSet<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let local_port = cols.get(1)?.rsplit(':').next()?;
            (u16::from_str_radix(local_port, 16).ok()? == port && cols.get(3)? == &"0A")
                .then(|| format!("socket:[{}]", cols.get(9).unwrap()))
        })
        .collect();
    let held: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .filter(|t| listening.contains(t))
        .collect();
    let engines = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("fleet-engine-"))
        .count();
    (held.len(), engines)
}

#[test]
fn an_upgrade_to_another_engine_thread_count_keeps_every_socket_and_loses_no_request() {
    let (mut f, _ports, copy) = up_with_a_copy("balancer:\n  threads: 4\n");
    #[cfg(target_os = "linux")]
    assert_eq!(
        listening_sockets_and_engine_threads(f.supervisor, f.addr().port()),
        (4, 4),
        "on Linux, a socket per engine thread"
    );
    let mut was = 4;
    for threads in [1, 3] {
        rewrite_yaml(&f, |yaml| {
            yaml.replace(&format!("threads: {was}"), &format!("threads: {threads}"))
        });
        was = threads;
        let old_pid = f.status().pid;
        let load = Load::under_way(f.addr());
        upgrade_to(&mut f, &copy, old_pid);
        // Every socket of the group stays open and accepted on, whatever
        // the new thread count: none is closed with connections queued.
        #[cfg(target_os = "linux")]
        assert_eq!(
            listening_sockets_and_engine_threads(f.supervisor, f.addr().port()),
            (4, threads),
            "threads: {threads}"
        );
        load.finish_without_failures(400);
    }
}
