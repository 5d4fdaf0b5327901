//! `fleet serve` driven as a real process over raw TCP: raw, so that no HTTP
//! client library normalises the hostile request targets before they leave.
//! Workers are the harness's `Worker`, killed in its `Drop`, panic or not.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::{PROMPT, Response, Worker, free_ports, port_open, read_to_close, wait_for};

/// Placed next to (never under) the www root; no response may contain it.
const SECRET: &str = "SECRET-7f3a9c-must-never-be-served";
const PAGE: &str = "<!doctype html><title>t</title><p>the page</p>\n";

/// A www root in a temp dir, with a secret file outside it and traps inside.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::Builder::new().prefix("fw").tempdir().unwrap();
        let www = dir.path().join("www");
        fs::create_dir_all(www.join("sub")).unwrap();
        fs::create_dir_all(www.join("noindex")).unwrap();
        fs::create_dir_all(www.join(".git")).unwrap();
        fs::write(dir.path().join("secret.txt"), SECRET).unwrap();
        fs::write(www.join("page.html"), PAGE).unwrap();
        fs::write(www.join("index.html"), "<p>root index</p>").unwrap();
        fs::write(www.join("sub/index.html"), "<p>sub index</p>").unwrap();
        fs::write(www.join("style.css"), "p { color: red }").unwrap();
        fs::write(www.join("notes.txt"), "plain text").unwrap();
        fs::write(www.join("img.png"), b"\x89PNG\r\n\x1a\n").unwrap();
        fs::write(www.join(".env"), SECRET).unwrap();
        fs::write(www.join(".git/config"), SECRET).unwrap();
        fs::write(www.join("sub/.hidden"), SECRET).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), www.join("leak.txt")).unwrap();
        std::os::unix::fs::symlink("../secret.txt", www.join("rel-leak.txt")).unwrap();
        std::os::unix::fs::symlink(dir.path(), www.join("up")).unwrap();
        std::os::unix::fs::symlink(".env", www.join("env.txt")).unwrap();
        Site { dir }
    }

    fn www(&self) -> PathBuf {
        self.dir.path().join("www")
    }
}

#[test]
fn get_serves_exact_bytes_with_type_length_and_backend_header() {
    let site = Site::new();
    let w = Worker::start(&site.www(), &[]);
    let r = w.get("/page.html");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, PAGE.as_bytes());
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("content-length"), Some(&*PAGE.len().to_string()));
    assert_eq!(r.header("x-fleet-backend"), Some(&*w.port.to_string()));
}

