//! Log files written off the runtime, so that nothing on a runtime thread
//! waits on the disk: the balancer's access log (written on the request
//! path) and each backend's output (`supervisor::output`).
//!
//! A caller formats its line and hands it to the log's queue; a writer
//! thread writes it through the log's [`RotatingFile`], so the size cap, the
//! rotation and the `O_NOFOLLOW` open are exactly those of a direct write.
//!
//! Which thread: every backend log is served by one shared thread
//! ([`LogWriter::shared`]), because a thread and a queue per backend cost
//! ~165 KiB of memory each and a thread start in `up`, at 1000 backends
//! 160 MiB and a good part of the start-up time. They all live in the state
//! dir, on one disk, so a disk that hangs holds them all back either way (each
//! then fills its queue and drops, as below). The access log keeps a
//! thread of its own ([`LogWriter::new`]): it is the busiest log, at a path
//! the user chose, and a slow one must not hold back the backends' logs (nor
//! the other way).
//!
//! Each log has its own queue, so its lines are written in the order they
//! were given: a queue sits on its thread's ready list at most once, and the
//! thread takes the logs on the list in turn, one batch (the whole queue)
//! each. A queue holds no memory until lines come and none once the thread
//! took them: it grows with use, up to [`CAPACITY`] lines not yet written
//! (those in the thread's hands included). Past that the line is dropped,
//! never waited for: a slow disk must not slow the requests or the backends
//! it logs. The first line dropped after the queue last ran dry is logged at
//! once (`warn`), and when the thread has caught up it logs how many were
//! lost.
//!
//! If a thread cannot be started (the process is out of threads), the log is
//! written in the caller, as before there were threads, with a warning.
//!
//! [`LogWriter::flush`] waits for the lines given before it, without a
//! blocking task; at exit [`finish`] waits (bounded) once for every line
//! accepted by any log, so a fleet that exits has written every line it
//! accepted. A thread of its own ends when its `LogWriter` is dropped and
//! its queue is written; the shared thread lasts as long as the process.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::warn;

use crate::rotating_file::RotatingFile;

/// Lines a log holds, not yet written, before it drops new ones: with lines
/// of ~100 bytes, 400 KiB, seconds of a saturated balancer's access log.
pub(crate) const CAPACITY: usize = 4096;

/// Logs with lines accepted and not yet written, across every thread, for
/// [`finish`].
static PENDING: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// The thread that writes every backend log, started with the first.
static SHARED: Mutex<Option<Arc<Worker>>> = Mutex::new(None);

/// A lock whose data stays valid if a holder panicked (nothing panics while
/// holding these: they guard counters and queues, not half-done writes).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The handle: cheap to call from any thread, never blocks on the file.
#[derive(Debug)]
pub(crate) struct LogWriter {
    sink: Sink,
}

#[derive(Debug)]
enum Sink {
    Queued {
        log: Arc<Log>,
        worker: Arc<Worker>,
    },
    /// No thread could be started: written by the caller.
    Inline(RotatingFile),
}

/// One log: its file and its queue.
#[derive(Debug)]
struct Log {
    file: RotatingFile,
    /// Lines not yet written past which new ones are dropped.
    capacity: u64,
    queue: Mutex<Queue>,
}

/// A log's queue, and what its `flush` and drop reports need.
#[derive(Debug, Default)]
struct Queue {
    /// Lines the thread has not taken yet (empty, unallocated, when idle).
    lines: VecDeque<Vec<u8>>,
    /// Lines accepted, ever; `accepted - written` are not on disk yet.
    accepted: u64,
    /// Lines the thread has written (or tried to: a failed write is dropped
    /// by `RotatingFile`), ever.
    written: u64,
    /// On the thread's ready list or in its hands: it will be written
    /// without being scheduled again. Also counted in `PENDING`.
    scheduled: bool,
    /// Lines dropped since the queue last ran dry (the thread reports them).
    unreported: u64,
    /// Lines dropped in all.
    dropped: u64,
    /// `flush` calls waiting for `written` to reach their count.
    waiters: Vec<(u64, oneshot::Sender<()>)>,
}

