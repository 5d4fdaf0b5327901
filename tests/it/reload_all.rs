//! Every key reloadable (issue 19): a reload that moves `listen`, one that
//! moves `base_port` (blue/green), one that adds and removes an upstream,
//! each under steady load with no failed request; and a busy port changes
//! nothing.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::operate::{Load, ok, pids_of, ports_of, scalable, up};

/// `fleet.yaml` of `f` with `from` replaced by `to` (which must be there).
fn edit(f: &Fleet, from: &str, to: &str) {
    let yaml = std::fs::read_to_string(f.scratch.path().join("fleet.yaml")).unwrap();
    assert!(yaml.contains(from), "{yaml}");
    f.scratch.write("fleet.yaml", &yaml.replacen(from, to, 1));
}

/// How one request to an address that is moving away ended.
enum Ended {
    Ok,
    /// Refused at connect, or a kept-alive connection closed (or reset)
    /// before any byte of the answer: the address moved. A client retries
    /// such a request elsewhere (RFC 9112 §9.3.1: it was never processed).
    Gone,
    Failed(String),
}

/// Keep-alive and one-request-per-connection clients of the old address
/// while it moves: each runs until the address is gone. Every request that
/// got an answer must have got all of it.
struct OldClients {
    done: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl OldClients {
    fn start(addr: SocketAddr) -> OldClients {
        let done = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let deadline = Instant::now() + Duration::from_secs(120);
        let threads = (0..8)
            .map(|i| {
                let (done, failures) = (done.clone(), failures.clone());
                std::thread::spawn(move || {
                    let mut conn = None;
                    while Instant::now() < deadline {
                        match one(&mut conn, addr, i % 2 == 0) {
                            Ended::Ok => {
                                done.fetch_add(1, Ordering::SeqCst);
                            }
                            Ended::Gone => return,
                            Ended::Failed(e) => {
                                conn = None;
                                failures.lock().unwrap().push(e);
                            }
                        }
                    }
                })
            })
            .collect();
        OldClients {
            done,
            failures,
            threads,
        }
    }

    fn done(&self) -> usize {
        self.done.load(Ordering::SeqCst)
    }

    /// Wait for every client to find the address gone; (answered, failures).
    fn finish(self) -> (usize, Vec<String>) {
        for t in self.threads {
            t.join().unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.done.load(Ordering::SeqCst), failures)
    }
}

fn one(conn: &mut Option<BufReader<TcpStream>>, addr: SocketAddr, keep_alive: bool) -> Ended {
    let gone = |e: &std::io::Error| {
        matches!(
            e.kind(),
            ErrorKind::ConnectionRefused
                | ErrorKind::ConnectionReset
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof
        )
    };
    if conn.is_none() {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                *conn = Some(BufReader::new(s));
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Ended::Gone,
            Err(e) => return Ended::Failed(format!("connect: {e}")),
        }
    }
    let c = conn.as_mut().expect("just set");
    let close = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    if let Err(e) = write!(
        c.get_mut(),
        "GET /page.html HTTP/1.1\r\nHost: {addr}\r\n{close}\r\n"
    ) {
        *conn = None;
        return if gone(&e) {
            Ended::Gone
        } else {
            Ended::Failed(format!("write: {e}"))
        };
    }
    let mut status = String::new();
    match c.read_line(&mut status) {
        // Closed before any byte of the answer.
        Ok(0) => {
            *conn = None;
            return Ended::Gone;
        }
        Err(e) if status.is_empty() && gone(&e) => {
            *conn = None;
            return Ended::Gone;
        }
        Err(e) => return Ended::Failed(format!("status line: {e}")),
        Ok(_) => {}
    }
    if !status.starts_with("HTTP/1.1 200") {
        return Ended::Failed(format!("status line {status:?}"));
    }
    let mut length = None;
    let mut closing = !keep_alive;
    loop {
        let mut line = String::new();
        if let Err(e) = c.read_line(&mut line) {
            return Ended::Failed(format!("head: {e}"));
        }
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse::<usize>().ok();
            }
            if k.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close") {
                closing = true;
            }
        }
    }
    let Some(length) = length else {
        return Ended::Failed("no content-length".into());
    };
    let mut body = vec![0; length];
    if let Err(e) = c.read_exact(&mut body) {
        return Ended::Failed(format!("body: {e}"));
    }
    if body != PAGE {
        return Ended::Failed("wrong body".into());
    }
    if closing {
        *conn = None;
    }
    Ended::Ok
}

