//! `fleet logs [-f] [--tail N] [--since D] [--no-prefix] [PORT]`: the
//! backends' captured output and the supervisor's own events, from the log
//! files in the state dir (so it works after the fleet stopped, too).
//!
//! Without PORT every log is merged by time and each line is tagged with
//! its source (`[9002]`, `[supervisor]`); with PORT, that backend's output
//! and the supervisor's events about it (`port=PORT`), untagged. Every file line starts with an
//! RFC 3339 UTC timestamp (`supervisor::output`, `logging`), which sorts as
//! a string; a line without one (a panic message in supervisor.log) keeps
//! the time of the line before it.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::cli::LogsArgs;
use crate::exit;
use crate::state_dir::StateDir;

/// The tag of the supervisor's own log.
const SUPERVISOR: &str = "supervisor";

/// One log file, the tag its lines get, and (for the supervisor's log when
/// one backend was asked for) the text a line must contain to be shown.
struct Source {
    tag: String,
    path: PathBuf,
    only: Option<String>,
}

impl Source {
    fn shows(&self, line: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|needle| line.split(' ').any(|w| w == needle))
    }
}

/// Why there is nothing to show: nothing there, or something there that
/// cannot be read (which must never read as "nothing there").
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("no logs in {} (start a fleet with `fleet up`, or pass --state-dir)", .0.display())]
    NoLogs(PathBuf),
    #[error("no log for backend {port} in {}", dir.display())]
    NoBackendLog { port: u16, dir: PathBuf },
    #[error("cannot read the logs in {}", dir.display())]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl LogsError {
    pub fn exit_code(&self) -> u8 {
        match self {
            LogsError::NoLogs(_) | LogsError::NoBackendLog { .. } => exit::FAILURE,
            LogsError::ReadDir { .. } | LogsError::ReadFile { .. } => exit::UNREADABLE,
        }
    }
}

pub(crate) fn run(args: LogsArgs) -> Result<(), LogsError> {
    let state = StateDir::new(args.state.resolve());
    let sources = sources(&state, args.port)?;
    let since = args
        .since
        .map(|d| humantime::format_rfc3339_millis(SystemTime::now() - d).to_string());
    let tagged = args.port.is_none() && !args.no_prefix;
    let mut lines: Vec<(String, usize, String)> = Vec::new();
    for (i, src) in sources.iter().enumerate() {
        let mut text = String::new();
        let mut old = src.path.clone().into_os_string();
        old.push(".1");
        for file in [PathBuf::from(old), src.path.clone()] {
            match read_no_follow(&file) {
                Ok(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
                // The rotated half exists only after a rotation, and
                // supervisor.log only once a supervisor ran here.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(LogsError::ReadFile { path: file, source }),
            }
        }
        let mut time = String::new();
        let mut mine = Vec::new();
        for l in text.lines() {
            if let Some(t) = timestamp(l) {
                time = t.to_string();
            }
            if since.as_ref().is_none_or(|s| time >= *s) && src.shows(l) {
                mine.push((time.clone(), i, l.to_string()));
            }
        }
        let keep = mine.len().saturating_sub(args.tail);
        lines.extend(mine.drain(keep..));
    }
    // Stable: lines of one file keep their order within a timestamp.
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, i, l) in &lines[lines.len().saturating_sub(args.tail)..] {
        crate::outln!("{}", format_line(&sources[*i].tag, l, tagged));
    }
    if args.follow {
        follow(&sources, tagged);
    }
    Ok(())
}

/// The line's leading RFC 3339 timestamp, if it has one.
fn timestamp(line: &str) -> Option<&str> {
    let first = line.split(' ').next()?;
    humantime::parse_rfc3339_weak(first).ok().map(|_| first)
}

/// `[9002] 2026-...Z stderr text` when tagged, the line itself otherwise.
fn format_line(tag: &str, line: &str, tagged: bool) -> String {
    if tagged {
        format!("[{tag}] {line}")
    } else {
        line.to_string()
    }
}

/// The supervisor's log (unless one backend was asked for) and every
/// backend's, in port order.
fn sources(state: &StateDir, only: Option<u16>) -> Result<Vec<Source>, LogsError> {
    let dir = state.logs();
    let entries = fs::read_dir(&dir).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => LogsError::NoLogs(state.shown()),
        _ => LogsError::ReadDir {
            dir: dir.clone(),
            source,
        },
    })?;
    let mut ports = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(port) = name.to_str().and_then(|n| {
            n.strip_prefix("backend-")?
                .strip_suffix(".log")?
                .parse::<u16>()
                .ok()
        }) else {
            continue;
        };
        if only.is_none_or(|p| p == port) {
            ports.push((port, e.path()));
        }
    }
    ports.sort();
    if let Some(port) = only
        && ports.is_empty()
    {
        return Err(LogsError::NoBackendLog { port, dir });
    }
    // With PORT, the supervisor's events about that backend (`port=PORT`).
    let mut out = vec![Source {
        tag: SUPERVISOR.into(),
        path: state.supervisor_log(),
        only: only.map(|p| format!("port={p}")),
    }];
    out.extend(ports.into_iter().map(|(port, path)| Source {
        tag: port.to_string(),
        path,
        only: None,
    }));
    Ok(out)
}

/// Print lines appended from now on until interrupted (Ctrl-C ends the process).
fn follow(sources: &[Source], tagged: bool) {
    let mut offsets: Vec<u64> = sources
        .iter()
        .map(|s| fs::metadata(&s.path).map(|m| m.len()).unwrap_or(0))
        .collect();
    let mut partial: Vec<String> = vec![String::new(); sources.len()];
    loop {
        for (i, src) in sources.iter().enumerate() {
            let off = &mut offsets[i];
            let len = fs::metadata(&src.path).map(|m| m.len()).unwrap_or(0);
            if len < *off {
                *off = 0; // rotated
            }
            if len == *off {
                continue;
            }
            if let Some(chunk) = read_from(&src.path, *off) {
                *off += chunk.len() as u64;
                let buf = &mut partial[i];
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(n) = buf.find('\n') {
                    if src.shows(&buf[..n]) {
                        crate::outln!("{}", format_line(&src.tag, &buf[..n], tagged));
                    }
                    buf.drain(..=n);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Open a log for reading, never through a symbolic link (`state_dir`).
fn open_no_follow(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(crate::state_dir::NO_FOLLOW)
        .open(path)
}

fn read_no_follow(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_no_follow(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn read_from(path: &Path, off: u64) -> Option<Vec<u8>> {
    let mut f = open_no_follow(path).ok()?;
    f.seek(SeekFrom::Start(off)).ok()?;
    let mut v = Vec::new();
    f.read_to_end(&mut v).ok()?;
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_recognised_only_at_the_start() {
        assert_eq!(
            timestamp("2026-11-30T12:51:25.852Z stdout hi"),
            Some("2026-11-30T12:51:25.852Z")
        );
        assert_eq!(
            timestamp("thread 'main' panicked at 2026-11-30T12:51:25Z"),
            None
        );
        assert_eq!(timestamp(""), None);
    }
}