/// A writer thread's side: the logs with lines to write, in turn.
#[derive(Debug)]
struct Worker {
    ready: Mutex<Ready>,
    wake: Condvar,
}

#[derive(Debug)]
struct Ready {
    logs: VecDeque<Arc<Log>>,
    /// `LogWriter`s alive on this thread: a thread of its own ends at 0.
    open: usize,
    /// The shared thread never ends (more backends may come).
    lasting: bool,
}

impl LogWriter {
    /// A log with a writer thread of its own (the access log).
    pub(crate) fn new(file: RotatingFile) -> LogWriter {
        match Worker::start(false) {
            Ok(worker) => Self::on(worker, file, CAPACITY),
            Err(e) => Self::inline(file, &e),
        }
    }

    /// A log written by the thread shared by every backend log, started
    /// with the first one (and tried again with the next if it could not
    /// be).
    pub(crate) fn shared(file: RotatingFile) -> LogWriter {
        let mut shared = lock(&SHARED);
        let worker = match &*shared {
            Some(w) => w.clone(),
            None => match Worker::start(true) {
                Ok(w) => shared.insert(w).clone(),
                Err(e) => return Self::inline(file, &e),
            },
        };
        drop(shared);
        Self::on(worker, file, CAPACITY)
    }

    fn on(worker: Arc<Worker>, file: RotatingFile, capacity: usize) -> LogWriter {
        lock(&worker.ready).open += 1;
        let log = Arc::new(Log {
            file,
            capacity: capacity as u64,
            queue: Mutex::new(Queue::default()),
        });
        LogWriter {
            sink: Sink::Queued { log, worker },
        }
    }

    fn inline(file: RotatingFile, e: &std::io::Error) -> LogWriter {
        warn!(
            target: "supervisor",
            path = %file.path().display(),
            "cannot start a log writer thread ({e}); writing this log in place"
        );
        LogWriter {
            sink: Sink::Inline(file),
        }
    }

    /// Queue one line (whole lines: a rotation never splits one); drop it,
    /// counted, if the log already holds its capacity.
    pub(crate) fn write(&self, line: Vec<u8>) {
        let (log, worker) = match &self.sink {
            Sink::Queued { log, worker } => (log, worker),
            Sink::Inline(file) => return file.append(&line),
        };
        let mut q = lock(&log.queue);
        if q.accepted - q.written >= log.capacity {
            q.dropped += 1;
            q.unreported += 1;
            let first = q.unreported == 1;
            drop(q);
            if first {
                warn!(
                    target: "supervisor",
                    path = %log.file.path().display(),
                    "log writer is behind the lines it is given: dropping lines until it catches up"
                );
            }
            return;
        }
        q.lines.push_back(line);
        q.accepted += 1;
        let schedule = !std::mem::replace(&mut q.scheduled, true);
        drop(q);
        if schedule {
            *lock(&PENDING.0) += 1;
            worker.push(log.clone());
        }
    }

    /// Lines dropped because the log held its capacity.
    #[cfg(test)]
    pub(crate) fn dropped(&self) -> u64 {
        match &self.sink {
            Sink::Queued { log, .. } => lock(&log.queue).dropped,
            Sink::Inline(_) => 0,
        }
    }

    /// Wait until every line accepted before this call is written. Never
    /// blocks a thread: it waits on the writer's answer.
    pub(crate) async fn flush(&self) {
        let Sink::Queued { log, .. } = &self.sink else {
            return;
        };
        let done = {
            let mut q = lock(&log.queue);
            if q.written == q.accepted {
                return;
            }
            // Lines not written means the log is scheduled: the thread
            // will take them and answer.
            let (ack, done) = oneshot::channel();
            let target = q.accepted;
            q.waiters.push((target, ack));
            done
        };
        // An error means the thread is gone, and with it any hope of more.
        let _ = done.await;
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if let Sink::Queued { worker, .. } = &self.sink {
            // What is queued stays on the ready list and is written; a
            // thread of its own ends after it.
            lock(&worker.ready).open -= 1;
            worker.wake.notify_one();
        }
    }
}

