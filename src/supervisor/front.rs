//! The fleet's front door, which a reload can move: the balancer's listening
//! address and the names the admin address answers to.
//!
//! A new `listen` is bound before the old listener closes (a busy or
//! invalid address fails the reload with nothing changed). Then a balancer
//! accepts on the new listener, and the old one stops accepting: its
//! listener closes, its idle kept-alive client connections close, and a
//! connection with a request in flight finishes that exchange and closes
//! after it, as at shutdown (`balancer::http`). Each balancer admits up to
//! `balancer.max_connections` clients, so during a move the two together
//! may briefly hold more.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::balancer::{self, pool::Backends};
use crate::listener::BindError;

pub(crate) struct Front {
    backends: Arc<Backends>,
    /// Where balancer tasks go (joined at shutdown).
    tracker: TaskTracker,
    /// Client connections, of every listener the fleet had (the shutdown
    /// gives them until the grace deadline).
    conns: TaskTracker,
    /// The fleet's shutdown: every balancer's stop token is its child.
    token: CancellationToken,
    /// Cuts the client connections still open at the shutdown deadline.
    hard_stop: CancellationToken,
    /// Stops the balancer that accepts now.
    accepting: CancellationToken,
    /// Where it accepts: what `fleet status` shows as `listen`.
    pub(crate) listen: Arc<ArcSwap<SocketAddr>>,
    /// `admin_hosts`, read by the admin address per request.
    pub(crate) admin_hosts: Arc<ArcSwap<Vec<String>>>,
}

impl Front {
    /// Start the balancer on `listener`.
    pub(super) fn start(
        listener: TcpListener,
        fallback: SocketAddr,
        backends: Arc<Backends>,
        tasks: (TaskTracker, TaskTracker),
        token: CancellationToken,
        hard_stop: CancellationToken,
        admin_hosts: Vec<String>,
    ) -> Front {
        let (tracker, conns) = tasks;
        let addr = listener.local_addr().unwrap_or(fallback);
        let mut front = Front {
            backends,
            tracker,
            conns,
            accepting: token.child_token(),
            token,
            hard_stop,
            listen: Arc::new(ArcSwap::from_pointee(addr)),
            admin_hosts: Arc::new(ArcSwap::from_pointee(admin_hosts)),
        };
        front.accept_on(listener, addr);
        front
    }

    /// The address the balancer accepts on now.
    pub(super) fn listen(&self) -> SocketAddr {
        **self.listen.load()
    }

    /// Bind `addr` for a move (blocking, but one bind: as `up` does it).
    pub(super) fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
        crate::listener::bind(addr).map_err(|e| {
            let e = BindError::new(addr, e);
            match std::error::Error::source(&e) {
                Some(os) => format!("listen: {e}: {os}"),
                None => format!("listen: {e}"),
            }
        })
    }

    /// Accept on `listener` (already bound), then stop the balancer that
    /// accepted until now: new clients reach only the new address.
    pub(super) fn move_to(&mut self, listener: TcpListener) -> SocketAddr {
        let addr = listener.local_addr().unwrap_or_else(|_| self.listen());
        self.accept_on(listener, addr);
        addr
    }

    fn accept_on(&mut self, listener: TcpListener, addr: SocketAddr) {
        let stop = self.token.child_token();
        self.tracker.spawn(balancer::run(
            listener,
            self.backends.clone(),
            stop.clone(),
            self.hard_stop.clone(),
            self.conns.clone(),
        ));
        std::mem::replace(&mut self.accepting, stop).cancel();
        self.listen.store(Arc::new(addr));
    }
}
