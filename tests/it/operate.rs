//! Operating a running fleet: restart, stop, start, scale, reload, the
//! signals of a running supervisor, and a status of 1000 backends. Every verb
//! goes through the real binary; loads are bounded in requests and time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::*;

/// What a load asks for, how good an answer looks, and how hard it asks.
#[derive(Clone, Copy)]
pub(crate) struct Target {
    /// The path every client GETs.
    pub(crate) path: &'static str,
    /// Ok for a good answer (status, body).
    pub(crate) good: fn(u16, &[u8]) -> std::io::Result<()>,
    /// Clients of each kind: one connection for many requests, and a new
    /// connection for every request (like `ab`).
    pub(crate) clients: usize,
    /// The pause after each request (zero: flat out).
    pub(crate) pause: Duration,
    /// The load stops by itself after this long, or this many requests.
    pub(crate) at_most: (Duration, usize),
}

/// GET /page.html flat out from 8 clients of each kind. The HTTP-aware
/// balancer (the default mode) keeps a keep-alive client's connection while
/// the worker behind it is restarted; in tcp mode, which splices whole
/// connections, those clients fail (as the issue measured).
pub(crate) const PAGE_TARGET: Target = Target {
    path: "/page.html",
    good: |status, body| match status {
        200 if body == PAGE => Ok(()),
        200 => Err(std::io::Error::other("wrong body")),
        s => Err(std::io::Error::other(format!("status {s}"))),
    },
    clients: 8,
    pause: Duration::ZERO,
    at_most: (Duration::from_secs(120), 500_000),
};

/// Requests from both kinds of client until `finish`; every failure is kept.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// A load of `PAGE_TARGET` on `addr`.
    pub(crate) fn start(addr: SocketAddr) -> Load {
        Load::start_on(addr, PAGE_TARGET)
    }

    pub(crate) fn start_on(addr: SocketAddr, t: Target) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let deadline = Instant::now() + t.at_most.0;
        let mut threads = Vec::new();
        for i in 0..2 * t.clients {
            let (stop, sent, failures) = (stop.clone(), sent.clone(), failures.clone());
            let keep_alive = i >= t.clients;
            threads.push(std::thread::spawn(move || {
                let mut conn: Option<BufReader<TcpStream>> = None;
                while !stop.load(Ordering::SeqCst)
                    && sent.load(Ordering::SeqCst) < t.at_most.1
                    && Instant::now() < deadline
                {
                    sent.fetch_add(1, Ordering::SeqCst);
                    let r = if keep_alive {
                        keep_alive_get(&mut conn, addr, t)
                    } else {
                        get(addr, t.path).and_then(|r| (t.good)(r.status, &r.body))
                    };
                    if let Err(e) = r {
                        conn = None;
                        failures.lock().unwrap().push(e.to_string());
                    }
                    if !t.pause.is_zero() {
                        std::thread::sleep(t.pause);
                    }
                }
            }));
        }
        Load {
            stop,
            sent,
            failures,
            threads,
        }
    }

    pub(crate) fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    pub(crate) fn failures(&self) -> usize {
        self.failures.lock().unwrap().len()
    }

    /// A load on `addr` that has already sent its first 200 requests.
    pub(crate) fn under_way(addr: SocketAddr) -> Load {
        let load = Load::start(addr);
        load.wait_under_way();
        load
    }

    /// Wait until this load has sent its first 200 requests.
    pub(crate) fn wait_under_way(&self) {
        wait_for(Duration::from_secs(30), "load under way", || {
            (self.sent() >= 200).then_some(())
        });
    }

    /// Send `more` requests beyond those sent so far, stop, and assert that
    /// none failed.
    pub(crate) fn finish_without_failures(self, more: usize) {
        let n = self.sent();
        let (sent, failures) = self.finish(n + more);
        assert_no_failures(sent, &failures);
    }

    /// Keep going until at least `min` requests went out, then stop and
    /// return (sent, failures).
    pub(crate) fn finish(self, min: usize) -> (usize, Vec<String>) {
        wait_for(Duration::from_secs(90), "enough requests", || {
            (self.sent() >= min).then_some(())
        });
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.sent.load(Ordering::SeqCst), failures)
    }
}

