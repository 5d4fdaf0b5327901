//! In-process tests of `serve`: bind port 0, drive it over loopback, cancel
//! it. The process-level behaviour (flags, signals, exit codes) is tested
//! against the real binary in `tests/it/worker.rs`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use clap::Parser;

use super::{ServeArgs, WorkerOptions, serve};
use crate::cli::{Cli, Command};

struct Server {
    port: u16,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(tune: impl FnOnce(&mut WorkerOptions)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("page.html"), "<p>hello</p>").unwrap();
        let mut opts = WorkerOptions::new(dir.path());
        tune(&mut opts);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, opts, shutdown.clone()));
        Server {
            port,
            shutdown,
            task,
            _dir: dir,
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(("127.0.0.1", self.port)).await.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.task.abort();
    }
}

const GET_PAGE: &[u8] = b"GET /page.html HTTP/1.1\r\nHost: t\r\n\r\n";

/// Read one response with a `Content-Length` body; returns the head and body.
async fn read_response(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buf[..end].to_vec()).unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            let body_start = end + 4;
            while buf.len() < body_start + len {
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            return (head, buf[body_start..body_start + len].to_vec());
        }
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// True once the peer has closed (EOF or reset), polling up to `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 64];
    matches!(timeout(within, s.read(&mut b)).await, Ok(Ok(0) | Err(_)))
}

#[tokio::test]
async fn serves_a_page_with_the_backend_header() {
    let server = Server::start(|_| {}).await;
    let mut c = server.connect().await;
    c.write_all(GET_PAGE).await.unwrap();
    let (head, body) = read_response(&mut c).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("x-fleet-backend: {}", server.port)),
        "{head}"
    );
    assert_eq!(body, b"<p>hello</p>");
}

/// RFC 9112 §3.2: HTTP/1.1 needs exactly one Host; HTTP/1.0 needs none.
#[tokio::test]
async fn http_1_1_without_exactly_one_host_is_a_bad_request() {
    let server = Server::start(|_| {}).await;
    for (req, status) in [
        (&b"GET /page.html HTTP/1.1\r\n\r\n"[..], "400"),
        (
            b"GET /page.html HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "400",
        ),
        (b"GET /page.html HTTP/1.0\r\n\r\n", "200"),
    ] {
        let mut c = server.connect().await;
        c.write_all(req).await.unwrap();
        let (head, _) = read_response(&mut c).await;
        assert!(head.contains(&format!(" {status} ")), "{head}");
    }
}

