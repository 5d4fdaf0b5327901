//! Port checks before anything starts, and "who holds this port" for the
//! error message, so a user can act on "port 9003 is in use by pid 4242 (python3)".

use std::net::{SocketAddr, TcpListener};

/// Is `addr` free to listen on? (std sets SO_REUSEADDR, as the workers do, so
/// a port in TIME_WAIT counts as free.)
pub fn is_free(addr: SocketAddr) -> bool {
    TcpListener::bind(addr).is_ok()
}

/// `pid N (name)` of the process listening on `port`, when it can be found.
pub fn holder(port: u16) -> Option<String> {
    imp::holder(port)
}

/// "port 9002 is already in use by pid 42 (python3)" / "port 9002 is already in use".
pub fn in_use_message(port: u16, what: &str) -> String {
    match holder(port) {
        Some(h) => format!("{what} port {port} is already in use by {h}"),
        None => format!("{what} port {port} is already in use"),
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::fs;

    /// /proc/net/tcp{,6} gives the listening socket's inode; the process
    /// whose fd table links to `socket:[inode]` holds it.
    pub(super) fn holder(port: u16) -> Option<String> {
        let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .filter_map(|p| fs::read_to_string(p).ok())
            .flat_map(|t| t.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
            .find_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
                (local_port == port && *f.get(3)? == "0A")
                    .then(|| f.get(9).map(|s| s.to_string()))?
            })?;
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

#[cfg(not(target_os = "linux"))]
mod imp {
    /// macOS has no /proc: ask lsof, which ships with the OS.
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
        #[cfg(target_os = "linux")]
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(l);
        assert!(is_free(addr));
    }
}
