//! Which `Host` the admin address answers to.
//!
//! A web page on another site can point a name of its own at 127.0.0.1 (DNS
//! rebinding) and then read the admin pages as its own origin; the browser
//! still sends that name as `Host`. So a request is served only when its
//! `Host` (or, for an absolute-form target, the target's authority, RFC 9112
//! §3.2.2) names this address:
//! 1. `localhost`, or a loopback literal (127.0.0.0/8, `[::1]`, also
//!    IPv4-mapped);
//! 2. the admin address's own IP, or any IP literal when it listens on every
//!    address (0.0.0.0, `[::]`): a page can reach an IP literal only as that
//!    address's own origin, which is no rebinding;
//! 3. a name listed in fleet.yaml's `admin_hosts` (a LAN name).
//!
//! The port is not compared: a port forward (`ssh -L 8080:localhost:44400`)
//! changes it, and rebinding is about the name. Anything else gets `421
//! Misdirected Request` (RFC 9110 §15.5.20); an HTTP/1.1 request with no
//! `Host`, or more than one, gets `400` (RFC 9112 §3.2). An HTTP/1.0 request
//! may omit it (browsers always send one).

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use hyper::header::HOST;
use hyper::{Request, StatusCode, Version};

/// The names the admin address answers to beyond the built-in ones.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    /// The IP the admin address is bound to.
    own: IpAddr,
    /// `admin_hosts`: lowercase, without a port. Read per request, so a
    /// `fleet reload` that changes them applies to the next one.
    extra: Arc<ArcSwap<Vec<String>>>,
}

/// Why a request is not served: its status and a one-line body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) body: String,
}

/// The longest Host echoed back in a refusal.
const MAX_SHOWN: usize = 100;

impl Names {
    #[cfg(test)]
    pub(crate) fn new(own: IpAddr, extra: Vec<String>) -> Self {
        Self::shared(own, Arc::new(ArcSwap::from_pointee(extra)))
    }

    /// Names whose `admin_hosts` the holder of `extra` may replace.
    pub(crate) fn shared(own: IpAddr, extra: Arc<ArcSwap<Vec<String>>>) -> Self {
        Names { own, extra }
    }

    /// Serve `req`, or refuse it with a status and why.
    pub(crate) fn check<B>(&self, req: &Request<B>) -> Result<(), Refusal> {
        let authority = req.uri().authority().map(|a| a.as_str().to_owned());
        let host = match authority {
            Some(a) => a,
            None => {
                let mut values = req.headers().get_all(HOST).iter();
                match (values.next(), values.next()) {
                    (Some(v), None) => match v.to_str() {
                        Ok(v) => v.to_owned(),
                        Err(_) => return Err(bad("the Host header is not ASCII text")),
                    },
                    (Some(_), Some(_)) => return Err(bad("more than one Host header")),
                    (None, _) if req.version() == Version::HTTP_10 => return Ok(()),
                    (None, _) => return Err(bad("an HTTP/1.1 request needs a Host header")),
                }
            }
        };
        if self.allows(&host) {
            return Ok(());
        }
        let shown: String = host.chars().take(MAX_SHOWN).collect();
        Err(Refusal {
            status: StatusCode::MISDIRECTED_REQUEST,
            body: format!(
                "misdirected request: this admin address answers to localhost, loopback addresses \
                 and its own address, not to Host {shown}; list other names in admin_hosts in fleet.yaml\n"
            ),
        })
    }

    /// Does `host` (a `Host` value: a name or IP literal, maybe with a port)
    /// name this admin address? See the module rules.
    pub(crate) fn allows(&self, host: &str) -> bool {
        let name = strip_port(host.trim()).to_ascii_lowercase();
        // A fully qualified `localhost.` is the same name.
        let name = name.strip_suffix('.').unwrap_or(&name);
        if name == "localhost" || self.extra.load().iter().any(|e| e == name) {
            return true;
        }
        match name.parse::<IpAddr>() {
            Ok(ip) => {
                let ip = ip.to_canonical();
                ip.is_loopback() || ip == self.own.to_canonical() || self.own.is_unspecified()
            }
            Err(_) => false,
        }
    }
}

/// The host part of a `Host` value: `[::1]:80` -> `::1`, `a:80` -> `a`.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(ip, _)| ip);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

fn bad(why: &str) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        body: format!("bad request: {why}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> Names {
        Names::new("127.0.0.1".parse().unwrap(), Vec::new())
    }

    fn req(version: Version, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().uri("/status.json").version(version);
        for h in hosts {
            b = b.header(HOST, *h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn localhost_and_loopback_literals_are_served_with_any_port() {
        let n = loopback();
        for h in [
            "localhost",
            "localhost:44400",
            "LOCALHOST:1",
            "localhost.",
            "127.0.0.1",
            "127.0.0.1:44400",
            "127.1.2.3:8080",
            "[::1]",
            "[::1]:44400",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(n.allows(h), "{h}");
        }
    }

    #[test]
    fn other_names_and_addresses_are_misdirected() {
        let n = loopback();
        for h in [
            "evil.example",
            "evil.example:44400",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "10.0.0.1:44400",
            "[::2]",
            "",
        ] {
            assert!(!n.allows(h), "{h}");
        }
        let refusal = n
            .check(&req(Version::HTTP_11, &["evil.example"]))
            .unwrap_err();
        assert_eq!(refusal.status, StatusCode::MISDIRECTED_REQUEST);
        assert!(refusal.body.contains("evil.example"), "{}", refusal.body);
        assert_eq!(refusal.body.lines().count(), 1);
    }

    #[test]
    fn the_admin_addresss_own_ip_and_listed_names_are_served() {
        let lan = Names::new("192.168.1.5".parse().unwrap(), vec!["fleet.lab".into()]);
        assert!(lan.allows("192.168.1.5:44400"));
        assert!(lan.allows("Fleet.Lab:44400"));
        assert!(lan.allows("localhost"));
        assert!(!lan.allows("192.168.1.6"));
        assert!(!lan.allows("other.lab"));
    }

    #[test]
    fn listening_on_every_address_serves_any_ip_literal_but_no_other_name() {
        for any in ["0.0.0.0", "::"] {
            let n = Names::new(any.parse().unwrap(), Vec::new());
            assert!(n.allows("192.168.1.5:44400"), "{any}");
            assert!(n.allows("[fe80::1]:44400"), "{any}");
            assert!(!n.allows("evil.example"), "{any}");
        }
    }

    #[test]
    fn a_missing_or_repeated_host_on_http_1_1_is_400() {
        let n = loopback();
        assert_eq!(
            n.check(&req(Version::HTTP_11, &[])).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            n.check(&req(Version::HTTP_11, &["localhost", "localhost"]))
                .unwrap_err()
                .status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(n.check(&req(Version::HTTP_10, &[])), Ok(()));
        assert_eq!(n.check(&req(Version::HTTP_11, &["localhost:1"])), Ok(()));
    }

    #[test]
    fn an_absolute_form_target_is_judged_by_its_authority() {
        let n = loopback();
        let r = Request::builder()
            .uri("http://evil.example/status.json")
            .header(HOST, "localhost")
            .body(())
            .unwrap();
        assert_eq!(
            n.check(&r).unwrap_err().status,
            StatusCode::MISDIRECTED_REQUEST
        );
    }
}
