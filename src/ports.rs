//! Port checks before anything starts, and "who holds this port" for the
//! error message, so a user can act on "port 9003 is in use by pid 4242 (python3)".
//! A port can be refused for other reasons than being in use (a privileged
//! port for a user who is not root, an address this machine does not have):
//! [`Unavailable`] says which, in words a user can act on.

use std::io;
use std::net::{SocketAddr, TcpListener};

/// Is `addr` free to listen on? (std sets SO_REUSEADDR, as the workers do, so
/// a port in TIME_WAIT counts as free.)
pub(crate) fn is_free(addr: SocketAddr) -> bool {
    TcpListener::bind(addr).is_ok()
}

/// Can fleet listen on `addr` (for `setting`)? If not, why, found the way
/// the listener will be bound (so a privileged port is not "in use").
pub(crate) fn check(addr: SocketAddr, setting: Setting) -> Result<(), Unavailable> {
    match TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) => Err(Unavailable::new(addr, setting, e)),
    }
}

/// Which setting chose a port: what the message calls it and which flag
/// changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// A backend's port (`--base-port`, `base_port`).
    BasePort,
    /// The balancer's address (`--listen`, `listen`).
    Listen,
    /// The admin address (`--admin`, `admin`).
    Admin,
}

impl Setting {
    fn what(self) -> &'static str {
        match self {
            Setting::BasePort => "backend",
            Setting::Listen => "balancer",
            Setting::Admin => "admin",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Setting::BasePort => "--base-port",
            Setting::Listen => "--listen",
            Setting::Admin => "--admin",
        }
    }
}

/// Why a port cannot be listened on, from the bind's errno.
#[derive(Debug)]
pub enum Why {
    /// EADDRINUSE; `holder` names who has it, when that can be found.
    InUse { holder: Option<String> },
    /// EACCES on a port below `unprivileged_from` (the first port a user
    /// other than root may bind).
    Privileged { unprivileged_from: u16 },
    /// EADDRNOTAVAIL: the address is not one of this machine's.
    NotLocal,
    /// Anything else (EACCES above the privileged range: a security policy).
    Other(io::Error),
}

/// A port fleet cannot listen on, and why: the message of `fleet up` (and
/// of `fleet scale` for a new backend's port).
#[derive(Debug)]
pub struct Unavailable {
    pub addr: SocketAddr,
    pub setting: Setting,
    pub why: Why,
}

impl Unavailable {
    pub(crate) fn new(addr: SocketAddr, setting: Setting, e: io::Error) -> Self {
        let why = match e.kind() {
            io::ErrorKind::AddrInUse => Why::InUse {
                holder: holder(addr.port()),
            },
            io::ErrorKind::AddrNotAvailable => Why::NotLocal,
            io::ErrorKind::PermissionDenied if addr.port() < unprivileged_from() => {
                Why::Privileged {
                    unprivileged_from: unprivileged_from(),
                }
            }
            _ => Why::Other(e),
        };
        Unavailable { addr, setting, why }
    }
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (what, flag, port, addr) = (
            self.setting.what(),
            self.setting.flag(),
            self.addr.port(),
            self.addr,
        );
        match (&self.why, self.setting) {
            (Why::InUse { holder }, Setting::BasePort) => write!(
                f,
                "{what} port {port} is already in use{}; stop it or choose other ports with {flag}",
                by(holder)
            ),
            (Why::InUse { holder }, _) => write!(
                f,
                "{what} port {port} is already in use{}; stop it or choose another with {flag}",
                by(holder)
            ),
            (Why::Privileged { unprivileged_from }, Setting::BasePort) => write!(
                f,
                "{what} port {port} is privileged (below {unprivileged_from}): \
                 choose a base port of {unprivileged_from} or above, or run as root"
            ),
            (Why::Privileged { unprivileged_from }, _) => write!(
                f,
                "{what} port {port} is privileged (below {unprivileged_from}): \
                 choose a port of {unprivileged_from} or above with {flag}, or run as root"
            ),
            (Why::NotLocal, _) => write!(
                f,
                "cannot listen on {addr}: {} is not an address of this machine; \
                 choose one of its addresses with {flag} (127.0.0.1 for this machine only, 0.0.0.0 for all)",
                addr.ip()
            ),
            (Why::Other(_), _) => write!(f, "cannot listen on {addr} ({what} port)"),
        }
    }
}

