//! Drives the real `fleet` binary. Every test gets its own temp dir (state dir,
//! fleet.yaml, www) and its own free ports, so tests run side by side; every
//! process a test starts is stopped in `Drop`, also when the test fails.

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use fleet::protocol::{BackendStatus, FleetStatus, Phase};

pub const FLEET: &str = env!("CARGO_BIN_EXE_fleet");
pub use fleet::process::PORTABLE_ENV;
/// Both process mechanisms: the platform's own, then the portable (macOS) one.
pub const MODES: [bool; 2] = [false, true];
pub const PAGE: &[u8] = include_bytes!("../../www/page.html");
/// What the Python test backends in tests/it/backends/ share; each imports it.
const HTTP_BASE_PY: &str = include_str!("backends/http_base.py");

/// Where the next `free_ports` search starts. Ports are handed out in one
/// ascending sweep, so parallel tests never get the same port and the ones
/// handed out never fragment the range: a test that needs 1001 consecutive
/// ports finds them as easily as the first test did.
static NEXT: Mutex<Option<u16>> = Mutex::new(None);
/// The sweep's range: below Linux's ephemeral range (32768 and up), so
/// outgoing connections do not take these ports meanwhile.
pub const PORTS: std::ops::Range<u16> = 12_000..30_000;

/// `n` consecutive free loopback ports, each handed out once per test run.
pub fn free_ports(n: u16) -> Vec<u16> {
    let mut next = NEXT.lock().unwrap();
    // A random start, so concurrent test runs (other checkouts) rarely meet.
    let cursor = next.get_or_insert_with(|| fastrand::u16(PORTS.start..PORTS.start + 6_000));
    let mut base = *cursor;
    for _ in 0..1000 {
        if base.saturating_add(n) > PORTS.end {
            base = PORTS.start;
        }
        let busy = (base..base + n).find(|p| TcpListener::bind(("127.0.0.1", *p)).is_err());
        match busy {
            None => {
                *cursor = base + n;
                return (base..base + n).collect();
            }
            Some(p) => base = p + 1,
        }
    }
    panic!("no {n} consecutive free ports");
}

/// An external program a test needs, looked up on PATH (never run): its
/// name when present. Missing outside CI, the test skips with one line;
/// missing in CI (`CI` set), it fails, since .ci/run installs it (`install`
/// says how).
pub fn need_tool(name: &'static str, install: &str) -> Option<&'static str> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some(name);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{name} is missing ({install}; .ci/run installs it)"
    );
    skip(&format!("{name} is not installed ({install})"));
    None
}

/// The environment variable naming the file skipped tests are listed in
/// (`.ci/run` sets it and prints the list at its end).
pub const SKIPPED_ENV: &str = "FLEET_TEST_SKIPPED";

/// Record that the running test skips (its caller then returns): a line on
/// stderr, which `cargo test` shows only for a failing test, and a line
/// `TEST: REASON` in the file `FLEET_TEST_SKIPPED` names, so that a run
/// that skipped something says so at its end.
pub fn skip(reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("(unnamed test)")
        .to_owned();
    eprintln!("skipped: {reason}");
    if let Some(path) = std::env::var_os(SKIPPED_ENV) {
        list_skip(Path::new(&path), &test, reason);
    }
}

/// Append `TEST: REASON` to the list at `path`: one short append per line,
/// so lines of tests running in parallel do not mix.
pub fn list_skip(path: &Path, test: &str, reason: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{SKIPPED_ENV}={path:?}: {e}"));
    f.write_all(format!("{test}: {reason}\n").as_bytes())
        .unwrap();
}

