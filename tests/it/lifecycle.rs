//! `fleet up -d`, `status`, `down`, restarts and bad input, end to end.

use std::collections::HashSet;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::harness::*;

#[test]
fn up_detached_starts_every_backend_running_and_healthy() {
    let f = Fleet::start(4, "");
    // The JSON contract itself, as a script reads it: untyped on purpose.
    let s = f.status_json();
    assert_eq!(s["listen"], format!("127.0.0.1:{}", f.listen));
    assert!(s["pid"].as_u64().unwrap() > 0);
    assert!(s["uptime_s"].as_f64().unwrap() >= 0.0);
    let backends = s["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 4);
    for (b, port) in backends.iter().zip(&f.ports) {
        assert_eq!(b["port"], *port);
        assert_eq!(b["state"], "running", "{b}");
        assert_eq!(b["healthy"], true, "{b}");
        assert_eq!(b["restarts"], 0);
        assert!(b["pid"].as_u64().unwrap() > 0);
        assert!(b["uptime_s"].is_number());
        assert!(b["active_connections"].is_u64());
        assert!(b["total_connections"].is_u64());
        assert!(b["last_exit"].is_null());
        assert!(port_open(*port), "worker {port} listens");
    }
}

#[test]
fn balancer_round_robins_the_exact_page_over_all_backends() {
    let f = Fleet::start(4, "");
    let mut order = Vec::new();
    for _ in 0..8 {
        let r = get(f.addr(), "/page.html").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, PAGE, "the exact bytes of www/page.html");
        order.push(
            r.header("x-fleet-backend")
                .expect("X-Fleet-Backend header")
                .to_string(),
        );
    }
    let distinct: HashSet<&String> = order.iter().collect();
    assert_eq!(distinct.len(), 4, "{order:?}");
    assert_eq!(
        order[..4],
        order[4..],
        "round-robin order repeats: {order:?}"
    );
    let s = f.status();
    let total = sum(&s, |b| b.total_connections);
    assert!(total >= 8, "connections are counted per backend: {s:?}");
}

#[test]
fn killed_worker_is_restarted_on_the_same_port() {
    let f = Fleet::start(2, "");
    let old = f.pid_of(1);
    kill(old, Signal::SIGKILL);
    let s = f.wait_status(Duration::from_secs(3), "a new pid for backend 1", |s| {
        let b = &s.backends[1];
        b.pid.is_some_and(|p| p != old) && b.healthy
    });
    let b = &s.backends[1];
    assert_eq!(b.port, f.ports[1]);
    assert!(b.restarts >= 1);
    let last = b.last_exit.as_ref().expect("the killed worker's exit");
    assert_eq!(last.signal, Some(9), "{b:?}");
    assert_eq!(last.name.as_deref(), Some("SIGKILL"), "{b:?}");
    let r = get(SocketAddr::from(([127, 0, 0, 1], f.ports[1])), "/page.html").unwrap();
    assert_eq!(
        r.header("x-fleet-backend"),
        Some(f.ports[1].to_string().as_str())
    );
}

use std::net::SocketAddr;

#[test]
fn down_stops_every_process_and_removes_the_state_files() {
    let f = Fleet::start(3, "");
    let _ = get(f.addr(), "/page.html").unwrap();
    let pids = f.worker_pids();
    assert_eq!(pids.len(), 3);
    let out = f.fleet(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!alive(f.supervisor), "supervisor gone");
    for p in &pids {
        assert!(!alive(*p), "worker {p} gone");
    }
    assert!(!port_open(f.listen), "balancer port closed");
    for p in &f.ports {
        assert!(!port_open(*p), "worker port {p} closed");
    }
    assert!(!f.scratch.state().join("fleet.sock").exists());
    assert!(!f.scratch.state().join("fleet.pid").exists());
    let st = f.fleet(&["status"]);
    assert_eq!(st.status.code(), Some(3), "{}", text(&st));
    assert!(String::from_utf8_lossy(&st.stderr).contains("no fleet is running"));
}

#[test]
fn status_and_down_without_a_fleet() {
    let s = Scratch::new();
    let st = s.fleet(&["status", "--json"]);
    assert_exit(&st, 3, "no fleet is running");
    let down = s.fleet(&["down"]);
    assert_eq!(down.status.code(), Some(0), "{}", text(&down));
    assert!(
        String::from_utf8_lossy(&down.stdout).contains("no fleet is running"),
        "{}",
        text(&down)
    );
}