impl Worker {
    fn start(lasting: bool) -> std::io::Result<Arc<Worker>> {
        let worker = Arc::new(Worker {
            ready: Mutex::new(Ready {
                logs: VecDeque::new(),
                open: 0,
                lasting,
            }),
            wake: Condvar::new(),
        });
        let thread = worker.clone();
        std::thread::Builder::new()
            .name("fleet-log".into())
            .stack_size(256 * 1024)
            .spawn(move || thread.run())?;
        Ok(worker)
    }

    /// Put a log on the ready list.
    fn push(&self, log: Arc<Log>) {
        lock(&self.ready).logs.push_back(log);
        self.wake.notify_one();
    }

    fn run(&self) {
        while let Some(log) = self.next() {
            if log.write_batch() {
                // More came while it wrote: behind the others, in turn.
                self.push(log);
            }
        }
    }

    /// The next log to write, waiting for one; `None` when a thread of its
    /// own has nothing left to write for anyone.
    fn next(&self) -> Option<Arc<Log>> {
        let mut ready = lock(&self.ready);
        loop {
            if let Some(log) = ready.logs.pop_front() {
                return Some(log);
            }
            if !ready.lasting && ready.open == 0 {
                return None;
            }
            ready = self
                .wake
                .wait(ready)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Log {
    /// Write what the queue holds (the queue's lock is not held while the
    /// file is written, so callers never wait on the disk); answer the
    /// flushes it satisfies. True if more lines came meanwhile.
    fn write_batch(&self) -> bool {
        // Taking the queue frees its memory with the batch.
        let batch = std::mem::take(&mut lock(&self.queue).lines);
        for line in &batch {
            self.file.append(line);
        }
        let mut q = lock(&self.queue);
        q.written += batch.len() as u64;
        let written = q.written;
        for (target, ack) in std::mem::take(&mut q.waiters) {
            if target <= written {
                let _ = ack.send(());
            } else {
                q.waiters.push((target, ack));
            }
        }
        if !q.lines.is_empty() {
            return true;
        }
        // Ran dry: report the drops, and leave `PENDING`.
        q.scheduled = false;
        let lost = std::mem::take(&mut q.unreported);
        drop(q);
        if lost > 0 {
            warn!(
                target: "supervisor",
                path = %self.file.path().display(),
                "log writer caught up; {lost} lines were dropped"
            );
        }
        *lock(&PENDING.0) -= 1;
        PENDING.1.notify_all();
        false
    }
}

/// Wait, at most `limit`, until every line any log accepted is written;
/// call once nothing writes any more (`fleet up`, after its runtime is
/// gone). Not on a runtime thread: it blocks.
pub(crate) fn finish(limit: Duration) {
    let guard = lock(&PENDING.0);
    let _ = PENDING
        .1
        .wait_timeout_while(guard, limit, |n| *n > 0)
        .unwrap_or_else(PoisonError::into_inner);
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Read;
    use std::sync::mpsc;
    use std::time::Instant;

    use super::*;
    use crate::rotating_file::MAX_LOG_BYTES;

    /// A thread shared by the logs of one test, like the backends' thread
    /// but not the process-wide one (a test may stall it).
    fn private_shared() -> Arc<Worker> {
        Worker::start(true).unwrap()
    }

    fn queued(w: &LogWriter) -> (usize, usize) {
        let Sink::Queued { log, .. } = &w.sink else {
            panic!("a thread was started")
        };
        let q = lock(&log.queue);
        (q.lines.len(), q.lines.capacity())
    }

    #[tokio::test]
    async fn lines_reach_the_file_in_order_and_it_rotates_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.log");
        let w = LogWriter::shared(RotatingFile::new(path.clone()));
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
    async fn a_queue_holds_no_memory_before_lines_come_or_after_they_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let w = LogWriter::on(
            private_shared(),
            RotatingFile::new(dir.path().join("b.log")),
            CAPACITY,
        );
        assert_eq!(queued(&w), (0, 0));
        for i in 0..1000 {
            w.write(format!("line {i}\n").into_bytes());
        }
        w.flush().await;
        assert_eq!(queued(&w), (0, 0));
    }

    #[tokio::test]
    async fn the_thread_opens_state_dir_logs_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious\n").unwrap();
        let log = dir.path().join("backend-9002.log");
        std::os::unix::fs::symlink(&victim, &log).unwrap();
        let w = LogWriter::shared(RotatingFile::new(log));
        w.write(b"a log line\n".to_vec());
        w.flush().await;
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    }

    #[test]
    fn two_logs_on_one_thread_each_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let worker = private_shared();
        let logs: Vec<_> = ["a", "b"]
            .iter()
            .map(|n| {
                let path = dir.path().join(format!("{n}.log"));
                let w = LogWriter::on(worker.clone(), RotatingFile::new(path.clone()), 1 << 20);
                (Arc::new(w), path)
            })
            .collect();
        // Two callers at once, each on its own log, interleaving on the
        // thread.
        let writers: Vec<_> = logs
            .iter()
            .map(|(w, _)| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        w.write(format!("{i}\n").into_bytes());
                    }
                })
            })
            .collect();
        for t in writers {
            t.join().unwrap();
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for (w, path) in &logs {
            rt.block_on(w.flush());
            assert_eq!(w.dropped(), 0);
            let text = fs::read_to_string(path).unwrap();
            let got: Vec<u32> = text.lines().map(|l| l.parse().unwrap()).collect();
            assert_eq!(got, (0..5000).collect::<Vec<_>>(), "{}", path.display());
        }
    }

    /// A FIFO with no reader: the thread's open blocks until one comes, as a
    /// write to a hung disk would.
    fn stuck(path: &std::path::Path) {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    }

    fn unstick(path: std::path::PathBuf) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut text = String::new();
            fs::File::open(&path)
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
            text
        })
    }

    #[test]
    fn a_full_queue_drops_lines_instead_of_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stuck.log");
        stuck(&path);
        let w = LogWriter::on(
            Worker::start(false).unwrap(),
            RotatingFile::new(path.clone()),
            4,
        );
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
        // 4 lines not written at most, the one in the thread's hands
        // included.
        assert_eq!(dropped, 96);
        assert!(started.elapsed() < Duration::from_secs(30));
        // Unstick it: what was accepted is written, then the thread ends.
        let reader = unstick(path);
        drop(writer.join().unwrap());
        let text = reader.join().unwrap();
        assert_eq!(text, "line 0\nline 1\nline 2\nline 3\n");
    }

    #[test]
    fn a_stuck_log_does_not_stall_the_runtime_and_is_written_at_exit() {
        let dir = tempfile::tempdir().unwrap();
        let worker = private_shared();
        let path = dir.path().join("stuck.log");
        stuck(&path);
        let stuck_log = LogWriter::on(worker.clone(), RotatingFile::new(path.clone()), 8);
        let other = dir.path().join("other.log");
        let other_log = LogWriter::on(worker, RotatingFile::new(other.clone()), 8);
        // Both logs wait behind the stuck file: they fill and drop, and
        // neither caller waits.
        let started = Instant::now();
        for i in 0..50 {
            stuck_log.write(format!("s{i}\n").into_bytes());
            other_log.write(format!("o{i}\n").into_bytes());
        }
        assert!(started.elapsed() < Duration::from_secs(30));
        assert!(stuck_log.dropped() >= 42 && other_log.dropped() >= 42);
        // The process exits: writers dropped, then `finish` waits for the
        // accepted lines (the file unsticks meanwhile).
        let (s_dropped, o_dropped) = (stuck_log.dropped(), other_log.dropped());
        drop((stuck_log, other_log));
        let reader = unstick(path);
        finish(Duration::from_secs(60));
        let text = reader.join().unwrap();
        assert_eq!(text.lines().count() as u64, 50 - s_dropped);
        assert!(text.starts_with("s0\n"), "{text}");
        let other = fs::read_to_string(other).unwrap();
        assert_eq!(other.lines().count() as u64, 50 - o_dropped);
        assert!(other.starts_with("o0\n"), "{other}");
    }
}
