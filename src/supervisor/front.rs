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
//!
//! It also keeps close-on-exec copies of the sockets the fleet is reached
//! by (the balancer's: one per engine thread on Linux, see
//! `listener::Listening`) and of the pid file (its lock), which `fleet
//! upgrade` passes to a new supervisor (`handover`): the listeners
//! themselves live in their tasks and engine threads.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::balancer::{self, pool::Roster};
use crate::listener::{BindError, Listening};

pub(crate) struct Front {
    backends: Arc<Roster>,
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
    /// Copies of the sockets the balancer accepts on now (`None` if they
    /// could not be taken): a move drops the old ones, so the old address
    /// closes.
    balancer_copies: Option<Vec<OwnedFd>>,
    /// Copies of the rest, taken at start (`None` if they could not be).
    pub(super) kit: Option<Kit>,
    /// Stops the admin address (a child of `token`).
    pub(super) admin_stop: CancellationToken,
}

/// Close-on-exec copies (`F_DUPFD_CLOEXEC`: no backend inherits them) of
/// the control socket, the admin address and the locked pid file.
pub(super) struct Kit {
    pub(super) control: OwnedFd,
    pub(super) admin: Option<OwnedFd>,
    pub(super) pid_file: OwnedFd,
}

impl Kit {
    pub(super) fn new(
        control: impl AsFd,
        admin: Option<impl AsFd>,
        pid_file: impl AsFd,
    ) -> std::io::Result<Kit> {
        Ok(Kit {
            control: control.as_fd().try_clone_to_owned()?,
            admin: admin.map(|a| a.as_fd().try_clone_to_owned()).transpose()?,
            pid_file: pid_file.as_fd().try_clone_to_owned()?,
        })
    }
}

impl Front {
    /// Start the balancer on `listener`.
    pub(super) fn start(
        listener: Listening,
        fallback: SocketAddr,
        backends: Arc<Roster>,
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
            admin_stop: token.child_token(),
            token,
            hard_stop,
            listen: Arc::new(ArcSwap::from_pointee(addr)),
            admin_hosts: Arc::new(ArcSwap::from_pointee(admin_hosts)),
            balancer_copies: None,
            kit: None,
        };
        front.accept_on(listener, addr);
        front
    }

    /// The address the balancer accepts on now.
    pub(super) fn listen(&self) -> SocketAddr {
        **self.listen.load()
    }

    /// Bind `addr` for a move (blocking, but one bind: as `up` does it).
    pub(super) fn bind(addr: SocketAddr) -> Result<Listening, String> {
        Listening::bind(addr).map_err(|e| {
            let e = BindError::new(addr, e);
            match std::error::Error::source(&e) {
                Some(os) => format!("listen: {e}: {os}"),
                None => format!("listen: {e}"),
            }
        })
    }

    /// Accept on `listener` (already bound), then stop the balancer that
    /// accepted until now: new clients reach only the new address.
    pub(super) fn move_to(&mut self, listener: Listening) -> SocketAddr {
        let addr = listener.local_addr().unwrap_or_else(|_| self.listen());
        self.accept_on(listener, addr);
        addr
    }

    /// The balancer's sockets as they are now, with the copies of the
    /// rest: what a new supervisor takes over (`None`: a copy is missing).
    pub(super) fn passable(&self) -> Option<(&[OwnedFd], &Kit)> {
        self.balancer_copies.as_deref().zip(self.kit.as_ref())
    }

    /// Stop the balancer that accepts now: its idle client connections
    /// close (`fleet upgrade`, once the new supervisor accepts).
    pub(super) fn stop(&self) {
        self.accepting.cancel();
    }

    /// Drop the copies: at shutdown the listeners must close with their
    /// tasks, so new clients are refused.
    pub(super) fn drop_copies(&mut self) {
        self.balancer_copies = None;
        self.kit = None;
    }

    /// Needs the runtime context (`Listening::fill` binds).
    fn accept_on(&mut self, mut listener: Listening, addr: SocketAddr) {
        let threads = self.backends.config().engine_threads();
        listener.fill(threads);
        self.balancer_copies = listener
            .sockets()
            .iter()
            .map(|s| s.as_fd().try_clone_to_owned())
            .collect::<Result<_, _>>()
            .ok();
        let stop = self.token.child_token();
        self.tracker.spawn(balancer::run(
            listener,
            threads,
            self.backends.clone(),
            stop.clone(),
            self.hard_stop.clone(),
            self.conns.clone(),
        ));
        std::mem::replace(&mut self.accepting, stop).cancel();
        self.listen.store(Arc::new(addr));
    }
}
