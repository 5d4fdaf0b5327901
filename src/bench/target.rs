//! What `fleet bench` measures: a URL given on the command line, or the
//! running fleet's balancer found through the control socket. Parsing is
//! separate from name resolution so that a malformed URL is a usage error
//! (exit 2) and an unresolvable host a runtime one (exit 1).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use hyper::Uri;

use super::load::Target;
use crate::control::client::{self, ControlError};
use crate::state_dir::StateDir;

/// The page the lab measured; the default path on the fleet's balancer.
pub(crate) const DEFAULT_PATH: &str = "/page.html";

/// Why a URL cannot be measured (a usage error).
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("'{url}' is not a URL ({source}); pass one like http://127.0.0.1:44444/page.html")]
    Malformed {
        url: String,
        source: hyper::http::uri::InvalidUri,
    },
    #[error(
        "'{0}': https is not supported (fleet measures plain HTTP, like the lab); use an http:// URL"
    )]
    Https(String),
    #[error("'{url}': scheme '{scheme}' is not supported; use an http:// URL")]
    Scheme { url: String, scheme: String },
    #[error("'{0}' has no scheme; write it as http://{0}")]
    NoScheme(String),
    #[error("'{0}' has no host; pass one like http://127.0.0.1:44444/page.html")]
    NoHost(String),
    #[error("'{0}': user information in URLs is not supported")]
    UserInfo(String),
    #[error("'{0}' has an empty host")]
    EmptyHost(String),
}

/// Why a well-formed target cannot be measured (a runtime failure).
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("cannot resolve host '{host}' of {url}")]
    Resolve {
        host: String,
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("host '{host}' of {url} has no address")]
    NoAddress { host: String, url: String },
    #[error("no fleet is running in {0}; start one with `fleet up -d` or pass a URL")]
    NoFleet(String),
    #[error("the fleet in {dir} reports an unusable balancer address '{listen}'; pass a URL")]
    BadListen { dir: String, listen: String },
    #[error("cannot ask the fleet for its balancer (pass a URL to measure something else)")]
    Control(#[source] ControlError),
}

/// A URL split into what the generator needs, before name resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedUrl {
    /// Host as written, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// The `Host` header value (the URL's authority).
    pub authority: String,
    /// Path and query, at least `/`.
    pub path: String,
}

/// Parse an `http://HOST[:PORT][/PATH]` URL.
pub(crate) fn parse_url(url: &str) -> Result<ParsedUrl, UrlError> {
    let uri: Uri = url.parse().map_err(|source| UrlError::Malformed {
        url: url.to_owned(),
        source,
    })?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(UrlError::Https(url.to_owned())),
        Some(other) => {
            return Err(UrlError::Scheme {
                url: url.to_owned(),
                scheme: other.to_owned(),
            });
        }
        None => return Err(UrlError::NoScheme(url.to_owned())),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| UrlError::NoHost(url.to_owned()))?;
    if authority.as_str().contains('@') {
        return Err(UrlError::UserInfo(url.to_owned()));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(UrlError::EmptyHost(url.to_owned()));
    }
    let path = match uri.path_and_query().map(|p| p.as_str()) {
        None | Some("") => "/".to_string(),
        Some(p) => p.to_string(),
    };
    Ok(ParsedUrl {
        host: host.to_string(),
        port: authority.port_u16().unwrap_or(80),
        authority: authority.as_str().to_string(),
        path,
    })
}

/// Resolve a parsed URL to the address every request connects to.
pub(crate) fn resolve(url: &str, p: &ParsedUrl) -> Result<Target, TargetError> {
    let addrs: Vec<SocketAddr> = (p.host.as_str(), p.port)
        .to_socket_addrs()
        .map_err(|source| TargetError::Resolve {
            host: p.host.clone(),
            url: url.to_owned(),
            source,
        })?
        .collect();
    let addr = pick_reachable(&addrs).ok_or_else(|| TargetError::NoAddress {
        host: p.host.clone(),
        url: url.to_owned(),
    })?;
    Ok(Target {
        url: url.to_string(),
        addr,
        host: p.authority.clone(),
        path: p.path.clone(),
    })
}

