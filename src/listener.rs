//! Listening sockets, for the balancer and the built-in worker alike: one
//! way to bind (address reuse, a deep backlog) and one accept loop that
//! survives errors without spinning.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Listen backlog; the kernel caps it at `net.core.somaxconn`. Clients past a
/// connection cap, and bursts faster than accept, wait here. Large, because an
/// overflow silently stalls clients: std's default (128) overflowed under
/// `ab -c 500`, the lab's `listen(5)` much sooner, and each dropped SYN costs
/// a client a 1 s retransmit.
pub(crate) const BACKLOG: u32 = 4096;

/// Pause after an accept error such as EMFILE, so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Bind `addr` with SO_REUSEADDR and a [`BACKLOG`]-deep queue. Needs a
/// runtime context (the socket is registered with it) but starts nothing.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Lets a restarted listener bind while old connections sit in TIME_WAIT;
    // on Linux and macOS it does not let two listeners share the port.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The next connection, or `None` once `stop` is cancelled. Errors that
/// concern one connection that never got going are skipped; others (EMFILE,
/// ENFILE, ENOBUFS) are logged and waited out for [`ACCEPT_BACKOFF`], since
/// they pass as connections close.
pub(crate) async fn accept(
    listener: &TcpListener,
    stop: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    let port = listener.local_addr().map_or(0, |a| a.port());
    accept_with(stop, &format!("port {port}"), || listener.accept()).await
}

/// [`accept`] for any listener (the control socket is a Unix one): `next`
/// accepts once; `what` names the listener in the log line.
pub(crate) async fn accept_with<T, F, Fut>(
    stop: &CancellationToken,
    what: &str,
    mut next: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => return None,
            accepted = next() => accepted,
        };
        match accepted {
            Ok(conn) => return Some(conn),
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                warn!(listener = what, error = %e, "accept failed; backing off");
                tokio::select! {
                    biased;
                    () = stop.cancelled() => return None,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}

/// Errors that concern one connection that never got going, not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// A failed [`bind`], said the way a user can act on it.
#[derive(Debug)]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: io::Error,
}

impl BindError {
    pub fn new(addr: SocketAddr, source: io::Error) -> Self {
        BindError { addr, source }
    }

    /// The port is taken (by another fleet, or anything else).
    pub fn in_use(&self) -> bool {
        self.source.kind() == io::ErrorKind::AddrInUse
    }

    /// Kinds whose message already says all the OS error would.
    fn explained(&self) -> bool {
        matches!(
            self.source.kind(),
            io::ErrorKind::AddrInUse
                | io::ErrorKind::AddrNotAvailable
                | io::ErrorKind::PermissionDenied
        )
    }
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addr = self.addr;
        match self.source.kind() {
            io::ErrorKind::AddrInUse => write!(f, "port {} is already in use", addr.port()),
            io::ErrorKind::AddrNotAvailable => {
                write!(
                    f,
                    "cannot listen on {addr}: no such address on this machine"
                )
            }
            io::ErrorKind::PermissionDenied => {
                write!(f, "cannot listen on {addr}: permission denied")
            }
            _ => write!(f, "cannot listen on {addr}"),
        }
    }
}

impl std::error::Error for BindError {
    /// The OS error, unless the message already explains it.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        (!self.explained()).then_some(&self.source as _)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accept_returns_a_connection_and_none_once_stopped() {
        let l = bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = CancellationToken::new();
        let _client = TcpStream::connect(addr).await.unwrap();
        assert!(accept(&l, &stop).await.is_some());
        stop.cancel();
        assert!(accept(&l, &stop).await.is_none());
    }

    #[tokio::test]
    async fn a_bound_port_cannot_be_bound_twice() {
        let l = bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = l.local_addr().unwrap();
        let e = BindError::new(addr, bind(addr).unwrap_err());
        assert!(e.in_use());
        assert_eq!(
            e.to_string(),
            format!("port {} is already in use", addr.port())
        );
        assert!(
            std::error::Error::source(&e).is_none(),
            "the message says it all"
        );
    }
}
