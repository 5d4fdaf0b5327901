//! The http balancer (the default mode) against the real binary: per-request
//! balancing on kept-alive connections, chaos without failed requests, large
//! bodies both ways in bounded memory, upgrades, its own error answers,
//! HTTP/1.0 on either side, strategies and admission when full.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;

const BACKEND_PY: &str = include_str!("backends/http_backend.py");

/// A fleet of `n` custom Python backends (`backends/http_backend.py`).
fn python_fleet(n: u16, extra: &str) -> Fleet {
    Fleet::python(BACKEND_PY, n, extra)
}

/// Read one response from a kept-alive connection: the head, then a body
/// framed by Content-Length (or, without one, up to the close).
fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<Response> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Err(std::io::Error::other(format!(
                "closed before a whole head ({} bytes)",
                head.len()
            )));
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" {
            break;
        }
    }
    let mut resp = parse(&head).ok_or_else(|| std::io::Error::other("bad head"))?;
    match resp.header("content-length") {
        Some(n) => {
            let mut body = vec![0; n.parse().unwrap()];
            r.read_exact(&mut body)?;
            resp.body = body;
        }
        None => {
            r.read_to_end(&mut resp.body)?;
        }
    }
    Ok(resp)
}

fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    BufReader::new(s)
}

fn send(r: &mut BufReader<TcpStream>, text: &str) {
    r.get_mut().write_all(text.as_bytes()).unwrap();
}

/// The backends that answered 8 requests on one kept-alive connection.
fn backends_on_one_connection(f: &Fleet) -> std::collections::BTreeSet<String> {
    let mut c = connect(f.addr());
    (0..8)
        .map(|_| {
            send(&mut c, "GET /page.html HTTP/1.1\r\nHost: fleet\r\n\r\n");
            let r = read_response(&mut c).unwrap();
            assert_eq!((r.status, &r.body[..]), (200, PAGE));
            r.header("x-fleet-backend").unwrap().to_owned()
        })
        .collect()
}

#[test]
fn http_mode_balances_each_request_of_a_kept_alive_connection_and_tcp_mode_pins_it() {
    let http = Fleet::start(4, "");
    assert_eq!(backends_on_one_connection(&http).len(), 4);
    drop(http);
    let tcp = Fleet::start(4, "balancer:\n  mode: tcp\n");
    assert_eq!(backends_on_one_connection(&tcp).len(), 1);
}

#[test]
fn chaos_in_http_mode_fails_no_request_of_kept_alive_or_one_shot_clients() {
    let f = Fleet::start(4, CHAOS);
    let addr = f.addr();
    // 8 clients on kept-alive connections, 8 one-shot, at least 5,000 requests.
    chaos_under_load(&f, 16, 5000, |i| {
        let keep_alive = i < 8;
        let mut conn: Option<BufReader<TcpStream>> = None;
        move || {
            let result = if keep_alive {
                let c = conn.get_or_insert_with(|| connect(addr));
                send(c, "GET /page.html HTTP/1.1\r\nHost: fleet\r\n\r\n");
                let r = read_response(c);
                // The balancer may close a kept-alive connection after
                // a complete answer (it says so): then reconnect.
                if r.as_ref()
                    .map_or(true, |r| r.header("connection") == Some("close"))
                {
                    conn = None;
                }
                r
            } else {
                get(addr, "/page.html")
            };
            page_ok(result).map_err(|e| format!("keep-alive {keep_alive}: {e}"))
        }
    });
}

/// The supervisor's peak resident memory, from /proc (Linux only).
#[cfg(target_os = "linux")]
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

