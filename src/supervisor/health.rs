//! Active health probes. A probe is one attempt with a deadline; counting
//! consecutive results and deciding what they mean is the state machine's job
//! (`state.rs`), so this module only answers "did it pass", and if not, what
//! the probe saw, for the user to act on.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::HealthKind;

/// The first probe of a `Starting` backend comes this soon after the spawn;
/// the delay doubles after each failure up to `health.interval`, so a fast
/// backend takes traffic within milliseconds and a slow one is not hammered
/// (each probe is a connection, and a line in a chatty backend's log).
pub(crate) const STARTING_INTERVAL: Duration = Duration::from_millis(5);

/// The start-up probe delay after `failures` failed probes.
pub(crate) fn starting_delay(failures: u32, interval: Duration) -> Duration {
    STARTING_INTERVAL
        .saturating_mul(1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX))
        .min(interval.max(STARTING_INTERVAL))
}

/// What a failed probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProbeFailure {
    /// The connect failed (refused: nothing listens on the port).
    Connect(std::io::ErrorKind),
    /// No answer within the probe timeout.
    TimedOut(Duration),
    /// The backend answered `GET path` with a status that is not 2xx or 3xx.
    Status { path: String, code: u16 },
    /// The backend closed the connection or sent something that is not HTTP.
    NotHttp { path: String },
}

impl std::fmt::Display for ProbeFailure {
    /// What the probe saw, and what the user can do about it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeFailure::Connect(std::io::ErrorKind::ConnectionRefused) => {
                write!(f, "connection refused: nothing listens on its port")
            }
            ProbeFailure::Connect(kind) => write!(f, "connect failed: {kind}"),
            ProbeFailure::TimedOut(t) => write!(
                f,
                "no answer within health.timeout ({})",
                humantime::format_duration(*t)
            ),
            ProbeFailure::Status { path, code } if (400..500).contains(code) => write!(
                f,
                "GET {path} answered {code}; set health.path to a page that exists, or health.kind: tcp"
            ),
            ProbeFailure::Status { path, code } => write!(f, "GET {path} answered {code}"),
            ProbeFailure::NotHttp { path } => write!(
                f,
                "GET {path} got no HTTP response; for a server that does not speak HTTP set health.kind: tcp"
            ),
        }
    }
}

/// A backend that has never passed a probe and still refuses connections
/// this long after its spawn is taken for one that listens elsewhere: its
/// reason asks whether the command uses `{port}`. Before that (and for a
/// backend that has passed before: a restart of a command known to work) a
/// refused connect is a normal start. Well under the 10 s `fleet up` waits,
/// so its "not ready" message carries the hint.
pub(crate) const PORT_HINT_AFTER: Duration = Duration::from_secs(5);

/// Where a backend stood when a probe failed, for the words of its reason.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context {
    pub port: u16,
    /// How long it has been starting (spawned, no probe passed yet); `None`
    /// when it is running.
    pub starting_for: Option<Duration>,
    /// A probe of this backend has passed since its command last changed.
    pub ever_passed: bool,
    /// A configured command (which may not use `{port}`), not the built-in worker.
    pub custom: bool,
}

/// The reason a starting or unhealthy backend shows for a failed probe.
pub(crate) fn reason(e: &ProbeFailure, c: Context) -> String {
    let port = c.port;
    match (e, c.starting_for) {
        (ProbeFailure::Connect(std::io::ErrorKind::ConnectionRefused), Some(t))
            if c.ever_passed || t < PORT_HINT_AFTER =>
        {
            format!("waiting for port {port} to accept connections")
        }
        (ProbeFailure::Connect(std::io::ErrorKind::ConnectionRefused), Some(_)) if c.custom => {
            format!(
                "health probe: connection refused: nothing listens on port {port} (does the command use {{port}}?)"
            )
        }
        _ => format!("health probe: {e}"),
    }
}