/// The address to load. A name with several addresses (`localhost` is often
/// `::1` and `127.0.0.1`, while the fleet listens on 127.0.0.1 only) gets the
/// first one that accepts a connection, so the whole run does not fail on
/// the wrong family; if none does, the first, whose failures the table shows.
fn pick_reachable(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    match addrs {
        [] => None,
        [one] => Some(*one),
        [first, ..] => addrs
            .iter()
            .copied()
            .find(|a| TcpStream::connect_timeout(a, Duration::from_secs(1)).is_ok())
            .or(Some(*first)),
    }
}

/// The URL of the running fleet's balancer (`/page.html`), with an
/// unspecified listen address (0.0.0.0, ::) replaced by loopback.
pub(crate) fn fleet_url(state: &StateDir) -> Result<String, TargetError> {
    match client::status(state) {
        Ok(s) => {
            let addr: SocketAddr = s.listen.parse().map_err(|_| TargetError::BadListen {
                dir: state.shown().display().to_string(),
                listen: s.listen.clone(),
            })?;
            Ok(format!(
                "http://{}{DEFAULT_PATH}",
                loopback_if_unspecified(addr)
            ))
        }
        Err(ControlError::NotRunning { dir, .. }) => Err(TargetError::NoFleet(dir)),
        Err(e) => Err(TargetError::Control(e)),
    }
}

fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_and_path() {
        let p = parse_url("http://127.0.0.1:9002/page.html?x=1").unwrap();
        assert_eq!(p.host, "127.0.0.1");
        assert_eq!(p.port, 9002);
        assert_eq!(p.authority, "127.0.0.1:9002");
        assert_eq!(p.path, "/page.html?x=1");
    }

    #[test]
    fn defaults_port_80_and_root_path() {
        let p = parse_url("http://localhost").unwrap();
        assert_eq!((p.port, p.path.as_str()), (80, "/"));
    }

    #[test]
    fn ipv6_host_loses_its_brackets_but_keeps_them_in_host_header() {
        let p = parse_url("http://[::1]:8080/").unwrap();
        assert_eq!(p.host, "::1");
        assert_eq!(p.authority, "[::1]:8080");
    }

    #[test]
    fn rejects_https_missing_scheme_and_garbage() {
        for (url, says) in [
            ("https://x/", "https is not supported"),
            ("ftp://x/", "scheme 'ftp'"),
            ("127.0.0.1:9002/page.html", "not a URL"),
            ("127.0.0.1:9002", "no scheme"),
            ("http://", "not a URL"),
            ("not a url", "not a URL"),
        ] {
            let e = parse_url(url).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn of_several_addresses_the_one_that_accepts_is_used() {
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open_addr = open.local_addr().unwrap();
        let closed_addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert_eq!(pick_reachable(&[closed_addr, open_addr]), Some(open_addr));
        assert_eq!(pick_reachable(&[closed_addr]), Some(closed_addr));
        drop(open);
        assert_eq!(pick_reachable(&[closed_addr, open_addr]), Some(closed_addr));
        assert_eq!(pick_reachable(&[]), None);
    }

    #[test]
    fn unspecified_listen_address_becomes_loopback() {
        let a = loopback_if_unspecified("0.0.0.0:44444".parse().unwrap());
        assert_eq!(a.to_string(), "127.0.0.1:44444");
        let b = loopback_if_unspecified("[::]:44444".parse().unwrap());
        assert_eq!(b.to_string(), "[::1]:44444");
        let c = loopback_if_unspecified("127.0.0.2:1".parse().unwrap());
        assert_eq!(c.to_string(), "127.0.0.2:1");
    }
}