/// Run `cmd` (stdin closed) to its end and collect its output, which is read
/// on threads so a full pipe can never stall it. Past `limit` the process is
/// killed and the test fails.
pub fn run_to_end(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = ChildGuard(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let collect = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let out = collect(Box::new(child.0.stdout.take().unwrap()));
    let err = collect(Box::new(child.0.stderr.take().unwrap()));
    let status = wait_exit(&mut child.0, limit)
        .unwrap_or_else(|| panic!("{cmd:?} still running after {limit:?}"));
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// The least time any wait gives its condition. A wait returns as soon as
/// its condition holds, so a long deadline costs a passing test nothing,
/// while a short one fails a correct program on a loaded machine (CI is a
/// shared 2-core box). Where a test's own deadline is shorter, this wins.
pub const MIN_WAIT: Duration = Duration::from_secs(30);

/// The bound for what fleet does at once (an answer, an exit, a close that
/// takes milliseconds on an idle machine), in tests that assert it was
/// prompt. Every assertion using it tells "at once" from a timeout of 10 s
/// or more, or from never, so it stays meaningful with the slack a loaded
/// machine needs.
pub const PROMPT: Duration = Duration::from_secs(5);

/// Wait for `child` to exit, up to `within` (at least [`MIN_WAIT`]).
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within.max(MIN_WAIT);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A child process, killed and reaped on drop if it still runs.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Poll `f` until it returns `Some`, or panic with `what` at the deadline
/// (`limit`, at least [`MIN_WAIT`]).
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let limit = limit.max(MIN_WAIT);
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn alive(pid: u32) -> bool {
    fleet::process::alive(pid)
}

pub fn kill(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// A scratch directory with `www/` (a copy of the shipped page) and a place
/// for fleet.yaml and the state dir.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    /// Run `fleet` with the portable (macOS) process mechanisms selected
    /// (`FLEET_PORTABLE_PROCESS=1`), so Linux CI covers them.
    pub portable: bool,
}

impl Scratch {
    pub fn new() -> Self {
        // A short prefix: the control socket path must fit in sun_path.
        let dir = tempfile::Builder::new()
            .prefix("ft")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::create_dir(dir.path().join("www")).unwrap();
        std::fs::write(dir.path().join("www/page.html"), PAGE).unwrap();
        std::fs::write(dir.path().join("www/index.html"), b"<h1>index</h1>\n").unwrap();
        Scratch {
            dir,
            portable: false,
        }
    }
    /// A scratch dir whose `fleet` runs take the portable paths when `portable`.
    pub fn with_mode(portable: bool) -> Self {
        let mut s = Self::new();
        s.portable = portable;
        s
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn state(&self) -> PathBuf {
        self.path().join("st")
    }
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
    /// Run `fleet ARGS` in this directory with its state dir.
    pub fn fleet(&self, args: &[&str]) -> Output {
        self.fleet_within(args, Duration::from_secs(60))
    }
    /// `fleet`, for a command whose work grows with the fleet (`down` of
    /// 1000 backends): the test says how long it may take.
    pub fn fleet_within(&self, args: &[&str], limit: Duration) -> Output {
        run_to_end(
            Command::new(FLEET)
                .args(args)
                .current_dir(self.path())
                .env("FLEET_STATE_DIR", self.state())
                .env(PORTABLE_ENV, if self.portable { "1" } else { "0" })
                .env_remove("RUST_LOG"),
            limit,
        )
    }
}

/// The safety net under every test: a fleet still running in this scratch
/// dir's state dir (a test that expected `up` to fail and it did not, a test
/// that panicked before its own clean-up) is taken down, and killed if it
/// does not go, so no test leaves a supervisor behind.
impl Drop for Scratch {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(self.state().join("fleet.pid"))
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok());
        if let Some(pid) = pid.filter(|p| alive(*p)) {
            let _ = self.fleet(&["down", "--timeout", "2s"]);
            if alive(pid) {
                kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// fleet.yaml for `ports`: all but the last are the backends, the last is the
/// balancer's; `extra` is appended.
pub fn fleet_yaml(ports: &[u16], extra: &str) -> String {
    let (listen, backends) = ports.split_last().expect("at least the balancer's port");
    format!(
        "backends: {}\nbase_port: {}\nlisten: 127.0.0.1:{listen}\n{extra}\n",
        backends.len(),
        backends[0]
    )
}

/// A counter summed over every backend of a status.
pub fn sum(s: &FleetStatus, field: impl Fn(&BackendStatus) -> u64) -> u64 {
    s.backends.iter().map(field).sum()
}

pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Assert that a command exited with `code` and said `says` on stderr.
#[track_caller]
pub fn assert_exit(out: &Output, code: i32, says: &str) {
    assert_eq!(out.status.code(), Some(code), "{}", text(out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(says),
        "{}",
        text(out)
    );
}

/// Assert that none of `sent` requests failed; shows the first failures.
#[track_caller]
pub fn assert_no_failures<T: std::fmt::Debug>(sent: impl std::fmt::Display, failures: &[T]) {
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

/// fleet.yaml for a chaos test: restarts come quickly and do not give up.
pub const CHAOS: &str = "restart:\n  initial_backoff: 50ms\n  max_restarts: 10\n";

/// Load on `f` while a running worker is SIGKILLed every 300 ms, five times.
/// `client(i)` makes client thread `i`'s request function (a failure says
/// what went wrong); each client keeps sending until the chaos is over and
/// `min` requests went out, bounded by 200,000 requests and 60 s. Asserts
/// that `min` went out and none failed; returns the pids killed.
pub fn chaos_under_load<C>(
    f: &Fleet,
    clients: usize,
    min: usize,
    client: impl Fn(usize) -> C,
) -> Vec<u32>
where
    C: FnMut() -> Result<(), String> + Send + 'static,
{
    let chaos_done = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (chaos_done, sent, failures) = (chaos_done.clone(), sent.clone(), failures.clone());
            let mut request = client(i);
            std::thread::spawn(move || {
                while (!chaos_done.load(Ordering::SeqCst) || sent.load(Ordering::SeqCst) < min)
                    && sent.load(Ordering::SeqCst) < 200_000
                    && Instant::now() < deadline
                {
                    sent.fetch_add(1, Ordering::SeqCst);
                    if let Err(e) = request() {
                        failures.lock().unwrap().push(e);
                    }
                }
            })
        })
        .collect();
    let mut killed = Vec::new();
    for i in 0..5 {
        // The chaos cadence itself (not a wait for a condition): one kill every 300 ms.
        std::thread::sleep(Duration::from_millis(300));
        killed.push(f.kill_a_running_worker(i));
    }
    chaos_done.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let total = sent.load(Ordering::SeqCst);
    assert!(total >= min, "sent {total}");
    assert_no_failures(total, &failures.lock().unwrap());
    killed
}

/// The built-in page, whole, with a 200; otherwise what came instead.
pub fn page_ok(answer: std::io::Result<Response>) -> Result<(), String> {
    match answer {
        Ok(r) if r.status == 200 && r.body == PAGE => Ok(()),
        Ok(r) => Err(format!("status {} body {} bytes", r.status, r.body.len())),
        Err(e) => Err(e.to_string()),
    }
}

/// A running fleet started with `fleet up -d`.
pub struct Fleet {
    pub scratch: Scratch,
    pub ports: Vec<u16>,
    pub listen: u16,
    /// Every pid we have seen (supervisor and workers), killed in Drop if alive.
    seen: Mutex<HashSet<u32>>,
    pub supervisor: u32,
}

impl Fleet {
    /// Start `backends` built-in workers with fast health checks; `extra` is
    /// appended to fleet.yaml (it may override the health/restart sections).
    pub fn start(backends: u16, extra: &str) -> Fleet {
        let scratch = Scratch::new();
        Self::start_in(scratch, backends, extra)
    }

    /// A fleet of `n` backends that run `script`, one of the Python servers
    /// in tests/it/backends/ (given as its text), as
    /// `python3 SCRIPT PORT DIR`, DIR being the scratch dir; `extra` is
    /// appended to fleet.yaml.
    pub fn python(script: &str, n: u16, extra: &str) -> Fleet {
        let scratch = Scratch::new();
        scratch.write("http_base.py", HTTP_BASE_PY);
        let script = scratch.write("backend.py", script);
        let dir = scratch.path().display().to_string();
        Fleet::start_in(
            scratch,
            n,
            &format!(
                "backend:\n  command: [\"python3\", \"{}\", \"{{port}}\", \"{dir}\"]\n{extra}",
                script.display()
            ),
        )
    }

    pub fn start_in(scratch: Scratch, backends: u16, extra: &str) -> Fleet {
        let ports = free_ports(backends + 1);
        let listen = ports[backends as usize];
        let health = if extra.contains("health:") {
            ""
        } else {
            "health:\n  interval: 100ms\n  timeout: 100ms\n"
        };
        let yaml = format!(
            "backends: {backends}\nbase_port: {}\nlisten: 127.0.0.1:{listen}\nwww: www\n{health}{extra}\n",
            ports[0]
        );
        scratch.write("fleet.yaml", &yaml);
        let out = scratch.fleet(&["up", "-d"]);
        let mut fleet = Fleet {
            scratch,
            ports: ports[..backends as usize].to_vec(),
            listen,
            seen: Mutex::new(HashSet::new()),
            supervisor: 0,
        };
        assert!(out.status.success(), "fleet up -d failed:\n{}", text(&out));
        fleet.supervisor = fleet.status().pid;
        fleet
    }

    /// Take over cleanup of whatever `fleet up` may have started in `scratch`.
    pub fn adopt(scratch: Scratch, ports: Vec<u16>, listen: u16) -> Fleet {
        let f = Fleet {
            scratch,
            ports,
            listen,
            seen: Mutex::new(HashSet::new()),
            supervisor: 0,
        };
        let out = f.fleet(&["status", "--json"]);
        if let Ok(s) = serde_json::from_slice::<FleetStatus>(&out.stdout) {
            f.remember(&s);
        }
        f
    }

    pub fn fleet(&self, args: &[&str]) -> Output {
        self.scratch.fleet(args)
    }

    fn remember(&self, s: &FleetStatus) {
        let mut seen = self.seen.lock().unwrap();
        seen.insert(s.pid);
        seen.extend(
            s.backends
                .iter()
                .flat_map(|b| [b.pid, b.guard_pid])
                .flatten(),
        );
    }

    /// `fleet status --json` as the crate's own status type; panics unless
    /// it exits 0.
    pub fn status(&self) -> FleetStatus {
        let out = self.fleet(&["status", "--json"]);
        assert!(out.status.success(), "fleet status failed:\n{}", text(&out));
        let s: FleetStatus = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not a status ({e}):\n{}", text(&out)));
        self.remember(&s);
        s
    }

    /// `fleet status --json` as untyped JSON, for the tests of the JSON
    /// contract itself (field names and types as a script sees them).
    pub fn status_json(&self) -> Value {
        let out = self.fleet(&["status", "--json"]);
        assert!(out.status.success(), "fleet status failed:\n{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// SIGKILL a running worker, the first from backend `from` on (in turn,
    /// wrapping), as the chaos tests do; returns its pid.
    pub fn kill_a_running_worker(&self, from: usize) -> u32 {
        let s = self.status();
        let n = s.backends.len();
        let victim = (0..n)
            .map(|k| (from + k) % n)
            .find_map(|k| {
                s.backends[k]
                    .pid
                    .filter(|_| s.backends[k].state == Phase::Running)
            })
            .expect("some backend is running");
        kill(victim, nix::sys::signal::Signal::SIGKILL);
        victim
    }

    pub fn pid_of(&self, i: usize) -> u32 {
        self.status().backends[i].pid.expect("backend has a pid")
    }

    /// Poll status until `cond` holds.
    pub fn wait_status(
        &self,
        limit: Duration,
        what: &str,
        cond: impl Fn(&FleetStatus) -> bool,
    ) -> FleetStatus {
        wait_for(limit, what, || {
            let s = self.status();
            cond(&s).then_some(s)
        })
    }

    pub fn all_healthy(s: &FleetStatus) -> bool {
        s.backends
            .iter()
            .all(|b| b.healthy && b.state == Phase::Running)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.listen))
    }

    pub fn worker_pids(&self) -> Vec<u32> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .copied()
            .filter(|p| *p != self.supervisor)
            .collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.scratch.state().join("logs/supervisor.log"))
            .unwrap_or_default()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- supervisor.log ----\n{}", self.log());
        }
        if self.supervisor != 0 && alive(self.supervisor) {
            let _ = self.fleet(&["down", "--timeout", "2s"]);
        }
        for pid in self.seen.lock().unwrap().iter() {
            if alive(*pid) {
                kill(*pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// A parsed HTTP response (test-side only: the product uses hyper).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// Parse a whole response; panics (showing the bytes) if it is not one.
    pub fn from_raw(raw: &[u8]) -> Response {
        parse(raw)
            .unwrap_or_else(|| panic!("not an HTTP response: {:?}", String::from_utf8_lossy(raw)))
    }

    /// Read one response off a kept-alive connection (body by Content-Length).
    pub fn read_one(s: &mut TcpStream) -> Response {
        let mut raw = Vec::new();
        let mut byte = [0u8; 1];
        while !raw.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).unwrap(), 1, "closed mid-head: {raw:?}");
            raw.push(byte[0]);
        }
        let mut resp = Response::from_raw(&raw);
        let len: usize = resp.header("content-length").unwrap().parse().unwrap();
        resp.body = vec![0; len];
        s.read_exact(&mut resp.body).unwrap();
        resp
    }

    /// The first header called `name`, compared without case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request on a new connection (`Connection: close`), like `ab`.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse(&raw).ok_or_else(|| {
        std::io::Error::other(format!("bad response: {:?}", String::from_utf8_lossy(&raw)))
    })
}

pub fn parse(raw: &[u8]) -> Option<Response> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Response {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}

/// Read until EOF; a reset after the response counts as the close.
pub fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("reading the response failed: {e} (got {out:?})"),
        }
    }
}

