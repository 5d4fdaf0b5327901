//! The lab's own kind of server under fleet: a Python asyncio server with a
//! listen backlog of 5 that answers 404 for / and closes after each response.

use crate::harness::*;

const LAB_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/lab_server.py");

fn lab_backend() -> String {
    format!("backend:\n  command: [\"python3\", \"{LAB_SERVER}\", \"{{port}}\", \"www\"]\n")
}

#[test]
fn with_no_health_path_up_fails_naming_the_404() {
    let s = Scratch::new();
    let ports = free_ports(2);
    s.write("fleet.yaml", &fleet_yaml(&ports, &lab_backend()));
    let out = s.fleet(&["up", "-d"]);
    let _cleanup = Fleet::adopt(s, ports[..1].to_vec(), ports[1]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "GET / answered 404; set health.path to a page that exists, or health.kind: tcp"
        ),
        "{err}"
    );
    // Start-up probes back off (5 ms doubling up to the 1 s interval): 10 s
    // of them are a few dozen lines in the backend's log, not thousands.
    let logs = _cleanup.fleet(&["logs"]);
    let probes = String::from_utf8_lossy(&logs.stdout)
        .matches("connection from")
        .count();
    assert!((1..60).contains(&probes), "{probes} probe lines");
}

#[test]
fn with_the_shipped_lab_example_it_starts_and_stays_in_rotation_under_20_clients() {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fleet.yaml")).unwrap();
    assert!(
        shipped.contains("path: /page.html"),
        "the shipped fleet.yaml shows the lab's health path"
    );
    // The shipped example's health section, with the lab's path.
    // Four backends, as in the lab: 20 clients are about one backlog's worth each.
    let f = Fleet::start(
        4,
        &format!(
            "{}health:\n  path: /page.html\n  interval: 1s\n  timeout: 500ms\n",
            lab_backend()
        ),
    );
    let _procs = PidGuard::new(fleet::process::descendants(f.supervisor));
    let addr = f.addr();
    let clients: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                (0..25)
                    .map(|_| get(addr, "/page.html").map(|r| r.status).unwrap_or(0))
                    .filter(|s| *s != 200)
                    .count()
            })
        })
        .collect();
    let failed: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(failed, 0, "every request answered 200");
    let s = f.status();
    assert!(Fleet::all_healthy(&s), "{s:?}");
    let log = f.log();
    for flap in ["healthy=false", "out of rotation"] {
        assert!(!log.contains(flap), "a backend left rotation:\n{log}");
    }
}

