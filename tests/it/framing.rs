//! What the http balancer refuses (RFC 9112) and what it rewrites, seen from
//! both ends: raw bytes from a client, through the real `fleet`, to a small
//! backend that records every request head it receives. A refused request
//! gets its status and reaches no backend; a rewritten one arrives rewritten.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::{Fleet, Response, Scratch, free_ports, parse, read_to_close, text};

/// The body `/te-and-1xx` sends, chunked, after a `103`.
const CHUNKED_BODY: &[u8] = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nX-T: 1\r\n\r\n";

/// A backend on a free loopback port that records each request head it
/// receives and answers `200 ok` (kept alive); for `/te-and-1xx` it sends a
/// `103 Early Hints` first and a chunked body. Stopped on drop.
struct Recorder {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (heads.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let h = h.clone();
                std::thread::spawn(move || Self::serve(conn, &h));
            }
        });
        Recorder { port, heads, stop }
    }

    /// One backend connection: heads in, answers out, until it closes.
    fn serve(mut conn: TcpStream, heads: &Mutex<Vec<String>>) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut more = |conn: &mut TcpStream, buf: &mut Vec<u8>| match conn.read(&mut chunk) {
            Ok(n) if n > 0 => {
                buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        };
        loop {
            let end = loop {
                if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break p + 4;
                }
                if !more(&mut conn, &mut buf) {
                    return;
                }
            };
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end);
            let lower = head.to_ascii_lowercase();
            // The body, so that the next head starts where it should.
            if let Some(n) = lower
                .split("\r\n")
                .find_map(|l| l.strip_prefix("content-length: "))
            {
                let n: usize = n.parse().unwrap();
                while buf.len() < n {
                    if !more(&mut conn, &mut buf) {
                        return;
                    }
                }
                buf.drain(..n);
            } else if lower.contains("\r\ntransfer-encoding: chunked\r\n") {
                let end = loop {
                    if let Some(p) = buf.windows(5).position(|w| w == b"0\r\n\r\n") {
                        break p + 5;
                    }
                    if !more(&mut conn, &mut buf) {
                        return;
                    }
                };
                buf.drain(..end);
            }
            let path = head.split(' ').nth(1).unwrap_or("").to_owned();
            heads.lock().unwrap().push(head);
            let answer = if path == "/te-and-1xx" {
                [
                    &b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"[..],
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n",
                    CHUNKED_BODY,
                ]
                .concat()
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
            };
            if conn.write_all(&answer).is_err() {
                return;
            }
        }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    /// The one request head the recorder has seen: the test sent one.
    #[track_caller]
    fn only_head(&self) -> String {
        let heads = self.heads();
        assert_eq!(heads.len(), 1, "{heads:#?}");
        heads[0].clone()
    }

    /// A fleet whose only backend is this recorder (an upstream, TCP probes,
    /// which send no request).
    fn behind_fleet(&self) -> Fleet {
        let listen = free_ports(1)[0];
        let s = Scratch::new();
        s.write(
            "fleet.yaml",
            &format!(
                "backends: 0\nlisten: {listen}\nhealth:\n  kind: tcp\n  interval: 100ms\n  \
                 timeout: 100ms\nupstreams: [\"127.0.0.1:{}\"]\n",
                self.port
            ),
        );
        let out = s.fleet(&["up", "-d"]);
        let f = Fleet::adopt(s, Vec::new(), listen);
        assert!(out.status.success(), "{}", text(&out));
        f.wait_status(
            Duration::from_secs(20),
            "the recorder healthy",
            Fleet::all_healthy,
        );
        f
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Send `raw` on a new connection, half-close, and read to the close.
fn exchange_raw(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(raw).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    read_to_close(&mut s)
}

fn exchange(addr: SocketAddr, raw: &str) -> Response {
    let got = exchange_raw(addr, raw.as_bytes());
    parse(&got).unwrap_or_else(|| {
        panic!(
            "{raw:?}: not a response: {:?}",
            String::from_utf8_lossy(&got)
        )
    })
}

/// Each of `cases` gets `status` and reaches no backend: afterwards the
/// recorder has seen one request only, a valid one sent last.
fn refused(cases: &[(&str, u16)]) {
    let rec = Recorder::start();
    let f = rec.behind_fleet();
    for &(raw, status) in cases {
        let r = exchange(f.addr(), raw);
        assert_eq!(r.status, status, "{raw:?}: {r:?}");
        assert_eq!(r.header("connection"), Some("close"), "{raw:?}");
    }
    let r = exchange(
        f.addr(),
        "GET /marker HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
    let heads = rec.heads();
    assert!(
        heads.len() == 1 && heads[0].starts_with("GET /marker "),
        "a refused request reached the backend: {heads:#?}"
    );
}

#[test]
fn transfer_encoding_other_than_one_chunked_is_refused_and_not_forwarded() {
    let post =
        |te: &str| format!("POST /te HTTP/1.1\r\nHost: h\r\n{te}\r\n5\r\nhello\r\n0\r\n\r\n");
    refused(&[
        (&post("Transfer-Encoding: chunked, chunked\r\n"), 400),
        (
            &post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
            400,
        ),
        (&post("Transfer-Encoding: identity, chunked\r\n"), 501),
        (&post("Transfer-Encoding: gzip, chunked\r\n"), 501),
        (&post("Transfer-Encoding: chunked, gzip\r\n"), 400),
    ]);
}

#[test]
fn chunk_lines_outside_the_grammar_are_refused_and_not_forwarded() {
    let post = |body: &str| {
        format!("POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
    };
    refused(&[
        (&post("5 junk\r\nhello\r\n0\r\n\r\n"), 400),
        (&post("5;\r\nhello\r\n0\r\n\r\n"), 400),
        (&post("5;a=b c\r\nhello\r\n0\r\n\r\n"), 400),
        (&post("5\r\nhello\r\n0\r\nno colon here\r\n\r\n"), 400),
    ]);
}

#[test]
fn invalid_host_values_are_refused_and_not_forwarded() {
    refused(&[
        ("GET / HTTP/1.1\r\nHost: a b c\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: user@h\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: h:port\r\n\r\n", 400),
        ("GET / HTTP/1.0\r\nHost: a b c\r\n\r\n", 400),
    ]);
}

#[test]
fn connect_and_targets_fleet_cannot_proxy_are_refused_and_not_forwarded() {
    refused(&[
        ("CONNECT other:443 HTTP/1.1\r\nHost: other:443\r\n\r\n", 501),
        ("GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET relative HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET http://user@other/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET ftp://other/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ]);
}

#[test]
fn an_absolute_form_target_reaches_the_backend_in_origin_form_with_its_host() {
    let rec = Recorder::start();
    let f = rec.behind_fleet();
    let r = exchange(
        f.addr(),
        "GET http://other:81/x?y=1 HTTP/1.1\r\nHost: good\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let head = rec.only_head();
    assert!(head.starts_with("GET /x?y=1 HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nHost: other:81\r\n"), "{head}");
    assert!(
        head.contains("\r\nX-Forwarded-Host: other:81\r\n"),
        "{head}"
    );
    assert!(!head.contains("good"), "{head}");
}

#[test]
fn an_http10_client_gets_no_chunked_coding_and_no_interim_response() {
    let rec = Recorder::start();
    let f = rec.behind_fleet();
    // The backend does send both: an HTTP/1.1 client sees them.
    let raw = exchange_raw(
        f.addr(),
        b"GET /te-and-1xx HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    );
    let got = String::from_utf8_lossy(&raw);
    assert!(
        got.starts_with("HTTP/1.1 103 Early Hints\r\n")
            && got.contains("\r\nTransfer-Encoding: chunked\r\n")
            && raw.ends_with(CHUNKED_BODY),
        "{got}"
    );
    // An HTTP/1.0 client: the final response only, de-chunked, ended by the close.
    for ask in ["", "Connection: keep-alive\r\n"] {
        let raw = exchange_raw(
            f.addr(),
            format!("GET /te-and-1xx HTTP/1.0\r\n{ask}\r\n").as_bytes(),
        );
        let r = parse(&raw).unwrap();
        assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&raw));
        assert_eq!(r.header("transfer-encoding"), None, "{r:?}");
        assert_eq!(r.header("trailer"), None, "{r:?}");
        assert_eq!(r.header("connection"), Some("close"), "{r:?}");
        assert_eq!(r.body, b"hello world", "{r:?}");
    }
    // The backend connection stayed in step: the next request is answered.
    let r = exchange(f.addr(), "GET /after HTTP/1.0\r\n\r\n");
    assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
}

#[test]
fn every_connection_token_is_honoured_however_many() {
    let rec = Recorder::start();
    let f = rec.behind_fleet();
    let names: Vec<String> = (1..=12).map(|i| format!("X-Hop-{i}")).collect();
    let mut raw = format!(
        "GET /tokens HTTP/1.1\r\nHost: h\r\nConnection: {}\r\n",
        names.join(", ")
    );
    for n in &names {
        raw.push_str(&format!("{n}: secret\r\n"));
    }
    raw.push_str("X-End-To-End: kept\r\n\r\n");
    let mut s = TcpStream::connect(f.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let r = Response::read_one(&mut s);
    assert_eq!(r.status, 200, "{r:?}");
    let head = rec.only_head();
    assert!(!head.contains("secret"), "{head}");
    assert!(head.contains("\r\nX-End-To-End: kept\r\n"));
    // `close` as the 13th token is honoured too.
    s.write_all(
        format!(
            "GET /close HTTP/1.1\r\nHost: h\r\nConnection: {}, close\r\n\r\n",
            names.join(", ")
        )
        .as_bytes(),
    )
    .unwrap();
    let r = Response::read_one(&mut s);
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    assert_eq!(s.read(&mut [0u8; 1]).unwrap(), 0, "closed after the answer");
}

#[test]
fn client_identity_headers_and_underscore_names_do_not_reach_the_backend() {
    let rec = Recorder::start();
    let f = rec.behind_fleet();
    let r = exchange(
        f.addr(),
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\nForwarded: for=6.6.6.6\r\n\
         X-Real-IP: 6.6.6.6\r\nX_Forwarded_For: 6.6.6.6\r\nX-Forwarded-For: 1.1.1.1\r\n\
         My_Header: 1\r\nMy-Header: 2\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let head = rec.only_head();
    assert!(!head.contains("6.6.6.6") && !head.contains('_'), "{head}");
    assert!(
        head.contains("\r\nX-Forwarded-For: 1.1.1.1, 127.0.0.1\r\n")
            && head.contains("\r\nMy-Header: 2\r\n"),
        "{head}"
    );
}
