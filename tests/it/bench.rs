//! `fleet bench` against a tiny HTTP server started inside the test on a
//! harness port (std threads, no dependency on `fleet serve`): the row
//! arithmetic, exact request and byte counts, failure counting, the output
//! formats and the plot. Every run is bounded by a deadline and every process
//! and thread started here is stopped in `Drop`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{ChildGuard, FLEET, free_ports, kill, run_to_end, wait_exit, wait_for};

const PAGE: &str = "<html><body>fleet bench test page</body></html>\n";
const MISSING: &str = "not found\n";

/// How the test server answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// `/page.html` is 200, anything else 404; HTTP/1.1 keeps the connection.
    Normal,
    /// Reads the request and never answers (until the client gives up).
    Silent,
}

/// The exact bytes of a response, so the test knows what ab would count.
fn response(path: &str, close: bool) -> Vec<u8> {
    let (status, body) = if path == "/page.html" {
        ("200 OK", PAGE)
    } else {
        ("404 Not Found", MISSING)
    };
    let conn = if close { "Connection: close\r\n" } else { "" };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {}\r\n{conn}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

struct TestServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Requests answered (or, when silent, read).
    requests: Arc<AtomicU64>,
    /// Connections accepted.
    connections: Arc<AtomicU64>,
    accept: Option<JoinHandle<()>>,
}

