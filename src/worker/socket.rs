//! `TCP_NODELAY` for every client socket, set once on the listener where
//! accepted sockets inherit it.

use tokio::net::{TcpListener, TcpStream};

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
