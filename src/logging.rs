//! Where this process's log lines (`tracing`) go, and how they look.
//!
//! - One timestamp per line: RFC 3339 UTC with milliseconds, the format of
//!   the backend log files, so `fleet logs` merges all of them by sorting.
//!   A built-in worker run by the supervisor (`serve --lifeline`) writes no
//!   timestamp of its own: the supervisor stamps every line it captures.
//! - Colour only on a terminal, and never when `NO_COLOR` is set.
//! - The supervisor (`fleet up`) also writes its own events, not the
//!   backends' echoed output (which has its own files), to
//!   `logs/supervisor.log`, capped and rotated like the backend logs, from
//!   the moment `attach_supervisor_log` names it (once the state dir exists).
//!   A detached supervisor writes only there: its stderr is that same file,
//!   kept for what bypasses `tracing` (a panic message).

use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::SystemTime;

use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, filter, fmt};

use crate::rotating_file::RotatingFile;

/// `NO_COLOR` (no-color.org): set and not empty means no colour anywhere.
pub(crate) fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// Which program this process is, for its log setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A short command (`status`, `down`, ...): warnings and errors only.
    Command,
    /// `fleet up`; `detached` when its stderr is the supervisor log.
    Supervisor { detached: bool },
    /// `fleet serve`; `supervised` when the supervisor captures its output.
    Worker { supervised: bool },
}

static SUPERVISOR_LOG: OnceLock<RotatingFile> = OnceLock::new();

/// From now on the supervisor's events also go to `path` (the first call wins).
pub(crate) fn attach_supervisor_log(path: PathBuf) {
    let _ = SUPERVISOR_LOG.set(RotatingFile::new(path));
}

/// Install the global subscriber for `role`. `RUST_LOG` overrides the level.
pub fn init(role: Role) {
    let default = match role {
        Role::Command => "warn",
        Role::Supervisor { .. } | Role::Worker { .. } => "info",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let stderr = (role != Role::Supervisor { detached: true }).then(|| {
        let layer = fmt::layer()
            .with_writer(io::stderr)
            .with_ansi(io::stderr().is_terminal() && !no_color())
            // A closed stderr (`fleet up | head`) must not kill the
            // supervisor: the default reports write errors with eprintln!,
            // which panics on EPIPE.
            .log_internal_errors(false);
        if role == (Role::Worker { supervised: true }) {
            layer.without_time().boxed()
        } else {
            layer.with_timer(Millis).boxed()
        }
    });
    let file =
        matches!(role, Role::Supervisor { .. }).then(|| supervisor_file_layer(&SUPERVISOR_LOG));
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file)
        .init();
}

/// The supervisor's events (not the backends' echoed lines) into `file`.
fn supervisor_file_layer<S>(file: &'static OnceLock<RotatingFile>) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fmt::layer()
        .with_writer(ToFile(file))
        .with_ansi(false)
        .with_timer(Millis)
        .log_internal_errors(false)
        .with_filter(filter::filter_fn(|m| m.target() != "backend"))
}

/// The timestamp the backend log files use.
struct Millis;

impl FormatTime for Millis {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        write!(w, "{}", humantime::format_rfc3339_millis(SystemTime::now()))
    }
}

/// A `MakeWriter` over a rotating file that may not be named yet (lines
/// before then are dropped). The fmt layer writes each event with one
/// `write_all`, so a rotation never splits a line.
struct ToFile(&'static OnceLock<RotatingFile>);

impl<'a> MakeWriter<'a> for ToFile {
    type Writer = ToFile;
    fn make_writer(&'a self) -> ToFile {
        ToFile(self.0)
    }
}

impl io::Write for ToFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(f) = self.0.get() {
            f.append(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotating_file::MAX_LOG_BYTES;

    #[test]
    fn a_flooded_supervisor_log_stays_under_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("supervisor.log");
        let file: &'static OnceLock<RotatingFile> = Box::leak(Box::new(OnceLock::new()));
        let subscriber = tracing_subscriber::registry().with(supervisor_file_layer(file));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "supervisor", "before the file is named: dropped");
            let _ = file.set(RotatingFile::new(path.clone()));
            let filler = "x".repeat(200);
            // Over three times the cap, line by line.
            for i in 0..(3 * MAX_LOG_BYTES / 200) {
                tracing::warn!(target: "balancer", i, "{filler}");
            }
            tracing::info!(target: "backend", port = 9002, "an echoed backend line: not here");
            tracing::info!(target: "supervisor", "the last event");
        });
        let current = std::fs::read_to_string(&path).unwrap();
        let old = std::fs::read_to_string(dir.path().join("supervisor.log.1")).unwrap();
        assert!(current.len() as u64 <= MAX_LOG_BYTES, "{}", current.len());
        assert!(old.len() as u64 <= MAX_LOG_BYTES, "{}", old.len());
        assert!(current.ends_with("the last event\n"));
        assert!(!current.contains("dropped") && !current.contains("echoed"));
        for line in current.lines().chain(old.lines()) {
            // Whole lines, each starting with one timestamp, no colour.
            assert!(
                humantime::parse_rfc3339(line.split(' ').next().unwrap()).is_ok(),
                "{line}"
            );
            assert!(!line.contains('\x1b'), "{line}");
        }
    }
}
