//! Value parsers: one YAML value or flag text -> a typed value, or the
//! [`Problem`] with it in a few words. Pure: no file, no clock, no lookup;
//! where the value was written is `precedence`'s business.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{Value, closest, quote};
use super::{BalancerMode, MAX_BACKENDS, MAX_DURATION, MAX_ENGINE_THREADS};

/// What is wrong with one value, in a few lowercase words: the tail of the
/// `ConfigError` line, which adds where the value was written and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem(pub(super) String);

impl From<&str> for Problem {
    fn from(text: &str) -> Self {
        Problem(text.to_owned())
    }
}

impl From<Problem> for String {
    fn from(p: Problem) -> String {
        p.0
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `Problem(format!(...))`.
macro_rules! problem {
    ($($arg:tt)*) => {
        Problem(format!($($arg)*))
    };
}
pub(super) use problem;

pub(super) const MODES: &[&str] = &["http", "tcp"];

pub(super) fn mode_of(word: &str) -> BalancerMode {
    match word {
        "tcp" => BalancerMode::Tcp,
        _ => BalancerMode::Http,
    }
}

/// Absolute `p` without `.` components (`..` is kept: it may cross a symlink).
pub(super) fn clean(p: &Path) -> PathBuf {
    p.components().collect()
}

/// One `admin_hosts` entry: a host name or IP literal (an IPv6 one with or
/// without brackets), without a port; lowercase.
pub(super) fn admin_host(s: &str) -> Result<String, Problem> {
    let host = s.trim().to_ascii_lowercase();
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(&host);
    if bare.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(bare.to_owned());
    }
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'))
    {
        return Err(problem!(
            "'{s}' is not a host name (letters, digits, '-' and '.')"
        ));
    }
    if host.contains(':') {
        return Err(problem!(
            "'{s}' has a port; write the name alone (any port is accepted)"
        ));
    }
    Ok(host)
}

// --- values -----------------------------------------------------------------

pub(super) fn whole(v: &Value) -> Result<i128, Problem> {
    match v {
        Value::Int(n) => Ok(*n),
        Value::Str(s) if s.trim().parse::<i128>().is_ok() => Err(problem!(
            "expected a whole number, got the string {} (remove the quotes)",
            quote(s)
        )),
        other => Err(problem!(
            "expected a whole number, got {}",
            other.describe()
        )),
    }
}

/// 0 is in range here: it is rejected later unless there are upstreams.
pub(super) fn backends_in_range(n: i128) -> Result<u16, Problem> {
    if n < 0 {
        Err(problem!("must be at least 0 (got {n}); 0 needs upstreams"))
    } else if n > i128::from(MAX_BACKENDS) {
        Err(problem!("must be at most {MAX_BACKENDS} (got {n})"))
    } else {
        u16::try_from(n).map_err(|_| problem!("must be at most {MAX_BACKENDS} (got {n})"))
    }
}

pub(super) fn port_in_range(n: i128) -> Result<u16, Problem> {
    if n < 1 {
        Err(problem!("must be at least 1 (got {n})"))
    } else {
        u16::try_from(n).map_err(|_| problem!("{n} is past 65535"))
    }
}

/// `true` or `false`, as YAML writes them.
pub(super) fn boolean(v: &Value) -> Result<bool, Problem> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Str(s) if matches!(s.trim(), "true" | "false") => Err(problem!(
            "expected true or false, got the string {} (remove the quotes)",
            quote(s)
        )),
        other => Err(problem!("expected true or false, got {}", other.describe())),
    }
}

/// A count that must be at least 1 (rise, fall, max_connections, ...).
pub(super) fn count(v: &Value) -> Result<u32, Problem> {
    let n = whole(v)?;
    if n < 1 {
        Err(problem!("must be at least 1 (got {n})"))
    } else {
        u32::try_from(n).map_err(|_| problem!("must be at most {} (got {n})", u32::MAX))
    }
}