#[cfg(target_os = "linux")]
#[test]
fn large_bodies_pass_byte_for_byte_both_ways_in_bounded_memory() {
    const MIB: usize = 1 << 20;
    // 100 MB through the built-in worker.
    let scratch = Scratch::new();
    let big: Vec<u8> = (0..100 * MIB).map(|i| (i % 251) as u8).collect();
    std::fs::write(scratch.path().join("www/big.bin"), &big).unwrap();
    let f = Fleet::start_in(scratch, 2, "");
    let mut c = connect(f.addr());
    c.get_mut()
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    send(&mut c, "GET /big.bin HTTP/1.1\r\nHost: fleet\r\n\r\n");
    let r = read_response(&mut c).unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.body == big,
        "the 100 MB file differs ({} bytes)",
        r.body.len()
    );
    drop((r, big));
    let peak = peak_rss_kib(f.supervisor);
    eprintln!("100 MB download: supervisor peak RSS {peak} KiB");
    assert!(peak < 30 * 1024, "supervisor peak RSS {peak} KiB");
    drop(f);

    // 50 MB up and back through a custom echo backend.
    let f = python_fleet(2, "");
    let body: Arc<Vec<u8>> = Arc::new((0..50 * MIB).map(|i| (i % 253) as u8).collect());
    let s = TcpStream::connect(f.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut w = s.try_clone().unwrap();
    let up = {
        let body = body.clone();
        std::thread::spawn(move || {
            write!(
                w,
                "POST /echo HTTP/1.1\r\nHost: fleet\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .unwrap();
            w.write_all(&body).unwrap();
        })
    };
    let r = read_response(&mut BufReader::new(s)).unwrap();
    up.join().unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.body == *body,
        "the 50 MB echo differs ({} bytes)",
        r.body.len()
    );
    let peak = peak_rss_kib(f.supervisor);
    eprintln!("50 MB echo: supervisor peak RSS {peak} KiB");
    assert!(peak < 30 * 1024, "supervisor peak RSS {peak} KiB");
}

#[test]
fn an_upgrade_becomes_a_byte_tunnel_after_101() {
    let f = python_fleet(2, "");
    let mut c = connect(f.addr());
    send(
        &mut c,
        "GET /ws HTTP/1.1\r\nHost: fleet\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    );
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut line = Vec::new();
        c.read_until(b'\n', &mut line).unwrap();
        assert!(!line.is_empty(), "closed after {head:?}");
        head.extend_from_slice(&line);
    }
    let r = parse(&head).unwrap();
    assert_eq!(r.status, 101, "{r:?}");
    assert_eq!(r.header("upgrade"), Some("echo"));
    for msg in ["ping", "a longer message\r\n\r\nwith blank lines", "pong"] {
        c.get_mut().write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0; msg.len()];
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }
}

#[test]
fn a_backend_that_never_answers_gets_the_client_a_504() {
    let f = python_fleet(1, "balancer:\n  response_timeout: 300ms\n");
    let r = get(f.addr(), "/never").unwrap();
    assert_eq!(r.status, 504, "{r:?}");
    assert_eq!(r.body, b"the backend did not answer in time\n");
}

#[test]
fn a_malformed_request_gets_400_without_reaching_a_backend() {
    let f = Fleet::start(1, "");
    for bad in [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ] {
        let mut c = connect(f.addr());
        send(&mut c, bad);
        let r = read_response(&mut c).unwrap();
        assert_eq!(r.status, 400, "{bad:?}: {r:?}");
        assert_eq!(r.header("x-fleet-backend"), None, "a backend saw {bad:?}");
        assert!(r.body.ends_with(b"\n") && r.body.iter().filter(|&&b| b == b'\n').count() == 1);
    }
}

#[test]
fn http10_clients_and_backends_that_close_after_each_response_work() {
    let f = python_fleet(2, "");
    // An HTTP/1.0 client: one request, the answer, the close.
    let mut c = connect(f.addr());
    send(&mut c, "GET / HTTP/1.0\r\n\r\n");
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).unwrap();
    let r = parse(&raw).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with(b"port "), "{r:?}");
    // Backends answering HTTP/1.0 close-delimited, behind one kept-alive client.
    let mut seen = std::collections::BTreeSet::new();
    let mut c = connect(f.addr());
    for _ in 0..4 {
        send(&mut c, "GET /close10 HTTP/1.1\r\nHost: fleet\r\n\r\n");
        let r = read_response(&mut c).unwrap();
        assert_eq!(r.status, 200);
        let port = r.header("x-fleet-backend").unwrap().to_owned();
        assert_eq!(r.body, format!("close-delimited from {port}").as_bytes());
        seen.insert(port);
        // A close-delimited body ends the client connection too.
        c = connect(f.addr());
    }
    assert_eq!(seen.len(), 2);
}

