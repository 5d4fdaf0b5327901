//! Kept-alive connections to one backend, waiting for their next request.
//!
//! Bounded (`MAX_IDLE` per backend and engine thread) and short-lived: a connection idle for
//! `IDLE_FOR` is closed, which is shorter than the built-in worker's own
//! keep-alive (5 s), so a pooled connection is not reused just as the worker
//! closes it. Taken most-recent-first (the likeliest to be alive).
//!
//! Clean or gone: a connection comes here only when its response ended
//! exactly on a message boundary (the engine checks), and an idle one must
//! have nothing to read. Each is checked with the kernel itself (a peek, not
//! tokio's cached readiness, which can lag) by the once-a-second sweep, and
//! when it is taken after more than a millisecond in the pool if the
//! reactor has seen it readable since its last read (see `take`):
//! end-of-file means the backend closed it (normal),
//! any byte means the backend wrote outside a response (a body for a HEAD, a
//! short Content-Length). Such a connection is closed, and the backend is
//! not trusted with kept-alive connections for `DISTRUST_FOR`: bytes that
//! arrive only after the next request was sent cannot be told from its
//! answer, so a backend seen doing it once gets fresh connections only.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, recv};
use tokio::net::TcpStream;
use tracing::warn;

use crate::balancer::{EngineId, PerThread, engine_id};

/// Idle connections kept per backend and engine thread.
pub(crate) const MAX_IDLE: usize = 128;

/// A connection back in the pool for less than this is handed out without
/// the kernel peek (see `ConnPool::take`): the peek was one `recvfrom` in
/// every 12 system calls of a proxied request (BENCHMARKS.md).
const FRESH: Duration = Duration::from_millis(1);
/// How long an idle backend connection is kept.
pub(crate) const IDLE_FOR: Duration = Duration::from_secs(2);
/// How long a backend seen writing outside a response gets no kept-alive
/// connections (each sighting starts it again).
pub(crate) const DISTRUST_FOR: Duration = Duration::from_secs(60);

/// A backend's kept-alive connections, one pool per engine thread.
///
/// A connection is registered with the runtime of the thread that opened it
/// and is only ever handed out on that thread: its readiness then never
/// wakes another thread, and it never outlives its runtime in use. Each
/// thread takes and puts in its own part (`PerThread`), under a lock no
/// other thread takes but to `clear` it (no contention, no futex).
#[derive(Debug, Default)]
pub(crate) struct ConnPool {
    shards: PerThread<Shard>,
    /// No connection is kept until then (`stamp`; 0: trusted): the backend
    /// wrote stray bytes. Backend-wide, read lock-free on every `put`.
    distrusted_until: AtomicU64,
}

#[derive(Debug, Default)]
struct Shard(Mutex<Vec<Kept>>);

/// An idle connection, with the time it became idle and the engine thread
/// whose runtime it is registered with (its serial, unique in the process).
#[derive(Debug)]
struct Kept {
    conn: TcpStream,
    since: Instant,
    engine: u64,
}

impl ConnPool {
    /// A pooled connection with nothing to read and not closed, if any.
    /// `backend` names it in the log.
    pub(crate) fn take(&self, backend: SocketAddr) -> Option<TcpStream> {
        let me = engine_id();
        let shard = self.shards.here();
        loop {
            let kept = lock(shard).pop()?;
            // Another runtime's (a balancer that stopped, a thread whose
            // part this shares): not usable here.
            if kept.engine != serial(me) {
                continue;
            }
            let idle = kept.since.elapsed();
            if idle >= IDLE_FOR {
                continue;
            }
            // Back for less than `FRESH`: a stray byte now would be in the
            // same race as one that comes just after the request is sent
            // (which no proxy can tell from the answer), so the system call
            // buys nothing there; on a busy fleet it is most takes.
            if idle < FRESH || !reactor_saw_input(&kept.conn) {
                return Some(kept.conn);
            }
            match peek(&kept.conn) {
                Idle::Quiet => return Some(kept.conn),
                Idle::Closed => {}
                Idle::Stray => self.stray_bytes(backend),
            }
        }
    }