/// `balancer.threads`: 1 to [`MAX_ENGINE_THREADS`], or `auto` (`None`: one
/// per core).
pub(super) fn engine_threads(v: &Value) -> Result<Option<std::num::NonZeroU8>, Problem> {
    if let Value::Str(s) = v
        && s.trim() == "auto"
    {
        return Ok(None);
    }
    let n = whole(v).map_err(|_| {
        problem!(
            "expected a number of threads from 1 to {MAX_ENGINE_THREADS} or auto, got {}",
            v.describe()
        )
    })?;
    u8::try_from(n)
        .ok()
        .filter(|n| *n <= MAX_ENGINE_THREADS)
        .and_then(std::num::NonZeroU8::new)
        .map(Some)
        .ok_or_else(|| problem!("must be between 1 and {MAX_ENGINE_THREADS} (got {n})"))
}

/// A share in percent, 0 to 100: `50` or `50%`.
pub(super) fn percent(v: &Value) -> Result<u8, Problem> {
    let n = match v {
        Value::Str(s) => match s.trim().strip_suffix('%').map(|n| n.trim().parse::<i128>()) {
            Some(Ok(n)) => n,
            _ => {
                return Err(problem!(
                    "expected a percentage such as 50 or 50%, got {}",
                    quote(s)
                ));
            }
        },
        other => whole(other)?,
    };
    u8::try_from(n)
        .ok()
        .filter(|n| *n <= 100)
        .ok_or_else(|| problem!("must be between 0 and 100 (got {n})"))
}

/// A duration by the one grammar (`crate::duration`), longer than 0 and at
/// most [`MAX_DURATION`]. A YAML number is read as the text it was written
/// as, so `10` is ten seconds here as in `--timeout 10`.
pub(super) fn duration(v: &Value) -> Result<Duration, Problem> {
    let text = match v {
        Value::Str(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        Value::Float(x) => x.to_string(),
        other => {
            return Err(problem!(
                "expected a duration such as 250ms, 1s or 2m, got {}",
                other.describe()
            ));
        }
    };
    let d = crate::duration::parse(&text).map_err(|e| problem!("{e}"))?;
    let t = text.trim();
    if d.is_zero() {
        Err(problem!("must be longer than 0 (got {t})"))
    } else if d > MAX_DURATION {
        Err(problem!(
            "must be at most {} (got {t})",
            fmt_duration(MAX_DURATION)
        ))
    } else {
        Ok(d)
    }
}

/// A duration that may also be zero, for a setting that 0 turns off
/// (`balancer.slow_start: 0s`).
pub(super) fn duration_or_zero(v: &Value) -> Result<Duration, Problem> {
    let zero = match v {
        Value::Int(0) => true,
        Value::Str(s) => crate::duration::parse(s).is_ok_and(|d| d.is_zero()),
        _ => false,
    };
    if zero {
        Ok(Duration::ZERO)
    } else {
        duration(v)
    }
}

pub(super) fn fmt_duration(d: Duration) -> String {
    crate::duration::format(d)
}

/// `ADDR:PORT`, or a bare `PORT` meaning `127.0.0.1:PORT` (loopback:
/// exposing the balancer is always spelled out), for `--listen` / `listen:`.
pub(super) fn parse_listen(s: &str) -> Result<SocketAddr, Problem> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u16>()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            .map_err(|_| problem!("port {s} is out of range (0-65535)"));
    }
    s.parse::<SocketAddr>().map_err(|_| {
        problem!("'{s}' is not an ADDR:PORT address such as 127.0.0.1:44444, or a PORT")
    })
}

pub(super) fn listen(v: &Value) -> Result<SocketAddr, Problem> {
    match v {
        Value::Str(s) => parse_listen(s),
        // A bare port means loopback, as with `--listen PORT`.
        Value::Int(port) => parse_listen(&port.to_string()),
        other => Err(problem!(
            "expected ADDR:PORT such as 127.0.0.1:44444 or a PORT, got {} (quote an IPv6 address: \"[::1]:44444\")",
            other.describe()
        )),
    }
}

