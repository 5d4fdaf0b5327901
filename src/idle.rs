//! Idle tracking for a connection: a socket wrapper that stamps when a byte
//! last moved either way, and the queries a connection task needs to drop the
//! connection once nothing has moved for its idle timeout. Counting writes
//! too means a response still being sent is not idle, and a peer that stops
//! reading (its window full, our writes pending) is cut off like an idle one.
//!
//! The worker needs it because hyper 1 has no idle timeout of its own for
//! HTTP/1 (its header-read timer also runs while a kept-alive connection
//! waits for the next request, so it caps idleness too, but it is meant for
//! slow heads and is longer). The wrapper is generic over how the `Activity`
//! is held: the worker shares it through an `Arc` with hyper's connection
//! future, while a task that owns both streams can lend it by reference.
//!
//! Note: the balancer still has its own copy (`balancer::idle`), left alone
//! while the balancer is being rewritten for per-request HTTP balancing; it
//! should move to this module (`Tracked<S, &Activity>` is its shape), bringing
//! what only it needs: a future that completes when idle, access to the inner
//! socket, and the byte counters the metrics read.

use std::io;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// When a connection last moved a byte, shared between the socket wrapper
/// (written on every successful read or write) and the connection task.
#[derive(Debug)]
pub(crate) struct Activity {
    epoch: Instant,
    /// Nanoseconds after `epoch` of the last read or write that moved bytes.
    last_ns: AtomicU64,
    /// Whether the client has sent anything at all.
    heard: AtomicBool,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    pub(crate) fn new() -> Self {
        Activity {
            epoch: Instant::now(),
            last_ns: AtomicU64::new(0),
            heard: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        let ns = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_ns.store(ns, Ordering::Relaxed);
    }

    /// The peer has sent at least one byte: a request may be in flight.
    pub(crate) fn heard(&self) -> bool {
        self.heard.load(Ordering::Relaxed)
    }

    /// When the connection becomes idle if nothing moves before then.
    pub(crate) fn idle_at(&self, idle: Duration) -> Instant {
        self.epoch + Duration::from_nanos(self.last_ns.load(Ordering::Relaxed)) + idle
    }
}

/// A socket that reports its progress to an `Activity` held as `A`
/// (`Arc<Activity>` or `&Activity`).
#[derive(Debug)]
pub(crate) struct Tracked<T, A> {
    inner: T,
    activity: A,
}

impl<T, A: Deref<Target = Activity>> Tracked<T, A> {
    pub(crate) fn new(inner: T, activity: A) -> Self {
        Tracked { inner, activity }
    }
}

impl<T: AsyncRead + Unpin, A: Deref<Target = Activity> + Unpin> AsyncRead for Tracked<T, A> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
            this.activity.heard.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin, A: Deref<Target = Activity> + Unpin> AsyncWrite for Tracked<T, A> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn reads_and_writes_push_the_idle_deadline_and_reads_count_as_heard() {
        let activity = Arc::new(Activity::new());
        let (a, mut b) = tokio::io::duplex(64);
        let mut tracked = Tracked::new(a, Arc::clone(&activity));
        let idle = Duration::from_secs(1);
        let start = activity.idle_at(idle);
        assert!(!activity.heard());

        tokio::time::advance(Duration::from_millis(300)).await;
        tracked.write_all(b"x").await.unwrap();
        assert!(activity.idle_at(idle) > start, "a write is activity");
        assert!(!activity.heard(), "our own write is not the peer speaking");

        tokio::time::advance(Duration::from_millis(300)).await;
        b.write_all(b"y").await.unwrap();
        let mut buf = [0u8; 1];
        tracked.read_exact(&mut buf).await.unwrap();
        assert!(activity.heard());
        assert_eq!(activity.idle_at(idle), Instant::now() + idle);
    }
}