#[test]
fn a_reload_moves_listen_binding_the_new_address_first_and_loses_no_request() {
    let (scratch, ports, listen) = scalable("");
    let f = up(scratch, &ports, listen);
    let old = f.addr();
    let new = SocketAddr::from(([127, 0, 0, 1], ports[8]));
    let before = pids_of(&f.status());
    let old_clients = OldClients::start(old);
    wait_for(Duration::from_secs(20), "load under way", || {
        (old_clients.done() >= 200).then_some(())
    });

    edit(&f, &format!("listen: {old}"), &format!("listen: {new}"));
    let out = ok(&f, &["reload"]);
    assert!(
        out.contains(&format!("reload: listen: {old} -> {new}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("the balancer accepts on {new}")),
        "{out}"
    );
    // Clients of the new address, from the moment the reload returned.
    let load = Load::start(new);
    let (answered, failures) = old_clients.finish();
    assert_no_failures(answered, &failures);
    assert!(
        TcpStream::connect_timeout(&old, Duration::from_secs(2)).is_err(),
        "the old address stopped accepting"
    );
    assert_eq!(f.status_json()["listen"], new.to_string());
    assert_eq!(pids_of(&f.status()), before, "no backend was touched");
    load.wait_under_way();
    load.finish_without_failures(200);

    // The moved address is in force: reloading the same file changes nothing.
    let out = ok(&f, &["reload"]);
    assert!(out.contains("no setting changed"), "{out}");
}

#[test]
fn a_reload_that_moves_base_port_starts_the_new_set_then_switches_and_loses_no_request() {
    let (scratch, ports, listen) = scalable("");
    let f = up(scratch, &ports, listen);
    let before = f.worker_pids();
    let load = Load::under_way(f.addr());

    edit(
        &f,
        &format!("base_port: {}", ports[0]),
        &format!("base_port: {}", ports[4]),
    );
    edit(&f, "backends: 4", "backends: 3");
    let out = ok(&f, &["reload"]);
    assert!(
        out.contains(&format!("reload: base_port: {} -> {}", ports[0], ports[4])),
        "{out}"
    );
    assert!(out.contains("reload: backends: 4 -> 3"), "{out}");
    assert!(out.contains("switched the balancer to"), "{out}");
    let s = f.status();
    assert_eq!(ports_of(&s), ports[4..7], "{s:?}");
    assert!(Fleet::all_healthy(&s), "{s:?}");
    for pid in before {
        wait_for(Duration::from_secs(20), "the old workers gone", || {
            (!alive(pid)).then_some(())
        });
    }
    load.finish_without_failures(300);
    // The new set took the traffic since.
    let s = f.status();
    assert!(sum(&s, |b| b.traffic.requests) > 0, "{s:?}");
}

#[test]
fn a_reload_adds_an_upstream_once_it_passes_and_drains_a_removed_one() {
    let (scratch, ports, listen) = scalable("");
    let www = scratch.path().join("www");
    let a = Worker::start(&www, &[]);
    let b = Worker::start(&www, &[]);
    let (a, b) = (
        format!("127.0.0.1:{}", a.port),
        format!("127.0.0.1:{}", b.port),
    );
    let yaml = std::fs::read_to_string(scratch.path().join("fleet.yaml")).unwrap();
    scratch.write("fleet.yaml", &format!("{yaml}upstreams: [\"{a}\"]\n"));
    let f = up(scratch, &ports, listen);
    let load = Load::under_way(f.addr());

    edit(
        &f,
        &format!("upstreams: [\"{a}\"]"),
        &format!("upstreams: [\"{b}\"]"),
    );
    let out = ok(&f, &["reload"]);
    assert!(
        out.contains(&format!("reload: upstreams: {a} -> {b}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("upstream {b}: passed, in rotation")),
        "{out}"
    );
    assert!(
        out.contains(&format!("upstream {a}: drained and removed")),
        "{out}"
    );
    let s = f.status();
    let addresses: Vec<_> = s
        .backends
        .iter()
        .filter_map(|x| x.address.clone())
        .collect();
    assert_eq!(addresses, std::slice::from_ref(&b), "{s:?}");
    f.wait_status(
        Duration::from_secs(30),
        "the new upstream takes traffic",
        |s| {
            s.backends
                .iter()
                .any(|x| x.address.as_deref() == Some(b.as_str()) && x.traffic.requests > 0)
        },
    );
    load.finish_without_failures(300);
}

#[test]
fn a_reload_to_a_busy_listen_address_or_busy_ports_changes_nothing() {
    let (scratch, ports, listen) = scalable("");
    let f = up(scratch, &ports, listen);
    let good = std::fs::read_to_string(f.scratch.path().join("fleet.yaml")).unwrap();
    let before = pids_of(&f.status());
    let load = Load::under_way(f.addr());
    let held = TcpListener::bind(("127.0.0.1", ports[8])).unwrap();

    // A busy new listen address.
    edit(
        &f,
        &format!("listen: 127.0.0.1:{listen}"),
        &format!("listen: 127.0.0.1:{}", ports[8]),
    );
    let out = f.fleet(&["reload"]);
    assert_exit(&out, 1, &format!("port {} is already in use", ports[8]));
    assert!(text(&out).contains("nothing changed"), "{}", text(&out));
    assert_eq!(f.status_json()["listen"], f.addr().to_string());

    // A moved base_port onto a set with a busy port.
    f.scratch.write(
        "fleet.yaml",
        &good.replace(
            &format!("base_port: {}", ports[0]),
            &format!("base_port: {}", ports[5]),
        ),
    );
    let out = f.fleet(&["reload"]);
    assert_exit(&out, 1, &format!("port {} is already in use", ports[8]));
    assert!(text(&out).contains("nothing changed"), "{}", text(&out));
    // Overlapping the current ports is busy too.
    f.scratch.write(
        "fleet.yaml",
        &good.replace(
            &format!("base_port: {}", ports[0]),
            &format!("base_port: {}", ports[2]),
        ),
    );
    let out = f.fleet(&["reload"]);
    assert_exit(&out, 1, "in use by this fleet's backend");
    drop(held);

    let s = f.status();
    assert_eq!(pids_of(&s), before, "no backend was touched");
    assert_eq!(ports_of(&s), ports[..4]);
    f.scratch.write("fleet.yaml", &good);
    let out = ok(&f, &["reload"]);
    assert!(out.contains("no setting changed"), "{out}");
    load.finish_without_failures(200);
}

#[test]
fn a_moved_base_port_whose_new_set_does_not_pass_keeps_the_old_set_serving() {
    let (scratch, ports, listen) = scalable("");
    let f = up(scratch, &ports, listen);
    let good = std::fs::read_to_string(f.scratch.path().join("fleet.yaml")).unwrap();
    let before = pids_of(&f.status());
    let load = Load::under_way(f.addr());

    // The new set's probe asks for a page that is not there.
    let bad = good
        .replace(
            &format!("base_port: {}", ports[0]),
            &format!("base_port: {}", ports[4]),
        )
        .replace(
            "  interval: 100ms\n  timeout: 100ms\n",
            "  interval: 1s\n  timeout: 1s\n  path: /nope.html\n",
        );
    f.scratch.write("fleet.yaml", &bad);
    let out = f.fleet(&["reload"]);
    assert_exit(&out, 1, "GET /nope.html answered 404");
    assert!(
        text(&out).contains("rolled back: the old backends keep serving, nothing changed"),
        "{}",
        text(&out)
    );
    let s = f.status();
    assert_eq!(ports_of(&s), ports[..4], "{s:?}");
    assert_eq!(pids_of(&s), before, "the old set was not touched");
    for p in &ports[4..8] {
        wait_for(Duration::from_secs(20), "the new set stopped", || {
            (!port_open(*p)).then_some(())
        });
    }
    load.finish_without_failures(200);
    f.scratch.write("fleet.yaml", &good);
    let out = ok(&f, &["reload"]);
    assert!(out.contains("no setting changed"), "{out}");
}
