//! The checks that ask the system: does a directory exist, what does a
//! host name resolve to. They block (the filesystem, the resolver), so they
//! run last, after every pure check has passed, and a caller on a tokio
//! runtime (`supervisor::reload`) runs the whole load in `spawn_blocking`.

use std::path::Path;

use super::parse::{Problem, problem};
use super::precedence::{Origin, Report};
use super::{ConfigError, Upstream};

/// What a path key needs to name on disk.
#[derive(Clone, Copy)]
pub(super) enum Need {
    /// A directory.
    Dir,
    /// A file or a directory (a path to watch).
    Exists,
}

/// `written` (as the user wrote it, resolved to `abs`) must be what `need`
/// says; `show_abs` adds what a relative path resolved to.
pub(super) fn check_path(
    rep: &Report<'_>,
    from: Origin,
    key: &str,
    written: &Path,
    abs: &Path,
    show_abs: bool,
    need: Need,
) -> Result<(), ConfigError> {
    let resolved = if show_abs && written.is_relative() {
        format!(" (resolved to {})", abs.display())
    } else {
        String::new()
    };
    let what = match need {
        Need::Dir if !abs.exists() => {
            format!("directory {} does not exist{resolved}", written.display())
        }
        Need::Dir if !abs.is_dir() => {
            format!("{} is not a directory{resolved}", written.display())
        }
        Need::Exists if !abs.exists() => format!(
            "{} does not exist{resolved}; name a file or directory to watch",
            written.display()
        ),
        Need::Dir | Need::Exists => return Ok(()),
    };
    Err(rep.at(from, key, what))
}

/// `HOST:PORT` (already checked by `parse::host_port`) -> the first
/// address it resolves to. A blocking lookup, done once at load time so a
/// typo fails `fleet up` instead of every probe.
pub(super) fn upstream(s: &str) -> Result<Upstream, Problem> {
    use std::net::ToSocketAddrs;
    let addr = s
        .to_socket_addrs()
        .map_err(|e| problem!("cannot resolve '{s}': {e}"))?
        .next()
        .ok_or_else(|| problem!("'{s}' resolves to no address"))?;
    Ok(Upstream {
        name: s.to_owned(),
        addr,
    })
}
