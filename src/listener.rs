//! Listening sockets, for the balancer and the built-in worker alike: one
//! way to bind (address reuse, a deep backlog) and one accept loop that
//! survives errors without spinning; and the balancer's [`Listening`], one
//! address accepted on by several engine threads.

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
    let socket = new_socket(addr)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// A TCP socket for `addr`'s family with SO_REUSEADDR, which lets a
/// restarted listener bind while old connections sit in TIME_WAIT; on Linux
/// and macOS it does not let two listeners share the port.
fn new_socket(addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    Ok(socket)
}

/// The balancer's listening sockets, all bound to one address, for its
/// engine threads (`balancer::run`) to accept on.
///
/// On Linux each thread gets a socket of its own, all in one `SO_REUSEPORT`
/// group: the kernel spreads new connections over them by a hash of the
/// client's address and port, so no thread wakes another to accept.
/// Elsewhere (macOS, whose `SO_REUSEPORT` does not balance) there is one
/// socket, and each thread accepts on a duplicate of it; the same is done on
/// Linux with sockets that were not bound for a group (handed over by an
/// older fleet).
///
/// A group lets any process of the same user join it, so [`Listening::bind`]
/// first binds the address alone, without `SO_REUSEPORT`: that fails with
/// "address in use" while anything listens there, a fleet's group included,
/// so a second fleet is refused as before. (Between that check and the
/// group's first bind, microseconds, another fleet could slip in.)
#[derive(Debug)]
pub(crate) struct Listening {
    /// Distinct sockets (not duplicates), non-blocking, close-on-exec:
    /// one at first, as many as engine threads after [`Listening::fill`].
    sockets: Vec<std::net::TcpListener>,
    addr: SocketAddr,
}

impl Listening {
    /// Bind `addr` (port 0: a free port) for the balancer. Needs a runtime
    /// context, as [`bind`] does.
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<Listening> {
        #[cfg(target_os = "linux")]
        let first = {
            // The check: alone, without SO_REUSEPORT (see above); bound,
            // not listening, so no client is queued on it meanwhile.
            let alone = new_socket(addr)?;
            alone.bind(addr)?;
            let addr = alone.local_addr()?;
            drop(alone);
            bind_group_member(addr)?
        };
        #[cfg(not(target_os = "linux"))]
        let first = bind(addr)?.into_std()?;
        let addr = first.local_addr()?;
        Ok(Listening {
            sockets: vec![first],
            addr,
        })
    }

    /// Sockets received from another supervisor (`fleet upgrade`), in the
    /// order it accepted on them; non-blocking.
    pub(crate) fn adopt(sockets: Vec<std::net::TcpListener>) -> io::Result<Listening> {
        let first = sockets
            .first()
            .ok_or_else(|| io::Error::other("no balancer socket was passed"))?;
        let addr = first.local_addr()?;
        Ok(Listening { sockets, addr })
    }

