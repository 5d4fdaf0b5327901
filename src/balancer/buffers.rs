//! Byte buffers from a per-thread free list: taken when bytes arrive,
//! returned (on drop) when the request is over, so a request reuses the
//! memory of the one before it instead of asking the allocator again, and
//! an idle kept-alive connection holds none.
//!
//! Two sizes, so a request that needs only small buffers (most of them) does
//! not hold large ones: `small` (a request or response head, `SMALL`) and
//! `large` (a body moving in parts, `LARGE`). A returned buffer goes to the
//! list its capacity fits; one grown past `2 * LARGE` (a huge head) goes back
//! to the allocator, and so does one past `KEEP` on its list. So a thread
//! keeps at most `KEEP * (LARGE + 2 * LARGE)` bytes idle.
//!
//! A thread-local list, not a shared one: no lock, and no other thread's
//! cache line, per buffer; a task that moves threads simply returns its
//! buffers to the list of the thread it finished on.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::ops::{Deref, DerefMut};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

use crate::idle::{Observer, Tracked};

/// A head's first allocation.
pub(crate) const SMALL: usize = 4 * 1024;
/// Body bytes moved per read.
pub(crate) const LARGE: usize = 16 * 1024;
/// Free buffers kept per thread and size.
const KEEP: usize = 32;

thread_local! {
    static SMALLS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static LARGES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
thread_local! {
    /// Buffers taken on this thread and not given back yet.
    static LIVE: std::cell::Cell<isize> = const { std::cell::Cell::new(0) };
}

/// How many buffers this thread's tasks hold now (tests: "an idle
/// connection holds none").
#[cfg(test)]
pub(crate) fn live() -> isize {
    LIVE.with(std::cell::Cell::get)
}

/// A `Vec<u8>` that goes back to its thread's free list when dropped.
#[derive(Debug, Default)]
pub(crate) struct Buf(Vec<u8>);

impl Buf {
    /// No buffer at all (no allocation): what an idle connection holds.
    pub(crate) const fn none() -> Buf {
        Buf(Vec::new())
    }

    /// An empty buffer with room for at least `SMALL` bytes.
    pub(crate) fn small() -> Buf {
        Buf::take(&SMALLS, SMALL)
    }

    /// An empty buffer with room for at least `LARGE` bytes.
    pub(crate) fn large() -> Buf {
        Buf::take(&LARGES, LARGE)
    }

    fn take(list: &'static std::thread::LocalKey<RefCell<Vec<Vec<u8>>>>, size: usize) -> Buf {
        let mut v = list
            .try_with(|l| l.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_default();
        v.reserve(size);
        #[cfg(test)]
        LIVE.with(|l| l.set(l.get() + 1));
        Buf(v)
    }
}

impl Deref for Buf {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let cap = self.0.capacity();
        #[cfg(test)]
        if cap > 0 {
            LIVE.with(|l| l.set(l.get() - 1));
        }
        let list = match cap {
            0 => return,
            c if c < LARGE => &SMALLS,
            c if c <= 2 * LARGE => &LARGES,
            _ => return,
        };
        let mut v = std::mem::take(&mut self.0);
        v.clear();
        // At thread exit the list may be gone: the buffer is just freed.
        let _ = list.try_with(|l| {
            let mut l = l.borrow_mut();
            if l.len() < KEEP {
                l.push(v);
            }
        });
    }
}

/// A stream that can say "bytes to read" without being read, so a reader
/// takes a buffer only once there is something to put in it.
pub(crate) trait ReadReady: AsyncRead + Unpin {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl ReadReady for TcpStream {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

impl ReadReady for &mut TcpStream {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

impl<T: ReadReady, O: Observer + Unpin> ReadReady for Tracked<T, O> {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_read_ready(cx)
    }
}

/// One read into a buffer from `take`, taken only once `stream` is ready;
/// an empty buffer is the end of the stream. Pending holds no buffer: with
/// nothing there after all (readiness can be stale or spurious) it goes back
/// to the free list.
///
/// Through `poll_read`, not `try_read_buf`: after a short read tokio's
/// `poll_read` clears the socket's readiness, so the next read waits for
/// epoll instead of costing a recvfrom that finds nothing.
pub(crate) fn poll_read_taken<S: ReadReady>(
    stream: &mut S,
    cx: &mut Context<'_>,
    take: fn() -> Buf,
) -> Poll<io::Result<Buf>> {
    ready!(stream.poll_read_ready(cx))?;
    poll_take_and_read(stream, cx, take)
}

/// [`poll_read_taken`] for any stream, without asking for readiness
/// first: a poll that finds nothing costs a free-list pop and push.
pub(crate) fn poll_take_and_read<S: AsyncRead + Unpin>(
    stream: &mut S,
    cx: &mut Context<'_>,
    take: fn() -> Buf,
) -> Poll<io::Result<Buf>> {
    let mut buf = take();
    let read = std::pin::pin!(stream.read_buf(&mut *buf)).poll(cx);
    match read {
        Poll::Ready(Ok(_)) => Poll::Ready(Ok(buf)),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        // Read nothing: readiness cleared and the task registered.
        Poll::Pending => Poll::Pending,
    }
}

/// [`poll_take_and_read`] as a future.
pub(crate) async fn take_and_read<S: AsyncRead + Unpin>(
    stream: &mut S,
    take: fn() -> Buf,
) -> io::Result<Buf> {
    std::future::poll_fn(|cx| poll_take_and_read(stream, cx, take)).await
}

/// [`poll_read_taken`] as a future.
pub(crate) async fn read_taken<S: ReadReady>(stream: &mut S, take: fn() -> Buf) -> io::Result<Buf> {
    std::future::poll_fn(|cx| poll_read_taken(stream, cx, take)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_buffer_is_reused_by_the_next_take() {
        let mut b = Buf::small();
        b.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let at = b.as_ptr();
        drop(b);
        let again = Buf::small();
        assert_eq!(again.as_ptr(), at, "the same memory, from the free list");
        assert!(again.is_empty(), "returned cleared");
    }

    #[test]
    fn none_holds_no_memory_and_is_not_counted() {
        let before = live();
        let b = Buf::none();
        assert_eq!(b.capacity(), 0);
        drop(b);
        let large = Buf::large();
        assert!(large.capacity() >= LARGE);
        assert_eq!(live(), before + 1);
        drop(large);
        assert_eq!(live(), before);
    }

    #[test]
    fn a_huge_buffer_goes_back_to_the_allocator() {
        let mut b = Buf::large();
        b.reserve(8 * LARGE);
        drop(b);
        assert!(
            Buf::large().capacity() <= 2 * LARGE,
            "the huge one was not kept"
        );
    }
}