#[test]
fn second_up_on_the_same_state_dir_refuses_with_the_running_pid() {
    let f = Fleet::start(1, "");
    // Same state dir, other ports: only the state dir is in the way.
    let ports = free_ports(2);
    let out = f.fleet(&[
        "up",
        "-d",
        "--base-port",
        &ports[0].to_string(),
        "--backends",
        "1",
        "--listen",
        &format!("127.0.0.1:{}", ports[1]),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already running") && err.contains(&f.supervisor.to_string()),
        "{err}"
    );
    assert!(!port_open(ports[0]) && !port_open(ports[1]));
    assert_eq!(f.status().pid, f.supervisor, "the first fleet is untouched");
}

#[test]
fn status_human_view_lists_every_backend() {
    let f = Fleet::start(2, "");
    let out = f.fleet(&["status"]);
    assert!(out.status.success());
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.contains(&format!("127.0.0.1:{}", f.listen)), "{t}");
    for p in &f.ports {
        assert!(t.contains(&p.to_string()), "{t}");
    }
    assert!(
        t.contains("PORT") && t.contains("RESTARTS") && t.contains("healthy"),
        "{t}"
    );
}

/// Run `fleet up -d` with `yaml` and `args`; assert it fails with `code`, says
/// `message`, and leaves nothing listening on `ports`.
fn assert_refused(yaml: &str, args: &[&str], code: i32, message: &str, ports: &[u16]) {
    let s = Scratch::new();
    s.write("fleet.yaml", yaml);
    let mut all = vec!["up", "-d"];
    all.extend_from_slice(args);
    let out = s.fleet(&all);
    assert_eq!(out.status.code(), Some(code), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(message),
        "expected {message:?} in:\n{}",
        text(&out)
    );
    assert_eq!(err.trim().lines().count(), 1, "one line:\n{err}");
    for p in ports {
        assert!(!port_open(*p), "nothing left listening on {p}");
    }
    assert!(!s.state().join("fleet.pid").exists(), "no pid file left");
}

#[test]
fn invalid_yaml_is_refused_with_line_and_column() {
    let p = free_ports(3);
    assert_refused(
        &format!("{}health: [unclosed\n", fleet_yaml(&p, "")),
        &[],
        2,
        "fleet.yaml:",
        &p,
    );
}

#[test]
fn unknown_key_is_refused_naming_the_key() {
    let p = free_ports(3);
    assert_refused(&fleet_yaml(&p, "backendz: 3"), &[], 2, "backendz", &p);
}

#[test]
fn zero_backends_is_refused() {
    let p = free_ports(3);
    assert_refused(
        &fleet_yaml(&p, ""),
        &["--backends", "0"],
        2,
        "--backends",
        &p,
    );
}

#[test]
fn port_past_65535_is_refused() {
    let p = free_ports(3);
    assert_refused(
        &fleet_yaml(&p, ""),
        &["--base-port", "65535", "--backends", "2"],
        2,
        "65536",
        &p,
    );
    assert_refused(
        &fleet_yaml(&p, ""),
        &["--base-port", "70000"],
        2,
        "70000",
        &p,
    );
}

#[test]
fn missing_www_is_refused() {
    let p = free_ports(3);
    assert_refused(&fleet_yaml(&p, ""), &["--www", "nowhere"], 2, "nowhere", &p);
}

#[test]
fn busy_backend_port_is_refused_naming_the_port() {
    let p = free_ports(3);
    let squatter = std::net::TcpListener::bind(("127.0.0.1", p[1])).unwrap();
    assert_refused(
        &fleet_yaml(&p, "www: www"),
        &[],
        1,
        &format!("port {}", p[1]),
        &[p[0], p[2]],
    );
    drop(squatter);
}

/// Both ways of naming the holder: /proc, and lsof (macOS's, selected on Linux
/// by the portable switch).
#[test]
fn busy_balancer_port_is_refused_naming_the_port() {
    for portable in MODES {
        busy_balancer_port(portable);
    }
}

fn busy_balancer_port(portable: bool) {
    let p = free_ports(3);
    let squatter = std::net::TcpListener::bind(("127.0.0.1", p[2])).unwrap();
    let s = Scratch::with_mode(portable);
    s.write("fleet.yaml", &fleet_yaml(&p, ""));
    let out = s.fleet(&["up", "-d"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("port {}", p[2])) && err.contains("in use"),
        "{err}"
    );
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "names the holder: {err}"
    );
    assert!(!port_open(p[0]) && !port_open(p[1]));
    drop(squatter);
}

