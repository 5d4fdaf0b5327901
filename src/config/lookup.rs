//! The checks that ask the system: does a directory exist, what does a
//! host name resolve to. They block (the filesystem, the resolver), so they
//! run last, after every pure check has passed, and a caller on a tokio
//! runtime (`supervisor::reload`) runs the whole load in `spawn_blocking`.

use std::path::Path;

use super::parse::{Problem, problem};
use super::precedence::{Origin, Report};
use super::{ConfigError, Upstream};

/// `written` (as the user wrote it, resolved to `abs`) must be a directory.
pub(super) fn check_dir(
    rep: &Report<'_>,
    from: Origin,
    key: &str,
    written: &Path,
    abs: &Path,
    show_abs: bool,
) -> Result<(), ConfigError> {
    let resolved = if show_abs && written.is_relative() {
        format!(" (resolved to {})", abs.display())
    } else {
        String::new()
    };
    if !abs.exists() {
        return Err(rep.at(
            from,
            key,
            format!("directory {} does not exist{resolved}", written.display()),
        ));
    }
    if !abs.is_dir() {
        return Err(rep.at(
            from,
            key,
            format!("{} is not a directory{resolved}", written.display()),
        ));
    }
    Ok(())
}

/// `written` (resolved to `abs`) must exist: a file or a directory.
pub(super) fn check_exists(
    rep: &Report<'_>,
    from: Origin,
    key: &str,
    written: &Path,
    abs: &Path,
    show_abs: bool,
) -> Result<(), ConfigError> {
    if abs.exists() {
        return Ok(());
    }
    let resolved = if show_abs && written.is_relative() {
        format!(" (resolved to {})", abs.display())
    } else {
        String::new()
    };
    Err(rep.at(
        from,
        key,
        format!(
            "{} does not exist{resolved}; name a file or directory to watch",
            written.display()
        ),
    ))
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