/// One GET on a kept-alive connection (opened on first use).
fn keep_alive_get(
    conn: &mut Option<BufReader<TcpStream>>,
    addr: SocketAddr,
    t: Target,
) -> std::io::Result<()> {
    if conn.is_none() {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        *conn = Some(BufReader::new(s));
    }
    let c = conn.as_mut().expect("just set");
    write!(
        c.get_mut(),
        "GET {} HTTP/1.1\r\nHost: {addr}\r\n\r\n",
        t.path
    )?;
    let mut status = String::new();
    c.read_line(&mut status)?;
    let code = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut length = None;
    let mut close = false;
    loop {
        let mut line = String::new();
        c.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse::<usize>().ok();
            }
            // As a real client does: the next request goes on a new connection.
            close |= k.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close");
        }
    }
    let mut body = vec![0; length.ok_or_else(|| std::io::Error::other("no content-length"))?];
    c.read_exact(&mut body)?;
    if close {
        *conn = None;
    }
    (t.good)(code, &body)
}

/// `fleet ARGS` must succeed; returns its stdout.
pub(crate) fn ok(f: &Fleet, args: &[&str]) -> String {
    let out = f.fleet(args);
    assert!(out.status.success(), "fleet {args:?}:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn ports_of(s: &FleetStatus) -> Vec<u16> {
    s.backends.iter().map(|b| b.port).collect()
}

pub(crate) fn pids_of(s: &FleetStatus) -> Vec<Option<u32>> {
    s.backends.iter().map(|b| b.pid).collect()
}

/// A fleet of 4 whose next 4 ports are free too (reserved for `scale`),
/// with the balancer's port above them.
pub(crate) fn scalable(extra: &str) -> (Scratch, Vec<u16>, u16) {
    let scratch = Scratch::new();
    let ports = free_ports(10);
    let listen = ports[9];
    let yaml = format!(
        "backends: 4\nbase_port: {}\nlisten: 127.0.0.1:{listen}\nwww: www\n\
         health:\n  interval: 100ms\n  timeout: 100ms\n{extra}\n",
        ports[0]
    );
    scratch.write("fleet.yaml", &yaml);
    (scratch, ports, listen)
}

pub(crate) fn up(scratch: Scratch, ports: &[u16], listen: u16) -> Fleet {
    let out = scratch.fleet(&["up", "-d"]);
    let mut f = Fleet::adopt(scratch, ports.to_vec(), listen);
    assert!(out.status.success(), "fleet up -d:\n{}", text(&out));
    let s = f.status();
    f.supervisor = s.pid;
    f
}

#[test]
fn restart_scale_and_reload_under_load_fail_no_request() {
    let (scratch, ports, listen) = scalable("");
    let f = up(scratch, &ports, listen);
    let load = Load::under_way(f.addr());

    // Rolling restart of every backend: each one drained, restarted, back.
    let before = pids_of(&f.status());
    let n = load.sent();
    let out = ok(&f, &["restart"]);
    assert!(load.sent() > n, "requests went out during the restart");
    for p in &ports[..4] {
        assert!(
            out.contains(&format!("backend {p}: back in rotation")),
            "{out}"
        );
    }
    let s = f.status();
    assert!(Fleet::all_healthy(&s), "{s:?}");
    for (old, new) in before.iter().zip(pids_of(&s)) {
        assert_ne!(*old, new, "every backend has a new worker");
    }
    assert_eq!(load.failures(), 0, "after the rolling restart");

    // Grow onto the next ports, then shrink from the top.
    let n = load.sent();
    ok(&f, &["scale", "8"]);
    let s = f.status();
    assert_eq!(ports_of(&s), (ports[0]..ports[0] + 8).collect::<Vec<_>>());
    assert!(Fleet::all_healthy(&s), "{s:?}");
    ok(&f, &["scale", "2"]);
    assert!(load.sent() > n, "requests went out during the scaling");
    let s = f.status();
    assert_eq!(ports_of(&s), ports[..2]);
    assert_eq!(load.failures(), 0, "after scale 4 -> 8 -> 2");
    for p in &ports[2..8] {
        assert!(!port_open(*p), "backend {p} is gone");
    }

    // A reload that changes the command: the same worker, now as a custom
    // command, rolled in one backend at a time.
    let www = f.scratch.path().join("www");
    let yaml = format!(
        "backends: 2\nbase_port: {}\nlisten: 127.0.0.1:{listen}\nwww: www\n\
         health:\n  interval: 100ms\n  timeout: 100ms\n  path: /.fleet/health\n\
         backend:\n  command: [\"{FLEET}\", \"serve\", \"--port\", \"{{port}}\", \"--www\", \"{}\"]\n",
        ports[0],
        www.display()
    );
    f.scratch.write("fleet.yaml", &yaml);
    let before = pids_of(&f.status());
    let n = load.sent();
    let out = ok(&f, &["reload"]);
    assert!(load.sent() > n, "requests went out during the reload");
    assert!(
        out.contains("backend.command: the built-in worker ->"),
        "{out}"
    );
    let s = f.status();
    assert!(Fleet::all_healthy(&s), "{s:?}");
    for (old, new) in before.iter().zip(pids_of(&s)) {
        assert_ne!(*old, new, "the new command runs");
    }

    let (sent, failures) = load.finish(5000);
    assert!(sent >= 5000, "sent {sent}");
    assert_no_failures(sent, &failures);
}

#[test]
fn a_draining_backend_shows_as_draining_and_down_interrupts_the_restart() {
    let f = Fleet::start(2, "shutdown:\n  drain_timeout: 30s\n");
    f.scratch.write("www/big.bin", &"x".repeat(64 << 20));
    // A download the client does not read: in flight until the worker gives
    // up on it (its idle timeout, 5 s), so its backend cannot finish draining.
    let mut client = TcpStream::connect(f.addr()).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        client,
        "GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 1024];
    let n = client.read(&mut head).unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_lowercase();
    let port: u16 = head
        .lines()
        .find_map(|l| l.strip_prefix("x-fleet-backend:"))
        .expect("the response names its backend")
        .trim()
        .parse()
        .unwrap();
    let restart = std::process::Command::new(FLEET)
        .args(["restart", &port.to_string()])
        .current_dir(f.scratch.path())
        .env("FLEET_STATE_DIR", f.scratch.state())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut restart = ChildGuard(restart);
    let i = f.ports.iter().position(|p| *p == port).unwrap();
    f.wait_status(Duration::from_secs(5), "the backend draining", |s| {
        s.backends[i].state == Phase::Draining && !s.backends[i].healthy
    });
    let human = ok(&f, &["status"]);
    assert!(human.contains("draining"), "{human}");
    // `down` does not wait for the restart: it interrupts it.
    ok(&f, &["down", "--timeout", "2s"]);
    let code = wait_for(
        Duration::from_secs(10),
        "the restart client to exit",
        || restart.0.try_wait().unwrap(),
    );
    let mut err = String::new();
    restart
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(code.code(), Some(1), "{err}");
    assert!(err.contains("restart was interrupted"), "{err}");
}

#[test]
fn restart_all_at_once_gives_every_backend_a_new_worker() {
    let f = Fleet::start(3, "");
    let before = pids_of(&f.status());
    let out = ok(&f, &["restart", "--all-at-once"]);
    assert!(out.contains("restarted 3 backends"), "{out}");
    let s = f.status();
    assert!(Fleet::all_healthy(&s), "{s:?}");
    for (old, new) in before.iter().zip(pids_of(&s)) {
        assert_ne!(*old, new);
    }
}

#[test]
fn restart_of_an_unknown_port_changes_nothing() {
    let f = Fleet::start(2, "");
    let before = pids_of(&f.status());
    let out = f.fleet(&["restart", &f.ports[0].to_string(), "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no backend on port 1"), "{err}");
    assert_eq!(pids_of(&f.status()), before);
}

/// A backend command that exits at once while `crash` exists in its directory.
fn crashable(scratch: &Scratch) -> String {
    let www = scratch.path().join("www");
    format!(
        "backend:\n  command: [\"sh\", \"-c\", \"test -e crash && exit 1; exec {FLEET} serve --port $PORT --www {}\"]\n\
         health:\n  interval: 100ms\n  timeout: 100ms\n  path: /.fleet/health\n",
        www.display()
    )
}

#[test]
fn restart_brings_a_failed_backend_back() {
    let scratch = Scratch::new();
    let extra = format!(
        "{}restart:\n  initial_backoff: 10ms\n  max_restarts: 2\n  window: 60s\n",
        crashable(&scratch)
    );
    let f = Fleet::start_in(scratch, 2, &extra);
    let port = f.ports[1];
    f.scratch.write("crash", "");
    kill(f.pid_of(1), Signal::SIGKILL);
    f.wait_status(Duration::from_secs(10), "the backend failed", |s| {
        s.backends[1].state == Phase::Failed
    });
    std::fs::remove_file(f.scratch.path().join("crash")).unwrap();
    let out = ok(&f, &["restart", &port.to_string()]);
    assert!(
        out.contains(&format!("backend {port}: back in rotation")),
        "{out}"
    );
    let s = f.status();
    assert!(Fleet::all_healthy(&s), "{s:?}");
}

#[test]
fn restart_works_under_policy_never_and_a_backend_that_does_not_come_back_fails_the_command() {
    let scratch = Scratch::new();
    let extra = format!("{}restart:\n  policy: never\n", crashable(&scratch));
    let f = Fleet::start_in(scratch, 2, &extra);
    let (a, b) = (f.ports[0], f.ports[1]);
    kill(f.pid_of(0), Signal::SIGKILL);
    f.wait_status(
        Duration::from_secs(10),
        "policy never leaves it stopped",
        |s| s.backends[0].state == Phase::Stopped,
    );
    ok(&f, &["restart", &a.to_string()]);
    assert!(Fleet::all_healthy(&f.status()));

    // Now the command crashes: the rolling restart stops at the first
    // backend that does not come back, and the other keeps serving.
    f.scratch.write("crash", "");
    let out = f.fleet(&["restart"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains(&format!("backend {a} did not come back")),
        "{all}"
    );
    assert!(all.contains(&format!("backend {b} not restarted")), "{all}");
    let s = f.status();
    assert!(s.backends[1].healthy, "{s:?}");
    assert_eq!(get(f.addr(), "/page.html").unwrap().status, 200);
}

#[test]
fn stop_keeps_a_backend_out_of_rotation_until_start() {
    let f = Fleet::start(3, "");
    let port = f.ports[1];
    let old = f.pid_of(1);
    let out = ok(&f, &["stop", &port.to_string()]);
    assert!(out.contains(&format!("backend {port}: stopped")), "{out}");
    assert!(!alive(old));
    // Long enough for the restart policy to have acted, were it going to.
    for _ in 0..60 {
        let r = get(f.addr(), "/page.html").unwrap();
        assert_eq!(r.status, 200);
        assert_ne!(r.header("X-Fleet-Backend"), Some(port.to_string().as_str()));
    }
    let s = f.status();
    let b = &s.backends[1];
    assert_eq!(b.state, Phase::Stopped, "{s:?}");
    assert!(!b.healthy);
    assert!(
        b.reason
            .as_deref()
            .unwrap_or_default()
            .contains("fleet stop"),
        "{s:?}"
    );
    let human = ok(&f, &["ps"]);
    assert!(human.contains("stopped"), "{human}");
    // Restarting "every backend" leaves a stopped one stopped.
    ok(&f, &["restart"]);
    assert_eq!(f.status().backends[1].state, Phase::Stopped);

    ok(&f, &["start", &port.to_string()]);
    let s = f.status();
    assert!(Fleet::all_healthy(&s), "{s:?}");
    wait_for(
        Duration::from_secs(5),
        "the started backend takes traffic",
        || {
            let r = get(f.addr(), "/page.html").ok()?;
            (r.header("X-Fleet-Backend") == Some(port.to_string().as_str())).then_some(())
        },
    );
}

#[test]
fn scale_refuses_a_busy_port_naming_it_and_changes_nothing() {
    // The balancer's port is right above the backends: growing by one hits it.
    let f = Fleet::start(2, "");
    let out = f.fleet(&["scale", "3"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("port {} is already in use", f.listen)),
        "{err}"
    );
    assert!(err.contains("nothing changed"), "{err}");
    assert_eq!(ports_of(&f.status()).len(), 2);
    let out = f.fleet(&["scale", "0"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn reload_of_an_invalid_file_changes_nothing_and_names_the_line() {
    let f = Fleet::start(2, "");
    let before = f.status();
    let good = std::fs::read_to_string(f.scratch.path().join("fleet.yaml")).unwrap();
    f.scratch.write(
        "fleet.yaml",
        &good.replace(
            "backends: 2",
            "backends: 3\nbalancer:\n  idle_timeout: soon",
        ),
    );
    let out = f.fleet(&["reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fleet.yaml:3: balancer.idle_timeout"), "{err}");
    let after = f.status();
    assert_eq!(pids_of(&after), pids_of(&before));
    assert!(
        f.log().contains("fleet.yaml:3: balancer.idle_timeout"),
        "a log line"
    );

    // A listen address that cannot be bound (not on this machine: a
    // documentation address) is refused, also changing nothing.
    f.scratch
        .write("fleet.yaml", &good.replace("127.0.0.1:", "192.0.2.1:"));
    let out = f.fleet(&["reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no such address on this machine"), "{err}");
    assert!(err.contains("nothing changed"), "{err}");
    assert_eq!(pids_of(&f.status()), pids_of(&before));
    assert_eq!(f.status_json()["listen"], f.addr().to_string());
}

#[test]
fn sighup_reloads_a_detached_fleet_and_sigusr_does_not_kill_it() {
    let (scratch, ports, listen) = scalable("");
    let f = up(scratch, &ports, listen);
    kill(f.supervisor, Signal::SIGUSR1);
    kill(f.supervisor, Signal::SIGUSR2);
    let yaml = std::fs::read_to_string(f.scratch.path().join("fleet.yaml")).unwrap();
    f.scratch
        .write("fleet.yaml", &yaml.replace("backends: 4", "backends: 5"));
    kill(f.supervisor, Signal::SIGHUP);
    let s = f.wait_status(Duration::from_secs(10), "five backends after SIGHUP", |s| {
        ports_of(s).len() == 5 && Fleet::all_healthy(s)
    });
    assert_eq!(s.pid, f.supervisor);
    assert!(alive(f.supervisor));
    let log = f.log();
    assert!(log.contains("SIGUSR1 received; ignored"), "{log}");
    assert!(log.contains("SIGUSR2 received; ignored"), "{log}");
    assert!(log.contains("reload: backends: 4 -> 5"), "{log}");
    assert_eq!(get(f.addr(), "/page.html").unwrap().status, 200);
}

#[test]
fn foreground_fleet_stops_gracefully_on_sighup() {
    let s = Scratch::new();
    let ports = free_ports(3);
    let text = Foreground::start(&s, &ports).stop_by(Signal::SIGHUP, &s);
    assert!(text.contains("SIGHUP"), "{text}");
}

#[test]
fn start_without_a_fleet_says_to_use_up() {
    let s = Scratch::new();
    let out = s.fleet(&["start"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fleet up"), "{err}");
    let out = s.fleet(&["ps"]);
    assert_eq!(out.status.code(), Some(3), "ps is status: {}", text(&out));
}

#[test]
fn status_and_json_status_of_a_1000_backend_fleet() {
    // 1000 real backends, but cheap ones (`sleep`); the test itself listens
    // on their ports once `up` has checked them free, so every tcp probe
    // passes and all 1000 become running and healthy.
    let scratch = Scratch::new();
    let ports = free_ports(1001);
    let (base, listen) = (ports[0], ports[1000]);
    let yaml = format!(
        "backends: 1000\nbase_port: {base}\nlisten: 127.0.0.1:{listen}\n\
         backend:\n  command: [\"sleep\", \"300\"]\n\
         health:\n  kind: tcp\n  interval: 500ms\n  timeout: 500ms\nshutdown:\n  timeout: 5s\n"
    );
    scratch.write("fleet.yaml", &yaml);
    let mut up = std::process::Command::new(FLEET)
        .args(["up", "-d"])
        .current_dir(scratch.path())
        .env("FLEET_STATE_DIR", scratch.state())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut f = Fleet::adopt(scratch, ports[..1000].to_vec(), listen);
    // The control socket answers only after every port was checked free.
    let pid = wait_for(Duration::from_secs(120), "the supervisor answering", || {
        let out = f.fleet(&["status", "--json"]);
        let v: FleetStatus = serde_json::from_slice(&out.stdout).ok()?;
        Some(v.pid)
    });
    f.supervisor = pid;
    let listeners: Vec<std::net::TcpListener> = ports[..1000]
        .iter()
        .map(|p| {
            let l = std::net::TcpListener::bind(("127.0.0.1", *p)).unwrap();
            l.set_nonblocking(true).unwrap();
            l
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acceptor = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                for l in &listeners {
                    while l.accept().is_ok() {}
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let code = wait_for(Duration::from_secs(120), "fleet up -d to return", || {
        up.try_wait().unwrap()
    });
    assert!(code.success(), "fleet up -d: {code}");
    let s = f.wait_status(Duration::from_secs(60), "1000 healthy backends", |s| {
        ports_of(s).len() == 1000 && Fleet::all_healthy(s)
    });
    assert_eq!(ports_of(&s)[999], base + 999);
    let human = ok(&f, &["ps"]);
    assert!(
        human.contains("1000/1000 backends healthy"),
        "{}",
        &human[..200.min(human.len())]
    );
    assert_eq!(
        human.lines().count(),
        1 + 1 + 1 + 1000,
        "summary, traffic line, header, one row each"
    );
    // Stopping is work per backend (a signal, a guard that exits, a reap):
    // a deadline scaled to the fleet, generous for a loaded 2-core machine.
    let started = std::time::Instant::now();
    let out = f.scratch.fleet_within(
        &["down"],
        Duration::from_secs(60) + 1000 * Duration::from_millis(200),
    );
    assert!(out.status.success(), "fleet down:\n{}", text(&out));
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("stopped"), "{out}");
    eprintln!("fleet down of 1000 backends took {:?}", started.elapsed());
    stop.store(true, Ordering::SeqCst);
    acceptor.join().unwrap();
}
