//! Keep-alive idle timeout. hyper 1 has no idle timeout of its own for HTTP/1
//! (its header-read timer also runs while a kept-alive connection waits for
//! the next request, so it caps idleness too, but it is meant for slow heads
//! and is longer). So the connection's socket is wrapped to remember when a
//! byte last moved either way, and the connection task drops the connection
//! once nothing has moved for the idle timeout. Counting writes too means a
//! response still being sent is not idle, and a client that stops reading a
//! response (its window full, our writes pending) is cut off like an idle one.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// When a connection last moved a byte, shared between the socket wrapper
/// (written on every successful read or write) and the connection task.
#[derive(Debug)]
pub(super) struct Activity {
    epoch: Instant,
    /// Nanoseconds after `epoch` of the last read or write that moved bytes.
    last_ns: AtomicU64,
    /// Whether the client has sent anything at all.
    heard: AtomicBool,
}

impl Activity {
    pub(super) fn new() -> Self {
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

    /// The client has sent at least one byte: a request may be in flight.
    pub(super) fn heard(&self) -> bool {
        self.heard.load(Ordering::Relaxed)
    }

    /// When the connection becomes idle if nothing moves before then.
    pub(super) fn idle_at(&self, idle: Duration) -> Instant {
        self.epoch + Duration::from_nanos(self.last_ns.load(Ordering::Relaxed)) + idle
    }
}

/// A socket that reports its progress to an `Activity`.
#[derive(Debug)]
pub(super) struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Tracked<T> {
    pub(super) fn new(inner: T, activity: Arc<Activity>) -> Self {
        Tracked { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
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

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
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
