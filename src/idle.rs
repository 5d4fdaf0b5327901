//! Idle tracking for a balancer connection: a
//! socket wrapper that stamps when a byte last moved either way, and the
//! queries a connection task needs to drop the connection once nothing has
//! moved for its idle timeout. Counting writes too means a response still
//! being sent is not idle, and a peer that stops reading (its window full,
//! our writes pending) is cut off like an idle one.
//!
//! The balancer needs it for its tunnels and spliced connections (the
//! worker, which does its own reads and writes, times each wait itself).
//! What a wrapped socket reports to is an [`Observer`]: a shared `Activity`
//! (`Arc`), or one a balancer task that owns both streams lends by
//! reference, with byte counters for the metrics beside it ([`Counted`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::metrics::Counter;

/// When a connection last moved a byte, shared between the socket wrapper
/// (written on every successful read or write) and the connection task.
#[derive(Debug)]
pub(crate) struct Activity {
    epoch: Instant,
    /// Nanoseconds after `epoch` of the last read or write that moved bytes.
    last_ns: AtomicU64,
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
        }
    }

    fn touch(&self) {
        let ns = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_ns.store(ns, Ordering::Relaxed);
    }

    /// When the connection becomes idle if nothing moves before then.
    pub(crate) fn idle_at(&self, idle: Duration) -> Instant {
        self.epoch + Duration::from_nanos(self.last_ns.load(Ordering::Relaxed)) + idle
    }

    /// Completes once nothing has moved for `idle`.
    pub(crate) async fn idle_for(&self, idle: Duration) {
        loop {
            let at = self.idle_at(idle);
            if Instant::now() >= at {
                return;
            }
            tokio::time::sleep_until(at).await;
        }
    }
}

/// What a [`Tracked`] socket reports its progress to.
pub(crate) trait Observer {
    fn activity(&self) -> &Activity;
    /// `n` bytes were read (n > 0).
    fn read(&self, _n: u64) {}
    /// `n` bytes were written (n > 0).
    fn written(&self, _n: u64) {}
}

impl Observer for Arc<Activity> {
    fn activity(&self) -> &Activity {
        self
    }
}

impl Observer for &Activity {
    fn activity(&self) -> &Activity {
        self
    }
}

/// An activity and two byte counters (bytes read, bytes written).
pub(crate) struct Counted<'a> {
    pub(crate) activity: &'a Activity,
    pub(crate) read: &'a Counter,
    pub(crate) written: &'a Counter,
}

impl Observer for Counted<'_> {
    fn activity(&self) -> &Activity {
        self.activity
    }
    fn read(&self, n: u64) {
        self.read.add(n);
    }
    fn written(&self, n: u64) {
        self.written.add(n);
    }
}

/// A socket that reports its progress to an [`Observer`].
#[derive(Debug)]
pub(crate) struct Tracked<T, O> {
    inner: T,
    observer: O,
}

impl<T, O: Observer> Tracked<T, O> {
    pub(crate) fn new(inner: T, observer: O) -> Self {
        Tracked { inner, observer }
    }

    /// The wrapped socket, for calls that move no bytes (`shutdown`).
    pub(crate) fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    fn moved_in(&self, n: usize) {
        let a = self.observer.activity();
        a.touch();
        self.observer.read(n as u64);
    }

    /// Counts what a write moved, and passes its result on.
    fn wrote(&self, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.observer.activity().touch();
            self.observer.written(n as u64);
        }
        r
    }
}

impl<T: AsyncRead + Unpin, O: Observer + Unpin> AsyncRead for Tracked<T, O> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if matches!(r, Poll::Ready(Ok(()))) && n > 0 {
            this.moved_in(n);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin, O: Observer + Unpin> AsyncWrite for Tracked<T, O> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(r)
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
    async fn reads_and_writes_push_the_idle_deadline() {
        let activity = Arc::new(Activity::new());
        let (a, mut b) = tokio::io::duplex(64);
        let mut tracked = Tracked::new(a, Arc::clone(&activity));
        let idle = Duration::from_secs(1);
        let start = activity.idle_at(idle);

        tokio::time::advance(Duration::from_millis(300)).await;
        tracked.write_all(b"x").await.unwrap();
        assert!(activity.idle_at(idle) > start, "a write is activity");

        tokio::time::advance(Duration::from_millis(300)).await;
        b.write_all(b"y").await.unwrap();
        let mut buf = [0u8; 1];
        tracked.read_exact(&mut buf).await.unwrap();
        assert_eq!(activity.idle_at(idle), Instant::now() + idle);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_for_completes_only_after_a_quiet_period() {
        let activity = Activity::new();
        let (a, _b) = tokio::io::duplex(64);
        let mut tracked = Tracked::new(a, &activity);
        let begin = Instant::now();
        tokio::time::advance(Duration::from_millis(500)).await;
        tracked.write_all(b"x").await.unwrap();
        activity.idle_for(Duration::from_secs(1)).await;
        assert_eq!(Instant::now() - begin, Duration::from_millis(1500));
    }

    #[tokio::test]
    async fn counted_sockets_add_the_bytes_each_way() {
        let activity = Activity::new();
        let (read, written) = (Counter::default(), Counter::default());
        let (a, mut b) = tokio::io::duplex(64);
        let mut tracked = Tracked::new(
            a,
            Counted {
                activity: &activity,
                read: &read,
                written: &written,
            },
        );
        tracked.write_all(b"hello").await.unwrap();
        b.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        tracked.read_exact(&mut buf).await.unwrap();
        assert_eq!((read.get(), written.get()), (2, 5));
    }
}