/// A running `fleet serve` on a free port; SIGKILLed and reaped on drop,
/// which also prints its stderr if the test failed.
pub struct Worker {
    child: Option<Child>,
    pub port: u16,
    stderr: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl Worker {
    /// Serve `www` with `extra` flags; returns once the port accepts.
    pub fn start(www: &Path, extra: &[&str]) -> Worker {
        Self::spawn(www, extra, Stdio::null())
    }

    /// [`Worker::start`] with the given stdin (a pipe, for `--lifeline`).
    pub fn spawn(www: &Path, extra: &[&str], stdin: Stdio) -> Worker {
        let w = Self::spawn_unchecked(www, free_ports(1)[0], extra, stdin);
        wait_for(Duration::from_secs(10), "the worker to listen", || {
            port_open(w.port).then_some(())
        });
        w
    }

    /// Start `fleet serve` on `port` without waiting for it (it may fail).
    pub fn spawn_unchecked(www: &Path, port: u16, extra: &[&str], stdin: Stdio) -> Worker {
        let log_dir = tempfile::Builder::new().prefix("fwl").tempdir().unwrap();
        let stderr = log_dir.path().join("stderr");
        let child = Command::new(FLEET)
            .arg("serve")
            .arg("--port")
            .arg(port.to_string())
            .arg("--www")
            .arg(www)
            .args(extra)
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .env("RUST_LOG", "info")
            .spawn()
            .unwrap();
        Worker {
            child: Some(child),
            port,
            stderr,
            _log_dir: log_dir,
        }
    }

    pub fn child(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .expect("the child is only taken by drop")
    }

    /// What the worker wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn signal(&mut self, sig: nix::sys::signal::Signal) {
        kill(self.child().id(), sig);
    }

