//! The worker's client socket as hyper sees it: a `TcpStream` whose
//! `shutdown` does nothing, because the connection task drops (closes) the
//! socket as soon as hyper finishes, and `close` sends the same FIN. hyper
//! shuts down the write side before it completes a connection, so without
//! this every connection paid an extra `shutdown(2)` (one of about nine
//! syscalls per request with `ab`, which opens a connection per request).
//!
//! Also here: `TCP_NODELAY` for every client socket, set once on the
//! listener where accepted sockets inherit it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug)]
pub(super) struct Socket(pub(super) TcpStream);

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    /// The FIN goes out with `close` when the connection task ends, right
    /// after hyper asks for this.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Small responses go out in one segment and must not wait for an ACK, so
/// every client socket gets `TCP_NODELAY`. On Linux an accepted socket
/// inherits it from the listener: setting it there once saves a
/// `setsockopt(2)` per connection. Elsewhere, or if that fails, it is set
/// on each accepted socket.
#[derive(Debug, Clone, Copy)]
pub(super) struct NoDelay {
    inherited: bool,
}

impl NoDelay {
    pub(super) fn new(listener: &TcpListener) -> Self {
        #[cfg(target_os = "linux")]
        let inherited =
            nix::sys::socket::setsockopt(listener, nix::sys::socket::sockopt::TcpNoDelay, &true)
                .is_ok();
        #[cfg(not(target_os = "linux"))]
        let inherited = {
            let _ = listener;
            false
        };
        NoDelay { inherited }
    }

    pub(super) fn apply(self, stream: &TcpStream) {
        if !self.inherited {
            let _ = stream.set_nodelay(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel behaviour `NoDelay` relies on: whichever way it got
    /// there, an accepted socket ends up with `TCP_NODELAY`.
    #[tokio::test]
    async fn accepted_sockets_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let nodelay = NoDelay::new(&listener);
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        nodelay.apply(&accepted);
        assert!(accepted.nodelay().unwrap());
        #[cfg(target_os = "linux")]
        assert!(nodelay.inherited, "Linux sockets inherit TCP_NODELAY");
    }
}
