//! Watch mode (`watch:` in fleet.yaml, `fleet up --watch`): a change under
//! the watched paths, debounced, rolls the fleet.
//!
//! `notify` watches on its own thread (inotify on Linux, FSEvents on macOS);
//! its callback drops ignored paths (`ignore`) and hands the rest to a
//! bounded channel with `try_send`, so a storm of events never blocks it
//! (when the channel is full a change is already pending, and only its name
//! is lost). One task ([`run`]) debounces them (`debounce`) and asks the
//! supervisor's loop for a rolling restart, one at a time: a change during
//! a roll queues one more roll after it. The roll is the same as `fleet
//! restart`'s, so it stops at the first backend that does not come back:
//! the rest keep serving the old version, status and the log say which
//! change did it and what the probe saw, and the next change tries again.
//!
//! The built-in worker needs no restart for a change under its www: its
//! file cache (`worker::files`) revalidates every entry within a second, so
//! such a change is only reported. A change anywhere else (a watched path
//! outside www) rolls it like a custom command.

pub(crate) mod debounce;
pub(crate) mod ignore;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::WatchConfig;
use crate::control::command::{Call, REPLY_CAPACITY};
use crate::control::protocol::{Reply, Request, WatchStatus};
use debounce::{Batch, Debounce};
use ignore::Ignore;

/// Changed paths waiting for the debouncing task.
const EVENT_CAPACITY: usize = 1024;
/// A file rewritten without pause still rolls after this long.
const MAX_WAIT_FACTOR: u32 = 10;

/// What `fleet status` shows of watch mode, shared with the status view.
pub(crate) type Shared = Arc<Mutex<WatchStatus>>;

/// What the task needs to know of the fleet.
pub(crate) struct Context {
    pub(crate) config: WatchConfig,
    /// The built-in worker's www, when the backends are built-in workers: a
    /// change only there needs no restart.
    pub(crate) builtin_www: Option<PathBuf>,
    /// Ignored with everything below them: the state dir, the access log,
    /// fleet.yaml (a roll would not apply it: `fleet reload` does).
    pub(crate) own_files: Vec<PathBuf>,
}

/// Start watching and return the watcher (watching stops when it is
/// dropped) with the receiving end of its changes.
fn start(
    paths: &[PathBuf],
    rules: Ignore,
) -> Result<(notify::RecommendedWatcher, mpsc::Receiver<PathBuf>), String> {
    let (tx, rx) = mpsc::channel(EVENT_CAPACITY);
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        match ev {
            // Reads and opens change nothing.
            Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => {}
            Ok(ev) => {
                for p in ev.paths.into_iter().filter(|p| !rules.ignored(p)) {
                    let _ = tx.try_send(p);
                }
            }
            Err(e) => warn!(target: "supervisor", "watch: {e}"),
        }
    })
    .map_err(|e| format!("cannot start watching: {e}"))?;
    for p in paths {
        watcher
            .watch(p, RecursiveMode::Recursive)
            .map_err(|e| format!("cannot watch {}: {e}", p.display()))?;
    }
    Ok((watcher, rx))
}

fn set(shared: &Shared, f: impl FnOnce(&mut WatchStatus)) {
    f(&mut shared.lock().unwrap_or_else(PoisonError::into_inner));
}

/// `server.py`, or `server.py and 2 more`. A file that is gone (an
/// editor's temp file, renamed into place) is named only when nothing that
/// still exists changed.
fn describe(batch: &Batch, rules: &Ignore) -> String {
    let present: Vec<&PathBuf> = batch.files.iter().filter(|p| p.exists()).collect();
    let (named, more) = if present.is_empty() {
        (batch.files.iter().collect(), batch.more)
    } else {
        (present, 0)
    };
    let first = named.first().map_or_else(String::new, |p| rules.shown(p));
    match named.len().saturating_sub(1) + more {
        0 => first,
        n => format!("{first} and {n} more"),
    }
}