    /// Wait for the process to exit, up to `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        wait_exit(self.child(), within)
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// Send raw bytes on a fresh connection and read until the worker closes
    /// it (requests here say `Connection: close`, or are rejected, which
    /// closes too).
    pub fn exchange(&self, raw: &[u8]) -> Vec<u8> {
        let mut s = self.connect();
        s.write_all(raw).unwrap();
        read_to_close(&mut s)
    }

    /// `GET target` on a fresh connection, raw, so the target is sent as written.
    pub fn get(&self, target: &str) -> Response {
        Response::from_raw(
            &self.exchange(
                format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            ),
        )
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("worker stderr:\n{}", self.log());
        }
    }
}

/// `fleet up` in the foreground (no `-d`) on `ports` (the backends, then the
/// balancer), its stderr in a file, once every backend is healthy. Dropped,
/// it kills what is still running.
pub struct Foreground {
    pub child: Child,
    /// Where its stderr goes.
    pub log: PathBuf,
    pub workers: Vec<u32>,
    balancer: u16,
    _guard: PidGuard,
}

impl Foreground {
    pub fn start(s: &Scratch, ports: &[u16]) -> Foreground {
        s.write(
            "fleet.yaml",
            &fleet_yaml(ports, "health:\n  interval: 100ms\n  timeout: 100ms"),
        );
        let log = s.path().join("fg.log");
        let child = Command::new(FLEET)
            .arg("up")
            .current_dir(s.path())
            .env("FLEET_STATE_DIR", s.state())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut guard = PidGuard::new(vec![child.id()]);
        let st = wait_for(
            Duration::from_secs(10),
            "the foreground fleet healthy",
            || {
                let out = s.fleet(&["status", "--json"]);
                let v: FleetStatus = serde_json::from_slice(&out.stdout).ok()?;
                Fleet::all_healthy(&v).then_some(v)
            },
        );
        let workers: Vec<u32> = st.backends.iter().filter_map(|b| b.pid).collect();
        guard.add(&workers);
        Foreground {
            child,
            log,
            workers,
            balancer: *ports.last().expect("the balancer's port"),
            _guard: guard,
        }
    }

