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
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::command::{Call, REPLY_CAPACITY};
use super::protocol::{self, FleetStatus, MAX_LINE, Reply, Request};

/// A client has this long to send its request line.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// After `stop`, how long connections still writing their last reply get.
const FINISH_TIMEOUT: Duration = Duration::from_secs(2);

/// The fleet's status as it is now (read-only; built from the pool's atomics).
pub(crate) type StatusView = Arc<dyn Fn() -> FleetStatus + Send + Sync>;

/// Bind the socket at `path` with mode 0600.
pub(crate) fn bind(path: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    let l = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Only the supervisor's own user, or root, may use the socket.
pub(crate) fn peer_allowed(peer_uid: u32, own_uid: u32) -> bool {
    peer_uid == own_uid || peer_uid == 0
}

/// Serve until `stop`, then give connections that are writing their final
/// reply (a `down` waits for `stopped`) a moment to finish. `status` answers
/// `status`; every other request becomes a [`Call`] for the supervisor.
pub(crate) async fn serve(
    listener: UnixListener,
    status: StatusView,
    commands: mpsc::Sender<Call>,
    stop: CancellationToken,
) {
    let own_uid = nix::unistd::geteuid().as_raw();
    // Not the fleet's tracker: a control connection must never hold up the
    // backends' shutdown; each one ends by its read deadline or its reply.
    let connections = TaskTracker::new();
    while let Some((stream, _)) =
        crate::listener::accept_with(&stop, "control socket", || listener.accept()).await
    {
        let (status, commands, stop) = (status.clone(), commands.clone(), stop.clone());
        connections.spawn(async move { handle(stream, &status, &commands, &stop, own_uid).await });
    }
    drop(commands);
    connections.close();
    let _ = tokio::time::timeout(FINISH_TIMEOUT, connections.wait()).await;
}

async fn write(w: &mut OwnedWriteHalf, r: Reply) -> bool {
    w.write_all(protocol::encode(r).as_bytes()).await.is_ok()
}

fn error(message: impl Into<String>) -> Reply {
    Reply::Error {
        message: message.into(),
    }
}

async fn handle(
    stream: UnixStream,
    status: &StatusView,
    commands: &mpsc::Sender<Call>,
    stop: &CancellationToken,
    own_uid: u32,
) {
    let peer = stream.peer_cred().map(|c| c.uid()).ok();
    let (read, mut w) = stream.into_split();
    if !peer.is_some_and(|uid| peer_allowed(uid, own_uid)) {
        warn!(target: "supervisor", peer_uid = ?peer, "refused a control connection from another user");
        write(
            &mut w,
            error("permission denied: only the fleet's owner or root may control it"),
        )
        .await;
        return;
    }
    let mut line = Vec::new();
    let mut reader = BufReader::new(read).take(MAX_LINE as u64 + 1);
    let read = tokio::select! {
        biased;
        _ = stop.cancelled() => return,
        r = tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut line)) => r,
    };
    let request = match read {
        Err(_) => Err(format!("no request within {}s", READ_TIMEOUT.as_secs())),
        Ok(Err(e)) => Err(format!("read failed: {e}")),
        Ok(Ok(_)) if line.len() > MAX_LINE => Err(format!("request longer than {MAX_LINE} bytes")),
        Ok(Ok(_)) => {
            protocol::decode::<Request>(line.trim_ascii()).map_err(|e| crate::message::one_line(&e))
        }
    };
    let (reply, mut replies) = mpsc::channel(REPLY_CAPACITY);
    let request = match request {
        Err(message) => {
            write(&mut w, error(message)).await;
            return;
        }
        Ok(Request::Status) => {
            write(&mut w, Reply::Status(status())).await;
            let _ = w.shutdown().await;
            return;
        }
        Ok(Request::Down { timeout_s }) => {
            // Refused here, before the supervisor sees it.
            if let Err(message) = Request::grace(timeout_s) {
                write(&mut w, error(message)).await;
                return;
            }
            info!(target: "supervisor", "down requested over the control socket");
            Request::Down { timeout_s }
        }
        Ok(other) => other,
    };
    let verb = request.verb();
    let command = Call { request, reply };
    if commands.send(command).await.is_err() {
        write(&mut w, error("the fleet is shutting down")).await;
        return;
    }
    // Relay progress and the final reply as they come.
    loop {
        match replies.recv().await {
            Some(r) => {
                let last = r.is_final();
                if !write(&mut w, r).await || last {
                    break;
                }
            }
            None => {
                write(
                    &mut w,
                    error(format!(
                        "{verb} was interrupted: the fleet is shutting down"
                    )),
                )
                .await;
                break;
            }
        }
    }
    let _ = w.shutdown().await;
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
