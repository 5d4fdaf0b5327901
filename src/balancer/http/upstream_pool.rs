//! Kept-alive connections to one backend, waiting for their next request.
//!
//! Bounded (`MAX_IDLE` per backend) and short-lived: a connection idle for
//! `IDLE_FOR` is closed, which is shorter than the built-in worker's own
//! keep-alive (5 s), so a pooled connection is not reused just as the worker
//! closes it. Taken most-recent-first (the likeliest to be alive), and checked
//! before use: one that the backend closed (or that holds unexpected bytes)
//! is dropped, so a request is only ever written to a connection that looked
//! alive a moment before.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// Idle connections kept per backend.
pub(crate) const MAX_IDLE: usize = 128;
/// How long an idle backend connection is kept.
pub(crate) const IDLE_FOR: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub(crate) struct IdleConns {
    /// Oldest first; each with the time it became idle.
    conns: Mutex<Vec<(TcpStream, Instant)>>,
}

impl IdleConns {
    /// A pooled connection that still looks open, if any.
    pub(crate) fn take(&self) -> Option<TcpStream> {
        loop {
            let (conn, since) = self.lock().pop()?;
            if since.elapsed() < IDLE_FOR && looks_open(&conn) {
                return Some(conn);
            }
        }
    }

    /// Keep `conn` for a later request, unless the pool is full.
    pub(crate) fn put(&self, conn: TcpStream) {
        let mut conns = self.lock();
        if conns.len() < MAX_IDLE {
            conns.push((conn, Instant::now()));
        }
    }

    /// Close the connections idle for `IDLE_FOR` or longer.
    pub(crate) fn prune(&self) {
        let expired: Vec<_> = {
            let mut conns = self.lock();
            let keep = conns
                .iter()
                .position(|(_, since)| since.elapsed() < IDLE_FOR)
                .unwrap_or(conns.len());
            conns.drain(..keep).collect()
        };
        // Closed outside the lock.
        drop(expired);
    }

    /// Close them all (the backend failed or left the pool).
    pub(crate) fn clear(&self) {
        let all = std::mem::take(&mut *self.lock());
        drop(all);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(TcpStream, Instant)>> {
        self.conns
            .lock()
            .expect("idle pool lock is never poisoned: no panics while held")
    }
}

/// An idle connection must have nothing to read: end-of-file means the
/// backend closed it, bytes mean it is out of step. `WouldBlock` is the
/// healthy answer.
fn looks_open(conn: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(conn.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn listener() -> tokio::net::TcpListener {
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
    }

    async fn pair(l: &tokio::net::TcpListener) -> (TcpStream, TcpStream) {
        let c = TcpStream::connect(l.local_addr().expect("bound"))
            .await
            .expect("connect");
        let (s, _) = l.accept().await.expect("accept");
        (c, s)
    }

    #[tokio::test]
    async fn a_connection_the_peer_closed_is_not_handed_out() {
        let l = listener().await;
        let pool = IdleConns::default();
        let (open, _keep) = pair(&l).await;
        let (closed, peer) = pair(&l).await;
        pool.put(open);
        pool.put(closed);
        drop(peer);
        // Let the FIN arrive and the reactor see it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take().is_some(), "the open one is still there");
        assert!(pool.take().is_none(), "the closed one was dropped");
    }

    #[tokio::test]
    async fn a_connection_with_unexpected_bytes_is_dropped() {
        let l = listener().await;
        let pool = IdleConns::default();
        let (c, mut peer) = pair(&l).await;
        peer.write_all(b"HTTP/1.1 200 OK\r\n").await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        pool.put(c);
        assert!(pool.take().is_none());
    }

    #[tokio::test]
    async fn the_pool_is_bounded_and_pruned() {
        let l = listener().await;
        let pool = IdleConns::default();
        let mut peers = Vec::new();
        for _ in 0..MAX_IDLE + 3 {
            let (c, p) = pair(&l).await;
            peers.push(p);
            pool.put(c);
        }
        assert_eq!(pool.len(), MAX_IDLE);
        pool.prune();
        assert_eq!(pool.len(), MAX_IDLE, "nothing has expired yet");
        pool.clear();
        assert_eq!(pool.len(), 0);
    }
}
