//! Active health probes. A probe is one attempt with a deadline; counting
//! consecutive results and deciding what they mean is the state machine's job
//! (`state.rs`), so this module only answers "did it pass".

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::HealthKind;

/// How often a `Starting` backend is probed: it takes traffic at its first
/// pass, so this bounds how long a restarted worker sits idle.
pub const STARTING_INTERVAL: Duration = Duration::from_millis(5);

/// One probe: `tcp` passes on connect; `http` passes on a 2xx or 3xx status
/// for `GET path`. Everything, connect included, must finish within `timeout`.
pub async fn probe(kind: &HealthKind, addr: SocketAddr, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, attempt(kind, addr))
        .await
        .unwrap_or(false)
}

async fn attempt(kind: &HealthKind, addr: SocketAddr) -> bool {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let path = match kind {
        HealthKind::Tcp => return true,
        HealthKind::Http { path } => path,
    };
    let _ = stream.set_nodelay(true);
    let Ok((mut sender, conn)) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await
    else {
        return false;
    };
    let Ok(req) = Request::get(path.as_str())
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::USER_AGENT, "fleet-health")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::new())
    else {
        return false;
    };
    let passed = |r: hyper::Result<hyper::Response<hyper::body::Incoming>>| {
        r.is_ok_and(|res| res.status().is_success() || res.status().is_redirection())
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
        assert!(probe(&http(), ok, T).await);
        assert!(probe(&http(), redirect, T).await);
    }

    #[tokio::test]
    async fn http_probe_fails_on_5xx_garbage_and_refused() {
        let bad = server(b"HTTP/1.1 503 Busy\r\ncontent-length: 0\r\n\r\n").await;
        let garbage = server(b"not http at all\r\n\r\n").await;
        assert!(!probe(&http(), bad, T).await);
        assert!(!probe(&http(), garbage, T).await);
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(!probe(&http(), closed, T).await);
        assert!(!probe(&HealthKind::Tcp, closed, T).await);
    }

    #[tokio::test]
    async fn probe_times_out_on_a_silent_server() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        // Accepts (via the backlog) but never answers.
        let started = std::time::Instant::now();
        assert!(!probe(&http(), addr, Duration::from_millis(100)).await);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(
            probe(&HealthKind::Tcp, addr, T).await,
            "tcp passes on connect alone"
        );
        drop(l);
    }
}