impl std::error::Error for Unavailable {
    /// The OS error, where the message does not already explain it.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.why {
            Why::Other(e) => Some(e),
            _ => None,
        }
    }
}

fn by(holder: &Option<String>) -> String {
    holder
        .as_ref()
        .map(|h| format!(" by {h}"))
        .unwrap_or_default()
}

/// The first port a user other than root may listen on: Linux makes it a
/// setting (`net.ipv4.ip_unprivileged_port_start`); elsewhere it is 1024.
pub(crate) fn unprivileged_from() -> u16 {
    #[cfg(target_os = "linux")]
    if let Some(p) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return p;
    }
    1024
}

/// `pid N (name)` of the process listening on `port`, when it can be found;
/// failing that, what else holds it ("a connection in TIME_WAIT ...").
pub(crate) fn holder(port: u16) -> Option<String> {
    #[cfg(target_os = "linux")]
    if !crate::process::portable() {
        return linux::holder(port).or_else(|| linux::connection(port));
    }
    lsof::holder(port)
}

/// "port 9002 is already in use by pid 42 (python3)" / "port 9002 is already in use".
pub(crate) fn in_use_message(port: u16, what: &str) -> String {
    match holder(port) {
        Some(h) => format!("{what} port {port} is already in use by {h}"),
        None => format!("{what} port {port} is already in use"),
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::fs;

    /// The rows of /proc/net/tcp{,6} as (local port, state hex, inode).
    fn sockets() -> Vec<(u16, String, String)> {
        ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .filter_map(|p| fs::read_to_string(p).ok())
            .flat_map(|t| {
                t.lines()
                    .skip(1)
                    .filter_map(|line| {
                        let f: Vec<&str> = line.split_whitespace().collect();
                        let port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
                        Some((port, f.get(3)?.to_string(), f.get(9)?.to_string()))
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// No listener, but a connection on the port (only possible for ports in
    /// the ephemeral range, or a connection made from a bound socket): say
    /// which, since TIME_WAIT frees itself and a live connection ends with
    /// its owner.
    pub(super) fn connection(port: u16) -> Option<String> {
        // A TIME_WAIT entry does not keep a SO_REUSEADDR bind out, so when a
        // live connection shares the port (an old TIME_WAIT and a new
        // connection on a busy ephemeral port), the live one is the cause.
        let mut states: Vec<String> = sockets()
            .into_iter()
            .filter(|(p, st, _)| *p == port && st != "0A")
            .map(|(_, st, _)| st)
            .collect();
        states.sort_by_key(|st| st == "06");
        let state = states.into_iter().next()?;
        let name = match state.as_str() {
            "01" => "ESTABLISHED",
            "06" => return Some("a connection in TIME_WAIT (the kernel frees the port within a minute; try again or pick another base_port)".into()),
            "08" => "CLOSE_WAIT",
            _ => "another state",
        };
        Some(format!(
            "a connection in {name} (an outgoing connection took the port as its local port; pick a base_port below the ephemeral range, see /proc/sys/net/ipv4/ip_local_port_range)"
        ))
    }

    /// /proc/net/tcp{,6} gives the listening socket's inode; the process
    /// whose fd table links to `socket:[inode]` holds it.
    pub(super) fn holder(port: u16) -> Option<String> {
        let inode = sockets()
            .into_iter()
            .find(|(p, st, _)| *p == port && st == "0A")?
            .2;
        let target = format!("socket:[{inode}]");
        for entry in fs::read_dir("/proc").ok()?.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
                continue;
            };
            if fds
                .flatten()
                .any(|fd| fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()))
            {
                let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                return Some(format!("pid {pid} ({})", comm.trim()));
            }
        }
        None
    }
}

/// The portable path (macOS has no /proc): ask lsof, which ships with macOS.
mod lsof {
    pub(super) fn holder(port: u16) -> Option<String> {
        let out = std::process::Command::new("lsof")
            .args(["-nP", &format!("-iTCP:{port}"), "-sTCP:LISTEN", "-Fpc"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let pid = text.lines().find_map(|l| l.strip_prefix('p'))?.to_string();
        let cmd = text
            .lines()
            .find_map(|l| l.strip_prefix('c'))
            .unwrap_or("?");
        Some(format!("pid {pid} ({cmd})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_port_is_busy_and_its_holder_is_us() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert!(!is_free(addr));
        let msg = in_use_message(addr.port(), "backend");
        assert!(msg.contains(&addr.port().to_string()), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(l);
        assert!(is_free(addr));
    }

    /// Each reason a port is refused has its own words and remedy; only
    /// EADDRINUSE says "in use".
    #[test]
    fn a_refused_port_says_why_and_what_to_do() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let privileged = Unavailable {
            addr: addr("127.0.0.1:80"),
            setting: Setting::BasePort,
            why: Why::Privileged {
                unprivileged_from: 1024,
            },
        };
        assert_eq!(
            privileged.to_string(),
            "backend port 80 is privileged (below 1024): choose a base port of 1024 or above, or run as root"
        );
        let admin = Unavailable {
            setting: Setting::Admin,
            ..privileged
        };
        assert_eq!(
            admin.to_string(),
            "admin port 80 is privileged (below 1024): choose a port of 1024 or above with --admin, or run as root"
        );
        // TEST-NET-1 (RFC 5737) is never a local address.
        let foreign = check(addr("192.0.2.1:0"), Setting::Listen).unwrap_err();
        assert!(matches!(foreign.why, Why::NotLocal), "{foreign:?}");
        assert_eq!(
            crate::message::one_line(&foreign),
            "cannot listen on 192.0.2.1:0: 192.0.2.1 is not an address of this machine; \
             choose one of its addresses with --listen (127.0.0.1 for this machine only, 0.0.0.0 for all)"
        );
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = check(l.local_addr().unwrap(), Setting::Listen).unwrap_err();
        assert!(
            busy.to_string()
                .ends_with("; stop it or choose another with --listen"),
            "{busy}"
        );
        let other = Unavailable::new(
            addr("127.0.0.1:65000"),
            Setting::Listen,
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert_eq!(
            crate::message::one_line(&other),
            "cannot listen on 127.0.0.1:65000 (balancer port): permission denied",
            "above the privileged range, EACCES is a policy: the OS error is shown"
        );
    }

    /// Both ways of finding the holder, whichever the switch selects: the
    /// portable one (lsof) must work on Linux too, so CI runs it.
    #[test]
    fn lsof_and_proc_both_name_the_holder() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let me = format!("pid {}", std::process::id());
        #[cfg(target_os = "linux")]
        assert_eq!(
            linux::holder(port).as_deref().map(|h| h.starts_with(&me)),
            Some(true)
        );
        if std::process::Command::new("lsof")
            .arg("-v")
            .output()
            .is_err()
        {
            assert!(std::env::var_os("CI").is_none(), "CI must install lsof");
            eprintln!("skipped the lsof half: lsof is not installed");
            // Listed at the end of .ci/run, as the integration tests' skips are.
            if let Some(path) = std::env::var_os("FLEET_TEST_SKIPPED") {
                use std::io::Write as _;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("the skipped-tests file can be opened");
                let _ = f.write_all(b"ports::tests (lib): the lsof half: lsof is not installed\n");
            }
            return;
        }
        let h = lsof::holder(port);
        assert!(h.as_deref().is_some_and(|h| h.starts_with(&me)), "{h:?}");
    }

    /// A port taken by an outgoing connection (its local port, no listener)
    /// is busy, and the message says what holds it instead of a pid.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_port_held_by_a_connection_is_named_as_one() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let local = c.local_addr().unwrap();
        assert!(!is_free(local));
        let msg = in_use_message(local.port(), "backend");
        assert!(msg.contains("a connection in ESTABLISHED"), "{msg}");
        drop(c);
    }

    /// A connection in TIME_WAIT does not make the port busy (SO_REUSEADDR,
    /// as the workers bind).
    #[test]
    fn a_port_in_time_wait_is_free() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let c = std::net::TcpStream::connect(addr).unwrap();
        let (s, _) = l.accept().unwrap();
        drop(l);
        // The side that closes first keeps the TIME_WAIT: the server side here.
        drop(s);
        drop(c);
        assert!(is_free(addr));
    }
}
