//! Backend output: every line a worker writes to stdout or stderr goes to its
//! log file in the state dir (size-capped, rotated once: at most
//! `2 * MAX_LOG_BYTES` per backend, so logs never fill a disk) and, in the
//! foreground, to the supervisor's log tagged with the backend's port.
//!
//! File lines are `<RFC 3339 time> <stdout|stderr> <text>`, which `fleet logs`
//! merges across backends (and the supervisor's own `supervisor.log`, which
//! goes through the same `crate::rotating_file::RotatingFile`) by time.

use std::path::PathBuf;
use std::time::SystemTime;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::log_writer::LogWriter;
use crate::rotating_file::RotatingFile;

/// A "line" longer than this is split, so a worker that never prints a
/// newline cannot make the supervisor buffer without bound.
const MAX_LINE: usize = 8 * 1024;

#[derive(Debug)]
pub(crate) struct BackendLog {
    port: u16,
    /// Echo lines into the supervisor's own log (foreground mode).
    echo: bool,
    /// Written by the thread shared by every backend log (`log_writer`),
    /// so a pump never waits on the disk; lines past its queue are dropped
    /// and counted.
    file: LogWriter,
}

impl BackendLog {
    pub(crate) fn new(path: PathBuf, port: u16, echo: bool) -> Self {
        BackendLog {
            port,
            echo,
            file: LogWriter::shared(RotatingFile::new(path)),
        }
    }

    pub(crate) fn write_line(&self, stream: &str, text: &str) {
        if self.echo {
            tracing::info!(target: "backend", port = self.port, "{text}");
        }
        let line = format!(
            "{} {stream} {text}\n",
            humantime::format_rfc3339_millis(SystemTime::now())
        );
        self.file.write(line.into_bytes());
    }

    /// Copy `reader` line by line into the log until EOF.
    pub(crate) async fn pump(&self, reader: impl AsyncRead + Unpin, stream: &str) {
        let mut reader = BufReader::with_capacity(MAX_LINE, reader);
        let mut line = Vec::with_capacity(256);
        while let Ok(buf) = reader.fill_buf().await {
            if buf.is_empty() {
                break;
            }
            let (n, done) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), line.len() + buf.len() >= MAX_LINE),
            };
            line.extend_from_slice(&buf[..n]);
            reader.consume(n);
            if done {
                self.emit(&mut line, stream);
            }
        }
        if !line.is_empty() {
            self.emit(&mut line, stream);
        }
        // The stream is over (the backend exited): its last lines are on
        // disk before the task that pumped them ends, so shutdown's wait
        // for every task also waits for them.
        self.file.flush().await;
    }

    fn emit(&self, line: &mut Vec<u8>, stream: &str) {
        let text = String::from_utf8_lossy(line);
        self.write_line(stream, text.trim_end_matches(['\n', '\r']));
        line.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::rotating_file::MAX_LOG_BYTES;

    #[tokio::test]
    async fn lines_are_captured_and_the_file_rotates_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.log");
        let log = BackendLog::new(path.clone(), 9000, false);
        log.pump(&b"hello\nworld\npartial"[..], "stdout").await;
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].ends_with(" stdout hello"));
        assert!(lines[2].ends_with(" stdout partial"));
        let big = "x".repeat(1000);
        for _ in 0..(2 * MAX_LOG_BYTES / 1000) {
            log.write_line("stderr", &big);
        }
        log.file.flush().await;
        let size = fs::metadata(&path).unwrap().len();
        let old = fs::metadata(dir.path().join("b.log.1")).unwrap().len();
        assert!(
            size <= MAX_LOG_BYTES && old <= MAX_LOG_BYTES,
            "{size} {old}"
        );
    }

    #[tokio::test]
    async fn a_line_without_newline_is_split_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.log");
        let log = BackendLog::new(path.clone(), 9000, false);
        let long = vec![b'y'; MAX_LINE * 3];
        log.pump(&long[..], "stdout").await;
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
    }
}