#[tokio::test]
async fn cancel_stops_accepting_and_serve_returns() {
    let mut server = Server::start(|_| {}).await;
    server.shutdown.cancel();
    let res = timeout(Duration::from_secs(5), &mut server.task)
        .await
        .expect("serve returns promptly after cancel")
        .unwrap();
    res.unwrap();
    assert!(
        TcpStream::connect(("127.0.0.1", server.port))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn cancel_closes_idle_keepalive_connections() {
    let mut server = Server::start(|_| {}).await;
    let mut c = server.connect().await;
    c.write_all(GET_PAGE).await.unwrap();
    read_response(&mut c).await;
    server.shutdown.cancel();
    assert!(closed_within(&mut c, Duration::from_secs(2)).await);
    timeout(Duration::from_secs(2), &mut server.task)
        .await
        .expect("drain finishes once idle connections are closed")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn idle_keepalive_connection_is_closed_after_idle_timeout() {
    let server = Server::start(|o| o.idle_timeout = Duration::from_millis(200)).await;
    let mut c = server.connect().await;
    c.write_all(GET_PAGE).await.unwrap();
    read_response(&mut c).await;
    let started = std::time::Instant::now();
    assert!(closed_within(&mut c, Duration::from_secs(3)).await);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_a_slot_frees() {
    let server = Server::start(|o| o.max_connections = 1).await;
    let mut first = server.connect().await;
    first.write_all(GET_PAGE).await.unwrap();
    read_response(&mut first).await;

    // The kernel completes the handshake, but the worker does not accept.
    let mut second = server.connect().await;
    second.write_all(GET_PAGE).await.unwrap();
    let mut b = [0u8; 1];
    assert!(
        timeout(Duration::from_millis(300), second.read(&mut b))
            .await
            .is_err(),
        "the second connection was served while the first held the only slot"
    );

    drop(first);
    let (head, _) = timeout(Duration::from_secs(5), read_response(&mut second))
        .await
        .expect("served once the first connection closed");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn head_of_a_file_has_its_length_and_no_body() {
    let server = Server::start(|_| {}).await;
    let mut c = server.connect().await;
    c.write_all(
        b"HEAD /page.html HTTP/1.1\r\nHost: t\r\n\r\nGET /page.html HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await
    .unwrap();
    // If HEAD had sent a body, the second response would not parse.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&buf).contains("<p>hello</p>") {
        let n = timeout(Duration::from_secs(5), c.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8(buf).unwrap();
    let (head_resp, get_resp) = text.split_once("\r\n\r\n").unwrap();
    assert!(head_resp.starts_with("HTTP/1.1 200"), "{head_resp}");
    assert!(
        head_resp
            .to_ascii_lowercase()
            .contains("content-length: 12"),
        "{head_resp}"
    );
    assert!(get_resp.starts_with("HTTP/1.1 200"), "{get_resp}");
}

fn serve_args(extra: &[&str]) -> ServeArgs {
    let argv = ["fleet", "serve", "--port", "9002"].iter().chain(extra);
    match Cli::try_parse_from(argv).unwrap().command {
        Command::Serve(args) => args,
        other => panic!("parsed as {other:?}"),
    }
}

#[test]
fn flag_defaults_are_the_worker_option_defaults() {
    assert_eq!(
        WorkerOptions::from_args(&serve_args(&[])).unwrap(),
        WorkerOptions::new("www")
    );
}

#[test]
fn max_head_bytes_below_the_minimum_is_refused() {
    let err = WorkerOptions::from_args(&serve_args(&["--max-head-bytes", "8191"])).unwrap_err();
    assert!(err.to_string().contains("--max-head-bytes"), "{err}");
    let ok = WorkerOptions::from_args(&serve_args(&["--max-head-bytes", "8192"])).unwrap();
    assert_eq!(ok.max_head_bytes, 8192);
}

#[test]
fn zero_timeouts_are_refused() {
    for flag in ["--header-timeout", "--idle-timeout"] {
        let err = WorkerOptions::from_args(&serve_args(&[flag, "0"])).unwrap_err();
        assert!(err.to_string().contains(flag), "{err}");
    }
}

#[test]
fn zero_max_connections_and_threads_are_refused_by_the_parser() {
    for flag in ["--max-connections", "--threads"] {
        let argv = ["fleet", "serve", "--port", "9002", flag, "0"];
        assert!(Cli::try_parse_from(argv).is_err(), "{flag} 0 accepted");
    }
}

/// Everything the worker sends until it closes the connection.
async fn read_to_close(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let _ = timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("the worker closes the connection");
    String::from_utf8_lossy(&buf).into_owned()
}

/// The status codes of the responses in `text`, in order.
fn statuses(text: &str) -> Vec<&str> {
    text.match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..(i + 12).min(text.len())])
        .filter(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
        .collect()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let server = Server::start(|_| {}).await;
    let mut c = server.connect().await;
    c.write_all(
        b"GET /page.html HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /nope HTTP/1.1\r\nHost: t\r\n\r\n\
          HEAD /page.html HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /page.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let text = read_to_close(&mut c).await;
    assert_eq!(statuses(&text), ["200", "404", "200", "200"], "{text}");
    assert_eq!(text.matches("<p>hello</p>").count(), 2, "{text}");
    assert!(text.ends_with("<p>hello</p>"), "{text}");
    assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
}

/// A request body, by length or chunked, is read and dropped: the next
/// request on the connection is answered as if it had none.
#[tokio::test]
async fn request_bodies_are_skipped_and_the_connection_goes_on() {
    let server = Server::start(|_| {}).await;
    let mut c = server.connect().await;
    c.write_all(
        b"POST /page.html HTTP/1.1\r\nHost: t\r\nContent-Length: 14\r\n\r\nGET / HTTP/1.1\
          PUT /page.html HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          4\r\nGET \r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    // The body arriving in pieces, after the answer.
    c.write_all(b"GET /page.html HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nab")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("<p>hello</p>") {
        let n = timeout(Duration::from_secs(5), c.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&chunk[..n]);
    }
    c.write_all(b"cdef").await.unwrap();
    c.write_all(b"GET /page.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&seen).into_owned() + &read_to_close(&mut c).await;
    assert_eq!(statuses(&text), ["405", "405", "200", "200"], "{text}");
    assert_eq!(
        text.matches("\r\nAllow: GET, HEAD\r\n").count(),
        2,
        "{text}"
    );
    assert!(text.ends_with("<p>hello</p>"), "{text}");
}

/// RFC 9110 §10.1.1: the client may be holding its body back for a 100
/// that never comes, so the answer ends the connection.
#[tokio::test]
async fn a_body_behind_expect_continue_closes_after_the_answer() {
    let server = Server::start(|_| {}).await;
    let mut c = server.connect().await;
    c.write_all(
        b"POST /page.html HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let text = read_to_close(&mut c).await;
    assert_eq!(statuses(&text), ["405"], "{text}");
    assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
}

#[tokio::test]
async fn http_1_0_keeps_the_connection_only_when_asked() {
    let server = Server::start(|_| {}).await;
    let mut c = server.connect().await;
    for _ in 0..2 {
        c.write_all(b"GET /page.html HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = read_response(&mut c).await;
        assert!(head.contains("\r\nConnection: keep-alive"), "{head}");
        assert_eq!(body, b"<p>hello</p>");
    }
    c.write_all(b"GET /page.html HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let text = read_to_close(&mut c).await;
    assert_eq!(statuses(&text), ["200"], "{text}");
    assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
}

/// What the codec refuses gets its status, the backend header and a close;
/// the balancer refuses the same requests (`http1::framing`).
#[tokio::test]
async fn refused_requests_get_their_status_and_the_connection_closes() {
    let server = Server::start(|_| {}).await;
    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: [(Vec<u8>, &str); 6] = [
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
            "400",
        ),
        (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n".to_vec(), "400"),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec(),
            "400",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec(),
            "501",
        ),
        (
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n".to_vec(),
            "501",
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").into_bytes(),
            "431",
        ),
    ];
    for (req, status) in cases {
        let mut c = server.connect().await;
        c.write_all(&req).await.unwrap();
        c.write_all(GET_PAGE).await.unwrap();
        let text = read_to_close(&mut c).await;
        let shown = String::from_utf8_lossy(&req).into_owned();
        assert_eq!(statuses(&text), [status], "{shown:?}: {text}");
        assert!(
            text.contains(&format!("\r\nX-Fleet-Backend: {}\r\n", server.port)),
            "{text}"
        );
        assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
    }
}

#[tokio::test]
async fn a_head_not_received_in_time_gets_408() {
    let server = Server::start(|o| o.header_timeout = Duration::from_millis(300)).await;
    let mut c = server.connect().await;
    c.write_all(b"GET /page.html HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let text = read_to_close(&mut c).await;
    assert_eq!(statuses(&text), ["408"], "{text}");
    // A kept-alive connection with no request begun closes without a word.
    let mut idle = server.connect().await;
    idle.write_all(GET_PAGE).await.unwrap();
    read_response(&mut idle).await;
    assert_eq!(read_to_close(&mut idle).await, "");
}

#[tokio::test]
async fn every_response_has_a_date() {
    let server = Server::start(|_| {}).await;
    let mut c = server.connect().await;
    c.write_all(GET_PAGE).await.unwrap();
    let (head, _) = read_response(&mut c).await;
    let date = head
        .lines()
        .find_map(|l| l.strip_prefix("Date: "))
        .expect("a Date header");
    assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
}