#[test]
fn the_balancer_names_a_backend_that_does_not_name_itself_unless_told_not_to() {
    let yaml = format!(
        "{}health:\n  path: /page.html\n  interval: 200ms\n  timeout: 200ms\n",
        lab_backend()
    );
    let f = Fleet::start(3, &yaml);
    let _procs = PidGuard::new(fleet::process::descendants(f.supervisor));
    // Round-robin, seen from the client: each port twice in six requests,
    // on a 404 as on a 200 (the lab's server sets no such header itself).
    let mut seen: Vec<String> = (0..6)
        .map(|i| {
            let r = get(f.addr(), if i % 2 == 0 { "/page.html" } else { "/" }).unwrap();
            assert_eq!(r.status, if i % 2 == 0 { 200 } else { 404 });
            r.header("x-fleet-backend")
                .unwrap_or_else(|| panic!("no X-Fleet-Backend in {:?}", r.headers))
                .to_owned()
        })
        .collect();
    seen.sort();
    let mut want: Vec<String> = f
        .ports
        .iter()
        .flat_map(|p| [p.to_string(), p.to_string()])
        .collect();
    want.sort();
    assert_eq!(seen, want);

    // `backend_header: false` (here by a reload, which applies it to new connections).
    let text = std::fs::read_to_string(f.scratch.path().join("fleet.yaml")).unwrap();
    f.scratch.write(
        "fleet.yaml",
        &format!("{text}balancer:\n  backend_header: false\n"),
    );
    let out = f.fleet(&["reload"]);
    assert!(out.status.success(), "{}", crate::harness::text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("balancer.backend_header: on -> off"),
        "{}",
        crate::harness::text(&out)
    );
    for _ in 0..3 {
        let r = get(f.addr(), "/page.html").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-fleet-backend"), None, "{:?}", r.headers);
    }
}
/// The command line of `pid`, as `ps` shows it (Linux and macOS alike).
fn ps_args(pid: u32) -> String {
    let out = std::process::Command::new("ps")
        .args(["-o", "args=", "-p", &pid.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

const HTTP_SERVER: &str = "backend:\n  command: [\"python3\", \"-m\", \"http.server\", \"{port}\", \"--bind\", \"127.0.0.1\"]\n\
     health:\n  path: /\n  interval: 100ms\n  timeout: 100ms\n";

/// `fleet status` shows the pid of the backend's command (what `ps` shows
/// for the Python server), the guard's beside it in the JSON; `kill -9` of
/// that pid restarts the backend, and the log names both pids.
#[test]
fn kill_9_of_the_pid_status_shows_restarts_the_python_server_and_the_log_names_it() {
    for portable in MODES {
        let f = Fleet::start_in(Scratch::with_mode(portable), 1, HTTP_SERVER);
        let b = f.status().backends.remove(0);
        let (pid, guard) = (b.pid.unwrap(), b.guard_pid.expect("a guard_pid"));
        assert_ne!(pid, guard);
        assert!(
            ps_args(pid).contains("http.server"),
            "portable={portable}: pid {pid} is {:?}",
            ps_args(pid)
        );
        assert!(
            ps_args(guard).contains(" guard -- python3"),
            "{:?}",
            ps_args(guard)
        );
        let table = f.fleet(&["status"]);
        let row = String::from_utf8_lossy(&table.stdout)
            .lines()
            .find(|l| l.trim_start().starts_with(&f.ports[0].to_string()))
            .unwrap()
            .to_string();
        assert!(
            row.split_whitespace().nth(1) == Some(pid.to_string().as_str()),
            "the PID column shows the command: {row}"
        );
        kill(pid, nix::sys::signal::Signal::SIGKILL);
        let s = f.wait_status(std::time::Duration::from_secs(30), "the restart", |s| {
            s.backends[0].restarts == 1 && Fleet::all_healthy(s)
        });
        let again = &s.backends[0];
        assert!(again.pid.is_some_and(|p| p != pid) && again.guard_pid.is_some_and(|g| g != guard));
        assert!(ps_args(again.pid.unwrap()).contains("http.server"));
        let log = f.log();
        assert!(
            log.contains(&format!(
                "backend killed by SIGKILL port={} pid={pid} guard_pid={guard}",
                f.ports[0]
            )),
            "portable={portable}:\n{log}"
        );
    }
}

/// While a crashed backend's command starts again, its reason says so; only
/// a command that never listens is asked whether it uses `{port}`.
#[test]
fn a_restarting_backend_is_starting_and_only_one_that_never_listens_is_asked_about_port() {
    // Two seconds between the exec and the listen: the window to observe.
    let f = Fleet::start(
        1,
        "backend:\n  command: [\"sh\", \"-c\", \"sleep 2; exec python3 -m http.server {port} --bind 127.0.0.1\"]\n\
         health:\n  path: /\n  interval: 100ms\n  timeout: 100ms\nrestart:\n  initial_backoff: 50ms\n",
    );
    let port = f.ports[0];
    kill(f.pid_of(0), nix::sys::signal::Signal::SIGKILL);
    let mut seen = Vec::new();
    wait_for(std::time::Duration::from_secs(60), "healthy again", || {
        let b = f.status().backends.remove(0);
        if let Some(r) = &b.reason {
            seen.push(format!("{}: {r}", b.state));
        }
        (b.restarts == 1 && b.healthy).then_some(())
    });
    let waiting = format!("starting: waiting for port {port} to accept connections");
    assert!(seen.contains(&waiting), "{seen:?}");
    assert!(seen.iter().all(|r| !r.contains("{port}")), "{seen:?}");
    let human = f.fleet(&["status"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("healthy"));

    // A command that never listens: `up` gives up, and asks.
    let s = Scratch::new();
    let ports = free_ports(2);
    s.write(
        "fleet.yaml",
        &fleet_yaml(
            &ports,
            "backend:\n  command: [\"sleep\", \"60\"]\nhealth:\n  kind: tcp\n",
        ),
    );
    let out = s.fleet(&["up", "-d"]);
    let _cleanup = Fleet::adopt(s, ports[..1].to_vec(), ports[1]);
    assert_exit(
        &out,
        1,
        &format!(
            "health probe: connection refused: nothing listens on port {} (does the command use {{port}}?)",
            ports[0]
        ),
    );
}
