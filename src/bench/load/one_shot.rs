//! The one-shot client: ab's request on a new connection per request,
//! written in one write and read with `httparse`, without hyper.

use std::cell::Cell;
use std::rc::Rc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Failure, Target, Template};

/// Longest response head accepted (hyper's client default read buffer limit
/// is about this).
const MAX_HEAD: usize = 400 * 1024;
/// Most headers in one response (hyper's client default).
const MAX_HEADERS: usize = 100;
/// Bytes asked for per read.
const READ_CHUNK: usize = 16 * 1024;

/// ab's request: a new connection, HTTP/1.0, no keep-alive.
///
/// Not through hyper: a client connection per request (its buffers, dispatch
/// channel and header map) cost more CPU than the request itself, and that
/// CPU is taken from the server being measured. This writes the prebuilt
/// request in one write, parses the head with `httparse` and reads the body
/// by `Content-Length`, by chunks, or to EOF, in a buffer the task reuses.
/// Every byte read from the socket is counted, as the hyper path does.
pub(super) async fn request(
    target: &Target,
    tpl: &Template,
    buf: &mut Vec<u8>,
    bytes: &Rc<Cell<u64>>,
) -> Result<hyper::StatusCode, Failure> {
    let mut stream = TcpStream::connect(target.addr)
        .await
        .map_err(Failure::Connect)?;
    // No TCP_NODELAY (one syscall less): the request is the connection's
    // only write, and Nagle holds a write back only while earlier data is
    // unacknowledged.
    stream
        .write_all(&tpl.one_shot)
        .await
        .map_err(|e| Failure::Receive(format!("write: {e}")))?;
    buf.clear();
    let mut sock = RawConn {
        stream,
        bytes,
        eof: false,
    };
    // The head (skipping any 1xx interim responses, as hyper does).
    let (status, framing, head_len) = loop {
        match parse_head(buf)? {
            Some((status, _, head_len)) if (100..200).contains(&status) && status != 101 => {
                buf.drain(..head_len);
            }
            Some(head) => break head,
            None => {
                if buf.len() >= MAX_HEAD {
                    return Err(Failure::Receive("message head is too large".into()));
                }
                if !sock.read(buf).await? {
                    return Err(Failure::Receive(
                        "connection closed before message completed".into(),
                    ));
                }
            }
        }
    };
    let code = hyper::StatusCode::from_u16(status)
        .map_err(|_| Failure::Receive(format!("invalid status code {status}")))?;
    buf.drain(..head_len);
    match framing {
        Framing::Length(len) => {
            let mut have = buf.len() as u64;
            while have < len {
                // The body is only counted, never kept.
                buf.clear();
                if !sock.read(buf).await? {
                    return Err(truncated());
                }
                have += buf.len() as u64;
            }
        }
        Framing::Chunked => read_chunked(&mut sock, buf).await?,
        Framing::UntilEof => loop {
            buf.clear();
            if !sock.read(buf).await? {
                break;
            }
        },
    }
    Ok(code)
}

fn truncated() -> Failure {
    Failure::Receive("connection closed before message completed".into())
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilEof,
}

/// Parse a response head at the start of `buf`: status, body framing and the
/// head's length, or `None` if more bytes are needed.
fn parse_head(buf: &[u8]) -> Result<Option<(u16, Framing, usize)>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Failure::Receive(format!("invalid HTTP response: {e}"))),
    };
    let status = resp.code.unwrap_or(0);
    // No body: 1xx, 204 and 304 (RFC 9112 section 6.3).
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Some((status, Framing::Length(0), head_len)));
    }
    let mut length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| Failure::Receive("invalid Content-Length".into()))?;
            if length.is_some_and(|l| l != v) {
                return Err(Failure::Receive("conflicting Content-Length".into()));
            }
            length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            // Chunked only if it is the last coding applied.
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }
    // Transfer-Encoding overrides Content-Length; a final coding other than
    // chunked means the body runs to EOF (RFC 9112 section 6.3).
    let framing = match (transfer_encoding, chunked, length) {
        (true, true, _) => Framing::Chunked,
        (true, false, _) | (false, _, None) => Framing::UntilEof,
        (false, _, Some(l)) => Framing::Length(l),
    };
    Ok(Some((status, framing, head_len)))
}