impl TestServer {
    fn start(mode: Mode) -> TestServer {
        let listener = TcpListener::bind(("127.0.0.1", free_ports(1)[0])).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let (s, r, c) = (stop.clone(), requests.clone(), connections.clone());
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let (r, s) = (r.clone(), s.clone());
                // One thread per connection; each ends when its client
                // closes, on error, or after its read timeout.
                std::thread::spawn(move || serve_conn(conn, mode, &r, &s));
            }
        });
        TestServer {
            addr,
            stop,
            requests,
            connections,
            accept: Some(accept),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees `stop`.
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn serve_conn(mut conn: TcpStream, mode: Mode, requests: &AtomicU64, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Read one request head.
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end);
        requests.fetch_add(1, Ordering::SeqCst);
        if mode == Mode::Silent {
            // Hold the connection until the client hangs up or the test ends.
            while !stop.load(Ordering::SeqCst) {
                match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
            return;
        }
        let first = head.lines().next().unwrap_or_default();
        let path = first.split_whitespace().nth(1).unwrap_or("/");
        let lower = head.to_ascii_lowercase();
        let close = first.ends_with("HTTP/1.0") && !lower.contains("connection: keep-alive")
            || lower.contains("connection: close");
        if conn.write_all(&response(path, close)).is_err() {
            return;
        }
        if close {
            let _ = conn.shutdown(Shutdown::Write);
            // Wait for the client's close so the response is never reset.
            let _ = conn.read(&mut chunk);
            return;
        }
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Run the real binary with a deadline, outside any fleet's state dir.
fn fleet(args: &[&str], cwd: &Path) -> Run {
    let out = run_to_end(
        Command::new(FLEET)
            .args(args)
            .current_dir(cwd)
            .env_remove("FLEET_STATE_DIR"),
        Duration::from_secs(30),
    );
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `fleet bench URL FLAGS --format json` in a fresh directory: the run,
/// checked to exit with `code`, and its rows.
fn bench_json(url: &str, flags: &[&str], code: i32) -> (Run, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<&str> = ["bench", url]
        .into_iter()
        .chain(flags.iter().copied())
        .chain(["--format", "json"])
        .collect();
    let run = fleet(&args, dir.path());
    assert_eq!(run.code, code, "{args:?}: stderr: {}", run.stderr);
    let rows = json_rows(&run);
    (run, rows)
}

/// A test server in `Mode::Normal` and the URL of its page.
fn page_server() -> (TestServer, String) {
    let srv = TestServer::start(Mode::Normal);
    let url = srv.url("/page.html");
    (srv, url)
}

/// `page_server()` and a fresh directory to run `fleet bench` in.
fn page_server_and_dir() -> (TestServer, String, tempfile::TempDir) {
    let (srv, url) = page_server();
    (srv, url, tempfile::tempdir().unwrap())
}

/// `fleet ARGS` in `cwd`, checked to succeed.
fn fleet_ok(args: &[&str], cwd: &Path) -> Run {
    let run = fleet(args, cwd);
    assert_eq!(run.code, 0, "{args:?}: stderr: {}", run.stderr);
    run
}

/// All that is left to read from a child's pipe.
fn drain(pipe: Option<impl Read>) -> String {
    let mut text = String::new();
    pipe.expect("piped").read_to_string(&mut text).unwrap();
    text
}

fn json_rows(run: &Run) -> Vec<Value> {
    serde_json::from_str::<Value>(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", run.stdout, run.stderr))
        .as_array()
        .unwrap()
        .clone()
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"))
}

fn close_enough(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()) + 1e-3
}

#[test]
fn bench_json_rows_add_up_and_count_every_request_and_byte() {
    let (srv, url) = page_server();
    let (_, rows) = bench_json(&url, &["-n", "200", "-c", "1,10"], 0);
    assert_eq!(rows.len(), 2);
    // ab-style request: HTTP/1.0 without keep-alive, one connection each.
    let per_response = response("/page.html", true).len() as u64;
    for (row, c) in rows.iter().zip([1, 10]) {
        assert_eq!(u(row, "concurrency"), c);
        assert_eq!(u(row, "requests"), 200);
        assert_eq!(u(row, "complete") + u(row, "failed"), u(row, "requests"));
        assert_eq!(u(row, "complete"), 200, "{row}");
        assert_eq!(u(row, "non_2xx"), 0);
        assert_eq!(u(row, "total_transferred_bytes"), 200 * per_response);
        let t = f(row, "time_taken_s");
        assert!(t > 0.0);
        assert!(
            close_enough(f(row, "requests_per_second"), 200.0 / t, 1e-3),
            "{row}"
        );
        assert!(
            close_enough(f(row, "time_per_request_ms"), t * 1000.0 / 200.0, 1e-3),
            "{row}"
        );
        let kb = 200.0 * per_response as f64 / 1024.0 / t;
        assert!(
            close_enough(f(row, "transfer_rate_kb_s"), kb, 1e-3),
            "{row}"
        );
        assert!(f(row, "p50_ms") <= f(row, "p99_ms"));
        assert_eq!(row["label"], Value::String(srv.addr.to_string()));
    }
    // Exactly N requests per level reached the server, on N connections.
    assert_eq!(srv.requests.load(Ordering::SeqCst), 400);
    assert_eq!(srv.connections.load(Ordering::SeqCst), 400);
}

#[test]
fn bench_keepalive_reuses_one_connection_per_concurrent_client() {
    let (srv, url) = page_server();
    let (_, rows) = bench_json(&url, &["-k", "-n", "101", "-c", "4"], 0);
    assert_eq!(u(&rows[0], "complete"), 101);
    assert_eq!(rows[0]["keepalive"], Value::Bool(true));
    let per_response = response("/page.html", false).len() as u64;
    assert_eq!(u(&rows[0], "total_transferred_bytes"), 101 * per_response);
    assert_eq!(srv.requests.load(Ordering::SeqCst), 101);
    assert!(srv.connections.load(Ordering::SeqCst) <= 4);
}

#[test]
fn bench_against_a_closed_port_counts_every_request_failed_and_exits_1() {
    // Free, and nothing listens there.
    let port = free_ports(1)[0];
    let url = format!("http://127.0.0.1:{port}/page.html");
    let (run, rows) = bench_json(&url, &["-n", "50", "-c", "1,5"], 1);
    // The level that completed nothing is shown; the rest are skipped.
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            u(&rows[0], "complete"),
            u(&rows[0], "failed"),
            u(&rows[0], "requests")
        ),
        (0, 50, 50)
    );
    assert!(rows[0]["p99_ms"].is_null());
    assert!(run.stderr.contains("50 connect:"), "{}", run.stderr);
    assert!(run.stderr.contains("is the server up?"), "{}", run.stderr);
}

#[test]
fn bench_times_out_a_silent_server_and_counts_it_failed() {
    let srv = TestServer::start(Mode::Silent);
    let url = srv.url("/page.html");
    let started = Instant::now();
    let (run, rows) = bench_json(&url, &["-n", "3", "-c", "3", "--timeout", "300ms"], 1);
    assert_eq!((u(&rows[0], "failed"), u(&rows[0], "complete")), (3, 0));
    assert!(run.stderr.contains("3 timeout"), "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn bench_counts_non_2xx_as_complete_in_their_own_column() {
    let srv = TestServer::start(Mode::Normal);
    let url = srv.url("/nope.html");
    let (run, rows) = bench_json(&url, &["-n", "20", "-c", "2"], 0);
    assert_eq!(
        (
            u(&rows[0], "complete"),
            u(&rows[0], "failed"),
            u(&rows[0], "non_2xx")
        ),
        (20, 0, 20)
    );
    assert!(run.stderr.contains("404 Not Found"), "{}", run.stderr);
    assert!(run.stderr.contains("not 2xx"), "{}", run.stderr);
}

#[test]
fn bench_csv_and_markdown_have_the_lab_shape() {
    let (_srv, url, dir) = page_server_and_dir();
    let csv = fleet_ok(
        &["bench", &url, "-n", "20", "-c", "1,5", "--format", "csv"],
        dir.path(),
    );
    let lines: Vec<&str> = csv.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", csv.stdout);
    assert!(lines[0].starts_with(
        "requests,concurrency,time_taken_s,complete,failed,total_transferred_bytes,requests_per_second,time_per_request_ms,transfer_rate_kb_s,non_2xx,p50_ms,p99_ms"
    ));
    let width = lines[0].split(',').count();
    for l in &lines[1..] {
        assert_eq!(l.split(',').count(), width, "{l}");
        assert!(l.starts_with("20,"), "{l}");
    }

    let md = fleet_ok(
        &[
            "bench", &url, "-n", "20", "-c", "1,5", "--format", "markdown",
        ],
        dir.path(),
    );
    let lines: Vec<&str> = md.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", md.stdout);
    assert!(lines[0].starts_with(
        "| Requests | Concurrency | Time taken (s) | Complete | Failed | Total transferred (bytes) | Requests per second | Time per request (ms) | Transfer rate (KB/s) |"
    ));
    assert!(lines[1].starts_with("|---:|"));
    assert!(lines[2].starts_with("| 20 | 1 | "));
    assert!(lines[3].starts_with("| 20 | 5 | "));

    let table = fleet_ok(&["bench", &url, "-n", "5", "-c", "5"], dir.path());
    assert!(table.stdout.contains("Requests") && table.stdout.contains("p99"));
    assert!(
        table
            .stdout
            .contains("Time per request: ab's \"mean, across all concurrent requests\""),
        "{}",
        table.stdout
    );
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.trim_start().starts_with("5 ")),
        "{}",
        table.stdout
    );
}

