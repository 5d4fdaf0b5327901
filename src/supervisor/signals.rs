//! The supervisor's signals (DESIGN.md §8). Each one either stops the fleet
//! through the root token, asks the supervisor's loop for a reload, or is
//! logged and ignored: none of the signals below can kill the supervisor
//! silently any more (their default action would).
//!
//! | signal           | foreground     | detached (`up -d`) |
//! |------------------|----------------|--------------------|
//! | SIGINT, SIGTERM  | graceful stop  | graceful stop      |
//! | SIGHUP           | graceful stop (the terminal is gone) | `fleet reload` |
//! | SIGUSR1, SIGUSR2, SIGALRM, SIGIO | logged, ignored | logged, ignored |
//!
//! SIGQUIT keeps its default (a core dump, for debugging a hung supervisor);
//! SIGKILL and SIGSTOP cannot be caught. Workers die with the supervisor
//! either way (`orphans`).

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::control::command::Call;
use crate::control::protocol::Request;

/// The registered handlers. Registering replaces the default actions at
/// once, so this is done before the fleet starts (and a failure reported).
pub(crate) struct Signals {
    detached: bool,
    int: Signal,
    term: Signal,
    hup: Signal,
    /// Default-fatal signals fleet has no use for: logged and ignored.
    ignored: Vec<(&'static str, Signal)>,
}

/// What SIGHUP means depends on whether a terminal is attached (`detached`).
pub(crate) fn install(detached: bool) -> std::io::Result<Signals> {
    let on = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| std::io::Error::other(format!("cannot handle {name}: {e}")))
    };
    Ok(Signals {
        detached,
        int: on(SignalKind::interrupt(), "SIGINT")?,
        term: on(SignalKind::terminate(), "SIGTERM")?,
        hup: on(SignalKind::hangup(), "SIGHUP")?,
        ignored: vec![
            ("SIGUSR1", on(SignalKind::user_defined1(), "SIGUSR1")?),
            ("SIGUSR2", on(SignalKind::user_defined2(), "SIGUSR2")?),
            ("SIGALRM", on(SignalKind::alarm(), "SIGALRM")?),
            ("SIGIO", on(SignalKind::io(), "SIGIO")?),
        ],
    })
}

impl Signals {
    /// Act on signals until the fleet stops.
    pub(crate) async fn run(mut self, token: CancellationToken, commands: mpsc::Sender<Call>) {
        loop {
            // Any of the ignored ones, whichever comes first.
            let ignored = futures_first(&mut self.ignored);
            tokio::select! {
                biased;
                _ = token.cancelled() => return,
                _ = self.int.recv() => return stop(&token, "SIGINT"),
                _ = self.term.recv() => return stop(&token, "SIGTERM"),
                _ = self.hup.recv() => {
                    if !self.detached {
                        return stop(&token, "SIGHUP (the terminal is gone)");
                    }
                    info!(target: "supervisor", "SIGHUP received: reloading fleet.yaml");
                    // The reload logs its progress and outcome itself; nobody
                    // reads its replies.
                    let (reply, _) = mpsc::channel(1);
                    if commands.send(Call { request: Request::Reload, reply }).await.is_err() {
                        return;
                    }
                }
                name = ignored => {
                    warn!(target: "supervisor", "{name} received; ignored (SIGTERM stops the fleet, SIGHUP reloads a detached one)");
                }
            }
        }
    }
}

fn stop(token: &CancellationToken, what: &str) {
    info!(target: "supervisor", "{what} received");
    token.cancel();
}

/// The name of the first of `signals` to arrive.
async fn futures_first(signals: &mut [(&'static str, Signal)]) -> &'static str {
    std::future::poll_fn(|cx| {
        for (name, s) in signals.iter_mut() {
            if s.poll_recv(cx).is_ready() {
                return std::task::Poll::Ready(*name);
            }
        }
        std::task::Poll::Pending
    })
    .await
}