#[test]
fn least_connections_steers_new_requests_away_from_a_slow_backend() {
    let f = python_fleet(4, "balancer:\n  strategy: least-connections\n");
    let slow = f.ports[0];
    f.scratch.write(&format!("slow-{slow}"), "");
    let counts = Arc::new(Mutex::new(
        std::collections::BTreeMap::<String, usize>::new(),
    ));
    let addr = f.addr();
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let counts = counts.clone();
            std::thread::spawn(move || {
                let mut c = connect(addr);
                for _ in 0..15 {
                    send(&mut c, "GET /work HTTP/1.1\r\nHost: fleet\r\n\r\n");
                    let r = read_response(&mut c).unwrap();
                    assert_eq!(r.status, 200);
                    *counts
                        .lock()
                        .unwrap()
                        .entry(r.header("x-fleet-backend").unwrap().to_owned())
                        .or_default() += 1;
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let counts = counts.lock().unwrap();
    let on_slow = counts.get(&slow.to_string()).copied().unwrap_or(0);
    // Round-robin would give it a quarter (22 of 90); least-connections sends
    // it a request only when it has none in flight.
    assert!(
        on_slow <= 9,
        "the slow backend got {on_slow} of 90: {counts:?}"
    );
}

/// How many silent connections to open, and the `max_connections` to set:
/// the real numbers when this process may open enough files.
fn silent_load() -> (usize, u32) {
    let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    if soft >= 10_000 {
        (4200, 4096)
    } else {
        (300, 200)
    }
}

#[test]
fn with_more_silent_connections_than_max_connections_a_new_client_is_served() {
    let (silent, max) = silent_load();
    for mode in ["http", "tcp"] {
        let f = Fleet::start(
            2,
            &format!("balancer:\n  mode: {mode}\n  max_connections: {max}\n"),
        );
        let held: Vec<TcpStream> = (0..silent)
            .map(|_| TcpStream::connect_timeout(&f.addr(), Duration::from_secs(5)).unwrap())
            .collect();
        let t0 = Instant::now();
        let r = get(f.addr(), "/page.html").unwrap();
        let took = t0.elapsed();
        assert_eq!(r.status, 200, "{mode}");
        assert!(took < PROMPT, "{mode}: served after {took:?}");
        drop(held);
    }
}

#[test]
fn a_client_that_sends_nothing_is_cut_after_the_header_timeout() {
    let f = Fleet::start(1, "");
    let mut s = TcpStream::connect(f.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 16];
    // Closed by the balancer (0 bytes), not by our own read timeout.
    assert_eq!(s.read(&mut buf).unwrap(), 0);
    assert!(
        t0.elapsed() >= Duration::from_secs(9),
        "cut after {:?}",
        t0.elapsed()
    );
}

#[test]
fn down_closes_idle_kept_alive_clients_at_once() {
    let f = Fleet::start(2, "shutdown:\n  timeout: 20s\n");
    let mut c = connect(f.addr());
    send(&mut c, "GET /page.html HTTP/1.1\r\nHost: fleet\r\n\r\n");
    assert_eq!(read_response(&mut c).unwrap().status, 200);
    // The connection is now idle (kept alive, no request in flight): `down`
    // must not wait for it, though the grace is 20 s and idle_timeout 60 s.
    let t0 = Instant::now();
    let out = f.fleet(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "down waited {:?} for an idle client",
        t0.elapsed()
    );
    let mut rest = Vec::new();
    assert_eq!(
        c.read_to_end(&mut rest).unwrap(),
        0,
        "closed without a byte"
    );
}