    /// Keep `conn` for a later request, unless this thread's pool is full
    /// or the backend is not trusted with kept-alive connections.
    pub(crate) fn put(&self, conn: TcpStream) {
        let now = Instant::now();
        if self.distrusted_until.load(Ordering::Relaxed) > stamp(now) {
            return;
        }
        let me = engine_id();
        let mut conns = lock(self.shards.here());
        if conns.len() < MAX_IDLE {
            conns.push(Kept {
                conn,
                since: now,
                engine: serial(me),
            });
        }
    }

    /// The backend wrote bytes outside a response: close its idle
    /// connections (every thread's) and keep none for `DISTRUST_FOR`.
    /// Logged when it starts.
    pub(crate) fn stray_bytes(&self, backend: SocketAddr) {
        let now = Instant::now();
        let was = self
            .distrusted_until
            .swap(stamp(now + DISTRUST_FOR), Ordering::Relaxed);
        self.clear();
        if was <= stamp(now) {
            warn!(
                target: "balancer",
                %backend,
                "backend sent bytes outside a response; its connections are not reused for {}s",
                DISTRUST_FOR.as_secs()
            );
        }
    }

    /// This thread's part: close the connections idle for `IDLE_FOR` or
    /// longer, those the backend closed or wrote to, and those of another
    /// runtime.
    pub(crate) fn prune(&self, backend: SocketAddr) {
        let me = engine_id();
        let mut stray = false;
        let dropped: Vec<_> = {
            let mut conns = lock(self.shards.here());
            let all = std::mem::take(&mut *conns);
            let (keep, drop): (Vec<_>, Vec<_>) = all.into_iter().partition(|kept| {
                if kept.engine != serial(me) || kept.since.elapsed() >= IDLE_FOR {
                    return false;
                }
                match peek(&kept.conn) {
                    Idle::Quiet => true,
                    Idle::Closed => false,
                    Idle::Stray => {
                        stray = true;
                        false
                    }
                }
            });
            *conns = keep;
            drop
        };
        // Closed outside the lock.
        drop(dropped);
        if stray {
            self.stray_bytes(backend);
        }
    }

    /// Close them all, every thread's (the backend failed or left the pool).
    pub(crate) fn clear(&self) {
        for shard in self.shards.all() {
            let all = std::mem::take(&mut *lock(shard));
            drop(all);
        }
    }

    /// Close this thread's (its balancer stopped).
    pub(crate) fn clear_here(&self) {
        let all = std::mem::take(&mut *lock(self.shards.here()));
        drop(all);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.all().map(|s| lock(s).len()).sum()
    }
}

fn lock(shard: &Shard) -> MutexGuard<'_, Vec<Kept>> {
    shard
        .0
        .lock()
        .expect("idle pool lock is never poisoned: no panics while held")
}

/// The serial of the engine thread `me` (0 outside any).
fn serial(me: Option<EngineId>) -> u64 {
    me.map_or(0, |e| e.serial)
}

