//! A log file written by a thread of its own, so that nothing on a runtime
//! thread waits on the disk: the balancer's access log (written on the
//! request path) and each backend's output (`supervisor::output`).
//!
//! A caller formats its line and hands it over a bounded channel
//! ([`CAPACITY`] lines); the thread owns the [`RotatingFile`], so the size
//! cap, the rotation and the `O_NOFOLLOW` open are exactly those of a direct
//! write. When the channel is full (lines come faster than the disk takes
//! them) the line is dropped, never waited for: a slow disk must not slow
//! the requests it logs. The first line dropped after the queue last ran dry
//! is logged at once (`warn`), and when the thread has caught up it logs
//! how many were lost.
//!
//! If the thread cannot be started (the process is out of threads), the
//! writer falls back to writing in the caller, as before, with a warning.
//!
//! The thread ends when its [`LogWriter`] is dropped, after writing what was
//! queued; [`finish`] waits (bounded) for every such thread, so a fleet that
//! exits has written every line it accepted.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tracing::warn;

use crate::rotating_file::RotatingFile;

/// Lines a writer holds before it drops new ones: with lines of ~100 bytes,
/// 400 KiB, seconds of a saturated balancer's access log.
pub(crate) const CAPACITY: usize = 4096;

/// The writer threads still running (their writer dropped or not), for
/// [`finish`].
static LIVE: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// What the thread is asked to do, in order.
enum Msg {
    Line(Vec<u8>),
    /// Answer once every line sent before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The handle: cheap to call from any thread, never blocks on the file.
#[derive(Debug)]
pub(crate) struct LogWriter {
    sink: Sink,
    /// Lines dropped in all (the report counts those since it last ran).
    dropped: AtomicU64,
    /// For messages.
    path: PathBuf,
}

#[derive(Debug)]
enum Sink {
    Thread {
        tx: SyncSender<Msg>,
        /// Lines dropped since the thread last reported (it resets this).
        unreported: Arc<AtomicU64>,
    },
    /// No thread could be started: written by the caller.
    Inline(Arc<RotatingFile>),
}

impl LogWriter {
    /// Start the thread that writes `file`.
    pub(crate) fn new(file: RotatingFile) -> LogWriter {
        Self::with_capacity(file, CAPACITY)
    }

    fn with_capacity(file: RotatingFile, capacity: usize) -> LogWriter {
        let (tx, rx) = mpsc::sync_channel(capacity);
        let unreported = Arc::new(AtomicU64::new(0));
        let path = file.path().to_path_buf();
        // Shared only so it can be written in place if no thread starts.
        let file = Arc::new(file);
        let writer = Writer {
            file: file.clone(),
            rx,
            unreported: unreported.clone(),
        };
        *live() += 1;
        let spawned = std::thread::Builder::new()
            .name("fleet-log".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let _live = Live;
                writer.run();
            });
        let sink = match spawned {
            Ok(_) => Sink::Thread { tx, unreported },
            Err(e) => {
                // The closure never ran (it is dropped): no `Live` counts
                // it out.
                *live() -= 1;
                LIVE.1.notify_all();
                warn!(
                    target: "supervisor",
                    path = %path.display(),
                    "cannot start a log writer thread ({e}); writing this log in place"
                );
                Sink::Inline(file)
            }
        };
        LogWriter {
            sink,
            dropped: AtomicU64::new(0),
            path,
        }
    }

    /// Queue one line (whole lines: a rotation never splits one); drop it,
    /// counted, if the queue is full.
    pub(crate) fn write(&self, line: Vec<u8>) {
        let (tx, unreported) = match &self.sink {
            Sink::Thread { tx, unreported } => (tx, unreported),
            Sink::Inline(file) => return file.append(&line),
        };
        match tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                if unreported.fetch_add(1, Ordering::Relaxed) == 0 {
                    warn!(
                        target: "supervisor",
                        path = %self.path.display(),
                        "log writer is behind the lines it is given: dropping lines until it catches up"
                    );
                }
            }
            // The thread is gone (it cannot panic, but if it did): nothing
            // more can be written to this file.
            Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines dropped because the queue was full.
    #[cfg(test)]
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Wait until every line queued before this call is written. The send
    /// may wait for room, so it runs on the blocking pool.
    pub(crate) async fn flush(&self) {
        let Sink::Thread { tx, .. } = &self.sink else {
            return;
        };
        let (ack, done) = tokio::sync::oneshot::channel();
        let tx = tx.clone();
        let sent = tokio::task::spawn_blocking(move || tx.send(Msg::Flush(ack)).is_ok()).await;
        if matches!(sent, Ok(true)) {
            let _ = done.await;
        }
    }
}

