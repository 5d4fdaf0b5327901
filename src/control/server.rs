//! The control socket inside the supervisor.
//!
//! Private by construction: the socket file is mode 0600 inside the 0700
//! state dir, and every connection's peer uid is checked (SO_PEERCRED on
//! Linux, getpeereid on macOS, both behind tokio's `peer_cred`): only the
//! supervisor's own user or root may command it. Each connection is served
//! in its own task with a read deadline and a size cap, so a stalled or
//! hostile client can neither stall the supervisor nor grow its memory.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::protocol::{self, MAX_LINE, Reply, Request};
use crate::supervisor::Shared;

/// A client has this long to send its request line.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Bind the socket at `path` with mode 0600.
pub fn bind(path: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    let l = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Only the supervisor's own user, or root, may use the socket.
pub fn peer_allowed(peer_uid: u32, own_uid: u32) -> bool {
    peer_uid == own_uid || peer_uid == 0
}

/// Serve until `stop`. A `down` request cancels `shutdown`, the fleet's one
/// shutdown token, after handing its connection to the supervisor for the
/// final reply.
pub async fn serve(
    listener: UnixListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    stop: CancellationToken,
) {
    let own_uid = nix::unistd::geteuid().as_raw();
    loop {
        let stream = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    warn!(target: "supervisor", error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        // Not on the fleet's tracker: a control connection must never hold up
        // shutdown, and each one ends by its own read deadline.
        tokio::spawn(async move { handle(stream, &shared, &shutdown, own_uid).await });
    }
}

async fn handle(stream: UnixStream, shared: &Shared, shutdown: &CancellationToken, own_uid: u32) {
    let peer = stream.peer_cred().map(|c| c.uid()).ok();
    let (read, mut write) = stream.into_split();
    let reply = |r: Reply| protocol::encode(r);
    if !peer.is_some_and(|uid| peer_allowed(uid, own_uid)) {
        warn!(target: "supervisor", peer_uid = ?peer, "refused a control connection from another user");
        let _ = write
            .write_all(
                reply(Reply::Error {
                    message: "permission denied: only the fleet's owner or root may control it"
                        .into(),
                })
                .as_bytes(),
            )
            .await;
        return;
    }
    let mut line = Vec::new();
    let mut reader = BufReader::new(read).take(MAX_LINE as u64 + 1);
    let answer = match tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut line)).await
    {
        Err(_) => Reply::Error {
            message: format!("no request within {}s", READ_TIMEOUT.as_secs()),
        },
        Ok(Err(e)) => Reply::Error {
            message: format!("read failed: {e}"),
        },
        Ok(Ok(_)) if line.len() > MAX_LINE => Reply::Error {
            message: format!("request longer than {MAX_LINE} bytes"),
        },
        Ok(Ok(_)) => match protocol::decode::<Request>(line.trim_ascii()) {
            Err(message) => Reply::Error { message },
            Ok(Request::Status) => Reply::Status(shared.status()),
            Ok(Request::Down { timeout_s }) => {
                if let Some(t) = timeout_s {
                    match Duration::try_from_secs_f64(t) {
                        Ok(d) => shared.grace.set(d),
                        Err(_) => {
                            let m =
                                format!("down: timeout must be a number of seconds >= 0 (got {t})");
                            let _ = write
                                .write_all(reply(Reply::Error { message: m }).as_bytes())
                                .await;
                            return;
                        }
                    }
                }
                info!(target: "supervisor", "down requested over the control socket");
                shared
                    .down_waiters
                    .lock()
                    .expect("never poisoned")
                    .push(write);
                shutdown.cancel();
                return;
            }
        },
    };
    let _ = write.write_all(reply(answer).as_bytes()).await;
    let _ = write.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_owner_or_root_may_control_the_fleet() {
        assert!(peer_allowed(1000, 1000));
        assert!(peer_allowed(0, 1000), "root may");
        assert!(!peer_allowed(1001, 1000), "another user may not");
        assert!(peer_allowed(0, 0));
        assert!(
            !peer_allowed(1000, 0),
            "a user may not command root's fleet"
        );
    }
}