    /// Send `sig` and check that it stopped as a graceful down does: exit 0,
    /// every worker gone, the pid file removed, the balancer closed. Returns
    /// what it logged.
    #[track_caller]
    pub fn stop_by(mut self, sig: nix::sys::signal::Signal, s: &Scratch) -> String {
        kill(self.child.id(), sig);
        let status = wait_for(Duration::from_secs(15), "the supervisor to exit", || {
            self.child.try_wait().unwrap()
        });
        assert_eq!(status.code(), Some(0), "{sig} means a graceful stop");
        for w in &self.workers {
            assert!(!alive(*w), "worker {w} stopped");
        }
        assert!(!s.state().join("fleet.pid").exists());
        assert!(!port_open(self.balancer));
        std::fs::read_to_string(&self.log).unwrap()
    }
}

/// When a process started, as the kernel tells it: on Linux the start time
/// in clock ticks (`/proc/PID/stat`), elsewhere `ps -o lstart`. With the pid,
/// it names one process: a loaded machine reuses a pid within seconds, and a
/// test must neither wait on nor kill the stranger that got it.
pub fn started(pid: u32) -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name, which may hold spaces: state is
        // field 3 and starttime field 22.
        let rest = &stat[stat.rfind(')')? + 2..];
        rest.split_whitespace().nth(19).map(str::to_owned)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let out = std::process::Command::new("ps")
            .args(["-o", "lstart=", "-p", &pid.to_string()])
            .output()
            .ok()?;
        let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (!s.is_empty()).then_some(s)
    }
}

