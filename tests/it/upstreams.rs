//! Remote upstreams: servers fleet does not run, balanced beside (or
//! instead of) its own backends with the same health checks and retries.
//! The loopback test stands two `fleet serve` processes in for other hosts;
//! the network-namespace test makes them real hosts with their own
//! addresses and cuts one off at the link.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{
    BackendStatus, FLEET, Fleet, FleetStatus, PAGE, Scratch, assert_no_failures, free_ports, get,
    text, wait_for,
};

/// A `fleet serve` standing in for a server on another machine; killed on drop.
struct Remote {
    child: Child,
}

impl Remote {
    fn start(prefix: &[&str], bind: &str, port: u16) -> Remote {
        let mut cmd = Command::new(prefix.first().copied().unwrap_or(FLEET));
        if !prefix.is_empty() {
            cmd.args(&prefix[1..]).arg(FLEET);
        }
        let child = cmd
            .args([
                "serve",
                "--embedded",
                "--bind",
                bind,
                "--port",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Remote { child }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn upstream<'a>(s: &'a FleetStatus, address: &str) -> &'a BackendStatus {
    s.backends
        .iter()
        .find(|b| b.address.as_deref() == Some(address))
        .unwrap_or_else(|| panic!("no upstream {address} in {s:?}"))
}

/// Requests from `clients` threads until `done` (and at least `min` were
/// sent), bounded by count and time; returns (sent, failures, backends seen).
fn load(
    addr: SocketAddr,
    clients: usize,
    min: usize,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, Vec<String>, Vec<String>)> {
    std::thread::spawn(move || {
        let sent = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let deadline = Instant::now() + Duration::from_secs(60);
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                let (sent, failures, seen, done) =
                    (sent.clone(), failures.clone(), seen.clone(), done.clone());
                std::thread::spawn(move || {
                    while (!done.load(Ordering::SeqCst) || sent.load(Ordering::SeqCst) < min)
                        && sent.load(Ordering::SeqCst) < 100_000
                        && Instant::now() < deadline
                    {
                        sent.fetch_add(1, Ordering::SeqCst);
                        match get(addr, "/page.html") {
                            Ok(r) if r.status == 200 && r.body == PAGE => {
                                let b = r.header("x-fleet-backend").unwrap_or("").to_string();
                                let mut seen = seen.lock().unwrap();
                                if !seen.contains(&b) {
                                    seen.push(b);
                                }
                            }
                            Ok(r) => failures
                                .lock()
                                .unwrap()
                                .push(format!("status {}", r.status)),
                            Err(e) => failures.lock().unwrap().push(e.to_string()),
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let failures = failures.lock().unwrap().clone();
        let seen = seen.lock().unwrap().clone();
        (sent.load(Ordering::SeqCst), failures, seen)
    })
}

const FAST_HEALTH: &str = "health:\n  interval: 100ms\n  timeout: 100ms\n  rise: 2\n  fall: 2\n";

#[test]
fn upstreams_are_balanced_beside_local_backends_and_leave_and_rejoin() {
    let ports = free_ports(2);
    let (a, b) = (
        format!("127.0.0.1:{}", ports[0]),
        format!("127.0.0.1:{}", ports[1]),
    );
    let _ra = Remote::start(&[], "127.0.0.1", ports[0]);
    let mut rb = Remote::start(&[], "127.0.0.1", ports[1]);
    let f = Fleet::start_in(
        Scratch::new(),
        1,
        &format!("{FAST_HEALTH}upstreams: [\"{a}\", \"{b}\"]\n"),
    );
    let s = f.wait_status(
        Duration::from_secs(20),
        "all three healthy",
        Fleet::all_healthy,
    );
    assert_eq!(s.backends.len(), 3);
    let ua = upstream(&s, &a);
    assert_eq!(ua.port, ports[0]);
    assert!(ua.pid.is_none(), "an upstream has no pid: {ua:?}");
    assert_eq!(ua.restarts, 0);
    assert!(
        f.status_json()["backends"][0].get("address").is_none(),
        "a local backend has no address"
    );
    let human = text(&f.fleet(&["status"]));
    assert!(human.contains(&a) && human.contains(&b), "{human}");

    // Round-robin reaches all three (the header names each server's port).
    let seen: std::collections::HashSet<String> = (0..30)
        .map(|_| {
            get(f.addr(), "/page.html")
                .unwrap()
                .header("x-fleet-backend")
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(seen.len(), 3, "{seen:?}");

    // One upstream dies under load: nothing fails, it leaves the rotation.
    let done = Arc::new(AtomicBool::new(false));
    let running = load(f.addr(), 8, 600, done.clone());
    wait_for(Duration::from_secs(20), "some load", || {
        (f.status().backends[0].total_connections > 50).then_some(())
    });
    let _ = rb.child.kill();
    let _ = rb.child.wait();
    f.wait_status(
        Duration::from_secs(20),
        "the dead upstream out of rotation",
        |s| !upstream(s, &b).healthy,
    );
    done.store(true, Ordering::SeqCst);
    let (sent, failures, _) = running.join().unwrap();
    assert_no_failures(sent, &failures);
    let s = f.status();
    assert!(
        upstream(&s, &b)
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("health")),
        "{s:?}"
    );

    // It comes back: rise passes bring it into rotation again.
    rb = Remote::start(&[], "127.0.0.1", ports[1]);
    f.wait_status(
        Duration::from_secs(20),
        "the upstream back",
        Fleet::all_healthy,
    );
    drop(rb);
}

#[test]
fn a_fleet_of_upstreams_only_runs_no_backend() {
    let port = free_ports(1)[0];
    let addr = format!("127.0.0.1:{port}");
    let _r = Remote::start(&[], "127.0.0.1", port);
    let listen = free_ports(1)[0];
    let s = Scratch::new();
    let out = s.fleet(&[
        "up",
        "-d",
        "--backends",
        "0",
        "--upstream",
        &addr,
        "--listen",
        &listen.to_string(),
    ]);
    let f = Fleet::adopt(s, Vec::new(), listen);
    assert!(out.status.success(), "{}", text(&out));
    let st = f.wait_status(
        Duration::from_secs(20),
        "the upstream healthy",
        Fleet::all_healthy,
    );
    assert_eq!(st.backends.len(), 1, "{st:?}");
    assert!(upstream(&st, &addr).healthy);
    let r = get(f.addr(), "/page.html").unwrap();
    assert_eq!(r.header("x-fleet-backend"), Some(port.to_string().as_str()));
    let down = f.fleet(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
}

// --- separate hosts in network namespaces (Linux, root) ---------------------

/// Network namespaces `fa<pid>h1`/`h2`, each joined to the root namespace by
/// a veth pair with its own /24 in 10.201.x (addresses exist only inside
/// these namespaces and on the veths' root ends). Each /24 also gets an
/// `unreachable` route of lower priority in the root namespace, so that no
/// packet for these hosts can ever leave by the default route, whatever
/// state the links are in. Deleted on drop.
struct Hosts {
    names: Vec<String>,
    /// The root-namespace end of each host's link.
    links: Vec<String>,
    /// The host's end of its link, inside its namespace.
    inner: Vec<String>,
    /// Each host's address.
    addrs: Vec<String>,
    /// The safety routes.
    nets: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let o = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

impl Hosts {
    /// `None` (with a one-line reason printed) where the test cannot run.
    fn create() -> Option<Hosts> {
        let can = nix::unistd::Uid::effective().is_root()
            && Command::new("ip")
                .args(["netns", "list"])
                .output()
                .is_ok_and(|o| o.status.success());
        if !can {
            assert!(
                std::env::var_os("CI").is_none(),
                "network-namespace tests need root and `ip netns` in CI"
            );
            crate::harness::skip("network-namespace tests need root and iproute2 (ip netns)");
            return None;
        }
        // Unique per test process, and short (interface names are <= 15 bytes).
        let tag = std::process::id() % 100_000;
        let mut hosts = Hosts {
            names: Vec::new(),
            links: Vec::new(),
            inner: Vec::new(),
            addrs: Vec::new(),
            nets: Vec::new(),
        };
        for i in 1..=2u32 {
            let ns = format!("fa{tag}h{i}");
            let (outer, inner) = (format!("fa{tag}r{i}"), format!("fa{tag}n{i}"));
            let net = format!("10.201.{}", tag % 100 * 2 + i);
            hosts.names.push(ns.clone());
            hosts.links.push(outer.clone());
            hosts.inner.push(inner.clone());
            hosts.addrs.push(format!("{net}.2"));
            ip(&[
                "route",
                "add",
                "unreachable",
                &format!("{net}.0/24"),
                "metric",
                "4242",
            ])
            .unwrap_or_else(|e| panic!("setting up host {i}: {e}"));
            hosts.nets.push(format!("{net}.0/24"));
            let steps: Vec<Vec<String>> = vec![
                vec!["netns".into(), "add".into(), ns.clone()],
                vec![
                    "link".into(),
                    "add".into(),
                    outer.clone(),
                    "type".into(),
                    "veth".into(),
                    "peer".into(),
                    "name".into(),
                    inner.clone(),
                ],
                vec![
                    "link".into(),
                    "set".into(),
                    inner.clone(),
                    "netns".into(),
                    ns.clone(),
                ],
                vec![
                    "addr".into(),
                    "add".into(),
                    format!("{net}.1/24"),
                    "dev".into(),
                    outer.clone(),
                ],
                vec!["link".into(), "set".into(), outer.clone(), "up".into()],
                vec![
                    "-n".into(),
                    ns.clone(),
                    "addr".into(),
                    "add".into(),
                    format!("{net}.2/24"),
                    "dev".into(),
                    inner.clone(),
                ],
                vec![
                    "-n".into(),
                    ns.clone(),
                    "link".into(),
                    "set".into(),
                    inner.clone(),
                    "up".into(),
                ],
                vec![
                    "-n".into(),
                    ns.clone(),
                    "link".into(),
                    "set".into(),
                    "lo".into(),
                    "up".into(),
                ],
            ];
            for step in steps {
                let args: Vec<&str> = step.iter().map(String::as_str).collect();
                ip(&args).unwrap_or_else(|e| panic!("setting up host {i}: {e}"));
            }
        }
        Some(hosts)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth end, and with it the pair.
        for link in &self.links {
            let _ = ip(&["link", "del", link]);
        }
        for ns in &self.names {
            let _ = ip(&["netns", "del", ns]);
        }
        for net in &self.nets {
            let _ = ip(&["route", "del", "unreachable", net, "metric", "4242"]);
        }
    }
}

#[test]
fn a_host_cut_off_under_load_costs_no_request_and_rejoins_when_its_link_returns() {
    let Some(hosts) = Hosts::create() else {
        return;
    };
    let ports = [18081u16, 18082];
    let remotes: Vec<Remote> = (0..2)
        .map(|i| {
            Remote::start(
                &["ip", "netns", "exec", &hosts.names[i]],
                &hosts.addrs[i],
                ports[i],
            )
        })
        .collect();
    let ups: Vec<String> = (0..2)
        .map(|i| format!("{}:{}", hosts.addrs[i], ports[i]))
        .collect();
    let listen = free_ports(1)[0];
    let s = Scratch::new();
    s.write(
        "fleet.yaml",
        &format!(
            "backends: 0\nlisten: {listen}\n{FAST_HEALTH}balancer:\n  connect_timeout: 200ms\nupstreams: [\"{}\", \"{}\"]\n",
            ups[0], ups[1]
        ),
    );
    let out = s.fleet(&["up", "-d"]);
    let f = Fleet::adopt(s, Vec::new(), listen);
    assert!(out.status.success(), "{}", text(&out));
    f.wait_status(
        Duration::from_secs(20),
        "both hosts healthy",
        Fleet::all_healthy,
    );

    let done = Arc::new(AtomicBool::new(false));
    let running = load(f.addr(), 8, 1000, done.clone());
    wait_for(Duration::from_secs(20), "load on both hosts", || {
        let s = f.status();
        s.backends
            .iter()
            .all(|b| b.total_connections > 100)
            .then_some(())
    });
    // The host's own interface goes down: its link loses carrier, and
    // packets for it are dropped at the veth, answered by nothing.
    ip(&[
        "-n",
        &hosts.names[0],
        "link",
        "set",
        &hosts.inner[0],
        "down",
    ])
    .unwrap();
    f.wait_status(
        Duration::from_secs(20),
        "the cut-off host out of rotation",
        |s| !upstream(s, &ups[0]).healthy && upstream(s, &ups[1]).healthy,
    );
    let cut_total = upstream(&f.status(), &ups[1]).total_connections;
    wait_for(
        Duration::from_secs(20),
        "load on the other host meanwhile",
        || (upstream(&f.status(), &ups[1]).total_connections > cut_total + 200).then_some(()),
    );
    ip(&["-n", &hosts.names[0], "link", "set", &hosts.inner[0], "up"]).unwrap();
    let back = f.wait_status(
        Duration::from_secs(20),
        "the host back in rotation",
        Fleet::all_healthy,
    );
    let rejoined_at = upstream(&back, &ups[0]).total_connections;
    wait_for(
        Duration::from_secs(20),
        "traffic on the returned host",
        || (upstream(&f.status(), &ups[0]).total_connections > rejoined_at + 50).then_some(()),
    );
    done.store(true, Ordering::SeqCst);
    let (sent, failures, seen) = running.join().unwrap();
    assert_no_failures(sent, &failures);
    assert_eq!(seen.len(), 2, "{seen:?}");
    let down = f.fleet(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    drop(remotes);
}

#[test]
fn a_silent_upstream_under_load_costs_no_request() {
    // SIGSTOP: connections are accepted by the kernel but never answered,
    // as when a host's answers are lost. Requests waiting on it must move on
    // once health checks take it out of rotation.
    let ports = free_ports(2);
    let (a, b) = (
        format!("127.0.0.1:{}", ports[0]),
        format!("127.0.0.1:{}", ports[1]),
    );
    let _ra = Remote::start(&[], "127.0.0.1", ports[0]);
    let rb = Remote::start(&[], "127.0.0.1", ports[1]);
    let listen = free_ports(1)[0];
    let s = Scratch::new();
    s.write(
        "fleet.yaml",
        &format!("backends: 0\nlisten: {listen}\n{FAST_HEALTH}upstreams: [\"{a}\", \"{b}\"]\n"),
    );
    let out = s.fleet(&["up", "-d"]);
    let f = Fleet::adopt(s, Vec::new(), listen);
    assert!(out.status.success(), "{}", text(&out));
    f.wait_status(Duration::from_secs(20), "both healthy", Fleet::all_healthy);
    let done = Arc::new(AtomicBool::new(false));
    let running = load(f.addr(), 8, 600, done.clone());
    wait_for(Duration::from_secs(20), "load on both", || {
        f.status()
            .backends
            .iter()
            .all(|u| u.total_connections > 50)
            .then_some(())
    });
    let stopped = nix::unistd::Pid::from_raw(rb.child.id() as i32);
    nix::sys::signal::kill(stopped, nix::sys::signal::Signal::SIGSTOP).unwrap();
    f.wait_status(Duration::from_secs(20), "the silent upstream out", |s| {
        !upstream(s, &b).healthy
    });
    let at = upstream(&f.status(), &a).total_connections;
    wait_for(
        Duration::from_secs(20),
        "load on the other meanwhile",
        || (upstream(&f.status(), &a).total_connections > at + 200).then_some(()),
    );
    nix::sys::signal::kill(stopped, nix::sys::signal::Signal::SIGCONT).unwrap();
    f.wait_status(
        Duration::from_secs(20),
        "the upstream back",
        Fleet::all_healthy,
    );
    done.store(true, Ordering::SeqCst);
    let (sent, failures, seen) = running.join().unwrap();
    assert_no_failures(sent, &failures);
    assert_eq!(seen.len(), 2, "{seen:?}");
}