/// `HOST:PORT` as an upstream is written: a host and a port from 1 to
/// 65535. Whether the host resolves is asked last (`lookup::upstream`).
pub(super) fn host_port(s: &str) -> Result<&str, Problem> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(problem!("'{s}' is not HOST:PORT (such as lab-pc-2:9002)"));
    };
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(problem!(
            "'{s}' is not HOST:PORT with a port from 1 to 65535"
        ));
    }
    Ok(s)
}

/// A file to write: a non-empty string that can be a path.
pub(super) fn file_path(v: &Value) -> Result<PathBuf, Problem> {
    match v {
        Value::Str(s) if s.is_empty() => Err(Problem::from("must not be empty")),
        Value::Str(s) if s.contains('\0') => Err(Problem::from("must not contain a NUL byte")),
        Value::Str(s) if s.ends_with('/') => Err(problem!("'{s}' names a directory; name a file")),
        Value::Str(s) => Ok(PathBuf::from(s)),
        other => Err(problem!(
            "expected a file path (e.g. logs/access.log), got {}",
            other.describe()
        )),
    }
}

/// A non-empty string that can be a path.
pub(super) fn path_text(v: &Value, key: &str) -> Result<PathBuf, Problem> {
    match v {
        Value::Str(s) if s.is_empty() => Err(Problem::from("must not be empty")),
        Value::Str(s) if s.contains('\0') => Err(Problem::from("must not contain a NUL byte")),
        Value::Str(s) => Ok(PathBuf::from(s)),
        other => Err(problem!(
            "expected a directory path (e.g. {key}: ./dir), got {}",
            other.describe()
        )),
    }
}

/// One of a fixed set of words, with a suggestion for a near miss.
pub(super) fn one_of(
    v: &Value,
    words: &[&'static str],
    what: &str,
) -> Result<&'static str, Problem> {
    let list = words.join(", ");
    match v {
        Value::Str(s) => {
            words
                .iter()
                .copied()
                .find(|w| *w == s)
                .ok_or_else(|| match closest(s, words) {
                    Some(near) => problem!(
                        "{} is not {what}; did you mean {near}? (one of: {list})",
                        quote(s)
                    ),
                    None => problem!("{} is not {what}; use one of: {list}", quote(s)),
                })
        }
        other => Err(problem!(
            "expected one of: {list}, got {}",
            other.describe()
        )),
    }
}

/// The path of an HTTP probe: it goes verbatim into the request line.
pub(super) fn http_path(v: &Value) -> Result<String, Problem> {
    match v {
        Value::Str(s) if !s.starts_with('/') => Err(problem!("{} must start with '/'", quote(s))),
        Value::Str(s) if s.chars().any(|c| c.is_whitespace() || c.is_control()) => Err(problem!(
            "{} must not contain spaces or control characters (percent-encode them)",
            quote(s)
        )),
        Value::Str(s) => Ok(s.clone()),
        other => Err(problem!(
            "expected a URL path such as /health, got {}",
            other.describe()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_port_alone_means_loopback() {
        assert_eq!(
            parse_listen("44444"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 44444)))
        );
    }

    #[test]
    fn listen_address_and_port_are_taken_as_written() {
        assert_eq!(
            parse_listen("0.0.0.0:80"),
            Ok(SocketAddr::from(([0, 0, 0, 0], 80)))
        );
        assert_eq!(parse_listen("[::1]:80").map(|a| a.is_ipv6()), Ok(true));
    }

    #[test]
    fn listen_port_out_of_range_is_named() {
        assert_eq!(
            parse_listen("70000"),
            Err(Problem::from("port 70000 is out of range (0-65535)"))
        );
    }

    #[test]
    fn listen_garbage_is_rejected() {
        assert!(parse_listen("localhost").is_err());
        assert!(parse_listen("").is_err());
    }
}
