//! Failure containment in the http balancer against a deliberately broken
//! backend (`backends/misbehaving.py`): a request that backends close on
//! costs its sender a 502 and nobody else anything, and bytes a backend
//! writes outside a response reach no other client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::*;

const MISBEHAVING_PY: &str = include_str!("backends/misbehaving.py");

/// A fleet of `n` misbehaving backends (`extra` appended to fleet.yaml),
/// and the directory they note their stray writes in.
fn misbehaving_fleet(n: u16, extra: &str) -> (Fleet, PathBuf) {
    let fleet = Fleet::python(MISBEHAVING_PY, n, extra);
    let dir = fleet.scratch.path().to_path_buf();
    (fleet, dir)
}

/// One request on its own connection; everything the balancer sent back.
fn exchange(addr: SocketAddr, request: &str) -> Vec<u8> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    read_to_close(&mut s)
}

#[test]
fn a_request_that_backends_close_on_gets_502_and_costs_other_clients_nothing() {
    // Probes at the default pace: a backend taken out stays out a while.
    let (f, _dir) = misbehaving_fleet(4, "health:\n  interval: 1s\n  timeout: 500ms\n");
    let addr = f.addr();
    let crashing = Arc::new(AtomicBool::new(true));
    let sent = Arc::new(AtomicUsize::new(0));
    // Four normal clients, one request per connection, until the crashes are
    // over and at least 100 went out.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (crashing, sent) = (crashing.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(60);
                while (crashing.load(Ordering::SeqCst) || sent.load(Ordering::SeqCst) < 100)
                    && Instant::now() < deadline
                {
                    sent.fetch_add(1, Ordering::SeqCst);
                    match get(addr, "/") {
                        Ok(r) if r.status == 200 && r.body.starts_with(b"port ") => {}
                        Ok(r) => failures.push(format!(
                            "{} {:?}",
                            r.status,
                            String::from_utf8_lossy(&r.body)
                        )),
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                failures
            })
        })
        .collect();
    // The crashing request, 5 times a second for 3 seconds.
    let mut answers = Vec::new();
    let start = Instant::now();
    for i in 0..15u32 {
        let due = start + Duration::from_millis(200) * i;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let raw = exchange(addr, "GET /crash HTTP/1.1\r\nHost: fleet\r\n\r\n");
        answers.push(parse(&raw).map(|r| r.status));
    }
    crashing.store(false, Ordering::SeqCst);
    let failures: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let total = sent.load(Ordering::SeqCst);
    assert!(total >= 100, "only {total} normal requests went out");
    assert_no_failures(total, &failures);
    assert!(
        answers.iter().all(|a| *a == Some(502)),
        "the crashing request must get 502 each time: {answers:?}"
    );
    assert!(
        !f.log().contains("taking it out of rotation"),
        "no backend may leave rotation for one bad request:\n{}",
        f.log()
    );
    assert!(Fleet::all_healthy(&f.status()));
}

/// How many stray writes the backends made so far.
fn strays(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("strays"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// `trigger` gets an answer after which the backend writes a whole extra
/// response 150 ms later. The first time, the balancer finds those bytes on
/// the idle connection; the second time, other clients' requests follow at
/// once, and none may receive them.
fn stray_bytes_reach_no_other_client(trigger: &str, expect: &[u8]) {
    let (f, dir) = misbehaving_fleet(1, "");
    let addr = f.addr();
    let first = exchange(addr, trigger);
    assert!(
        first.starts_with(expect),
        "{:?}",
        String::from_utf8_lossy(&first)
    );
    wait_for(Duration::from_secs(10), "the first stray write", || {
        (strays(&dir) >= 1).then_some(())
    });
    // The balancer finds the stray bytes on the pooled connection: when a
    // request of the engine thread that pooled it takes it, or at that
    // thread's sweep (each thread has its own pool). Every request meanwhile
    // gets its own answer.
    wait_for(Duration::from_secs(10), "the stray bytes seen", || {
        let r = get(addr, "/").unwrap();
        assert_eq!(r.body, format!("port {}", f.ports[0]).as_bytes());
        f.log()
            .contains("backend sent bytes outside a response")
            .then_some(())
    });

    let again = exchange(addr, trigger);
    assert!(
        again.starts_with(expect),
        "{:?}",
        String::from_utf8_lossy(&again)
    );
    let mut carried = Vec::new();
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    // At least 40, and on until the second stray write is done (and a few after).
    let mut after_stray = 0;
    while (sent < 40 || after_stray < 5) && Instant::now() < deadline {
        let done = strays(&dir) >= 2;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: fleet\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        if raw.windows(5).any(|w| w == b"STRAY") {
            carried.push(String::from_utf8_lossy(&raw).into_owned());
        }
        sent += 1;
        after_stray += usize::from(done);
    }
    assert!(sent >= 40, "only {sent} requests in time");
    assert!(
        carried.is_empty(),
        "{} of {sent} later requests carried the stray bytes: {carried:?}",
        carried.len()
    );
    assert!(
        f.log().contains("backend sent bytes outside a response"),
        "{}",
        f.log()
    );
}

#[test]
fn stray_bytes_after_a_head_answer_reach_no_other_client() {
    stray_bytes_reach_no_other_client(
        "HEAD /stray HTTP/1.1\r\nHost: fleet\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 200",
    );
}

#[test]
fn stray_bytes_after_a_204_reach_no_other_client() {
    stray_bytes_reach_no_other_client(
        "GET /stray-204 HTTP/1.1\r\nHost: fleet\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 204",
    );
}

#[test]
fn stray_bytes_after_a_content_length_answer_reach_no_other_client() {
    stray_bytes_reach_no_other_client(
        "GET /stray-cl HTTP/1.1\r\nHost: fleet\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 200",
    );
}