/// One probe: `tcp` passes on connect; `http` passes on a 2xx or 3xx status
/// for `GET path`. Everything, connect included, must finish within `timeout`.
pub(crate) async fn probe(
    kind: &HealthKind,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(), ProbeFailure> {
    tokio::time::timeout(timeout, attempt(kind, addr))
        .await
        .unwrap_or(Err(ProbeFailure::TimedOut(timeout)))
}

async fn attempt(kind: &HealthKind, addr: SocketAddr) -> Result<(), ProbeFailure> {
    let path = match kind {
        HealthKind::Tcp => {
            return connect_only(addr)
                .await
                .map_err(|e| ProbeFailure::Connect(e.kind()));
        }
        HealthKind::Http { path } => path,
    };
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| ProbeFailure::Connect(e.kind()))?;
    let not_http = || ProbeFailure::NotHttp { path: path.clone() };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|_| not_http())?;
    let req = Request::get(path.as_str())
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::USER_AGENT, "fleet-health")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::new())
        .map_err(|_| not_http())?;
    let passed = |r: hyper::Result<hyper::Response<hyper::body::Incoming>>| match r {
        Ok(res) if res.status().is_success() || res.status().is_redirection() => Ok(()),
        Ok(res) => Err(ProbeFailure::Status {
            path: path.clone(),
            code: res.status().as_u16(),
        }),
        Err(_) => Err(not_http()),
    };
    let send = sender.send_request(req);
    tokio::pin!(send);
    tokio::select! {
        r = &mut send => passed(r),
        // The connection ended first: either it delivered the response on its
        // way out (then `send` is ready) or the backend hung up (then `send`
        // fails at once, its dispatcher being gone).
        _ = conn => passed(send.await),
    }
}

/// A tcp probe: connect, then close with a reset, as HAProxy closes its
/// checks: no FIN exchange and no TIME_WAIT socket left per probe (at 1000
/// backends probed each second, 60,000 of them for every new connect to
/// search past).
async fn connect_only(addr: SocketAddr) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    let stream = match quick::connect(addr)? {
        None => return Ok(()),
        Some(connecting) => {
            let stream = TcpStream::from_std(connecting)?;
            stream.writable().await?;
            if let Some(e) = stream.take_error()? {
                return Err(e);
            }
            stream.peer_addr()?;
            stream
        }
    };
    #[cfg(not(target_os = "linux"))]
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_zero_linger();
    Ok(())
}

/// Linux: a connect to a local listener completes inside the `connect`
/// call (the kernel runs the loopback handshake, or the refusal, right
/// there), so its outcome is read at once, and the socket is closed without
/// ever being registered with the runtime: no `epoll_ctl` pair and no
/// wake-up per probe, which at 1000 backends probed each second was most of
/// an idle supervisor's own work. A connect still in progress (a remote
/// upstream, a full backlog) is handed back for the runtime to wait on.
#[cfg(target_os = "linux")]
mod quick {
    use std::net::SocketAddr;