#[test]
fn head_sends_the_headers_of_get_and_no_body() {
    let site = Site::new();
    let w = Worker::start(&site.www(), &[]);
    let r = Response::from_raw(
        &w.exchange(b"HEAD /page.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty(), "HEAD sent a body: {:?}", r.body);
    assert_eq!(r.header("content-length"), Some(&*PAGE.len().to_string()));
    assert_eq!(r.header("x-fleet-backend"), Some(&*w.port.to_string()));
}

#[test]
fn missing_file_is_404_with_backend_header() {
    let site = Site::new();
    let w = Worker::start(&site.www(), &[]);
    let r = w.get("/nope.html");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-fleet-backend"), Some(&*w.port.to_string()));
}

#[test]
fn other_methods_get_405_with_allow_header() {
    let site = Site::new();
    let w = Worker::start(&site.www(), &[]);
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW"] {
        let r = Response::from_raw(&w.exchange(
            format!("{method} /page.html HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        ));
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method}");
        assert_eq!(r.header("x-fleet-backend"), Some(&*w.port.to_string()));
    }
}

#[test]
fn directory_serves_index_and_redirects_without_slash() {
    let site = Site::new();
    let w = Worker::start(&site.www(), &[]);
    let root = w.get("/");
    assert_eq!(
        (root.status, &root.body[..]),
        (200, &b"<p>root index</p>"[..])
    );
    let sub = w.get("/sub/");
    assert_eq!((sub.status, &sub.body[..]), (200, &b"<p>sub index</p>"[..]));
    let redirect = w.get("/sub");
    assert_eq!(redirect.status, 301);
    assert_eq!(redirect.header("location"), Some("/sub/"));
    assert_eq!(w.get("/noindex/").status, 404);
}

#[test]
fn content_type_follows_the_extension() {
    let site = Site::new();
    let w = Worker::start(&site.www(), &[]);
    for (path, ty) in [
        ("/style.css", "text/css; charset=utf-8"),
        ("/notes.txt", "text/plain; charset=utf-8"),
        ("/img.png", "image/png"),
    ] {
        let r = w.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(ty), "{path}");
    }
}

#[test]
fn query_string_is_ignored() {
    let site = Site::new();
    let w = Worker::start(&site.www(), &[]);
    let r = w.get("/page.html?x=../../secret.txt&y=%2e%2e");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, PAGE.as_bytes());
}

#[test]
fn keep_alive_serves_two_requests_on_one_connection() {
    let site = Site::new();
    let w = Worker::start(&site.www(), &[]);
    let mut s = w.connect();
    for _ in 0..2 {
        s.write_all(b"GET /page.html HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let r = Response::read_one(&mut s);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, PAGE.as_bytes());
    }
}

#[test]
fn shipped_www_pages_are_served_byte_for_byte() {
    let www = Path::new(env!("CARGO_MANIFEST_DIR")).join("www");
    let w = Worker::start(&www, &[]);
    for (target, file) in [("/page.html", "page.html"), ("/", "index.html")] {
        let r = w.get(target);
        assert_eq!(r.status, 200, "{target}");
        assert_eq!(r.body, fs::read(www.join(file)).unwrap(), "{target}");
        let text = String::from_utf8(r.body).unwrap();
        assert!(text.contains("X-Fleet-Backend") && text.contains("<noscript>"));
    }
}

/// Hostile request targets, sent byte for byte. Each must be refused with
/// 400, 403 or 404, and no response may contain a byte of the secret.
const TRAVERSALS: &[&str] = &[
    "/../secret.txt",
    "/../../../../../../etc/passwd",
    "/..%2fsecret.txt",
    "/..%2Fsecret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/%2e%2e%2fsecret.txt",
    "/.%2e/secret.txt",
    "/%2e./secret.txt",
    "/sub/../../secret.txt",
    "/sub/..%2f..%2fsecret.txt",
    "/./../secret.txt",
    "//../secret.txt",
    "/..\\secret.txt",
    "/\\..\\secret.txt",
    "/..%5csecret.txt",
    "/%5c..%5csecret.txt",
    "/%c0%ae%c0%ae/secret.txt",
    "/%c0%ae%c0%ae%c0%afsecret.txt",
    "/..%c0%afsecret.txt",
    "/%e0%80%ae%e0%80%ae/secret.txt",
    "/%252e%252e/secret.txt",
    "/%252e%252e%252fsecret.txt",
    "/..%u2216secret.txt",
    "/page.html%00/../../secret.txt",
    "/%00../secret.txt",
    "/..;/secret.txt",
    "/%ff%fe/../secret.txt",
    "http://localhost/../secret.txt",
    "http://localhost/secret.txt",
    "secret.txt",
    "../secret.txt",
    "/leak.txt",
    "/rel-leak.txt",
    "/up/secret.txt",
    "/up/www/../secret.txt",
    "/env.txt",
    "/.env",
    "/%2eenv",
    "/.git/config",
    "/sub/.hidden",
    "/sub/%2ehidden",
];

#[test]
fn traversal_variants_never_leak_the_secret() {
    let site = Site::new();
    let w = Worker::start(&site.www(), &[]);
    // The secret's absolute path, asked for as if the root were `/`.
    let absolute = format!("{}", site.dir.path().join("secret.txt").display());
    let mut targets: Vec<&str> = TRAVERSALS.to_vec();
    targets.push(&absolute);
    for target in targets {
        let raw = w.exchange(
            format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        let text = String::from_utf8_lossy(&raw);
        assert!(!text.contains("SECRET"), "{target:?} leaked: {text}");
        let r = Response::from_raw(&raw);
        assert!(
            matches!(r.status, 400 | 403 | 404),
            "{target:?} answered {}",
            r.status
        );
    }
    // Raw bytes that are not even valid in a request line.
    for raw in [
        &b"GET /\x00../secret.txt HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &b"GET /\xc0\xae\xc0\xae/secret.txt HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &b"GET /..\xff/secret.txt HTTP/1.1\r\nHost: x\r\n\r\n"[..],
    ] {
        let resp = w.exchange(raw);
        let text = String::from_utf8_lossy(&resp);
        assert!(!text.contains("SECRET"), "{raw:?} leaked: {text}");
        assert!(text.starts_with("HTTP/1.1 400"), "{raw:?} answered {text}");
    }
    // The worker is still healthy afterwards.
    assert_eq!(w.get("/page.html").status, 200);
}

#[test]
fn symlink_inside_root_to_a_file_is_served_but_out_of_root_is_404() {
    let site = Site::new();
    std::os::unix::fs::symlink("page.html", site.www().join("alias.html")).unwrap();
    let w = Worker::start(&site.www(), &[]);
    assert_eq!(w.get("/alias.html").body, PAGE.as_bytes());
    for target in ["/leak.txt", "/rel-leak.txt", "/up/secret.txt"] {
        let r = w.get(target);
        assert_eq!(r.status, 404, "{target}");
        assert!(!String::from_utf8_lossy(&r.body).contains("SECRET"));
    }
}

#[test]
fn dotfiles_are_404() {
    let site = Site::new();
    let w = Worker::start(&site.www(), &[]);
    for target in [
        "/.env",
        "/.git/config",
        "/.git/",
        "/sub/.hidden",
        "/env.txt",
    ] {
        assert_eq!(w.get(target).status, 404, "{target}");
    }
}

#[test]
fn oversized_head_gets_431_and_the_connection_is_closed() {
    let site = Site::new();
    let w = Worker::start(&site.www(), &[]);
    // Just under the 16 KiB default: served.
    let ok = format!(
        "GET /page.html HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(12 * 1024)
    );
    assert_eq!(Response::from_raw(&w.exchange(ok.as_bytes())).status, 200);
    // Over it, still sending: refused, and the worker hangs up.
    let mut s = w.connect();
    s.write_all(b"GET /page.html HTTP/1.1\r\nHost: x\r\nX-Pad: ")
        .unwrap();
    let pad = vec![b'a'; 1024];
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while sent < 64 * 1024 && s.write_all(&pad).is_ok() {
        sent += pad.len();
        assert!(Instant::now() < deadline);
    }
    let _ = s.shutdown(Shutdown::Write);
    let raw = read_to_close(&mut s);
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("HTTP/1.1 431"),
        "expected 431, got {text:?} after sending {sent} bytes"
    );
}

#[test]
fn slow_header_client_is_cut_off_while_others_are_served() {
    let site = Site::new();
    let w = Worker::start(&site.www(), &["--header-timeout", "1s"]);
    let mut slow = w.connect();
    slow.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /page.html HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut served = 0;
    let closed_after = loop {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "slow client still connected after 5 s"
        );
        // One header byte per round, paced by the read timeout.
        if slow.write_all(b"X").is_err() {
            break started.elapsed();
        }
        let mut b = [0u8; 256];
        match slow.read(&mut b) {
            Ok(0) => break started.elapsed(),
            Ok(_) => {} // an error response before the close is fine
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break started.elapsed(),
        }
        // Meanwhile a normal client is served.
        assert_eq!(w.get("/page.html").status, 200);
        served += 1;
    };
    assert!(
        closed_after >= Duration::from_millis(900),
        "cut off too early: {closed_after:?}"
    );
    assert!(served >= 3, "only {served} requests served meanwhile");
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let site = Site::new();
    let mut w = Worker::start(&site.www(), &[]);
    let mut in_flight = w.connect();
    in_flight
        .write_all(b"GET /page.html HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Accept order is FIFO: once this later connection is answered, the
    // worker has accepted and started reading the one in flight.
    assert_eq!(w.get("/page.html").status, 200);

    w.signal(Signal::SIGTERM);
    wait_for(
        Duration::from_secs(5),
        "the worker to stop accepting",
        || (!port_open(w.port)).then_some(()),
    );

    in_flight.write_all(b"\r\n").unwrap();
    let r = Response::from_raw(&read_to_close(&mut in_flight));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, PAGE.as_bytes());
    let status = w
        .wait_exit(Duration::from_secs(5))
        .expect("exits after draining");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(w.log().contains("SIGTERM"));
}

#[test]
fn sigterm_with_idle_connections_exits_0_promptly() {
    let site = Site::new();
    // A drain timeout well past PROMPT, so exiting within it means not waiting.
    let mut w = Worker::start(&site.www(), &["--drain-timeout", "30s"]);
    // One kept-alive connection after a request, one that never sent a byte.
    let mut kept = w.connect();
    kept.write_all(b"GET /page.html HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    Response::read_one(&mut kept);
    let _silent = w.connect();
    let started = Instant::now();
    w.signal(Signal::SIGTERM);
    let status = w
        .wait_exit(PROMPT)
        .expect("exits without waiting for the drain timeout");
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < PROMPT, "{:?}", started.elapsed());
}

#[test]
fn lifeline_eof_on_stdin_exits_promptly() {
    let site = Site::new();
    let mut w = Worker::spawn(
        &site.www(),
        &["--lifeline", "--drain-timeout", "30s"],
        Stdio::piped(),
    );
    assert_eq!(w.get("/page.html").status, 200);
    let _kept = w.connect();
    let started = Instant::now();
    drop(w.child().stdin.take());
    let status = w
        .wait_exit(PROMPT)
        .expect("exits once it lost its supervisor");
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < PROMPT, "{:?}", started.elapsed());
}