/// A port refused for another reason than being in use says that reason and
/// what to do: a privileged port for a user who is not root (EACCES), an
/// address this machine does not have (EADDRNOTAVAIL). Run as `nobody`.
#[test]
fn a_privileged_port_or_a_foreign_address_is_not_called_in_use() {
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: running as nobody needs root (CI runs as root)");
        return;
    }
    let first = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start");
    if first.as_deref().ok().map(str::trim) != Some("1024") {
        eprintln!("skipped: this system does not keep ports below 1024 to root ({first:?})");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("a nobody user");
    let s = Scratch::new();
    std::os::unix::fs::chown(s.path(), Some(nobody.uid.as_raw()), None).unwrap();
    let p = free_ports(3);
    let up = |args: &[&str]| {
        run_to_end(
            std::process::Command::new(FLEET)
                .arg("up")
                .arg("-d")
                .args(args)
                .current_dir(s.path())
                .env("FLEET_STATE_DIR", s.state())
                .env_remove("RUST_LOG")
                .uid(nobody.uid.as_raw())
                .gid(nobody.gid.as_raw())
                .stdin(std::process::Stdio::null()),
            Duration::from_secs(60),
        )
    };
    let listen = p[2].to_string();
    let privileged_backend = up(&["--base-port", "80", "--listen", &listen]);
    assert_exit(
        &privileged_backend,
        1,
        "fleet: backend port 80 is privileged (below 1024): choose a base port of 1024 or above, or run as root\n",
    );
    let privileged_balancer = up(&["--base-port", &p[0].to_string(), "--listen", "80"]);
    assert_exit(
        &privileged_balancer,
        1,
        "fleet: balancer port 80 is privileged (below 1024): choose a port of 1024 or above with --listen, or run as root\n",
    );
    let foreign = up(&[
        "--base-port",
        &p[0].to_string(),
        "--listen",
        &format!("192.0.2.1:{listen}"),
    ]);
    assert_exit(
        &foreign,
        1,
        &format!(
            "fleet: cannot listen on 192.0.2.1:{listen}: 192.0.2.1 is not an address of this machine; choose one of its addresses with --listen"
        ),
    );
    for out in [&privileged_backend, &privileged_balancer, &foreign] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("in use") && !err.contains("permission denied"),
            "{}",
            text(out)
        );
    }
    assert!(!port_open(p[0]) && !port_open(p[2]), "nothing left running");
}

fn stops_gracefully_on(sig: Signal) {
    let s = Scratch::new();
    let ports = free_ports(3);
    let fg = Foreground::start(&s, &ports);
    assert_eq!(
        get(SocketAddr::from(([127, 0, 0, 1], ports[2])), "/page.html")
            .unwrap()
            .status,
        200
    );
    let text = fg.stop_by(sig, &s);
    assert!(
        text.contains("supervisor") && text.contains(&sig.to_string()),
        "{text}"
    );
    assert!(
        text.contains("backend") && text.contains(&format!("port={}", ports[0])),
        "backend lines are tagged: {text}"
    );
}

#[test]
fn foreground_fleet_stops_gracefully_on_sigint() {
    stops_gracefully_on(Signal::SIGINT);
}

#[test]
fn foreground_fleet_stops_gracefully_on_sigterm() {
    stops_gracefully_on(Signal::SIGTERM);
}