    use nix::errno::Errno;
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage, sockopt};

    /// `None`: connected, and closed with a reset. `Some`: still
    /// connecting (non-blocking).
    pub(super) fn connect(addr: SocketAddr) -> std::io::Result<Option<std::net::TcpStream>> {
        let family = match addr {
            SocketAddr::V4(_) => AddressFamily::Inet,
            SocketAddr::V6(_) => AddressFamily::Inet6,
        };
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        let fd = socket::socket(family, SockType::Stream, flags, None)?;
        let stream = std::net::TcpStream::from(fd);
        match socket::connect(
            std::os::fd::AsRawFd::as_raw_fd(&stream),
            &SockaddrStorage::from(addr),
        ) {
            Ok(()) => {}
            Err(Errno::EINPROGRESS) => {
                // The loopback handshake (or refusal) ran as the call
                // returned; a second `connect` reads its outcome in one
                // system call (`SO_ERROR` and `getpeername` took two): 0 or
                // `EISCONN` when connected, the pending error (taken) when
                // refused or reset, `EALREADY` while still connecting.
                match socket::connect(
                    std::os::fd::AsRawFd::as_raw_fd(&stream),
                    &SockaddrStorage::from(addr),
                ) {
                    Ok(()) | Err(Errno::EISCONN) => {}
                    Err(Errno::EALREADY | Errno::EINPROGRESS) => return Ok(Some(stream)),
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
        let reset = nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        let _ = socket::setsockopt(&stream, sockopt::Linger, &reset);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn server(reply: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply).await;
            }
        });
        addr
    }

    fn http() -> HealthKind {
        HealthKind::Http { path: "/".into() }
    }
    const T: Duration = Duration::from_millis(500);

    #[tokio::test]
    async fn http_probe_passes_on_2xx_and_3xx() {
        let ok = server(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        let redirect =
            server(b"HTTP/1.1 301 Moved\r\nlocation: /x\r\ncontent-length: 0\r\n\r\n").await;
        assert_eq!(probe(&http(), ok, T).await, Ok(()));
        assert_eq!(probe(&http(), redirect, T).await, Ok(()));
    }

    #[tokio::test]
    async fn http_probe_fails_on_5xx_garbage_and_refused() {
        let bad = server(b"HTTP/1.1 503 Busy\r\ncontent-length: 0\r\n\r\n").await;
        let garbage = server(b"not http at all\r\n\r\n").await;
        assert_eq!(
            probe(&http(), bad, T).await,
            Err(ProbeFailure::Status {
                path: "/".into(),
                code: 503
            })
        );
        assert_eq!(
            probe(&http(), garbage, T).await,
            Err(ProbeFailure::NotHttp { path: "/".into() })
        );
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let refused = Err(ProbeFailure::Connect(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(probe(&http(), closed, T).await, refused);
        assert_eq!(probe(&HealthKind::Tcp, closed, T).await, refused);
    }

    #[tokio::test]
    async fn a_404_names_the_path_and_what_to_do() {
        let missing = server(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").await;
        let e = probe(&http(), missing, T).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "GET / answered 404; set health.path to a page that exists, or health.kind: tcp"
        );
    }

    /// A listener whose accept queue is full drops new SYNs, so a tcp probe's
    /// connect is still in progress when `connect` returns: it is waited
    /// for on the runtime, and times out, rather than counted as a pass.
    #[tokio::test]
    async fn a_tcp_probe_still_connecting_is_waited_for_and_times_out() {
        let l = tokio::net::TcpSocket::new_v4().unwrap();
        l.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let _listener = l.listen(0).unwrap();
        // Fill the queue (one or two fit, whatever the kernel rounds 0 to).
        let mut held = Vec::new();
        for _ in 0..4 {
            if let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                held.push(s);
            }
        }
        let t = Duration::from_millis(300);
        assert_eq!(
            probe(&HealthKind::Tcp, addr, t).await,
            Err(ProbeFailure::TimedOut(t))
        );
    }

    #[tokio::test]
    async fn a_tcp_probe_passes_on_a_listener_and_leaves_no_connection_open() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        assert_eq!(probe(&HealthKind::Tcp, addr, T).await, Ok(()));
        // Closed with a reset: the accepted end reads an error or EOF at once.
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(T, s.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "the probe's connection is closed: {read:?}"
        );
    }

    /// A refused connect while starting is a normal start, unless the
    /// backend never passed and has refused for `PORT_HINT_AFTER`: then (for
    /// a configured command) it asks about `{port}`.
    #[test]
    fn only_a_backend_that_never_listened_is_asked_about_its_port() {
        let refused = ProbeFailure::Connect(std::io::ErrorKind::ConnectionRefused);
        let c = |starting_for: Option<u64>, ever_passed, custom| Context {
            port: 9002,
            starting_for: starting_for.map(Duration::from_millis),
            ever_passed,
            custom,
        };
        let waiting = "waiting for port 9002 to accept connections";
        assert_eq!(reason(&refused, c(Some(250), false, true)), waiting);
        assert_eq!(reason(&refused, c(Some(250), true, true)), waiting);
        assert_eq!(
            reason(&refused, c(Some(60_000), true, true)),
            waiting,
            "it listened before"
        );
        assert_eq!(
            reason(&refused, c(Some(6_000), false, true)),
            "health probe: connection refused: nothing listens on port 9002 (does the command use {port}?)"
        );
        assert_eq!(
            reason(&refused, c(Some(6_000), false, false)),
            "health probe: connection refused: nothing listens on its port",
            "the built-in worker always uses its port"
        );
        assert_eq!(
            reason(&refused, c(None, true, true)),
            "health probe: connection refused: nothing listens on its port",
            "a running backend that stopped listening"
        );
        let timeout = ProbeFailure::TimedOut(Duration::from_millis(500));
        assert_eq!(
            reason(&timeout, c(Some(250), false, true)),
            "health probe: no answer within health.timeout (500ms)"
        );
    }

    #[test]
    fn start_up_probes_back_off_from_5ms_to_the_interval() {
        let i = Duration::from_secs(1);
        assert_eq!(starting_delay(0, i), Duration::from_millis(5));
        assert_eq!(starting_delay(1, i), Duration::from_millis(10));
        assert_eq!(starting_delay(4, i), Duration::from_millis(80));
        assert_eq!(starting_delay(8, i), i);
        assert_eq!(starting_delay(40, i), i);
    }

    #[tokio::test]
    async fn probe_times_out_on_a_silent_server() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        // Accepts (via the backlog) but never answers.
        let started = std::time::Instant::now();
        let t = Duration::from_millis(100);
        assert_eq!(
            probe(&http(), addr, t).await,
            Err(ProbeFailure::TimedOut(t))
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            probe(&HealthKind::Tcp, addr, T).await,
            Ok(()),
            "tcp passes on connect alone"
        );
        drop(l);
    }
}