#[test]
fn busy_port_exits_1_naming_the_port() {
    let site = Site::new();
    let port = free_ports(1)[0];
    let _taken = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let mut w = Worker::spawn_unchecked(&site.www(), port, &[], Stdio::null());
    let status = w.wait_exit(Duration::from_secs(5)).expect("exits");
    assert_eq!(status.code(), Some(1));
    assert!(
        w.log().contains(&format!("port {port} is already in use")),
        "{}",
        w.log()
    );
}

#[test]
fn missing_www_exits_2_naming_the_directory() {
    let site = Site::new();
    let missing = site.dir.path().join("nope");
    let mut w = Worker::spawn_unchecked(&missing, free_ports(1)[0], &[], Stdio::null());
    let status = w.wait_exit(Duration::from_secs(5)).expect("exits");
    assert_eq!(status.code(), Some(2));
    assert!(
        w.log().contains(&format!(
            "www directory {} does not exist",
            missing.display()
        )),
        "{}",
        w.log()
    );
}

#[test]
fn bad_limit_flag_is_a_usage_error() {
    let site = Site::new();
    let mut w = Worker::spawn_unchecked(
        &site.www(),
        free_ports(1)[0],
        &["--max-head-bytes", "100"],
        Stdio::null(),
    );
    let status = w.wait_exit(Duration::from_secs(5)).expect("exits");
    assert_eq!(status.code(), Some(2));
    assert!(w.log().contains("--max-head-bytes"), "{}", w.log());
}