/// Processes named by pid and start time (see [`started`]).
#[derive(Debug, Clone)]
pub struct Procs(Vec<(u32, Option<String>)>);

impl Procs {
    pub fn of(pids: &[u32]) -> Procs {
        Procs(pids.iter().map(|p| (*p, started(*p))).collect())
    }

    /// Is any of them still running (the same process, not a pid reused)?
    pub fn any_alive(&self) -> bool {
        self.0.iter().any(|(p, s)| alive(*p) && started(*p) == *s)
    }

    /// The ones still running.
    pub fn alive(&self) -> Vec<u32> {
        self.0
            .iter()
            .filter(|(p, s)| alive(*p) && started(*p) == *s)
            .map(|(p, _)| *p)
            .collect()
    }
}

/// Kills the processes it holds when dropped (for processes started outside
/// `Fleet`), each only if it is still the process it was (not a reused pid).
pub struct PidGuard(Procs);

impl PidGuard {
    pub fn new(pids: Vec<u32>) -> PidGuard {
        PidGuard(Procs::of(&pids))
    }

    /// Guard these too.
    pub fn add(&mut self, pids: &[u32]) {
        self.0.0.extend(Procs::of(pids).0);
    }
}

impl Drop for PidGuard {
    fn drop(&mut self) {
        for pid in self.0.alive() {
            kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}