/// The thread's side.
struct Writer {
    file: Arc<RotatingFile>,
    rx: Receiver<Msg>,
    unreported: Arc<AtomicU64>,
}

impl Writer {
    fn run(self) {
        // `recv` fails once the `LogWriter` is dropped and the queue is empty.
        while let Ok(msg) = self.rx.recv() {
            self.handle(msg);
            // Write what is queued, then report drops once it ran dry.
            while let Ok(msg) = self.rx.try_recv() {
                self.handle(msg);
            }
            let lost = self.unreported.swap(0, Ordering::Relaxed);
            if lost > 0 {
                warn!(
                    target: "supervisor",
                    path = %self.file.path().display(),
                    "log writer caught up; {lost} lines were dropped"
                );
            }
        }
    }

    fn handle(&self, msg: Msg) {
        match msg {
            Msg::Line(line) => self.file.append(&line),
            Msg::Flush(ack) => {
                let _ = ack.send(());
            }
        }
    }
}

/// Counts a writer thread out when it ends, however it ends.
struct Live;

impl Drop for Live {
    fn drop(&mut self) {
        *live() -= 1;
        LIVE.1.notify_all();
    }
}

fn live() -> std::sync::MutexGuard<'static, usize> {
    // A poisoned count is still a count: nothing panics while holding it.
    LIVE.0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Wait, at most `limit`, for every writer thread to write what it was
/// given and end; call once every `LogWriter` is dropped (`fleet up`, after
/// its runtime is gone). Not on a runtime thread: it blocks.
pub(crate) fn finish(limit: Duration) {
    let guard = live();
    let _ = LIVE
        .1
        .wait_timeout_while(guard, limit, |n| *n > 0)
        .unwrap_or_else(std::sync::PoisonError::into_inner);
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Read;
    use std::time::Instant;

    use super::*;
    use crate::rotating_file::MAX_LOG_BYTES;

    #[tokio::test]
    async fn lines_reach_the_file_in_order_and_it_rotates_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.log");
        let w = LogWriter::new(RotatingFile::new(path.clone()));
        w.write(b"first\n".to_vec());
        w.write(b"second\n".to_vec());
        w.flush().await;
        assert_eq!(fs::read_to_string(&path).unwrap(), "first\nsecond\n");
        let big = format!("{}\n", "x".repeat(999));
        // Fewer lines than the queue holds: none is dropped.
        for _ in 0..(2 * MAX_LOG_BYTES / 1000) {
            w.write(big.clone().into_bytes());
        }
        w.flush().await;
        assert_eq!(w.dropped(), 0);
        let size = fs::metadata(&path).unwrap().len();
        let old = fs::metadata(dir.path().join("b.log.1")).unwrap().len();
        assert!(
            size <= MAX_LOG_BYTES && old <= MAX_LOG_BYTES && old > MAX_LOG_BYTES / 2,
            "{size} {old}"
        );
        assert!(fs::read_to_string(&path).unwrap().ends_with(&big));
    }

    #[tokio::test]
    async fn the_thread_opens_state_dir_logs_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious\n").unwrap();
        let log = dir.path().join("backend-9002.log");
        std::os::unix::fs::symlink(&victim, &log).unwrap();
        let w = LogWriter::new(RotatingFile::new(log));
        w.write(b"a log line\n".to_vec());
        w.flush().await;
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    }

    #[test]
    fn a_full_queue_drops_lines_instead_of_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stuck.log");
        // A FIFO with no reader: the thread's open blocks until one comes,
        // as a write to a hung disk would.
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let w = LogWriter::with_capacity(RotatingFile::new(path.clone()), 4);
        let (done_tx, done_rx) = mpsc::channel();
        let writer = std::thread::spawn(move || {
            for i in 0..100 {
                w.write(format!("line {i}\n").into_bytes());
            }
            done_tx.send(w.dropped()).unwrap();
            w
        });
        let started = Instant::now();
        let dropped = done_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("100 writes return while the file is stuck");
        // One line may be in the thread's hands, 4 in the queue.
        assert!(dropped >= 95, "dropped {dropped}");
        assert!(started.elapsed() < Duration::from_secs(30));
        // Unstick it: what was accepted is written, then the thread ends.
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            fs::File::open(&path)
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
            text
        });
        drop(writer.join().unwrap());
        let text = reader.join().unwrap();
        assert_eq!(text.lines().count() as u64, 100 - dropped, "{text}");
        assert!(text.starts_with("line 0\n"), "{text}");
    }
}
