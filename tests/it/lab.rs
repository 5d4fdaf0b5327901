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
    let _procs = PidGuard(fleet::process::descendants(f.supervisor));
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
    let _procs = PidGuard(fleet::process::descendants(f.supervisor));
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