/// `t` as milliseconds since this process first asked, plus one (so 0 can
/// mean "never"), for times kept in an atomic.
fn stamp(t: Instant) -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(t.saturating_duration_since(base).as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

/// What an idle connection holds.
#[derive(Debug, PartialEq, Eq)]
enum Idle {
    /// Nothing: ready for a request.
    Quiet,
    /// End-of-file or an error: the backend closed it.
    Closed,
    /// Bytes no request asked for.
    Stray,
}

/// Whether the reactor has seen bytes or an end on `conn` since its last
/// read found it drained. Nothing seen: handed out without the peek, which
/// was a `recvfrom` finding nothing on a third of requests (ab -c 10). The
/// reactor lags the kernel only by what arrived since this thread's last
/// turn, the same race a byte arriving just after the request is sent runs
/// (see `FRESH`); a connection that was last read to a full buffer stays
/// readable here and is peeked.
fn reactor_saw_input(conn: &TcpStream) -> bool {
    // A no-op waker: nothing waits on an idle connection, and a `Pending`
    // that registers it wakes no one.
    let mut cx = Context::from_waker(Waker::noop());
    conn.poll_read_ready(&mut cx).is_ready()
}

/// Ask the kernel, not tokio's readiness (which is only as fresh as the
/// reactor's last turn), and leave the bytes where they are.
fn peek(conn: &TcpStream) -> Idle {
    let mut probe = [0u8; 1];
    match recv(
        conn.as_raw_fd(),
        &mut probe,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    ) {
        Err(Errno::EAGAIN) => Idle::Quiet,
        Ok(0) | Err(_) => Idle::Closed,
        Ok(_) => Idle::Stray,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// The backend, as the log names it.
    const ADDR: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

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

    /// A pool holding two idle connections to ADDR, put in this order: a
    /// clean one, then one whose peer comes back first for the test to write
    /// stray bytes on. The clean one's peer comes back second, to keep open.
    async fn clean_and_stray(l: &tokio::net::TcpListener) -> (ConnPool, TcpStream, TcpStream) {
        let pool = ConnPool::default();
        let (c, peer) = pair(l).await;
        let (clean, keep) = pair(l).await;
        pool.put(clean);
        pool.put(c);
        (pool, peer, keep)
    }

    #[tokio::test]
    async fn a_connection_the_peer_closed_is_not_handed_out() {
        let l = listener().await;
        let pool = ConnPool::default();
        let (open, _keep) = pair(&l).await;
        let (closed, peer) = pair(&l).await;
        pool.put(open);
        pool.put(closed);
        drop(peer);
        // Let the FIN arrive and the reactor see it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take(ADDR).is_some(), "the open one is still there");
        assert!(pool.take(ADDR).is_none(), "the closed one was dropped");
    }

    #[tokio::test]
    async fn a_connection_with_unexpected_bytes_is_dropped_and_the_backend_distrusted() {
        let l = listener().await;
        let (pool, mut peer, _keep) = clean_and_stray(&l).await;
        peer.write_all(b"HTTP/1.1 200 OK\r\n").await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            pool.take(ADDR).is_none(),
            "neither the stray one nor the rest"
        );
        let (again, _keep2) = pair(&l).await;
        pool.put(again);
        assert_eq!(
            pool.len(),
            0,
            "a distrusted backend's connections are not kept"
        );
    }

    #[tokio::test]
    async fn the_sweep_closes_a_connection_that_received_bytes_while_idle() {
        let l = listener().await;
        let (pool, mut peer, _keep) = clean_and_stray(&l).await;
        pool.prune(ADDR);
        assert_eq!(pool.len(), 2, "both are quiet");
        peer.write_all(b"x").await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        pool.prune(ADDR);
        assert_eq!(pool.len(), 0, "the stray byte costs the backend its pool");
        // The stray connection was closed (with unread bytes: a reset).
        let mut buf = [0u8; 1];
        let r = tokio::io::AsyncReadExt::read(&mut peer, &mut buf).await;
        assert!(
            matches!(&r, Ok(0))
                || matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn a_closed_connection_does_not_distrust_the_backend() {
        let l = listener().await;
        let pool = ConnPool::default();
        let (c, peer) = pair(&l).await;
        pool.put(c);
        drop(peer);
        tokio::time::sleep(Duration::from_millis(50)).await;
        pool.prune(ADDR);
        let (again, _keep) = pair(&l).await;
        pool.put(again);
        assert_eq!(
            pool.len(),
            1,
            "a backend closing a kept-alive connection is normal"
        );
    }

    #[tokio::test]
    async fn the_pool_is_bounded_and_pruned() {
        let l = listener().await;
        let pool = ConnPool::default();
        let mut peers = Vec::new();
        for _ in 0..MAX_IDLE + 3 {
            let (c, p) = pair(&l).await;
            peers.push(p);
            pool.put(c);
        }
        assert_eq!(pool.len(), MAX_IDLE);
        pool.prune(ADDR);
        assert_eq!(pool.len(), MAX_IDLE, "nothing has expired yet");
        pool.clear();
        assert_eq!(pool.len(), 0);
    }
}
