//! The admin address answers only to its own names: a page elsewhere that
//! points its own name at this machine (DNS rebinding) gets 421, never the
//! fleet's status.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::harness::*;

/// Send `head` (the request line and headers, without the blank line) and
/// read the whole response.
fn ask(addr: SocketAddr, head: &str) -> Response {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{head}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse(&raw).unwrap_or_else(|| panic!("{head}: {:?}", String::from_utf8_lossy(&raw)))
}

fn status_json(addr: SocketAddr, host: &str) -> Response {
    ask(addr, &format!("GET /status.json HTTP/1.1\r\nHost: {host}"))
}

#[test]
fn the_admin_address_answers_only_to_its_own_names() {
    let port = free_ports(1)[0];
    let f = Fleet::start(1, &format!("admin: 127.0.0.1:{port}\n"));
    let admin = SocketAddr::from(([127, 0, 0, 1], port));
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "localhost".into(),
        // A port forward changes the port, not the name.
        "127.0.0.1:8080".into(),
    ] {
        let r = status_json(admin, &host);
        assert_eq!(r.status, 200, "Host: {host}");
        assert!(String::from_utf8_lossy(&r.body).contains("\"backends\""));
    }
    for host in [
        "evil.example",
        &format!("evil.example:{port}"),
        "localhost.evil.example",
    ] {
        for path in ["/status.json", "/", "/metrics"] {
            let r = ask(admin, &format!("GET {path} HTTP/1.1\r\nHost: {host}"));
            assert_eq!(r.status, 421, "Host: {host} {path}");
            let body = String::from_utf8_lossy(&r.body);
            assert_eq!(body.lines().count(), 1, "{body}");
            assert!(
                body.contains("admin_hosts") && !body.contains("backends"),
                "{body}"
            );
        }
    }
    // An absolute-form target names its host itself.
    let r = ask(
        admin,
        &format!("GET http://evil.example:{port}/status.json HTTP/1.1\r\nHost: localhost"),
    );
    assert_eq!(r.status, 421);
    // HTTP/1.1 requires Host; HTTP/1.0 did not.
    assert_eq!(ask(admin, "GET /status.json HTTP/1.1").status, 400);
    assert_eq!(ask(admin, "GET /status.json HTTP/1.0").status, 200);
    assert!(Fleet::all_healthy(&f.status()));
}

#[test]
fn admin_hosts_adds_a_lan_name() {
    let port = free_ports(1)[0];
    let _f = Fleet::start(
        1,
        &format!("admin: 0.0.0.0:{port}\nadmin_hosts: [fleet.lab]\n"),
    );
    let admin = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(status_json(admin, &format!("fleet.lab:{port}")).status, 200);
    assert_eq!(status_json(admin, "FLEET.LAB").status, 200);
    // Listening on every address: any of its IP literals names it.
    assert_eq!(status_json(admin, &format!("192.0.2.7:{port}")).status, 200);
    assert_eq!(status_json(admin, "other.lab").status, 421);
}

#[test]
fn a_reload_changes_the_admin_hosts_for_the_next_request() {
    let port = free_ports(1)[0];
    let f = Fleet::start(
        1,
        &format!(
            "admin: 127.0.0.1:{port}
admin_hosts: [fleet.lab]
"
        ),
    );
    let admin = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(status_json(admin, "fleet.lab").status, 200);
    let yaml = std::fs::read_to_string(f.scratch.path().join("fleet.yaml")).unwrap();
    f.scratch.write(
        "fleet.yaml",
        &yaml.replace("admin_hosts: [fleet.lab]", "admin_hosts: [other.lab]"),
    );
    let out = f.fleet(&["reload"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("reload: admin_hosts: fleet.lab -> other.lab"),
        "{}",
        text(&out)
    );
    assert_eq!(status_json(admin, "other.lab").status, 200);
    assert_eq!(status_json(admin, "fleet.lab").status, 421);
}