/// Watch, debounce, and send roll requests to the supervisor's loop on
/// `rolls` until `stop`.
pub(crate) async fn run(
    ctx: Context,
    rolls: mpsc::Sender<Call>,
    shared: Shared,
    stop: CancellationToken,
) {
    let paths = ctx.config.paths.clone();
    // Events may name the real path (a symlinked /tmp on macOS): both count.
    let both = |ps: &[PathBuf]| -> Vec<PathBuf> {
        let mut out = ps.to_vec();
        out.extend(ps.iter().filter_map(|p| std::fs::canonicalize(p).ok()));
        out.dedup();
        out
    };
    let rules = Ignore::new(&both(&paths), &ctx.config.ignore, both(&ctx.own_files));
    let www = ctx
        .builtin_www
        .as_ref()
        .map(|w| both(std::slice::from_ref(w)));
    set(&shared, |s| {
        s.paths = paths.iter().map(|p| p.display().to_string()).collect();
    });
    let (_watcher, mut events) = match start(&paths, rules.clone()) {
        Ok(w) => w,
        Err(e) => {
            warn!(target: "supervisor", "watch: {e}; watch mode is off");
            set(&shared, |s| s.outcome = Some(format!("off: {e}")));
            return;
        }
    };
    info!(target: "supervisor", paths = ?paths, "watching for changes");
    let quiet = ctx.config.debounce;
    let mut debounce = Debounce::new(quiet, quiet * MAX_WAIT_FACTOR);
    loop {
        let due = debounce.due();
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            ev = events.recv() => match ev {
                Some(p) => debounce.change(p, Instant::now().into_std()),
                None => return,
            },
            _ = sleep_until(due) => {
                let Some(batch) = debounce.take(Instant::now().into_std()) else { continue };
                let what = describe(&batch, &rules);
                if let Some(www) = &www
                    && batch.files.iter().all(|f| www.iter().any(|w| f.starts_with(w)))
                {
                    let outcome = "no restart: the built-in worker re-reads changed files within 1s";
                    info!(target: "supervisor", "watch: {what} changed; {outcome}");
                    set(&shared, |s| {
                        s.last_change = Some(what);
                        s.outcome = Some(outcome.into());
                    });
                    continue;
                }
                if !roll(&what, &rolls, &shared, &stop, &mut events, &mut debounce).await {
                    return;
                }
            }
        }
    }
}

async fn sleep_until(due: Option<std::time::Instant>) {
    match due {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// One rolling restart for the change `what`, to its end; changes that
/// arrive meanwhile go on being debounced. False when the fleet is
/// stopping.
async fn roll(
    what: &str,
    rolls: &mpsc::Sender<Call>,
    shared: &Shared,
    stop: &CancellationToken,
    events: &mut mpsc::Receiver<PathBuf>,
    debounce: &mut Debounce,
) -> bool {
    info!(target: "supervisor", "watch: {what} changed; rolling the fleet");
    set(shared, |s| {
        s.last_change = Some(what.to_owned());
        s.outcome = Some("rolling".into());
        s.rolls += 1;
    });
    // The loop takes it when no other command runs.
    let (reply, mut replies) = mpsc::channel(REPLY_CAPACITY);
    let cmd = Call {
        request: Request::Restart {
            ports: Vec::new(),
            all_at_once: false,
        },
        reply,
    };
    // Waits while another command runs; shutdown does not wait for it.
    tokio::select! {
        biased;
        _ = stop.cancelled() => return false,
        sent = rolls.send(cmd) => if sent.is_err() {
            return false;
        },
    }
    let outcome = loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return false,
            r = replies.recv() => match r {
                Some(Reply::Progress { .. }) => {}
                Some(Reply::Done { message }) => break Ok(message),
                Some(Reply::Error { message }) => break Err(message),
                Some(_) => {}
                // Dropped without an answer: shutdown interrupted it.
                None => return false,
            },
            ev = events.recv() => match ev {
                Some(p) => debounce.change(p, Instant::now().into_std()),
                None => return false,
            },
        }
    };
    match outcome {
        Ok(message) => {
            // The roll's lines (what it did, then its cost) as one.
            let message = message.replace('\n', "; ");
            info!(target: "supervisor", "watch: {what}: {message}");
            set(shared, |s| s.outcome = Some(message));
        }
        Err(message) => {
            let outcome = format!("stopped: {message}");
            warn!(target: "supervisor", "watch: {what}: rolling restart {outcome}; the backends not restarted serve the old version");
            set(shared, |s| s.outcome = Some(outcome));
        }
    }
    true
}

/// The state dir, the access log and the config file, absolute, for
/// `Context::own_files`.
pub(crate) fn own_files(
    state: &Path,
    access_log: Option<&Path>,
    config: Option<&Path>,
) -> Vec<PathBuf> {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    std::iter::once(abs(state))
        .chain(access_log.map(abs))
        .chain(config.map(abs))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_named_by_a_file_that_still_exists() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().to_path_buf();
        std::fs::write(root.join("app.py"), "x").unwrap();
        let rules = Ignore::new(std::slice::from_ref(&root), &[], Vec::new());
        // sed -i: a temp file, renamed onto app.py.
        let batch = Batch {
            files: vec![root.join("sedX1y2z3"), root.join("app.py")],
            more: 0,
        };
        assert_eq!(describe(&batch, &rules), "app.py");
        let batch = Batch {
            files: vec![root.join("gone.py"), root.join("lib/old.py")],
            more: 2,
        };
        assert_eq!(describe(&batch, &rules), "gone.py and 3 more");
    }
}