#[test]
fn access_log_prints_one_line_per_request() {
    let site = Site::new();
    let w = Worker::start(&site.www(), &["--access-log"]);
    assert_eq!(w.get("/page.html?q=1").status, 200);
    assert_eq!(w.get("/nope").status, 404);
    wait_for(Duration::from_secs(5), "both access log lines", || {
        let log = w.log();
        (log.contains("GET /page.html?q=1 200") && log.contains("GET /nope 404")).then_some(())
    });
}

#[test]
fn no_request_lines_without_access_log() {
    let site = Site::new();
    let mut w = Worker::start(&site.www(), &[]);
    assert_eq!(w.get("/page.html").status, 200);
    w.signal(Signal::SIGTERM);
    w.wait_exit(Duration::from_secs(5)).expect("exits");
    let log = w.log();
    assert!(log.contains("listening on 127.0.0.1:"), "{log}");
    assert!(!log.contains("/page.html"), "{log}");
}

#[test]
fn multi_thread_runtime_serves_too() {
    let site = Site::new();
    let w = Worker::start(&site.www(), &["--threads", "2"]);
    let r = w.get("/page.html");
    assert_eq!((r.status, &r.body[..]), (200, PAGE.as_bytes()));
}

#[test]
fn sigint_exits_0_like_sigterm() {
    let site = Site::new();
    let mut w = Worker::start(&site.www(), &[]);
    w.signal(Signal::SIGINT);
    let status = w.wait_exit(Duration::from_secs(3)).expect("exits");
    assert_eq!(status.code(), Some(0));
    assert!(w.log().contains("SIGINT"), "{}", w.log());
}

#[test]
fn sigterm_exit_is_bounded_by_the_drain_timeout() {
    let site = Site::new();
    let mut w = Worker::start(&site.www(), &["--drain-timeout", "500ms"]);
    // A request that never completes: half a head, then silence.
    let mut stuck = w.connect();
    stuck
        .write_all(b"GET /page.html HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert_eq!(w.get("/page.html").status, 200); // `stuck` is accepted (FIFO)
    let started = Instant::now();
    w.signal(Signal::SIGTERM);
    let status = w
        .wait_exit(Duration::from_secs(5))
        .expect("exits once the drain timeout passes");
    assert_eq!(status.code(), Some(0));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < PROMPT,
        "exited after {took:?}"
    );
    assert!(w.log().contains("still open"), "{}", w.log());
}

/// One connection, pipelined: a request with a body (skipped), a HEAD and
/// a GET answered in order; then the codec's refusals, which the balancer
/// shares, each with the backend header and a close.
#[test]
fn pipelined_requests_bodies_and_refusals_on_the_shared_codec() {
    let site = Site::new();
    let w = Worker::start(&site.www(), &[]);
    let mut s = w.connect();
    s.write_all(
        b"POST /page.html HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
          HEAD /page.html HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /page.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let text = String::from_utf8_lossy(&read_to_close(&mut s)).into_owned();
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["405", "200", "200"], "{text}");
    assert!(text.ends_with(PAGE), "{text}");

    let backend = format!("\r\nX-Fleet-Backend: {}\r\n", w.port);
    for (req, status) in [
        (&b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"[..], 400),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
    ] {
        let raw = w.exchange(req);
        let r = Response::from_raw(&raw);
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(req));
        assert!(String::from_utf8_lossy(&raw).contains(&backend));
        assert_eq!(r.header("connection"), Some("close"));
    }
}
