//! In-process tests of `balancer::run`: the balancer on a port-0 listener in
//! front of fake backends on port-0 listeners, all in this test's runtime, so
//! the failure paths (a refused connect, a backend that dies before
//! answering, no backend at all) are driven exactly and run in milliseconds.
//! The real-process tests in `tests/it` cover what a user sees end to end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::pool::{Pool, Roster, Slot};
use crate::config::Config;
use crate::lifecycle::{Lifecycle, Phase};
use crate::listener::Listening;

/// Generous bound for anything a test waits on; nothing here should take
/// more than a fraction of it, even on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(10);

/// How a fake backend treats a request.
#[derive(Clone, Copy)]
enum Behaviour {
    /// A 200 whose body is the backend's port.
    Answer,
    /// Read the request, then close without a byte of response (a worker
    /// killed mid-request).
    CloseBeforeAnswer,
}

/// A backend on a port-0 listener, counting the requests it read.
struct FakeBackend {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl FakeBackend {
    async fn start(behaviour: Behaviour) -> FakeBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let count = Arc::clone(&count);
                tokio::spawn(async move {
                    if read_head(&mut conn).await.is_none() {
                        return;
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    if let Behaviour::Answer = behaviour {
                        let body = addr.port().to_string();
                        let response = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = conn.write_all(response.as_bytes()).await;
                        let _ = conn.shutdown().await;
                    }
                });
            }
        });
        FakeBackend {
            addr,
            requests,
            task,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address that refuses connections: a port-0 listener, closed.
async fn refusing_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// Read up to the end of a request or response head; `None` at EOF first.
async fn read_head(conn: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Some(head)
}

/// A backend slot as the supervisor would publish it, and the receiver of
/// its passive-failure reports.
fn slot(addr: SocketAddr, routable: bool) -> (Arc<Slot>, mpsc::Receiver<()>) {
    let (slot, failures) = Slot::new(addr.port(), addr);
    let status = Lifecycle {
        state: if routable {
            Phase::Running
        } else {
            Phase::Starting
        },
        ..Lifecycle::default()
    };
    slot.publish(routable, status);
    (Arc::new(slot), failures)
}

/// `balancer::run` on a port-0 listener in front of `slots`.
struct Balancer {
    addr: SocketAddr,
    backends: Arc<Roster>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Balancer {
    async fn start(slots: Vec<Arc<Slot>>) -> Balancer {
        let mut listener = Listening::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let backends = Arc::new(Roster::new(Pool::new(slots), Config::default().balancer));
        let stop = CancellationToken::new();
        // Two engine threads, whatever the machine: each its own runtime.
        listener.fill(2);
        let task = tokio::spawn(super::run(
            listener,
            2,
            Arc::clone(&backends),
            stop.clone(),
            stop.child_token(),
            TaskTracker::new(),
        ));
        Balancer {
            addr,
            backends,
            stop,
            task,
        }
    }

    /// `method /` on a new connection; the response's status and body, or
    /// `None` when the connection closed without a response.
    async fn request(&self, method: &str) -> Option<(u16, String)> {
        let mut conn = TcpStream::connect(self.addr).await.unwrap();
        let request = format!(
            "{method} / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        timeout(PATIENCE, async {
            let mut buf = [0u8; 4096];
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
        .expect("the balancer answers or closes within the patience");
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.to_owned()))
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

#[tokio::test]
async fn a_refused_connect_is_retried_on_the_next_backend_and_reported() {
    let alive = FakeBackend::start(Behaviour::Answer).await;
    let dead_addr = refusing_addr().await;
    let (dead, mut dead_failures) = slot(dead_addr, true);
    let (up, _) = slot(alive.addr, true);
    let lb = Balancer::start(vec![Arc::clone(&dead), up]).await;
    // Round-robin starts the two requests at different backends, so one of
    // them tries the dead backend first.
    for _ in 0..2 {
        let answer = lb.request("GET").await;
        assert_eq!(answer, Some((200, alive.addr.port().to_string())));
    }
    assert_eq!(alive.requests(), 2);
    // Passive failure: out of rotation at once, and its owner is told.
    assert!(!dead.routable());
    timeout(PATIENCE, dead_failures.recv())
        .await
        .expect("the owner hears of the failure")
        .expect("the slot is alive");
}

#[tokio::test]
async fn a_get_whose_backend_closes_before_answering_is_replayed_elsewhere_and_struck() {
    let closer = FakeBackend::start(Behaviour::CloseBeforeAnswer).await;
    let alive = FakeBackend::start(Behaviour::Answer).await;
    let (closing, _failures) = slot(closer.addr, true);
    let (up, _) = slot(alive.addr, true);
    let lb = Balancer::start(vec![Arc::clone(&closing), up]).await;
    let answer = lb.request("GET").await;
    assert_eq!(answer, Some((200, alive.addr.port().to_string())));
    assert!(
        closing.routable(),
        "one dropped request is a strike, not an ejection"
    );
    // `eject_after` (5) in a row, with nothing it answered between: out.
    let mut sent = 1;
    while closing.routable() && sent < 20 {
        let answer = lb.request("GET").await;
        assert_eq!(answer, Some((200, alive.addr.port().to_string())));
        sent += 1;
    }
    assert!(!closing.routable(), "out after its strikes");
    assert_eq!(closer.requests(), 5, "each of its strikes was one request");
}

#[tokio::test]
async fn a_lone_backend_that_drops_every_request_stays_in_rotation() {
    let closer = FakeBackend::start(Behaviour::CloseBeforeAnswer).await;
    let (closing, _failures) = slot(closer.addr, true);
    let lb = Balancer::start(vec![Arc::clone(&closing)]).await;
    for _ in 0..7 {
        let answer = lb.request("GET").await;
        assert_eq!(answer.map(|a| a.0), Some(502));
    }
    assert!(
        closing.routable(),
        "failed requests never take out the last routable backend"
    );
}

#[tokio::test]
async fn a_client_waits_for_a_backend_that_becomes_routable() {
    let alive = FakeBackend::start(Behaviour::Answer).await;
    let (starting, _) = slot(alive.addr, false);
    let lb = Balancer::start(vec![Arc::clone(&starting)]).await;
    let request = lb.request("GET");
    tokio::pin!(request);
    // The client is held (no backend is routable) ...
    assert!(
        timeout(Duration::from_millis(50), &mut request)
            .await
            .is_err(),
        "answered with no routable backend"
    );
    // ... until its backend comes up within the wait.
    starting.publish(
        true,
        Lifecycle {
            state: Phase::Running,
            ..Lifecycle::default()
        },
    );
    lb.backends.notify(true);
    let answer = request.await;
    assert_eq!(answer, Some((200, alive.addr.port().to_string())));
}

#[tokio::test]
async fn with_no_backend_ever_routable_a_client_is_let_go() {
    let (never, _) = slot(refusing_addr().await, false);
    let lb = Balancer::start(vec![never]).await;
    // Closed (tcp mode) or refused with an error status (http mode), but
    // never served and never left hanging: `request` bounds the wait.
    let answer = lb.request("GET").await;
    assert!(
        answer.as_ref().is_none_or(|(status, _)| *status >= 500),
        "{answer:?}"
    );
}

#[tokio::test]
async fn a_client_queued_when_accepting_stops_is_answered_not_reset() {
    let backend = FakeBackend::start(Behaviour::Answer).await;
    let (up, _) = slot(backend.addr, true);
    let mut listener = Listening::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    listener.fill(2);
    // Connected and sent in full before any engine thread accepts: the
    // request waits in the kernel's queue of the socket.
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let backends = Arc::new(Roster::new(Pool::new(vec![up]), Config::default().balancer));
    // Accepting has stopped before the balancer even looks: closing its
    // sockets would reset the queued client; it is answered instead.
    let stop = CancellationToken::new();
    stop.cancel();
    let hard_stop = CancellationToken::new();
    let run = tokio::spawn(super::run(
        listener,
        2,
        backends,
        stop,
        hard_stop.clone(),
        TaskTracker::new(),
    ));
    let mut raw = Vec::new();
    let read = timeout(PATIENCE, client.read_to_end(&mut raw)).await;
    hard_stop.cancel();
    let _ = timeout(PATIENCE, run).await;
    read.expect("answered within the patience")
        .expect("not reset");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    assert!(text.ends_with(&backend.addr.port().to_string()), "{text:?}");
    assert_eq!(backend.requests(), 1);
}