#[test]
fn listening_beyond_loopback_is_logged() {
    let s = Scratch::new();
    let ports = free_ports(2);
    s.write(
        "fleet.yaml",
        &format!(
            "backends: 1\nbase_port: {}\nlisten: 0.0.0.0:{}\n",
            ports[0], ports[1]
        ),
    );
    let out = s.fleet(&["up", "-d"]);
    let f = Fleet::adopt(s, vec![ports[0]], ports[1]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(f.log().contains("beyond loopback"), "{}", f.log());
}

#[test]
fn listen_port_zero_lets_the_os_choose_and_status_reports_it() {
    let s = Scratch::new();
    let ports = free_ports(1);
    s.write(
        "fleet.yaml",
        &format!(
            "backends: 1\nbase_port: {}\nlisten: 127.0.0.1:0\n",
            ports[0]
        ),
    );
    let out = s.fleet(&["up", "-d"]);
    let mut f = Fleet::adopt(s, ports.clone(), 0);
    assert!(out.status.success(), "{}", text(&out));
    let st = f.status();
    f.supervisor = st.pid;
    let addr: SocketAddr = st.listen.parse().unwrap();
    assert_ne!(addr.port(), 0, "{st:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&addr.to_string()),
        "up says where: {}",
        text(&out)
    );
    assert_eq!(get(addr, "/page.html").unwrap().status, 200);
}

#[test]
fn bench_without_url_measures_the_running_fleet_and_its_rows_add_up() {
    let f = Fleet::start(2, "");
    let out = f.fleet(&["bench", "-n", "200", "-c", "1,10", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 2);
    for (row, c) in rows.iter().zip([1, 10]) {
        let n = |k: &str| row[k].as_u64().unwrap();
        assert_eq!(n("concurrency"), c);
        assert_eq!(n("requests"), 200);
        assert_eq!(n("complete") + n("failed"), 200, "{row}");
        assert_eq!(n("failed"), 0, "{row}");
        let t = row["time_taken_s"].as_f64().unwrap();
        let rps = row["requests_per_second"].as_f64().unwrap();
        assert!(
            (rps - n("complete") as f64 / t).abs() <= 1e-3 * rps + 1e-3,
            "{row}"
        );
        assert!(
            n("total_transferred_bytes") > 200 * PAGE.len() as u64,
            "headers and bodies: {row}"
        );
    }
    // Every request went through the balancer to the two workers.
    let s = f.status();
    let total = sum(&s, |b| b.total_connections);
    assert!(total >= 400, "{s:?}");
    assert!(
        s.backends.iter().all(|b| b.total_connections >= 150),
        "round-robin: {s:?}"
    );
}

#[test]
fn a_www_without_index_html_is_still_healthy() {
    let s = Scratch::new();
    std::fs::remove_file(s.path().join("www/index.html")).unwrap();
    let f = Fleet::start_in(s, 2, "");
    assert!(Fleet::all_healthy(&f.status()));
    let r = get(f.addr(), "/").unwrap();
    assert_eq!(
        r.status, 404,
        "no index: a 404 for visitors, not an unhealthy backend"
    );
    let h = get(
        SocketAddr::from(([127, 0, 0, 1], f.ports[0])),
        "/.fleet/health",
    )
    .unwrap();
    assert_eq!(h.status, 200);
    assert_eq!(
        h.header("x-fleet-backend"),
        Some(f.ports[0].to_string().as_str())
    );
}

#[test]
fn a_closed_stderr_does_not_kill_a_foreground_fleet() {
    let s = Scratch::new();
    let ports = free_ports(3);
    s.write("fleet.yaml", &fleet_yaml(&ports, ""));
    // Like `fleet up 2>&1 | head -1`: the reader goes away at once.
    let mut child = std::process::Command::new(FLEET)
        .arg("up")
        .current_dir(s.path())
        .env("FLEET_STATE_DIR", s.state())
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = PidGuard::new(vec![child.id()]);
    drop(child.stderr.take());
    let st = wait_for(Duration::from_secs(10), "the fleet healthy", || {
        let out = s.fleet(&["status", "--json"]);
        let v: FleetStatus = serde_json::from_slice(&out.stdout).ok()?;
        Fleet::all_healthy(&v).then_some(v)
    });
    let workers: Vec<u32> = st.backends.iter().filter_map(|b| b.pid).collect();
    guard.add(&workers);
    // Logging more (a restart) must not kill it either.
    kill(workers[0], Signal::SIGKILL);
    wait_for(Duration::from_secs(5), "the restart", || {
        let out = s.fleet(&["status", "--json"]);
        let v: FleetStatus = serde_json::from_slice(&out.stdout).ok()?;
        (v.backends[0].restarts == 1 && Fleet::all_healthy(&v)).then_some(())
    });
    let down = s.fleet(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// bin/runserver.sh: extra arguments override its defaults (not "cannot be
/// used multiple times"), and the binary it builds is looked up under
/// CARGO_TARGET_DIR. A stand-in `cargo` (that builds nothing) keeps it fast.
#[test]
fn runserver_sh_takes_overrides_and_honours_cargo_target_dir() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    let target = s.path().join("tgt");
    std::fs::create_dir_all(target.join("release")).unwrap();
    std::os::unix::fs::symlink(FLEET, target.join("release/fleet")).unwrap();
    let bin = s.path().join("fakebin");
    std::fs::create_dir(&bin).unwrap();
    let cargo = bin.join("cargo");
    std::fs::write(&cargo, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = free_ports(3);
    let out = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/bin/runserver.sh"))
        .args(["--backends", "2", &format!("--base-port={}", p[0])])
        .args(["--listen", &format!("127.0.0.1:{}", p[2]), "--www", "www"])
        .current_dir(s.path())
        .env("FLEET_STATE_DIR", s.state())
        .env("CARGO_TARGET_DIR", &target)
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env_remove("FLEET")
        .output()
        .unwrap();
    let mut f = Fleet::adopt(s, p[..2].to_vec(), p[2]);
    assert!(out.status.success(), "{}", text(&out));
    let st = f.status();
    f.supervisor = st.pid;
    let ports: Vec<u16> = st.backends.iter().map(|b| b.port).collect();
    assert_eq!(ports, p[..2]);
}