#[test]
fn bench_plot_writes_an_svg_with_one_line_per_run() {
    let (_srv, url, dir) = page_server_and_dir();
    // Both runs measure the same levels.
    let run = |extra: &[&str]| {
        let levels = ["bench", url.as_str(), "-n", "20", "-c", "1,4"];
        fleet_ok(&[&levels[..], extra].concat(), dir.path())
    };
    let first = run(&["--format", "json", "--label", "first-run"]);
    std::fs::write(dir.path().join("first.json"), &first.stdout).unwrap();
    run(&[
        "--label",
        "second-run",
        "--compare",
        "first.json",
        "--plot",
        "chart.svg",
    ]);
    let svg = std::fs::read_to_string(dir.path().join("chart.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"));
    // Two runs, two panels (requests/s and p99).
    assert_eq!(svg.matches("<polyline").count(), 4);
    assert!(svg.contains("first-run") && svg.contains("second-run"));
}

#[test]
fn bench_usage_errors_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["bench", "not a url"][..],
        &["bench", "https://127.0.0.1:1/"],
        &["bench", "http://127.0.0.1:1/", "-c", "0"],
        &["bench", "http://127.0.0.1:1/", "-n", "0"],
        &["bench", "http://127.0.0.1:1/", "-n", "5", "-c", "10"],
        &[
            "bench",
            "http://127.0.0.1:1/",
            "--plot",
            "x.svg",
            "--compare",
            "missing.json",
        ],
    ] {
        let run = fleet(args, dir.path());
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.starts_with("fleet: "),
            "{args:?}: {}",
            run.stderr
        );
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty());
    }
}

#[test]
fn bench_skips_levels_above_n_like_ab() {
    let (_srv, url) = page_server();
    let (run, rows) = bench_json(&url, &["-n", "5", "-c", "1,5,10"], 0);
    assert_eq!(rows.len(), 2);
    assert!(
        run.stderr.contains("skipping concurrency 10"),
        "{}",
        run.stderr
    );
}

#[test]
fn bench_without_url_or_fleet_says_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let run = fleet(&["bench", "--state-dir", "st"], dir.path());
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with(&format!(
            "fleet: no fleet is running in {};",
            std::fs::canonicalize(dir.path())
                .unwrap()
                .join("st")
                .display()
        )) && run.stderr.contains("`fleet up -d` or pass a URL"),
        "{}",
        run.stderr
    );
}

#[test]
fn bench_ctrl_c_prints_the_rows_measured_so_far() {
    use nix::sys::signal::Signal;

    let (srv, url, dir) = page_server_and_dir();
    // Far more requests than the test waits for; Ctrl-C ends the run.
    let mut child = ChildGuard(
        Command::new(FLEET)
            .args([
                "bench", &url, "-n", "10000000", "-c", "2,4", "--format", "json",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for(Duration::from_secs(20), "traffic at the server", || {
        (srv.requests.load(Ordering::SeqCst) >= 50).then_some(())
    });
    kill(child.0.id(), Signal::SIGINT);
    let status =
        wait_exit(&mut child.0, Duration::from_secs(20)).expect("fleet bench obeys Ctrl-C");
    let stdout = drain(child.0.stdout.take());
    let stderr = drain(child.0.stderr.take());
    assert_eq!(status.code(), Some(1), "{stderr}");
    let rows = json_rows(&Run {
        code: 1,
        stdout,
        stderr: stderr.clone(),
    });
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["interrupted"], Value::Bool(true));
    assert_eq!(u(row, "concurrency"), 2);
    assert!(u(row, "requests") >= 40 && u(row, "requests") < 10_000_000);
    assert_eq!(u(row, "complete") + u(row, "failed"), u(row, "requests"));
    assert!(stderr.contains("interrupted at concurrency 2"), "{stderr}");
}