/// Read a chunked body whose first bytes are in `buf`: chunks, the last
/// (zero) chunk, then trailer lines up to the empty line.
async fn read_chunked(sock: &mut RawConn<'_>, buf: &mut Vec<u8>) -> Result<(), Failure> {
    // Body bytes still to skip in the current chunk, plus its CRLF.
    let mut skip: u64 = 0;
    loop {
        // Skip chunk data already in the buffer.
        if skip > 0 {
            let take = (skip.min(buf.len() as u64)) as usize;
            buf.drain(..take);
            skip -= take as u64;
            if skip > 0 {
                buf.clear();
                if !sock.read(buf).await? {
                    return Err(truncated());
                }
                continue;
            }
        }
        match httparse::parse_chunk_size(buf) {
            Ok(httparse::Status::Complete((used, 0))) => {
                buf.drain(..used);
                break;
            }
            Ok(httparse::Status::Complete((used, size))) => {
                buf.drain(..used);
                skip = size
                    .checked_add(2)
                    .ok_or_else(|| Failure::Receive("invalid chunk size".into()))?;
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() >= MAX_HEAD {
                    return Err(Failure::Receive("invalid chunk size line".into()));
                }
                if !sock.read(buf).await? {
                    return Err(truncated());
                }
            }
            Err(_) => return Err(Failure::Receive("invalid chunk size line".into())),
        }
    }
    // Trailers: header lines ending with an empty line.
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match httparse::parse_headers(buf, &mut headers) {
            Ok(httparse::Status::Complete(_)) => return Ok(()),
            Ok(httparse::Status::Partial) => {
                if buf.len() >= MAX_HEAD {
                    return Err(Failure::Receive("trailers are too large".into()));
                }
                if !sock.read(buf).await? {
                    return Err(truncated());
                }
            }
            Err(e) => return Err(Failure::Receive(format!("invalid trailers: {e}"))),
        }
    }
}

/// The socket of one one-shot request, counting what it reads.
struct RawConn<'a> {
    stream: TcpStream,
    bytes: &'a Rc<Cell<u64>>,
    eof: bool,
}

impl RawConn<'_> {
    /// Append what the socket has to `buf`; false at EOF.
    async fn read(&mut self, buf: &mut Vec<u8>) -> Result<bool, Failure> {
        if self.eof {
            return Ok(false);
        }
        buf.reserve(READ_CHUNK);
        let n = self
            .stream
            .read_buf(buf)
            .await
            .map_err(|e| Failure::Receive(format!("read: {e}")))?;
        self.bytes.set(self.bytes.get() + n as u64);
        if n == 0 {
            self.eof = true;
        }
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Duration;

    use super::*;
    use crate::bench::load::{Target, Template};

    #[test]
    fn parse_head_finds_the_body_framing() {
        let framing = |head: &str| parse_head(head.as_bytes()).unwrap();
        let h = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(framing(h), Some((200, Framing::Length(5), h.len() - 5)));
        let h = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(framing(h).unwrap().1, Framing::Chunked);
        let h = "HTTP/1.0 200 OK\r\nServer: x\r\n\r\n";
        assert_eq!(framing(h).unwrap().1, Framing::UntilEof);
        let h = "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(framing(h).unwrap().1, Framing::Length(0));
        assert_eq!(framing("HTTP/1.1 200 OK\r\nContent-Le"), None);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }

    /// Serve `response` (in two writes, split at `cut`) to one raw request
    /// and return its outcome and the bytes counted.
    fn one_shot_against(response: &'static [u8], cut: usize) -> (Result<u16, String>, u64) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut c, _) = listener.accept().unwrap();
            let mut req = [0u8; 1024];
            let _ = c.read(&mut req).unwrap();
            c.write_all(&response[..cut]).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            c.write_all(&response[cut..]).unwrap();
        });
        let target = Target {
            url: format!("http://{addr}/"),
            addr,
            host: addr.to_string(),
            path: "/".into(),
        };
        let tpl = Template::new(&target).unwrap();
        let bytes = Rc::new(Cell::new(0));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let mut buf = Vec::new();
        let r = rt.block_on(request(&target, &tpl, &mut buf, &bytes));
        server.join().unwrap();
        (r.map(|s| s.as_u16()).map_err(|f| f.describe()), bytes.get())
    }

    #[test]
    fn one_shot_reads_every_framing_and_fails_a_truncated_body() {
        let cl: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789";
        assert_eq!(one_shot_against(cl, 20), (Ok(200), cl.len() as u64));
        let chunked: &[u8] = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3\r\nefg\r\n0\r\nX-T: 1\r\n\r\n";
        for cut in [10, 52, 56, 60, chunked.len() - 3] {
            assert_eq!(
                one_shot_against(chunked, cut),
                (Ok(404), chunked.len() as u64),
                "cut {cut}"
            );
        }
        let eof: &[u8] = b"HTTP/1.0 200 OK\r\n\r\nuntil the end";
        assert_eq!(one_shot_against(eof, 5), (Ok(200), eof.len() as u64));
        let interim: &[u8] =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            one_shot_against(interim, 3),
            (Ok(201), interim.len() as u64)
        );
        let short: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234";
        let (r, n) = one_shot_against(short, 3);
        assert!(r.unwrap_err().starts_with("receive:"));
        assert_eq!(n, short.len() as u64);
        let short_chunked: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab";
        assert!(one_shot_against(short_chunked, 3).0.is_err());
    }
}