    /// Where it listens; `Result` as `TcpListener::local_addr`'s.
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }

    /// The distinct sockets, for copies to hand over.
    pub(crate) fn sockets(&self) -> &[std::net::TcpListener] {
        &self.sockets
    }

    /// On Linux, bind more members of the `SO_REUSEPORT` group until there
    /// is one per thread (if the sockets are a group: those of an older
    /// fleet may not be). Elsewhere, or when a bind fails (logged), the
    /// threads share sockets ([`Listening::split`]). Needs a runtime context.
    pub(crate) fn fill(&mut self, threads: usize) {
        #[cfg(target_os = "linux")]
        {
            use nix::sys::socket::{getsockopt, sockopt::ReusePort};
            if !getsockopt(&self.sockets[0], ReusePort).unwrap_or(false) {
                return;
            }
            while self.sockets.len() < threads {
                match bind_group_member(self.addr) {
                    Ok(s) => self.sockets.push(s),
                    Err(e) => {
                        warn!(
                            address = %self.addr,
                            error = %e,
                            "cannot bind another listening socket; engine threads share the {} there are",
                            self.sockets.len()
                        );
                        return;
                    }
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = threads;
    }

    /// What each of `threads` engine threads accepts on: socket `j` goes
    /// to thread `j % threads` (more sockets than threads: some accept on
    /// several), and a thread left without one gets a duplicate of socket
    /// `i % sockets` (fewer: they share, and the kernel wakes each sharer's
    /// poll for a new connection; one of them gets it).
    pub(crate) fn split(self, threads: usize) -> io::Result<Vec<Vec<std::net::TcpListener>>> {
        let threads = threads.max(1);
        let have = self.sockets.len();
        let mut shares: Vec<Vec<std::net::TcpListener>> =
            (0..threads).map(|_| Vec::new()).collect();
        for (i, share) in shares.iter_mut().enumerate().skip(have) {
            share.push(self.sockets[i % have].try_clone()?);
        }
        for (j, socket) in self.sockets.into_iter().enumerate() {
            shares[j % threads].push(socket);
        }
        Ok(shares)
    }
}

/// One member of a `SO_REUSEPORT` group on `addr` (a concrete port), as
/// [`bind`] binds, as a std listener for an engine thread to register.
#[cfg(target_os = "linux")]
fn bind_group_member(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = new_socket(addr)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)?.into_std()
}

/// The next connection, or `None` once `stop` is cancelled. Errors that
/// concern one connection that never got going are skipped; others (EMFILE,
/// ENFILE, ENOBUFS) are logged and waited out for [`ACCEPT_BACKOFF`], since
/// they pass as connections close.
pub(crate) async fn accept(
    listener: &TcpListener,
    stop: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    // Named only for the log line of a failed accept: `local_addr` is a
    // system call, and the worker accepts once per request under `ab`.
    let name = || format!("port {}", listener.local_addr().map_or(0, |a| a.port()));
    accept_named(stop, name, || listener.accept()).await
}

/// [`accept`] for any listener (the control socket is a Unix one): `next`
/// accepts once; `what` names the listener in the log line.
pub(crate) async fn accept_with<T, F, Fut>(
    stop: &CancellationToken,
    what: &str,
    next: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    accept_named(stop, || what.to_owned(), next).await
}

/// The accept loop: `what` is asked for the listener's name only when an
/// error is logged.
async fn accept_named<T, F, Fut>(
    stop: &CancellationToken,
    what: impl Fn() -> String,
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
                warn!(listener = what(), error = %e, "accept failed; backing off");
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
    async fn a_balancer_address_cannot_be_bound_twice_even_as_a_group() {
        let first = Listening::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = first.local_addr().unwrap();
        let e = Listening::bind(addr).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
    }

    #[tokio::test]
    async fn every_engine_thread_gets_a_socket_and_every_socket_a_thread() {
        let mut l = Listening::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        l.fill(3);
        let distinct = l.sockets().len();
        // Linux: a group of 3; elsewhere one socket, shared.
        assert_eq!(distinct, if cfg!(target_os = "linux") { 3 } else { 1 });
        let shares = l.split(3).unwrap();
        assert_eq!(shares.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 1]);
        // Fewer threads than sockets: some accept on several, none is dropped.
        let mut l = Listening::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        l.fill(3);
        let shares = l.split(2).unwrap();
        assert_eq!(shares.iter().map(Vec::len).sum::<usize>(), distinct.max(2));
    }

    /// Linux: a connection to the address is accepted on one of the group's
    /// sockets (the kernel balances them), whichever it is.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_group_accepts_on_one_of_its_sockets() {
        let mut l = Listening::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        l.fill(2);
        let addr = l.local_addr().unwrap();
        let shares: Vec<_> = l
            .split(2)
            .unwrap()
            .into_iter()
            .flatten()
            .map(|s| TcpListener::from_std(s).unwrap())
            .collect();
        let _client = TcpStream::connect(addr).await.unwrap();
        let stop = CancellationToken::new();
        let accepted = tokio::select! {
            a = accept(&shares[0], &stop) => a,
            a = accept(&shares[1], &stop) => a,
        };
        assert!(accepted.is_some());
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
