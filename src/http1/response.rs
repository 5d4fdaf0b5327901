//! Writing a server's own response head: the status line, the headers, a
//! `Date` formatted once a second, and the `Connection` header that says
//! whether the connection goes on. Pure but for the clock; the worker writes
//! every response through it.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// What the `Connection` header of a response says, for the request it
/// answers (RFC 9112 §9.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persist {
    /// Kept alive for an HTTP/1.1 request: the default, nothing written.
    KeepAlive,
    /// Kept alive for an HTTP/1.0 request, which must be told so.
    KeepAlive10,
    /// The connection closes after this response.
    Close,
}

impl Persist {
    /// For a request that wants the connection kept (`keep`), in HTTP/1.0
    /// or 1.1.
    pub(crate) fn of(keep: bool, http10: bool) -> Persist {
        match (keep, http10) {
            (false, _) => Persist::Close,
            (true, false) => Persist::KeepAlive,
            (true, true) => Persist::KeepAlive10,
        }
    }
}

/// The reason phrase fleet writes for `status` (RFC 9110 §15).
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// `HTTP/1.1 <status> <reason>` and its CRLF. HTTP/1.1 to an HTTP/1.0
/// client too: a server sends its own version (RFC 9110 §2.5), and the
/// `Connection` header keeps the exchange within 1.0.
pub(crate) fn status_line(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    super::framing::push_status(out, status);
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `name: value` and its CRLF.
pub(crate) fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    super::framing::put_header(out, name, value);
}

/// `Content-Length: n` and its CRLF.
pub(crate) fn content_length(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"Content-Length: ");
    super::framing::push_u64(out, n);
    out.extend_from_slice(b"\r\n");
}

/// `Date` (RFC 9110 §6.6.1: an origin server with a clock sends it), then
/// the `Connection` header and the empty line that end the head.
pub(crate) fn end(out: &mut Vec<u8>, persist: Persist) {
    date(out);
    out.extend_from_slice(match persist {
        Persist::KeepAlive => &b"\r\n"[..],
        Persist::KeepAlive10 => b"Connection: keep-alive\r\n\r\n",
        Persist::Close => b"Connection: close\r\n\r\n",
    });
}

/// `Date: <IMF-fixdate>` and its CRLF.
const DATE_LINE: usize = "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n".len();

thread_local! {
    /// The `Date` line for one second, per thread: formatted when the second
    /// changes, copied otherwise (hyper does the same).
    static DATE: RefCell<(u64, [u8; DATE_LINE])> = const { RefCell::new((u64::MAX, [0; DATE_LINE])) };
}

fn date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let line = format!("Date: {}\r\n", httpdate::fmt_http_date(now));
            if line.len() == DATE_LINE {
                cached.1.copy_from_slice(line.as_bytes());
                cached.0 = secs;
            } else {
                // Only a year past 9999 is longer; write it as it is.
                out.extend_from_slice(line.as_bytes());
                return;
            }
        }
        out.extend_from_slice(&cached.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: u16, persist: Persist) -> String {
        let mut out = Vec::new();
        status_line(&mut out, status);
        header(&mut out, b"Content-Type", b"text/plain");
        content_length(&mut out, 1234);
        end(&mut out, persist);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_head_parses_back_with_its_length_and_date() {
        let text = head(404, Persist::KeepAlive);
        let mut h = [httparse::EMPTY_HEADER; 8];
        let mut r = httparse::Response::new(&mut h);
        assert_eq!(
            r.parse(text.as_bytes()).unwrap(),
            httparse::Status::Complete(text.len())
        );
        assert_eq!((r.code, r.reason), (Some(404), Some("Not Found")));
        let get = |n: &str| {
            r.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(n))
                .map(|h| std::str::from_utf8(h.value).unwrap().to_owned())
        };
        assert_eq!(get("content-length").as_deref(), Some("1234"));
        let date = get("date").expect("a date");
        assert!(httpdate::parse_http_date(&date).is_ok(), "{date}");
        assert_eq!(get("connection"), None, "HTTP/1.1 keep-alive is implied");
    }

    #[test]
    fn connection_says_close_or_keep_alive_for_http_1_0() {
        assert!(head(200, Persist::Close).ends_with("\r\nConnection: close\r\n\r\n"));
        assert!(head(200, Persist::KeepAlive10).ends_with("\r\nConnection: keep-alive\r\n\r\n"));
        assert_eq!(Persist::of(true, true), Persist::KeepAlive10);
        assert_eq!(Persist::of(true, false), Persist::KeepAlive);
        assert_eq!(Persist::of(false, false), Persist::Close);
    }

    #[test]
    fn every_status_fleet_sends_has_its_reason() {
        for s in [
            200, 301, 400, 403, 404, 405, 408, 431, 500, 501, 502, 503, 504,
        ] {
            assert!(!reason(s).is_empty(), "{s}");
        }
    }
}
