//! Port checks before anything starts, and "who holds this port" for the
//! error message, so a user can act on "port 9003 is in use by pid 4242 (python3)".

use std::net::{SocketAddr, TcpListener};

/// Is `addr` free to listen on? (std sets SO_REUSEADDR, as the workers do, so
/// a port in TIME_WAIT counts as free.)
pub(crate) fn is_free(addr: SocketAddr) -> bool {
    TcpListener::bind(addr).is_ok()
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
