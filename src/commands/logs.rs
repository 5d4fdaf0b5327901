//! `fleet logs [-f] [--tail N] [PORT]`: the backends' captured output, from
//! the log files in the state dir (so it works after the fleet stopped, too).
//! Without PORT the backends' logs are merged by time and tagged with the port.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::LogsArgs;
use crate::exit;
use crate::state_dir::StateDir;

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

pub fn run(args: LogsArgs) -> Result<(), LogsError> {
    let state = StateDir::new(args.state.resolve());
    let files = log_files(&state, args.port)?;
    let mut lines: Vec<(String, u16, String)> = Vec::new();
    for (port, path) in &files {
        let mut text = String::new();
        let mut old = path.clone().into_os_string();
        old.push(".1");
        for file in [PathBuf::from(old), path.clone()] {
            match fs::read(&file) {
                Ok(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
                // The rotated half exists only after a rotation.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(LogsError::ReadFile { path: file, source }),
            }
        }
        let all: Vec<&str> = text.lines().collect();
        for l in &all[all.len().saturating_sub(args.tail)..] {
            lines.push((
                l.split(' ').next().unwrap_or("").to_string(),
                *port,
                l.to_string(),
            ));
        }
    }
    // RFC 3339 UTC timestamps sort as strings; the sort is stable within a file.
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, port, l) in &lines[lines.len().saturating_sub(args.tail)..] {
        crate::outln!("{}", format_line(*port, l, args.port.is_none()));
    }
    if args.follow {
        follow(&files, args.port.is_none());
    }
    Ok(())
}

/// `[9002] 2026-...Z stderr text` when merged, the line itself for one backend.
fn format_line(port: u16, line: &str, tagged: bool) -> String {
    if tagged {
        format!("[{port}] {line}")
    } else {
        line.to_string()
    }
}

fn log_files(state: &StateDir, only: Option<u16>) -> Result<BTreeMap<u16, PathBuf>, LogsError> {
    let dir = state.logs();
    let entries = fs::read_dir(&dir).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => LogsError::NoLogs(dir.clone()),
        _ => LogsError::ReadDir {
            dir: dir.clone(),
            source,
        },
    })?;
    let mut files = BTreeMap::new();
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
            files.insert(port, e.path());
        }
    }
    match only {
        Some(port) if files.is_empty() => Err(LogsError::NoBackendLog { port, dir }),
        _ => Ok(files),
    }
}

/// Print lines appended from now on until interrupted (Ctrl-C ends the process).
fn follow(files: &BTreeMap<u16, PathBuf>, tagged: bool) {
    let mut offsets: BTreeMap<u16, u64> = files
        .iter()
        .map(|(p, f)| (*p, fs::metadata(f).map(|m| m.len()).unwrap_or(0)))
        .collect();
    let mut partial: BTreeMap<u16, String> = BTreeMap::new();
    loop {
        for (port, path) in files {
            let off = offsets.entry(*port).or_insert(0);
            let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            if len < *off {
                *off = 0; // rotated
            }
            if len == *off {
                continue;
            }
            if let Some(chunk) = read_from(path, *off) {
                *off += chunk.len() as u64;
                let buf = partial.entry(*port).or_default();
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(i) = buf.find('\n') {
                    crate::outln!("{}", format_line(*port, &buf[..i], tagged));
                    buf.drain(..=i);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn read_from(path: &Path, off: u64) -> Option<Vec<u8>> {
    let mut f = fs::File::open(path).ok()?;
    f.seek(SeekFrom::Start(off)).ok()?;
    let mut v = Vec::new();
    f.read_to_end(&mut v).ok()?;
    Some(v)
}
