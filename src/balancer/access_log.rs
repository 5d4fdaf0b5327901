//! The balancer's access log (`balancer.access_log: PATH`, off by default):
//! one line per request, in the rotated file of `supervisor::output`.
//!
//! ```text
//! 2026-11-30T12:51:25.852Z 127.0.0.1:53422 GET /page.html 200 226 1.204ms 9002
//! ```
//! time (RFC 3339 UTC, the timestamp of every fleet log), client address,
//! method, request target, status, response bytes sent to the client,
//! duration (first request byte to the end of the response), backend port.
//! An unknown field is `-`. The target is cut at `MAX_TARGET` bytes and any
//! byte that is not printable ASCII becomes `?`, so a hostile request cannot
//! forge a line. In tcp mode the balancer sees connections, not requests: a
//! line per connection, from its first request line and response status.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::log_writer::LogWriter;
use crate::rotating_file::RotatingFile;

/// Longest request target written; longer ones end in `...`.
const MAX_TARGET: usize = 512;

/// Written by a thread of its own (`log_writer`): a request never waits on
/// the disk; when the writer falls behind, lines are dropped and counted.
#[derive(Debug)]
pub(crate) struct AccessLog {
    file: LogWriter,
}

/// One finished request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Entry<'a> {
    pub(crate) client: Option<SocketAddr>,
    pub(crate) method: Option<&'a str>,
    pub(crate) target: Option<&'a str>,
    pub(crate) status: Option<u16>,
    pub(crate) bytes: u64,
    pub(crate) duration: Duration,
    pub(crate) backend: Option<u16>,
}

impl AccessLog {
    pub(crate) fn new(path: PathBuf) -> Self {
        AccessLog {
            file: LogWriter::new(RotatingFile::at_user_path(path)),
        }
    }

    pub(crate) fn write(&self, e: &Entry<'_>) {
        let line = format_line(SystemTime::now(), e);
        self.file.write(line.into_bytes());
    }
}

fn format_line(now: SystemTime, e: &Entry<'_>) -> String {
    let dash = |o: Option<String>| o.unwrap_or_else(|| "-".into());
    format!(
        "{} {} {} {} {} {} {:.3}ms {}\n",
        humantime::format_rfc3339_millis(now),
        dash(e.client.map(|c| c.to_string())),
        dash(e.method.map(|m| clean(m, 16))),
        dash(e.target.map(|t| clean(t, MAX_TARGET))),
        dash(e.status.map(|s| s.to_string())),
        e.bytes,
        e.duration.as_secs_f64() * 1000.0,
        dash(e.backend.map(|p| p.to_string())),
    )
}

/// Printable ASCII only (no spaces), at most `max` bytes.
fn clean(s: &str, max: usize) -> String {
    let mut out: String = s
        .bytes()
        .take(max)
        .map(|b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect();
    if s.len() > max {
        out.push_str("...");
    }
    if out.is_empty() { "-".into() } else { out }
}

/// Method and target of an HTTP/1.x request line at the start of `head`.
pub(crate) fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let end = head.iter().position(|&b| b == b'\r' || b == b'\n')?;
    let line = std::str::from_utf8(&head[..end]).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    (version.starts_with("HTTP/") && parts.next().is_none() && !method.is_empty())
        .then_some((method, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_every_field_in_order() {
        let e = Entry {
            client: Some("127.0.0.1:53422".parse().unwrap()),
            method: Some("GET"),
            target: Some("/page.html"),
            status: Some(200),
            bytes: 226,
            duration: Duration::from_micros(1204),
            backend: Some(9002),
        };
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            format_line(at, &e),
            "2023-11-14T22:13:20.000Z 127.0.0.1:53422 GET /page.html 200 226 1.204ms 9002\n"
        );
    }

    #[test]
    fn unknown_fields_are_dashes_and_targets_cannot_forge_lines() {
        let e = Entry {
            target: Some("/a b\nforged 200"),
            ..Entry::default()
        };
        let line = format_line(SystemTime::UNIX_EPOCH, &e);
        assert_eq!(line.lines().count(), 1);
        assert!(
            line.contains(" - - /a?b?forged?200 - 0 0.000ms -\n"),
            "{line}"
        );
        let long = "/".repeat(2000);
        let line = format_line(
            SystemTime::UNIX_EPOCH,
            &Entry {
                target: Some(&long),
                ..Entry::default()
            },
        );
        assert!(line.len() < MAX_TARGET + 100 && line.contains("..."));
    }

    #[test]
    fn request_lines_are_parsed_only_when_they_are_http() {
        assert_eq!(
            request_line(b"GET /page.html HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET", "/page.html"))
        );
        assert_eq!(request_line(b"GET /page.html"), None, "no line end yet");
        assert_eq!(request_line(b"\x16\x03\x01\x00\r\n"), None);
        assert_eq!(request_line(b"GET / HTTP/1.1 extra\r\n"), None);
    }
}
