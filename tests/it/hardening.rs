//! Hardening through the whole fleet: idle floods, the control socket's
//! privacy and robustness, traversal through the balancer, bad config values.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::harness::*;

#[test]
fn two_thousand_idle_connections_leave_room_for_a_real_request() {
    let f = Fleet::start(2, "");
    let idle: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(f.addr()).unwrap())
        .collect();
    let t0 = Instant::now();
    let r = get(f.addr(), "/page.html").unwrap();
    let took = t0.elapsed();
    assert_eq!(r.status, 200);
    assert!(took < PROMPT, "answered after {took:?}");
    drop(idle);
}

#[test]
fn a_client_that_half_closes_still_gets_its_response() {
    let f = Fleet::start(1, "");
    let mut s = TcpStream::connect(f.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /page.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let r = parse(&raw).expect("a response");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, PAGE);
}

fn control(f: &Fleet, send: &[u8]) -> String {
    let mut s = UnixStream::connect(f.scratch.state().join("fleet.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(send);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn control_socket_is_private_and_survives_garbage() {
    let f = Fleet::start(1, "");
    let st = f.scratch.state();
    let sock_mode = std::fs::metadata(st.join("fleet.sock"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    let dir_mode = std::fs::metadata(&st).unwrap().permissions().mode() & 0o777;
    assert_eq!(sock_mode, 0o600);
    assert_eq!(dir_mode, 0o700);

    let garbage = control(&f, b"this is not json\n");
    assert!(
        garbage.contains("\"reply\":\"error\"") && garbage.contains("malformed"),
        "{garbage}"
    );
    let unknown = control(&f, b"{\"v\":1,\"cmd\":\"explode\"}\n");
    assert!(unknown.contains("\"reply\":\"error\""), "{unknown}");
    let version = control(&f, b"{\"v\":99,\"cmd\":\"status\"}\n");
    assert!(version.contains("version 99"), "{version}");
    let mut big = vec![b'x'; 200 * 1024];
    big.push(b'\n');
    let oversized = control(&f, &big);
    assert!(
        oversized.contains("\"reply\":\"error\"") && oversized.contains("longer than"),
        "{oversized}"
    );
    let status = control(&f, b"{\"v\":1,\"cmd\":\"status\"}\n");
    assert!(status.contains("\"reply\":\"status\""), "{status}");
    assert_eq!(f.status().pid, f.supervisor, "the supervisor still answers");
}

#[test]
fn traversal_through_the_balancer_never_leaves_the_www_root() {
    let f = Fleet::start(1, "");
    std::fs::write(
        f.scratch.path().join("secret.txt"),
        "TOP-SECRET-OUTSIDE-ROOT",
    )
    .unwrap();
    std::os::unix::fs::symlink(
        f.scratch.path().join("secret.txt"),
        f.scratch.path().join("www/link.txt"),
    )
    .unwrap();
    std::fs::write(f.scratch.path().join("www/.hidden"), "TOP-SECRET-DOTFILE").unwrap();
    let targets = [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/..%2fsecret.txt",
        "/..%2Fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/..%5csecret.txt",
        "/..\\secret.txt",
        "/www/../../secret.txt",
        "/./../secret.txt",
        "/%c0%ae%c0%ae/secret.txt",
        "/%252e%252e/secret.txt",
        "/page.html%00/../../secret.txt",
        "http://localhost/../secret.txt",
        "/link.txt",
        "/.hidden",
        "/%2ehidden",
        "//../secret.txt",
        "/..;/secret.txt",
        "/.%2e/secret.txt",
        "/%2e./secret.txt",
        "/....//secret.txt",
    ];
    for t in targets {
        let mut s = TcpStream::connect(f.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {t} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        assert!(!text.contains("TOP-SECRET"), "{t} leaked: {text}");
        let status = parse(&raw).map(|r| r.status).unwrap_or(0);
        assert!(matches!(status, 400 | 403 | 404), "{t} -> {status}: {text}");
    }
}

/// A bad value in fleet.yaml: exit 2, a message naming the key, nothing listening.
fn refused(extra: &str, key: &str) {
    let s = Scratch::new();
    let p = free_ports(3);
    s.write("fleet.yaml", &fleet_yaml(&p, extra));
    let out = s.fleet(&["up", "-d"]);
    assert_eq!(out.status.code(), Some(2), "{extra}: {}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(key) && err.contains("fleet.yaml:"),
        "{extra}: {err}"
    );
    for port in p {
        assert!(!port_open(port), "{extra}: port {port} left open");
    }
}

#[test]
fn every_invalid_config_value_is_refused_naming_its_key() {
    refused("health:\n  interval: -1s", "health.interval");
    refused("health:\n  timeout: fast", "health.timeout");
    refused("restart:\n  window: 0s", "restart.window");
    // (A bare `10` is ten seconds: the one duration rule.)
    refused("shutdown:\n  timeout: 10 parsecs", "shutdown.timeout");
    refused(
        "balancer:\n  idle_timeout: 1 hour-ish",
        "balancer.idle_timeout",
    );
    refused("restart:\n  max_restarts: many", "restart.max_restarts");
    refused("health:\n  rise: 0", "health.rise");
    refused("restart:\n  policy: sometimes", "restart.policy");
    refused("health:\n  kind: udp", "health.kind");
    refused("backend:\n  command: []", "backend.command");
    refused(
        "balancer:\n  max_connections: 0",
        "balancer.max_connections",
    );
    refused("colour: blue", "colour");
}

#[test]
fn malformed_listen_and_overflowing_ports_are_refused() {
    let s = Scratch::new();
    for (yaml, key) in [
        ("listen: localhost", "listen"),
        ("listen: 127.0.0.1:99999", "listen"),
        ("base_port: 65534\nbackends: 4", "base_port"),
        ("backends: four", "backends"),
        ("backends: 0", "backends"),
        // The balancer on a backend's port: both keys named.
        (
            "base_port: 20000\nbackends: 4\nlisten: 0.0.0.0:20003",
            "listen: port 20003 is a backend's port: base_port 20000 with backends 4",
        ),
    ] {
        s.write("fleet.yaml", yaml);
        let out = s.fleet(&["up", "-d"]);
        assert_eq!(out.status.code(), Some(2), "{yaml}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(key),
            "{yaml}: {}",
            text(&out)
        );
    }
    let p = free_ports(3);
    s.write("fleet.yaml", &fleet_yaml(&p, ""));
    let out = s.fleet(&["up", "-d", "--listen", "nonsense"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--listen"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_descriptor_limit_too_low_for_max_connections_is_a_clear_start_up_error() {
    let s = Scratch::new();
    let p = free_ports(2);
    s.write(
        "fleet.yaml",
        &fleet_yaml(&p, "balancer:\n  max_connections: 100000000"),
    );
    let out = s.fleet(&["up", "-d"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("max_connections") && err.contains("open-file limit"),
        "{err}"
    );
    assert!(!port_open(p[0]) && !port_open(p[1]));
}

/// One duration grammar: every flag that takes a time and fleet.yaml read a
/// bare number as seconds, and refuse the same malformed text with the same
/// message.
#[test]
fn every_duration_flag_and_fleet_yaml_follow_one_rule() {
    const BAD: &str = "'soon' is not a duration; write it like 250ms, 1s or 2m";
    let s = Scratch::new();
    let p = free_ports(2);
    let url = format!("http://127.0.0.1:{}/", p[0]);
    let port = p[0].to_string();
    for args in [
        &["down", "--timeout", "soon"][..],
        &["bench", &url, "-n", "1", "-c", "1", "--timeout", "soon"],
        &["serve", "--port", &port, "--idle-timeout", "soon"],
    ] {
        let out = s.fleet(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(BAD),
            "{args:?}: {}",
            text(&out)
        );
    }
    s.write("fleet.yaml", &fleet_yaml(&p, "health:\n  interval: soon"));
    let out = s.fleet(&["up", "-d"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("fleet.yaml:5: health.interval: {BAD}")),
        "{}",
        text(&out)
    );
    // A bare number is seconds, with or without the unit (no fleet here:
    // nothing to stop).
    for t in ["10", "10s"] {
        let out = s.fleet(&["down", "--timeout", t]);
        assert_eq!(out.status.code(), Some(0), "{t}: {}", text(&out));
    }
    // ... and in fleet.yaml: `interval: 10` is ten seconds, which the
    // validator then holds to its own rules (timeout at most interval: fine).
    s.write(
        "fleet.yaml",
        &fleet_yaml(&p, "health:\n  interval: 10\n  timeout: 11"),
    );
    let out = s.fleet(&["up", "-d"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("health.timeout"),
        "{}",
        text(&out)
    );
}

/// A test that skips is listed at the end of `.ci/run` (`cargo test` hides
/// a passing test's output): the harness appends `TEST: REASON` to the file
/// `.ci/run` names in `FLEET_TEST_SKIPPED`, and `.ci/run`'s own `skipped`
/// function, run here as written, prints the list, or `no tests skipped`.
#[test]
fn skipped_tests_are_listed_at_the_end_of_ci_run() {
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).unwrap();
    assert!(ci.contains(&format!("export {SKIPPED_ENV}\n")), "{ci}");
    assert!(ci.contains("trap skipped EXIT"), "{ci}");
    let start = ci.find("skipped() {").expect("a skipped function");
    let end = start + ci[start..].find("\n}\n").expect("its end") + 3;
    let function = &ci[start..end];
    let s = Scratch::new();
    let list = s.path().join("skipped.txt");
    let run = |list: &std::path::Path| {
        let o = run_to_end(
            std::process::Command::new("bash")
                .arg("-c")
                .arg(format!("{function}skipped"))
                .env(SKIPPED_ENV, list),
            Duration::from_secs(30),
        );
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    std::fs::write(&list, "").unwrap();
    assert_eq!(run(&list), "\nno tests skipped\n");
    list_skip(&list, "b::second", "mandoc is not installed");
    list_skip(&list, "a::first", "needs root");
    assert_eq!(
        run(&list),
        "\nskipped tests:\n  a::first: needs root\n  b::second: mandoc is not installed\n"
    );
    assert!(!list.exists(), "the list is removed once printed");
}

/// README: the tests may run in a second terminal beside the user's own
/// fleet. They take their ports from a range that holds none of fleet's
/// defaults, and every fleet they start gets its own state dir.
#[test]
fn tests_never_take_the_default_fleets_ports() {
    for default in [9002, 9003, 9004, 9005, 44444, 44400] {
        assert!(!PORTS.contains(&default), "{default} is in {PORTS:?}");
    }
}
