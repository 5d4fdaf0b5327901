//! Rules that relate two or more values (port range, timeout <= interval,
//! backoff order, addresses apart): run on the file's own values when it
//! sets both, then on the merged ones, and blame the key the user wrote
//! rather than a default. Pure, like `parse`.

use std::net::SocketAddr;
use std::time::Duration;

use super::parse::fmt_duration;
use super::precedence::{Origin, Report, Set, note};
use super::{ConfigError, Upstream};

pub(super) const NO_BACKENDS: &str = "must be at least 1 when there are no upstreams (got 0)";

/// Backends use `base_port ..= base_port + backends - 1`, which must fit in
/// a port number. Blames base_port unless it is the default.
pub(super) fn port_range(
    rep: &Report<'_>,
    backends: Set<u16>,
    base: Set<u16>,
) -> Result<(), ConfigError> {
    let (n, p) = (u32::from(backends.value), u32::from(base.value));
    let last = p + n - 1;
    if last <= 65535 {
        return Ok(());
    }
    let fits = 65536 - p;
    let by_flag = match backends.from {
        Origin::Flag(flag) => format!(" (from {flag})"),
        Origin::Default => " (the default)".to_owned(),
        Origin::File(_) => String::new(),
    };
    let (from, key) = if base.from == Origin::Default {
        (backends.from, "backends")
    } else {
        (base.from, "base_port")
    };
    let problem = format!(
        "{p} with {n} backends{by_flag} needs ports {p}..={last}, and port 65536 is past 65535 \
         (use base_port {} or at most {fits} backends)",
        65536 - n
    );
    Err(rep.at(from, key, problem))
}

/// Which of two related keys an error names when the user wrote both.
pub(super) enum Blame {
    Short,
    Long,
}

/// `short` must not be longer than `long`. The error names the key `blame`
/// prefers, or the other when the preferred one holds its default, so it
/// always points at a value the user wrote; `why` ends the message.
pub(super) fn not_longer(
    rep: &Report<'_>,
    (short_key, short): (&str, Set<Duration>),
    (long_key, long): (&str, Set<Duration>),
    blame: Blame,
    why: &str,
) -> Result<(), ConfigError> {
    if short.value <= long.value {
        return Ok(());
    }
    let blame_short = match blame {
        Blame::Short => short.from != Origin::Default,
        Blame::Long => long.from == Origin::Default,
    };
    let (from, key, problem) = if blame_short {
        (
            short.from,
            short_key,
            format!(
                "{} is longer than {long_key} ({}{}){why}",
                fmt_duration(short.value),
                fmt_duration(long.value),
                note(long.from)
            ),
        )
    } else {
        (
            long.from,
            long_key,
            format!(
                "{} is shorter than {short_key} ({}{}){why}",
                fmt_duration(long.value),
                fmt_duration(short.value),
                note(short.from)
            ),
        )
    };
    Err(rep.at(from, key, problem))
}

/// The balancer must not listen on a backend's port: backends bind
/// 127.0.0.1, which collides with a listen address of 127.0.0.1 or any
/// address (0.0.0.0, [::]). Caught here, it is a config error naming both
/// keys rather than a "port in use by fleet" at start-up.
pub(super) fn listen_outside_backends(
    rep: &Report<'_>,
    key: &str,
    listen: &Set<SocketAddr>,
    backends: u16,
    base: u16,
) -> Result<(), ConfigError> {
    let port = listen.value.port();
    let last = u32::from(base) + u32::from(backends) - 1;
    let ip = listen.value.ip();
    let collides = ip.is_unspecified() || ip == std::net::IpAddr::from([127, 0, 0, 1]);
    if port == 0 || !collides || !(u32::from(base)..=last).contains(&u32::from(port)) {
        return Ok(());
    }
    Err(rep.at(
        listen.from,
        key,
        format!(
            "port {port} is a backend's port: base_port {base} with backends {backends} uses \
             {base}..={last}; pick a port for {key} outside that range, or move base_port"
        ),
    ))
}

/// The admin address must not be the balancer's.
pub(super) fn admin_apart_from_listen(
    rep: &Report<'_>,
    admin: &Set<SocketAddr>,
    listen: SocketAddr,
) -> Result<(), ConfigError> {
    let (a, l) = (admin.value, listen);
    let overlap = a.ip() == l.ip() || a.ip().is_unspecified() || l.ip().is_unspecified();
    if a.port() == 0 || a.port() != l.port() || !overlap {
        return Ok(());
    }
    Err(rep.at(
        admin.from,
        "admin",
        format!(
            "{a} is the balancer's address (listen: {l}); give the admin address a port of its own"
        ),
    ))
}

/// No duplicates, and none that is one of the local backends.
pub(super) fn check_upstreams(
    rep: &Report<'_>,
    upstreams: &[(Origin, Upstream)],
    backends: u16,
    base_port: u16,
) -> Result<(), ConfigError> {
    for (i, (from, u)) in upstreams.iter().enumerate() {
        let from = *from;
        let key = match from {
            Origin::Flag(f) => f.to_owned(),
            _ => format!("upstreams[{i}]"),
        };
        if let Some((_, first)) = upstreams[..i].iter().find(|(_, o)| o.addr == u.addr) {
            return Err(rep.at(
                from,
                &key,
                format!(
                    "'{}' is the same address as '{}' ({})",
                    u.name, first.name, u.addr
                ),
            ));
        }
        let local = u.addr.ip().is_loopback()
            && (u32::from(base_port)..u32::from(base_port) + u32::from(backends))
                .contains(&u32::from(u.addr.port()));
        if local {
            return Err(rep.at(
                from,
                &key,
                format!(
                    "'{}' is one of this fleet's own backends (ports {base_port}..{})",
                    u.name,
                    u32::from(base_port) + u32::from(backends) - 1
                ),
            ));
        }
    }
    Ok(())
}
